//! `APKINDEX` and `/lib/apk/db/installed`: blocks of `X:value` lines, one
//! block per package, separated by blank lines. Tolerant of every shape
//! real files have: unknown fields are kept, optional ones may be
//! missing, fields come in any order, CRLF line ends, no final blank line.

use anyhow::{bail, Result};

use super::version::Op;

/// One dependency, `provides` or `install_if` atom: `name`, `name>=1.2`,
/// `so:libc.musl-x86_64.so.1`, `cmd:sh`, `!name` (a conflict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub constraint: Option<(Op, String)>,
    pub conflict: bool,
}

impl Dep {
    pub fn parse(s: &str) -> Option<Dep> {
        let (conflict, s) = match s.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, s),
        };
        // `name@tag`: the tag pins a repository; every repository counts here.
        let cut = s.find(['<', '>', '=', '~']).unwrap_or(s.len());
        let name = s[..cut].split('@').next().unwrap_or_default();
        if name.is_empty() {
            return None;
        }
        let rest = &s[cut..];
        let constraint = if rest.is_empty() {
            None
        } else {
            let v = rest.trim_start_matches(['<', '>', '=', '~']);
            let op = Op::parse(&rest[..rest.len() - v.len()])?;
            Some((op, v.to_string()))
        };
        Some(Dep {
            name: name.to_string(),
            constraint,
            conflict,
        })
    }

    /// Whether version `v` of something named `self.name` satisfies the
    /// constraint (a provide without a version satisfies only a bare name).
    pub fn allows(&self, v: Option<&str>) -> bool {
        match (&self.constraint, v) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((op, want)), Some(have)) => op.matches(have, want),
        }
    }
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.conflict {
            f.write_str("!")?;
        }
        f.write_str(&self.name)?;
        if let Some((op, v)) = &self.constraint {
            write!(f, "{op}{v}")?;
        }
        Ok(())
    }
}

/// One package of an index.
#[derive(Debug, Clone, Default)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `C:`: `Q1` + base64 of the SHA-1 of the package's control segment.
    pub checksum: String,
    /// `S:`: size of the `.apk` file.
    pub size: u64,
    pub depends: Vec<Dep>,
    /// `p:`: other names this package answers to, with an optional version.
    pub provides: Vec<(String, Option<String>)>,
    pub install_if: Vec<Dep>,
    /// `k:` provider priority.
    pub priority: i64,
    /// Every field as read, in order, for the installed database.
    pub fields: Vec<(char, String)>,
    /// Index of the repository it came from.
    pub repo: usize,
    /// Already in the tree (from its `installed` database).
    pub installed: bool,
}

impl Package {
    /// `name-version.apk`, its file name in the repository.
    pub fn file_name(&self) -> String {
        format!("{}-{}.apk", self.name, self.version)
    }

    /// The version under which this package provides `name`, if it does:
    /// `Some(Some(v))` versioned, `Some(None)` unversioned.
    pub fn provides_name(&self, name: &str) -> Option<Option<&str>> {
        if self.name == name {
            return Some(Some(&self.version));
        }
        self.provides
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }
}

/// Parses an `APKINDEX` (or `installed`) text. Blocks without `P:` or
/// `V:` are skipped (apk does the same); a field without a colon is an error.
pub fn parse(text: &str, repo: usize) -> Result<Vec<Package>> {
    let mut out = Vec::new();
    let mut cur = Package {
        repo,
        ..Package::default()
    };
    let mut lines = text.lines().enumerate().peekable();
    loop {
        let line = lines.next();
        let end_of_block = match line {
            None => true,
            Some((_, l)) => l.trim_end_matches('\r').is_empty(),
        };
        if end_of_block {
            if !cur.name.is_empty() && !cur.version.is_empty() {
                out.push(std::mem::replace(
                    &mut cur,
                    Package {
                        repo,
                        ..Package::default()
                    },
                ));
            } else {
                cur = Package {
                    repo,
                    ..Package::default()
                };
            }
            if line.is_none() {
                break;
            }
            continue;
        }
        let Some((n, l)) = line else { break };
        let l = l.trim_end_matches('\r');
        let mut chars = l.chars();
        let (Some(key), Some(':')) = (chars.next(), chars.next()) else {
            bail!("line {}: {l:?} is not a `X:value` field", n + 1);
        };
        let value = chars.as_str().to_string();
        match key {
            'P' => cur.name = value.clone(),
            'V' => cur.version = value.clone(),
            'A' => cur.arch = value.clone(),
            'C' => cur.checksum = value.clone(),
            'S' => cur.size = value.trim().parse().unwrap_or(0),
            'k' => cur.priority = value.trim().parse().unwrap_or(0),
            'D' => cur
                .depends
                .extend(value.split_whitespace().filter_map(Dep::parse)),
            'i' => cur
                .install_if
                .extend(value.split_whitespace().filter_map(Dep::parse)),
            'p' => cur
                .provides
                .extend(value.split_whitespace().map(|p| match p.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (p.to_string(), None),
                })),
            _ => {}
        }
        cur.fields.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps() {
        let d = Dep::parse("so:libc.musl-x86_64.so.1").unwrap();
        assert_eq!(d.name, "so:libc.musl-x86_64.so.1");
        assert!(d.constraint.is_none() && !d.conflict);
        let d = Dep::parse("alpine-baselayout-data=3.6.5-r0").unwrap();
        assert_eq!(d.name, "alpine-baselayout-data");
        assert!(d.allows(Some("3.6.5-r0")) && !d.allows(Some("3.6.4-r0")) && !d.allows(None));
        let d = Dep::parse("!busybox-initscripts").unwrap();
        assert!(d.conflict && d.name == "busybox-initscripts");
        let d = Dep::parse("musl>=1.2").unwrap();
        assert!(d.allows(Some("1.2.5-r0")));
        assert_eq!(d.to_string(), "musl>=1.2");
        assert_eq!(Dep::parse("pkg@testing").unwrap().name, "pkg");
        assert!(Dep::parse("").is_none());
    }

    #[test]
    fn index_shapes() {
        let text = "C:Q1abc=\r\nP:a\r\nV:1.0-r0\r\nD:b>=2 so:libx.so.1 !c\r\np:cmd:a=1.0-r0 virt\r\nS:12\r\nX:unknown\r\n\r\n\
                    V:2-r0\nP:b\nk:10\n\nP:noversion\n\nP:c\nV:1";
        let p = parse(text, 3).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].name, "a");
        assert_eq!(p[0].depends.len(), 3);
        assert_eq!(p[0].provides_name("cmd:a"), Some(Some("1.0-r0")));
        assert_eq!(p[0].provides_name("virt"), Some(None));
        assert_eq!(p[0].size, 12);
        assert_eq!(p[0].repo, 3);
        assert_eq!(p[1].priority, 10);
        assert_eq!(p[2].name, "c");
        assert!(parse("garbage line\n", 0).is_err());
    }

    /// Every real `installed` database in the shared minirootfs tarballs
    /// parses, with the packages the tree has.
    #[test]
    fn real_installed_databases() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/alpine-mirror/v3.20/releases");
        let dir = if dir.exists() {
            dir
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/alpine-mirror/v3.20/releases")
        };
        let rd = std::fs::read_dir(&dir).unwrap();
        let mut seen = 0;
        for arch in rd.flatten() {
            let a = arch.file_name().to_string_lossy().into_owned();
            let tgz = arch
                .path()
                .join(format!("alpine-minirootfs-3.20.3-{a}.tar.gz"));
            let f = std::fs::File::open(&tgz).unwrap();
            let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
            for e in t.entries().unwrap() {
                let mut e = e.unwrap();
                if e.path().unwrap().ends_with("lib/apk/db/installed") {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                    let p = parse(&s, 0).unwrap();
                    assert!(p.iter().any(|p| p.name == "busybox"), "{a}");
                    assert!(p.iter().all(|p| p.checksum.starts_with("Q1")), "{a}");
                    assert!(p.iter().all(|p| super::super::version::valid(&p.version)));
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 8);
    }
}
