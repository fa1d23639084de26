//! Creating each entry under `dest` with `*at` syscalls, and applying its
//! owner, mode and mtime. Every path is walked from the `dest` fd one
//! component at a time with `O_NOFOLLOW` ([`Extractor::open_dir`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::sys::{is_type, lstat_at, open_owned, DIR};
use super::{corrupt, is_file, normalize, refused, At, ExtractError, Options, OwnerRecord, Report};

fn timespec(secs: u64) -> TimeSpec {
    // `as _`: time_t, whose width libc's musl bindings are changing.
    TimeSpec::new(secs.min(i64::MAX as u64) as _, 0)
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

/// What applying image layers needs on top (see [`super::Layers`]).
#[derive(Default)]
struct LayerState {
    /// Paths the current layer created or declared: whiteouts spare them.
    this_layer: HashSet<PathBuf>,
    /// Owner records by path: a later layer's entry replaces (or, when it
    /// has nothing to record, drops) an earlier one's, and a deleted path
    /// takes its records with it.
    owners: BTreeMap<PathBuf, OwnerRecord>,
}

/// One archive's placement under `dest`: [`unpack`](super::unpack) feeds it
/// each entry, then calls [`Extractor::finish_dirs`].
pub(super) struct Extractor<'a> {
    root: OwnedFd,
    pub(super) opts: &'a Options,
    pub(super) report: Report,
    /// Directory entries, applied last (see [`Extractor::finish_dirs`]).
    dirs: BTreeMap<PathBuf, DirMeta>,
    buf: Vec<u8>,
    /// Set when applying image layers (whiteouts are honoured).
    layer: Option<LayerState>,
}

impl<'a> Extractor<'a> {
    /// `root` is the open `dest` directory that every path is walked from.
    /// `layers`: entries are image layers' (see [`super::Layers`]).
    pub(super) fn new(root: OwnedFd, opts: &'a Options, layers: bool) -> Extractor<'a> {
        Extractor {
            root,
            opts,
            report: Report::default(),
            dirs: BTreeMap::new(),
            buf: vec![0; 64 * 1024],
            layer: layers.then(LayerState::default),
        }
    }

    pub(super) fn max_entries(&self) -> u64 {
        self.opts.limits.max_entries
    }

    /// A new image layer begins: whiteouts now spare only what it makes.
    pub(super) fn start_layer(&mut self) {
        if let Some(l) = &mut self.layer {
            l.this_layer.clear();
        }
    }

    /// The report, with the owner records of layers folded in.
    pub(super) fn into_report(mut self) -> Report {
        if let Some(l) = self.layer.take() {
            self.report.owners.extend(l.owners.into_values());
        }
        self.report
    }

    /// Notes that the current layer made or declared `rel` (layers only),
    /// dropping what lower layers recorded about its owner.
    fn mark(&mut self, rel: &Path) {
        if let Some(l) = &mut self.layer {
            l.owners.remove(rel);
            l.this_layer.insert(rel.to_owned());
        }
    }

    /// Applies a whiteout entry `rel` (`DIR/.wh.NAME` or `DIR/.wh..wh..opq`).
    /// Returns false if `rel` is not a whiteout.
    fn whiteout(&mut self, rel: &Path) -> Result<bool, ExtractError> {
        let Some(name) = rel
            .file_name()
            .and_then(|n| n.as_bytes().strip_prefix(b".wh."))
        else {
            return Ok(false);
        };
        if name.is_empty() || name == b"." || name == b".." {
            return Err(refused(rel, "is a whiteout with no name"));
        }
        let parent = rel.parent().unwrap_or(Path::new("")).to_owned();
        // A whiteout in a directory no lower layer made has nothing to hide.
        let Some(dir) = self.walk(&parent, false, rel, "whiteout ", true)? else {
            return Ok(true);
        };
        if name == b".wh..opq" {
            self.opaque(&dir, &parent)?;
        } else {
            let victim = parent.join(OsStr::from_bytes(name));
            if !self.spared(&victim) {
                self.delete(&dir, OsStr::from_bytes(name), &victim)?;
            }
        }
        Ok(true)
    }

    /// Whether the current layer made `rel` (so a whiteout leaves it).
    fn spared(&self, rel: &Path) -> bool {
        self.layer
            .as_ref()
            .is_some_and(|l| l.this_layer.contains(rel))
    }

    /// Empties `dir` (at `rel`) of what lower layers made; in directories
    /// the current layer declared, recursively.
    fn opaque(&mut self, dir: &OwnedFd, rel: &Path) -> Result<(), ExtractError> {
        let mut names = Vec::new();
        let mut list = nix::dir::Dir::openat(Some(dir.as_raw_fd()), ".", DIR, Mode::empty())
            .at("list", rel)?;
        for e in list.iter() {
            let n = e.at("list", rel)?.file_name().to_bytes().to_vec();
            if n != b"." && n != b".." {
                names.push(std::ffi::OsString::from_vec(n));
            }
        }
        drop(list);
        for n in names {
            let child = rel.join(&n);
            if !self.spared(&child) {
                self.delete(dir, &n, &child)?;
            } else if lstat_at(dir.as_raw_fd(), &n).is_ok_and(|st| is_type(&st, libc::S_IFDIR)) {
                let sub = open_owned(Some(dir.as_raw_fd()), &n, DIR).at("open", &child)?;
                self.opaque(&sub, &child)?;
            }
        }
        Ok(())
    }

    /// Deletes `name` in `dir` (at `rel`), a whole tree if it is one, and
    /// forgets what was noted about anything under it.
    fn delete(&mut self, dir: &OwnedFd, name: &OsStr, rel: &Path) -> Result<(), ExtractError> {
        super::remove::remove_at(dir.as_raw_fd(), name).at("remove", rel)?;
        self.dirs.retain(|p, _| !p.starts_with(rel));
        if let Some(l) = &mut self.layer {
            l.owners.retain(|p, _| !p.starts_with(rel));
        }
        Ok(())
    }

    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        rel: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ExtractError> {
        use tar::EntryType as T;
        if self.layer.is_some() && self.whiteout(rel)? {
            return Ok(());
        }
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
        self.mark(rel);
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
        let target = super::merged(self.opts, target);
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
    pub(super) fn finish_dirs(&mut self) -> Result<(), ExtractError> {
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
        let fd = self.walk(rel_dir, create, entry, label, false)?;
        fd.ok_or_else(|| refused(entry, format!("{label}names a missing directory")))
    }

    /// [`open_dir`](Self::open_dir), where `missing_ok` turns a missing
    /// directory into `None` instead of a refusal.
    fn walk(
        &self,
        rel_dir: &Path,
        create: bool,
        entry: &Path,
        label: &str,
        missing_ok: bool,
    ) -> Result<Option<OwnedFd>, ExtractError> {
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
                Err(Errno::ENOENT) if missing_ok => return Ok(None),
                Err(Errno::ENOENT) => return through("does not exist"),
                Err(e) => return Err(e).at("open directory", &prefix),
            };
        }
        Ok(Some(cur))
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
        let lower = self.layer.is_some() && !self.spared(rel);
        self.mark(rel);
        match create(d) {
            Err(Errno::EEXIST) => {}
            res => return res.at("create", rel),
        }
        let was_dir = is_type(&lstat_at(d, name).at("inspect", rel)?, libc::S_IFDIR);
        if was_dir && lower {
            // A lower layer's directory, hidden by this layer's entry.
            self.delete(dir, name, rel)?;
            self.mark(rel);
            return create(d).at("create", rel);
        }
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
            let rec = OwnerRecord {
                path,
                uid,
                gid,
                mode,
            };
            match &mut self.layer {
                Some(l) => {
                    l.owners.insert(rec.path.clone(), rec);
                }
                None => self.report.owners.push(rec),
            }
        }
    }
}
