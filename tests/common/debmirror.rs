//! Local Debian mirrors made from REAL Debian data by apt itself (never by
//! xroot): `debmirror.sh` runs `apt-get update` (which verifies Debian's
//! signed InRelease) and `apt-get install --download-only` with a private
//! configuration, and lays the result out as the archive does. Cached
//! under `target/debmirror/`, so only the first run downloads.
#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static BUILD: Mutex<()> = Mutex::new(());

/// The mirror for `arch` (bookworm, main; the required set plus `extra`),
/// or `None` when apt cannot build it (a failure under CI=true).
pub fn mirror(arch: &str, extra: &[&str]) -> Option<PathBuf> {
    let _g = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let key = if extra.is_empty() {
        "base".to_string()
    } else {
        extra.join("+")
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/debmirror")
        .join(format!("{arch}-bookworm-{key}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/debmirror.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .args([arch, "bookworm"])
        .args(extra)
        .output();
    let ok = matches!(&out, Ok(o) if o.status.success());
    if !ok {
        let why = match &out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        let what = format!("apt could not build a {arch} Debian mirror (needs root and network to deb.debian.org): {why}");
        if !crate::common::require(false, &what) {
            return None;
        }
    }
    Some(dir.join("mirror"))
}

/// A copy of `src` made of real directories and symlinks to its files, so a
/// test can replace a few files (tamper) without copying the .debs.
pub fn overlay(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            overlay(&e.path(), &to);
        } else {
            symlink(e.path(), &to).unwrap();
        }
    }
}

/// Replaces `path` (a symlink made by [`overlay`]) with a copy whose bytes
/// `f` changed.
pub fn tamper(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The pool file of package `name` in `mirror`'s index for `arch`.
pub fn pool_file(mirror: &Path, arch: &str, name: &str) -> PathBuf {
    let idx =
        std::fs::read_to_string(mirror.join(format!("dists/bookworm/main/binary-{arch}/Packages")))
            .unwrap();
    let stanza = idx
        .split("\n\n")
        .find(|s| s.starts_with(&format!("Package: {name}\n")))
        .unwrap_or_else(|| panic!("{name} not in the index"));
    let f = stanza
        .lines()
        .find_map(|l| l.strip_prefix("Filename: "))
        .unwrap();
    mirror.join(f)
}
