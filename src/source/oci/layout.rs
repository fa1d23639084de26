//! Images on disk: an OCI image layout directory (`oci:DIR`), the same in
//! a tar file (`oci-archive:FILE`), and `docker save` output
//! (`docker-archive:FILE`). Everything read here is checked by the caller
//! against the digests that lead to it, as registry blobs are.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use oci_spec::image::ImageConfiguration;

use super::{sha256_digest, MAX_JSON};
use crate::error::hinted;

/// Where the blobs of a local image are.
pub enum Local {
    Dir(PathBuf),
    /// A tar file and where each member's data is in it.
    Tar {
        path: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
}

impl Local {
    pub fn dir(dir: &Path) -> Result<Local> {
        if !dir.join("oci-layout").is_file() {
            return Err(hinted(
                format!("{} is not an OCI image layout (it has no oci-layout file)", dir.display()),
                "give a directory made by `skopeo copy ... oci:DIR` or `umoci`, or use oci-archive:FILE for a tar",
            ));
        }
        Ok(Local::Dir(dir.to_path_buf()))
    }

    /// Indexes the members of a tar file (no data is read yet).
    pub fn tar(path: &Path) -> Result<Local> {
        let f = File::open(path).map_err(|e| {
            hinted(
                format!("cannot read {}: {e}", path.display()),
                "check the path",
            )
        })?;
        let bad = |e: std::io::Error| {
            hinted(
                format!("{} is not a tar file: {e}", path.display()),
                "give an uncompressed image archive (as `skopeo copy ... oci-archive:FILE` or `docker save` write)",
            )
        };
        let mut ar = tar::Archive::new(f);
        let mut members = HashMap::new();
        for e in ar.entries().map_err(bad)? {
            let e = e.map_err(bad)?;
            if e.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = e.path().map_err(bad)?.to_string_lossy().into_owned();
            let name = name.trim_start_matches("./").to_string();
            members.insert(name, (e.raw_file_position(), e.size()));
        }
        Ok(Local::Tar {
            path: path.to_path_buf(),
            members,
        })
    }

    /// Opens a member (`index.json`, `blobs/sha256/HEX`) with its size.
    pub fn open(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Local::Dir(dir) => {
                let p = dir.join(name);
                let f = File::open(&p).map_err(|e| {
                    hinted(
                        format!("cannot read {}: {e}", p.display()),
                        "the image layout is incomplete",
                    )
                })?;
                let len = f
                    .metadata()
                    .with_context(|| format!("reading {}", p.display()))?
                    .len();
                Ok((Box::new(f), len))
            }
            Local::Tar { path, members } => {
                let &(at, len) = members.get(name).ok_or_else(|| {
                    hinted(
                        format!("{} has no {name}", path.display()),
                        "the image archive is incomplete",
                    )
                })?;
                let mut f =
                    File::open(path).with_context(|| format!("reading {}", path.display()))?;
                f.seek(SeekFrom::Start(at))
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok((Box::new(f.take(len)), len))
            }
        }
    }

    /// Reads a small member whole.
    pub fn read(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let (r, len) = self.open(name)?;
        if len > max {
            return Err(hinted(
                format!("{name} is {len} bytes, more than the {max} expected"),
                "this is not an image xroot can read",
            ));
        }
        let mut buf = Vec::new();
        r.take(max)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {name}"))?;
        Ok(buf)
    }
}

/// The path of a blob in a layout.
pub fn blob_path(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{hex}")
}

/// One image of `docker save`'s `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerEntry {
    pub config: String,
    pub layers: Vec<String>,
}

/// The digest a `docker save` member name carries (`HEX.json`,
/// `blobs/sha256/HEX`), if any.
pub fn digest_in_name(name: &str) -> Option<String> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && !name.ends_with("layer.tar"))
        .then(|| format!("sha256:{hex}"))
}

/// Member names of a `docker save` archive by digest.
pub(super) struct DockerNames(std::collections::HashMap<String, String>);

impl DockerNames {
    pub(super) fn name<'s>(&'s self, digest: &'s str) -> &'s str {
        self.0.get(digest).map(String::as_str).unwrap_or(digest)
    }
}

/// Turns a `docker save` archive's `manifest.json` into an image manifest
/// (the layers are uncompressed tars, so their digests are the config's
/// diff_ids), and maps digests to member names.
pub(super) fn docker_manifest(l: &Local, file: &Path) -> Result<(Vec<u8>, DockerNames)> {
    let what = format!("docker-archive:{}", file.display());
    let bad = |m: String| {
        hinted(
            format!("{what}: {m}"),
            "give an archive made by `docker save` or `podman save`",
        )
    };
    let text = l.read("manifest.json", MAX_JSON)?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&text).map_err(|e| bad(format!("bad manifest.json: {e}")))?;
    let entry = match &entries[..] {
        [one] => one,
        [] => return Err(bad("manifest.json lists no image".into())),
        [first, ..] => first,
    };
    let cbytes = l.read(&entry.config, MAX_JSON)?;
    let cdigest = digest_in_name(&entry.config).unwrap_or_else(|| sha256_digest(&cbytes));
    let config = ImageConfiguration::from_reader(&cbytes[..])
        .map_err(|e| bad(format!("bad config {}: {e}", entry.config)))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(bad(
            "manifest.json and the config disagree on the layers".into()
        ));
    }
    let mut names = std::collections::HashMap::new();
    names.insert(cdigest.clone(), entry.config.clone());
    let mut layers = Vec::new();
    for (name, diff) in entry.layers.iter().zip(diff_ids) {
        let (_, size) = l.open(name)?;
        let digest = digest_in_name(name).unwrap_or_else(|| diff.clone());
        names.insert(digest.clone(), name.clone());
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
            "digest": digest, "size": size,
        }));
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": cdigest, "size": cbytes.len(),
        },
        "layers": layers,
    });
    Ok((m.to_string().into_bytes(), DockerNames(names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_in_docker_archive_names() {
        let h = "a".repeat(64);
        assert_eq!(
            digest_in_name(&format!("{h}.json")),
            Some(format!("sha256:{h}"))
        );
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{h}")),
            Some(format!("sha256:{h}"))
        );
        assert_eq!(digest_in_name(&format!("{h}/layer.tar")), None);
        assert_eq!(digest_in_name("config.json"), None);
        assert_eq!(
            blob_path(&format!("sha256:{h}")),
            format!("blobs/sha256/{h}")
        );
    }
}
