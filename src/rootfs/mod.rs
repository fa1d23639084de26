//! A tree that a guest or an archive controls, reached only through
//! directory file descriptors.
//!
//! The rule (docs/security.md, "Acting on guest trees"): xroot never
//! follows a path into such a tree. It opens the tree's root once, from a
//! path xroot itself chose (the store, or the user's `--rootfs`), and does
//! everything else relative to that descriptor with `openat2(2)`:
//!
//! - `RESOLVE_IN_ROOT` where a guest path is meant the way the guest sees
//!   it (a bind's destination, `/bin/sh`): symlinks are followed as the
//!   guest would follow them, `..` and absolute targets stop at the root,
//!   so nothing outside the tree can be reached whatever the tree holds or
//!   a guest changes meanwhile;
//! - `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where xroot removes what it
//!   created: a symlink anywhere on the way makes the walk fail, and the
//!   entry is left alone.
//!
//! Magic links (`/proc/self/fd/N`) are never followed.

pub mod mountpoints;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How many symlinks one guest path may go through (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// What a mount point must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// The root directory of a tree, held open.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    /// For messages only: never used to reach anything.
    shown: PathBuf,
}

impl Tree {
    /// Opens `root`, a directory xroot chose (never a path inside a tree).
    pub fn open(root: &Path) -> Result<Tree> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", root.display()))?;
        Ok(Tree {
            fd,
            shown: root.to_path_buf(),
        })
    }

    /// The guest path of a directory opened inside the tree, from the
    /// kernel's own record of both (`/proc/self/fd`).
    fn guest_path_of(&self, dir: &OwnedFd) -> Option<PathBuf> {
        let real = |fd: std::os::fd::BorrowedFd| {
            std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            ))
            .ok()
        };
        let root = real(self.fd.as_fd())?;
        let rel = real(dir.as_fd())?.strip_prefix(&root).ok()?.to_path_buf();
        Some(Path::new("/").join(rel))
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `guest` as the guest would see it (`RESOLVE_IN_ROOT`).
    pub fn open_in_root(&self, guest: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        in_root(self.fd.as_fd(), relative(guest), flags)
    }

    /// Opens `rel` strictly beneath the root, through no symlink at all.
    pub fn open_beneath(&self, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        beneath(self.fd.as_fd(), rel, flags)
    }

    /// Reads the first `len` bytes of the regular file at guest path `guest`
    /// (symlinks resolved inside the tree). `None` if it is missing or not
    /// a regular file: a FIFO or device planted by an archive is never read.
    pub fn read_head(&self, guest: &Path, len: usize) -> Option<Vec<u8>> {
        let fd = self
            .open_in_root(
                guest,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            )
            .ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return None;
        }
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match rustix::io::read(&fd, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::INTR) => continue,
                Err(_) => return None,
            }
        }
        buf.truncate(got);
        Some(buf)
    }

    /// Opens the mount point `guest` (`O_PATH`), as the guest would resolve
    /// it. With `create`, what is missing on the way is made (directories,
    /// and for [`Kind::File`] an empty file last) and each new entry is
    /// reported to `created` (with the directory it goes in) *before* it is made, so a journal never misses
    /// one. A dangling symlink on the way (`/etc/resolv.conf` pointing into
    /// an empty `/run`) is followed inside the tree and its target made.
    pub fn mount_point(
        &self,
        guest: &Path,
        kind: Kind,
        create: bool,
        created: &mut dyn FnMut(&Path, std::os::fd::BorrowedFd) -> Result<()>,
    ) -> Result<OwnedFd> {
        let mut want = normalize(guest)?;
        for _ in 0..MAX_LINKS {
            match self.open_in_root(&want, OFlags::PATH | OFlags::CLOEXEC) {
                Ok(fd) => {
                    check_kind(&fd, kind).with_context(|| {
                        format!(
                            "mount point {} in {}",
                            guest.display(),
                            self.shown.display()
                        )
                    })?;
                    return Ok(fd);
                }
                Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("opening {} in {}", want.display(), self.shown.display())
                    })
                }
            }
            // The longest prefix that exists; the next component is missing
            // or a dangling symlink.
            let comps: Vec<&OsStr> = want.iter().skip(1).collect();
            let mut i = comps.len();
            let parent = loop {
                i -= 1;
                let prefix: PathBuf = comps[..i].iter().collect();
                match in_root(
                    self.fd.as_fd(),
                    &prefix,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                ) {
                    Ok(fd) => break fd,
                    Err(Errno::NOENT) if i > 0 => continue,
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("opening /{} in {}", prefix.display(), self.shown.display())
                        })
                    }
                }
            };
            let name = comps[i];
            let here: PathBuf = Path::new("/").join(comps[..i].iter().collect::<PathBuf>());
            match rustix::fs::readlinkat(&parent, name, Vec::new()) {
                Ok(target) => {
                    // Follow it as the guest would: relative to its directory,
                    // absolute from the tree's root (openat2 keeps both inside).
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    let mut next = if target.is_absolute() {
                        target
                    } else {
                        here.join(target)
                    };
                    for rest in &comps[i + 1..] {
                        next.push(rest);
                    }
                    want = normalize(&next)?;
                    continue;
                }
                Err(Errno::INVAL) => bail!(
                    "{} exists but cannot be opened on the way to {}",
                    here.join(name).display(),
                    guest.display()
                ),
                Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "reading {} in {}",
                            here.join(name).display(),
                            self.shown.display()
                        )
                    })
                }
            }
            if !create {
                bail!(
                    "{} does not exist in {}",
                    here.join(name).display(),
                    self.shown.display()
                );
            }
            let last = i + 1 == comps.len();
            // Recorded by where it really is (the way may have gone
            // through symlinks and `..`), so cleaning up finds it.
            let new = self.guest_path_of(&parent).unwrap_or(here).join(name);
            created(&new, parent.as_fd())?;
            let res = if last && kind == Kind::File {
                rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::WRONLY
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            } else {
                rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
            };
            match res {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "creating mount point {} in {}",
                            new.display(),
                            self.shown.display()
                        )
                    })
                }
            }
        }
        bail!(
            "{} in {}: too many symbolic links",
            guest.display(),
            self.shown.display()
        )
    }
}

fn check_kind(fd: &OwnedFd, kind: Kind) -> Result<()> {
    let st = rustix::fs::fstat(fd)?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    match (kind, ft) {
        (Kind::Dir, rustix::fs::FileType::Directory) => Ok(()),
        (Kind::File, t) if t != rustix::fs::FileType::Directory => Ok(()),
        (Kind::Dir, _) => bail!("is not a directory"),
        (Kind::File, _) => bail!("is a directory, not a file"),
    }
}

/// `guest` without its leading `/`: `openat2` wants it relative.
pub fn relative(guest: &Path) -> &Path {
    let r = guest.strip_prefix("/").unwrap_or(guest);
    if r.as_os_str().is_empty() {
        Path::new(".")
    } else {
        r
    }
}

/// An absolute guest path with `.` and empty parts dropped; `..` is kept
/// for the kernel to clamp at the root.
fn normalize(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => out.push(".."),
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => bail!("{} is not a Linux path", p.display()),
        }
    }
    Ok(out)
}

/// `openat2(dir, rel, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
pub fn in_root(
    dir: std::os::fd::BorrowedFd,
    rel: &Path,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    open_resolved(dir, rel, flags, ResolveFlags::IN_ROOT)
}

/// `openat2(dir, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`.
pub fn beneath(
    dir: std::os::fd::BorrowedFd,
    rel: &Path,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    open_resolved(
        dir,
        rel,
        flags,
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )
}

/// `openat2` with `how` (magic links never followed; `""` means `.`).
fn open_resolved(
    dir: std::os::fd::BorrowedFd,
    rel: &Path,
    flags: OFlags,
    how: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        dir,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        how | ResolveFlags::NO_MAGICLINKS,
    )
}

/// The ELF header of the tree's shell (`/bin/busybox`, `/bin/sh`, ...), with
/// the guest path it was read from; symlinks resolved inside the tree only.
pub fn shell_header(root: &Path) -> Option<(PathBuf, Vec<u8>)> {
    let tree = Tree::open(root).ok()?;
    [
        "/bin/busybox",
        "/bin/sh",
        "/usr/bin/busybox",
        "/bin/bash",
        "/usr/bin/sh",
    ]
    .iter()
    .find_map(|p| {
        let h = tree.read_head(Path::new(p), 64)?;
        h.starts_with(b"\x7fELF").then(|| (PathBuf::from(p), h))
    })
}

/// Creates what the sandbox mounts onto in a freshly unpacked tree, so
/// that entering it later rarely has to change it: the `proc`, `sys`,
/// `dev` and `tmp` directories, and an empty `/etc/resolv.conf` where the
/// tree has none (a symlink there is the tree's own choice and is kept).
/// All through the tree's descriptor: an archive's `etc -> /etc` symlink
/// makes xroot create nothing on the host.
pub fn prepare_mountpoints(root: &Path) -> Result<()> {
    let tree = Tree::open(root)?;
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        match rustix::fs::mkdirat(tree.fd(), d, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}/{d}", root.display())),
        }
    }
    // Only inside a real /etc directory, never through a symlink: a tree
    // whose /etc is anything else is refused (no Linux system has that,
    // and one pointing at a host directory is an attack).
    let etc = tree
        .open_beneath(Path::new("etc"), OFlags::PATH | OFlags::DIRECTORY)
        .map_err(|e| {
            crate::error::hinted(
                format!("the rootfs's /etc is not a directory ({e})"),
                "this does not look like a Linux root filesystem; nothing was installed",
            )
        })?;
    match rustix::fs::openat(
        &etc,
        "resolv.conf",
        OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        // Present already, as a file or a link (the sandbox binds over it).
        Ok(_) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}/etc/resolv.conf", root.display())),
    }
}

#[cfg(test)]
mod tests;
