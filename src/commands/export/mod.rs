//! `xroot export ARCH[@NAME] FILE [--format tar|oci|docker-archive]`: the
//! installed tree as a tarball that `xroot fetch ARCH --from FILE` imports
//! again, here or on another machine, or as a one-layer container image
//! (`podman load -i FILE`, `skopeo copy oci-archive:FILE docker://...`).
//!
//! The archive holds what the guest sees: modes, owners (as the guest knows
//! them, see [`Owners`]), mtimes, symlinks (never followed), hard links and
//! device nodes, read relative to directory fds ([`tree`]). It is written
//! to `FILE.tmp` and renamed into place once complete, so `FILE` is never
//! a truncated archive.

mod owners;
mod tree;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::cli::ExportFormat;
use crate::error::hinted;
use crate::source::oci::{self, write as image};
use crate::specs::Spec;
use crate::store::RootfsId;
use owners::Owners;
use tree::{tar_tree, Report};

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

pub fn export(ctx: &Ctx, target: &str, file: &Path, kind: ExportFormat) -> Result<()> {
    let (arch, name) = RootfsId::parse(target)?;
    let spec = ctx.catalog.resolve(&arch)?;
    let id = RootfsId {
        arch: spec.name.clone(),
        name,
    };
    let format = match kind {
        ExportFormat::Tar => Some(Format::of(file)?),
        ExportFormat::Oci | ExportFormat::DockerArchive => None,
    };
    let platform = match format {
        Some(_) => None,
        None => Some(platform_of(spec)?),
    };
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
    let result = match (format, &platform) {
        (Some(format), _) => write_archive(&root, &tmp, format, &owners),
        (None, Some(platform)) => {
            let kind = match kind {
                ExportFormat::DockerArchive => image::Kind::DockerArchive,
                _ => image::Kind::OciArchive,
            };
            let name = format!("xroot/{}:latest", id.dir_name().replace('@', "-"));
            let img = image::Image {
                platform,
                name: &name,
                created: &crate::store::now_rfc3339(),
            };
            write_image(&root, &tmp, kind, &img, &owners)
        }
        (None, None) => Err(anyhow::anyhow!(
            "internal error: an image export without a platform"
        )),
    };
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
        ctx.ui.info(format!("skipped {}: {why}", tree::shown(p)));
    }
    ctx.ui.info(format!(
        "exported {id} ({} entries) to {} ({bytes} bytes, sha256 {sha256})",
        report.entries,
        file.display()
    ));
    match (&platform, kind) {
        (None, _) => ctx.ui.info(format!(
            "import it with: xroot fetch {}@NAME --from {} --sha256 {sha256}",
            id.arch,
            file.display()
        )),
        (Some(p), ExportFormat::DockerArchive) => ctx.ui.info(format!(
            "a {p} image: load it with `podman load -i {0}` or `docker load -i {0}`",
            file.display()
        )),
        (Some(p), _) => ctx.ui.info(format!(
            "a {p} image: load it with `podman load -i {0}`, push it with `skopeo copy oci-archive:{0} docker://REGISTRY/NAME:TAG`",
            file.display()
        )),
    }
    Ok(())
}

/// The container platform of `spec`'s images.
fn platform_of(spec: &Spec) -> Result<oci::Platform> {
    let p = spec.oci_platform.as_deref().ok_or_else(|| {
        hinted(
            format!("{} has no container image platform", spec.name),
            format!(
                "set oci_platform in your spec for {} (see docs/spec-format.md), or export --format tar",
                spec.name
            ),
        )
    })?;
    oci::Platform::parse(p)
        .map_err(|e| hinted(format!("spec {}: {e}", spec.name), "fix its oci_platform"))
}

/// Creates `path` for writing: new, 0600 (the archive may hold the guest's
/// secrets: /etc/shadow, keys), never through a symlink.
fn create_private(path: &Path) -> Result<File> {
    let _ = fs::remove_file(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Writes the tree as a one-layer image to `tmp`: the layer first to
/// `tmp.layer` (its digests are needed before the manifest), then the
/// archive around it. Returns the archive's size and sha256.
fn write_image(
    root: &Path,
    tmp: &Path,
    kind: image::Kind,
    img: &image::Image,
    owners: &Owners,
) -> Result<(u64, String, Report)> {
    let mut layer_name = tmp.as_os_str().to_owned();
    layer_name.push(".layer");
    let layer_path = PathBuf::from(layer_name);
    let result = (|| {
        let werr = |e: io::Error| {
            anyhow::Error::new(e).context(format!("writing {}", layer_path.display()))
        };
        let mut out = Hashing::new(BufWriter::new(create_private(&layer_path)?));
        // The diff_id is the uncompressed tar's digest.
        let (report, diff) = match kind {
            image::Kind::OciArchive => {
                let mut gz =
                    flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
                let mut plain = Hashing::new(&mut gz);
                let r = tar_tree(root, &mut plain, owners)?;
                let diff = plain.hash.finalize();
                gz.finish().map_err(werr)?;
                (r, diff)
            }
            image::Kind::DockerArchive => {
                let mut plain = Hashing::new(&mut out);
                let r = tar_tree(root, &mut plain, owners)?;
                (r, plain.hash.finalize())
            }
        };
        let Hashing { inner, hash, bytes } = out;
        inner.into_inner().map_err(|e| werr(e.into_error()))?;
        let layer = image::Layer {
            path: &layer_path,
            digest: format!("sha256:{}", hex::encode(hash.finalize())),
            size: bytes,
            diff_id: format!("sha256:{}", hex::encode(diff)),
        };
        let mut out = Hashing::new(BufWriter::new(create_private(tmp)?));
        image::write(&mut out, kind, img, &layer)?;
        let (bytes, sha256) = finish(out, tmp)?;
        Ok((bytes, sha256, report))
    })();
    let _ = fs::remove_file(&layer_path);
    result
}

/// Flushes and syncs the file under `out`: (its size, its sha256).
fn finish(out: Hashing<BufWriter<File>>, path: &Path) -> Result<(u64, String)> {
    let Hashing { inner, hash, bytes } = out;
    let werr = |e: io::Error| anyhow::Error::new(e).context(format!("writing {}", path.display()));
    let f = inner.into_inner().map_err(|e| werr(e.into_error()))?;
    f.sync_all().map_err(werr)?;
    Ok((bytes, hex::encode(hash.finalize())))
}

/// Writes the tree under `root` to a new file `tmp` (its parent directory
/// synced after), returning its size and sha256.
fn write_archive(
    root: &Path,
    tmp: &Path,
    format: Format,
    owners: &Owners,
) -> Result<(u64, String, Report)> {
    let mut out = Hashing::new(BufWriter::new(create_private(tmp)?));
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
    let (bytes, sha256) = finish(out, tmp)?;
    Ok((bytes, sha256, report))
}

/// Counts and hashes what goes to the file.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
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
