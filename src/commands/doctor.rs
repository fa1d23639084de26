//! `xroot doctor`: every precondition, one line each, OK or the fix.

use std::fs;

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::host::{self, Native};
use crate::qemu::{self, Lookup};
use crate::ui::outln;
use crate::userns::idmap::{self, IdMap};

#[derive(Serialize)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
    /// How to fix it, when not ok.
    fix: Option<String>,
}

fn check(
    name: impl Into<String>,
    ok: bool,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
        fix: if ok { None } else { fix },
    }
}

pub fn doctor(ctx: &Ctx, json: bool) -> Result<i32> {
    let mut checks = Vec::new();
    let (maj, min) = host::kernel_version();
    checks.push(check("kernel", (maj, min) >= (5, 12), format!("Linux {maj}.{min}"), Some("xroot needs Linux 5.12+ (mount_setattr, binfmt P flag); 6.7+ for private binfmt handlers".into())));

    let max_ns = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let apparmor = fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        .ok()
        .map(|s| s.trim() == "1");
    let debian_clone = fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .ok()
        .map(|s| s.trim() == "0");
    let userns_works = try_userns();
    let (ok, detail, fix) = match (userns_works, max_ns, apparmor, debian_clone) {
        (true, ..) => (true, "can be created".to_string(), None),
        (false, Some(0), ..) => (false, "user.max_user_namespaces is 0".into(), Some("sudo sysctl -w user.max_user_namespaces=15000".into())),
        (false, _, Some(true), _) => (false, "AppArmor restricts unprivileged user namespaces".into(), Some("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for xroot)".into())),
        (false, _, _, Some(true)) => (false, "kernel.unprivileged_userns_clone is 0".into(), Some("sudo sysctl -w kernel.unprivileged_userns_clone=1".into())),
        (false, ..) => (false, "creating one failed".into(), Some("check container/seccomp restrictions on unshare(CLONE_NEWUSER)".into())),
    };
    checks.push(check("user namespaces", ok, detail, fix));

    let private = super::binfmt::private_supported();
    checks.push(check(
        "private binfmt_misc",
        private,
        if private {
            "supported: guests get their own qemu handlers, the host's stay untouched".to_string()
        } else {
            format!("not supported by Linux {maj}.{min} (needs 6.7)")
        },
        Some("register host handlers once as root: sudo xroot binfmt install".into()),
    ));

    // Guest boundary protections this kernel gives (issue #13).
    let abi = crate::sandbox::confine::landlock_abi();
    let scoping = abi.is_some_and(|a| a >= crate::sandbox::confine::SCOPING_ABI);
    checks.push(check(
        "landlock scoping",
        scoping,
        match abi {
            Some(a) if scoping => format!("Landlock ABI {a}: guests cannot reach the host's abstract unix sockets (X11, D-Bus) nor signal processes outside"),
            Some(a) => format!("Landlock ABI {a} has no scoping (needs ABI 6, Linux 6.12): guests can reach the host's abstract unix sockets"),
            None => "no Landlock in this kernel: guests can reach the host's abstract unix sockets".to_string(),
        },
        Some("use Linux 6.12+ with Landlock enabled (lsm=...,landlock), or run with --network none (a network namespace has its own abstract sockets)".into()),
    ));
    let tiocsti = fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "absent (kernel < 6.2: TIOCSTI always allowed)".into());
    checks.push(check(
        "terminal",
        true,
        format!("dev.tty.legacy_tiocsti = {tiocsti}; guests never hold the caller's terminal: they get a pty of their own, relayed, in a new session"),
        None,
    ));

    for spec in ctx.catalog.qemu_targets() {
        if host::native(spec) != Native::No {
            checks.push(check(
                format!("qemu-{}", spec.qemu),
                true,
                "not needed: runs natively",
                None,
            ));
            continue;
        }
        let (ok, detail) = match qemu::lookup(&spec.qemu, None) {
            Lookup::Found(p) => (true, format!("{} (static)", p.display())),
            Lookup::Dynamic(p) => (
                false,
                format!(
                    "{} is dynamically linked and cannot run inside a guest",
                    p.display()
                ),
            ),
            Lookup::Missing => (false, "not found".to_string()),
        };
        checks.push(check(
            format!("qemu-{}", spec.qemu),
            ok,
            detail,
            Some(qemu::install_hint(&spec.qemu)),
        ));
    }

    // Informational: a qemu that cannot be prelinked still works.
    let (on, copies, refused) = qemu::copy::summary(&ctx.store.qemu_dir());
    let mut detail = if on {
        format!(
            "{} prelinked in {} (made when first needed)",
            copies.len(),
            ctx.store.qemu_dir().display()
        )
    } else {
        "off (XROOT_QEMU_PRELINK=0): guests run the system's qemu".to_string()
    };
    for r in &refused {
        detail.push_str(&format!("; not prelinked: {r}"));
    }
    checks.push(check("qemu copies", true, detail, None));

    let uid = nix::unistd::geteuid().as_raw();
    let map = IdMap::for_caller();
    let (ok, detail) = match &map {
        IdMap::Identity => (true, "root: identity map over all ids".to_string()),
        IdMap::Subordinate { subuid, subgid, .. } => (
            true,
            format!(
                "0 → uid {uid}, 1..{} → {}.. (subgid {}..)",
                subuid.count, subuid.start, subgid.start
            ),
        ),
        IdMap::Single { .. } => (
            false,
            format!("only root (0 → uid {uid}) is mapped: chown/adduser inside will fail"),
        ),
    };
    let who = idmap::user_name(uid).unwrap_or_else(|| uid.to_string());
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    // A range no one has yet: suggesting a fixed 100000-165535 gave the
    // caller ids that may be another user's.
    let fix = match idmap::free_range(&read("/etc/subuid"), &read("/etc/subgid"), 65536) {
        Some(r) => {
            let ids = format!("{}-{}", r.start, r.start + r.count - 1);
            format!("install uidmap (newuidmap/newgidmap) and add ranges no one has yet: sudo usermod --add-subuids {ids} --add-subgids {ids} {who}")
        }
        None => "install uidmap (newuidmap/newgidmap) and give this user 65536 ids in /etc/subuid and /etc/subgid (no free range found: edit them by hand)".to_string(),
    };
    checks.push(check("id map", ok, detail, Some(fix)));

    let home = &ctx.store.home;
    let probe = home
        .ancestors()
        .find(|p| p.exists())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| "/".into());
    let (ok, detail) = match nix::sys::statvfs::statvfs(&probe) {
        Ok(s) => {
            let free = s.blocks_available() * s.fragment_size();
            (
                free > 200 << 20,
                format!("{} ({} MB free)", home.display(), free >> 20),
            )
        }
        Err(e) => (false, format!("{}: {e}", home.display())),
    };
    checks.push(check(
        "store",
        ok,
        detail,
        Some("free some space, or set XROOT_HOME to a roomier place".into()),
    ));

    if json {
        outln!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            outln!(
                "{:<5} {:<22} {}",
                if c.ok { "OK" } else { "FIX" },
                c.name,
                crate::ui::escape(&c.detail)
            );
            if let Some(f) = &c.fix {
                outln!("{:<28}→ {}", "", crate::ui::escape(f));
            }
        }
    }
    // Missing qemus for arches nobody uses are not failures of the machine.
    let essential = checks
        .iter()
        .filter(|c| {
            !c.ok
                && !c.name.starts_with("qemu-")
                && c.name != "id map"
                && c.name != "landlock scoping"
        })
        .count();
    Ok(if essential > 0 { 1 } else { 0 })
}

/// Really tries: fork a child that unshares a user namespace.
fn try_userns() -> bool {
    // SAFETY: the child only calls unshare and _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            // SAFETY: _exit is always safe in a forked child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => matches!(
            nix::sys::wait::waitpid(child, None),
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
        ),
        Err(_) => false,
    }
}
