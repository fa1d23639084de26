//! A verified, native Debian bootstrap: the `debian` and `debian-ports`
//! sources.
//!
//! [`populate`] fills an empty staging root the way apt trusts an archive:
//! 1. `dists/SUITE/InRelease` (else `Release` + `Release.gpg`) is verified
//!    against the keyring xroot ships (Debian's archive keys, or the ports
//!    keys; `--keyring FILE` for others) and checked for freshness
//!    (`Valid-Until`, `Date`, the suite) — [`release`];
//! 2. each `COMPONENT/binary-ARCH/Packages(.xz|.gz)` is checked against the
//!    Release's SHA256 and size, then parsed — [`packages`];
//! 3. the variant's packages and their dependencies are chosen —
//!    [`resolve`];
//! 4. each `.deb` is downloaded (in parallel, one progress bar) into a
//!    content-addressed cache shared by every arch and run
//!    (`$XROOT_HOME/cache/debs/SHA256.deb`) and checked against the index's
//!    SHA256 and size — also when it was already cached;
//! 5. every `data.tar` is unpacked natively by xroot's safe extractor into
//!    a merged-/usr tree — [`deb`];
//! 6. dpkg's database skeleton, `policy-rc.d`, apt's sources and the
//!    second-stage script are written — [`configure`].
//!
//! The caller then runs the second stage inside the sandbox (it needs the
//! guest's emulator: see `commands::fetch`). Any error leaves the staging
//! tree for the caller to delete: nothing is installed.

pub mod configure;
mod control;
mod deb;
mod download;
pub mod packages;
pub mod provider;
pub mod release;
pub mod resolve;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::error::hinted;
use crate::extract;
use crate::fetch::{stream, transport};
use crate::ui::Ui;
pub use resolve::Variant;

/// Debian's keyring (`debian-archive-keyring` 2023.3+deb12u2,
/// `/usr/share/keyrings/debian-archive-keyring.gpg`): see keys/debian/README.md.
const DEBIAN_KEYRING: &[u8] = include_bytes!("../../../keys/debian/debian-archive-keyring.gpg");
/// The ports archive's keyring (`debian-ports-archive-keyring`
/// 2025.02.01~deb12u1).
const PORTS_KEYRING: &[u8] =
    include_bytes!("../../../keys/debian/debian-ports-archive-keyring.gpg");

/// Which archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// deb.debian.org/debian: the release architectures.
    Debian,
    /// deb.debian.org/debian-ports: unofficial ports, `unstable` only.
    Ports,
}

impl Archive {
    /// `--source` / spec kind → archive.
    pub fn from_kind(kind: &str) -> Option<Archive> {
        match kind {
            "debian" => Some(Archive::Debian),
            "debian-ports" => Some(Archive::Ports),
            _ => None,
        }
    }
    pub fn kind(self) -> &'static str {
        match self {
            Archive::Debian => "debian",
            Archive::Ports => "debian-ports",
        }
    }
    pub fn default_mirror(self) -> &'static str {
        match self {
            Archive::Debian => "https://deb.debian.org/debian",
            Archive::Ports => "https://deb.debian.org/debian-ports",
        }
    }
    pub fn default_suite(self) -> &'static str {
        match self {
            Archive::Debian => "bookworm",
            Archive::Ports => "unstable",
        }
    }
    fn keyring(self) -> (&'static str, &'static [u8]) {
        match self {
            Archive::Debian => ("Debian archive keyring", DEBIAN_KEYRING),
            Archive::Ports => ("Debian ports archive keyring", PORTS_KEYRING),
        }
    }
}

/// What to bootstrap.
#[derive(Debug, Clone)]
pub struct Options {
    pub archive: Archive,
    /// Debian's name for the architecture (`s390x`, `arm64`, `mips64el`).
    pub arch: String,
    pub suite: String,
    pub mirror: String,
    pub components: Vec<String>,
    /// Trust this keyring file instead of the built-in one.
    pub keyring: Option<PathBuf>,
    pub variant: Variant,
    pub packages: Vec<String>,
    pub limits: extract::Limits,
    /// The shared `.deb` cache (`$XROOT_HOME/cache/debs`).
    pub cache: PathBuf,
}

/// What the caller records in the manifest.
#[derive(Debug, Clone)]
pub struct Populated {
    /// The signed Release's `Version` (e.g. `12.15`), else its codename.
    pub version: String,
    /// The suite (recorded as the branch).
    pub suite: String,
    /// The verified `InRelease` (or `Release`) URL.
    pub source: String,
    pub mirror: String,
    /// SHA256 of the verified Release text: what the tree was built from.
    pub release_sha256: String,
    /// Packages unpacked, `name=version`, in install order.
    pub installed: Vec<String>,
    pub files: u64,
    pub bytes: u64,
}

/// Directories made symlinks into `usr/` before unpacking (merged /usr,
/// as debootstrap and mmdebstrap make them for bookworm and later), per
/// Debian arch (debootstrap's `MERGED_DIRS` and its per-arch additions).
fn merged_dirs(arch: &str) -> &'static [&'static str] {
    match arch {
        "amd64" | "x32" => &["bin", "sbin", "lib", "lib32", "lib64", "libx32"],
        "i386" => &["bin", "sbin", "lib", "lib64", "libx32"],
        "mips" | "mipsel" | "loong64" | "ppc64" | "sparc64" => {
            &["bin", "sbin", "lib", "lib32", "lib64"]
        }
        "mips64el" | "mips64" => &["bin", "sbin", "lib", "lib32", "lib64", "libo32"],
        "powerpc" | "ppc64el" | "riscv64" | "arm64" | "alpha" => &["bin", "sbin", "lib", "lib64"],
        "s390x" => &["bin", "sbin", "lib", "lib32"],
        _ => &["bin", "sbin", "lib"],
    }
}

/// Bootstraps into `root` (an empty directory): steps 1-6 of the module
/// docs. Returns what to record; the second stage is the caller's.
pub fn populate(o: &Options, root: &Path, ui: Ui) -> Result<Populated> {
    let (keyring_name, keyring_bytes) = match &o.keyring {
        Some(p) => (
            p.display().to_string(),
            fs::read(p).map_err(|e| {
                hinted(
                    format!("cannot read --keyring {}: {e}", p.display()),
                    "give the path of an OpenPGP keyring (.gpg or .asc)",
                )
            })?,
        ),
        None => {
            let (name, bytes) = o.archive.keyring();
            (name.to_string(), bytes.to_vec())
        }
    };
    let keyring = release::Keyring::parse(&keyring_name, &keyring_bytes)?;
    let cfg = transport::Config::from_knobs();
    let t = transport::Transport::new(cfg);
    let now = SystemTime::now();
    let dists = format!("{}/dists/{}", o.mirror, o.suite);

    // 1. The signed Release.
    let inrelease = format!("{dists}/InRelease");
    ui.info(format!("verifying {inrelease}"));
    let (release_text, source) = match get_optional(&t, &inrelease, 64 << 20)? {
        Some(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| anyhow!("{inrelease} is not text"))?;
            let (text, _signer) = release::verify_inrelease(&inrelease, &text, &keyring, now)?;
            (text, inrelease)
        }
        None => {
            let url = format!("{dists}/Release");
            let Some(bytes) = get_optional(&t, &url, 64 << 20)? else {
                return Err(hinted(
                    format!("{dists} has neither InRelease nor Release"),
                    format!(
                        "check --suite {} and --mirror {} (Debian suites: bookworm, trixie, sid; ports: unstable)",
                        o.suite, o.mirror
                    ),
                ));
            };
            let sig_url = format!("{url}.gpg");
            let Some(sig) = get_optional(&t, &sig_url, 1 << 20)? else {
                return Err(hinted(
                    format!("{url} is not signed: {sig_url} is missing"),
                    "xroot installs only from signed archives",
                ));
            };
            release::verify_detached(&url, &bytes, &sig, &keyring, now)?;
            let text = String::from_utf8(bytes).map_err(|_| anyhow!("{url} is not text"))?;
            (text, url)
        }
    };
    let rel = release::Release::parse(&source, &release_text)?;
    rel.check(&source, &o.suite, now)?;
    if !rel.architectures.is_empty() && !rel.architectures.iter().any(|a| a == &o.arch) {
        return Err(hinted(
            format!(
                "{} {} has no {} packages (it has: {})",
                o.archive.kind(),
                o.suite,
                o.arch,
                rel.architectures.join(" ")
            ),
            "pick another --source (debian-ports for ports architectures) or --suite",
        ));
    }

    if let Some(c) = o
        .components
        .iter()
        .find(|c| !rel.components.is_empty() && !rel.components.contains(c))
    {
        return Err(hinted(
            format!(
                "{source} has no component {c} (it has: {})",
                rel.components.join(" ")
            ),
            "check --mirror and --suite",
        ));
    }
    // 2. The Packages indexes.
    let mut pkgs = Vec::new();
    for comp in &o.components {
        let text = packages_index(&t, &dists, comp, &o.arch, &rel, ui)?;
        let url = format!("{dists}/{comp}/binary-{}/Packages", o.arch);
        pkgs.extend(packages::parse(&url, &text, &o.arch)?);
    }

    // 3. Resolution.
    let sel = resolve::resolve(&pkgs, o.variant, &o.packages)?;
    let chosen: Vec<&packages::Package> = sel.order.iter().map(|&i| &pkgs[i]).collect();
    let total: u64 = chosen.iter().map(|p| p.size).sum();
    ui.info(format!(
        "{} {} {}: {} packages ({} MB) for the {} variant",
        o.archive.kind(),
        o.suite,
        o.arch,
        chosen.len(),
        total / 1_000_000,
        o.variant.name()
    ));

    // 4. Downloads.
    fs::create_dir_all(&o.cache).with_context(|| format!("creating {}", o.cache.display()))?;
    download::download_all(&t, &o.mirror, &o.cache, &chosen, ui)?;

    // 5. Native unpack into a merged-/usr tree.
    let usrmerge = merged_dirs(&o.arch);
    fs::create_dir_all(root.join("usr"))
        .with_context(|| format!("creating {}/usr", root.display()))?;
    for d in usrmerge {
        fs::create_dir_all(root.join("usr").join(d))
            .with_context(|| format!("creating {}/usr/{d}", root.display()))?;
        std::os::unix::fs::symlink(format!("usr/{d}"), root.join(d))
            .with_context(|| format!("creating {}/{d}", root.display()))?;
    }
    let opts = extract::Options {
        limits: o.limits,
        chown: nix::unistd::geteuid().is_root(),
        usrmerge,
    };
    let (mut files, mut bytes) = (0, 0);
    let bar = ui.bar(Some(chosen.len() as u64), "unpack");
    for p in &chosen {
        let mut opts = opts.clone();
        opts.limits.max_bytes = o.limits.max_bytes.saturating_sub(bytes);
        let r = deb::unpack(&download::cache_path(&o.cache, p), root, &opts)
            .with_context(|| format!("package {} {}", p.name, p.version))?;
        files += r.entries;
        bytes += r.bytes;
        bar.inc(1);
    }
    bar.finish();

    // 6. Ready for the second stage.
    let dpkg_version = chosen
        .iter()
        .find(|p| p.name == "dpkg")
        .map(|p| p.version.to_string())
        .ok_or_else(|| anyhow!("the package set has no dpkg; it cannot be configured"))?;
    let debs: Vec<configure::Deb<'_>> = sel
        .order
        .iter()
        .map(|&i| configure::Deb {
            name: &pkgs[i].name,
            file: download::cache_name(&pkgs[i]),
            required: sel.required.contains(&i),
        })
        .collect();
    // apt reads armored keyrings only under a `.asc` name.
    let keyring_file = if keyring_bytes.starts_with(b"-----BEGIN") {
        "xroot-archive.asc"
    } else {
        "xroot-archive.gpg"
    };
    let sources = format!(
        "deb [signed-by=/etc/apt/keyrings/{keyring_file}] {} {} {}\n",
        o.mirror,
        o.suite,
        o.components.join(" ")
    );
    configure::prepare(
        root,
        &configure::Setup {
            dpkg_version: &dpkg_version,
            sources_list: &sources,
            keyring: (keyring_file, &keyring_bytes),
            script: &configure::script(&debs),
        },
    )?;
    Ok(Populated {
        version: if rel.version.is_empty() {
            rel.codename.clone()
        } else {
            rel.version.clone()
        },
        suite: o.suite.clone(),
        source,
        mirror: o.mirror.clone(),
        release_sha256: hex::encode(Sha256::digest(release_text.as_bytes())),
        installed: chosen
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect(),
        files,
        bytes,
    })
}

/// GET `url` whole (at most `max` bytes); `None` if the server says 404
/// (or a local file is missing).
fn get_optional(t: &transport::Transport, url: &str, max: u64) -> Result<Option<Vec<u8>>> {
    let body = match t.get(url) {
        Ok(b) => b,
        Err(e)
            if e.to_string().contains("HTTP 404")
                || (transport::local_path(url).is_some()
                    && e.to_string().contains("No such file")) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    body.reader
        .take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| anyhow!("reading {url}: {e}"))?;
    if buf.len() as u64 > max {
        bail!("{url} is larger than {max} bytes");
    }
    Ok(Some(buf))
}

/// Fetches one Packages index, in the first form the Release lists that
/// the mirror has (`.xz`, `.gz`, plain), checked against its SHA256 and
/// size before it is decompressed or parsed.
fn packages_index(
    t: &transport::Transport,
    dists: &str,
    comp: &str,
    arch: &str,
    rel: &release::Release,
    ui: Ui,
) -> Result<String> {
    let base = format!("{comp}/binary-{arch}/Packages");
    let mut listed = false;
    for ext in [".xz", ".gz", ""] {
        let path = format!("{base}{ext}");
        let Some((size, sha)) = rel.sha256.get(&path) else {
            continue;
        };
        listed = true;
        let url = format!("{dists}/{path}");
        let Some(bytes) = get_optional(t, &url, *size)? else {
            continue;
        };
        ui.info(format!("verified {url}"));
        let got = hex::encode(Sha256::digest(&bytes));
        if &got != sha || bytes.len() as u64 != *size {
            return Err(hinted(
                format!(
                    "{url} does not match the signed Release: expected sha256 {sha} ({size} bytes), got {got} ({} bytes)",
                    bytes.len()
                ),
                "the mirror is inconsistent (mid-update) or tampered with; nothing was installed. Try again or another --mirror",
            ));
        }
        let mut text = String::new();
        stream::decompress(std::io::BufReader::new(&bytes[..]))
            .with_context(|| format!("reading {url}"))?
            .map_err(|k| anyhow!("{url} is {k}-compressed"))?
            .take(1 << 30)
            .read_to_string(&mut text)
            .with_context(|| format!("decompressing {url}"))?;
        return Ok(text);
    }
    Err(hinted(
        if listed {
            format!("{dists}: no form of {base} that the Release lists is on the mirror")
        } else {
            format!("{dists}/Release lists no {base}")
        },
        "the suite or component has no packages for this architecture; check --suite and the arch",
    ))
}

/// Debian's name for an xroot architecture (`dpkg --print-architecture`
/// in such a system), for the release and ports architectures that have
/// an xroot spec. `None`: Debian has no such port.
pub fn debian_arch(xroot_arch: &str) -> Option<&'static str> {
    Some(match xroot_arch {
        "x86_64" => "amd64",
        "x86" => "i386",
        "aarch64" => "arm64",
        "armhf" | "armv7" => "armhf",
        "armel" => "armel",
        "ppc64le" => "ppc64el",
        "ppc64" => "ppc64",
        "ppc" => "powerpc",
        "s390x" => "s390x",
        "mipsel" => "mipsel",
        "mips64el" => "mips64el",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        _ => return None,
    })
}
