//! apk repositories as a rootfs source (issue #14): a real repository made
//! from a real minirootfs (tests/common/apkrepo.rs), served over HTTP,
//! bootstrapped by the real xroot binary and run under real qemu.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use common::apkrepo::{self, TestKey};
use common::*;

/// One key for every repository of a test run (key generation is slow
/// in a debug build).
fn key(dir: &Path) -> TestKey {
    TestKey::new(&dir.join("keys"), "xroot-test-0001.rsa.pub")
}

type Snap = BTreeMap<String, (char, u32, Vec<u8>)>;

/// What a tree holds, path → (kind, mode, content or link target).
fn snapshot(root: &Path) -> Snap {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, p: &Path, out: &mut Snap) {
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let m = fs::symlink_metadata(&path).unwrap();
            let mode = m.mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&path).unwrap();
                out.insert(rel, ('l', 0, t.to_string_lossy().as_bytes().to_vec()));
            } else if m.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                walk(root, &path, out);
            } else {
                out.insert(rel, ('f', mode, fs::read(&path).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// The minirootfs as unpacked by xroot itself (`--source alpine`).
fn release_tree(env: &Env, arch: &str) -> Snap {
    ok(&env.run(&["fetch", &format!("{arch}@release"), "--source", "alpine"]));
    snapshot(&env.rootfs(&format!("{arch}@release")))
}

/// Paths allowed to differ between a bootstrap and the release tarball,
/// and why:
/// - `etc/apk/world`: the bootstrap's world is `alpine-base` (the release
///   lists its five packages);
/// - `lib/apk/db/*`: the database is written by xroot, not by apk (same
///   packages, fields in apk's order, checksums recomputed);
/// - `etc/apk/repositories`: the test mirror instead of the CDN;
/// - `etc/apk/keys/*`: the test key is trusted too;
/// - `var/cache/apk`: apk's cache directory, which apk creates too;
/// - `etc/alpine-release`, `etc/issue`, `etc/os-release`,
///   `etc/secfixes.d`: the release tarball has them from the
///   `alpine-release` package, which its database does not list (so the
///   split repository has no such package);
/// - `dev/pts`, `dev/shm`: alpine-baselayout's directories, which the
///   release tarball leaves out (xroot mounts /dev anyway);
/// - `etc/{passwd,group,shadow}` and their `-` backups: the install
///   scripts ran (busybox's adds the `klogd` user and group); checked
///   below to only add lines.
fn allowed(path: &str) -> bool {
    path == "etc/apk/world"
        || path.starts_with("lib/apk/db")
        || path == "etc/apk/repositories"
        || path.starts_with("etc/apk/keys/")
        || path.starts_with("var/cache/apk")
        || ["etc/alpine-release", "etc/issue", "etc/os-release"].contains(&path)
        || path.starts_with("etc/secfixes.d")
        || path == "dev/pts"
        || path == "dev/shm"
        || ["etc/passwd", "etc/group", "etc/shadow"]
            .iter()
            .any(|f| path == *f || path == format!("{f}-"))
}

/// The bootstrap's account files hold every line of the release's, plus
/// what the install scripts added.
fn accounts_only_grew(boot: &Snap, rel: &Snap) -> Vec<String> {
    let mut added = Vec::new();
    for f in ["etc/passwd", "etc/group", "etc/shadow"] {
        let b = String::from_utf8_lossy(&boot[f].2).into_owned();
        let r = String::from_utf8_lossy(&rel[f].2).into_owned();
        for l in r.lines() {
            let name = l.split(':').next().unwrap_or_default();
            assert!(
                b.lines().any(|x| x.split(':').next() == Some(name)),
                "{f}: {name} is gone: {b}"
            );
        }
        for l in b.lines() {
            if !r.lines().any(|x| x == l) {
                added.push(format!("{f}: {l}"));
            }
        }
        assert_eq!(boot[f].1, rel[f].1, "{f} mode");
    }
    added
}

fn bootstrap_matches_release(arch: &str) {
    if !sandbox_ready(qemu_of(arch)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = key(tmp.path());
    let m = tmp.path().join("mirror");
    fs::create_dir_all(&m).unwrap();
    let t = Instant::now();
    apkrepo::alpine_mirror(&m, &[arch], &key, &[]);
    eprintln!("repository for {arch} built in {:?}", t.elapsed());
    let server = MirrorServer::start(m.clone());
    let env = Env::new(&server.url);
    let key_arg = key.public_file.display().to_string();
    let t = Instant::now();
    let o = env.run(&["fetch", arch, "--source", "apk", "--key", &key_arg]);
    let err = stderr(&o);
    ok(&o);
    eprintln!("bootstrap of {arch} took {:?}\n{err}", t.elapsed());
    assert!(err.contains("signed by xroot-test-0001.rsa.pub"), "{err}");
    assert!(err.contains("Installing busybox"), "{err}");

    let boot = snapshot(&env.rootfs(arch));
    let rel = release_tree(&env, arch);
    let mut differ = Vec::new();
    for (p, (k, mode, data)) in &rel {
        if allowed(p) {
            continue;
        }
        match boot.get(p) {
            None => differ.push(format!("missing {p}")),
            Some((k2, mode2, data2)) => {
                if k != k2 || data != data2 || (*k != 'l' && mode != mode2) {
                    differ.push(format!("differs {p}: {k}{mode:o} vs {k2}{mode2:o}"));
                }
            }
        }
    }
    for p in boot.keys() {
        if !rel.contains_key(p) && !allowed(p) {
            differ.push(format!("extra {p}"));
        }
    }
    assert!(differ.is_empty(), "{arch}: {differ:#?}");
    let added = accounts_only_grew(&boot, &rel);
    eprintln!("added by install scripts: {added:#?}");
    assert!(
        added.iter().any(|l| l.contains("klogd")),
        "busybox's post-install ran: {added:?}"
    );

    // It runs, and its own apk sees a normal system.
    let out = ok(&env.run(&["run", arch, "--", "apk", "info"]));
    for p in [
        "alpine-base",
        "busybox",
        "musl",
        "apk-tools",
        "alpine-baselayout",
    ] {
        assert!(out.lines().any(|l| l == p), "{arch}: apk info: {out}");
    }
    let out = ok(&env.run(&["run", arch, "--", "cat", "/etc/apk/world", "/etc/apk/arch"]));
    assert_eq!(out, format!("alpine-base\n{arch}\n"));
    let o = env.run(&[
        "run",
        arch,
        "--",
        "apk",
        "--no-network",
        "audit",
        "--system",
    ]);
    eprintln!("apk audit: {}{}", stdout(&o), stderr(&o));

    // xroot list says where each tree came from.
    let list = ok(&env.run(&["list"]));
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("{arch} ")))
        .unwrap();
    assert!(line.contains(&format!("{arch} (apk")), "{line}");
    assert!(
        line.contains(&format!("{arch}@release (alpine 3.20.3")),
        "{line}"
    );

    // A second bootstrap downloads nothing: every package is cached.
    let o = env.run(&[
        "fetch", arch, "--source", "apk", "--key", &key_arg, "--force",
    ]);
    let err = stderr(&o);
    ok(&o);
    assert!(err.contains("0 packages downloaded"), "{err}");
}

fn qemu_of(arch: &str) -> &'static str {
    match arch {
        "armv7" | "armhf" => "arm",
        "aarch64" => "aarch64",
        "s390x" => "s390x",
        "ppc" => "ppc",
        _ => "x86_64",
    }
}

#[test]
fn bootstrap_aarch64_matches_the_release() {
    bootstrap_matches_release("aarch64");
}

#[test]
fn bootstrap_s390x_matches_the_release() {
    bootstrap_matches_release("s390x");
}

#[test]
fn bootstrap_armv7_matches_the_release() {
    bootstrap_matches_release("armv7");
}
