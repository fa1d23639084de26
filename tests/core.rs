//! End-to-end tests of issue #2: fetch over real HTTP from the shared
//! mirror, verify, run foreign binaries through qemu in namespaces.

mod common;
use common::*;

use std::path::Path;

/// One store shared by the per-arch checks (fetching 8 rootfs once).
fn fetch_all(env: &Env) {
    for arch in MIRROR_ARCHES {
        ok(&env.run(&["fetch", arch, "--quiet"]));
    }
}

#[test]
fn every_mirror_arch_fetches_and_runs() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    let before = host_mounts();
    fetch_all(&env);
    for arch in MIRROR_ARCHES {
        let out = ok(&env.run(&["run", arch, "--", "sh", "-c", "uname -m; cat /etc/alpine-release; echo pid=$$; ps -o pid,comm | sed -n 2p | tr -s ' '"]));
        let lines: Vec<&str> = out.lines().collect();
        let want = match arch {
            "armhf" | "armv7" => "armv7l",
            "x86" => "i686",
            other => other,
        };
        assert_eq!(lines[0], want, "{arch}: uname -m");
        assert_eq!(lines[1], "3.20.3", "{arch}: /etc/alpine-release");
        // The command is PID 1's child: PID 2 in its own namespace.
        assert_eq!(lines[2], "pid=2", "{arch}");
        assert!(
            lines[3].trim_start().starts_with("1 "),
            "{arch}: PID 1 is xroot's init: {out}"
        );
        let st = env.run(&["run", arch, "--", "sh", "-c", "exit 42"]);
        assert_eq!(
            st.status.code(),
            Some(42),
            "{arch}: exit status passes through"
        );
    }
    assert_eq!(before, host_mounts(), "no mount leaked to the host");
    // list shows them installed with their version.
    let list = ok(&env.run(&["list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    for arch in MIRROR_ARCHES {
        let row = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["arch"] == arch)
            .unwrap();
        assert_eq!(row["installed"][0]["version"], "3.20.3", "{arch}");
    }
}

#[test]
fn issue_examples_work() {
    if !sandbox_ready("riscv64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    // `run` fetches when not installed.
    let o = env.run(&["run", "riscv64", "--", "uname", "-m"]);
    assert_eq!(ok(&o).trim(), "riscv64");
    assert!(
        stderr(&o).contains("not installed; fetching"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["run", "ppc64le", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    // Killed by a signal: 128+N.
    let o = env.run(&["run", "ppc64le", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(128 + 15));
    // `shell` runs a login shell reading stdin.
    let mut c = env.cmd();
    c.args(["shell", "aarch64"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"uname -m; echo $HOME; exit 3\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "aarch64\n/root\n");
}

#[test]
fn fetch_verifies_and_is_idempotent() {
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    let o = env.run(&["fetch", "arm64", "--binfmt", "private"]);
    ok(&o);
    let root = env.rootfs("aarch64");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/alpine-release"))
            .unwrap()
            .trim(),
        "3.20.3"
    );
    let mf = std::fs::read_to_string(env.home().join("rootfs/aarch64/manifest.toml")).unwrap();
    assert!(
        mf.contains(
            "sha256 = \"041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de\""
        ),
        "{mf}"
    );
    assert!(
        mf.contains("version = \"3.20.3\"")
            && mf.contains("branch = \"v3.20\"")
            && mf.contains(&server.url),
        "{mf}"
    );
    // Second fetch: a fast no-op.
    let t = std::time::Instant::now();
    let o = env.run(&["fetch", "aarch64"]);
    ok(&o);
    assert!(stderr(&o).contains("already installed"), "{}", stderr(&o));
    assert!(
        t.elapsed().as_millis() < 500,
        "warm fetch took {:?}",
        t.elapsed()
    );
    // --force replaces it (and the old tree is gone from the store's tmp).
    ok(&env.run(&["fetch", "aarch64", "--force", "--quiet"]));
    assert_eq!(
        std::fs::read_dir(env.home().join("tmp")).unwrap().count(),
        0
    );
    // rm removes it.
    ok(&env.run(&["rm", "aarch64"]));
    assert!(!root.exists());
    let o = env.run(&["rm", "aarch64"]);
    assert!(!o.status.success() && stderr(&o).contains("not installed"));
}

#[test]
fn file_mirror_works() {
    let env = Env::new(&format!("file://{}", mirror_dir().display()));
    ok(&env.run(&["fetch", "s390x", "--branch", "v3.20", "--quiet"]));
    assert!(env.rootfs("s390x").join("bin/busybox").is_file());
}

#[test]
fn errors_name_the_thing_and_the_fix() {
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    let o = env.run(&["fetch", "aarch46"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("unknown architecture 'aarch46'") && e.contains("did you mean 'aarch64'"),
        "{e}"
    );
    // 404: names the URL.
    let o = env.run(&["fetch", "aarch64", "--branch", "v9.99"]);
    let e = stderr(&o);
    assert!(
        !o.status.success()
            && e.contains("HTTP 404")
            && e.contains("/v9.99/releases/aarch64/latest-releases.yaml"),
        "{e}"
    );
    // Unreachable mirror.
    let o = env.run(&["fetch", "aarch64", "--mirror", "http://127.0.0.1:9"]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("127.0.0.1:9") && e.contains("hint:"),
        "{e}"
    );
    // No source for mips: names where to get one.
    let o = env.run(&["fetch", "mips"]);
    let e = stderr(&o);
    assert!(
        !o.status.success()
            && e.contains("no known rootfs source for mips")
            && e.contains("--from"),
        "{e}"
    );
    // Nothing was installed by any of these.
    assert!(!env.home().join("rootfs/aarch64").exists());
    // A missing qemu is named with its package.
    let o = env.run(&[
        "run",
        "aarch64",
        "--qemu",
        "/nonexistent/qemu-aarch64",
        "--",
        "true",
    ]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("qemu-user-static"), "{e}");
}

#[test]
fn checksum_mismatch_installs_nothing() {
    // A copy of the aarch64 release dir with a corrupted tarball.
    let t = tempfile::tempdir().unwrap();
    let src = mirror_dir().join("v3.20/releases/aarch64");
    let dst = t.path().join("v3.20/releases/aarch64");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let tgz = dst.join("alpine-minirootfs-3.20.3-aarch64.tar.gz");
    let mut data = std::fs::read(&tgz).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&tgz, data).unwrap();
    let server = MirrorServer::start(t.path().to_path_buf());
    let env = Env::new(&server.url);
    let o = env.run(&["fetch", "aarch64", "--branch", "v3.20"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("sha256 mismatch")
            && e.contains(
                "expected 041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de, got "
            ),
        "{e}"
    );
    assert!(!env.home().join("rootfs/aarch64").exists());
    assert_eq!(
        std::fs::read_dir(env.home().join("tmp")).unwrap().count(),
        0,
        "staging removed"
    );
    let cached: Vec<_> = std::fs::read_dir(env.home().join("cache"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tar.gz"))
        .collect();
    assert!(cached.is_empty(), "bad download removed from the cache");
}

#[test]
fn sandbox_view_is_complete_and_private() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    // A project directory: bound at the same path and the working directory.
    let proj = env.dir.path().join("proj");
    std::fs::create_dir(&proj).unwrap();
    std::fs::write(proj.join("main.c"), "int main(){}").unwrap();
    let mut c = env.cmd();
    c.current_dir(&proj).args(["run", "aarch64", "--env", "FOO=bar", "--", "sh", "-c",
        "pwd; ls; hostname; echo $FOO $HOME; test -c /dev/null && test -c /dev/urandom && test -e /dev/pts/ptmx && test -L /dev/ptmx && echo dev-ok; \
         test -d /proc/1 && echo proc-ok; test -e /sys/kernel && echo sys-ok; \
         touch created-inside; echo x > /etc/resolv.conf 2>/dev/null || echo resolv-ro; \
         echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || echo procsys-ro; echo h > /proc/sysrq-trigger 2>/dev/null || echo sysrq-ro; \
         echo ':x:M::ab::/bin/sh:' > /proc/sys/fs/binfmt_misc/register 2>/dev/null || echo binfmt-ro; \
         cat /proc/1/cmdline | tr '\\0' ' ' | cut -c1-5"]);
    let o = c.output().unwrap();
    let out = ok(&o);
    let want_cwd = proj.canonicalize().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], want_cwd.to_str().unwrap(), "{out}");
    assert_eq!(lines[1], "main.c");
    assert_eq!(lines[2], "xroot-aarch64");
    assert_eq!(lines[3], "bar /root");
    for want in [
        "dev-ok",
        "proc-ok",
        "sys-ok",
        "resolv-ro",
        "procsys-ro",
        "sysrq-ro",
        "binfmt-ro",
    ] {
        assert!(lines.contains(&want), "{want} missing in {out}");
    }
    // Writes to the bound directory land on the host.
    assert!(proj.join("created-inside").exists());
    // The host's environment did not leak in.
    let o = env
        .cmd()
        .env("SECRET_HOST_VAR", "1")
        .args(["run", "aarch64", "--", "env"])
        .output()
        .unwrap();
    assert!(!ok(&o).contains("SECRET_HOST_VAR"));
    // --hostname, --workdir, --ro-bind.
    let o = env.run(&[
        "run",
        "aarch64",
        "--hostname",
        "box",
        "--workdir",
        "/etc",
        "--ro-bind",
        proj.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &format!(
            "hostname; pwd; touch {}/x 2>/dev/null || echo ro",
            want_cwd.display()
        ),
    ]);
    assert_eq!(ok(&o), "box\n/etc\nro\n");
    // The rootfs is left exactly as installed: the project path created as a
    // mount point is gone again.
    let first_new: std::path::PathBuf = want_cwd.iter().skip(1).take(2).collect(); // tmp/xroot-test-XXXX
    assert!(
        !env.rootfs("aarch64").join(&first_new).exists(),
        "mount point {first_new:?} left in the rootfs"
    );
}

#[test]
fn host_root_is_unreachable() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let marker = env.dir.path().join("host-marker");
    std::fs::write(&marker, "host").unwrap();
    let script = format!(
        "cd /; cd ../../..; ls {m} 2>/dev/null && echo via-dotdot; ls /proc/1/root{m} 2>/dev/null && echo via-proc1; \
         test -e /usr/bin/cargo -o -e /root/.cargo && echo host-files; readlink /proc/1/root 2>/dev/null || echo no-access; echo done",
        m = marker.display(),
    );
    let mut c = env.cmd();
    c.current_dir("/")
        .args(["run", "aarch64", "--", "sh", "-c", &script]);
    let out = ok(&c.output().unwrap());
    assert!(!out.contains("via-"), "host reachable: {out}");
    assert!(!out.contains("host-files"), "{out}");
    // PID 1 (xroot's init) is outside the guest's nested user namespace, so
    // its root link is not even readable; if it were, it would be the guest's.
    assert!(out == "/\ndone\n" || out == "no-access\ndone\n", "{out}");
}

#[test]
fn killing_xroot_kills_the_guest() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let before = host_mounts();
    let tag = format!("xroot-kill-test-{}", std::process::id());
    let mut child = env
        .cmd()
        .args([
            "run",
            "aarch64",
            "--",
            "sh",
            "-c",
            &format!("sleep 1000 & sleep 1001 & echo {tag}; wait"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), tag);
    // SAFETY: plain kill of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // Every guest process is gone within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let alive = guest_sleepers();
        if alive == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{alive} guest processes survive"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(before, host_mounts());
}

/// Counts processes running `sleep 1000`/`sleep 1001` under qemu.
fn guest_sleepers() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let s = String::from_utf8_lossy(c);
            s.contains("sleep\u{0}1000") || s.contains("sleep\u{0}1001")
        })
        .count()
}

#[test]
fn installed_rootfs_unchanged_by_entering() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let snap = || {
        let mut v = Vec::new();
        walk(&env.rootfs("aarch64"), &mut v);
        v.sort();
        v
    };
    let before = snap();
    let proj = env.dir.path().join("a/b/c");
    std::fs::create_dir_all(&proj).unwrap();
    let mut c = env.cmd();
    c.current_dir(&proj).args(["run", "aarch64", "--", "true"]);
    ok(&c.output().unwrap());
    let after = snap();
    let changed: Vec<_> = before
        .iter()
        .filter(|l| !after.contains(l))
        .chain(after.iter().filter(|l| !before.contains(l)))
        .collect();
    assert!(
        changed.is_empty(),
        "rootfs changed by entering it: {changed:?}"
    );
}

fn walk(p: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        out.push(format!(
            "{} {:o} {} {}",
            e.path().display(),
            m.mode(),
            m.len(),
            m.mtime()
        ));
        if m.is_dir() {
            walk(&e.path(), out);
        }
    }
}

/// Ctrl-C typed at a terminal reaches the guest command (once), and xroot
/// exits with the guest's status; the terminal passes through.
#[test]
fn ctrl_c_at_a_terminal_reaches_the_guest() {
    if !sandbox_ready("aarch64") {
        return;
    }
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let pty = nix::pty::openpty(None, None).unwrap();
    // Tests run in parallel threads: no other test's child may inherit the
    // pty (it would keep the slave open and the master would never see EOF).
    for f in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
        // SAFETY: setting FD_CLOEXEC on fds we own.
        unsafe { libc::fcntl(f, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let slave: OwnedFd = pty.slave;
    let fd = slave.as_raw_fd();
    // SAFETY: duplicating an fd we own, close-on-exec (dup2 onto 0/1/2 in
    // the child clears the flag there only).
    let dup = || unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    let mut c = env.cmd();
    c.args(["run", "aarch64", "--", "sh", "-c", "n=0; trap 'n=$((n+1))' INT; test -t 0 && echo tty-ok; echo ready; while [ $n -eq 0 ]; do sleep 0.1; done; sleep 0.5; echo ints=$n; exit 3"]);
    // SAFETY: dup2 of valid fds; becoming a session leader with the pty as
    // controlling terminal, as a shell in a terminal would be.
    unsafe {
        c.stdin(std::process::Stdio::from_raw_fd(dup()))
            .stdout(std::process::Stdio::from_raw_fd(dup()))
            .stderr(std::process::Stdio::from_raw_fd(dup()))
            .pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
    }
    let mut child = c.spawn().unwrap();
    // Our copies of the slave must go, or the master never sees EOF/EIO.
    drop(c);
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen.contains("ready") {
        assert!(std::time::Instant::now() < deadline, "no prompt: {seen}");
        let n = master.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    master.write_all(&[0x03]).unwrap(); // Ctrl-C: the tty sends SIGINT to the foreground group
    let status = child.wait().unwrap();
    // Read what is left: until EIO (the slave closed everywhere) or, should
    // some other process still hold it, a quiet half second.
    loop {
        let mut pfd = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(500u16)).unwrap_or(0) == 0 {
            break;
        }
        match master.read(&mut buf) {
            Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    assert!(seen.contains("tty-ok"), "stdin is the terminal: {seen}");
    assert!(
        seen.contains("ints=1"),
        "SIGINT delivered exactly once: {seen}"
    );
    assert_eq!(status.code(), Some(3), "{seen}");
}
