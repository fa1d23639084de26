//! `xroot export ARCH[@NAME] FILE`: the installed tree as a tarball that
//! `xroot fetch ARCH --from FILE` imports again, here or on another machine.
//!
//! The archive holds what the guest sees: modes, owners (as the guest knows
//! them, see [`Owners`]), mtimes, symlinks (never followed), hard links and
//! device nodes. It is written to `FILE.tmp` and renamed into place once
//! complete, so `FILE` is never a truncated archive.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::error::hinted;
use crate::store::RootfsId;
use crate::userns::IdMap;

/// Output compression, chosen by the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    Gzip,
    Xz,
    Zstd,
}

impl Format {
    fn of(file: &Path) -> Result<Format> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let table = [
            (".tar", Format::Tar),
            (".tar.gz", Format::Gzip),
            (".tgz", Format::Gzip),
            (".tar.xz", Format::Xz),
            (".txz", Format::Xz),
            (".tar.zst", Format::Zstd),
            (".tzst", Format::Zstd),
        ];
        table
            .iter()
            .find(|(ext, _)| name.ends_with(ext))
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                hinted(
                    format!("cannot tell the archive format of {}", file.display()),
                    "name the file .tar, .tar.gz (.tgz), .tar.xz (.txz) or .tar.zst (.tzst)",
                )
            })
    }
}

pub fn export(ctx: &Ctx, target: &str, file: &Path) -> Result<()> {
    let (arch, name) = RootfsId::parse(target)?;
    let spec = ctx.catalog.resolve(&arch)?;
    let id = RootfsId {
        arch: spec.name.clone(),
        name,
    };
    let format = Format::of(file)?;
    let not_installed = || {
        hinted(
            format!("{id} is not installed"),
            "see `xroot list` for what is installed",
        )
    };
    // Checked before locking, which would create a store just to say no.
    if ctx.store.get(&id)?.is_none() {
        return Err(not_installed());
    }
    // Shared, like a running guest: `reset`, `rm` and `fetch --force` of
    // this rootfs wait (or refuse) until the archive is complete.
    let _lock = ctx.store.lock(&id, false, true)?;
    let installed = ctx.store.get(&id)?.ok_or_else(not_installed)?;
    let root = installed.root();
    let dir = match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let real_dir = dir.canonicalize().map_err(|e| {
        hinted(
            format!("cannot write {}: {}: {e}", file.display(), dir.display()),
            "export into an existing directory",
        )
    })?;
    if real_dir.starts_with(&installed.dir) {
        return Err(hinted(
            format!("{} is inside the rootfs being exported", file.display()),
            "write the archive somewhere outside the store",
        ));
    }
    let owners = Owners::load(&installed.dir, installed.manifest.owners_recorded)?;

    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    ctx.ui
        .info(format!("exporting {id} to {} ...", file.display()));
    let result = write_archive(&root, &tmp, format, &owners);
    let (bytes, sha256, report) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, file)
        .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
    for (p, why) in report.skipped.iter().take(5) {
        ctx.ui.info(format!("skipped /{}: {why}", p.display()));
    }
    ctx.ui.info(format!(
        "exported {id} ({} entries) to {} ({bytes} bytes, sha256 {sha256})",
        report.entries,
        file.display()
    ));
    ctx.ui.info(format!(
        "import it with: xroot fetch {}@NAME --from {} --sha256 {sha256}",
        id.arch,
        file.display()
    ));
    Ok(())
}

#[derive(Debug, Default)]
struct Report {
    entries: u64,
    skipped: Vec<(PathBuf, &'static str)>,
}

/// Writes the tree under `root` to a new file `tmp` (its parent directory
/// synced after), returning its size and sha256.
fn write_archive(
    root: &Path,
    tmp: &Path,
    format: Format,
    owners: &Owners,
) -> Result<(u64, String, Report)> {
    let _ = fs::remove_file(tmp);
    // 0600: the archive may hold the guest's secrets (/etc/shadow, keys).
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = Hashing {
        inner: BufWriter::new(f),
        hash: Sha256::new(),
        bytes: 0,
    };
    let werr = |e: io::Error| anyhow::Error::new(e).context(format!("writing {}", tmp.display()));
    let report = match format {
        Format::Tar => tar_tree(root, &mut out, owners)?,
        Format::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
            let r = tar_tree(root, &mut enc, owners)?;
            enc.finish().map_err(werr)?;
            r
        }
        Format::Xz => {
            let mut enc = xz2::write::XzEncoder::new(&mut out, 6);
            let r = tar_tree(root, &mut enc, owners)?;
            enc.finish().map_err(werr)?;
            r
        }
        Format::Zstd => {
            let mut enc = zstd::Encoder::new(&mut out, 3).map_err(werr)?;
            let r = tar_tree(root, &mut enc, owners)?;
            enc.finish().map_err(werr)?;
            r
        }
    };
    let Hashing { inner, hash, bytes } = out;
    let f = inner.into_inner().map_err(|e| werr(e.into_error()))?;
    f.sync_all().map_err(werr)?;
    Ok((bytes, hex::encode(hash.finalize()), report))
}

/// Counts and hashes what goes to the file.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes every entry under `root`, parents before children, in name
/// order (the same tree gives the same entry order), then the end blocks.
fn tar_tree<W: Write>(root: &Path, out: W, owners: &Owners) -> Result<Report> {
    let mut b = tar::Builder::new(out);
    let mut report = Report::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Depth-first with an explicit stack of relative paths.
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        add_entry(&mut b, &path, &rel, &meta, owners, &mut links, &mut report)?;
        if meta.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&path)
                .with_context(|| format!("listing {}", path.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .with_context(|| format!("listing {}", path.display()))?;
            names.sort();
            // Reversed onto the stack, so popped in name order.
            stack.extend(names.into_iter().rev().map(|n| rel.join(n)));
        }
    }
    b.into_inner()
        .context("finishing the archive")?
        .flush()
        .context("flushing the archive")?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn add_entry<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    rel: &Path,
    meta: &fs::Metadata,
    owners: &Owners,
    links: &mut HashMap<(u64, u64), PathBuf>,
    report: &mut Report,
) -> Result<()> {
    use tar::EntryType;
    // Relative names (`etc/passwd`); the root itself is `./`, which
    // carries its mode and owner.
    let name = Path::new(".").join(rel);
    let ft = meta.file_type();
    let mut h = tar::Header::new_gnu();
    let (uid, gid, mode) = owners.of(rel, meta);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mode(mode);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    let ctx = || format!("adding {} to the archive", path.display());
    if ft.is_dir() {
        h.set_entry_type(EntryType::Directory);
        b.append_data(&mut h, &name, io::empty())
            .with_context(ctx)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(path).with_context(|| format!("reading {}", path.display()))?;
        h.set_entry_type(EntryType::Symlink);
        link_name(b, &mut h, target.as_os_str().as_bytes()).with_context(ctx)?;
        b.append_data(&mut h, &name, io::empty())
            .with_context(ctx)?;
    } else if ft.is_file() {
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                h.set_entry_type(EntryType::Link);
                link_name(b, &mut h, first.as_os_str().as_bytes()).with_context(ctx)?;
                b.append_data(&mut h, &name, io::empty())
                    .with_context(ctx)?;
                report.entries += 1;
                return Ok(());
            }
            // Named as the archive names it (no `./`), for later links to it.
            links.insert((meta.dev(), meta.ino()), rel.to_path_buf());
        }
        // O_NOFOLLOW: the entry was a regular file a moment ago; if a guest
        // swapped in a symlink since, refuse rather than archive its target.
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        h.set_entry_type(EntryType::Regular);
        h.set_size(meta.len());
        let data = Exact {
            inner: f.take(meta.len()),
            left: meta.len(),
            path,
        };
        b.append_data(&mut h, &name, data).with_context(ctx)?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let t = if ft.is_char_device() {
            EntryType::Char
        } else if ft.is_block_device() {
            EntryType::Block
        } else {
            EntryType::Fifo
        };
        h.set_entry_type(t);
        let rdev = meta.rdev();
        h.set_device_major(libc::major(rdev)).with_context(ctx)?;
        h.set_device_minor(libc::minor(rdev)).with_context(ctx)?;
        b.append_data(&mut h, &name, io::empty())
            .with_context(ctx)?;
    } else {
        report
            .skipped
            .push((rel.to_path_buf(), "a socket (tar cannot hold one)"));
        return Ok(());
    }
    report.entries += 1;
    Ok(())
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
    path: &'a Path,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "{} shrank while being archived; stop the guests using it and export again",
                self.path.display()
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The owners and modes to record, as the guest sees them.
///
/// - real root: the files' own;
/// - rootless with a subordinate id range: files belong to the caller (guest
///   root) or to its range (guest ids 1..=N), mapped back here;
/// - rootless without one: extraction could not apply them and listed them
///   in `owners.tsv` next to the manifest; those records win.
struct Owners {
    map: IdMap,
    recorded: HashMap<PathBuf, (u64, u64, u32)>,
}

impl Owners {
    fn load(dir: &Path, recorded: bool) -> Result<Owners> {
        let mut out = Owners {
            map: IdMap::for_caller(),
            recorded: HashMap::new(),
        };
        if !recorded {
            return Ok(out);
        }
        let p = dir.join("owners.tsv");
        let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let parsed = (f.len() == 4)
                .then(|| {
                    Some((
                        f[1].parse::<u64>().ok()?,
                        f[2].parse::<u64>().ok()?,
                        u32::from_str_radix(f[3], 8).ok()?,
                    ))
                })
                .flatten();
            let Some(v) = parsed else {
                bail!("{}:{}: not PATH\\tUID\\tGID\\tMODE", p.display(), n + 1);
            };
            out.recorded.insert(PathBuf::from(f[0]), v);
        }
        Ok(out)
    }

    fn of(&self, rel: &Path, meta: &fs::Metadata) -> (u64, u64, u32) {
        if let Some(&(u, g, m)) = self.recorded.get(rel) {
            return (u, g, m);
        }
        let mode = meta.mode() & 0o7777;
        match &self.map {
            IdMap::Subordinate {
                uid,
                gid,
                subuid,
                subgid,
                ..
            } => (
                back(meta.uid(), *uid, subuid),
                back(meta.gid(), *gid, subgid),
                mode,
            ),
            IdMap::Single { uid, gid } => (
                if meta.uid() == *uid {
                    0
                } else {
                    meta.uid() as u64
                },
                if meta.gid() == *gid {
                    0
                } else {
                    meta.gid() as u64
                },
                mode,
            ),
            IdMap::Identity => (meta.uid() as u64, meta.gid() as u64, mode),
        }
    }
}

/// A host id seen through a subordinate map: the caller is guest 0, the
/// range is guest 1..=N; anything else (nobody inside) stays as it is.
fn back(host: u32, me: u32, r: &crate::userns::idmap::Range) -> u64 {
    let h = host as u64;
    if host == me {
        0
    } else if h >= r.start && h < r.start + r.count {
        h - r.start + 1
    } else {
        h
    }
}
