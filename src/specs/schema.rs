//! The spec format: one `rootfs-specs/*.toml` file per architecture
//! (documented in `docs/spec-format.md`), and the checks a spec must pass.
//!
//! Self-contained (serde and std only) because `build.rs` includes this
//! file too: it parses and checks the built-in specs at build time, so a
//! broken spec fails the build and xroot starts with them ready-made.

use serde::Deserialize;

/// One architecture.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Canonical name, as used on the command line and in the store.
    pub name: String,
    /// Other names users type for it (`arm64`, `amd64`, `ppc64el`, ...).
    #[serde(default)]
    pub aliases: Vec<String>,
    pub description: String,
    /// What `uname -m` reports inside the guest.
    pub uname: String,
    /// qemu-user target name: the emulator is `qemu-<qemu>-static`.
    pub qemu: String,
    pub binfmt: Magic,
    pub source: Source,
    /// The platform of this arch's container images, `OS/ARCH[/VARIANT]`
    /// with Go's names (`linux/arm/v7`): which image `fetch --from
    /// docker://...` picks from a multi-platform index, and what `export
    /// --format oci` writes into the image config.
    #[serde(default)]
    pub oci_platform: Option<String>,
}

/// The binfmt_misc magic and mask (offset 0), as qemu's own
/// `scripts/qemu-binfmt-conf.sh` defines them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawMagic")]
pub struct Magic {
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMagic {
    magic: String,
    mask: String,
}

impl TryFrom<RawMagic> for Magic {
    type Error = String;
    fn try_from(raw: RawMagic) -> Result<Self, String> {
        let magic = decode_hex(&raw.magic).map_err(|e| format!("binfmt.magic: {e}"))?;
        let mask = decode_hex(&raw.mask).map_err(|e| format!("binfmt.mask: {e}"))?;
        if magic.len() != mask.len() {
            return Err(format!(
                "binfmt.magic is {} bytes but binfmt.mask is {}; they must be the same length",
                magic.len(),
                mask.len()
            ));
        }
        if magic.len() < 20 || magic.len() > 128 {
            return Err(format!(
                "binfmt.magic is {} bytes; it must cover the ELF header up to e_machine (20..=128 bytes)",
                magic.len()
            ));
        }
        Ok(Magic { magic, mask })
    }
}

impl Magic {
    /// Does a file starting with `header` match, as the kernel tests it
    /// (the mask applies to both sides: qemu's masks clear bits the magic sets).
    pub fn matches(&self, header: &[u8]) -> bool {
        header.len() >= self.magic.len()
            && self
                .magic
                .iter()
                .zip(&self.mask)
                .zip(header)
                .all(|((m, k), h)| h & k == m & k)
    }
}

/// Where a rootfs for this arch comes from by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// An Alpine release: `{mirror}/{branch}/releases/{alpine_arch}/latest-releases.yaml`.
    Alpine {
        alpine_arch: String,
        #[serde(default = "default_branch")]
        branch: String,
    },
    /// A plain tarball with a pinned checksum, or a checksum file to read it from.
    Tarball {
        url: String,
        #[serde(default)]
        sha256: Option<String>,
        #[serde(default)]
        sha256_url: Option<String>,
        #[serde(default)]
        version: Option<String>,
    },
    /// A system built from apk repositories (`xroot fetch ARCH --source apk`
    /// for an Alpine arch; the default for an arch whose distribution
    /// publishes no rootfs tarball).
    Apk {
        /// apk's name of the arch: the folder under each repository.
        apk_arch: String,
        /// Repository URLs (apk's `/etc/apk/repositories` lines).
        repositories: Vec<String>,
        /// The shipped key set that signs these repositories (`keys/<keyring>/`).
        keyring: String,
        /// What to install: the distribution's base system.
        world: Vec<String>,
        #[serde(default)]
        version: Option<String>,
    },
    /// A Debian bootstrap (`src/source/debian/`) from `archive` (`debian`, or
    /// `debian-ports` for the ports archive), where the arch is called
    /// `debian_arch`; `suite` defaults to bookworm (ports: unstable).
    Debian {
        #[serde(default = "default_archive")]
        archive: String,
        debian_arch: String,
        #[serde(default)]
        suite: Option<String>,
    },
    /// No known source: the user brings their own (`--from`); `hint` says where to look.
    None { hint: String },
}

impl Source {
    /// The provider kind this source names (`--source KIND` picks another).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Alpine { .. } => "alpine",
            Source::Tarball { .. } => "tarball",
            Source::Apk { .. } => "apk",
            Source::Debian { archive, .. } if archive == "debian-ports" => "debian-ports",
            Source::Debian { .. } => "debian",
            Source::None { .. } => "none",
        }
    }
}

fn default_archive() -> String {
    "debian".into()
}

fn default_branch() -> String {
    "latest-stable".into()
}

/// Checks one spec read from `file` beyond what its type enforces.
pub fn check_file(file: &str, spec: &Spec) -> Result<(), String> {
    if file.strip_suffix(".toml") != Some(spec.name.as_str()) {
        return Err(format!(
            "rootfs-specs/{file} names arch {:?}; the file must be named after it",
            spec.name
        ));
    }
    if let Some(p) = &spec.oci_platform {
        let parts: Vec<&str> = p.split('/').collect();
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|w| word(w)) {
            return Err(format!(
                "rootfs-specs/{file}: oci_platform {p:?} is not OS/ARCH[/VARIANT] with Go's names (e.g. linux/arm/v7)"
            ));
        }
    }
    if let Source::Tarball {
        sha256: None,
        sha256_url: None,
        ..
    } = &spec.source
    {
        return Err(format!(
            "rootfs-specs/{file}: a tarball source needs sha256 or sha256_url"
        ));
    }
    if let Source::Apk {
        repositories,
        world,
        ..
    } = &spec.source
    {
        if repositories.is_empty() || world.is_empty() {
            return Err(format!(
                "rootfs-specs/{file}: an apk source needs repositories and world"
            ));
        }
    }
    if let Source::Debian { archive, .. } = &spec.source {
        if archive != "debian" && archive != "debian-ports" {
            return Err(format!(
                "rootfs-specs/{file}: source.archive is {archive:?}; use \"debian\" or \"debian-ports\""
            ));
        }
    }
    Ok(())
}

/// Names and aliases must be unique across `specs` (case-insensitively).
pub fn check_names(specs: &[Spec]) -> Result<(), String> {
    // A plain scan: ~80 names.
    let names: Vec<(&str, &str)> = specs
        .iter()
        .flat_map(|s| {
            std::iter::once(&s.name)
                .chain(&s.aliases)
                .map(move |n| (n.as_str(), s.name.as_str()))
        })
        .collect();
    for (i, (n, owner)) in names.iter().enumerate() {
        if let Some((_, other)) = names[..i].iter().find(|(m, _)| m.eq_ignore_ascii_case(n)) {
            return Err(format!("name {n:?} is used by both {other} and {owner}"));
        }
    }
    Ok(())
}

/// Decodes a hex string, allowing spaces and `\x` prefixes for readability.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    // One pass, no intermediate strings: every launch decodes every
    // built-in spec's magic and mask (~8 KB of `\x..` text).
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    let mut high: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c == b'\\' && b.get(i) == Some(&b'x') {
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        let Some(d) = (c as char).to_digit(16) else {
            return Err(format!("not hex: {s:?}"));
        };
        match high.take() {
            None => high = Some(d as u8),
            Some(h) => out.push(h << 4 | d as u8),
        }
    }
    if high.is_some() {
        return Err(format!("odd number of hex digits in {s:?}"));
    }
    Ok(out)
}
