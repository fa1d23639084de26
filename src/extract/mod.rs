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
//!
//! **Image layers** ([`Layers`]): container images are a stack of such
//! tarballs applied in order onto one tree, with two extra kinds of entry
//! (the OCI image spec's "whiteouts"): `DIR/.wh.NAME` deletes `DIR/NAME` left
//! by a lower layer, and `DIR/.wh..wh..opq` empties `DIR` of everything lower
//! layers put there. Both are found by the same no-symlink walk, deletion is
//! [`remove`]'s fd-relative one, and neither is ever created as a file. What
//! the current layer itself made is kept (the tar order of a whiteout and its
//! siblings is not fixed), as containerd does. A layer may also replace a
//! lower layer's non-empty directory with a file (the directory goes). Modes
//! of directories are applied once, after the last layer.
//!
//! Where things are: [`input`] meters the tar stream and drains what follows
//! its end marker, [`place`] creates each entry and applies its metadata,
//! [`remove`] deletes what [`unpack`] made, and [`sys`] holds the `*at`
//! helpers they share.

mod input;
mod owners;
mod place;
mod remove;
mod sys;
#[cfg(test)]
mod tests;

pub use owners::set_owner_beneath;
pub use remove::remove_tree;

use std::cell::Cell;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use input::{read_to_end_of_stream, Metered, META_BUDGET};
use place::Extractor;
use sys::{open_owned, DIR};

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
    /// Top-level directories that are symlinks into `usr/` in the tree being
    /// filled (merged /usr, e.g. `["bin", "sbin", "lib"]`): an entry under
    /// one is placed under `usr/` instead, as dpkg's writes through the
    /// symlink would land. Paths are never written through the symlinks.
    pub usrmerge: &'static [&'static str],
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
    let root = open_owned(None, dest, DIR).at("open", dest)?;
    let mut x = Extractor::new(root, opts, false);
    read_archive(archive, &mut x, progress)?;
    if x.report.entries == 0 {
        return Err(ExtractError::Empty);
    }
    x.finish_dirs()?;
    Ok(x.report)
}

/// Applies container image layers, in order, onto one tree: each is a tar
/// stream unpacked like [`unpack`] does, plus whiteouts (see the module
/// docs). Limits count over all layers together.
pub struct Layers<'a> {
    x: Extractor<'a>,
}

impl<'a> Layers<'a> {
    /// `dest` must be an existing empty directory, as for [`unpack`].
    pub fn new(dest: &Path, opts: &'a Options) -> Result<Layers<'a>, ExtractError> {
        let root = open_owned(None, dest, DIR).at("open", dest)?;
        Ok(Layers {
            x: Extractor::new(root, opts, true),
        })
    }

    /// Applies the next layer (a decompressed tar stream). An empty layer
    /// is fine (images have them).
    pub fn apply<R: Read>(
        &mut self,
        layer: R,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ExtractError> {
        self.x.start_layer();
        read_archive(layer, &mut self.x, progress)
    }

    /// Gives directories their final metadata; what all layers did.
    pub fn finish(mut self) -> Result<Report, ExtractError> {
        if self.x.report.entries == 0 {
            return Err(ExtractError::Empty);
        }
        self.x.finish_dirs()?;
        Ok(self.x.into_report())
    }
}

/// Feeds every entry of one tar stream to `x`, then reads to the end of
/// the stream.
fn read_archive<R: Read>(
    archive: R,
    x: &mut Extractor,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ExtractError> {
    let budget = Rc::new(Cell::new(0));
    let inner = Metered {
        inner: archive,
        budget: Rc::clone(&budget),
    };
    let mut archive = tar::Archive::new(inner);
    let max_entries = x.max_entries();
    let mut entries = archive.entries().map_err(|e| corrupt(None, e))?;
    loop {
        budget.set(META_BUDGET);
        let mut entry = match entries.next() {
            None => break,
            Some(entry) => entry.map_err(|e| corrupt(None, e))?,
        };
        let raw = entry.path().map_err(|e| corrupt(None, e))?.into_owned();
        x.report.entries += 1;
        if x.report.entries > max_entries {
            let limit = max_entries;
            return Err(ExtractError::TooManyEntries { path: raw, limit });
        }
        let rel = normalize(&raw).map_err(|reason| refused(&raw, reason))?;
        let rel = merged(x.opts, rel);
        if is_file(entry.header().entry_type()) {
            budget.set(budget.get().saturating_add(entry.size()));
        }
        x.entry(&mut entry, &rel, progress)?;
    }
    read_to_end_of_stream(archive.into_inner(), &budget)
}

/// With [`Options::usrmerge`]: `bin/x` becomes `usr/bin/x`.
fn merged(opts: &Options, rel: PathBuf) -> PathBuf {
    let mut comps = rel.components();
    if let Some(Component::Normal(first)) = comps.next() {
        if opts.usrmerge.iter().any(|d| first == *d) {
            let rest = comps.as_path();
            let mut out = Path::new("usr").join(first);
            if !rest.as_os_str().is_empty() {
                out.push(rest);
            }
            return out;
        }
    }
    rel
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
