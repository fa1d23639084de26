//! Issue #5, hostile tarballs: extraction never creates, changes or follows
//! anything outside the target directory, and a refused archive leaves the
//! store as it was.
//!
//! Each test crafts a tarball at test time (the `tar` crate for headers,
//! raw 512-byte headers where a hostile name must get through), imports it
//! with the real `xroot fetch aarch64 --from FILE --sha256 HEX`, and checks
//! the outcome, a watched directory next to the store (`outside/`, which
//! `../../../../outside` from the staging root reaches), a few host paths,
//! and the store. The good part of every archive is a tiny aarch64 "rootfs":
//! the shared static probe program as `/bin/busybox`, `/bin/sh` linking to it.

mod common;
use common::faults::*;
use common::*;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::Digest;
use tar::{EntryType, Header};

const MTIME: u64 = 1_700_000_000;

/// A tarball under construction, from raw GNU headers so that names the
/// `tar` crate's path setters refuse (`..`, absolute) can be written.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    /// The good minimal aarch64 tree every test starts from.
    fn base() -> Tar {
        let busybox = fs::read(probe("aarch64")).expect("reading the aarch64 probe");
        let mut t = Tar::new();
        t.dir("./", 0o755)
            .dir("./bin/", 0o755)
            .dir("./etc/", 0o755)
            .dir("./tmp/", 0o1777)
            .file("./etc/alpine-release", 0o644, b"3.20.3\n")
            .file("./bin/busybox", 0o755, &busybox)
            .symlink("./bin/sh", "/bin/busybox");
        t
    }

    fn header(kind: EntryType, mode: u32, ids: (u64, u64), size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_mtime(MTIME);
        h.set_size(size);
        h
    }

    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        kind: EntryType,
        path: &str,
        link: &str,
        mode: u32,
        ids: (u64, u64),
        data: &[u8],
    ) -> &mut Tar {
        let mut h = Self::header(kind, mode, ids, data.len() as u64);
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Tar {
        self.raw(EntryType::Regular, path, "", mode, (0, 0), data)
    }
    fn dir(&mut self, path: &str, mode: u32) -> &mut Tar {
        self.raw(EntryType::Directory, path, "", mode, (0, 0), b"")
    }
    fn symlink(&mut self, path: &str, target: &str) -> &mut Tar {
        self.raw(EntryType::Symlink, path, target, 0o777, (0, 0), b"")
    }
    fn hardlink(&mut self, path: &str, target: &str) -> &mut Tar {
        self.raw(EntryType::Link, path, target, 0o644, (0, 0), b"")
    }
    fn device(&mut self, kind: EntryType, path: &str, major: u32, minor: u32) -> &mut Tar {
        let mut h = Self::header(kind, 0o666, (0, 0), 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        self.0.append(&h, &b""[..]).unwrap();
        self
    }
    /// A regular file whose real name comes from a PAX `path` record.
    fn pax_file(&mut self, path: &str, data: &[u8]) -> &mut Tar {
        let body = format!(" path={path}\n");
        let len = (1..)
            .find(|n: &usize| n.to_string().len() + body.len() == *n)
            .unwrap();
        let record = format!("{len}{body}");
        let mut x = Header::new_ustar();
        x.set_entry_type(EntryType::XHeader);
        x.set_path("PaxHeader").unwrap();
        x.set_mode(0o644);
        x.set_mtime(MTIME);
        x.set_size(record.len() as u64);
        x.set_cksum();
        self.0.append(&x, record.as_bytes()).unwrap();
        self.file("innocent", 0o644, data)
    }
    /// A regular file whose real name comes from a GNU long-name record.
    fn gnu_long_file(&mut self, path: &str, data: &[u8]) -> &mut Tar {
        let mut name = path.as_bytes().to_vec();
        name.push(0);
        let mut l = Self::header(EntryType::GNULongName, 0o644, (0, 0), name.len() as u64);
        l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        l.set_cksum();
        self.0.append(&l, &name[..]).unwrap();
        self.file("innocent", 0o644, data)
    }
    fn bytes(&mut self) -> Vec<u8> {
        self.0.finish().unwrap();
        self.0.get_ref().clone()
    }
    fn gz(&mut self) -> Vec<u8> {
        gzip(&self.bytes())
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha256(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A store plus the host-side things a hostile archive aims at.
struct Case {
    env: Env,
    /// Watched host directory: `../../../../outside` from the staging root.
    outside: PathBuf,
    /// Absolute host paths that hostile entries name and must not appear.
    absent: Vec<PathBuf>,
    before: Vec<String>,
    etc_passwd: Vec<String>,
}

impl Case {
    fn new() -> Case {
        let env = Env::new("http://127.0.0.1:9");
        let outside = env.dir.path().join("outside");
        fs::create_dir_all(outside.join("dir")).unwrap();
        fs::write(outside.join("passwd"), b"host file\n").unwrap();
        fs::write(outside.join("dir/keep"), b"keep\n").unwrap();
        let before = snapshot(&outside);
        Case {
            env,
            outside,
            absent: Vec::new(),
            before,
            etc_passwd: snapshot(Path::new("/etc/passwd")),
        }
    }

    /// A unique absolute host path a hostile entry may name.
    fn host_target(&mut self, tag: &str) -> String {
        let p = std::env::temp_dir().join(format!("xroot-hostile-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        let _ = fs::remove_file(&p);
        self.absent.push(p.clone());
        p.display().to_string()
    }

    /// `xroot fetch aarch64 --from FILE --sha256 HEX ARGS...`.
    fn import(&self, data: &[u8], args: &[&str]) -> Output {
        let file = self.env.dir.path().join("in.tar.gz");
        fs::write(&file, data).unwrap();
        let mut c = self.env.cmd();
        c.args(["fetch", "aarch64", "--from"])
            .arg(&file)
            .args(["--sha256", &sha256(data)])
            .args(args);
        let o = c.output().unwrap();
        let _ = fs::remove_file(&file);
        o
    }

    fn root(&self) -> PathBuf {
        self.env.rootfs("aarch64")
    }

    /// Nothing outside the target changed, whatever the outcome.
    #[track_caller]
    fn host_untouched(&self, case: &str) {
        assert_eq!(
            snapshot(&self.outside),
            self.before,
            "{case}: the watched host directory changed"
        );
        assert_eq!(
            snapshot(Path::new("/etc/passwd")),
            self.etc_passwd,
            "{case}: /etc/passwd changed"
        );
        for p in &self.absent {
            assert!(
                fs::symlink_metadata(p).is_err(),
                "{case}: {} was created on the host",
                p.display()
            );
        }
        // Nothing appeared beside the store either.
        let mut top = names(self.env.dir.path());
        top.retain(|n| n != "in.tar.gz");
        assert_eq!(top, ["home", "outside"], "{case}");
    }

    /// A refused archive: exit 1, the message names the file and `wants`,
    /// and the store and host are as before.
    #[track_caller]
    fn refused(&self, o: &Output, wants: &[&str], case: &str) -> String {
        let e = stderr(o);
        eprintln!("--- {case}:\n{e}");
        assert_eq!(o.status.code(), Some(1), "{case}: must fail:\n{e}");
        assert!(e.contains("in.tar.gz"), "{case}: names the file: {e}");
        for w in wants {
            assert!(e.contains(w), "{case}: stderr lacks {w:?}:\n{e}");
        }
        assert_nothing_installed(&self.env.home(), case);
        self.host_untouched(case);
        e
    }

    /// An accepted archive: installed, host as before. Removes it again so
    /// the next case starts from an empty store.
    #[track_caller]
    fn accepted(&self, o: &Output, case: &str, check: impl FnOnce(&Path)) {
        let e = stderr(o);
        eprintln!("--- {case}:\n{e}");
        assert!(o.status.success(), "{case}: must succeed:\n{e}");
        assert!(self.root().join("bin/busybox").is_file(), "{case}");
        self.host_untouched(case);
        check(&self.root());
        ok(&self.env.run(&["rm", "aarch64"]));
        assert_nothing_installed_but_cache(&self.env.home(), case);
        // The verified tarball stays cached; clear it so that the next case
        // can check that a refused import adds nothing there.
        assert_eq!(cached_downloads(&self.env.home()), ["in.tar.gz"], "{case}");
        fs::remove_file(self.env.home().join("cache/in.tar.gz")).unwrap();
    }
}

/// After `xroot rm`: no rootfs, no staging (the verified tarball may stay cached).
#[track_caller]
fn assert_nothing_installed_but_cache(home: &Path, case: &str) {
    assert_eq!(names(&home.join("rootfs")), Vec::<String>::new(), "{case}");
    assert_eq!(names(&home.join("tmp")), Vec::<String>::new(), "{case}");
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn crafted_baseline_is_accepted() {
    // The harness itself: the minimal tree installs, so every refusal below
    // is caused by the hostile entry and nothing else.
    let c = Case::new();
    let tgz = Tar::base().gz();
    let o = c.import(&tgz, &[]);
    c.accepted(&o, "baseline", |root| {
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(mode(&root.join("tmp")), 0o1777);
    });
}

#[test]
fn dotdot_entries_are_refused() {
    let c = Case::new();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "leading ..",
            Tar::base()
                .file("../../../../outside/pwned", 0o644, b"x")
                .bytes(),
            "../../../../outside/pwned",
        ),
        (
            ".. in the middle",
            Tar::base()
                .file("bin/../../../../../outside/passwd", 0o644, b"x")
                .bytes(),
            "bin/../../../../../outside/passwd",
        ),
        (
            "./..",
            Tar::base().dir("./../../../../outside/dir/", 0o777).bytes(),
            "outside/dir",
        ),
        (
            ".. via a PAX path",
            Tar::base()
                .pax_file("../../../../outside/pax-pwned", b"x")
                .bytes(),
            "../../../../outside/pax-pwned",
        ),
        (
            ".. via a GNU long name",
            Tar::base()
                .gnu_long_file(
                    &format!("{}/../../../../../outside/long-pwned", "d".repeat(120)),
                    b"x",
                )
                .bytes(),
            "long-pwned",
        ),
        (
            ".. before the good entries",
            {
                let mut t = Tar::new();
                t.file("../../../../outside/first", 0o644, b"x");
                // No end marker between the two parts.
                let mut v = t.0.get_ref().clone();
                v.extend(Tar::base().bytes());
                v
            },
            "../../../../outside/first",
        ),
    ];
    for (case, tar, entry) in cases {
        let o = c.import(&gzip(&tar), &[]);
        let e = c.refused(&o, &["refusing archive", entry, "`..`"], case);
        assert!(e.contains("hint:"), "{e}");
    }
}

#[test]
fn absolute_paths_are_rerooted_inside() {
    // Documented safe outcome: `/x` lands at `<rootfs>/x`, as with
    // `tar -C / .` archives; nothing is written at the host's `/x`.
    let mut c = Case::new();
    let abs_dir = c.host_target("abs-dir");
    let abs_file = format!("{abs_dir}/owned");
    let abs_passwd = c.outside.join("passwd").display().to_string();
    let tar = Tar::base()
        .dir(&format!("{abs_dir}/"), 0o755)
        .file(&abs_file, 0o644, b"inside")
        .file(&abs_passwd, 0o644, b"inside too")
        .gz();
    let o = c.import(&tar, &[]);
    c.accepted(&o, "absolute paths", |root| {
        let inner = root.join(abs_file.trim_start_matches('/'));
        assert_eq!(fs::read(&inner).unwrap(), b"inside");
        let inner = root.join(abs_passwd.trim_start_matches('/'));
        assert_eq!(fs::read(&inner).unwrap(), b"inside too");
    });
}

#[test]
fn symlinks_are_never_followed() {
    let mut c = Case::new();
    let out = c.outside.display().to_string();
    let host_dir = c.host_target("via-symlink");
    fs::create_dir(&host_dir).unwrap();
    c.absent.retain(|p| p != Path::new(&host_dir));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute symlink out, then a file through it",
            Tar::base()
                .symlink("link", &out)
                .file("link/passwd", 0o644, b"owned")
                .bytes(),
            "link/passwd",
        ),
        (
            "relative ../../.. symlink out, then a file through it",
            Tar::base()
                .symlink("link", "../../../../outside")
                .file("link/passwd", 0o644, b"owned")
                .bytes(),
            "link/passwd",
        ),
        (
            "symlink to the host's /etc, then etc/passwd through it",
            Tar::new()
                .dir("./", 0o755)
                .symlink("etc", "/etc")
                .file("etc/passwd", 0o644, b"root::0:0::/:/bin/sh\n")
                .bytes(),
            "etc/passwd",
        ),
        (
            "symlink out, then a directory through it",
            Tar::base()
                .symlink("link", &host_dir)
                .dir("link/sub/", 0o755)
                .bytes(),
            "link/sub",
        ),
        (
            "symlink to a directory inside, then files under it",
            Tar::base()
                .symlink("lib64", "bin")
                .file("lib64/evil", 0o755, b"x")
                .bytes(),
            "lib64/evil",
        ),
        (
            "symlink chain out",
            Tar::base()
                .symlink("a", "b")
                .symlink("b", &out)
                .file("a/dir/keep", 0o644, b"owned")
                .bytes(),
            "a/dir/keep",
        ),
        (
            "directory replaced by a symlink out, then a file under it",
            Tar::base()
                .dir("d/", 0o755)
                .symlink("d", &out)
                .file("d/passwd", 0o644, b"owned")
                .bytes(),
            "d/passwd",
        ),
        (
            "hard link through a symlink to the host's /etc",
            Tar::base()
                .symlink("hostetc", "/etc")
                .hardlink("stolen", "hostetc/passwd")
                .bytes(),
            "stolen",
        ),
    ];
    for (case, tar, entry) in cases {
        let o = c.import(&gzip(&tar), &[]);
        c.refused(&o, &["refusing archive", entry, "symlink"], case);
    }
    assert_eq!(names(Path::new(&host_dir)), Vec::<String>::new());
    fs::remove_dir(&host_dir).unwrap();

    // A regular file entry over an earlier symlink replaces the link; it
    // never writes through it (documented: later entries win, as in GNU tar).
    let tar = Tar::base()
        .symlink("motd", &format!("{out}/passwd"))
        .file("motd", 0o644, b"replaced")
        .symlink("bin/evil", "/etc/shadow")
        .gz();
    let o = c.import(&tar, &[]);
    c.accepted(&o, "file over symlink", |root| {
        let m = fs::symlink_metadata(root.join("motd")).unwrap();
        assert!(m.is_file());
        assert_eq!(fs::read(root.join("motd")).unwrap(), b"replaced");
        // Symlinks are stored verbatim and never followed.
        assert_eq!(
            fs::read_link(root.join("bin/evil")).unwrap(),
            Path::new("/etc/shadow")
        );
    });
}

#[test]
fn hard_links_stay_inside() {
    let c = Case::new();
    let nlink = fs::metadata("/etc/passwd").unwrap().nlink();
    let out_passwd = c.outside.join("passwd").display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "to an absolute host file",
            Tar::base().hardlink("pw", "/etc/passwd").bytes(),
            "pw",
            "was not extracted before it",
        ),
        (
            "to the watched host file by absolute path",
            Tar::base().hardlink("pw", &out_passwd).bytes(),
            "pw",
            "hard link target",
        ),
        (
            "to ../../../../outside/passwd",
            Tar::base()
                .hardlink("pw", "../../../../outside/passwd")
                .bytes(),
            "pw",
            "`..`",
        ),
        (
            "to a directory",
            Tar::base().hardlink("bindir", "bin").bytes(),
            "bindir",
            "is a directory",
        ),
        (
            "to the archive root",
            Tar::base().hardlink("rootlink", "./").bytes(),
            "rootlink",
            "archive root",
        ),
    ];
    for (case, tar, entry, why) in cases {
        let o = c.import(&gzip(&tar), &[]);
        c.refused(&o, &["refusing archive", entry, why], case);
    }
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), nlink);

    // A hard link to an earlier entry, then a file of that name: the name
    // is replaced, the linked file keeps its content.
    let tar = Tar::base()
        .file("a", 0o644, b"original")
        .hardlink("b", "a")
        .file("b", 0o644, b"overwritten")
        .hardlink("bin/busybox2", "/bin/busybox")
        .gz();
    let o = c.import(&tar, &[]);
    c.accepted(&o, "hard links inside", |root| {
        assert_eq!(fs::read(root.join("a")).unwrap(), b"original");
        assert_eq!(fs::read(root.join("b")).unwrap(), b"overwritten");
        let bb = fs::metadata(root.join("bin/busybox")).unwrap();
        let bb2 = fs::metadata(root.join("bin/busybox2")).unwrap();
        assert_eq!((bb.ino(), bb.nlink()), (bb2.ino(), 2));
    });
}

#[test]
fn device_nodes_fifos_and_unknown_types_are_skipped() {
    let c = Case::new();
    let tar = Tar::base()
        .dir("dev/", 0o755)
        .device(EntryType::Char, "dev/mem", 1, 1)
        .device(EntryType::Char, "dev/kmsg", 1, 11)
        .device(EntryType::Block, "dev/sda", 8, 0)
        .device(EntryType::Fifo, "tmp/fifo", 0, 0)
        // tar has no socket type (GNU tar skips sockets when archiving);
        // any type byte xroot does not know is skipped the same way.
        .raw(
            EntryType::new(b'S' + 1),
            "tmp/socket",
            "",
            0o777,
            (0, 0),
            b"",
        )
        .gz();
    let o = c.import(&tar, &[]);
    let e = stderr(&o);
    c.accepted(&o, "special files", |root| {
        for p in ["dev/mem", "dev/kmsg", "dev/sda", "tmp/fifo", "tmp/socket"] {
            assert!(
                fs::symlink_metadata(root.join(p)).is_err(),
                "{p} was created"
            );
        }
    });
    assert!(e.contains("skipped dev/mem: device node"), "{e}");
    assert!(e.contains("skipped tmp/fifo: fifo"), "{e}");
}

#[test]
fn setuid_files_stay_inside_a_private_store() {
    if !require(is_root(), "tests must run as root (CI does)") {
        return;
    }
    let c = Case::new();
    // Only the store may stand between another user and the files.
    fs::set_permissions(c.env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let busybox = fs::read(probe("aarch64")).unwrap();
    let tar = Tar::base()
        .raw(EntryType::Regular, "bin/su", "", 0o4755, (0, 0), &busybox)
        .raw(EntryType::Regular, "bin/wall", "", 0o2755, (0, 5), &busybox)
        .raw(EntryType::Directory, "srv/", "", 0o2775, (0, 0), b"")
        .gz();
    let o = c.import(&tar, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = c.root();
    // Root extracting into a root-only store keeps the bits, as the guest needs them.
    assert_eq!(mode(&root.join("bin/su")), 0o4755);
    assert_eq!(mode(&root.join("bin/wall")), 0o2755);
    assert_eq!(fs::metadata(root.join("bin/wall")).unwrap().gid(), 5);
    // ... and nobody else can reach them: every store level is 0700.
    let home = c.env.home();
    for d in [
        home.clone(),
        home.join("rootfs"),
        home.join("rootfs/aarch64"),
        home.join("cache"),
        home.join("tmp"),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    use std::os::unix::process::CommandExt;
    let su = root.join("bin/su");
    let err = std::process::Command::new(&su)
        .uid(65534)
        .gid(65534)
        .output()
        .expect_err("nobody must not be able to execute a store file");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    let o = std::process::Command::new("test")
        .arg("-e")
        .arg(&su)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!o.status.success(), "nobody can see {}", su.display());
    c.host_untouched("setuid");
}

#[test]
fn absurd_modes_are_masked_and_removable() {
    let c = Case::new();
    // The mode field holds 7 octal digits: bits past 0o7777 mean nothing.
    let tar = Tar::base()
        .raw(EntryType::Regular, "huge-mode", "", 0o7777777, (0, 0), b"x")
        .file("zero-mode", 0o000, b"z")
        .dir("locked/", 0o000)
        .dir("locked/deeper/", 0o000)
        .file("locked/deeper/f", 0o000, b"f")
        .dir("ro/", 0o555)
        .file("ro/f", 0o444, b"r")
        .file("world", 0o777, b"w")
        .gz();
    let o = c.import(&tar, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = c.root();
    assert_eq!(
        fs::symlink_metadata(root.join("huge-mode")).unwrap().mode() & !0o7777,
        libc::S_IFREG
    );
    assert_eq!(mode(&root.join("zero-mode")) & 0o7777 & !0o400, 0);
    assert_eq!(mode(&root.join("locked")), 0o000);
    assert_eq!(mode(&root.join("ro")), 0o555);
    assert_eq!(mode(&root.join("world")), 0o777);
    // `xroot rm` removes even 0000 and 0555 directories completely.
    ok(&c.env.run(&["rm", "aarch64"]));
    assert_nothing_installed_but_cache(&c.env.home(), "absurd modes");
    fs::remove_file(c.env.home().join("cache/in.tar.gz")).unwrap();
    c.host_untouched("absurd modes");

    // A refused archive with 0000 directories is cleaned up as completely.
    let tar = Tar::base()
        .dir("locked/", 0o000)
        .file("locked/f", 0o000, b"f")
        .file("../../../../outside/x", 0o644, b"x")
        .gz();
    let o = c.import(&tar, &[]);
    c.refused(&o, &["`..`"], "locked dirs then a refusal");
}

#[test]
fn duplicates_and_type_changes() {
    let c = Case::new();
    let tar = Tar::base()
        .file("etc/motd", 0o644, b"first")
        .file("etc/motd", 0o644, b"second")
        .file("x", 0o644, b"a file")
        .dir("x/", 0o755)
        .file("x", 0o644, b"a file again")
        .dir("y/", 0o700)
        .dir("y/", 0o755)
        .symlink("z", "/bin/busybox")
        .file("z", 0o644, b"file over symlink")
        .file("w", 0o644, b"file")
        .symlink("w", "bin/busybox")
        .gz();
    let o = c.import(&tar, &[]);
    c.accepted(&o, "duplicates", |root| {
        assert_eq!(fs::read(root.join("etc/motd")).unwrap(), b"second");
        assert_eq!(fs::read(root.join("x")).unwrap(), b"a file again");
        assert_eq!(mode(&root.join("y")), 0o755);
        assert_eq!(fs::read(root.join("z")).unwrap(), b"file over symlink");
        assert_eq!(
            fs::read_link(root.join("w")).unwrap(),
            Path::new("bin/busybox")
        );
    });

    // A non-empty directory is never replaced: that would silently drop
    // the entries already in it.
    let tar = Tar::base()
        .dir("d/", 0o755)
        .file("d/f", 0o644, b"f")
        .file("d", 0o644, b"replaces d")
        .gz();
    let o = c.import(&tar, &[]);
    c.refused(
        &o,
        &["refusing archive", "`d`", "non-empty directory"],
        "file over non-empty dir",
    );
    let tar = Tar::base().symlink("bin", "/usr/bin").gz();
    let o = c.import(&tar, &[]);
    c.refused(&o, &["`bin`", "non-empty directory"], "symlink over bin/");
}

#[test]
fn corrupt_and_truncated_archives_are_refused() {
    let c = Case::new();
    let good = Tar::base().bytes();
    let good_gz = gzip(&good);
    let real = tarball_bytes();

    let o = c.import(&real[..real.len() / 2], &[]);
    c.refused(&o, &["corrupt or truncated"], "truncated real gzip");

    let o = c.import(&good_gz[..good_gz.len() - 20], &[]);
    c.refused(&o, &["corrupt or truncated"], "gzip without its trailer");

    let mut bad = good_gz.clone();
    let n = bad.len();
    for b in &mut bad[n / 3..n / 3 + 64] {
        *b ^= 0xa5;
    }
    let o = c.import(&bad, &[]);
    c.refused(&o, &["corrupt"], "corrupt deflate data");

    let mut bad = good_gz.clone();
    let n = bad.len();
    bad[n - 8] ^= 0xff; // the CRC32 in the trailer
    let o = c.import(&bad, &[]);
    c.refused(&o, &["corrupt"], "gzip CRC mismatch");

    let mut bad = good.clone();
    bad[512 * 3 + 10] ^= 0x01; // inside a later header's name
    let o = c.import(&gzip(&bad), &[]);
    c.refused(&o, &["corrupt", "checksum"], "bad tar header checksum");

    let mut bad = good.clone();
    bad[0] = b'X'; // the very first header
    let o = c.import(&bad, &[]);
    c.refused(&o, &["checksum"], "bad first header, plain tar");

    let o = c.import(&good[..good.len() / 2], &[]);
    c.refused(&o, &["corrupt or truncated"], "truncated plain tar");

    let o = c.import(&[0u8; 1024], &[]);
    c.refused(&o, &["archive is empty"], "two zero blocks");
    let o = c.import(&gzip(&[0u8; 10240]), &[]);
    c.refused(&o, &["archive is empty"], "gzipped empty tar");
    let o = c.import(b"", &[]);
    c.refused(&o, &["empty"], "zero-byte file");

    let junk: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let o = c.import(&junk, &[]);
    c.refused(&o, &["corrupt"], "random bytes");
    let o = c.import(b"BZh91AY&SY", &[]);
    c.refused(&o, &["bzip2"], "bzip2 (not supported)");

    // A wrong --sha256: refused as such, before anything is installed.
    let file = c.env.dir.path().join("in.tar.gz");
    fs::write(&file, &good_gz).unwrap();
    let o = c
        .env
        .cmd()
        .args(["fetch", "aarch64", "--from"])
        .arg(&file)
        .args(["--sha256", &"ab".repeat(32)])
        .output()
        .unwrap();
    c.refused(&o, &["sha256 mismatch", &"ab".repeat(32)], "wrong --sha256");
    let o = c
        .env
        .cmd()
        .args(["fetch", "aarch64", "--from"])
        .arg(&file)
        .args(["--sha256", "not-hex"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("not-hex"), "{e}");
    let _ = fs::remove_file(&file);
    c.host_untouched("corrupt");
}

#[test]
fn decompression_bomb_is_stopped_at_the_limit() {
    let c = Case::new();
    // 40 MiB of zeros in 1 MiB files: about 45 KiB of gzip.
    let mut t = Tar::base();
    let mb = vec![0u8; 1 << 20];
    for i in 0..40 {
        t.file(&format!("bomb/{i:02}"), 0o644, &mb);
    }
    let bomb = t.gz();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());

    let o = c.import(&bomb, &["--max-size", "10000000"]);
    c.refused(
        &o,
        &[
            "limit of 10000000 bytes",
            "--max-size",
            "XROOT_MAX_UNPACKED",
            "bomb/",
        ],
        "bomb, --max-size",
    );
    let file = c.env.dir.path().join("in.tar.gz");
    fs::write(&file, &bomb).unwrap();
    let o = c
        .env
        .cmd()
        .env("XROOT_MAX_UNPACKED", "10000000")
        .args(["fetch", "aarch64", "--from"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = fs::remove_file(&file);
    c.refused(&o, &["limit of 10000000 bytes"], "bomb, XROOT_MAX_UNPACKED");

    // An entry that declares 1 TiB is refused on its header, at the
    // default limit, before a byte is written or read.
    let mut h = Tar::header(EntryType::Regular, 0o644, (0, 0), 1 << 40);
    h.as_old_mut().name[..4].copy_from_slice(b"huge");
    h.set_cksum();
    // Appended before the end marker (`bytes()` would add it).
    let mut data = Tar::base().0.get_ref().clone();
    data.extend_from_slice(h.as_bytes());
    data.extend_from_slice(&[0u8; 4096]);
    let t = std::time::Instant::now();
    let o = c.import(&gzip(&data), &[]);
    c.refused(&o, &["`huge`", "limit"], "1 TiB header");
    assert!(t.elapsed().as_secs() < 10);

    // The same bomb within a raised limit is a legitimate archive.
    let o = c.import(&bomb, &["--max-size", "100000000"]);
    c.accepted(&o, "bomb under a raised limit", |root| {
        assert_eq!(names(&root.join("bomb")).len(), 40);
    });
}

#[test]
fn wrong_arch_is_refused() {
    let c = Case::new();
    // The real aarch64 minirootfs imported as s390x.
    let real = tarball_bytes();
    let file = c.env.dir.path().join("in.tar.gz");
    fs::write(&file, &real).unwrap();
    let o = c
        .env
        .cmd()
        .args(["fetch", "s390x", "--from"])
        .arg(&file)
        .args(["--sha256", &sha256(&real)])
        .output()
        .unwrap();
    let _ = fs::remove_file(&file);
    c.refused(
        &o,
        &["is for aarch64, not s390x", "hint:"],
        "aarch64 as s390x",
    );

    // A tree without a shell, and one whose shell points out of the tree.
    let tar = Tar::new().dir("./", 0o755).file("hello", 0o644, b"hi").gz();
    let o = c.import(&tar, &[]);
    c.refused(&o, &["no /bin/sh or /bin/busybox"], "no shell");
    let tar = Tar::new()
        .dir("./", 0o755)
        .dir("bin/", 0o755)
        .symlink("bin/sh", "../../../../../../usr/bin/busybox")
        .gz();
    let o = c.import(&tar, &[]);
    c.refused(&o, &["no /bin/sh or /bin/busybox"], "shell links outside");
    // A probe of another arch as busybox.
    let tar = Tar::new()
        .dir("./", 0o755)
        .dir("bin/", 0o755)
        .file("bin/busybox", 0o755, &fs::read(probe("riscv64")).unwrap())
        .symlink("bin/sh", "busybox")
        .gz();
    let o = c.import(&tar, &[]);
    c.refused(&o, &["is for riscv64, not aarch64"], "riscv64 busybox");
}
