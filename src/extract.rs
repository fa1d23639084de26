//! Unpacking untrusted rootfs tarballs into the store.
//!
//! Alpine minirootfs tarballs come from the network, so every entry is treated
//! as hostile: nothing here may create, change or follow anything outside
//! `dest`, whether xroot runs as root or not. The `tar` crate is used only to
//! parse headers and names. Placement is done here with `*at` syscalls relative
//! to a directory fd for `dest`, because `Entry::unpack` resolves paths by name
//! and trusts whatever symlinks earlier entries left behind.
//!
//! The decisions, in one place:
//!
//! * **Re-rooted:** a leading `/` or `./` is stripped, so `/etc/passwd` lands in
//!   `dest/etc/passwd`. Rootfs tarballs made with `tar -C / .` look like that.
//!   Hard link targets are re-rooted the same way. Symlink targets are stored
//!   verbatim (`/bin/sh -> /bin/busybox` is normal) and never followed.
//! * **Refused (the whole archive fails):** any `..` component; a path whose
//!   parent is a symlink, *even one that points inside `dest`* (real rootfs
//!   tarballs list every directory before its contents, so they never need to
//!   write through a symlink, and checking where a link points is the kind of
//!   cleverness that gets raced); a hard link to something missing or to a
//!   directory; replacing a non-empty directory; limits exceeded; corrupt or
//!   truncated input. The caller removes the partial tree with [`remove_tree`].
//! * **Skipped and listed in [`Report::skipped`]:** device nodes, fifos and
//!   unknown entry types. xroot bind-mounts `/dev` at run time, and making
//!   device nodes because a download asked for them would be a hole when root.
//! * **Not applied but listed in [`Report::owners`]:** owners, when the caller
//!   is not root (`chown == false`), and setuid/setgid bits, which are only kept
//!   when `chown` is set (real root extracting into a root-only store). Sticky
//!   bits are always kept: `/tmp` needs them and they grant nothing.
//! * **Always:** modes are masked to `0o7777`, and regular files get `u+r` so a
//!   non-root owner can still read, hash or copy a file archived as `0000`
//!   (root could read it anyway, so this changes nothing the guest relies on).
//!
//! Later entries replace earlier ones with the same name, as with GNU tar.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, fstatat, futimens, mkdirat, utimensat};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// Caps on what one archive may make us write. A few MiB of gzip can expand to
/// terabytes, so these are checked against each entry's declared size before
/// anything is written, and again while copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of regular-file content.
    pub max_bytes: u64,
    /// Total tar entries, of any type.
    pub max_entries: u64,
}

impl Default for Limits {
    /// 8 GiB and two million entries: a minirootfs is about 10 MiB and 500
    /// entries, so these only stop archives that are broken or hostile.
    fn default() -> Limits {
        Limits {
            max_bytes: 8 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// How to unpack. The default is right for a non-root caller.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub limits: Limits,
    /// Apply the archive's uid/gid and keep setuid/setgid bits. Only set this
    /// when the caller is real root: without it, the ids are recorded in
    /// [`Report::owners`] instead, so a non-root store never holds setuid files.
    pub chown: bool,
}

/// What [`unpack`] did, including what it deliberately did not do, so the
/// caller can log it and store owners it could not apply.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Tar entries seen, of any type.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Entries deliberately not created, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Entries whose archived owner or mode is not what ended up on disk.
    pub owners: Vec<OwnerRecord>,
}

/// Ownership and mode as the archive states them, for an entry where they were
/// not applied (the caller is not root and the owner is not 0, or setuid/setgid
/// or other mode bits were changed). Recorded so the caller can store them and
/// present them to the guest later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    /// Relative to `dest`, normalized.
    pub path: PathBuf,
    pub uid: u64,
    pub gid: u64,
    /// The archived mode, masked to `0o7777`.
    pub mode: u32,
}

/// Why an archive was refused. Every variant names the entry concerned, and
/// `Display` is one line that stands alone. The io error text is part of that
/// line and deliberately not also exposed as `source()`, so anyhow's `{:#}`
/// does not print it twice.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The tar stream itself is bad: checksum mismatch, truncation, or a gzip
    /// error surfacing through the reader.
    #[error("archive is corrupt or truncated{}: {err}", at_entry(.path))]
    Corrupt {
        path: Option<PathBuf>,
        err: io::Error,
    },
    #[error("archive is empty")]
    Empty,
    /// An entry breaks a safety rule, so we trust nothing else in the archive.
    #[error("refusing archive: entry `{}` {reason}", .path.display())]
    Refused { path: PathBuf, reason: String },
    #[error(
        "archive entry `{}` takes the unpacked size past the limit of {limit} bytes \
         (raise it with --max-size or XROOT_MAX_UNPACKED if the archive is trusted)",
        .path.display()
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("archive has more than {limit} entries (stopped at `{}`)", .path.display())]
    TooManyEntries { path: PathBuf, limit: u64 },
    /// The archive is fine but the filesystem said no (disk full, EPERM, ...).
    #[error("cannot {op} `{}`: {err}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
}

fn at_entry(path: &Option<PathBuf>) -> String {
    let at = |p: &PathBuf| format!(" at entry `{}`", p.display());
    path.as_ref().map(at).unwrap_or_default()
}

fn refused(path: &Path, reason: impl Into<String>) -> ExtractError {
    let (path, reason) = (path.to_owned(), reason.into());
    ExtractError::Refused { path, reason }
}

fn corrupt(path: Option<&Path>, err: io::Error) -> ExtractError {
    let path = path.map(Path::to_owned);
    ExtractError::Corrupt { path, err }
}

/// Attaches the operation and entry to a filesystem error, so each syscall
/// site stays one line.
trait At<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, ExtractError>;
}

impl<T, E: Into<io::Error>> At<T> for Result<T, E> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, ExtractError> {
        let path = path.to_owned();
        self.map_err(|e| ExtractError::Io {
            op,
            path,
            err: e.into(),
        })
    }
}

/// Unpacks the decompressed tar stream `archive` into `dest`, following the
/// rules in the module docs. `dest` must be an existing empty directory (not a
/// symlink): hard links may only point at what this archive already put there.
///
/// `progress` is called with the number of file-content bytes just written (a
/// delta; the sum equals [`Report::bytes`]). Bytes written rather than archive
/// bytes read, because that is what the size limit counts.
pub fn unpack<R: Read>(
    archive: R,
    dest: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, ExtractError> {
    let budget = Rc::new(Cell::new(0));
    let inner = Metered {
        inner: archive,
        budget: Rc::clone(&budget),
    };
    let mut archive = tar::Archive::new(inner);
    let mut x = Extractor {
        root: open_owned(None, dest, DIR).at("open", dest)?,
        opts,
        report: Report::default(),
        dirs: BTreeMap::new(),
        buf: vec![0; 64 * 1024],
    };
    let mut entries = archive.entries().map_err(|e| corrupt(None, e))?;
    loop {
        budget.set(META_BUDGET);
        let mut entry = match entries.next() {
            None => break,
            Some(entry) => entry.map_err(|e| corrupt(None, e))?,
        };
        let raw = entry.path().map_err(|e| corrupt(None, e))?.into_owned();
        x.report.entries += 1;
        if x.report.entries > opts.limits.max_entries {
            let limit = opts.limits.max_entries;
            return Err(ExtractError::TooManyEntries { path: raw, limit });
        }
        let rel = normalize(&raw).map_err(|reason| refused(&raw, reason))?;
        if is_file(entry.header().entry_type()) {
            budget.set(budget.get().saturating_add(entry.size()));
        }
        x.entry(&mut entry, &rel, progress)?;
    }
    if x.report.entries == 0 {
        return Err(ExtractError::Empty);
    }
    read_to_end_of_stream(archive.into_inner(), &budget)?;
    x.finish_dirs()?;
    Ok(x.report)
}

/// How much may follow the tar end marker. Tar writers pad to a record
/// (10 KiB by default); anything much larger is not a tarball we made sense of.
const TRAILER_BUDGET: u64 = 16 << 20;

/// Reads what follows the tar end marker to the end of the stream. The end
/// marker is not the end of a compressed file: only reading on to EOF makes
/// the decompressor check its trailer (gzip's CRC-32 and length), so without
/// this an archive whose corruption happens to decode cleanly, or whose
/// compressed stream is cut right after the marker, would be accepted.
fn read_to_end_of_stream<R: Read>(
    mut rest: Metered<R>,
    budget: &Cell<u64>,
) -> Result<(), ExtractError> {
    budget.set(u64::MAX);
    let mut limited = (&mut rest).take(TRAILER_BUDGET + 1);
    let n = io::copy(&mut limited, &mut io::sink()).map_err(|e| corrupt(None, e))?;
    if n > TRAILER_BUDGET {
        let msg = "more than 16 MiB of data after the end of the tar archive";
        return Err(corrupt(None, io::Error::other(msg)));
    }
    Ok(())
}

/// How much of the tar stream the `tar` crate may read on its own between two
/// entries. It buffers GNU long names and PAX records in memory with no cap,
/// so without this a few KiB of gzip could make it allocate gigabytes.
const META_BUDGET: u64 = 16 << 20;

/// A reader that fails once its budget runs out. [`unpack`] resets the budget
/// before each entry and adds a regular file's declared size before copying
/// it; the byte limit is enforced separately.
struct Metered<R> {
    inner: R,
    budget: Rc<Cell<u64>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        if left == 0 && !buf.is_empty() {
            let msg = "more than 16 MiB of tar headers or non-file data between two entries";
            return Err(io::Error::other(msg));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..want])?;
        self.budget.set(left - got as u64);
        Ok(got)
    }
}

/// Flags for walking directories: `O_NOFOLLOW` is what keeps us inside `dest`.
const DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `openat` (or `open` when `dir` is `None`) returning an owned fd. The 0600
/// only matters with `O_CREAT`: files stay private until their mode is set.
fn open_owned(
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

/// Types whose data we copy into a regular file. The `tar` crate expands GNU
/// sparse files itself, and `Continuous` is a regular file on every real system.
fn is_file(kind: tar::EntryType) -> bool {
    use tar::EntryType as T;
    matches!(kind, T::Regular | T::Continuous | T::GNUSparse)
}

/// Turns an archive path into one relative to `dest`: drops `/` and `.`,
/// refuses `..` (see the module docs). An empty result means `dest` itself.
fn normalize(raw: &Path) -> Result<PathBuf, String> {
    if raw.as_os_str().as_bytes().contains(&0) {
        return Err("has a NUL byte in its name".into());
    }
    let mut out = PathBuf::new();
    for comp in raw.components() {
        match comp {
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component".into()),
            Component::Prefix(_) => return Err("has a path prefix".into()),
        }
    }
    Ok(out)
}

fn lstat_at(dir: RawFd, name: &OsStr) -> nix::Result<FileStat> {
    fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn is_type(st: &FileStat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

fn timespec(secs: u64) -> TimeSpec {
    TimeSpec::new(libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX), 0)
}

/// Sets owner (if any), then mode, then mtime on an open file or directory.
/// chown comes first because it clears setuid/setgid.
fn apply(
    fd: &OwnedFd,
    ids: Option<(Uid, Gid)>,
    mode: u32,
    mtime: u64,
    rel: &Path,
) -> Result<(), ExtractError> {
    if let Some((uid, gid)) = ids {
        fchown(fd.as_raw_fd(), Some(uid), Some(gid)).at("chown", rel)?;
    }
    fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode)).at("chmod", rel)?;
    let (omit, mtime) = (TimeSpec::UTIME_OMIT, timespec(mtime));
    futimens(fd.as_raw_fd(), &omit, &mtime).at("set mtime of", rel)
}

/// Header fields every kind of entry carries.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// What a directory gets once everything under it exists.
struct DirMeta {
    mode: u32,
    ids: Option<(Uid, Gid)>,
    mtime: u64,
}

struct Extractor<'a> {
    root: OwnedFd,
    opts: &'a Options,
    report: Report,
    /// Directory entries, applied last (see [`Extractor::finish_dirs`]).
    dirs: BTreeMap<PathBuf, DirMeta>,
    buf: Vec<u8>,
}

impl Extractor<'_> {
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        rel: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ExtractError> {
        use tar::EntryType as T;
        let bad = |e| corrupt(Some(rel), e);
        let h = entry.header();
        let kind = h.entry_type();
        let meta = Meta {
            mode: h.mode().map_err(bad)? & 0o7777,
            uid: h.uid().map_err(bad)?,
            gid: h.gid().map_err(bad)?,
            mtime: h.mtime().map_err(bad)?,
        };
        let skip = match kind {
            _ if is_file(kind) => return self.file(entry, rel, &meta, progress),
            T::Directory => return self.dir(rel, &meta),
            T::Symlink | T::Link => {
                let target = entry.link_name().map_err(bad)?;
                let target = target.ok_or_else(|| refused(rel, "is a link with no target"))?;
                return match kind {
                    T::Symlink => self.symlink(rel, &target, &meta),
                    _ => self.hard_link(rel, &target),
                };
            }
            // PAX global headers only carry metadata (git archive adds one).
            T::XGlobalHeader => return Ok(()),
            T::Char | T::Block => "device node: not created, xroot bind-mounts /dev at run time",
            T::Fifo => "fifo: not created, programs make their own at run time",
            _ => "unsupported entry type: not created",
        };
        let skip = format!("{skip} (type {:?})", kind.as_byte() as char);
        self.report.skipped.push((rel.to_owned(), skip));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        rel: &Path,
        meta: &Meta,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ExtractError> {
        let limit = self.opts.limits.max_bytes;
        let too_large = || ExtractError::TooLarge {
            path: rel.to_owned(),
            limit,
        };
        // A bomb declares its size up front: refuse before writing a byte.
        let size = entry.size();
        if self.report.bytes.saturating_add(size) > limit {
            return Err(too_large());
        }
        let (dir, name) = self.parent(rel)?;
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY;
        let fd = self.place(&dir, name, rel, |d| {
            open_owned(Some(d), name, flags | OFlag::O_CLOEXEC)
        })?;
        let mut file = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(Some(rel), e)),
            };
            written += n as u64;
            // The declared size is only a claim (sparse files expand), so count too.
            if self.report.bytes + written > limit {
                return Err(too_large());
            }
            file.write_all(&self.buf[..n]).at("write", rel)?;
            progress(n as u64);
        }
        if written != size {
            let msg = format!("file data ends after {written} of {size} bytes");
            let err = io::Error::new(io::ErrorKind::UnexpectedEof, msg);
            return Err(corrupt(Some(rel), err));
        }
        self.report.bytes += written;
        let mode = self.mode_for(meta, true);
        apply(&file.into(), self.ids(meta, rel)?, mode, meta.mtime, rel)?;
        self.record(rel, meta, Some(mode));
        Ok(())
    }

    fn dir(&mut self, rel: &Path, meta: &Meta) -> Result<(), ExtractError> {
        if rel.as_os_str().is_empty() {
            // The `./` entry is `dest` itself, which the caller made. Take only
            // its permission bits (a guest `/` must be 0755 for non-root users),
            // never an owner, and keep it usable by the caller.
            let mode = (meta.mode & 0o1777) | 0o700;
            let (ids, mtime) = (None, meta.mtime);
            self.dirs
                .insert(PathBuf::new(), DirMeta { mode, ids, mtime });
            return Ok(());
        }
        let (dir, name) = self.parent(rel)?;
        let exists = lstat_at(dir.as_raw_fd(), name).is_ok_and(|st| is_type(&st, libc::S_IFDIR));
        if !exists {
            let mode = Mode::from_bits_truncate(0o755);
            self.place(&dir, name, rel, |d| mkdirat(Some(d), name, mode))?;
        }
        let (mode, ids, mtime) = (self.mode_for(meta, false), self.ids(meta, rel)?, meta.mtime);
        self.dirs
            .insert(rel.to_owned(), DirMeta { mode, ids, mtime });
        self.record(rel, meta, Some(mode));
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, target: &Path, meta: &Meta) -> Result<(), ExtractError> {
        let bytes = target.as_os_str().as_bytes();
        if bytes.is_empty() || bytes.contains(&0) {
            return Err(refused(rel, "is a symlink with an empty or invalid target"));
        }
        let (dir, name) = self.parent(rel)?;
        self.place(&dir, name, rel, |d| symlinkat(target, Some(d), name))?;
        let (d, nofollow) = (Some(dir.as_raw_fd()), AtFlags::AT_SYMLINK_NOFOLLOW);
        if let Some((uid, gid)) = self.ids(meta, rel)? {
            fchownat(d, name, Some(uid), Some(gid), nofollow).at("chown", rel)?;
        }
        let (omit, mtime) = (TimeSpec::UTIME_OMIT, timespec(meta.mtime));
        utimensat(d, name, &omit, &mtime, UtimensatFlags::NoFollowSymlink)
            .at("set mtime of", rel)?;
        self.record(rel, meta, None);
        Ok(())
    }

    /// Links to a non-directory already extracted. The target is found by the
    /// same no-symlink walk as any path, so it cannot name anything outside.
    fn hard_link(&mut self, rel: &Path, target: &Path) -> Result<(), ExtractError> {
        let what = |why: &str| format!("is a hard link to `{}`, which {why}", target.display());
        let target = normalize(target).map_err(|why| refused(rel, what(&why)))?;
        if target == rel {
            return Ok(()); // A link to itself: replacing it would delete it.
        }
        let tname = target
            .file_name()
            .ok_or_else(|| refused(rel, what("is the archive root")))?;
        let tdir_rel = target.parent().unwrap_or(Path::new(""));
        let tdir = self.open_dir(tdir_rel, false, rel, "hard link target ")?;
        match lstat_at(tdir.as_raw_fd(), tname) {
            Ok(st) if is_type(&st, libc::S_IFDIR) => {
                return Err(refused(rel, what("is a directory")))
            }
            Ok(_) => {}
            Err(Errno::ENOENT) => return Err(refused(rel, what("was not extracted before it"))),
            Err(e) => return Err(e).at("inspect", &target),
        }
        let (dir, name) = self.parent(rel)?;
        let old = Some(tdir.as_raw_fd());
        self.place(&dir, name, rel, |d| {
            linkat(old, tname, Some(d), name, AtFlags::empty())
        })
    }

    /// Gives directories their modes, owners and mtimes once everything under
    /// them exists. Deepest first, so a `0555` or `0000` directory never blocks
    /// creating its children, and creating children never bumps its mtime.
    fn finish_dirs(&mut self) -> Result<(), ExtractError> {
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by_key(|(rel, _)| Reverse(rel.components().count()));
        for (rel, d) in dirs {
            let fd = self.open_dir(&rel, false, &rel, "")?;
            apply(&fd, d.ids, d.mode, d.mtime, &rel)?;
        }
        Ok(())
    }

    /// Opens the parent directory of `rel`, creating missing ones, and returns
    /// it with the final name. The archive root itself has no parent.
    fn parent<'p>(&self, rel: &'p Path) -> Result<(OwnedFd, &'p OsStr), ExtractError> {
        let root = || refused(rel, "names the archive root but is not a directory");
        let name = rel.file_name().ok_or_else(root)?;
        let dir = self.open_dir(rel.parent().unwrap_or(Path::new("")), true, rel, "")?;
        Ok((dir, name))
    }

    /// Opens `rel_dir` one component at a time from `dest` with `O_NOFOLLOW`,
    /// so no symlink anywhere in the path is followed, whatever races or
    /// earlier entries did. `label` prefixes refusal reasons.
    fn open_dir(
        &self,
        rel_dir: &Path,
        create: bool,
        entry: &Path,
        label: &str,
    ) -> Result<OwnedFd, ExtractError> {
        let mut cur = self.root.try_clone().at("open", entry)?;
        let mut prefix = PathBuf::new();
        for comp in rel_dir.components() {
            let name = comp.as_os_str();
            prefix.push(name);
            let d = cur.as_raw_fd();
            let mut res = open_owned(Some(d), name, DIR);
            if create && matches!(res, Err(Errno::ENOENT)) {
                match mkdirat(Some(d), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e).at("create directory", &prefix),
                }
                res = open_owned(Some(d), name, DIR);
            }
            let through = |what: &str| {
                let reason = format!("{label}goes through `{}`, which {what}", prefix.display());
                Err(refused(entry, reason))
            };
            cur = match res {
                Ok(fd) => fd,
                Err(Errno::ENOTDIR | Errno::ELOOP) => {
                    return match lstat_at(d, name).is_ok_and(|st| is_type(&st, libc::S_IFLNK)) {
                        true => through("is a symlink"),
                        false => through("is not a directory"),
                    };
                }
                Err(Errno::ENOENT) => return through("does not exist"),
                Err(e) => return Err(e).at("open directory", &prefix),
            };
        }
        Ok(cur)
    }

    /// Runs `create` for `name` in `dir`. If the name is taken, a later entry
    /// replaces an earlier one as in GNU tar, except that a non-empty directory
    /// is never removed to make room: that would silently drop earlier entries.
    fn place<T>(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        create: impl Fn(RawFd) -> nix::Result<T>,
    ) -> Result<T, ExtractError> {
        let d = dir.as_raw_fd();
        match create(d) {
            Err(Errno::EEXIST) => {}
            res => return res.at("create", rel),
        }
        let was_dir = is_type(&lstat_at(d, name).at("inspect", rel)?, libc::S_IFDIR);
        let how = match was_dir {
            true => UnlinkatFlags::RemoveDir,
            false => UnlinkatFlags::NoRemoveDir,
        };
        match unlinkat(Some(d), name, how) {
            Ok(()) => {}
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
                return Err(refused(rel, "would replace a non-empty directory"))
            }
            Err(e) => return Err(e).at("replace", rel),
        }
        if was_dir {
            self.dirs.remove(rel);
        }
        create(d).at("create", rel)
    }

    /// The mode we apply; see the module docs for why.
    fn mode_for(&self, meta: &Meta, regular_file: bool) -> u32 {
        let mut mode = meta.mode;
        if !self.opts.chown {
            mode &= !0o6000;
        }
        if regular_file {
            mode |= 0o400;
        }
        mode
    }

    /// The ids to apply, if we apply any. `u32::MAX` means "leave unchanged" to
    /// chown(2), so it is refused along with anything that does not fit.
    fn ids(&self, meta: &Meta, rel: &Path) -> Result<Option<(Uid, Gid)>, ExtractError> {
        if !self.opts.chown {
            return Ok(None);
        }
        let fit = |id: u64| u32::try_from(id).ok().filter(|&id| id != u32::MAX);
        match (fit(meta.uid), fit(meta.gid)) {
            (Some(u), Some(g)) => Ok(Some((Uid::from_raw(u), Gid::from_raw(g)))),
            _ => Err(refused(rel, "has a uid or gid out of range")),
        }
    }

    /// Notes an entry whose archived owner or mode did not make it to disk.
    /// `applied` is `None` for symlinks, whose mode Linux ignores.
    fn record(&mut self, rel: &Path, meta: &Meta, applied: Option<u32>) {
        let owner_lost = !self.opts.chown && (meta.uid != 0 || meta.gid != 0);
        if owner_lost || applied.is_some_and(|mode| mode != meta.mode) {
            let (path, uid, gid, mode) = (rel.to_owned(), meta.uid, meta.gid, meta.mode);
            self.report.owners.push(OwnerRecord {
                path,
                uid,
                gid,
                mode,
            });
        }
    }
}

/// `rm -rf path` for trees [`unpack`] made. Directories that are `0555` or
/// `0000` (both occur in rootfs tarballs) get `u+rwx` as we go, since a
/// non-root owner cannot otherwise list or empty them. Symlinks are removed,
/// never followed, so a link to `/` inside the tree is harmless. A missing
/// `path` is fine: the caller just wants it gone.
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

fn remove_at(parent: RawFd, name: &OsStr) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn dotdot_is_refused() {
        for evil in ["../evil", "a/../../evil", "./../evil", "a/b/../../../evil"] {
            let sb = Sandbox::new();
            let tar = Tar::new()
                .file("ok", 0o644, b"x")
                .file(evil, 0o644, b"pwned")
                .bytes();
            let err = sb.unpack(&tar).unwrap_err();
            assert!(err.to_string().contains("`..`"), "{err}");
            assert_eq!(sb.outer_names(), ["dest"], "{evil}");
            assert!(!sb.outside().parent().unwrap().join("evil").exists());
        }
    }

    #[test]
    fn absolute_paths_are_rerooted() {
        // Absolute names point into the sandbox, so a regression cannot touch
        // the real system.
        let sb = Sandbox::new();
        let abs = sb.outside().join("abs-target");
        let abs = abs.to_str().unwrap();
        let tar = Tar::new()
            .file(abs, 0o644, b"inside")
            .dir("/", 0o755)
            .file("//./twice//slashed", 0o644, b"s")
            .bytes();
        sb.unpack(&tar).unwrap();
        assert_eq!(sb.outer_names(), ["dest"]);
        let rerooted = sb.dest.join(abs.trim_start_matches('/'));
        assert_eq!(fs::read(rerooted).unwrap(), b"inside");
        assert_eq!(fs::read(sb.p("twice/slashed")).unwrap(), b"s");
    }

    #[test]
    fn writing_through_symlink_to_outside_is_refused() {
        let sb = Sandbox::new();
        let outside = sb.outside().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"original").unwrap();
        let abs = outside.to_str().unwrap();
        for (link, target) in [("link", abs), ("a/b/up", "../../.."), ("rel", "../outside")] {
            let tar = Tar::new()
                .symlink(link, target)
                .file(&format!("{link}/victim"), 0o644, b"pwned")
                .file(&format!("{link}/new"), 0o644, b"pwned")
                .bytes();
            let reason = refused_reason(sb.unpack(&tar));
            assert!(reason.contains("is a symlink"), "{reason}");
            remove_tree(&sb.dest).unwrap();
            fs::create_dir(&sb.dest).unwrap();
            assert_eq!(sb.outer_names(), ["dest", "outside"], "{link}");
        }
        // Also via a directory entry placed under the symlink.
        let tar = Tar::new()
            .symlink("link", abs)
            .dir("link/sub", 0o755)
            .bytes();
        refused_reason(sb.unpack(&tar));
        remove_tree(&sb.dest).unwrap();
        fs::create_dir(&sb.dest).unwrap();
        // A symlink that is *replaced* by a later entry is removed, not followed.
        let victim = outside.join("victim");
        let tar = Tar::new()
            .symlink("f", victim.to_str().unwrap())
            .file("f", 0o600, b"mine")
            .symlink("d", abs)
            .dir("d", 0o700)
            .bytes();
        sb.unpack(&tar).unwrap();
        assert_eq!(fs::read(sb.p("f")).unwrap(), b"mine");
        assert!(fs::symlink_metadata(sb.p("d")).unwrap().is_dir());
        assert_eq!(mode(&sb.p("d")), 0o700);
        assert_eq!(mode(&outside), 0o755);
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"original");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        assert_eq!(sb.outer_names(), ["dest", "outside"]);
    }

    #[test]
    fn writing_through_symlink_to_inside_dir_is_refused() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .dir("real", 0o755)
            .symlink("alias", "real")
            .file("alias/f", 0o644, b"x")
            .bytes();
        let reason = refused_reason(sb.unpack(&tar));
        assert!(
            reason.contains("goes through `alias`, which is a symlink"),
            "{reason}"
        );
        assert!(!sb.p("real/f").exists());
    }

    #[test]
    fn parent_that_is_a_file_is_refused() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .file("a", 0o644, b"x")
            .file("a/b", 0o644, b"y")
            .bytes();
        let reason = refused_reason(sb.unpack(&tar));
        assert!(reason.contains("is not a directory"), "{reason}");
    }

    #[test]
    fn hard_links_outside_or_missing_are_refused() {
        let sb = Sandbox::new();
        fs::write(sb.outside().join("x"), b"secret").unwrap();
        let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
        let cases = [
            ("/etc/passwd", "goes through `etc`, which does not exist"),
            ("/dir/nope", "was not extracted before it"),
            ("../x", "`..`"),
            ("dir/../../x", "`..`"),
            ("missing", "was not extracted before it"),
            ("dir", "is a directory"),
            ("./", "is the archive root"),
            ("link/f", "is a symlink"),
        ];
        for (target, why) in cases {
            let tar = Tar::new()
                .dir("dir", 0o755)
                .file("dir/f", 0o644, b"f")
                .symlink("link", "dir")
                .hardlink("h", target)
                .bytes();
            let reason = refused_reason(sb.unpack(&tar));
            assert!(reason.contains(why), "{target}: {reason}");
            assert!(!sb.p("h").exists());
            remove_tree(&sb.dest).unwrap();
            fs::create_dir(&sb.dest).unwrap();
        }
        assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
        assert_eq!(fs::metadata(sb.outside().join("x")).unwrap().nlink(), 1);
        assert_eq!(sb.outer_names(), ["dest", "x"]);
    }

    #[test]
    fn hard_link_to_earlier_entry_shares_the_inode() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .file("bin/busybox", 0o755, b"elf")
            .hardlink("bin/ls", "/bin/busybox")
            .hardlink("usr/bin/cat", "./bin/busybox")
            .symlink("bin/sh", "/bin/busybox")
            .hardlink("bin/sh2", "bin/sh")
            .bytes();
        let report = sb.unpack(&tar).unwrap();
        let ino = fs::metadata(sb.p("bin/busybox")).unwrap().ino();
        assert_eq!(fs::metadata(sb.p("bin/ls")).unwrap().ino(), ino);
        assert_eq!(fs::metadata(sb.p("usr/bin/cat")).unwrap().ino(), ino);
        // A hard link to a symlink links the symlink itself, not its target.
        let sh = fs::symlink_metadata(sb.p("bin/sh")).unwrap().ino();
        assert_eq!(fs::symlink_metadata(sb.p("bin/sh2")).unwrap().ino(), sh);
        assert_eq!(report.bytes, 3);
    }

    #[test]
    fn devices_and_fifos_are_skipped_and_listed() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .raw(EntryType::Char, "dev/null", "", 0o666, (0, 0), b"")
            .raw(EntryType::Block, "dev/sda", "", 0o660, (0, 6), b"")
            .raw(EntryType::Fifo, "run/fifo", "", 0o600, (0, 0), b"")
            .raw(EntryType::new(b'V'), "label", "", 0o600, (0, 0), b"")
            .file("etc/ok", 0o644, b"ok")
            .bytes();
        let report = sb.unpack(&tar).unwrap();
        let skipped: Vec<_> = report
            .skipped
            .iter()
            .map(|(p, _)| p.to_str().unwrap())
            .collect();
        assert_eq!(skipped, ["dev/null", "dev/sda", "run/fifo", "label"]);
        assert!(report.skipped[0].1.contains("/dev"));
        assert!(report.skipped[3].1.contains("unsupported"));
        assert!(!sb.p("dev/null").exists() && !sb.p("dev/sda").exists());
        assert!(!sb.p("run/fifo").exists() && !sb.p("label").exists());
        assert_eq!(report.entries, 5);
        assert_eq!(fs::read(sb.p("etc/ok")).unwrap(), b"ok");
    }

    #[test]
    fn setuid_is_stripped_and_recorded_without_chown() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .raw(EntryType::Regular, "bin/su", "", 0o4755, (0, 0), b"su")
            .raw(EntryType::Regular, "bin/wall", "", 0o2755, (0, 5), b"w")
            .raw(EntryType::Directory, "tmp", "", 0o1777, (0, 0), b"")
            .raw(
                EntryType::Regular,
                "home/u/f",
                "",
                0o644,
                (1000, 1000),
                b"u",
            )
            .raw(
                EntryType::Symlink,
                "home/u/l",
                "f",
                0o777,
                (1000, 1000),
                b"",
            )
            .bytes();
        let report = sb.unpack(&tar).unwrap();
        assert_eq!(mode(&sb.p("bin/su")), 0o755);
        assert_eq!(mode(&sb.p("bin/wall")), 0o755);
        assert_eq!(mode(&sb.p("tmp")), 0o1777, "sticky is harmless and kept");
        let rec = |path: &str, uid, gid, mode| OwnerRecord {
            path: path.into(),
            uid,
            gid,
            mode,
        };
        assert_eq!(
            report.owners,
            [
                rec("bin/su", 0, 0, 0o4755),
                rec("bin/wall", 0, 5, 0o2755),
                rec("home/u/f", 1000, 1000, 0o644),
                rec("home/u/l", 1000, 1000, 0o777),
            ]
        );
        if is_root() {
            // chown=false: files belong to whoever extracted, never to uid 1000.
            assert_eq!(fs::metadata(sb.p("home/u/f")).unwrap().uid(), 0);
        }
    }

    #[test]
    fn chown_keeps_setuid_and_applies_owners() {
        if !is_root() {
            return;
        }
        let sb = Sandbox::new();
        let tar = Tar::new()
            .raw(EntryType::Regular, "bin/su", "", 0o4755, (0, 0), b"su")
            .raw(EntryType::Directory, "home/u", "", 0o700, (1000, 1001), b"")
            .raw(
                EntryType::Regular,
                "home/u/f",
                "",
                0o2640,
                (1000, 1001),
                b"u",
            )
            .raw(
                EntryType::Symlink,
                "home/u/l",
                "/nowhere",
                0o777,
                (1002, 1003),
                b"",
            )
            .bytes();
        let opts = Options {
            chown: true,
            ..Options::default()
        };
        let report = sb.unpack_with(&tar, &opts).unwrap();
        assert!(report.owners.is_empty(), "{:?}", report.owners);
        assert_eq!(mode(&sb.p("bin/su")), 0o4755);
        assert_eq!(mode(&sb.p("home/u/f")), 0o2640);
        let f = fs::metadata(sb.p("home/u/f")).unwrap();
        assert_eq!((f.uid(), f.gid()), (1000, 1001));
        let d = fs::metadata(sb.p("home/u")).unwrap();
        assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (1000, 1001, 0o700));
        let l = fs::symlink_metadata(sb.p("home/u/l")).unwrap();
        assert_eq!((l.uid(), l.gid(), l.mtime() as u64), (1002, 1003, MTIME));
        // uid -1 would mean "unchanged" to chown(2): refused.
        let tar = Tar::new()
            .raw(
                EntryType::Regular,
                "x",
                "",
                0o644,
                (u32::MAX as u64, 0),
                b"",
            )
            .bytes();
        assert!(refused_reason(Sandbox::new().unpack_with(&tar, &opts)).contains("out of range"));
    }

    #[test]
    fn absurd_modes_are_masked_and_files_stay_readable() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .file("zero", 0o000, b"data")
            .file("wo", 0o200, b"data")
            .file("huge", 0o177777, b"data")
            .raw(EntryType::Directory, "d", "", 0o170755, (0, 0), b"")
            .bytes();
        let report = sb.unpack(&tar).unwrap();
        assert_eq!(mode(&sb.p("zero")), 0o400);
        assert_eq!(mode(&sb.p("wo")), 0o600);
        assert_eq!(
            mode(&sb.p("huge")),
            0o1777,
            "masked, setuid/setgid stripped"
        );
        assert_eq!(mode(&sb.p("d")), 0o755);
        assert_eq!(fs::read(sb.p("zero")).unwrap(), b"data");
        let recorded: Vec<_> = report
            .owners
            .iter()
            .map(|o| (o.path.to_str().unwrap(), o.mode))
            .collect();
        assert_eq!(recorded, [("zero", 0), ("wo", 0o200), ("huge", 0o7777)]);
    }

    #[test]
    fn duplicate_entries_last_wins() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .file("etc/motd", 0o644, b"first")
            .file("etc/motd", 0o600, b"second")
            .symlink("bin/sh", "/bin/ash")
            .symlink("bin/sh", "/bin/busybox")
            .file("x", 0o644, b"file")
            .symlink("x", "target")
            .dir("d", 0o755)
            .dir("d", 0o700)
            .bytes();
        let report = sb.unpack(&tar).unwrap();
        assert_eq!(fs::read(sb.p("etc/motd")).unwrap(), b"second");
        assert_eq!(mode(&sb.p("etc/motd")), 0o600);
        assert_eq!(
            fs::read_link(sb.p("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(fs::read_link(sb.p("x")).unwrap(), Path::new("target"));
        assert_eq!(mode(&sb.p("d")), 0o700);
        assert_eq!(report.bytes, 15);
    }

    #[test]
    fn file_replaced_by_dir_and_back() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .file("a", 0o644, b"file")
            .dir("a", 0o555)
            .file("a", 0o640, b"again")
            .dir("b", 0o755)
            .file("b/c", 0o644, b"c")
            .bytes();
        sb.unpack(&tar).unwrap();
        assert_eq!(fs::read(sb.p("a")).unwrap(), b"again");
        assert_eq!(
            mode(&sb.p("a")),
            0o640,
            "the dir's deferred 0555 must not land on the file"
        );

        // A directory that is not empty is never removed to make room.
        let sb = Sandbox::new();
        let tar = Tar::new()
            .dir("b", 0o755)
            .file("b/c", 0o644, b"c")
            .file("b", 0o644, b"x")
            .bytes();
        let reason = refused_reason(sb.unpack(&tar));
        assert!(reason.contains("non-empty directory"), "{reason}");
        assert_eq!(fs::read(sb.p("b/c")).unwrap(), b"c");
    }

    #[test]
    fn readonly_dirs_get_their_mode_last() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .dir("./", 0o755)
            .dir("ro", 0o555)
            .file("ro/a", 0o644, b"a")
            .dir("ro/sub", 0o500)
            .file("ro/sub/b", 0o644, b"b")
            .dir("locked", 0o000)
            .file("locked/c", 0o644, b"c")
            .bytes();
        sb.unpack(&tar).unwrap();
        assert_eq!(mode(&sb.p("ro")), 0o555);
        assert_eq!(mode(&sb.p("ro/sub")), 0o500);
        assert_eq!(mode(&sb.p("locked")), 0o000);
        assert_eq!(mode(&sb.dest), 0o755, "`./` sets dest's permission bits");
        assert_eq!(fs::read(sb.p("ro/sub/b")).unwrap(), b"b");
        assert_eq!(fs::metadata(sb.p("ro")).unwrap().mtime() as u64, MTIME);
        remove_tree(&sb.dest).unwrap();
        assert_eq!(sb.outer_names(), Vec::<String>::new());
    }

    #[test]
    fn root_entry_must_be_a_directory() {
        let sb = Sandbox::new();
        let tar = Tar::new().file("./", 0o644, b"x").bytes();
        assert!(refused_reason(sb.unpack(&tar)).contains("archive root"));
        let tar = Tar::new().symlink("/", "/etc").bytes();
        assert!(refused_reason(sb.unpack(&tar)).contains("archive root"));
    }

    #[test]
    fn empty_archive_is_an_error() {
        let sb = Sandbox::new();
        assert!(matches!(sb.unpack(b""), Err(ExtractError::Empty)));
        let tar = Tar::new().bytes();
        assert_eq!(tar.len(), 1024);
        let err = sb.unpack(&tar).unwrap_err();
        assert_eq!(err.to_string(), "archive is empty");
    }

    #[test]
    fn truncated_archive_is_corrupt() {
        let data = vec![7u8; 10_000];
        let tar = Tar::new()
            .file("first", 0o644, b"1")
            .file("big", 0o644, &data)
            .bytes();
        for cut in [1024 + 3000, 1024 + 300, 700] {
            let sb = Sandbox::new();
            let err = sb.unpack(&tar[..cut]).unwrap_err();
            assert!(
                matches!(err, ExtractError::Corrupt { .. }),
                "{cut}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("archive is corrupt or truncated"),
                "{err}"
            );
        }
        let err = Sandbox::new().unpack(&tar[..1024 + 3000]).unwrap_err();
        assert!(
            err.to_string()
                .contains("at entry `big`: file data ends after"),
            "{err}"
        );
    }

    #[test]
    fn stream_is_checked_to_its_end() {
        use std::io::Write as _;
        let tar = Tar::new().file("a", 0o644, b"a").bytes();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&tar).unwrap();
        let gz = e.finish().unwrap();
        let unpack_gz = |gz: &[u8]| {
            let sb = Sandbox::new();
            let r = sb.unpack_with_reader(flate2::read::GzDecoder::new(gz));
            (sb, r)
        };
        assert!(unpack_gz(&gz).1.is_ok());
        // A CRC-32 mismatch in the gzip trailer, after the tar end marker.
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 8] ^= 0xff;
        let err = unpack_gz(&bad).1.unwrap_err();
        assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
        // A gzip stream cut right after the tar end marker.
        let err = unpack_gz(&gz[..n - 4]).1.unwrap_err();
        assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
        // Padding is fine; endless data after the end is not.
        let sb = Sandbox::new();
        let mut padded = tar.clone();
        padded.extend(vec![0u8; 64 * 1024]);
        sb.unpack(&padded).unwrap();
        let sb = Sandbox::new();
        let endless = io::Cursor::new(tar).chain(io::repeat(0));
        let err = sb.unpack_with_reader(endless).unwrap_err();
        assert!(err.to_string().contains("after the end"), "{err}");
    }

    #[test]
    fn bad_header_checksum_is_corrupt() {
        let sb = Sandbox::new();
        let mut tar = Tar::new().file("etc/passwd", 0o644, b"root").bytes();
        tar[0] = b'E';
        let err = sb.unpack(&tar).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(matches!(err, ExtractError::Corrupt { .. }));
        assert_eq!(fs::read_dir(&sb.dest).unwrap().count(), 0);
    }

    #[test]
    fn byte_limit_is_checked_before_writing() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .file("a", 0o644, &[1; 60])
            .file("b", 0o644, &[2; 60])
            .bytes();
        let opts = Options {
            limits: Limits {
                max_bytes: 100,
                ..Limits::default()
            },
            chown: false,
        };
        let mut seen = 0;
        let err = unpack(&tar[..], &sb.dest, &opts, &mut |n| seen += n).unwrap_err();
        assert!(
            matches!(err, ExtractError::TooLarge { limit: 100, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("--max-size"), "{err}");
        assert_eq!(seen, 60);
        assert!(sb.p("a").exists() && !sb.p("b").exists());

        // A bomb declares a huge size; we refuse on the header, before reading.
        let mut h = header(Header::new_gnu(), EntryType::Regular, 0o644);
        h.set_path("bomb").unwrap();
        h.set_size(1 << 40);
        h.set_cksum();
        let err = sb.unpack(h.as_bytes()).unwrap_err();
        assert!(matches!(err, ExtractError::TooLarge { .. }), "{err:?}");
        assert!(!sb.p("bomb").exists());
    }

    #[test]
    fn entry_limit() {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .file("a", 0o644, b"")
            .dir("b", 0o755)
            .file("c", 0o644, b"")
            .bytes();
        let opts = Options {
            limits: Limits {
                max_entries: 2,
                ..Limits::default()
            },
            chown: false,
        };
        let err = sb.unpack_with(&tar, &opts).unwrap_err();
        assert!(
            matches!(err, ExtractError::TooManyEntries { limit: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("`c`"), "{err}");
        assert!(!sb.p("c").exists());
    }

    #[test]
    fn long_names_gnu_and_pax() {
        let sb = Sandbox::new();
        let long_dir = "d".repeat(120);
        let gnu_path = format!("{long_dir}/{}", "f".repeat(150));
        let pax_path = format!("{long_dir}/{}", "p".repeat(200));
        let target = format!("/{}", "t".repeat(180));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(Header::new_gnu(), EntryType::Regular, 0o644);
        h.set_size(3);
        b.append_data(&mut h, &gnu_path, &b"gnu"[..]).unwrap();
        let mut h = header(Header::new_gnu(), EntryType::Symlink, 0o777);
        b.append_link(&mut h, "longlink", &target).unwrap();
        // PAX: a record "<len> path=<value>\n" whose length counts itself.
        let body = format!(" path={pax_path}\n");
        let len = (1..)
            .find(|n: &usize| n.to_string().len() + body.len() == *n)
            .unwrap();
        let record = format!("{len}{body}");
        let mut x = header(Header::new_ustar(), EntryType::XHeader, 0o644);
        x.set_path("PaxHeader").unwrap();
        x.set_size(record.len() as u64);
        x.set_cksum();
        b.append(&x, record.as_bytes()).unwrap();
        let mut h = header(Header::new_ustar(), EntryType::Regular, 0o644);
        h.set_path("short").unwrap();
        h.set_size(3);
        h.set_cksum();
        b.append(&h, &b"pax"[..]).unwrap();
        let tar = b.into_inner().unwrap();

        let report = sb.unpack(&tar).unwrap();
        assert_eq!(report.entries, 3);
        assert_eq!(fs::read(sb.dest.join(&gnu_path)).unwrap(), b"gnu");
        assert_eq!(fs::read(sb.dest.join(&pax_path)).unwrap(), b"pax");
        assert_eq!(fs::read_link(sb.p("longlink")).unwrap(), Path::new(&target));
        assert!(!sb.p("short").exists());
    }

    #[test]
    fn oversized_long_name_is_cut_off() {
        // A GNU long-name record the tar crate would buffer whole in memory.
        let mut h = header(Header::new_gnu(), EntryType::GNULongName, 0o644);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_size(1 << 30);
        h.set_cksum();
        let stream = io::Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(b'a').take(1 << 30));
        let sb = Sandbox::new();
        let err = unpack(stream, &sb.dest, &Options::default(), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("16 MiB"), "{err}");
    }

    #[test]
    fn remove_tree_handles_locked_dirs_and_never_follows() {
        let sb = Sandbox::new();
        let outside = sb.outside().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        let tree = sb.p("tree");
        fs::create_dir_all(tree.join("locked/deeper")).unwrap();
        fs::write(tree.join("locked/deeper/f"), b"f").unwrap();
        fs::create_dir_all(tree.join("ro")).unwrap();
        fs::write(tree.join("ro/f"), b"f").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("ro/to-outside")).unwrap();
        std::os::unix::fs::symlink(outside.join("keep"), tree.join("to-file")).unwrap();
        std::os::unix::fs::symlink("/", tree.join("to-root")).unwrap();
        fs::set_permissions(
            tree.join("locked/deeper"),
            fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        fs::set_permissions(tree.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();

        // A symlink as the path itself: only the link goes.
        let link = sb.p("link-to-outside");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(!link.exists() && outside.join("keep").exists());

        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");
        assert_eq!(mode(&outside), 0o755);
        remove_tree(&tree).unwrap(); // already gone is fine
        remove_tree(&sb.p("no/such/parent")).unwrap();
        assert!(remove_tree(Path::new("/")).is_err());
        assert_eq!(sb.outer_names(), ["dest", "outside"]);
    }

    const ALPINE: &str =
        "/work/shared/alpine-mirror/v3.20/releases/aarch64/alpine-minirootfs-3.20.3-aarch64.tar.gz";

    #[test]
    fn real_alpine_minirootfs() {
        let Ok(gz) = fs::read(ALPINE) else {
            eprintln!("skipping: {ALPINE} not present");
            return;
        };
        for chown in [false, true] {
            if chown && !is_root() {
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
}
