//! Writing a tree out as a container image (`xroot export --format oci`
//! or `docker-archive`): one layer (the tree's tar, made by the caller),
//! an image config with the arch's platform (`os`, `architecture`,
//! `variant` from the spec's `oci_platform`) and the layer's `diff_id`, a
//! manifest, and the index, packed in a tar as `skopeo copy ...
//! oci-archive:` and `podman save` write them. `podman load`, `skopeo copy
//! oci-archive:FILE docker://...` and `xroot fetch --from` read them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::image::{
    ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, RootFsBuilder, SCHEMA_VERSION,
};

use super::{sha256_digest, Platform};

/// The layer the caller wrote, as a file.
pub struct Layer<'a> {
    pub path: &'a Path,
    /// Digest and size of the file (compressed for OCI, plain for Docker).
    pub digest: String,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
}

/// Which archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An OCI image layout in a tar; the layer gzip-compressed.
    OciArchive,
    /// `docker save`'s format; the layer a plain tar.
    DockerArchive,
}

/// What the image is.
pub struct Image<'a> {
    pub platform: &'a Platform,
    /// `NAME:TAG` (`xroot/s390x:latest`): the OCI `ref.name` annotation
    /// and Docker's `RepoTags`.
    pub name: &'a str,
    /// RFC 3339.
    pub created: &'a str,
}

fn err(e: oci_spec::OciSpecError) -> anyhow::Error {
    anyhow::anyhow!("building the image metadata: {e}")
}

/// The image config: platform, the shell as command, the layer.
fn config(img: &Image, layer: &Layer) -> Result<Vec<u8>> {
    let mut b = ImageConfigurationBuilder::default()
        .created(img.created.to_string())
        .architecture(img.platform.architecture.as_str())
        .os(img.platform.os.as_str())
        .config(
            ConfigBuilder::default()
                .env(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                ])
                .cmd(vec!["/bin/sh".to_string()])
                .build()
                .map_err(err)?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer.diff_id.clone()])
                .build()
                .map_err(err)?,
        )
        .history(vec![HistoryBuilder::default()
            .created(img.created.to_string())
            .created_by(concat!(
                "xroot export (xroot ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .map_err(err)?]);
    if let Some(v) = &img.platform.variant {
        b = b.variant(v.as_str());
    }
    Ok(b.build()
        .map_err(err)?
        .to_string()
        .map_err(err)?
        .into_bytes())
}

/// Writes the archive to `out`.
pub fn write(out: impl Write, kind: Kind, img: &Image, layer: &Layer) -> Result<()> {
    let config = config(img, layer)?;
    let cdigest = sha256_digest(&config);
    let mut tar = tar::Builder::new(out);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut add = |name: &str, size: u64, data: &mut dyn Read| -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append_data(&mut h, name, data)
    };
    let layer_file =
        File::open(layer.path).with_context(|| format!("reading {}", layer.path.display()))?;
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let w = |e: io::Error| anyhow::anyhow!("writing the image archive: {e}");
    match kind {
        Kind::OciArchive => {
            let layout = OciLayoutBuilder::default()
                .image_layout_version("1.0.0")
                .build()
                .map_err(err)?;
            let layout = serde_json::to_vec(&layout)?;
            let manifest = ImageManifestBuilder::default()
                .schema_version(SCHEMA_VERSION)
                .media_type(MediaType::ImageManifest)
                .config(
                    DescriptorBuilder::default()
                        .media_type(MediaType::ImageConfig)
                        .digest(parse_digest(&cdigest)?)
                        .size(config.len() as u64)
                        .build()
                        .map_err(err)?,
                )
                .layers(vec![DescriptorBuilder::default()
                    .media_type(MediaType::ImageLayerGzip)
                    .digest(parse_digest(&layer.digest)?)
                    .size(layer.size)
                    .build()
                    .map_err(err)?])
                .build()
                .map_err(err)?
                .to_string()
                .map_err(err)?
                .into_bytes();
            let mdigest = sha256_digest(&manifest);
            let platform = oci_spec::image::PlatformBuilder::default()
                .architecture(img.platform.architecture.as_str())
                .os(img.platform.os.as_str());
            let platform = match &img.platform.variant {
                Some(v) => platform.variant(v.as_str()),
                None => platform,
            };
            let annotations: std::collections::HashMap<String, String> = [(
                "org.opencontainers.image.ref.name".to_string(),
                img.name.to_string(),
            )]
            .into_iter()
            .collect();
            let index = ImageIndexBuilder::default()
                .schema_version(SCHEMA_VERSION)
                .media_type(MediaType::ImageIndex)
                .manifests(vec![DescriptorBuilder::default()
                    .media_type(MediaType::ImageManifest)
                    .digest(parse_digest(&mdigest)?)
                    .size(manifest.len() as u64)
                    .platform(platform.build().map_err(err)?)
                    .annotations(annotations)
                    .build()
                    .map_err(err)?])
                .build()
                .map_err(err)?
                .to_string()
                .map_err(err)?
                .into_bytes();
            add("oci-layout", layout.len() as u64, &mut &layout[..]).map_err(w)?;
            add(
                &blob(&layer.digest),
                layer.size,
                &mut layer_file.take(layer.size),
            )
            .map_err(w)?;
            add(&blob(&cdigest), config.len() as u64, &mut &config[..]).map_err(w)?;
            add(&blob(&mdigest), manifest.len() as u64, &mut &manifest[..]).map_err(w)?;
            add("index.json", index.len() as u64, &mut &index[..]).map_err(w)?;
        }
        Kind::DockerArchive => {
            let chex = cdigest.trim_start_matches("sha256:");
            let lhex = layer.digest.trim_start_matches("sha256:");
            let manifest = serde_json::to_vec(&serde_json::json!([{
                "Config": format!("{chex}.json"),
                "RepoTags": [img.name],
                "Layers": [format!("{lhex}/layer.tar")],
            }]))?;
            add(
                &format!("{chex}.json"),
                config.len() as u64,
                &mut &config[..],
            )
            .map_err(w)?;
            add(
                &format!("{lhex}/layer.tar"),
                layer.size,
                &mut layer_file.take(layer.size),
            )
            .map_err(w)?;
            add("manifest.json", manifest.len() as u64, &mut &manifest[..]).map_err(w)?;
        }
    }
    tar.into_inner().and_then(|mut o| o.flush()).map_err(w)?;
    Ok(())
}

fn parse_digest(d: &str) -> Result<oci_spec::image::Digest> {
    d.parse().map_err(err)
}
