//! Deleting a tree that [`unpack`](super::unpack) made, however hostile its
//! modes and symlinks.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fchmodat, FchmodatFlags, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::sys::{is_type, lstat_at, open_owned, DIR};

/// `rm -rf path` for trees [`unpack`](super::unpack) made. Directories that
/// are `0555` or `0000` (both occur in rootfs tarballs) get `u+rwx` as we go,
/// since a non-root owner cannot otherwise list or empty them. Symlinks are
/// removed, never followed, so a link to `/` inside the tree is harmless. A
/// missing `path` is fine: the caller just wants it gone.
///
/// Each directory level holds one fd, so trees deeper than the open-file
/// limit (1024 by default) fail with EMFILE rather than being half-walked.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        let msg = format!("refusing to remove `{}`: no final name", path.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The caller's own path prefix may go through symlinks; only `name` and
    // what is under it are treated as untrusted.
    match open_owned(
        None,
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
    ) {
        Ok(parent) => remove_at(parent.as_raw_fd(), name),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` in the directory `parent`, a whole tree if it is one.
pub(super) fn remove_at(parent: RawFd, name: &OsStr) -> io::Result<()> {
    let st = match lstat_at(parent, name) {
        Err(Errno::ENOENT) => return Ok(()),
        res => res?,
    };
    if !is_type(&st, libc::S_IFDIR) {
        return match unlinkat(Some(parent), name, UnlinkatFlags::NoRemoveDir) {
            Err(Errno::ENOENT) => Ok(()),
            res => Ok(res?),
        };
    }
    if st.st_mode & 0o700 != 0o700 {
        // NoFollowSymlink: glibc >= 2.32 and musl never follow here (fchmodat2
        // or O_PATH); a libc that cannot do that fails instead of following.
        let mode = Mode::from_bits_truncate((st.st_mode & 0o7777) | 0o700);
        fchmodat(Some(parent), name, mode, FchmodatFlags::NoFollowSymlink)?;
    }
    let mut dir = Dir::openat(Some(parent), name, DIR, Mode::empty())?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let n = entry?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n));
        }
    }
    for n in &names {
        remove_at(dir.as_raw_fd(), n)?;
    }
    drop(dir);
    match unlinkat(Some(parent), name, UnlinkatFlags::RemoveDir) {
        Err(Errno::ENOENT) => Ok(()),
        res => Ok(res?),
    }
}
