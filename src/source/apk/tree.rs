//! Reading an apk system's own files (database, world, repositories,
//! keys) without following a symlink anywhere on the way: the tree is what
//! packages and guests made it.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use super::index::{self, Dep};
use crate::error::hinted;

/// Reads `rel` inside `root` without following any symlink on the way
/// (the tree is what packages made it). `None` if it does not exist.
pub fn read_in_tree(root: &Path, rel: &str) -> Result<Option<String>> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use std::os::fd::{FromRawFd, OwnedFd};
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur: OwnedFd = match nix::fcntl::open(root, flags | OFlag::O_DIRECTORY, Mode::empty()) {
        // SAFETY: open just returned this fd.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => return Err(e).with_context(|| format!("opening {}", root.display())),
    };
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let f = if last {
            flags
        } else {
            flags | OFlag::O_DIRECTORY
        };
        match openat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&cur)),
            *part,
            f,
            Mode::empty(),
        ) {
            // SAFETY: openat just returned this fd.
            Ok(fd) => cur = unsafe { OwnedFd::from_raw_fd(fd) },
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("reading {}/{rel} (not following symlinks)", root.display())
                })
            }
        }
    }
    let mut s = String::new();
    std::fs::File::from(cur)
        .take(64 << 20)
        .read_to_string(&mut s)
        .with_context(|| format!("reading {}/{rel}", root.display()))?;
    Ok(Some(s))
}

/// The public keys in the tree's `/etc/apk/keys`.
pub fn keys_in_tree(root: &Path) -> Result<Vec<(String, String)>> {
    let dir = root.join("etc/apk/keys");
    let meta = std::fs::symlink_metadata(&dir);
    if !meta.is_ok_and(|m| m.is_dir())
        || std::fs::symlink_metadata(root.join("etc/apk")).is_ok_and(|m| !m.is_dir())
    {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(pem) = read_in_tree(root, &format!("etc/apk/keys/{name}"))
            .ok()
            .flatten()
        {
            out.push((name, pem));
        }
    }
    Ok(out)
}

/// Which of `wanted` (package names, `so:`/`cmd:` names, with optional
/// constraints) no package in `root`'s database provides. Reads only the
/// tree: nothing is fetched when everything is there.
pub fn missing(root: &Path, wanted: &[String]) -> Result<Vec<String>> {
    if !is_apk_tree(root) {
        return Err(hinted(
            format!(
                "cannot add {}: {} is not apk-based (no /lib/apk/db/installed)",
                wanted.join(", "),
                root.display()
            ),
            "--packages installs apk packages; install others with the tree's own package manager via `xroot run`",
        ));
    }
    let installed = index::parse(
        &read_in_tree(root, "lib/apk/db/installed")?.unwrap_or_default(),
        0,
    )
    .with_context(|| format!("reading {}/lib/apk/db/installed", root.display()))?;
    Ok(wanted
        .iter()
        .filter(|w| {
            let Some(d) = Dep::parse(w) else { return true };
            !installed
                .iter()
                .any(|p| p.provides_name(&d.name).is_some_and(|v| d.allows(v)))
        })
        .cloned()
        .collect())
}

/// Whether `root` is an apk system (has `/lib/apk/db/installed`).
pub fn is_apk_tree(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join("lib/apk/db/installed")).is_ok_and(|m| m.is_file())
}
