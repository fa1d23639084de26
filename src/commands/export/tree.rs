//! Walking an installed tree into a tar stream, relative to directory fds.
//!
//! A guest may run in the tree while it is exported, and it controls every
//! name in it: it can swap a directory for a symlink to `/` between our
//! looking and our opening. So nothing here resolves a path: each directory
//! is opened from its parent's fd with `O_NOFOLLOW | O_DIRECTORY`, each
//! file from its directory's fd with `O_NOFOLLOW`, and what goes into the
//! archive is what the opened fd says (`fstat`), not an earlier `lstat`.
//! A swapped entry is refused (the export fails) or archived as what it
//! now is, inside the tree; no host file can get in. Paths are only built
//! for the archive's names and for messages (shortened), so a tree deeper
//! than `PATH_MAX` exports like any other.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use super::owners::Owners;
use crate::error::hinted;

#[derive(Debug, Default)]
pub(super) struct Report {
    pub entries: u64,
    pub skipped: Vec<(PathBuf, &'static str)>,
}

const DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `rel` for a message: a path of thousands of components is cut in the
/// middle, so an error stays one short line.
pub(super) fn shown(rel: &Path) -> String {
    let s = rel.display().to_string();
    if s.len() <= 160 {
        return format!("/{s}");
    }
    let cut = |i: usize| (0..=i).rev().find(|&j| s.is_char_boundary(j)).unwrap_or(0);
    let head = &s[..cut(60)];
    let tail = &s[cut(s.len() - 60)..];
    format!("/{head}…{tail} ({} levels deep)", rel.components().count())
}

fn open_at(dir: RawFd, name: &OsStr, flags: OFlag) -> nix::Result<OwnedFd> {
    let fd = openat(Some(dir), name, flags, Mode::empty())?;
    // SAFETY: openat just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn kind(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// One open directory on the way down, and the names in it still to do.
struct Frame {
    fd: OwnedFd,
    names: std::vec::IntoIter<OsString>,
}

impl Frame {
    /// Lists `fd` (sorted: the same tree gives the same archive).
    fn new(fd: OwnedFd, rel: &Path) -> Result<Frame> {
        let list = |e: Errno| anyhow::anyhow!("listing {}: {e}", shown(rel));
        let dup = fd
            .try_clone()
            .map_err(|e| anyhow::anyhow!("listing {}: {e}", shown(rel)))?;
        let mut dir = nix::dir::Dir::from_fd(dup.as_raw_fd()).map_err(list)?;
        std::mem::forget(dup); // now owned by `dir`
        let mut names = Vec::new();
        for e in dir.iter() {
            let n = e.map_err(list)?.file_name().to_bytes().to_vec();
            if n != b"." && n != b".." {
                names.push(OsString::from_vec(n));
            }
        }
        names.sort();
        Ok(Frame {
            fd,
            names: names.into_iter(),
        })
    }
}

/// Lets the walk hold one fd per directory level for deep trees.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Writes every entry under `root`, parents before children, in name
/// order, then the end blocks.
pub(super) fn tar_tree<W: Write>(root: &Path, out: W, owners: &Owners) -> Result<Report> {
    raise_fd_limit();
    let mut w = Walk {
        b: tar::Builder::new(out),
        owners,
        links: HashMap::new(),
        report: Report::default(),
    };
    let rootfd = nix::fcntl::open(root, DIR, Mode::empty())
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .with_context(|| format!("opening {}", root.display()))?;
    let st = fstat(rootfd.as_raw_fd()).with_context(|| format!("reading {}", root.display()))?;
    let mut rel = PathBuf::new();
    w.dir(&rel, &st)?;
    let mut stack = vec![Frame::new(rootfd, &rel)?];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            stack.pop();
            rel.pop();
            continue;
        };
        let dir = top.fd.as_raw_fd();
        rel.push(&name);
        let sub = w.entry(dir, &name, &rel)?;
        match sub {
            Some(fd) => {
                if stack.len() > MAX_DEPTH {
                    return Err(too_deep(&rel));
                }
                stack.push(Frame::new(fd, &rel)?);
            }
            None => {
                rel.pop();
            }
        }
    }
    w.b.into_inner()
        .context("finishing the archive")?
        .flush()
        .context("flushing the archive")?;
    Ok(w.report)
}

/// Deeper than this the walk stops with an error rather than hold more
/// fds (each level keeps one open) or build names no tool handles.
const MAX_DEPTH: usize = 8192;

fn too_deep(rel: &Path) -> anyhow::Error {
    hinted(
        format!("the tree is too deep to export at {}", shown(rel)),
        format!("xroot exports trees up to {MAX_DEPTH} directories deep; remove the deep directory in the guest and export again"),
    )
}

struct Walk<'o, W: Write> {
    b: tar::Builder<W>,
    owners: &'o Owners,
    links: HashMap<(u64, u64), PathBuf>,
    report: Report,
}

impl<W: Write> Walk<'_, W> {
    fn header(&self, rel: &Path, st: &FileStat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let (uid, gid, mode) = self.owners.of(rel, st);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mode(mode);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h.set_entry_type(kind);
        h
    }

    /// Relative names (`./etc/passwd`); the root itself is `./`.
    fn append(&mut self, h: &mut tar::Header, rel: &Path, data: impl Read) -> Result<()> {
        let name = Path::new(".").join(rel);
        self.b
            .append_data(h, &name, data)
            .with_context(|| format!("adding {} to the archive", shown(rel)))?;
        self.report.entries += 1;
        Ok(())
    }

    fn dir(&mut self, rel: &Path, st: &FileStat) -> Result<()> {
        let mut h = self.header(rel, st, tar::EntryType::Directory);
        self.append(&mut h, rel, io::empty())
    }

    /// Archives `name` in `dir`; returns the fd of a directory to descend into.
    fn entry(&mut self, dir: RawFd, name: &OsStr, rel: &Path) -> Result<Option<OwnedFd>> {
        let changed = || {
            hinted(
                format!("{} changed while being exported", shown(rel)),
                "stop the guests using this rootfs and export again",
            )
        };
        let st = match fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None), // deleted since listed
            Err(e) => return Err(e).with_context(|| format!("reading {}", shown(rel))),
        };
        use tar::EntryType as T;
        match kind(&st) {
            libc::S_IFDIR => {
                let fd = match open_at(dir, name, DIR) {
                    Ok(fd) => fd,
                    Err(Errno::ENOTDIR | Errno::ELOOP | Errno::ENOENT) => return Err(changed()),
                    Err(Errno::EMFILE | Errno::ENFILE) => return Err(too_deep(rel)),
                    Err(e) => return Err(e).with_context(|| format!("opening {}", shown(rel))),
                };
                // What was opened is what is archived.
                let st =
                    fstat(fd.as_raw_fd()).with_context(|| format!("reading {}", shown(rel)))?;
                self.dir(rel, &st)?;
                Ok(Some(fd))
            }
            libc::S_IFREG => {
                // O_NONBLOCK: if a fifo was swapped in, opening must not hang.
                let flags =
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                let fd = match open_at(dir, name, flags) {
                    Ok(fd) => fd,
                    Err(Errno::ELOOP | Errno::ENOENT) => return Err(changed()),
                    Err(e) => return Err(e).with_context(|| format!("opening {}", shown(rel))),
                };
                let st =
                    fstat(fd.as_raw_fd()).with_context(|| format!("reading {}", shown(rel)))?;
                if kind(&st) != libc::S_IFREG {
                    return Err(changed());
                }
                self.file(File::from(fd), rel, &st)?;
                Ok(None)
            }
            libc::S_IFLNK => {
                let target = readlinkat(Some(dir), name)
                    .with_context(|| format!("reading {}", shown(rel)))?;
                let mut h = self.header(rel, &st, T::Symlink);
                link_name(&mut self.b, &mut h, target.as_bytes())
                    .with_context(|| format!("adding {} to the archive", shown(rel)))?;
                self.append(&mut h, rel, io::empty())?;
                Ok(None)
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let t = match kind(&st) {
                    libc::S_IFCHR => T::Char,
                    libc::S_IFBLK => T::Block,
                    _ => T::Fifo,
                };
                let mut h = self.header(rel, &st, t);
                let ctx = || format!("adding {} to the archive", shown(rel));
                h.set_device_major(libc::major(st.st_rdev))
                    .with_context(ctx)?;
                h.set_device_minor(libc::minor(st.st_rdev))
                    .with_context(ctx)?;
                self.append(&mut h, rel, io::empty())?;
                Ok(None)
            }
            _ => {
                self.report
                    .skipped
                    .push((rel.to_path_buf(), "a socket (tar cannot hold one)"));
                Ok(None)
            }
        }
    }

    fn file(&mut self, f: File, rel: &Path, st: &FileStat) -> Result<()> {
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.header(rel, st, tar::EntryType::Link);
                link_name(&mut self.b, &mut h, first.as_os_str().as_bytes())
                    .with_context(|| format!("adding {} to the archive", shown(rel)))?;
                return self.append(&mut h, rel, io::empty());
            }
            // Named as the archive names it (no `./`), for later links to it.
            self.links.insert(key, rel.to_path_buf());
        }
        let size = st.st_size as u64;
        let mut h = self.header(rel, st, tar::EntryType::Regular);
        h.set_size(size);
        let shown = shown(rel);
        let data = Exact {
            inner: f.take(size),
            left: size,
            path: &shown,
        };
        self.append(&mut h, rel, data)
    }
}

/// Puts a link target into `h` byte for byte: the tar crate's own
/// `append_link` normalizes it as a path (`/` becomes `//`, `a/./b`
/// becomes `a/b`), which would change what a symlink points to. Targets
/// longer than the header's 100 bytes go first in a GNU long-link entry.
fn link_name<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    target: &[u8],
) -> io::Result<()> {
    const FIELD: usize = 100;
    if target.len() > FIELD {
        let mut k = tar::Header::new_gnu();
        k.set_path("././@LongLink")?;
        k.set_entry_type(tar::EntryType::GNULongLink);
        k.set_mode(0o644);
        k.set_size(target.len() as u64 + 1);
        k.set_cksum();
        b.append(&k, target.chain(&[0u8][..]))?;
        return h.set_link_name_literal(&target[..FIELD]);
    }
    h.set_link_name_literal(target)
}

/// A file's contents, exactly as long as the size already written into its
/// header: a file that shrinks while being read fails the export instead of
/// producing a corrupt archive (one that grows is cut at the header's size).
struct Exact<'a> {
    inner: io::Take<File>,
    left: u64,
    path: &'a str,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "{} shrank while being archived; stop the guests using it and export again",
                self.path
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_shown_short() {
        let deep: PathBuf = std::iter::repeat("dd").take(3000).collect();
        let s = shown(&deep);
        assert!(s.len() < 200, "{s}");
        assert!(s.contains("3000 levels deep"));
        assert_eq!(shown(Path::new("etc/passwd")), "/etc/passwd");
    }
}
