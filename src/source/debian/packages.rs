//! The `Packages` index of one architecture: what each binary package is,
//! what it needs, and where its `.deb` is with its SHA256.

use std::str::FromStr;

use anyhow::Result;
use debversion::Version;

use super::control;
use crate::error::hinted;

/// Version relations of dependency fields (`<<`, `<=`, `=`, `>=`, `>>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Rel {
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        let o = have.cmp(want);
        match self {
            Rel::Lt => o.is_lt(),
            Rel::Le => o.is_le(),
            Rel::Eq => o.is_eq(),
            Rel::Ge => o.is_ge(),
            Rel::Gt => o.is_gt(),
        }
    }
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dep {
    pub name: String,
    /// `name:any`: only a `Multi-Arch: allowed` package satisfies it.
    pub any: bool,
    pub version: Option<(Rel, Version)>,
}

/// `a | b`: any one satisfies the group.
pub type Group = Vec<Dep>;

#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: Version,
    pub multi_arch: String,
    pub priority: String,
    pub essential: bool,
    pub pre_depends: Vec<Group>,
    pub depends: Vec<Group>,
    /// Virtual names this package provides, optionally with a version.
    pub provides: Vec<(String, Option<Version>)>,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// Parses a dependency field (`Depends`, `Pre-Depends`, `Provides`).
/// Architecture qualifiers: a bootstrap has one architecture, so `:native`
/// is dropped and `:any` kept as [`Dep::any`] (policy 7.1: only a
/// `Multi-Arch: allowed` package satisfies it).
/// Restriction lists (`[amd64]`, `<!nocheck>`) appear only in source
/// packages; they are skipped if present.
pub fn parse_groups(field: &str) -> Result<Vec<Group>, String> {
    let mut out = Vec::new();
    for group in field.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            let alt = strip_restrictions(alt);
            let alt = alt.trim();
            let (name, rest) = match alt.find(|c: char| c == '(' || c.is_whitespace()) {
                Some(i) => (&alt[..i], alt[i..].trim()),
                None => (alt, ""),
            };
            let (name, qual) = name.split_once(':').unwrap_or((name, ""));
            if name.is_empty() {
                return Err(format!("empty package name in {field:?}"));
            }
            let version = if rest.is_empty() {
                None
            } else {
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("cannot read {alt:?}"))?
                    .trim();
                let (op, v) = ["<<", "<=", ">=", ">>", "=", "<", ">"]
                    .iter()
                    .find_map(|op| inner.strip_prefix(op).map(|v| (*op, v.trim())))
                    .ok_or_else(|| format!("no relation in {alt:?}"))?;
                let rel = match op {
                    "<<" => Rel::Lt,
                    "<=" | "<" => Rel::Le,
                    "=" => Rel::Eq,
                    ">=" | ">" => Rel::Ge,
                    _ => Rel::Gt,
                };
                let v = Version::from_str(v).map_err(|e| format!("bad version in {alt:?}: {e}"))?;
                Some((rel, v))
            };
            alts.push(Dep {
                name: name.to_string(),
                any: qual == "any",
                version,
            });
        }
        out.push(alts);
    }
    Ok(out)
}

fn strip_restrictions(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut paren, mut skip) = (false, None);
    for c in s.chars() {
        if let Some(end) = skip {
            if c == end {
                skip = None;
            }
            continue;
        }
        match c {
            '(' | ')' => {
                paren = c == '(';
                out.push(c);
            }
            '[' if !paren => skip = Some(']'),
            '<' if !paren => skip = Some('>'),
            _ => out.push(c),
        }
    }
    out
}

/// Parses a whole `Packages` index, keeping the packages of `arch` and
/// `all`. Stanzas without a usable `Filename`, `Size` and `SHA256` cannot
/// be verified and are left out.
pub fn parse(url: &str, text: &str, arch: &str) -> Result<Vec<Package>> {
    let bad = |name: &str, e: String| {
        hinted(
            format!("{url}: package {name}: {e}"),
            "the index is damaged; try another --mirror",
        )
    };
    let mut out = Vec::new();
    for p in control::paragraphs(text) {
        let Some(name) = p.get("Package") else {
            continue;
        };
        let a = p.get("Architecture").unwrap_or_default();
        if a != arch && a != "all" {
            continue;
        }
        let (Some(filename), Some(size), Some(sha256)) = (
            p.get("Filename"),
            p.get("Size").and_then(|s| s.parse().ok()),
            p.get("SHA256")
                .filter(|h| crate::mirror::check_hex(h, 64).is_ok()),
        ) else {
            continue;
        };
        let version = Version::from_str(p.get("Version").unwrap_or_default())
            .map_err(|e| bad(name, format!("bad version: {e}")))?;
        let groups = |f: &str| parse_groups(p.get(f).unwrap_or_default()).map_err(|e| bad(name, e));
        let provides = groups("Provides")?
            .into_iter()
            .flatten()
            .map(|d| (d.name, d.version.map(|(_, v)| v)))
            .collect();
        out.push(Package {
            name: name.to_string(),
            version,
            multi_arch: p.get("Multi-Arch").unwrap_or("no").to_string(),
            priority: p.get("Priority").unwrap_or("optional").to_string(),
            essential: p.get("Essential").is_some_and(|e| e == "yes"),
            pre_depends: groups("Pre-Depends")?,
            depends: groups("Depends")?,
            provides,
            filename: filename.to_string(),
            size,
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    if out.is_empty() {
        return Err(hinted(
            format!("{url} lists no package for {arch}"),
            "check the architecture and --suite: the archive may not carry this architecture",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn dependency_fields() {
        let g = parse_groups("libc6 (>= 2.34), awk | mawk:any, python3:any (<< 3.12~), x [amd64]")
            .unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g[0][0].name, "libc6");
        assert_eq!(g[0][0].version, Some((Rel::Ge, v("2.34"))));
        assert_eq!(g[1].len(), 2);
        assert_eq!(g[1][1].name, "mawk");
        assert_eq!(g[2][0].name, "python3");
        assert!(g[2][0].any && !g[1][0].any);
        assert_eq!(g[2][0].version, Some((Rel::Lt, v("3.12~"))));
        assert_eq!(g[3][0].name, "x");
        assert!(parse_groups("a (>= )").is_err());
    }

    #[test]
    fn version_order_is_debian_order() {
        assert!(Rel::Lt.holds(&v("1.0~rc1"), &v("1.0")));
        assert!(Rel::Gt.holds(&v("1:0.1"), &v("9.9")));
        assert!(Rel::Ge.holds(&v("2.36-9+deb12u10"), &v("2.36-9")));
        assert!(Rel::Lt.holds(&v("1.0-1"), &v("1.0-1+b1")));
    }

    #[test]
    fn stanzas_of_the_arch_and_all() {
        let h = "0".repeat(64);
        let t = format!(
            "Package: a\nVersion: 1\nArchitecture: s390x\nEssential: yes\nPriority: required\n\
             Pre-Depends: b\nFilename: pool/a.deb\nSize: 3\nSHA256: {h}\n\n\
             Package: b\nVersion: 2\nArchitecture: all\nProvides: c (= 2)\nFilename: pool/b.deb\nSize: 4\nSHA256: {h}\n\n\
             Package: z\nVersion: 2\nArchitecture: arm64\nFilename: pool/z.deb\nSize: 4\nSHA256: {h}\n"
        );
        let p = parse("P", &t, "s390x").unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].essential);
        assert_eq!(p[0].pre_depends[0][0].name, "b");
        assert_eq!(p[1].provides, vec![("c".to_string(), Some(v("2")))]);
        assert_eq!(parse("P", &t, "mips").unwrap().len(), 1);
        assert!(parse("P", &t[..t.find("Package: b").unwrap()], "mips").is_err());
    }
}
