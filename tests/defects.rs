//! The smaller defects of issues #13 and #18: bad arguments, panics,
//! control characters, disk-full messages, locks, knobs.

mod common;
use common::*;

/// `--user` ids that are not ids ((uid_t)-1 means "no change" to
/// setresuid, so it ran the command as root), `--env =x` and host names
/// that are not host names are refused when the arguments are parsed:
/// exit 2, the value named, nothing fetched.
#[test]
fn invalid_user_env_and_hostname_values_are_refused_before_anything_happens() {
    // Nothing listens here: a fetch attempt would show up as an HTTP error.
    let env = Env::new("http://127.0.0.1:9/");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--user", "4294967295"],
            "UID 4294967295 is not a valid id",
        ),
        (
            &["--user", "65534:4294967295"],
            "GID 4294967295 is not a valid id",
        ),
        (&["--user", "99999999999"], "is not a valid id"),
        (&["--env", "=x"], "variable name is empty"),
        (&["--env", "NOEQUALS"], "not K=V"),
        (&["--hostname", "a\nb"], "host name"),
        (&["--hostname", "has space"], "host name"),
        (&["--hostname", "\x1b]0;pwned\x07"], "host name"),
        (&["--hostname", &"a".repeat(65)], "host name"),
    ];
    for (args, want) in cases {
        let mut full = vec!["run", "aarch64"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--", "id"]);
        let o = env.run(&full);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?} accepted: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !has_controls(&err),
            "{args:?}: raw control characters: {err:?}"
        );
        assert!(
            !env.home().join("rootfs").exists() && !env.home().join("cache").exists(),
            "{args:?}: something was fetched before the arguments were checked"
        );
    }
}

/// Whether text holds a byte a terminal would act on.
fn has_controls(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() && c != '\n' || ('\u{80}'..='\u{9f}').contains(&c))
}

/// A mirror that redirects to something that is not an http(s) URL with a
/// host made ureq panic (abort, exit 134). Each is now a clear error naming
/// the URL and the redirect, exit 1, nothing installed; good redirects are
/// still followed.
#[test]
fn redirects_to_non_http_urls_are_errors_not_panics() {
    use common::faults::*;
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    for to in [
        "file:///etc/passwd",
        "gopher:/x",
        "data:text/plain,x",
        "ftp://example.com/x",
        "http://",
        "http://[::1",
        "gopher://\x1b]0;pwned\x07/",
    ] {
        server.route(&index_path(), Reply::Redirect(to.into()));
        let o = env
            .cmd()
            .env("XROOT_RETRIES", "1")
            .args(["fetch", "aarch64", "--branch", "v3.20"])
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "redirect to {to:?}: {e}");
        assert!(!e.contains("panicked"), "redirect to {to:?}: {e}");
        assert!(e.contains(&server.at(&index_path())), "{to:?}: {e}");
        assert!(e.contains("hint:"), "{to:?}: {e}");
        assert!(!has_controls(&e), "raw control characters in {e:?}");
        assert_nothing_installed(&env.home(), to);
    }
    // A relative redirect to a good copy is followed.
    server.route(
        &index_path(),
        Reply::Redirect("../aarch64/../aarch64/i.yaml".into()),
    );
    server.route(
        &format!("{REL}/i.yaml"),
        Reply::Body(200, index_text().into_bytes()),
    );
    ok(&env.run(&["fetch", "aarch64", "--branch", "v3.20", "--quiet"]));
    assert!(env.rootfs("aarch64").join("bin/busybox").is_file());
}

/// Control characters that an index, a server or an archive chooses reach
/// the terminal escaped, in every message and listing: an HTTP reason
/// phrase, the index's `version:` (also in every later `xroot list`), tar
/// entry names in warnings and errors.
#[test]
fn control_characters_from_inputs_are_escaped_everywhere() {
    use common::faults::*;
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let fetch = |extra: &[&str]| {
        env.cmd()
            .env("XROOT_RETRIES", "1")
            .args(["fetch", "aarch64", "--branch", "v3.20"])
            .args(extra)
            .output()
            .unwrap()
    };

    // 1. An HTTP reason phrase.
    server.route(
        &index_path(),
        Reply::Raw(b"HTTP/1.1 500 \x1b]0;pwned\x07\x1b[2J\r\nContent-Length: 0\r\n\r\n".to_vec()),
    );
    let o = fetch(&[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("500"), "{e}");
    assert!(!has_controls(&e), "raw control characters: {e:?}");
    assert!(e.contains("\\x1b]0;pwned\\x07"), "not shown escaped: {e:?}");

    // 2. A hostile `version:` (YAML escapes \e and \a), then `xroot list`.
    let index = index_text().replace("version: 3.20.3", "version: \"3.20.3\\e]0;pwned\\a\\e[1A\"");
    assert_ne!(index, index_text(), "the index changed shape");
    server.route(&index_path(), Reply::Body(200, index.into_bytes()));
    let o = fetch(&[]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(!has_controls(&e), "raw control characters: {e:?}");
    let o = env.run(&["list"]);
    let listing = ok(&o);
    assert!(listing.contains("aarch64"), "{listing}");
    assert!(
        !has_controls(&listing),
        "raw control characters: {listing:?}"
    );
    assert!(listing.contains("\\x1b]0;pwned"), "{listing}");

    // 3. Tar entry names: a FIFO that is skipped (a warning lists it) and a
    // `..` entry that is refused (an error names it).
    let busybox = std::fs::read(probe("aarch64")).unwrap();
    let tarball = |evil: Option<&str>, fifo: &str| {
        let mut b = tar::Builder::new(Vec::new());
        let mut add =
            |name: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_mode(mode);
                h.set_size(data.len() as u64);
                h.set_mtime(1_700_000_000);
                h.set_uid(0);
                h.set_gid(0);
                // Raw name bytes: the tar crate's setters would refuse `..`.
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(l) = link {
                    gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
                h.set_cksum();
                b.append(&h, data).unwrap();
            };
        add("./", tar::EntryType::Directory, 0o755, b"", None);
        add("./bin/", tar::EntryType::Directory, 0o755, b"", None);
        add(
            "./bin/busybox",
            tar::EntryType::Regular,
            0o755,
            &busybox,
            None,
        );
        add(
            "./bin/sh",
            tar::EntryType::Symlink,
            0o777,
            b"",
            Some("/bin/busybox"),
        );
        add(fifo, tar::EntryType::Fifo, 0o644, b"", None);
        if let Some(n) = evil {
            add(n, tar::EntryType::Regular, 0o644, b"x", None);
        }
        b.into_inner().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let skipped = dir.path().join("skipped.tar");
    std::fs::write(&skipped, tarball(None, "./fifo\x1b]0;pwned\x07")).unwrap();
    let o = env.run(&["fetch", "aarch64@t1", "--from", skipped.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("fifo\\x1b]0;pwned\\x07"),
        "the skipped FIFO is not listed: {e:?}"
    );
    assert!(!has_controls(&e), "raw control characters: {e:?}");
    let refused = dir.path().join("refused.tar");
    std::fs::write(&refused, tarball(Some("./a/../../\x1b[2Jx"), "./f")).unwrap();
    let o = env.run(&["fetch", "aarch64@t2", "--from", refused.to_str().unwrap()]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("\\x1b[2Jx"),
        "the refused entry is not named: {e:?}"
    );
    assert!(!has_controls(&e), "raw control characters: {e:?}");
}

fn sha256_hex(p: &std::path::Path) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(std::fs::read(p).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `fetch ARCH --from X --sha256 Y` when ARCH is installed looked at
/// neither X nor Y and exited 0. Now the arguments are checked first, and
/// a different source is refused (exit 1) with what is installed and how
/// to replace it; the same source is "already installed" (exit 0).
#[test]
fn fetch_from_checks_its_arguments_and_the_installed_source() {
    let env = Env::new("http://127.0.0.1:9/");
    let tar = mirror_dir().join("v3.20/releases/aarch64/alpine-minirootfs-3.20.3-aarch64.tar.gz");
    let tar_s = tar.to_str().unwrap();
    let sum = sha256_hex(&tar);
    ok(&env.run(&[
        "fetch", "aarch64", "--from", tar_s, "--sha256", &sum, "--quiet",
    ]));

    // Bad arguments: refused by the argument parser even though installed.
    let bad: &[(&[&str], &str)] = &[
        (&["--from", tar_s, "--sha256", "abc"], "not a sha256 digest"),
        (
            &["--from", tar_s, "--sha256", &sum[1..]],
            "not a sha256 digest",
        ),
        (&["--from", "/nonexistent/x.tar.gz"], "No such file"),
        (
            &["--from", "ftp://example.org/x.tar.gz"],
            "unsupported URL scheme",
        ),
        (&["--from", "/etc"], "is a directory"),
    ];
    for (args, want) in bad {
        let mut full = vec!["fetch", "aarch64"];
        full.extend_from_slice(args);
        let o = env.run(&full);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}");
    }

    // The same source: already installed, exit 0.
    let o = env.run(&[
        "fetch",
        "aarch64",
        "--from",
        tar_s,
        "--sha256",
        &sum.to_uppercase(),
    ]);
    assert!(stderr(&o).contains("already installed"), "{}", stderr(&o));
    ok(&o);

    // Another file, or another digest: refused, naming what is installed
    // and the way to replace it.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.tar.gz");
    std::fs::copy(&tar, &other).unwrap();
    let other_s = other.to_str().unwrap();
    let zeros = "0".repeat(64);
    for args in [
        vec!["--from", other_s],
        vec!["--from", other_s, "--sha256", &sum],
        vec!["--from", tar_s, "--sha256", &zeros],
    ] {
        let mut full = vec!["fetch", "aarch64"];
        full.extend_from_slice(&args);
        let o = env.run(&full);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains("already installed"), "{args:?}: {e}");
        assert!(e.contains("--force"), "{args:?}: {e}");
    }
    // --force replaces it.
    ok(&env.run(&["fetch", "aarch64", "--from", other_s, "--force", "--quiet"]));
    let manifest = std::fs::read_to_string(env.home().join("rootfs/aarch64/manifest.toml"))
        .unwrap_or_default();
    assert!(manifest.contains("other.tar.gz"), "{manifest}");
}

/// Disk full: during fetch the hint says so (not "damaged or hostile");
/// while the qemu copy is made, qemu is not marked unusable for good (the
/// run uses the system's qemu, and a later run with space makes the copy);
/// the temporary file a killed maker leaves (13 MB) is removed by the next
/// maker. The store is a small tmpfs in a private mount namespace
/// (`unshare -m`), so the host's mounts are untouched.
#[test]
fn disk_full_is_named_and_not_held_against_qemu() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    let out = env.dir.path().join("out");
    let mnt = env.dir.path().join("mnt");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    // Every step writes STEP.out (stdout+stderr), STEP.rc and a listing of
    // the qemu directory, outside the tmpfs.
    let script = r#"
set -u
X="$1"; M="$2"; O="$3"
export XROOT_HOME="$M/h"
step() { name=$1; shift; "$@" >"$O/$name.out" 2>&1; echo $? >"$O/$name.rc"; ls -a "$M/h/qemu" >"$O/$name.qemu" 2>/dev/null; }
mount -t tmpfs -o size=2m tmpfs "$M" || exit 99
step fetch_full "$X" fetch aarch64 --branch v3.20
# Room for the tarball and the tree (~13 MB), not for a 13 MB qemu copy.
mount -o remount,size=18m "$M"
step fetch_ok "$X" fetch aarch64 --branch v3.20 --quiet
step run_full "$X" run aarch64 -- /bin/true
mount -o remount,size=80m "$M"
step run_room "$X" run aarch64 -- /bin/true
# What a maker killed mid-copy leaves: the copy missing, a temp file of it.
copy=$(cd "$M/h/qemu" && ls | grep -v '\.lock$' | grep '^qemu-aarch64-static\.' | head -1)
mv "$M/h/qemu/$copy" "$M/h/qemu/.tmp-$copy-2147483646"
step run_after_kill "$X" run aarch64 -- /bin/true
"#;
    let o = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(bin())
        .arg(&mnt)
        .arg(&out)
        .env("XROOT_MIRROR", &server.url)
        .env("XROOT_RETRIES", "1")
        .env_remove("XROOT_QEMU_PRELINK")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    let rc = |s: &str| read(&format!("{s}.rc")).trim().to_string();

    let e = read("fetch_full.out");
    assert_eq!(rc("fetch_full"), "1", "{e}");
    assert!(e.contains("disk full at"), "{e}");
    assert!(!e.contains("damaged or hostile"), "{e}");

    assert_eq!(rc("fetch_ok"), "0", "{}", read("fetch_ok.out"));
    assert_eq!(rc("run_full"), "0", "{}", read("run_full.out"));
    let q = read("run_full.qemu");
    assert!(
        !q.contains(".unusable"),
        "disk full marked qemu unusable: {q}"
    );
    assert!(!q.contains(".tmp-"), "a temp file is left: {q}");

    assert_eq!(rc("run_room"), "0", "{}", read("run_room.out"));
    let q = read("run_room.qemu");
    assert!(
        q.lines()
            .any(|l| l.starts_with("qemu-aarch64-static.") && !l.ends_with(".lock")),
        "no copy made once there was room: {q}"
    );

    assert_eq!(rc("run_after_kill"), "0", "{}", read("run_after_kill.out"));
    let q = read("run_after_kill.qemu");
    assert!(
        !q.contains(".tmp-"),
        "the killed maker's temp file stays: {q}"
    );
    assert!(
        q.lines()
            .any(|l| l.starts_with("qemu-aarch64-static.") && !l.ends_with(".lock")),
        "{q}"
    );
}

/// `xroot rm` deleted a tree that a `--rootfs` guest was running in: a
/// `--rootfs` run of a store tree (by any path: here through a symlink)
/// now takes that tree's lock, so `rm` refuses while the guest runs.
#[test]
fn rm_refuses_a_store_tree_a_rootfs_guest_runs_in() {
    use std::io::BufRead;
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let shared = tempfile::tempdir().unwrap();
    let link = shared.path().join("tree");
    std::os::unix::fs::symlink(env.rootfs("aarch64"), &link).unwrap();
    let mut guest = env
        .cmd()
        .arg("run")
        .arg("--rootfs")
        .arg(&link)
        .arg("--bind")
        .arg(format!("{}:/shared", shared.path().display()))
        .args([
            "--",
            "sh",
            "-c",
            "echo started; i=0; while [ ! -e /shared/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; cat /etc/alpine-release",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(guest.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");

    let o = env.run(&["rm", "aarch64"]);
    let e = stderr(&o);
    std::fs::write(shared.path().join("go"), "").unwrap();
    assert_eq!(o.status.code(), Some(1), "rm removed a tree in use: {e}");
    assert!(e.contains("in use"), "{e}");
    assert!(env.rootfs("aarch64").join("bin/busybox").is_file());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(guest.wait().unwrap().success());
    assert!(
        rest.starts_with("3.20"),
        "the guest lost its tree: {rest:?}"
    );
    // Once the guest is gone, rm works.
    ok(&env.run(&["rm", "aarch64"]));
}

/// Rootless with subordinate ids, extraction keeps setuid/setgid bits (the
/// guest needs su and passwd under its own ids): on the host such a file
/// belongs to the caller or one of the caller's subordinate ids, in a
/// store only the caller can enter. An owner the id map cannot represent
/// stays the caller's (guest root), so its setuid/setgid bits are dropped:
/// never a setuid-root program that the archive did not have. (docs/security.md)
#[test]
fn rootless_setuid_bits_follow_the_documented_rule() {
    use std::os::unix::fs::MetadataExt;
    if !sandbox_ready("aarch64") || !host_changes_allowed() {
        return;
    }
    let user = unprivileged_user("xroot-suid", Some(700000));
    let dir = user_tempdir(&user);
    let bin_dir = user_tempdir(&user);
    let x = public_bin(bin_dir.path());
    let busybox = std::fs::read(probe("aarch64")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, ids: (u64, u64), data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_path(name).unwrap();
        if kind == tar::EntryType::Symlink {
            h.set_link_name("/bin/busybox").unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("./", tar::EntryType::Directory, 0o755, (0, 0), b"");
    add("./bin/", tar::EntryType::Directory, 0o755, (0, 0), b"");
    add(
        "./bin/busybox",
        tar::EntryType::Regular,
        0o755,
        (0, 0),
        &busybox,
    );
    add("./bin/sh", tar::EntryType::Symlink, 0o777, (0, 0), b"");
    add("./bin/su", tar::EntryType::Regular, 0o4755, (0, 0), b"su");
    add(
        "./bin/ping",
        tar::EntryType::Regular,
        0o4750,
        (100, 101),
        b"ping",
    );
    add(
        "./bin/wall",
        tar::EntryType::Regular,
        0o2755,
        (0, 5),
        b"wall",
    );
    add(
        "./bin/alien",
        tar::EntryType::Regular,
        0o6755,
        (70000, 70000),
        b"x",
    );
    // The last id the map holds (0 and 1..=65535), and the first past it.
    add(
        "./bin/last",
        tar::EntryType::Regular,
        0o4755,
        (65535, 65535),
        b"x",
    );
    add(
        "./bin/edge",
        tar::EntryType::Regular,
        0o4755,
        (65536, 0),
        b"x",
    );
    let tarball = dir.path().join("t.tar");
    std::fs::write(&tarball, b.into_inner().unwrap()).unwrap();
    std::os::unix::fs::chown(&tarball, Some(user.uid), Some(user.gid)).unwrap();
    let o = as_user(&user, &x)
        .args(["fetch", "aarch64", "--from"])
        .arg(&tarball)
        .env("XROOT_HOME", dir.path().join("store"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    ok(&o);
    let bin = dir.path().join("store/rootfs/aarch64/root/bin");
    let stat = |f: &str| {
        let m = std::fs::symlink_metadata(bin.join(f)).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    // The host view: subordinate ids are 700000.. for guest ids 1..
    assert_eq!(stat("su"), (0o4755, user.uid, user.gid));
    assert_eq!(stat("ping"), (0o4750, 700000 + 99, 700000 + 100));
    assert_eq!(stat("wall"), (0o2755, user.uid, 700000 + 4));
    assert_eq!(stat("alien"), (0o755, user.uid, user.gid));
    assert_eq!(stat("edge"), (0o755, user.uid, user.gid));
    assert_eq!(stat("last"), (0o4755, 700000 + 65534, 700000 + 65534));
    // The store is private: nobody else can reach these files.
    let store = dir.path().join("store");
    assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o077, 0);
}

/// Every knob is read one way (clap's `env`): a bad value of an
/// environment variable is an error naming it (exit 2), as a bad option
/// is; before, `XROOT_TIMEOUT=abc` and `XROOT_RETRIES=-1` were silently
/// ignored while `XROOT_MAX_UNPACKED=abc` was an error. The knobs are in
/// `--help` with their variables.
#[test]
fn environment_knobs_are_validated_and_documented() {
    let env = Env::new("http://127.0.0.1:9/");
    for (var, val) in [
        ("XROOT_TIMEOUT", "abc"),
        ("XROOT_TIMEOUT", "-1"),
        ("XROOT_TIMEOUT", "0"),
        ("XROOT_RETRIES", "-1"),
        ("XROOT_RETRIES", "0"),
        ("XROOT_RETRIES", "two"),
        ("XROOT_MAX_UNPACKED", "abc"),
        ("XROOT_QEMU_PRELINK", "maybe"),
    ] {
        for args in [
            &["fetch", "aarch64"][..],
            &["run", "aarch64", "--", "true"],
            &["reset", "aarch64"],
        ] {
            let o = env.cmd().env(var, val).args(args).output().unwrap();
            let e = stderr(&o);
            assert_eq!(
                o.status.code(),
                Some(2),
                "{var}={val} {args:?} accepted: {e}"
            );
            assert!(e.contains(var) && e.contains(val), "{var}={val}: {e}");
        }
    }
    // Valid values are taken: one attempt, a short timeout, and the
    // message counts no retries.
    let o = env
        .cmd()
        .env("XROOT_RETRIES", "1")
        .env("XROOT_TIMEOUT", "0.5")
        .args(["fetch", "aarch64"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("attempts"), "{}", stderr(&o));
    let help = ok(&env.run(&["fetch", "--help"]));
    for var in [
        "XROOT_TIMEOUT",
        "XROOT_RETRIES",
        "XROOT_MAX_UNPACKED",
        "XROOT_MIRROR",
        "XROOT_QEMU_PRELINK",
    ] {
        assert!(help.contains(var), "{var} not in --help:\n{help}");
    }
}

/// The guest's CPU time is accounted to xroot: `time xroot run ... gcc`,
/// hyperfine and CI accounting read it from wait4(2) on xroot, which
/// covers xroot's reaped descendants only; xroot now reaps the guest's
/// PID 1 (which reaped the command) before it exits. Before, a guest busy
/// for a third of a second showed ~0 s.
#[test]
fn the_guests_cpu_time_is_accounted_to_xroot() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let child = env
        .cmd()
        .args(["run", "aarch64", "--", "sh", "-c"])
        .arg("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let t = std::time::Instant::now();
    // SAFETY: waiting for our own child; `child` is not waited on again.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed().as_secs_f64();
    std::mem::forget(child);
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let cpu = secs(ru.ru_utime) + secs(ru.ru_stime);
    assert!(
        cpu >= 0.1,
        "xroot's rusage shows {cpu:.3} s of CPU for a guest that ran {wall:.3} s of busy loop"
    );
}

/// `--create-user` picks the guest's own account tool instead of trying
/// busybox's `adduser -D` first: on a Debian-shaped tree (shadow's
/// `useradd`, and Debian's `adduser`, a Perl script that answers `-D` with
/// its 35-line usage) no usage is printed. The tree is Alpine's with those
/// two tools in Debian's shape: `adduser` starts `#!/usr/bin/perl` (here
/// `/usr/bin/perl` runs the guest's shell, so the stand-in runs) and prints
/// a usage for `-D` as Debian's does; each tool logs that it ran.
#[test]
fn create_user_uses_the_tool_the_guest_has() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    let tar = mirror_dir().join("v3.20/releases/aarch64/alpine-minirootfs-3.20.3-aarch64.tar.gz");
    ok(&env.run(&[
        "fetch",
        "aarch64@deb",
        "--from",
        tar.to_str().unwrap(),
        "--quiet",
    ]));
    let shape = r#"set -e
rm -f /usr/sbin/adduser
printf '#!/bin/sh\nexec /bin/sh "$@"\n' > /usr/bin/perl; chmod 755 /usr/bin/perl
cat > /usr/sbin/adduser <<'EOS'
#!/usr/bin/perl
case "$1" in -*) [ "$1" = --disabled-password ] || { i=0; while [ $i -lt 35 ]; do echo "adduser [--uid ID] ... Usage line $i"; i=$((i+1)); done; exit 1; };; esac
while [ "$1" != -- ]; do shift; done; shift
echo debian-adduser >> /tmp/log; exec busybox adduser -D "$1"
EOS
cat > /usr/sbin/useradd <<'EOS'
#!/bin/sh
[ "$1" = -m ] && [ "$2" = -- ] || { echo "useradd: bad arguments $*" >&2; exit 2; }
echo useradd >> /tmp/log; exec busybox adduser -D "$3"
EOS
chmod 755 /usr/sbin/adduser /usr/sbin/useradd"#;
    ok(&env.run(&["run", "aarch64@deb", "--", "sh", "-c", shape]));
    let create = |user: &str| {
        env.run(&[
            "run",
            "aarch64@deb",
            "--user",
            user,
            "--create-user",
            "--",
            "sh",
            "-c",
            "id -un; cat /tmp/log",
        ])
    };
    // Both tools: useradd, as on Debian.
    let o = create("eve");
    let e = stderr(&o);
    assert_eq!(ok(&o), "eve\nuseradd\n", "{e}");
    assert!(
        !e.to_lowercase().contains("usage"),
        "a usage was printed: {e}"
    );
    // Only Debian's adduser: its own options.
    ok(&env.run(&[
        "run",
        "aarch64@deb",
        "--",
        "rm",
        "/usr/sbin/useradd",
        "/tmp/log",
    ]));
    let o = create("bob");
    let e = stderr(&o);
    assert_eq!(ok(&o), "bob\ndebian-adduser\n", "{e}");
    assert!(
        !e.to_lowercase().contains("usage"),
        "a usage was printed: {e}"
    );
    // Alpine's busybox adduser.
    let o = env.run(&[
        "run",
        "aarch64",
        "--user",
        "carol",
        "--create-user",
        "--",
        "id",
        "-un",
    ]);
    assert_eq!(ok(&o), "carol\n", "{}", stderr(&o));
}

/// SIGKILL of xroot while it makes the store's qemu copy (a 13 MB
/// temporary file, renamed into place once checked) left the temporary
/// file for good. The next maker of that copy removes it.
#[test]
fn a_qemu_copy_killed_mid_way_is_cleaned_up_by_the_next_run() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let qdir = env.home().join("qemu");
    let temps = || -> Vec<String> {
        std::fs::read_dir(&qdir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut killed_mid_copy = false;
    for _ in 0..20 {
        let _ = std::fs::remove_dir_all(&qdir);
        let mut child = env
            .cmd()
            .args(["run", "aarch64", "--", "true"])
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        while temps().is_empty() && t.elapsed() < std::time::Duration::from_secs(10) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        if !temps().is_empty() {
            killed_mid_copy = true;
            break;
        }
    }
    assert!(killed_mid_copy, "never caught xroot while it made the copy");
    let left = temps();
    ok(&env.run(&["run", "aarch64", "--", "true"]));
    assert!(
        temps().is_empty(),
        "{left:?} left behind after the next run: {:?}",
        temps()
    );
    let copies: Vec<_> = std::fs::read_dir(&qdir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            // (NAME.seal is the copy's seal, not a second copy.)
            n.starts_with("qemu-aarch64-static.") && !n.ends_with(".seal")
        })
        .collect();
    assert_eq!(copies.len(), 1, "the next run made the copy");
}
