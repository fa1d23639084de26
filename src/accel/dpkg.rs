//! Reading dpkg's status database (`/var/lib/dpkg/status`): which version
//! of a package is installed, the source version it was built from, and
//! what a cross package says it was built with (`Built-Using`). Pure text
//! parsing, so the guest's database is read without running anything.

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkg {
    pub version: String,
    /// The version of the source package (differs from `version` for binNMUs).
    pub source_version: String,
    /// `Built-Using` entries: (source package, exact version).
    pub built_using: Vec<(String, String)>,
}

/// The installed package `name` (first stanza whose status is
/// "install ok installed"), if any.
pub fn installed(status: &str, name: &str) -> Option<Pkg> {
    status
        .split("\n\n")
        .find(|s| {
            field(s, "Package") == Some(name)
                && field(s, "Status").is_some_and(|st| st.ends_with(" installed"))
                && !field(s, "Status").is_some_and(|st| st.contains("not-installed"))
        })
        .and_then(|s| {
            let version = field(s, "Version")?.to_string();
            let source_version = field(s, "Source")
                .and_then(|src| src.split_once('('))
                .map(|(_, v)| v.trim_end_matches(')').trim().to_string())
                .unwrap_or_else(|| version.clone());
            let built_using = field(s, "Built-Using")
                .map(|b| {
                    b.split(',')
                        .filter_map(|e| {
                            let (n, v) = e.trim().split_once('(')?;
                            let v = v.trim_end_matches(')').trim().strip_prefix('=')?.trim();
                            Some((n.trim().to_string(), v.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(Pkg {
                version,
                source_version,
                built_using,
            })
        })
}

/// The value of a single-line field of a stanza.
fn field<'a>(stanza: &'a str, name: &str) -> Option<&'a str> {
    stanza.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (!l.starts_with([' ', '\t']) && k == name).then(|| v.trim())
    })
}

/// Strips a Debian stable update suffix (`+deb12u1`) from a version.
pub fn without_stable_update(v: &str) -> &str {
    if let Some(i) = v.rfind("+deb") {
        let rest = &v[i + 4..];
        if let Some((a, b)) = rest.split_once('u') {
            if !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
            {
                return &v[..i];
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: cpp-12\nStatus: install ok installed\nArchitecture: s390x\nSource: gcc-12\nVersion: 12.2.0-14+deb12u1\nDescription: GNU C preprocessor\n Version: 1.0 (a continuation line, not a field)\n\nPackage: cpp-12-s390x-linux-gnu\nStatus: install ok installed\nSource: gcc-12-cross (15)\nVersion: 12.2.0-14cross1\nBuilt-Using: gcc-12 (= 12.2.0-14), binutils (= 2.40-2)\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: binnmu\nStatus: install ok installed\nSource: zlib (1:1.2.13.dfsg-1)\nVersion: 1:1.2.13.dfsg-1+b1\n";

    #[test]
    fn reads_versions_sources_and_built_using() {
        let p = installed(STATUS, "cpp-12").unwrap();
        assert_eq!(p.version, "12.2.0-14+deb12u1");
        assert_eq!(p.source_version, "12.2.0-14+deb12u1");
        let c = installed(STATUS, "cpp-12-s390x-linux-gnu").unwrap();
        assert_eq!(c.source_version, "15");
        assert_eq!(
            c.built_using,
            vec![
                ("gcc-12".to_string(), "12.2.0-14".to_string()),
                ("binutils".to_string(), "2.40-2".to_string())
            ]
        );
        assert_eq!(
            installed(STATUS, "binnmu").unwrap().source_version,
            "1:1.2.13.dfsg-1"
        );
        assert_eq!(installed(STATUS, "gone"), None);
        assert_eq!(installed(STATUS, "cpp"), None);
    }

    #[test]
    fn strips_only_a_stable_update_suffix() {
        assert_eq!(without_stable_update("12.2.0-14+deb12u1"), "12.2.0-14");
        assert_eq!(without_stable_update("12.2.0-14"), "12.2.0-14");
        assert_eq!(without_stable_update("1.0+debian-1"), "1.0+debian-1");
        assert_eq!(without_stable_update("2.40-2+deb12ux"), "2.40-2+deb12ux");
    }
}
