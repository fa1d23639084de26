//! Where a rootfs comes from: one [`Provider`] per kind of source, all
//! plugged into the same install pipeline ([`pipeline`]):
//!
//! lock → acquire verified artifacts → populate a staging tree → arch
//! check → owners → manifest → atomic commit.
//!
//! A provider only does the "acquire and populate" part: it fills the empty
//! `root/` of a staging directory, verifying everything it downloads, and
//! says where the tree came from ([`Origin`], recorded in the manifest).
//! Everything before and after (locking, retries, the arch check, owners,
//! `--packages`, the manifest, the commit) is the pipeline's, identical
//! for every source.
//!
//! Providers: [`alpine::Release`] (Alpine's release tarball, the default
//! for most arches), [`tarball::Tarball`] (any tarball: `--from` or a
//! spec's pinned URL), [`apk::Bootstrap`] (a system built from apk
//! repositories, natively), [`debian::provider::Debian`] (Debian and its
//! ports, verified and bootstrapped natively), [`image::Image`] (a container image's layers,
//! `--from docker://...`). To add one: implement [`Provider`], give it a
//! kind name in [`KINDS`] and pick it in [`provider_for`].

pub mod add;
pub mod alpine;
pub mod apk;
pub mod debian;
pub mod image;
pub mod oci;
pub mod pipeline;
pub mod tarball;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::hinted;
use crate::extract;
use crate::fetch::transport::{Attempts, Transport};
use crate::specs::{Catalog, Source, Spec};
use crate::store::{RootfsId, Store};
use crate::ui::Ui;

pub use add::add_to_installed;
pub use pipeline::{check_arch, check_header, fetch, install_locked};

pub const DEFAULT_MIRROR: &str = "https://dl-cdn.alpinelinux.org/alpine";

/// The provider kinds `--source KIND` accepts (and `kind` values of the
/// manifest).
pub const KINDS: &[&str] = &[
    "alpine",
    "apk",
    "debian",
    "debian-ports",
    "tarball",
    "image",
];

/// Everything an install needs to know.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: RootfsId,
    /// `--source KIND`: another provider than the spec's default.
    pub source: Option<String>,
    /// Release branch override (`--branch`).
    pub branch: Option<String>,
    /// Alpine mirror (already resolved from `--mirror`/`$XROOT_MIRROR`).
    pub mirror: String,
    /// Bring-your-own tarball (`--from`) and its checksum (`--sha256`).
    pub from: Option<String>,
    pub sha256: Option<String>,
    /// apk repositories (`--repo`), replacing the spec's.
    pub repos: Vec<String>,
    /// Extra trusted signing keys (`--key`), besides the shipped ones.
    pub keys: Vec<PathBuf>,
    /// Accept an unsigned or badly signed apk index (`--allow-untrusted`).
    pub allow_untrusted: bool,
    /// Debian sources: `--suite`, `--keyring`, `--variant`, and the
    /// `--mirror` given for this fetch (else the archive's own).
    pub suite: Option<String>,
    pub keyring: Option<PathBuf>,
    pub variant: Option<String>,
    pub debian_mirror: Option<String>,
    pub force: bool,
    pub limits: extract::Limits,
    /// Packages to add before the commit; recorded in the manifest.
    pub packages: Vec<String>,
    /// Recorded as the tree's origin instead of where it is read from:
    /// `reset` reinstalls from the cached tarball but the rootfs still
    /// comes from the release it was first fetched from.
    pub record_as: Option<Origin>,
}

impl Request {
    /// A request for `id` with every option at its default.
    pub fn new(id: RootfsId, mirror: String, limits: extract::Limits) -> Request {
        Request {
            id,
            source: None,
            branch: None,
            mirror,
            from: None,
            sha256: None,
            repos: Vec::new(),
            keys: Vec::new(),
            allow_untrusted: false,
            suite: None,
            keyring: None,
            variant: None,
            debian_mirror: None,
            force: false,
            limits,
            packages: Vec::new(),
            record_as: None,
        }
    }
}

/// Where a rootfs comes from, as recorded in its manifest.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The provider kind (one of [`KINDS`], or another engineer's).
    pub kind: String,
    /// The release branch, when the source has one.
    pub branch: String,
    /// Distribution version (`3.20.3`), when known.
    pub version: String,
    /// What was read: a tarball URL or path, or the first repository.
    pub source: String,
    /// The mirror, for Alpine sources.
    pub mirror: String,
    /// The sha256 of the tarball, if the tree came from one.
    pub sha256: String,
    /// apk repositories the tree was built from (written to its
    /// `/etc/apk/repositories` too).
    pub repositories: Vec<String>,
    /// A container image's manifest digest and platform (else empty).
    pub digest: String,
    pub platform: String,
}

/// What a provider did to the staging tree.
#[derive(Debug, Default)]
pub struct Populated {
    pub origin: Origin,
    /// What unpacking did and did not do (owners not applied, skipped entries).
    pub report: extract::Report,
    /// A verified download to keep in the cache: (where it is in the
    /// staging dir, where it goes). Kept only if the install commits.
    pub keep: Option<(PathBuf, PathBuf)>,
}

/// Runs a command inside a staging tree through the sandbox, under the
/// guest's emulator (install scripts, triggers); returns its exit status.
/// Given by the command layer, which knows how to start a sandbox.
pub type GuestRun<'a> = &'a (dyn Fn(&Path, &[String]) -> Result<i32> + Sync);

/// What a provider gets: the request and the means to fulfil it.
pub struct InstallCx<'a> {
    pub store: &'a Store,
    pub catalog: &'a Catalog,
    pub spec: &'a Spec,
    pub req: &'a Request,
    pub ui: Ui,
    pub transport: &'a Transport,
    /// One budget of requests for the whole install (see `transport::Attempts`).
    pub attempts: &'a Attempts,
    /// The staging directory (`root` is its `root/`): a provider may keep
    /// scratch files here; they vanish with it.
    pub staging: &'a Path,
    /// Runs programs in the staging tree (install scripts); `None` where
    /// no sandbox can be started.
    pub guest: Option<GuestRun<'a>>,
}

/// One kind of rootfs source.
pub trait Provider: Sync {
    /// The kind name (`alpine`, `apk`, `tarball`, ...), recorded in the manifest.
    fn kind(&self) -> &'static str;
    /// Fills the empty directory `staging_root` with a verified tree.
    fn populate(&self, cx: &InstallCx, staging_root: &Path) -> Result<Populated>;
}

/// The mirror from `--mirror` (or `$XROOT_MIRROR`, through clap), else
/// Alpine's CDN.
pub fn mirror_from(arg: Option<&str>) -> String {
    arg.filter(|a| !a.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Picks the provider for a request: `--from` is a tarball, `--source KIND`
/// names one, else the spec's `[source]` decides.
pub fn provider_for(spec: &Spec, req: &Request, store_cache: &Path) -> Result<Box<dyn Provider>> {
    if let Some(from) = req.from.as_deref().filter(|f| oci::is_image(f)) {
        return match req.source.as_deref() {
            None | Some("image") => Ok(Box::new(image::Image::new(spec, from)?)),
            Some(k) => Err(hinted(
                format!("--from {from} and --source {k} name two different sources"),
                "give one: --from IMAGE, or --source KIND",
            )),
        };
    }
    if let Some(from) = &req.from {
        match req.source.as_deref() {
            None | Some("tarball") => return Ok(Box::new(tarball::Tarball::from_arg(from, req)?)),
            Some(k) => {
                return Err(hinted(
                    format!("--from and --source {k} name two different sources"),
                    "give one: --from URL|FILE for a tarball, or --source KIND",
                ))
            }
        }
    }
    let kind = match req.source.as_deref() {
        Some(k) => k,
        None => spec.source.kind(),
    };
    match (kind, &spec.source) {
        ("alpine", Source::Alpine { .. }) => Ok(Box::new(alpine::Release::new(spec, req)?)),
        ("apk", _) => Ok(Box::new(apk::Bootstrap::new(spec, req)?)),
        ("debian" | "debian-ports", _) => Ok(Box::new(debian::provider::Debian::new(
            spec,
            req,
            kind,
            store_cache.join("debs"),
        )?)),
        ("tarball", Source::Tarball { .. }) => Ok(Box::new(tarball::Tarball::from_spec(spec)?)),
        ("tarball", _) => Err(hinted(
            format!("{} has no tarball source", spec.name),
            format!(
                "give one: xroot fetch {} --from URL|FILE --sha256 HEX",
                spec.name
            ),
        )),
        ("alpine", _) => Err(hinted(
            format!("Alpine publishes no release for {}", spec.name),
            format!(
                "try another source: xroot fetch {} --source apk --repo URL, or --from URL|FILE",
                spec.name
            ),
        )),
        ("image", _) => Err(hinted(
            "--source image needs the image: --from docker://NAME[:TAG], oci:DIR, ...",
            format!(
                "e.g. xroot fetch {} --from docker://debian:bookworm",
                spec.name
            ),
        )),
        (_, Source::None { hint }) if req.source.is_none() => Err(hinted(
            format!("there is no known rootfs source for {}", spec.name),
            hint.clone(),
        )),
        (k, _) => Err(hinted(
            format!("unknown source kind {k:?}"),
            format!("--source takes one of: {}", KINDS.join(", ")),
        )),
    }
}
