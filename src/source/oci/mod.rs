//! Container images as rootfs sources: `xroot fetch ARCH --from
//! docker://debian:bookworm` (or `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE`).
//!
//! [`populate`] is the one entry point: it resolves the reference to the
//! image for the arch's platform (following image indexes and Docker
//! manifest lists), then streams every layer, in order, through a reader
//! that checks its size and sha256 against the manifest's descriptor,
//! into the decompressor (gzip, zstd or none, by magic bytes) and the
//! extractor's layer mode ([`crate::extract::Layers`]: whiteouts and
//! opaque directories, everything relative to directory fds), checking
//! the uncompressed stream against the config's `diff_ids` too. Manifests
//! and configs are checked against the digest that named them before they
//! are parsed. Any mismatch is an error and the caller discards the
//! staging tree: nothing is installed.
//!
//! Layers pulled from a registry are kept, once verified, in the store's
//! layer cache (`cache/oci/blobs/sha256/HEX`), shared by every image: a
//! re-pull (or another image on the same base) downloads only the layers
//! it lacks. A cached layer is verified again as it is read.
//!
//! Where things are: [`reference`] parses references, [`registry`] speaks
//! the distribution API (with [`auth`]'s tokens and credentials),
//! [`layout`] reads images on disk, [`platform`] picks the index entry,
//! [`stream`] verifies and applies one layer, [`write`] makes image
//! archives for `xroot export --format oci`.

mod auth;
mod layout;
mod platform;
pub mod reference;
mod registry;
mod stream;
pub mod write;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};

use crate::error::{hinted, hinted_retryable};
use crate::extract;

use crate::fetch::transport::Transport;
use crate::ui::{Bar, Ui};

pub use platform::Platform;
pub use reference::{is_image, ImageRef};

/// Manifests, indexes and configs are small; anything bigger is refused.
const MAX_JSON: u64 = 8 << 20;
/// How deep indexes may nest (an index of indexes of manifests is 2).
const MAX_NESTING: usize = 4;

/// What [`populate`] needs from its caller.
pub struct Context<'a> {
    pub transport: &'a Transport,
    /// The arch, for messages.
    pub arch: &'a str,
    /// Its spec's `oci_platform`.
    pub platform: Platform,
    /// The store's layer cache directory (`cache/oci`).
    pub cache: PathBuf,
    /// A directory for partial downloads that is removed on failure (the
    /// staging directory).
    pub work: PathBuf,
    pub opts: &'a extract::Options,
    pub ui: Ui,
}

/// What was installed, for the manifest and the user.
#[derive(Debug)]
pub struct Pulled {
    /// The reference, normalized (`docker://docker.io/library/debian:bookworm`).
    pub source: String,
    /// The tag, if the reference had one.
    pub tag: String,
    /// The digest of the platform's image manifest: `--from
    /// docker://NAME@DIGEST` installs exactly this image again.
    pub digest: String,
    /// The digest of the index it was chosen from, if any.
    pub index_digest: Option<String>,
    pub platform: String,
    pub report: extract::Report,
    pub layers: usize,
    /// Layers read from the layer cache instead of downloaded.
    pub cached: usize,
}

/// The store's layer cache under `cache_dir`.
pub fn cache_dir(store_cache: &Path) -> PathBuf {
    store_cache.join("oci")
}

/// Where the image's blobs come from.
enum Src<'a> {
    Registry(registry::Registry<'a>),
    Local(layout::Local),
}

/// Populates the empty directory `root` with the image `image` names, for
/// the platform of `cx`.
pub fn populate(cx: &Context, image: &ImageRef, root: &Path) -> Result<Pulled> {
    let mut docker_archive = None;
    let (mut src, top, pinned, tag) = match image {
        ImageRef::Registry(r) => {
            cx.ui.info(format!("resolving {r}"));
            let mut reg = registry::Registry::new(cx.transport, r)?;
            let (bytes, _) = reg.manifest(r.reference(), MAX_JSON)?;
            (Src::Registry(reg), bytes, r.digest.clone(), None)
        }
        ImageRef::OciDir { dir, tag } => {
            let l = layout::Local::dir(dir)?;
            let top = l.read("index.json", MAX_JSON)?;
            (Src::Local(l), top, None, tag.clone())
        }
        ImageRef::OciArchive { file, tag } => {
            let l = layout::Local::tar(file)?;
            let top = l.read("index.json", MAX_JSON)?;
            (Src::Local(l), top, None, tag.clone())
        }
        ImageRef::DockerArchive { file } => {
            let l = layout::Local::tar(file)?;
            let (top, names) = layout::docker_manifest(&l, file)?;
            docker_archive = Some(names);
            (Src::Local(l), top, None, None)
        }
    };
    let what = image.to_string();
    // The registry's answer for a digest must be that digest.
    if let Some(want) = &pinned {
        let got = sha256_digest(&top);
        if &got != want {
            bail!(hinted(
                format!("{what}: the registry sent a manifest whose digest is {got}"),
                "the registry is broken or tampered with; nothing was installed",
            ));
        }
    }
    // A layout's own index.json is not content-addressed: no digest for it.
    let local_top = matches!(src, Src::Local(_));
    let mut digest = (!local_top).then(|| sha256_digest(&top));
    let mut bytes = top;
    let mut index_digest = None;
    let mut first = true;
    for depth in 0.. {
        if depth > MAX_NESTING {
            bail!(hinted(
                format!("{what}: indexes nest more than {MAX_NESTING} deep"),
                "this is not an image xroot can read",
            ));
        }
        let kind = json_kind(&bytes).with_context(|| format!("reading the manifest of {what}"))?;
        if kind != Kind::Index {
            break;
        }
        let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| {
            hinted(
                format!("{what}: bad image index: {e}"),
                "this is not an image xroot can read",
            )
        })?;
        let desc = pick(&index, cx, &what, if first { tag.as_deref() } else { None })?;
        if digest.is_some() {
            index_digest.get_or_insert(digest.clone().unwrap_or_default());
        }
        bytes = match &mut src {
            Src::Registry(reg) => reg.manifest(desc.digest().as_ref(), MAX_JSON)?.0,
            Src::Local(l) => read_blob(l, desc, &what)?,
        };
        check(&bytes, desc, &what, "manifest")?;
        digest = Some(desc.digest().to_string());
        first = false;
    }
    let manifest = ImageManifest::from_reader(&bytes[..]).map_err(|e| {
        hinted(
            format!("{what}: bad image manifest: {e}"),
            "this is not an image xroot can read",
        )
    })?;
    let digest = digest.unwrap_or_else(|| sha256_digest(&bytes));
    // The config: which platform the image is for, and the layers' diff_ids.
    let cdesc = manifest.config();
    let cbytes = match (&mut src, &docker_archive) {
        (Src::Registry(reg), _) => read_all(reg.blob(cdesc.digest().as_ref())?, MAX_JSON, &what)?,
        (Src::Local(l), Some(names)) => l.read(names.name(cdesc.digest().as_ref()), MAX_JSON)?,
        (Src::Local(l), None) => read_blob(l, cdesc, &what)?,
    };
    check(&cbytes, cdesc, &what, "config")?;
    let config = ImageConfiguration::from_reader(&cbytes[..]).map_err(|e| {
        hinted(
            format!("{what}: bad image config: {e}"),
            "this is not an image xroot can read",
        )
    })?;
    let (os, arch) = (config.os().to_string(), config.architecture().to_string());
    let have = Platform {
        os,
        architecture: arch,
        variant: config.variant().clone(),
    };
    if !cx
        .platform
        .fits(&have.os, &have.architecture, have.variant.as_deref())
    {
        bail!(hinted(
            format!(
                "{what} is an image for {have}, not for {} ({})",
                cx.arch, cx.platform
            ),
            format!(
                "fetch it as the arch it is for, or pick the {} image of a multi-platform reference",
                cx.platform
            ),
        ));
    }
    let diff_ids = config.rootfs().diff_ids();
    let layers = manifest.layers();
    if diff_ids.len() != layers.len() {
        bail!(hinted(
            format!(
                "{what}: the manifest lists {} layers, the config {}",
                layers.len(),
                diff_ids.len()
            ),
            "the image is broken; nothing was installed",
        ));
    }
    let mut applier = extract::Layers::new(root, cx.opts)
        .map_err(|e| anyhow::anyhow!("preparing {}: {e}", root.display()))?;
    let mut cached = 0;
    let blobs = cx.cache.join("blobs/sha256");
    for (i, (desc, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
        let d = desc.digest().to_string();
        let label = format!("layer {}/{} {}", i + 1, layers.len(), short(&d));
        let hexd = desc.digest().digest().to_string();
        let cached_path = blobs.join(&hexd);
        let from_cache = matches!(src, Src::Registry(_)) && cached_path.is_file();
        let (reader, copy): (Box<dyn Read + Send>, Option<PathBuf>) = if from_cache {
            cached += 1;
            cx.ui.info(format!("{label}: from the layer cache"));
            let f = File::open(&cached_path)
                .with_context(|| format!("reading {}", cached_path.display()))?;
            (Box::new(f), None)
        } else {
            match (&mut src, &docker_archive) {
                (Src::Registry(reg), _) => {
                    cx.ui
                        .info(format!("{label}: downloading {} bytes", desc.size()));
                    (reg.blob(&d)?, Some(cx.work.join(format!("{hexd}.part"))))
                }
                (Src::Local(l), Some(names)) => (l.open(names.name(&d))?.0, None),
                (Src::Local(l), None) => (l.open(&layout::blob_path(&d))?.0, None),
            }
        };
        let bar = if copy.is_some() {
            cx.ui.bar(Some(desc.size()), "pull")
        } else {
            Bar::hidden()
        };
        let res = stream::apply_layer(&mut applier, reader, desc, diff_id, copy.as_deref(), &bar);
        bar.finish();
        match res {
            Ok(()) => {}
            Err(e) => {
                if let Some(p) = &copy {
                    let _ = fs::remove_file(p);
                }
                if from_cache && e.downcast_ref::<stream::Mismatch>().is_some() {
                    let _ = fs::remove_file(&cached_path);
                    return Err(hinted_retryable(
                        format!(
                            "{label} of {what} in the layer cache is corrupt: {e}; it was removed"
                        ),
                        "run the fetch again to download it; nothing was installed",
                    ));
                }
                let cause = format!("{label} of {what}: {e}");
                return Err(if e.downcast_ref::<stream::Mismatch>().is_some() {
                    hinted(
                        cause,
                        "the image is corrupt or was tampered with; nothing was installed",
                    )
                } else if crate::error::is_retryable(&e) {
                    hinted_retryable(cause, "try again; the layers that arrived whole are cached")
                } else {
                    hinted(
                        cause,
                        "the layer is damaged or hostile; nothing was installed",
                    )
                });
            }
        }
        if let Some(p) = copy {
            // Verified: into the shared cache (a failure only loses the cache).
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&blobs);
            if fs::rename(&p, &cached_path).is_err() {
                let _ = fs::remove_file(&p);
            }
        }
    }
    let report = applier.finish().map_err(|e| {
        hinted(
            format!("unpacking {what}: {e}"),
            "the image is damaged or hostile; nothing was installed",
        )
    })?;
    let (source, tag) = match image {
        ImageRef::Registry(r) => (r.to_string(), r.tag.clone().unwrap_or_default()),
        ImageRef::OciDir { tag, .. } | ImageRef::OciArchive { tag, .. } => {
            (image.to_string(), tag.clone().unwrap_or_default())
        }
        ImageRef::DockerArchive { .. } => (image.to_string(), String::new()),
    };
    Ok(Pulled {
        source,
        tag,
        digest,
        index_digest,
        platform: have.to_string(),
        report,
        layers: layers.len(),
        cached,
    })
}

/// `source` pinned to `digest` when it is a registry reference (what
/// `reset` reinstalls: the image installed, not what its tag names now).
pub fn pinned(source: &str, digest: &str) -> String {
    match ImageRef::parse(source) {
        Ok(ImageRef::Registry(mut r)) if !digest.is_empty() => {
            r.tag = None;
            r.digest = Some(digest.to_string());
            r.to_string()
        }
        _ => source.to_string(),
    }
}

/// `sha256:…` of some bytes.
pub fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn short(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    format!("sha256:{}", &hex[..12.min(hex.len())])
}

#[derive(PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
}

/// Tells an index from a manifest by its content (`manifests` or `layers`);
/// refuses Docker's old schema 1.
fn json_kind(b: &[u8]) -> Result<Kind> {
    let v: serde_json::Value = serde_json::from_slice(b).context("not JSON")?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        bail!(hinted(
            "the registry sent a Docker schema 1 manifest",
            "schema 1 is deprecated and unsigned content xroot does not install; push the image again with a current tool",
        ));
    }
    if v.get("manifests").is_some() {
        Ok(Kind::Index)
    } else if v.get("layers").is_some() {
        Ok(Kind::Manifest)
    } else {
        bail!("neither an image index nor an image manifest")
    }
}

/// The entry of `index` to follow: by tag (a layout's `index.json`), else by
/// platform, else its only entry.
fn pick<'i>(
    index: &'i ImageIndex,
    cx: &Context,
    what: &str,
    tag: Option<&str>,
) -> Result<&'i Descriptor> {
    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    let entries = index.manifests();
    if let Some(tag) = tag {
        return entries
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|n| n == tag)
            })
            .ok_or_else(|| {
                hinted(
                    format!("{what} has no image tagged {tag:?}"),
                    "see the org.opencontainers.image.ref.name annotations in its index.json",
                )
            });
    }
    if entries.iter().any(|d| d.platform().is_some()) {
        return platform::choose(entries, &cx.platform).map_err(|have| {
            hinted(
                format!(
                    "{what} has no image for {} ({}); it has {have}",
                    cx.arch, cx.platform
                ),
                "fetch one of the arches it has, or another image",
            )
        });
    }
    match &entries[..] {
        [one] => Ok(one),
        [] => Err(hinted(
            format!("{what} holds no image"),
            "check the reference",
        )),
        _ => Err(hinted(
            format!(
                "{what} holds {} images and names no platforms",
                entries.len()
            ),
            "pick one with a tag: oci:DIR:TAG or oci-archive:FILE:TAG",
        )),
    }
}

/// Reads a small blob of a local image whole.
fn read_blob(l: &layout::Local, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let (r, _) = l.open(&layout::blob_path(d.digest().as_ref()))?;
    read_all(r, MAX_JSON, what)
}

fn read_all(r: Box<dyn Read + Send>, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| hinted_retryable(format!("reading {what}: {e}"), "try again"))?;
    if buf.len() as u64 > max {
        bail!(hinted(
            format!("{what}: a manifest or config larger than {max} bytes"),
            "this is not an image xroot can read",
        ));
    }
    Ok(buf)
}

/// Checks small content against the descriptor that named it.
fn check(b: &[u8], d: &Descriptor, what: &str, kind: &str) -> Result<()> {
    let got = sha256_digest(b);
    if got != d.digest().as_ref() || b.len() as u64 != d.size() {
        bail!(hinted(
            format!(
                "{what}: the {kind} {} is {} bytes with digest {got}, not the {} bytes it should be",
                d.digest(),
                b.len(),
                d.size()
            ),
            "the image is corrupt or was tampered with; nothing was installed",
        ));
    }
    Ok(())
}
