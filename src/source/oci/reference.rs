//! Image references as users write them (skopeo's transports):
//! `docker://[HOST[:PORT]/]NAME[:TAG][@sha256:HEX]`, `oci:DIR[:TAG]`,
//! `oci-archive:FILE[:TAG]` and `docker-archive:FILE`. Pure parsing.

use std::path::PathBuf;

/// The registry Docker Hub names resolve to, and the host its API is on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Registry(RegistryRef),
    /// An OCI image layout directory, with the `org.opencontainers.image.ref.name` to pick.
    OciDir {
        dir: PathBuf,
        tag: Option<String>,
    },
    /// The same layout in a tar file.
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    /// `docker save` output.
    DockerArchive {
        file: PathBuf,
    },
}

/// `docker://HOST/NAME:TAG@DIGEST`, normalized (`debian` is
/// `docker.io/library/debian:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// As written (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub host: String,
    /// The repository (`library/debian`).
    pub name: String,
    /// Absent only when a digest is given without one.
    pub tag: Option<String>,
    /// `sha256:` and 64 hex digits.
    pub digest: Option<String>,
    /// Whether the user wrote the tag (`debian` means `debian:latest`).
    pub tag_given: bool,
}

impl RegistryRef {
    /// The host serving the registry API (Docker Hub's is not `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "docker://{}/{}", self.host, self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tagged = |t: &Option<String>| t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::OciDir { dir, tag } => write!(f, "oci:{}{}", dir.display(), tagged(tag)),
            ImageRef::OciArchive { file, tag } => {
                write!(f, "oci-archive:{}{}", file.display(), tagged(tag))
            }
            ImageRef::DockerArchive { file } => write!(f, "docker-archive:{}", file.display()),
        }
    }
}

/// Whether `--from` names an image rather than a tarball.
pub fn is_image(from: &str) -> bool {
    ["docker://", "oci:", "oci-archive:", "docker-archive:"]
        .iter()
        .any(|p| from.starts_with(p))
}

impl ImageRef {
    /// Parses a reference; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if let Some(rest) = s.strip_prefix("docker://") {
            return parse_registry(rest).map(ImageRef::Registry);
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split_tag(rest)?;
            return Ok(ImageRef::OciArchive { file, tag });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest)?;
            return Ok(ImageRef::OciDir { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err("docker-archive: needs a file".into());
            }
            return Ok(ImageRef::DockerArchive {
                file: PathBuf::from(rest),
            });
        }
        Err("not an image reference (docker://, oci:, oci-archive: or docker-archive:)".into())
    }

    /// A rootfs name for it (`debian-bookworm`), for `ARCH@NAME`.
    pub fn default_name(&self) -> String {
        let base = |p: &std::path::Path| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
            stem.unwrap_or_else(|| "image".into())
        };
        let raw = match self {
            ImageRef::Registry(r) => {
                let last = r.name.rsplit('/').next().unwrap_or(&r.name);
                match (&r.tag, &r.digest) {
                    (Some(t), _) if r.tag_given => format!("{last}-{t}"),
                    (_, Some(d)) => {
                        let hex = d.strip_prefix("sha256:").unwrap_or(d);
                        format!("{last}-{}", &hex[..12.min(hex.len())])
                    }
                    _ => last.to_string(),
                }
            }
            ImageRef::OciDir { dir: p, tag } | ImageRef::OciArchive { file: p, tag } => match tag {
                Some(t) => format!("{}-{t}", base(p)),
                None => base(p),
            },
            ImageRef::DockerArchive { file } => base(file),
        };
        sanitize_name(&raw)
    }
}

/// Makes `raw` a valid rootfs name (see `store::validate_name`).
fn sanitize_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    s = s.trim_start_matches('.').to_string();
    s.truncate(64);
    if s.is_empty() {
        "image".into()
    } else {
        s
    }
}

/// `PATH[:TAG]`: a final `:TAG` is split off when it has no `/`.
fn split_tag(rest: &str) -> Result<(PathBuf, Option<String>), String> {
    if rest.is_empty() {
        return Err("the path is empty".into());
    }
    match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !path.is_empty() => {
            if tag.is_empty() {
                return Err(format!("{rest:?} ends with an empty tag"));
            }
            Ok((PathBuf::from(path), Some(tag.to_string())))
        }
        _ => Ok((PathBuf::from(rest), None)),
    }
}

fn parse_registry(s: &str) -> Result<RegistryRef, String> {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let hex = d
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("digest {d:?} is not sha256:HEX"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("digest {d:?} is not sha256: and 64 hex digits"));
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    let (host, name) = match path.split_once('/') {
        Some((first, more))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), more.to_string())
        }
        _ => (DOCKER_HUB.to_string(), path.to_string()),
    };
    let host = if host == "index.docker.io" || host == DOCKER_HUB_API {
        DOCKER_HUB.to_string()
    } else {
        host
    };
    let name = if host == DOCKER_HUB && !name.contains('/') {
        format!("library/{name}")
    } else {
        name
    };
    if name.is_empty() {
        return Err("the image name is empty".into());
    }
    for comp in name.split('/') {
        let ok = !comp.is_empty()
            && comp
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && comp
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "{name:?} is not a repository name (lowercase letters, digits, '.', '_', '-', separated by '/')"
            ));
        }
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(format!("{t:?} is not a tag"));
        }
    }
    let tag_given = tag.is_some();
    let tag = match (tag, digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(RegistryRef {
        host,
        name,
        tag,
        digest: digest.map(|d| d.to_ascii_lowercase()),
        tag_given,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> RegistryRef {
        match ImageRef::parse(s).unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn registry_references() {
        let r = reg("docker://debian:bookworm");
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.tag.as_deref()),
            ("docker.io", "library/debian", Some("bookworm"))
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(
            ImageRef::Registry(r.clone()).default_name(),
            "debian-bookworm"
        );
        let r = reg("docker://alpine");
        assert_eq!(r.reference(), "latest");
        assert_eq!(ImageRef::Registry(r).default_name(), "alpine");
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = reg(&format!("docker://127.0.0.1:5000/team/img@{d}"));
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.name, "team/img");
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), d);
        assert_eq!(ImageRef::Registry(r).default_name(), "img-abababababab");
        let r = reg("docker://ghcr.io/owner/image:v1.2");
        assert_eq!(
            (r.host.as_str(), r.name.as_str()),
            ("ghcr.io", "owner/image")
        );
        let r = reg("docker://localhost/x");
        assert_eq!(r.host, "localhost");
        let r = reg("docker://user/repo:1");
        assert_eq!(
            (r.host.as_str(), r.name.as_str()),
            ("docker.io", "user/repo")
        );
        for bad in [
            "docker://",
            "docker://Debian",
            "docker://debian:",
            "docker://debian@sha256:12",
            "docker://debian@md5:00",
            "docker://a//b",
            "docker://debian:bad tag",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_references() {
        assert_eq!(
            ImageRef::parse("oci:/tmp/layout:v1").unwrap(),
            ImageRef::OciDir {
                dir: "/tmp/layout".into(),
                tag: Some("v1".into())
            }
        );
        let a = ImageRef::parse("oci-archive:./img.tar").unwrap();
        assert_eq!(
            a,
            ImageRef::OciArchive {
                file: "./img.tar".into(),
                tag: None
            }
        );
        assert_eq!(a.default_name(), "img");
        assert!(ImageRef::parse("oci:").is_err());
        assert!(ImageRef::parse("docker-archive:").is_err());
        assert!(is_image("docker://x") && !is_image("https://x/y.tar.gz"));
        assert_eq!(sanitize_name("..a b"), "a-b");
    }
}
