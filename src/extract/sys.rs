//! The `*at` syscall helpers shared by placing entries and removing trees.

use std::ffi::OsStr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};

/// Flags for walking directories: `O_NOFOLLOW` is what keeps us inside `dest`.
pub(super) const DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `openat` (or `open` when `dir` is `None`) returning an owned fd. The 0600
/// only matters with `O_CREAT`: files stay private until their mode is set.
pub(super) fn open_owned(
    dir: Option<RawFd>,
    path: &(impl AsRef<OsStr> + ?Sized),
    flags: OFlag,
) -> nix::Result<OwnedFd> {
    let path = path.as_ref();
    let fd = match dir {
        Some(dir) => openat(Some(dir), path, flags, Mode::from_bits_truncate(0o600))?,
        None => open(path, flags, Mode::empty())?,
    };
    // SAFETY: the call above just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn lstat_at(dir: RawFd, name: &OsStr) -> nix::Result<FileStat> {
    fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

pub(super) fn is_type(st: &FileStat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}
