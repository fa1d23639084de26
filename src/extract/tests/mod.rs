//! Unit tests of [`unpack`] and [`remove_tree`] on crafted tarballs. The
//! builders and the sandbox are here; the tests are grouped by what they check.

mod input;
mod layers;
mod placed;
mod refused;
mod remove;

use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use tar::{EntryType, Header};

const MTIME: u64 = 1_700_000_000;

/// Builds tarballs from raw headers, so hostile names (`..`, absolute)
/// that `tar::Builder`'s own path setters refuse can be written.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
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
        let mut h = header(Header::new_gnu(), kind, mode);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_size(data.len() as u64);
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
    fn bytes(&mut self) -> Vec<u8> {
        self.0.finish().unwrap();
        self.0.get_ref().clone()
    }
}

/// A header with every numeric field filled in, as real tar writers do.
fn header(mut h: Header, kind: EntryType, mode: u32) -> Header {
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(0);
    h
}

/// `dest` inside an outer tempdir, so tests can check nothing appeared
/// next to it.
struct Sandbox {
    outer: tempfile::TempDir,
    dest: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        fs::create_dir(&dest).unwrap();
        Sandbox { outer, dest }
    }
    fn outside(&self) -> &Path {
        self.outer.path()
    }
    fn unpack_with(&self, tar: &[u8], opts: &Options) -> Result<Report, ExtractError> {
        unpack(tar, &self.dest, opts, &mut |_| {})
    }
    fn unpack(&self, tar: &[u8]) -> Result<Report, ExtractError> {
        self.unpack_with(tar, &Options::default())
    }
    fn unpack_with_reader(&self, r: impl Read) -> Result<Report, ExtractError> {
        unpack(r, &self.dest, &Options::default(), &mut |_| {})
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
    /// Names next to `dest`; `dest` plus whatever the test put there.
    fn outer_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn refused_reason(res: Result<Report, ExtractError>) -> String {
    match res {
        Err(ExtractError::Refused { reason, .. }) => reason,
        other => panic!("expected Refused, got {other:?}"),
    }
}

const ALPINE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/alpine-mirror/v3.20/releases/aarch64/alpine-minirootfs-3.20.3-aarch64.tar.gz"
);

#[test]
fn real_alpine_minirootfs() {
    use crate::test_support::require;
    let Ok(gz) = fs::read(ALPINE) else {
        require(false, &format!("{ALPINE} (../shared from the project)"));
        return;
    };
    for chown in [false, true] {
        if chown && !require(is_root(), "root, for the chown half of this test") {
            continue;
        }
        let sb = Sandbox::new();
        let mut total = 0;
        let opts = Options {
            chown,
            ..Options::default()
        };
        let report = unpack(
            flate2::read::GzDecoder::new(&gz[..]),
            &sb.dest,
            &opts,
            &mut |n| total += n,
        )
        .unwrap();
        assert!(report.entries > 400, "{report:?}");
        assert_eq!(total, report.bytes);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert!(fs::symlink_metadata(sb.p("bin/busybox"))
            .unwrap()
            .file_type()
            .is_file());
        assert_eq!(
            fs::read_link(sb.p("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        let release = fs::read_to_string(sb.p("etc/alpine-release")).unwrap();
        assert!(release.contains("3.20.3"), "{release}");
        assert_eq!(mode(&sb.p("tmp")), 0o1777);
        assert_eq!(mode(&sb.dest), 0o755);
        if chown {
            assert_eq!(fs::metadata(sb.p("etc/shadow")).unwrap().gid(), 42);
        }
        remove_tree(&sb.dest).unwrap();
        assert_eq!(sb.outer_names(), Vec::<String>::new());
    }
    // A truncated download surfaces as a gzip error: corrupt, not a panic.
    let sb = Sandbox::new();
    let half = flate2::read::GzDecoder::new(&gz[..gz.len() / 2]);
    let err = unpack(half, &sb.dest, &Options::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
}

const CHILD_DIR: &str = "XROOT_EXTRACT_TEST_CHILD_DIR";

/// The tests run as root, where permission bits never get in the way, so
/// this re-runs `unprivileged_child` as `nobody` to exercise the paths a
/// normal user hits: 0555/0000 dirs, setuid stripping, foreign owners.
#[test]
fn unprivileged_unpack_and_remove() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        return; // already unprivileged: the other tests cover it
    }
    let outer = tempfile::tempdir().unwrap();
    fs::set_permissions(outer.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let work = outer.path().join("work");
    fs::create_dir(&work).unwrap();
    let nobody = (65534, 65534);
    std::os::unix::fs::chown(&work, Some(nobody.0), Some(nobody.1)).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "extract::tests::unprivileged_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, &work)
        .uid(nobody.0)
        .gid(nobody.1)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "{log}");
}

#[test]
#[ignore = "run as nobody by unprivileged_unpack_and_remove"]
fn unprivileged_child() {
    let work = PathBuf::from(
        std::env::var_os(CHILD_DIR).expect("spawned by unprivileged_unpack_and_remove"),
    );
    assert!(!is_root());
    let dest = work.join("dest");
    let outside = work.join("outside");
    fs::create_dir(&dest).unwrap();
    fs::write(&outside, b"keep").unwrap();
    let tar = Tar::new()
        .dir("ro", 0o555)
        .file("ro/a", 0o644, b"a")
        .dir("locked", 0o000)
        .file("locked/f", 0o644, b"f")
        .raw(EntryType::Regular, "bin/su", "", 0o4755, (0, 0), b"su")
        .raw(
            EntryType::Regular,
            "home/u/f",
            "",
            0o644,
            (1000, 1000),
            b"u",
        )
        .file("zero", 0o000, b"z")
        .symlink("ro/out", outside.to_str().unwrap())
        .bytes();
    let report = unpack(&tar[..], &dest, &Options::default(), &mut |_| {}).unwrap();
    assert_eq!(mode(&dest.join("ro")), 0o555);
    assert_eq!(mode(&dest.join("locked")), 0o000);
    assert_eq!(mode(&dest.join("bin/su")), 0o755);
    assert_eq!(fs::read(dest.join("ro/a")).unwrap(), b"a");
    assert_eq!(fs::read(dest.join("zero")).unwrap(), b"z");
    let paths: Vec<_> = report
        .owners
        .iter()
        .map(|o| o.path.to_str().unwrap())
        .collect();
    assert_eq!(paths, ["bin/su", "home/u/f", "zero"]);
    // chown=true without root fails cleanly rather than half-applying.
    let dest2 = work.join("dest2");
    fs::create_dir(&dest2).unwrap();
    let opts = Options {
        chown: true,
        ..Options::default()
    };
    let err = unpack(&tar[..], &dest2, &opts, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ExtractError::Io { op: "chown", .. }),
        "{err:?}"
    );
    remove_tree(&dest).unwrap();
    remove_tree(&dest2).unwrap();
    assert!(!dest.exists() && !dest2.exists());
    assert_eq!(fs::read(&outside).unwrap(), b"keep");
}
