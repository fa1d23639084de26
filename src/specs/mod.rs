//! Architecture specs: what xroot knows about each CPU architecture.
//!
//! One TOML file per arch lives in `rootfs-specs/`; `build.rs` parses and
//! checks them with [`schema`] and compiles them into the binary as Rust
//! values, so a launch parses nothing. This module is pure: the catalog,
//! alias resolution, ELF-header matching. Nothing here touches the OS, so
//! all of it is unit tested. The format is documented in `docs/spec-format.md`.

pub(crate) mod schema;

use anyhow::{Context, Result};

use crate::error::hinted;
pub use schema::{decode_hex, Magic, Source, Spec};

mod embedded {
    // The TOML texts are read by the tests only.
    #![allow(dead_code)]
    use super::{Magic, Source, Spec};
    include!(concat!(env!("OUT_DIR"), "/specs.rs"));
}
#[cfg(test)]
use embedded::EMBEDDED_SPECS;

/// All known architectures.
#[derive(Debug, Clone)]
pub struct Catalog {
    specs: Vec<Spec>,
}

impl Catalog {
    /// The specs compiled into this binary (checked at build time: see
    /// build.rs). Parsing them at each launch cost ~0.1 ms.
    pub fn builtin() -> Result<Catalog> {
        Ok(Catalog {
            specs: embedded::builtin_specs(),
        })
    }

    /// The built-in specs plus the user's own: every `*.toml` in
    /// `$XROOT_SPECS_DIR` (else `$XROOT_HOME/specs`, when it exists), in the
    /// same format. A user spec with a built-in's name replaces it, so a
    /// site can point an arch at its own mirror or tarball.
    pub fn with_user_specs(dir: &std::path::Path) -> Result<Catalog> {
        let builtin = Catalog::builtin()?;
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(builtin),
            Err(e) => {
                return Err(e).with_context(|| format!("reading spec directory {}", dir.display()))
            }
        };
        let mut texts = Vec::new();
        for e in rd {
            let p = e
                .with_context(|| format!("reading spec directory {}", dir.display()))?
                .path();
            if p.extension().is_some_and(|x| x == "toml") {
                let name = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                texts.push((name, text));
            }
        }
        if texts.is_empty() {
            return Ok(builtin);
        }
        let files: Vec<(&str, &str)> = texts
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let user = Catalog::parse(&files).with_context(|| format!("in {}", dir.display()))?;
        let mut specs: Vec<Spec> = builtin
            .specs
            .into_iter()
            .filter(|b| user.find(&b.name).is_none())
            .collect();
        specs.extend(user.specs);
        Catalog::check(specs)
    }

    /// Parses and cross-checks a set of spec files (TOML).
    pub fn parse(files: &[(&str, &str)]) -> Result<Catalog> {
        Catalog::build(files, |t| toml::from_str(t).map_err(|e| e.to_string()))
    }

    fn build(files: &[(&str, &str)], de: fn(&str) -> Result<Spec, String>) -> Result<Catalog> {
        let mut specs = Vec::with_capacity(files.len());
        for (file, text) in files {
            let spec: Spec = de(text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("rootfs-specs/{file} is invalid"))?;
            schema::check_file(file, &spec).map_err(anyhow::Error::msg)?;
            specs.push(spec);
        }
        Catalog::check(specs)
    }

    /// Names and aliases must be unique; the catalog is sorted by name.
    fn check(mut specs: Vec<Spec>) -> Result<Catalog> {
        schema::check_names(&specs).map_err(anyhow::Error::msg)?;
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Catalog { specs })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Spec> {
        self.specs.iter()
    }

    /// Finds an arch by name or alias (case-insensitive).
    pub fn find(&self, name: &str) -> Option<&Spec> {
        let name = name.to_ascii_lowercase();
        self.specs
            .iter()
            .find(|s| s.name == name || s.aliases.iter().any(|a| a.to_ascii_lowercase() == name))
    }

    /// Like [`find`](Self::find), but an unknown name is an error that lists
    /// the known arches and suggests the closest one.
    pub fn resolve(&self, name: &str) -> Result<&Spec> {
        if let Some(s) = self.find(name) {
            return Ok(s);
        }
        let known: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
        let hint = match self.closest(name) {
            Some(c) => format!("did you mean '{c}'? Known arches: {}", known.join(", ")),
            None => format!("known arches: {} (see `xroot list`)", known.join(", ")),
        };
        Err(hinted(format!("unknown architecture '{name}'"), hint))
    }

    fn closest(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.specs
            .iter()
            .flat_map(|s| {
                std::iter::once(&s.name)
                    .chain(&s.aliases)
                    .map(move |n| (n, &s.name))
            })
            .map(|(n, canon)| (strsim::damerau_levenshtein(&name, n), canon))
            // Close enough to be a typo, not just another short word.
            .filter(|(d, _)| *d <= 2 && *d * 2 < name.len())
            .min_by_key(|(d, _)| *d)
            .map(|(_, canon)| canon.as_str())
    }

    /// The arches whose binfmt magic matches this ELF header. Several arches
    /// share one qemu target (armhf, armv7, armel), so this can be more than one.
    pub fn matching(&self, header: &[u8]) -> Vec<&Spec> {
        self.specs
            .iter()
            .filter(|s| s.binfmt.matches(header))
            .collect()
    }

    /// One spec per qemu target, for registering handlers: the one with
    /// an Alpine source if any (armhf rather than armel for `arm`).
    pub fn qemu_targets(&self) -> Vec<&Spec> {
        let mut out: Vec<&Spec> = Vec::new();
        for s in &self.specs {
            match out.iter_mut().find(|o| o.qemu == s.qemu) {
                None => out.push(s),
                Some(o) => {
                    let alpine = |x: &Spec| matches!(x.source, Source::Alpine { .. });
                    if alpine(s) && !alpine(o) {
                        *o = s;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shared() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
    }

    fn header(path: &std::path::Path) -> Vec<u8> {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        data[..64.min(data.len())].to_vec()
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("\\x7f\\x45 4c\n46").unwrap(), b"\x7fELF");
        assert_eq!(decode_hex("").unwrap(), b"");
        assert!(decode_hex("\\x7").unwrap_err().contains("odd number"));
        assert!(decode_hex("\\x7g").unwrap_err().contains("not hex"));
        assert!(decode_hex("\\y41").unwrap_err().contains("not hex"));
    }

    /// What the binary holds (Rust values made by build.rs) is what the
    /// files say, field for field.
    #[test]
    fn compiled_and_toml_forms_agree() {
        let compiled = Catalog::builtin().unwrap();
        let from_toml = Catalog::parse(EMBEDDED_SPECS).unwrap();
        assert_eq!(compiled.specs, from_toml.specs);
        assert_eq!(compiled.specs.len(), EMBEDDED_SPECS.len());
    }

    #[test]
    fn builtin_specs_parse() {
        let c = Catalog::builtin().unwrap();
        assert!(c.iter().count() >= 16);
        for name in [
            "aarch64", "armhf", "armv7", "x86", "x86_64", "ppc64le", "s390x", "riscv64",
        ] {
            assert!(
                matches!(c.find(name).unwrap().source, Source::Alpine { .. }),
                "{name}"
            );
        }
    }

    #[test]
    fn aliases_resolve() {
        let c = Catalog::builtin().unwrap();
        for (alias, canon) in [
            ("arm64", "aarch64"),
            ("amd64", "x86_64"),
            ("i386", "x86"),
            ("i686", "x86"),
            ("ppc64el", "ppc64le"),
            ("armv7l", "armv7"),
            ("ARM64", "aarch64"),
            ("powerpc", "ppc"),
        ] {
            assert_eq!(c.resolve(alias).unwrap().name, canon, "{alias}");
        }
    }

    #[test]
    fn unknown_arch_suggests_closest() {
        let c = Catalog::builtin().unwrap();
        let err = c.resolve("aarch46").unwrap_err();
        assert_eq!(err.to_string(), "unknown architecture 'aarch46'");
        let hint = crate::error::hint_of(&err).unwrap();
        assert!(hint.starts_with("did you mean 'aarch64'?"), "{hint}");
        assert!(hint.contains("riscv64"), "{hint}");
        let err = c.resolve("quantum-xyz").unwrap_err();
        assert!(crate::error::hint_of(&err)
            .unwrap()
            .starts_with("known arches:"));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let good = include_str!("../../rootfs-specs/aarch64.toml");
        assert!(Catalog::parse(&[("aarch64.toml", good)]).is_ok());
        assert!(
            Catalog::parse(&[("arm64.toml", good)]).is_err(),
            "file name must match"
        );
        let short = good.replace("0200b700\"", "0200\"");
        assert!(
            Catalog::parse(&[("aarch64.toml", &short)]).is_err(),
            "length mismatch"
        );
        let dup = Catalog::parse(&[
            ("aarch64.toml", good),
            (
                "x.toml",
                &good.replace("name = \"aarch64\"", "name = \"x\""),
            ),
        ]);
        assert!(dup.is_err(), "duplicate aliases");
    }

    /// Each qemu target's magic matches the probe built for that target and
    /// no probe of any other target.
    #[test]
    fn magic_matches_probe_binaries_of_own_target_only() {
        let c = Catalog::builtin().unwrap();
        let dir = shared().join("fixtures/probe/bin");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let probe_target = path.file_name().unwrap().to_str().unwrap().to_string();
            // The armel probe runs under qemu-arm, like armhf/armv7.
            let target = if probe_target == "armel" {
                "arm".to_string()
            } else {
                probe_target
            };
            let hdr = header(&path);
            let matched: Vec<&str> = c.matching(&hdr).iter().map(|s| s.qemu.as_str()).collect();
            assert!(
                !matched.is_empty(),
                "no spec matches probe {}",
                path.display()
            );
            assert!(
                matched.iter().all(|q| *q == target),
                "probe {} matched {matched:?}",
                path.display()
            );
            checked += 1;
        }
        assert_eq!(checked, 14);
    }

    /// The magic also matches the busybox of each real Alpine minirootfs
    /// in the shared mirror (read straight out of the tarball).
    #[test]
    fn magic_matches_alpine_busybox() {
        let c = Catalog::builtin().unwrap();
        let mirror = shared().join("alpine-mirror/v3.20/releases");
        for spec in c.iter() {
            let Source::Alpine { alpine_arch, .. } = &spec.source else {
                continue;
            };
            let tgz = mirror
                .join(alpine_arch)
                .join(format!("alpine-minirootfs-3.20.3-{alpine_arch}.tar.gz"));
            if !tgz.exists() {
                continue; // loongarch64, mips64: not in the shared mirror
            }
            let file = std::fs::File::open(&tgz).unwrap();
            let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
            let mut hdr = Vec::new();
            for e in ar.entries().unwrap() {
                let mut e = e.unwrap();
                if e.path().unwrap().ends_with("bin/busybox") {
                    use std::io::Read;
                    e.by_ref().take(64).read_to_end(&mut hdr).unwrap();
                    break;
                }
            }
            let matched: Vec<&str> = c.matching(&hdr).iter().map(|s| s.qemu.as_str()).collect();
            assert!(
                !matched.is_empty() && matched.iter().all(|q| *q == spec.qemu),
                "{}: {matched:?}",
                spec.name
            );
        }
    }
}
