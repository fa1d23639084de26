//! The container-image provider: `--from docker://...`, `oci:DIR`,
//! `oci-archive:FILE`, `docker-archive:FILE`. The image's layers for the
//! arch's platform are pulled, verified against their digests and applied
//! into the staging tree by [`super::oci::populate`]; the pipeline does the
//! rest as for any source. A transfer cut mid-way is retried by the
//! pipeline; layers that verified are in the layer cache by then.

use std::path::Path;

use anyhow::Result;

use super::oci::{self, ImageRef, Platform};
use super::{InstallCx, Origin, Populated, Provider};
use crate::error::hinted;
use crate::extract;

pub struct Image {
    image: ImageRef,
    platform: Platform,
}

impl Image {
    pub fn new(spec: &crate::specs::Spec, from: &str) -> Result<Image> {
        let image = ImageRef::parse(from).map_err(|e| {
            hinted(
                format!("--from {from}: {e}"),
                "write docker://[HOST/]NAME[:TAG][@sha256:HEX], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE",
            )
        })?;
        let platform = spec.oci_platform.as_deref().ok_or_else(|| {
            hinted(
                format!("{} has no container image platform", spec.name),
                format!(
                    "set oci_platform in your spec for {} (see docs/spec-format.md)",
                    spec.name
                ),
            )
        })?;
        let platform = Platform::parse(platform)
            .map_err(|e| hinted(format!("spec {}: {e}", spec.name), "fix its oci_platform"))?;
        Ok(Image { image, platform })
    }
}

impl Provider for Image {
    fn kind(&self) -> &'static str {
        "image"
    }

    fn populate(&self, cx: &InstallCx, staging_root: &Path) -> Result<Populated> {
        let opts = extract::Options {
            limits: cx.req.limits,
            chown: nix::unistd::geteuid().is_root(),
            ..Default::default()
        };
        let ocx = oci::Context {
            transport: cx.transport,
            arch: &cx.spec.name,
            platform: self.platform.clone(),
            cache: oci::cache_dir(&cx.store.cache_dir()),
            work: cx.staging.to_path_buf(),
            opts: &opts,
            ui: cx.ui,
        };
        let pulled = oci::populate(&ocx, &self.image, staging_root)?;
        let index = match &pulled.index_digest {
            Some(d) => format!(", chosen from index {d}"),
            None => String::new(),
        };
        cx.ui.info(format!(
            "{}: image {} for {}{index}; {} layers, {} from the layer cache",
            pulled.source, pulled.digest, pulled.platform, pulled.layers, pulled.cached
        ));
        Ok(Populated {
            origin: Origin {
                kind: "image".into(),
                version: pulled.tag.clone(),
                source: pulled.source.clone(),
                sha256: pulled.digest.trim_start_matches("sha256:").to_string(),
                digest: pulled.digest.clone(),
                platform: pulled.platform.clone(),
                ..Origin::default()
            },
            report: pulled.report,
            keep: None,
        })
    }
}
