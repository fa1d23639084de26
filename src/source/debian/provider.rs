//! The Debian-archive provider (`--source debian`, `--source
//! debian-ports`, and the spec default of Debian-only arches): the first
//! stage ([`super::populate`]: verify InRelease, Packages and every .deb,
//! resolve, unpack natively) and then the second stage, dpkg configuring
//! the packages inside the staging tree under the guest's emulator
//! (through the pipeline's guest runner, the sandbox).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{configure, Archive, Options};
use crate::error::hinted;
use crate::source::{InstallCx, Origin, Populated, Provider, Request};
use crate::specs::{Source, Spec};

pub struct Debian {
    kind: &'static str,
    opts: Options,
}

impl Debian {
    /// The bootstrap `req` asks for (`kind` is `debian` or `debian-ports`).
    pub fn new(spec: &Spec, req: &Request, kind: &str, cache: PathBuf) -> Result<Debian> {
        let archive = Archive::from_kind(kind).ok_or_else(|| {
            hinted(
                format!("unknown Debian source {kind:?}"),
                "use debian or debian-ports",
            )
        })?;
        let from_spec = match &spec.source {
            Source::Debian {
                archive: a,
                debian_arch,
                suite,
            } if Archive::from_kind(a) == Some(archive) => {
                Some((debian_arch.as_str(), suite.as_deref()))
            }
            Source::Debian { debian_arch, .. } => Some((debian_arch.as_str(), None)),
            _ => None,
        };
        let arch = from_spec
            .map(|(a, _)| a)
            .or(super::debian_arch(&spec.name))
            .ok_or_else(|| {
                hinted(
                    format!("Debian has no architecture for {}", spec.name),
                    "see `xroot list` and the README for the arches Debian and its ports carry",
                )
            })?;
        if req.branch.is_some() {
            return Err(hinted(
                "--branch is an Alpine release branch",
                "for Debian, name the suite with --suite (e.g. bookworm, trixie, unstable)",
            ));
        }
        let suite = req
            .suite
            .clone()
            .or_else(|| from_spec.and_then(|(_, s)| s.map(String::from)))
            .unwrap_or_else(|| archive.default_suite().to_string());
        // `--mirror` (or $XROOT_MIRROR) names an Alpine mirror unless it was
        // given for this fetch: the default Alpine CDN means "not given".
        let mirror = match &req.debian_mirror {
            Some(m) => m.trim_end_matches('/').to_string(),
            None => archive.default_mirror().to_string(),
        };
        Ok(Debian {
            kind: archive.kind(),
            opts: Options {
                archive,
                arch: arch.to_string(),
                suite,
                mirror,
                components: vec!["main".into()],
                keyring: req.keyring.clone(),
                variant: req
                    .variant
                    .as_deref()
                    .map(str::parse)
                    .transpose()?
                    .unwrap_or_default(),
                packages: req.packages.clone(),
                limits: req.limits,
                cache,
            },
        })
    }
}

impl Provider for Debian {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn populate(&self, cx: &InstallCx, staging_root: &Path) -> Result<Populated> {
        let p = super::populate(&self.opts, staging_root, cx.ui)?;
        // The second stage reads the verified .debs from inside the tree:
        // copies (not links) of the cache's, so no maintainer script can
        // change what the cache holds; removed again below.
        copy_debs(&self.opts.cache, staging_root)?;
        let Some(guest) = cx.guest else {
            return Err(hinted(
                "a Debian bootstrap needs its second stage (dpkg inside the guest), which cannot run here",
                "run it as `xroot fetch ARCH --source debian`",
            ));
        };
        cx.ui.info(format!(
            "configuring {}: dpkg installs the packages inside the guest (second stage)",
            cx.req.id
        ));
        let argv: Vec<String> = [
            "/bin/sh",
            "-c",
            "exec /bin/sh \"$0\" >&2",
            &format!("/{}", configure::SCRIPT),
        ]
        .map(String::from)
        .to_vec();
        let status = guest(staging_root, &argv)
            .with_context(|| format!("running the second stage in {}", staging_root.display()))?;
        remove_debs(staging_root);
        configure::cleanup(staging_root)?;
        if status != 0 {
            let subordinate = nix::unistd::geteuid().is_root()
                || matches!(
                    crate::userns::IdMap::for_caller(),
                    crate::userns::IdMap::Subordinate { .. }
                );
            let hint = if subordinate {
                "see dpkg's messages above; nothing was installed".to_string()
            } else {
                "without subordinate ids dpkg cannot give files their owners (root:shadow, ...): \
                 add a range for your user in /etc/subuid and /etc/subgid (see `xroot doctor`) \
                 or run as root; nothing was installed"
                    .to_string()
            };
            return Err(hinted(
                format!(
                    "the Debian second stage (dpkg) failed in {} with exit status {status}",
                    cx.req.id
                ),
                hint,
            ));
        }
        cx.ui.info(format!(
            "{}: {} packages, {} files, {} MB",
            cx.req.id,
            p.installed.len(),
            p.files,
            p.bytes / 1_000_000
        ));
        Ok(Populated {
            origin: Origin {
                kind: self.kind.to_string(),
                branch: p.suite,
                version: p.version,
                source: p.source,
                mirror: p.mirror,
                sha256: p.release_sha256,
                ..Origin::default()
            },
            report: crate::extract::Report::default(),
            keep: None,
        })
    }
}

/// Copies the `.deb`s the second-stage script names from the cache into
/// the tree's `DEBS_IN_GUEST`, through the tree's descriptors (a package
/// may have planted symlinks on the way).
fn copy_debs(cache: &Path, root: &Path) -> Result<()> {
    for name in script_debs(root)? {
        let src = cache.join(&name);
        let data = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        let rel = format!(
            "{}/{name}",
            configure::DEBS_IN_GUEST.trim_start_matches('/')
        );
        configure::write(root, &rel, &data, 0o644)?;
    }
    Ok(())
}

/// Removes the copies again (the directory itself goes in `cleanup`).
fn remove_debs(root: &Path) {
    let Ok(tree) = crate::rootfs::Tree::open(root) else {
        return;
    };
    let rel = Path::new(configure::DEBS_IN_GUEST.trim_start_matches('/'));
    let Ok(dir) = tree.open_beneath(
        rel,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
    ) else {
        return;
    };
    for name in script_debs(root).unwrap_or_default() {
        let _ = rustix::fs::unlinkat(&dir, name.as_str(), rustix::fs::AtFlags::empty());
    }
}

/// The file names under `DEBS_IN_GUEST` that the script installs.
fn script_debs(root: &Path) -> Result<Vec<String>> {
    let tree = crate::rootfs::Tree::open(root)?;
    let fd = tree
        .open_beneath(Path::new(configure::SCRIPT), rustix::fs::OFlags::RDONLY)
        .with_context(|| format!("opening {} in {}", configure::SCRIPT, root.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text)
        .context("reading the second-stage script")?;
    let prefix = format!("{}/", configure::DEBS_IN_GUEST);
    let mut names: Vec<String> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(prefix.as_str()))
        .filter(|n| !n.is_empty() && !n.contains('/') && n.ends_with(".deb"))
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
