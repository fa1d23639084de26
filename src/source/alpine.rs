//! The Alpine release provider: `{mirror}/{branch}/releases/{arch}/`'s
//! minirootfs tarball, found through `latest-releases.yaml` (parsed by
//! `mirror`), cross-checked with the `.sha256` file beside it *before* the
//! download, then streamed into the staging tree by [`tarball::unpack`].

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::tarball::{self, Tarball};
use super::{InstallCx, Origin, Populated, Provider, Request};
use crate::error::hinted;
use crate::specs::{Source, Spec};

pub struct Release {
    pub alpine_arch: String,
    pub branch: String,
    pub mirror: String,
}

impl Release {
    pub fn new(spec: &Spec, req: &Request) -> Result<Release> {
        let Source::Alpine {
            alpine_arch,
            branch,
        } = &spec.source
        else {
            bail!("internal error: {} has no Alpine source", spec.name);
        };
        Ok(Release {
            alpine_arch: alpine_arch.clone(),
            branch: req.branch.clone().unwrap_or_else(|| branch.clone()),
            mirror: req.mirror.clone(),
        })
    }
}

impl Provider for Release {
    fn kind(&self) -> &'static str {
        "alpine"
    }

    fn populate(&self, cx: &InstallCx, root: &Path) -> Result<Populated> {
        let (t, ui) = (cx.transport, cx.ui);
        let dir = format!(
            "{}/{}/releases/{}",
            self.mirror, self.branch, self.alpine_arch
        );
        let index_url = format!("{dir}/latest-releases.yaml");
        ui.info(format!("resolving {index_url}"));
        let yaml = match t.get_text_optional(&index_url, 1 << 20)? {
            Some(y) => y,
            None => return Err(missing_branch(&self.alpine_arch, &self.branch, &index_url)),
        };
        let rel = crate::mirror::pick_minirootfs(&yaml)
            .with_context(|| format!("reading {index_url}"))?;
        let url = format!("{dir}/{}", rel.file);
        let sha256 = rel.sha256.clone().unwrap_or_default().to_ascii_lowercase();
        // Cross-check the index with the checksum file beside the tarball.
        let sums_url = format!("{url}.sha256");
        match t.get_text_optional(&sums_url, 64 * 1024)? {
            Some(text) => {
                let listed = crate::mirror::parse_checksum_file(&text, &rel.file, 64)
                    .with_context(|| format!("reading {sums_url}"))?;
                if listed != sha256 {
                    bail!(hinted(
                        format!("checksum mismatch for {}: {index_url} says sha256 {sha256}, {sums_url} says {listed}", rel.file),
                        "the mirror is inconsistent or tampered with; try another --mirror",
                    ));
                }
            }
            None => ui.warn(format!(
                "{sums_url} is missing; verifying with the index's checksum alone"
            )),
        }
        let plan = Tarball {
            url,
            file: rel.file.clone(),
            sha256: Some(sha256),
            sha512: rel.sha512.map(|s| s.to_ascii_lowercase()),
            origin: Origin {
                kind: "alpine".into(),
                branch: rel.branch.unwrap_or_else(|| self.branch.clone()),
                version: rel.version.unwrap_or_default(),
                mirror: self.mirror.clone(),
                ..Origin::default()
            },
        };
        tarball::unpack(cx, &plan, root)
    }
}

/// Alpine's release branches that carry each arch (from Alpine's release
/// notes: an arch appears in a branch's `releases/` and stays, except
/// mips64, dropped after v3.14). Used to name the branches to try when a
/// branch lacks the arch.
pub fn branches_with(alpine_arch: &str) -> Vec<&'static str> {
    const ALL: &[&str] = &[
        "v3.12", "v3.13", "v3.14", "v3.15", "v3.16", "v3.17", "v3.18", "v3.19", "v3.20", "v3.21",
        "v3.22", "edge",
    ];
    let from_to: Option<(&str, &str)> = match alpine_arch {
        "x86_64" | "x86" | "aarch64" | "armhf" | "armv7" | "ppc64le" | "s390x" => {
            Some(("v3.12", "edge"))
        }
        "mips64" => Some(("v3.12", "v3.14")),
        "riscv64" => Some(("v3.20", "edge")),
        "loongarch64" => Some(("v3.21", "edge")),
        _ => None,
    };
    let Some((from, to)) = from_to else {
        return Vec::new();
    };
    let start = ALL.iter().position(|b| *b == from).unwrap_or(0);
    let end = ALL.iter().position(|b| *b == to).unwrap_or(ALL.len() - 1);
    ALL[start..=end].to_vec()
}

/// The error for a branch without the arch: names the branches that have it.
fn missing_branch(alpine_arch: &str, branch: &str, url: &str) -> anyhow::Error {
    let why = if url.starts_with("http") {
        "HTTP 404"
    } else {
        "no such file"
    };
    let have = branches_with(alpine_arch);
    if have.is_empty() {
        return hinted(
            format!("Alpine's {branch} has no release for {alpine_arch}: {url}: {why}"),
            "Alpine publishes no release for this arch; try --source apk --repo URL or --from URL|FILE",
        );
    }
    hinted(
        format!("Alpine's {branch} has no release for {alpine_arch}: {url}: {why}"),
        format!(
            "the branches with {alpine_arch} are {}: pass one with --branch (e.g. --branch {})",
            have.join(", "),
            have.iter()
                .rev()
                .find(|b| **b != "edge")
                .unwrap_or(&have[0])
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_for_arches() {
        assert_eq!(branches_with("mips64"), ["v3.12", "v3.13", "v3.14"]);
        assert!(branches_with("riscv64").starts_with(&["v3.20"]));
        assert!(branches_with("aarch64").contains(&"edge"));
        assert!(branches_with("ppc").is_empty());
        let e = missing_branch("mips64", "latest-stable", "u");
        let hint = crate::error::hint_of(&e).unwrap();
        assert!(
            hint.contains("v3.14") && hint.contains("--branch v3.14"),
            "{hint}"
        );
    }
}
