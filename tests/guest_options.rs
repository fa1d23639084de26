//! Issue #7: `--ephemeral` and `--user` end to end.

mod common;
use common::*;

use std::path::Path;

/// Every entry under `p` with mode, owner, size, mtime and content hash.
fn snapshot(p: &Path) -> Vec<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let content = if m.is_file() {
                format!("{:x}", Sha256::digest(std::fs::read(e.path()).unwrap()))
            } else if m.file_type().is_symlink() {
                std::fs::read_link(e.path()).unwrap().display().to_string()
            } else {
                stack.push(e.path());
                String::new()
            };
            out.push(format!(
                "{} {:o} {}:{} {} {}.{} {content}",
                e.path().display(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            ));
        }
    }
    out.sort();
    out
}

fn median_ms(env: &Env, args: &[&str], n: usize) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            ok(&env.run(args));
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[n / 2]
}

#[test]
fn ephemeral_runs_leave_the_rootfs_byte_for_byte_unchanged() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let root = env.rootfs("aarch64");
    let before = snapshot(&root);
    let o = env.run(&["run", "aarch64", "--ephemeral", "--", "sh", "-c",
        "echo changed > /etc/motd && rm /etc/hostname && mkdir -p /opt/new && echo x > /opt/new/f && adduser -D eve && chmod 700 /bin/busybox && id eve >/dev/null && cat /etc/motd"]);
    assert_eq!(ok(&o), "changed\n");
    assert_eq!(
        snapshot(&root),
        before,
        "an ephemeral run changed the installed rootfs"
    );
    // The next run sees the pristine tree.
    let o = env.run(&[
        "run",
        "aarch64",
        "--ephemeral",
        "--",
        "sh",
        "-c",
        "test -e /etc/hostname && ! test -e /opt/new && ! id eve 2>/dev/null && echo pristine",
    ]);
    assert_eq!(ok(&o), "pristine\n");
    // Parallel ephemeral runs are isolated from each other.
    let children: Vec<_> = (0..4)
        .map(|i| {
            env.cmd()
                .args([
                    "run",
                    "aarch64",
                    "--ephemeral",
                    "--",
                    "sh",
                    "-c",
                    &format!("echo {i} > /root/mine; sleep 0.5; ls /root"),
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(ok(&o), "mine\n");
    }
    assert_eq!(snapshot(&root), before);
    // A normal run's writes persist, as in a chroot.
    ok(&env.run(&["run", "aarch64", "--", "sh", "-c", "echo kept > /root/kept"]));
    assert_eq!(
        std::fs::read_to_string(root.join("root/kept")).unwrap(),
        "kept\n"
    );
}

#[test]
fn ephemeral_start_costs_about_a_normal_start() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let normal = median_ms(&env, &["run", "aarch64", "--", "/bin/true"], 9);
    let eph = median_ms(
        &env,
        &["run", "aarch64", "--ephemeral", "--", "/bin/true"],
        9,
    );
    eprintln!("median start: normal {normal:.1} ms, ephemeral {eph:.1} ms");
    // Two extra mounts, no copy: within noise, bounded generously for a busy CI.
    assert!(
        eph < normal * 1.5 + 10.0,
        "ephemeral {eph:.1} ms vs normal {normal:.1} ms"
    );
}

#[test]
fn user_option_switches_ids_and_home() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let o = env.run(&[
        "run",
        "aarch64",
        "--user",
        "nobody",
        "--",
        "sh",
        "-c",
        "id -u; id -g; echo $HOME $USER; touch /etc/x 2>/dev/null || echo denied",
    ]);
    assert_eq!(ok(&o), "65534\n65534\n/ nobody\ndenied\n");
    let o = env.run(&[
        "run",
        "aarch64",
        "--user",
        "1234:5",
        "--",
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(ok(&o), "1234\n5\n");
    // A missing user is an error naming the fix...
    let o = env.run(&["run", "aarch64", "--user", "carol", "--", "true"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--create-user"),
        "{}",
        stderr(&o)
    );
    // ...or is created on first use, with a home that is the working
    // directory (run from `/`, where no host directory is bound).
    let o = env
        .cmd()
        .current_dir("/")
        .args([
            "run",
            "aarch64",
            "--user",
            "carol",
            "--create-user",
            "--",
            "sh",
            "-c",
            "id -un; echo $HOME; pwd",
        ])
        .output()
        .expect("running xroot");
    assert_eq!(ok(&o), "carol\n/home/carol\n/home/carol\n");
    let o = env.run(&["run", "aarch64", "--user", "carol", "--", "id", "-un"]);
    assert_eq!(ok(&o), "carol\n");
    let o = env.run(&["run", "aarch64", "--user", "x:y", "--", "true"]);
    assert!(
        !o.status.success() && stderr(&o).contains("UID:GID"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn no_tty_run_is_a_plain_process() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    // Fetch inside `run`, without a terminal: plain one-line messages, no
    // progress bar escape codes.
    let mut c = env.cmd();
    c.args(["run", "aarch64", "--", "sh", "-c", "cat; exit 5"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(stdout(&o), "through stdin\n");
    assert!(
        !stderr(&o).contains('\u{1b}'),
        "escape codes on a non-terminal: {:?}",
        stderr(&o)
    );
}
