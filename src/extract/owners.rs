//! Applying recorded owners and modes to an extracted tree afterwards
//! (rootless with subordinate ids, inside a user namespace: see
//! `store::apply_owners`), with the same rule as extraction: every path is
//! walked from a directory fd with `O_NOFOLLOW`, never resolved by name,
//! so nothing outside the tree is touched whatever the archive put in it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, Mode};
use nix::unistd::{fchown, fchownat, Gid, Uid};

use super::sys::{is_type, lstat_at, open_owned, DIR};

/// Sets the owner of `rel` (relative to `root`, as recorded by the
/// extractor) to `uid:gid`, then its mode to `mode` unless it is a
/// symlink (after chown, which clears setuid/setgid).
pub fn set_owner_beneath(root: &Path, rel: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let mode = Mode::from_bits_truncate(mode & 0o7777);
    let mut dir = open_owned(None, root, DIR)?;
    let names: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = names.split_last() else {
        fchown(dir.as_raw_fd(), uid, gid)?;
        fchmod(dir.as_raw_fd(), mode)?;
        return Ok(());
    };
    for name in parents {
        dir = open_owned(Some(dir.as_raw_fd()), *name, DIR)?;
    }
    let st = lstat_at(dir.as_raw_fd(), last)?;
    if is_type(&st, libc::S_IFLNK) {
        fchownat(
            Some(dir.as_raw_fd()),
            *last,
            uid,
            gid,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        return Ok(());
    }
    // Only regular files and directories are extracted (devices and FIFOs
    // are skipped); O_NONBLOCK all the same, so nothing can block the open.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let f = open_owned(Some(dir.as_raw_fd()), *last, flags)?;
    fchown(f.as_raw_fd(), uid, gid)?;
    fchmod(f.as_raw_fd(), mode)?;
    Ok(())
}
