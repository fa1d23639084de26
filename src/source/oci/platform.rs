//! Which image of a multi-platform index fits an arch: its spec's
//! `oci_platform` (`linux/arm/v7`, GOARCH names) against the index's
//! `platform` entries. Pure logic.

use oci_spec::image::{Descriptor, Platform as OciPlatform};

/// `OS/ARCH[/VARIANT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match parts[..] {
            [os, arch] | [os, arch, _] if ok(os) && ok(arch) => {
                let variant = parts.get(2).map(|v| v.to_string());
                if variant.as_deref().is_some_and(|v| !ok(v)) {
                    return Err(format!("{s:?}: bad variant"));
                }
                Ok(Platform {
                    os: os.into(),
                    architecture: arch.into(),
                    variant,
                })
            }
            _ => Err(format!(
                "{s:?} is not OS/ARCH[/VARIANT] with Go's names (e.g. linux/arm/v7)"
            )),
        }
    }

    /// Whether an image's platform (from an index entry or a config) fits.
    /// A variant we ask for must match, except that an image that states no
    /// variant is taken as fitting (indexes often omit it for the only build).
    pub fn fits(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        os == self.os
            && arch == self.architecture
            && match (&self.variant, variant) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }

    fn fits_oci(&self, p: &OciPlatform) -> bool {
        self.fits(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The index entry for `want`: one whose variant is exactly the one asked
/// for beats one that states none. `Err` lists what the index has.
pub fn choose<'a>(entries: &'a [Descriptor], want: &Platform) -> Result<&'a Descriptor, String> {
    let fitting: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| d.platform().as_ref().is_some_and(|p| want.fits_oci(p)))
        .collect();
    let exact = fitting
        .iter()
        .find(|d| d.platform().as_ref().and_then(|p| p.variant().clone()) == want.variant);
    if let Some(d) = exact.or(fitting.first()) {
        return Ok(d);
    }
    let have: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .filter(|s| !s.starts_with("unknown/"))
        .collect();
    Err(if have.is_empty() {
        "it names no platforms".into()
    } else {
        have.join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(json: &str) -> Vec<Descriptor> {
        let i: oci_spec::image::ImageIndex = serde_json::from_str(json).unwrap();
        i.manifests().clone()
    }

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn entry(n: u8, platform: &str) -> String {
        let p = Platform::parse(platform).unwrap();
        let v = p
            .variant
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":{n},"digest":"{D}","platform":{{"os":"{}","architecture":"{}"{v}}}}}"#,
            p.os, p.architecture
        )
    }

    #[test]
    fn picks_by_arch_and_variant() {
        let entries = [
            entry(1, "linux/amd64"),
            entry(2, "linux/arm/v6"),
            entry(3, "linux/arm/v7"),
            entry(4, "linux/arm64/v8"),
            entry(5, "linux/s390x"),
            entry(6, "unknown/unknown"),
        ];
        let idx = index(&format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            entries.join(",")
        ));
        let pick = |p: &str| choose(&idx, &Platform::parse(p).unwrap()).map(|d| d.size());
        assert_eq!(pick("linux/arm/v7"), Ok(3));
        assert_eq!(pick("linux/arm/v6"), Ok(2));
        assert_eq!(pick("linux/arm64"), Ok(4));
        assert_eq!(pick("linux/s390x"), Ok(5));
        let err = pick("linux/riscv64").unwrap_err();
        assert!(
            err.contains("linux/arm/v7") && !err.contains("unknown"),
            "{err}"
        );
        assert!(pick("linux/arm/v5").is_err());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/arm/v7/x").is_err());
        assert!(Platform::parse("Linux/arm").is_err());
    }
}
