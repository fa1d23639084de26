//! Parsing what an Alpine mirror serves: `latest-releases.yaml` and
//! `*.sha256` / `*.sha512` checksum files. Pure functions; the network side
//! is in `fetch`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The flavour that is a minimal root filesystem tarball.
pub const MINIROOTFS: &str = "alpine-minirootfs";

/// One entry of `latest-releases.yaml`. Every text field also accepts
/// what YAML reads as a number or a date (`version: 3.20`, `branch: 3.9`):
/// old branches' files have such values unquoted.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Release {
    #[serde(deserialize_with = "text")]
    pub flavor: String,
    #[serde(deserialize_with = "text")]
    pub file: String,
    #[serde(default, deserialize_with = "opt_text")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub branch: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub arch: Option<String>,
    #[serde(default, deserialize_with = "opt_size")]
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "opt_text")]
    pub sha256: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub sha512: Option<String>,
}

/// A scalar as text: strings as they are, numbers and booleans as YAML
/// wrote them.
fn scalar(v: serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        serde_yaml_ng::Value::Tagged(t) => scalar(t.value),
        _ => None,
    }
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_yaml_ng::Value::deserialize(d)?;
    scalar(v).ok_or_else(|| serde::de::Error::custom("expected a text value"))
}

fn opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(scalar(serde_yaml_ng::Value::deserialize(d)?))
}

fn opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(scalar(serde_yaml_ng::Value::deserialize(d)?).and_then(|s| s.trim().parse().ok()))
}

/// Picks the minirootfs entry from an index. The index lists several
/// flavours (ISOs, netboot, ...): never take the first one blindly.
pub fn pick_minirootfs(yaml: &str) -> Result<Release> {
    let entries: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml)
        .context("latest-releases.yaml is not a YAML list of releases")?;
    let mut found = None;
    for v in entries {
        if v.get("flavor").and_then(|f| f.as_str()) != Some(MINIROOTFS) {
            continue;
        }
        let r: Release =
            serde_yaml_ng::from_value(v).context("the alpine-minirootfs entry is malformed")?;
        found = Some(r);
        break;
    }
    let Some(r) = found else {
        bail!("latest-releases.yaml lists no '{MINIROOTFS}' entry");
    };
    if r.file.is_empty() || r.file.contains('/') || r.file.starts_with('.') {
        bail!(
            "the alpine-minirootfs entry names an unsafe file {:?}",
            r.file
        );
    }
    let Some(sha256) = &r.sha256 else {
        bail!("the alpine-minirootfs entry for {} has no sha256", r.file);
    };
    check_hex(sha256, 64).with_context(|| format!("sha256 of {} in the index", r.file))?;
    if let Some(sha512) = &r.sha512 {
        check_hex(sha512, 128).with_context(|| format!("sha512 of {} in the index", r.file))?;
    }
    Ok(r)
}

/// Parses a `sha256sum`-style file ("HASH  NAME" lines) and returns the hash
/// for `file` (or the only hash, if the file holds one line with no name).
pub fn parse_checksum_file(text: &str, file: &str, hex_len: usize) -> Result<String> {
    let mut lone = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut parts = line.split_whitespace();
        let hash = parts.next().unwrap_or_default();
        let name = parts.next().map(|n| n.trim_start_matches('*'));
        match name {
            Some(n) if n == file || n.rsplit('/').next() == Some(file) => {
                check_hex(hash, hex_len)?;
                return Ok(hash.to_ascii_lowercase());
            }
            None => lone = Some(hash.to_string()),
            _ => {}
        }
    }
    if let Some(hash) = lone {
        check_hex(&hash, hex_len)?;
        return Ok(hash.to_ascii_lowercase());
    }
    bail!("no checksum for {file} in the checksum file")
}

/// Checks a hex digest has the right length and alphabet.
pub fn check_hex(s: &str, len: usize) -> Result<()> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{s:?} is not a {len}-digit hex digest");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/alpine-mirror/v3.20/releases"
    );

    #[test]
    fn picks_minirootfs_not_first_entry() {
        let yaml = r#"
- flavor: alpine-virt
  file: alpine-virt-3.20.3-aarch64.iso
  sha256: 81df854fbd7327d293c726b1eeeb82061d3bc8f5a86a6f77eea720f6be372261
- flavor: alpine-minirootfs
  file: alpine-minirootfs-3.20.3-aarch64.tar.gz
  version: 3.20.3
  sha256: 041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de
"#;
        let r = pick_minirootfs(yaml).unwrap();
        assert_eq!(r.file, "alpine-minirootfs-3.20.3-aarch64.tar.gz");
        assert_eq!(r.version.as_deref(), Some("3.20.3"));
        assert!(r.sha512.is_none());
    }

    #[test]
    fn real_indexes_parse() {
        for arch in [
            "aarch64", "armhf", "armv7", "ppc64le", "riscv64", "s390x", "x86", "x86_64",
        ] {
            let yaml =
                std::fs::read_to_string(format!("{SHARED}/{arch}/latest-releases.yaml")).unwrap();
            let r = pick_minirootfs(&yaml).unwrap();
            assert_eq!(r.file, format!("alpine-minirootfs-3.20.3-{arch}.tar.gz"));
            assert_eq!(r.flavor, MINIROOTFS);
            let sums =
                std::fs::read_to_string(format!("{SHARED}/{arch}/{}.sha256", r.file)).unwrap();
            assert_eq!(
                parse_checksum_file(&sums, &r.file, 64).unwrap(),
                r.sha256.clone().unwrap()
            );
            let sums =
                std::fs::read_to_string(format!("{SHARED}/{arch}/{}.sha512", r.file)).unwrap();
            assert_eq!(
                parse_checksum_file(&sums, &r.file, 128).unwrap(),
                r.sha512.clone().unwrap()
            );
        }
    }

    /// Shapes older and newer branches' files have: numbers and dates
    /// where text is expected, optional fields missing, any key order.
    #[test]
    fn every_real_shape_parses() {
        let yaml = "---\n-\n  sha256: 041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de\n  \
                    file: alpine-minirootfs-3.9.0-x86_64.tar.gz\n  flavor: alpine-minirootfs\n  \
                    branch: 3.9\n  version: 3.10\n  date: 2019-01-29\n  time: 14:05:36\n  size: '2000'\n";
        let r = pick_minirootfs(yaml).unwrap();
        assert_eq!(
            r.version.as_deref(),
            Some("3.1"),
            "YAML reads 3.10 as the float 3.1"
        );
        assert_eq!(r.branch.as_deref(), Some("3.9"));
        assert_eq!(r.size, Some(2000));
        let yaml = "- {flavor: alpine-minirootfs, file: a.tar.gz, sha256: 041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de}";
        let r = pick_minirootfs(yaml).unwrap();
        assert!(r.version.is_none() && r.branch.is_none() && r.sha512.is_none());
    }

    #[test]
    fn malformed_indexes_are_refused() {
        assert!(pick_minirootfs("this: [is not").is_err());
        assert!(
            pick_minirootfs("- flavor: alpine-virt\n  file: x.iso\n  sha256: ab\n")
                .unwrap_err()
                .to_string()
                .contains("no 'alpine-minirootfs'")
        );
        assert!(pick_minirootfs(
            "- flavor: alpine-minirootfs\n  file: ../../etc/passwd\n  sha256: 00\n"
        )
        .is_err());
        assert!(pick_minirootfs(
            "- flavor: alpine-minirootfs\n  file: a.tar.gz\n  sha256: nothex\n"
        )
        .is_err());
        assert!(pick_minirootfs("- flavor: alpine-minirootfs\n  file: a.tar.gz\n").is_err());
        assert!(pick_minirootfs("{}").is_err());
    }

    #[test]
    fn checksum_files() {
        let h = "041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de";
        assert_eq!(
            parse_checksum_file(&format!("{h}  a.tar.gz\n"), "a.tar.gz", 64).unwrap(),
            h
        );
        assert_eq!(
            parse_checksum_file(&format!("{h} *dir/a.tar.gz\n"), "a.tar.gz", 64).unwrap(),
            h
        );
        assert_eq!(
            parse_checksum_file(&format!("{h}\n"), "a.tar.gz", 64).unwrap(),
            h
        );
        assert!(parse_checksum_file(&format!("{h}  b.tar.gz\n"), "a.tar.gz", 64).is_err());
        assert!(parse_checksum_file("xyz  a.tar.gz\n", "a.tar.gz", 64).is_err());
    }
}
