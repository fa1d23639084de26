//! The apk repository provider: a system built from apk repositories
//! (`apk add --root ROOT --initdb alpine-base`, natively).

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{InstallCx, Populated, Provider, Request};
use crate::error::hinted;
use crate::specs::{Source, Spec};

/// What to bootstrap, from where, trusting which keys.
#[allow(dead_code)] // read by the bootstrap (next commit)
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// apk's arch name (the folder under each repository).
    pub apk_arch: String,
    /// Repository URLs, as `/etc/apk/repositories` lists them.
    pub repositories: Vec<String>,
    /// The shipped key set to trust (`alpine`, `adelie`).
    pub keyring: String,
    /// Extra trusted public keys (`--key FILE`).
    pub extra_keys: Vec<PathBuf>,
    pub allow_untrusted: bool,
    /// The base system and `--packages`.
    pub world: Vec<String>,
    pub branch: String,
    pub version: String,
    pub mirror: String,
}

impl Bootstrap {
    pub fn new(spec: &Spec, req: &Request) -> Result<Bootstrap> {
        let mut b = match &spec.source {
            Source::Alpine {
                alpine_arch,
                branch,
            } => {
                let branch = req.branch.clone().unwrap_or_else(|| branch.clone());
                Bootstrap {
                    apk_arch: alpine_arch.clone(),
                    repositories: ["main", "community"]
                        .iter()
                        .map(|r| format!("{}/{branch}/{r}", req.mirror))
                        .collect(),
                    keyring: "alpine".into(),
                    extra_keys: Vec::new(),
                    allow_untrusted: false,
                    world: vec!["alpine-base".into()],
                    branch,
                    version: String::new(),
                    mirror: req.mirror.clone(),
                }
            }
            Source::Apk {
                apk_arch,
                repositories,
                keyring,
                world,
                version,
            } => Bootstrap {
                apk_arch: apk_arch.clone(),
                repositories: repositories.clone(),
                keyring: keyring.clone(),
                extra_keys: Vec::new(),
                allow_untrusted: false,
                world: world.clone(),
                branch: String::new(),
                version: version.clone().unwrap_or_default(),
                mirror: String::new(),
            },
            _ if !req.repos.is_empty() => Bootstrap {
                apk_arch: spec.name.clone(),
                repositories: Vec::new(),
                keyring: String::new(),
                extra_keys: Vec::new(),
                allow_untrusted: false,
                world: Vec::new(),
                branch: String::new(),
                version: String::new(),
                mirror: String::new(),
            },
            _ => {
                return Err(hinted(
                    format!("{} has no apk repositories in its spec", spec.name),
                    format!(
                        "name them: xroot fetch {} --source apk --repo URL [--key FILE] --packages BASE-PACKAGE",
                        spec.name
                    ),
                ))
            }
        };
        if !req.repos.is_empty() {
            b.repositories = req
                .repos
                .iter()
                .map(|r| r.trim_end_matches('/').to_string())
                .collect();
        }
        b.extra_keys = req.keys.clone();
        b.allow_untrusted = req.allow_untrusted;
        for p in &req.packages {
            if !b.world.contains(p) {
                b.world.push(p.clone());
            }
        }
        if b.world.is_empty() {
            return Err(hinted(
                format!("nothing to install into {}", req.id),
                "name the base system with --packages, e.g. --packages alpine-base",
            ));
        }
        Ok(b)
    }
}

impl Provider for Bootstrap {
    fn kind(&self) -> &'static str {
        "apk"
    }

    fn populate(&self, cx: &InstallCx, _root: &Path) -> Result<Populated> {
        Err(hinted(
            format!(
                "bootstrapping {} from apk repositories is not built yet",
                cx.req.id
            ),
            "use the release tarball (the default source)",
        ))
    }
}
