//! Registry credentials and the token handshake of the distribution API.
//!
//! Credentials come from the file podman, skopeo and docker write on
//! `login`: `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`,
//! else `~/.config/containers/auth.json`, else `~/.docker/config.json` (the
//! first that exists). Only inline `auth` entries are read, not credential
//! helpers. Without an entry, pulls are anonymous (Docker Hub and GHCR hand
//! out anonymous pull tokens).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine;
use serde::Deserialize;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.user)
    }
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
}

/// The auth files to look in, in order.
fn candidates() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut v = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        v.push(f);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        v.push(d.join("containers/auth.json"));
    }
    if let Some(h) = env("HOME") {
        v.push(h.join(".config/containers/auth.json"));
        v.push(h.join(".docker/config.json"));
    }
    v
}

/// Credentials for `host`/`repo` from the first auth file that exists.
pub fn lookup(host: &str, repo: &str) -> Result<Option<Credentials>> {
    for f in candidates() {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", f.display())),
        };
        return find(&text, host, repo).with_context(|| format!("reading {}", f.display()));
    }
    Ok(None)
}

/// The entry for `host` in an auth file's text: the most specific key
/// (`host/ns/repo` before `host`), with or without a scheme; Docker Hub
/// also under its legacy `https://index.docker.io/v1/`.
pub fn find(text: &str, host: &str, repo: &str) -> Result<Option<Credentials>> {
    let file: AuthFile = serde_json::from_str(text).context("not an auth.json file")?;
    let norm = |k: &str| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let k = k.strip_suffix("/v1").or(k.strip_suffix("/v2")).unwrap_or(k);
        match k {
            "index.docker.io" | "registry-1.docker.io" => super::reference::DOCKER_HUB.to_string(),
            k => k.to_string(),
        }
    };
    let full = format!("{host}/{repo}");
    let best = file
        .auths
        .iter()
        .map(|(k, e)| (norm(k), e))
        .filter(|(k, _)| full == *k || full.starts_with(&format!("{k}/")))
        .max_by_key(|(k, _)| k.len());
    let Some((key, entry)) = best else {
        return Ok(None);
    };
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .with_context(|| format!("the auth of {key} is not base64"))?;
    let raw = String::from_utf8(raw).with_context(|| format!("the auth of {key} is not text"))?;
    let (user, password) = raw
        .split_once(':')
        .with_context(|| format!("the auth of {key} is not USER:PASSWORD"))?;
    Ok(Some(Credentials {
        user: user.into(),
        password: password.into(),
    }))
}

/// A `WWW-Authenticate` challenge: the scheme and its parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth.docker.io/token",service="x",scope="a:b:pull,push"`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, mut rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"')?;
                (&q[..end], &q[end + 1..])
            }
            None => after.split_at(after.find(',').unwrap_or(after.len())),
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = after;
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:library/debian:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn auth_file_entries() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"ghcr.io":{{"auth":"{}"}},"ghcr.io/me/private":{{"auth":"{}"}},"other.io":{{}}}}}}"#,
            enc("hub:pw"),
            enc("gh:pw1"),
            enc("me:pw2")
        );
        let user = |h: &str, r: &str| find(&text, h, r).unwrap().map(|c| c.user);
        assert_eq!(user("docker.io", "library/debian").as_deref(), Some("hub"));
        assert_eq!(user("ghcr.io", "x/y").as_deref(), Some("gh"));
        assert_eq!(user("ghcr.io", "me/private").as_deref(), Some("me"));
        assert_eq!(user("other.io", "a"), None);
        assert_eq!(user("quay.io", "a"), None);
        assert!(find("not json", "a", "b").is_err());
        let c = Credentials {
            user: "a".into(),
            password: "b".into(),
        };
        assert_eq!(c.basic(), "Basic YTpi");
        assert!(!format!("{c:?}").contains('b'));
    }
}
