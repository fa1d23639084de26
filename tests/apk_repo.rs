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
    let extra = file_pkg(
        "xroot-extra",
        arch,
        "usr/bin/xroot-extra",
        b"#!/bin/sh\necho extra\n",
        None,
    );
    apkrepo::alpine_mirror(&m, &[arch], &key, &[extra]);
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
    // The guest's own apk: no complaint about the database or the cached
    // indexes, nothing changed on disk, every package of the repository
    // verifies, it adds a package and upgrades.
    let out = ok(&env.run(&[
        "run",
        arch,
        "--",
        "sh",
        "-c",
        "apk audit --system 2>&1; apk info 2>&1 >/dev/null",
    ]));
    assert_eq!(out, "", "{arch}: apk audit / info complain");
    let repo = m.join("v3.20/main").join(arch);
    let bind = format!("{}:/repo", repo.display());
    let out = ok(&env.run(&[
        "run",
        arch,
        "--ro-bind",
        &bind,
        "--",
        "sh",
        "-c",
        "apk verify /repo/*.apk",
    ]));
    assert_eq!(
        out.matches(": 0 - OK").count(),
        fs::read_dir(&repo).unwrap().count() - 1,
        "{out}"
    );
    let out = ok(&env.run(&[
        "run",
        arch,
        "--",
        "sh",
        "-c",
        "apk add xroot-extra && xroot-extra && apk upgrade",
    ]));
    assert!(
        out.contains("Installing xroot-extra") && out.contains("\nextra\n"),
        "{out}"
    );
    ok(&env.run(&["run", arch, "--", "apk", "del", "xroot-extra"]));

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

    // reset builds it again from the same repositories and key, from the cache.
    ok(&env.run(&["run", arch, "--", "touch", "/root/scratch"]));
    assert!(env.rootfs(arch).join("root/scratch").exists());
    let o = env.run(&["reset", arch]);
    let err = stderr(&o);
    ok(&o);
    assert!(err.contains("0 packages downloaded"), "{err}");
    assert!(!env.rootfs(arch).join("root/scratch").exists());
    let m = fs::read_to_string(env.home().join(format!("rootfs/{arch}/manifest.toml"))).unwrap();
    assert!(
        m.contains("kind = \"apk\"") && m.contains("xroot-test-0001.rsa.pub"),
        "{m}"
    );
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

/// Runs a fetch that must fail: exit 1, the message names `what`, nothing
/// installed, no staging directory left.
#[track_caller]
fn refused(env: &Env, args: &[&str], what: &[&str]) -> String {
    let o = env.run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    for w in what {
        assert!(err.contains(w), "{args:?}: expected {w:?} in: {err}");
    }
    assert!(err.contains("hint:"), "{err}");
    assert!(
        !env.home().join("rootfs/aarch64").exists(),
        "{args:?} installed something"
    );
    let tmp: Vec<_> = fs::read_dir(env.home().join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "staging left: {tmp:?}");
    err
}

/// Tampered package, tampered index, wrong key, unsigned index, missing
/// dependency, dependency loop, conflict: each a clear error naming the
/// thing, and nothing installed.
#[test]
fn bad_repositories_install_nothing() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let arch = "aarch64";
    let tmp = tempfile::tempdir().unwrap();
    let key = key(tmp.path());
    let m = tmp.path().join("mirror");
    fs::create_dir_all(&m).unwrap();
    let extra = [
        apkrepo::Pkg::meta("needs-missing", "1.0-r0", arch, &["so:libnothere.so.9"]),
        apkrepo::Pkg::meta("loop-a", "1.0-r0", arch, &["loop-b"]),
        apkrepo::Pkg::meta("loop-b", "1.0-r0", arch, &["loop-c>=1"]),
        apkrepo::Pkg::meta("loop-c", "1.0-r0", arch, &["loop-a"]),
        apkrepo::Pkg::meta("hates-busybox", "1.0-r0", arch, &["!busybox"]),
    ];
    apkrepo::alpine_mirror(&m, &[arch], &key, &extra);
    let server = MirrorServer::start(m.clone());
    let env = Env::new(&server.url);
    let k = key.public_file.display().to_string();
    let fetch = ["fetch", arch, "--source", "apk", "--key", k.as_str()];
    let with = |more: &[&'static str]| -> Vec<&str> {
        fetch.iter().copied().chain(more.iter().copied()).collect()
    };

    refused(
        &env,
        &with(&["--packages", "needs-missing"]),
        &["needs-missing-1.0-r0 depends on so:libnothere.so.9, which no repository provides"],
    );
    refused(
        &env,
        &with(&["--packages", "loop-a"]),
        &["dependency loop: loop-a -> loop-b -> loop-c -> loop-a"],
    );
    refused(
        &env,
        &with(&["--packages", "hates-busybox"]),
        &["hates-busybox-1.0-r0 conflicts with busybox-1.36.1-r29"],
    );

    // A repository that is not there.
    let nowhere = format!("{}/nowhere", server.url);
    refused(
        &env,
        &[
            "fetch",
            arch,
            "--source",
            "apk",
            "--key",
            k.as_str(),
            "--repo",
            nowhere.as_str(),
        ],
        &[
            "nowhere/aarch64/APKINDEX.tar.gz",
            "HTTP 404",
            "check --repo",
        ],
    );

    // No key for the index (the shipped Alpine keys did not sign it).
    refused(
        &env,
        &["fetch", arch, "--source", "apk"],
        &[
            "refusing",
            "APKINDEX.tar.gz",
            "signed with xroot-test-0001.rsa.pub, which is not a trusted key",
        ],
    );
    // A key of the same name that is not the one that signed: a bad signature.
    let other = TestKey::new(&tmp.path().join("other"), "xroot-test-0001.rsa.pub");
    let o = other.public_file.display().to_string();
    refused(
        &env,
        &["fetch", arch, "--source", "apk", "--key", &o],
        &["signature by xroot-test-0001.rsa.pub does not match"],
    );

    // A tampered index: one version changed, the old signature kept.
    let main = m.join("v3.20/main").join(arch);
    let original = fs::read(main.join("APKINDEX.tar.gz")).unwrap();
    let text = apkrepo::read_index(&main);
    let sig_len = {
        let mut rest = original.as_slice();
        let mut d = flate2::bufread::GzDecoder::new(&mut rest);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        drop(d);
        original.len() - rest.len()
    };
    apkrepo::write_index(
        &main,
        &text.replace("V:1.36.1-r29", "V:1.36.1-r30"),
        &key,
        false,
    );
    let mut tampered = original[..sig_len].to_vec();
    tampered.extend(fs::read(main.join("APKINDEX.tar.gz")).unwrap());
    fs::write(main.join("APKINDEX.tar.gz"), &tampered).unwrap();
    refused(
        &env,
        &fetch,
        &["signature by xroot-test-0001.rsa.pub does not match its contents"],
    );

    // Unsigned: refused, unless --allow-untrusted (loudly).
    apkrepo::write_index(&main, &text, &key, false);
    refused(
        &env,
        &fetch,
        &["refusing", "it is not signed", "--allow-untrusted"],
    );
    fs::write(main.join("APKINDEX.tar.gz"), &original).unwrap();

    // A tampered package: one byte of busybox's data changed.
    let pkg = main.join("busybox-1.36.1-r29.apk");
    let good = fs::read(&pkg).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 100] ^= 0x55;
    fs::write(&pkg, &bad).unwrap();
    refused(&env, &fetch, &["busybox-1.36.1-r29", "does not match"]);
    // Its control segment changed instead: the index's C: catches it.
    let mut bad = good.clone();
    bad.truncate(good.len() - 1);
    fs::write(&pkg, &bad).unwrap();
    refused(&env, &fetch, &["busybox-1.36.1-r29"]);
    fs::write(&pkg, &good).unwrap();

    // The repository as it was: it installs.
    let o = env.run(&fetch);
    ok(&o);
    // --allow-untrusted on an unsigned index works, with a loud warning.
    apkrepo::write_index(&main, &text, &key, false);
    let o = env.run(&[
        "fetch",
        "aarch64@untrusted",
        "--source",
        "apk",
        "--allow-untrusted",
    ]);
    let err = stderr(&o);
    ok(&o);
    assert!(err.contains("warning: UNTRUSTED"), "{err}");
}

/// A base meta package `base` depending on `xroot-probe`, which holds the
/// probe binary of `qemu` as /usr/bin/probe (and /bin/sh, for the arch check).
fn probe_packages(arch: &str, qemu: &str, base: &str) -> (apkrepo::Pkg, apkrepo::Pkg) {
    let probe = fs::read(probe(qemu)).unwrap();
    let mut b = apkrepo::Pkg::meta(base, "1.0-r0", arch, &["xroot-probe"]);
    b.entries.push(apkrepo::Entry::Dir {
        path: "etc".into(),
        mode: 0o755,
        uid: 0,
        gid: 0,
    });
    b.entries.push(apkrepo::Entry::File {
        path: format!("etc/{base}-release"),
        mode: 0o644,
        uid: 0,
        gid: 0,
        data: b"1.0 (xroot test)\n".to_vec(),
    });
    let mut p = apkrepo::Pkg::meta("xroot-probe", "1.0-r0", arch, &[]);
    p.fields.push(('p', "cmd:probe=1.0-r0".into()));
    for d in ["bin", "usr", "usr/bin"] {
        p.entries.push(apkrepo::Entry::Dir {
            path: d.into(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        });
    }
    p.entries.push(apkrepo::Entry::File {
        path: "usr/bin/probe".into(),
        mode: 0o755,
        uid: 0,
        gid: 0,
        data: probe,
    });
    // What xroot checks the arch by.
    p.entries.push(apkrepo::Entry::Symlink {
        path: "bin/sh".into(),
        target: "/usr/bin/probe".into(),
    });
    (b, p)
}

/// mips64's spec: Alpine v3.14 (its last branch); `--source apk` builds
/// it from that branch's repositories with Alpine's mips64 key ring plus
/// the test key.
#[test]
fn mips64_builds_from_alpine_v3_14_repositories() {
    if !sandbox_ready("mips64") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = key(tmp.path());
    let (base, p) = probe_packages("mips64", "mips64", "alpine-base");
    let m = tmp.path().join("mirror");
    apkrepo::write_repo(&m.join("v3.14/main"), "mips64", &[base, p], &key, true);
    apkrepo::write_repo(&m.join("v3.14/community"), "mips64", &[], &key, true);
    let server = MirrorServer::start(m.clone());
    let env = Env::new(&server.url);
    let k = key.public_file.display().to_string();
    let o = env.run(&["fetch", "mips64", "--source", "apk", "--key", &k]);
    let err = stderr(&o);
    ok(&o);
    assert!(err.contains("/v3.14/main/mips64/APKINDEX.tar.gz"), "{err}");
    let out = ok(&env.run(&["run", "mips64", "--", "/usr/bin/probe"]));
    assert!(out.contains("machine=mips64"), "{out}");
    // Alpine's own mips64 key is trusted too, and written for the guest's apk.
    assert!(env
        .rootfs("mips64")
        .join("etc/apk/keys/alpine-devel@lists.alpinelinux.org-5e69ca50.rsa.pub")
        .exists());
    // The release tarball of a branch without it names the branches that have it.
    let o = env.run(&["fetch", "mips64@rel", "--branch", "v3.20"]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("v3.12, v3.13, v3.14") && err.contains("--branch v3.14"),
        "{err}"
    );
}

/// A repository laid out as Adélie's (`adelie/1.0/{system,user}/ppc/`)
/// with the ppc probe packed as a package: `xroot fetch ppc` (the spec's
/// default source, pointed at the test mirror with --repo) bootstraps
/// `ppc`, and it runs.
#[test]
fn adelie_layout_bootstraps_ppc() {
    for (arch, qemu) in [("ppc", "ppc"), ("ppc64", "ppc64")] {
        if !sandbox_ready(qemu) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let key = key(tmp.path());
        let (base, p) = probe_packages(arch, qemu, "adelie-base");
        let m = tmp.path().join("mirror");
        let system = m.join("adelie/1.0/system");
        apkrepo::write_repo(&system, arch, &[base, p], &key, true);
        apkrepo::write_repo(&m.join("adelie/1.0/user"), arch, &[], &key, true);
        let server = MirrorServer::start(m.clone());
        let env = Env::new(&server.url);
        let k = key.public_file.display().to_string();
        let sys = format!("{}/adelie/1.0/system", server.url);
        let user = format!("{}/adelie/1.0/user", server.url);
        // Without the key: says where Adélie's key is.
        let o = env.run(&["fetch", arch, "--repo", &sys, "--repo", &user]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("packages@adelielinux.org.pub"),
            "{}",
            stderr(&o)
        );
        let o = env.run(&["fetch", arch, "--repo", &sys, "--repo", &user, "--key", &k]);
        ok(&o);
        let out = ok(&env.run(&["run", arch, "--", "/usr/bin/probe"]));
        assert!(out.contains(&format!("machine={arch}")), "{out}");
        let world = fs::read_to_string(env.rootfs(arch).join("etc/apk/world")).unwrap();
        assert_eq!(world, "adelie-base\n");
        let repos = fs::read_to_string(env.rootfs(arch).join("etc/apk/repositories")).unwrap();
        assert_eq!(repos, format!("{sys}\n{user}\n"));
        let db = fs::read_to_string(env.rootfs(arch).join("lib/apk/db/installed")).unwrap();
        assert!(
            db.contains("P:xroot-probe\nV:1.0-r0\n") && db.contains("R:probe\n"),
            "{db}"
        );
        let list = ok(&env.run(&["list", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        let row = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["arch"] == arch)
            .unwrap();
        assert_eq!(row["installed"][0]["kind"], "apk", "{row}");
        assert_eq!(row["installed"][0]["from"], sys.as_str(), "{row}");
    }
}

fn file_pkg(
    name: &str,
    arch: &str,
    path: &str,
    body: &[u8],
    script: Option<&[u8]>,
) -> apkrepo::Pkg {
    let mut p = apkrepo::Pkg::meta(name, "1.0-r0", arch, &["/bin/sh"]);
    let mut dir = String::new();
    for part in path.split('/').take(path.split('/').count() - 1) {
        if !dir.is_empty() {
            dir.push('/');
        }
        dir.push_str(part);
        p.entries.push(apkrepo::Entry::Dir {
            path: dir.clone(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        });
    }
    p.entries.push(apkrepo::Entry::File {
        path: path.into(),
        mode: 0o755,
        uid: 0,
        gid: 0,
        data: body.to_vec(),
    });
    if let Some(s) = script {
        p.scripts.push((".post-install".into(), s.to_vec()));
    }
    p
}

/// `--packages` is native on an Alpine release tree (no emulated `apk
/// add`): `fetch --packages` before the commit, `run --packages` into an
/// installed tree (only what is missing; nothing fetched when all are
/// there); install scripts run under the guest's emulator; a failing one
/// is named by package.
#[test]
fn packages_are_installed_natively() {
    let arch = "aarch64";
    if !sandbox_ready(arch) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = key(tmp.path());
    let extra = [
        file_pkg(
            "xroot-hello",
            arch,
            "usr/bin/xroot-hello",
            b"#!/bin/sh\necho hello-from-apk\n",
            Some(b"#!/bin/sh\nuname -m > /etc/xroot-hello.arch\n"),
        ),
        file_pkg(
            "bad-script",
            arch,
            "usr/share/bad-script/README",
            b"x\n",
            Some(b"#!/bin/sh\necho failing on purpose >&2\nexit 3\n"),
        ),
    ];
    let m = tmp.path().join("mirror");
    fs::create_dir_all(&m).unwrap();
    apkrepo::alpine_mirror(&m, &[arch], &key, &extra);
    let server = MirrorServer::start(m.clone());
    let env = Env::new(&server.url);
    let k = key.public_file.display().to_string();

    // fetch --packages: the release, then the package, before the commit.
    let o = env.run(&[
        "fetch",
        "aarch64@pk",
        "--packages",
        "xroot-hello",
        "--key",
        &k,
    ]);
    let err = stderr(&o);
    ok(&o);
    assert!(
        err.contains("(1/1) Installing xroot-hello (1.0-r0)"),
        "{err}"
    );
    assert!(err.contains("running 1 install scripts"), "{err}");
    let root = env.rootfs("aarch64@pk");
    assert_eq!(
        fs::read_to_string(root.join("etc/xroot-hello.arch")).unwrap(),
        "aarch64\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/apk/repositories")).unwrap(),
        format!("{0}/v3.20/main\n{0}/v3.20/community\n", server.url)
    );
    let out = ok(&env.run(&[
        "run",
        "aarch64@pk",
        "--",
        "apk",
        "info",
        "-e",
        "xroot-hello",
    ]));
    assert_eq!(out, "xroot-hello\n");

    // run --packages: fetches the tree, adds the package, runs.
    let o = env.run(&[
        "run",
        arch,
        "--packages",
        "xroot-hello",
        "--key",
        &k,
        "--",
        "xroot-hello",
    ]);
    assert_eq!(ok(&o), "hello-from-apk\n");
    assert!(
        stderr(&o).contains("adding xroot-hello to aarch64"),
        "{}",
        stderr(&o)
    );
    // Again: nothing to add, nothing fetched.
    let o = env.run(&[
        "run",
        arch,
        "--packages",
        "xroot-hello",
        "--",
        "xroot-hello",
    ]);
    assert_eq!(ok(&o), "hello-from-apk\n");
    assert!(!stderr(&o).contains("APKINDEX"), "{}", stderr(&o));
    let m = fs::read_to_string(env.home().join("rootfs/aarch64/manifest.toml")).unwrap();
    assert!(m.contains("packages = [\"xroot-hello\"]"), "{m}");

    // A failing install script is named by package.
    let o = env.run(&[
        "run",
        arch,
        "--packages",
        "bad-script",
        "--key",
        &k,
        "--",
        "true",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad-script.post-install exited with status 3"),
        "{err}"
    );
    assert!(err.contains("failing on purpose"), "{err}");
    // Refused with --ephemeral (not supported yet), clearly.
    let o = env.run(&[
        "run",
        arch,
        "--ephemeral",
        "--packages",
        "xroot-hello",
        "--",
        "true",
    ]);
    assert!(stderr(&o).contains("--ephemeral"), "{}", stderr(&o));
}

/// Not a test: builds the repository `bench/apk.sh` measures against, in
/// `$XROOT_BENCH_REPO` (run with `--ignored`): the aarch64 mirror of the
/// tests plus `bench-payload`, a 7 MB package of real aarch64 files.
#[test]
#[ignore]
fn make_bench_repository() {
    let Some(dir) = std::env::var_os("XROOT_BENCH_REPO") else {
        panic!("set XROOT_BENCH_REPO=DIR");
    };
    let dir = Path::new(&dir);
    fs::create_dir_all(dir).unwrap();
    let key = key(dir);
    let arch = "aarch64";
    let tree = apkrepo::Tree::read(&mirror_dir().join(format!(
        "v3.20/releases/{arch}/alpine-minirootfs-3.20.3-{arch}.tar.gz"
    )));
    let mut payload = apkrepo::Pkg::meta("bench-payload", "1.0-r0", arch, &[]);
    for d in ["usr", "usr/share", "usr/share/bench-payload"] {
        payload.entries.push(apkrepo::Entry::Dir {
            path: d.into(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        });
    }
    for (path, e) in &tree.entries {
        if e.0.is_file()
            && (path.starts_with("lib/") || path.starts_with("usr/lib/") || path == "bin/busybox")
        {
            payload.entries.push(apkrepo::Entry::File {
                path: format!("usr/share/bench-payload/{}", path.replace('/', "_")),
                mode: 0o755,
                uid: 0,
                gid: 0,
                data: e.4.clone(),
            });
        }
    }
    apkrepo::alpine_mirror(dir, &[arch], &key, &[payload]);
    // A real symlink, for servers that do not know the tests' convention.
    fs::remove_file(dir.join("latest-stable")).unwrap();
    std::os::unix::fs::symlink("v3.20", dir.join("latest-stable")).unwrap();
    eprintln!("key: {}", key.public_file.display());
}
