//! Issue #5, hostile guest code: a program running as root inside the guest
//! tries to change the host through /sys, /proc/sys, /dev, binfmt_misc and
//! the mount table. (tests/core.rs covers /proc/1/root and `cd ../../..`.)
//!
//! Every write attempted here is harmless even if it got through: a sysctl
//! or sysfs value is written back unchanged, a handler or mount has a
//! test-only name. Each attempt prints a marker only if it succeeded, and
//! the host's state is compared before and after.

mod common;
use common::*;

use std::fs;
use std::path::Path;

/// Host state a guest must not be able to change.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    sysctls: Vec<(String, String)>,
    thp: Option<String>,
    hostname: String,
    mounts: Vec<String>,
    binfmt: Vec<(String, String)>,
}

const SYSCTLS: [&str; 4] = [
    "/proc/sys/vm/swappiness",
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/fs/binfmt_misc/status",
];
const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

fn host_state() -> HostState {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    HostState {
        sysctls: SYSCTLS.iter().map(|p| (p.to_string(), read(p))).collect(),
        thp: fs::read_to_string(THP).ok(),
        hostname: read("/proc/sys/kernel/hostname"),
        mounts: fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" "))
            .collect(),
        binfmt: host_binfmt_entries()
            .into_iter()
            .map(|n| {
                let t = read(&format!("/proc/sys/fs/binfmt_misc/{n}"));
                (n, t)
            })
            .collect(),
    }
}

fn installed() -> Option<(MirrorServer, Env)> {
    if !sandbox_ready("aarch64") {
        return None;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    Some((server, env))
}

/// Runs `script` as guest root; returns stdout.
fn guest(env: &Env, script: &str) -> String {
    let o = env
        .cmd()
        .current_dir("/")
        .args(["run", "aarch64", "--", "sh", "-c", script])
        .output()
        .unwrap();
    eprintln!(
        "--- guest stdout:\n{}--- stderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    ok(&o)
}

/// Writes a value back unchanged, printing `marker` if the write worked.
fn write_back(path: &str, marker: &str) -> String {
    format!("v=$(cat {path}) && printf '%s\\n' \"$v\" > {path} 2>/dev/null && echo {marker}; ")
}

#[test]
fn guest_root_cannot_write_host_kernel_state() {
    let Some((_server, env)) = installed() else {
        return;
    };
    let before = host_state();
    let mut script = String::from("id -u; ");
    for (i, p) in SYSCTLS.iter().enumerate() {
        script.push_str(&write_back(p, &format!("WROTE-SYSCTL-{i}")));
    }
    // sysfs shows "always [madvise] never"; the write takes the bare word.
    script.push_str(&format!(
        "v=$(sed 's/.*\\[\\(.*\\)\\].*/\\1/' {THP}) && echo $v > {THP} 2>/dev/null && echo WROTE-SYSFS; \
         echo change > /sys/kernel/uevent_helper 2>/dev/null && echo WROTE-UEVENT-HELPER; \
         echo h > /proc/sysrq-trigger 2>/dev/null && echo WROTE-SYSRQ; \
         echo ':xroot-guest:M::\\x7fELF::/bin/sh:' > /proc/sys/fs/binfmt_misc/register 2>/dev/null && echo REGISTERED; \
         mknod /tmp/xroot-sda b 8 0 2>/dev/null && echo MKNOD-BLOCK; \
         mknod /dev/xroot-mem c 1 1 2>/dev/null && echo MKNOD-CHAR; \
         for d in mem kmem port kmsg sda vda nvme0 loop0; do test -e /dev/$d && echo HAS-DEV-$d; done; \
         echo x > /dev/full 2>/dev/null && echo WROTE-DEV-FULL; \
         hostname xroot-guest-renamed && hostname; \
         mkdir -p /mnt && mount -t tmpfs -o size=1m xroot-guest-tmpfs /mnt 2>/dev/null && grep -c xroot-guest-tmpfs /proc/self/mountinfo; \
         echo done"
    ));
    let out = guest(&env, &script);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "runs as guest root: {out}");
    for bad in ["WROTE", "REGISTERED", "MKNOD", "HAS-DEV", "SYSRQ", "UEVENT"] {
        assert!(!out.contains(bad), "the guest could {bad}:\n{out}");
    }
    assert!(out.ends_with("done\n"), "{out}");
    // Hostname and mounts are the guest's own: changed inside, not outside.
    assert!(out.contains("xroot-guest-renamed"), "{out}");
    assert_eq!(host_state(), before, "the host changed");
    let host_mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mountinfo.contains("xroot-guest-tmpfs"));
    assert!(!Path::new("/tmp/xroot-sda").exists());
    assert!(!env.rootfs("aarch64").join("tmp/xroot-sda").exists());
}

/// Every namespace the guest could use to reach the host's is its own:
/// user, mount, PID, UTS and IPC (the network is the host's on purpose).
#[test]
fn guest_has_its_own_namespaces() {
    let Some((_server, env)) = installed() else {
        return;
    };
    let kinds = ["user", "mnt", "pid", "uts", "ipc", "net"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect();
    let out = guest(&env, &script);
    let inside: Vec<&str> = out.lines().collect();
    assert_eq!(inside.len(), kinds.len(), "{out}");
    for (k, ns) in kinds.iter().zip(inside) {
        let host = fs::read_link(format!("/proc/self/ns/{k}")).unwrap();
        let host = host.to_string_lossy();
        assert!(ns.starts_with(&format!("{k}:[")), "{k}: {ns}");
        if *k == "net" {
            assert_eq!(ns, host, "the network is shared with the host");
        } else {
            assert_ne!(ns, host, "the guest shares the host's {k} namespace");
        }
    }
}

#[test]
fn guest_sees_only_its_own_processes() {
    let Some((_server, env)) = installed() else {
        return;
    };
    let host_pid = std::process::id();
    let out = guest(
        &env,
        &format!(
            "ls -d /proc/[0-9]* | wc -l; kill -0 {host_pid} 2>/dev/null && echo SEES-HOST-PID; \
             kill -9 -1 2>/dev/null; echo survived"
        ),
    );
    let n: usize = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(n <= 5, "the guest sees {n} processes:\n{out}");
    assert!(
        !out.contains("SEES-HOST-PID") || host_pid <= n as u32,
        "{out}"
    );
    // `kill -9 -1` reached only the guest's own processes; we are still here.
    assert!(Path::new(&format!("/proc/{host_pid}")).exists());
}

/// The read-only mounts that protect /proc/sys and /sys must stay read-only
/// from inside. Guest root (which, for a root caller, is host uid 0 to the
/// kernel's permission checks) runs in a user namespace nested in the one
/// that made those mounts, so the kernel locks them: no umount, no remount
/// read-write, no fresh proc or sysfs.
#[test]
fn guest_root_cannot_undo_the_readonly_mounts() {
    let Some((_server, env)) = installed() else {
        return;
    };
    let before = host_state();
    let sw = "/proc/sys/vm/swappiness";
    let attempts = [
        (
            "umount -l /proc/sys",
            format!(
                "umount -l /proc/sys 2>/dev/null; {}",
                write_back(sw, "ESCAPED")
            ),
        ),
        (
            "remount /proc/sys rw",
            format!(
                "mount -o remount,bind,rw /proc/sys 2>/dev/null; {}",
                write_back(sw, "ESCAPED")
            ),
        ),
        (
            "a fresh proc",
            format!(
                "mkdir -p /tmp/p && mount -t proc proc /tmp/p 2>/dev/null; {}",
                write_back("/tmp/p/sys/vm/swappiness", "ESCAPED")
            ),
        ),
        (
            "remount /sys rw",
            // Field 6 of mountinfo is the mount's own options ("ro,..."); the
            // superblock options after " - " say rw for sysfs regardless.
            "mount -o remount,bind,rw /sys 2>/dev/null; \
             awk '$5 == \"/sys\" {print $6}' /proc/self/mountinfo | grep -q '^rw' && echo ESCAPED; "
                .to_string(),
        ),
        (
            "umount -l /sys, mount sysfs",
            "umount -l /sys 2>/dev/null; mount -t sysfs sysfs /sys 2>/dev/null && echo ESCAPED; "
                .to_string(),
        ),
    ];
    let mut escaped = Vec::new();
    for (what, script) in &attempts {
        let out = guest(&env, &format!("{script} echo done"));
        assert!(out.ends_with("done\n"), "{what}: {out}");
        if out.contains("ESCAPED") {
            escaped.push(*what);
        }
    }
    assert_eq!(host_state(), before, "the host changed");
    assert!(
        escaped.is_empty(),
        "guest root made host kernel state writable by: {escaped:?}"
    );
}
