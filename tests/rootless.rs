//! Issue #3: xroot works for an ordinary user and leaves the host untouched.
//! The test process is root (CI); xroot runs as unprivileged users with
//! every privilege dropped by setpriv. The tests create those users and
//! rewrite their lines of /etc/subuid and /etc/subgid, so they run only
//! with `XROOT_TEST_HOST=1` (see `common::host_changes_allowed`).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;

/// Everything under `dir` (names, recursively), to prove nothing was written there.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Entries of /tmp owned by `uid`, other than `except` (other tests run
/// concurrently and create their own).
fn tmp_entries(uid: u32, except: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<PathBuf> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.path() != except && e.metadata().is_ok_and(|m| m.uid() == uid))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

struct Rootless {
    user: User,
    dir: tempfile::TempDir,
    _bin_dir: tempfile::TempDir,
    bin: PathBuf,
    mirror: String,
}

impl Rootless {
    fn new(name: &str, subids: Option<u64>, mirror: &str) -> Rootless {
        let user = unprivileged_user(name, subids);
        let dir = user_tempdir(&user);
        let bin_dir = tempfile::Builder::new()
            .prefix("xroot-bin-")
            .tempdir_in("/tmp")
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = public_bin(bin_dir.path());
        Rootless {
            user,
            dir,
            _bin_dir: bin_dir,
            bin,
            mirror: mirror.to_string(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        as_user(&self.user, &self.bin)
            .args(args)
            .env("XROOT_HOME", self.dir.path().join("store"))
            .env("XROOT_MIRROR", &self.mirror)
            .current_dir(self.dir.path())
            .output()
            .expect("run xroot as user")
    }
}

#[test]
fn unprivileged_user_fetches_and_runs_leaving_host_untouched() {
    if !sandbox_ready("s390x")
        || !host_changes_allowed()
        || !require(
            Path::new("/usr/bin/setpriv").exists(),
            "setpriv (util-linux)",
        )
    {
        return;
    }
    let server = MirrorServer::alpine();
    let r = Rootless::new("xroot-test", Some(200000), &server.url);
    let binfmt_before = host_binfmt_entries();
    let mounts_before = host_mounts();
    let home_before = tree(&r.user.home);
    let tmp_before = tmp_entries(r.user.uid, r.dir.path());
    for (arch, uname) in [
        ("aarch64", "aarch64"),
        ("s390x", "s390x"),
        ("armv7", "armv7l"),
    ] {
        ok(&r.run(&["fetch", arch, "--quiet"]));
        let out = ok(&r.run(&[
            "run",
            arch,
            "--",
            "sh",
            "-c",
            "uname -m; id -u; cat /etc/alpine-release",
        ]));
        assert_eq!(out, format!("{uname}\n0\n3.20.3\n"), "{arch}");
    }
    // Really unprivileged: outside the guest the files are the user's.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(r.dir.path().join("store/rootfs/aarch64/root/bin/busybox")).unwrap();
    assert_eq!(m.uid(), r.user.uid);
    assert_eq!(
        host_binfmt_entries(),
        binfmt_before,
        "host binfmt_misc handlers changed"
    );
    assert_eq!(host_mounts(), mounts_before, "a mount was left on the host");
    assert_eq!(
        tree(&r.user.home),
        home_before,
        "xroot wrote into the user's home outside XROOT_HOME"
    );
    assert_eq!(
        tmp_entries(r.user.uid, r.dir.path()),
        tmp_before,
        "xroot left files in /tmp"
    );
    // rm works as the user too.
    ok(&r.run(&["rm", "armv7"]));
    assert!(!r.dir.path().join("store/rootfs/armv7").exists());
}

#[test]
fn subordinate_ids_make_chown_work() {
    if !sandbox_ready("aarch64") || !host_changes_allowed() {
        return;
    }
    let server = MirrorServer::alpine();
    let r = Rootless::new("xroot-sub", Some(300000), &server.url);
    let out = ok(&r.run(&["run", "aarch64", "--", "sh", "-c", "touch /tmp/f && chown 1234:2345 /tmp/f && stat -c '%u %g' /tmp/f; \
        stat -c '%U %G' /etc/shadow; mkdir -p /tmp/d/e && touch /tmp/d/e/x && chown -R 1234 /tmp/d && chmod 755 /tmp/d/e; \
        cat /proc/self/uid_map | tr -s ' '"]));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1234 2345"), "{out}");
    // Extraction applied the archive's owners in a user namespace: real ids.
    assert_eq!(lines.next(), Some("root shadow"), "{out}");
    // 65536 ids exist inside: 0 is the user, 1.. the subordinate range (the
    // guest runs in a nested namespace mapping those ids onto themselves).
    assert_eq!(lines.next().map(str::trim), Some("0 0 1"), "{out}");
    assert_eq!(lines.next().map(str::trim), Some("1 1 65535"), "{out}");
    // On the host the file belongs to the subordinate id 300000+1233.
    use std::os::unix::fs::MetadataExt;
    let f = r.dir.path().join("store/rootfs/aarch64/root/tmp/f");
    assert_eq!(std::fs::metadata(&f).unwrap().uid(), 300000 + 1233);
    // And `rm` still removes the tree, subordinate-owned directories included
    // (which the user cannot delete from outside a user namespace).
    ok(&r.run(&["rm", "aarch64"]));
    assert!(!r.dir.path().join("store/rootfs/aarch64").exists());
}

/// `export` as an unprivileged user with subordinate ids writes the guest's
/// owners, not the host's: files the user owns on the host are root's in
/// the archive, subordinate-owned ones get their guest ids back.
#[test]
fn rootless_export_has_the_guests_owners() {
    if !sandbox_ready("aarch64") || !host_changes_allowed() {
        return;
    }
    let server = MirrorServer::alpine();
    let r = Rootless::new("xroot-sub", Some(300000), &server.url);
    ok(&r.run(&[
        "run",
        "aarch64",
        "--",
        "sh",
        "-c",
        "echo x > /root/mine && chown 1234:2345 /root/mine",
    ]));
    let out = r.dir.path().join("out.tar");
    ok(&r.run(&["export", "aarch64", out.to_str().unwrap()]));
    let mut owners = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        owners.insert(path, (h.uid().unwrap(), h.gid().unwrap()));
    }
    assert_eq!(
        owners.get("bin/busybox"),
        Some(&(0, 0)),
        "host-owned files are the guest's root's"
    );
    assert_eq!(
        owners.get("etc/shadow"),
        Some(&(0, 42)),
        "the archive's own groups survive"
    );
    assert_eq!(
        owners.get("root/mine"),
        Some(&(1234, 2345)),
        "subordinate ids map back"
    );
    // No host id (the user's own, or one of the subordinate range) leaks.
    let user = (r.user.uid as u64, r.user.gid as u64);
    let leaked: Vec<_> = owners
        .iter()
        .filter(|(_, &(u, g))| u >= 65536 || g >= 65536 || u == user.0 || g == user.1)
        .collect();
    assert!(leaked.is_empty(), "host ids in the archive: {leaked:?}");
    ok(&r.run(&["rm", "aarch64"]));
}

#[test]
fn without_subordinate_ids_only_root_is_mapped_and_doctor_says_so() {
    if !sandbox_ready("aarch64") || !host_changes_allowed() {
        return;
    }
    let server = MirrorServer::alpine();
    let r = Rootless::new("xroot-nosub", None, &server.url);
    let out = ok(&r.run(&["run", "aarch64", "--", "sh", "-c", "id -u; cat /proc/self/uid_map | tr -s ' '; touch /tmp/f; chown 1234 /tmp/f 2>/dev/null || echo chown-refused"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].trim(), "0 0 1", "only root exists inside");
    assert_eq!(lines[2], "chown-refused");
    let doc = r.run(&["doctor"]);
    let text = stdout(&doc);
    assert!(
        text.contains("FIX   id map") && text.contains("--add-subuids"),
        "{text}"
    );
    // The suggested range is no one's yet (issue #18: it always said
    // 100000-165535, whoever had it).
    let range = text
        .split("--add-subuids ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("a range in the fix");
    let (a, b) = range.split_once('-').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert_eq!(b - a + 1, 65536, "{range}");
    for file in ["/etc/subuid", "/etc/subgid"] {
        for l in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let f: Vec<u64> = l
                .split(':')
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [s, n] = f[..] {
                assert!(b < s || s + n <= a, "{range} overlaps {file}: {l}");
            }
        }
    }
}

#[test]
fn host_mode_without_handler_names_the_fix() {
    if !sandbox_ready("s390x") || !host_changes_allowed() {
        return;
    }
    // Simulates a kernel without private binfmt_misc: force the host's
    // handlers, of which there is none for s390x.
    let claimed = host_binfmt_entries().iter().any(|e| e.contains("s390x"));
    if !require(
        !claimed,
        "no host binfmt handler for s390x (a test cannot remove the machine's own)",
    ) {
        return;
    }
    let server = MirrorServer::alpine();
    let r = Rootless::new("xroot-test", Some(200000), &server.url);
    let binfmt_before = host_binfmt_entries();
    let o = r.run(&["run", "s390x", "--binfmt", "host", "--", "true"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("sudo xroot binfmt install s390x"), "{e}");
    assert_eq!(host_binfmt_entries(), binfmt_before);
}
