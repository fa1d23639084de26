//! A client for the distribution API (what `docker pull` speaks):
//! `GET /v2/NAME/manifests/REF` and `GET /v2/NAME/blobs/DIGEST`, over the
//! fetch transport (ureq, with its timeouts and retries). A `401` with a
//! `Bearer` challenge is answered as anonymous pulls do: a token from the
//! challenge's realm for `repository:NAME:pull` (with the auth file's
//! credentials when it has some), then the request again; `Basic` gets the
//! credentials themselves. Plain http only for loopback registries or
//! hosts listed in `XROOT_INSECURE_REGISTRIES`.

use std::io::Read;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::auth::{self, Credentials};
use super::reference::RegistryRef;
use crate::error::{hinted, hinted_retryable};
use crate::fetch::transport::Transport;

/// Hosts (`HOST[:PORT]`, comma-separated) to reach over plain http.
pub const ENV_INSECURE: &str = "XROOT_INSECURE_REGISTRIES";

/// What a manifest request accepts: OCI and Docker indexes and manifests.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

pub struct Registry<'a> {
    t: &'a Transport,
    r: RegistryRef,
    /// `http(s)://HOST/v2/NAME`
    base: String,
    creds: Option<Credentials>,
    /// The `Authorization` value that worked (a token, or Basic).
    authorization: Option<String>,
}

#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Whether `host` is reached over plain http.
pub fn insecure(host: &str) -> bool {
    let bare = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(bare, "localhost" | "[::1]")
        || bare
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
        || std::env::var(ENV_INSECURE)
            .unwrap_or_default()
            .split(',')
            .any(|h| h.trim() == host)
}

impl<'a> Registry<'a> {
    pub fn new(t: &'a Transport, r: &RegistryRef) -> Result<Registry<'a>> {
        let scheme = if insecure(&r.host) { "http" } else { "https" };
        Ok(Registry {
            t,
            base: format!("{scheme}://{}/v2/{}", r.api_host(), r.name),
            creds: auth::lookup(&r.host, &r.name)?,
            r: r.clone(),
            authorization: None,
        })
    }

    /// The manifest or index `reference` (tag or digest) names: its bytes
    /// and the media type the registry gave.
    pub fn manifest(&mut self, reference: &str, max: u64) -> Result<(Vec<u8>, String)> {
        let url = format!("{}/manifests/{reference}", self.base);
        let resp = self.get(&url, Some(MANIFEST_TYPES), "manifest")?;
        let ctype = resp.content_type().to_string();
        let mut buf = Vec::new();
        resp.into_reader()
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| hinted_retryable(format!("reading {url}: {e}"), "try again"))?;
        if buf.len() as u64 > max {
            return Err(hinted(
                format!("{url} is larger than {max} bytes; that is no image manifest"),
                "check the reference",
            ));
        }
        Ok((buf, ctype))
    }

    /// Opens a blob (unverified: the caller checks its digest as it reads).
    pub fn blob(&mut self, digest: &str) -> Result<Box<dyn Read + Send>> {
        let url = format!("{}/blobs/{digest}", self.base);
        let resp = self.get(&url, None, "blob")?;
        Ok(Box::new(resp.into_reader()))
    }

    fn request(&self, url: &str, accept: Option<&str>) -> ureq::Request {
        let mut req = self.t.agent().get(url);
        if let Some(a) = accept {
            req = req.set("Accept", a);
        }
        if let Some(a) = &self.authorization {
            req = req.set("Authorization", a);
        }
        req
    }

    /// GET with authentication: on a first `401`, answer its challenge and
    /// try once more.
    fn get(&mut self, url: &str, accept: Option<&str>, what: &str) -> Result<ureq::Response> {
        let mut answered = false;
        loop {
            match self.t.call(&self.request(url, accept)) {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !answered => {
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_string();
                    self.answer(&challenge, url)?;
                    answered = true;
                }
                Err(e) => return Err(self.describe(url, what, e)),
            }
        }
    }

    /// Sets `authorization` from a `WWW-Authenticate` challenge.
    fn answer(&mut self, challenge: &str, url: &str) -> Result<()> {
        let host = self.r.host.clone();
        let login = || {
            hinted(
                format!("{host} wants credentials to pull {}", self.r.name),
                format!("log in with `podman login {host}` (or `docker login`); xroot reads the auth file it writes"),
            )
        };
        let Some(c) = auth::parse_challenge(challenge) else {
            return Err(hinted(
                format!("GET {url}: 401 Unauthorized, with no challenge xroot understands ({challenge:?})"),
                "check the registry address",
            ));
        };
        if c.scheme == "basic" {
            let creds = self.creds.as_ref().ok_or_else(login)?;
            self.authorization = Some(creds.basic());
            return Ok(());
        }
        if c.scheme != "bearer" {
            return Err(hinted(
                format!(
                    "{host} asks for {} authentication, which xroot does not speak",
                    c.scheme
                ),
                "use a registry with token or basic authentication",
            ));
        }
        let realm = c.params.get("realm").ok_or_else(|| {
            hinted(
                format!("{host}'s token challenge names no realm"),
                "check the registry address",
            )
        })?;
        if !(realm.starts_with("https://") || realm.starts_with("http://") && insecure(&host)) {
            return Err(hinted(
                format!("{host} sends xroot for a token to {realm:?}, which is not https"),
                format!("only loopback registries or those in {ENV_INSECURE} may use plain http"),
            ));
        }
        let scope = c
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.r.name));
        let mut req = self.t.agent().get(realm).query("scope", &scope);
        if let Some(s) = c.params.get("service") {
            req = req.query("service", s);
        }
        if let Some(creds) = &self.creds {
            req = req.set("Authorization", &creds.basic());
        }
        let resp = match self.t.call(&req) {
            Ok(r) => r,
            Err(ureq::Error::Status(401 | 403, _)) => return Err(login()),
            Err(e) => return Err(self.describe(realm, "token", e)),
        };
        let token: Token = serde_json::from_reader(resp.into_reader().take(1 << 20))
            .with_context(|| format!("reading the token from {realm}"))?;
        let token = token.token.or(token.access_token).ok_or_else(|| {
            hinted(
                format!("{realm} sent no token"),
                "check the registry address and your credentials",
            )
        })?;
        self.authorization = Some(format!("Bearer {token}"));
        Ok(())
    }

    fn describe(&self, url: &str, what: &str, e: ureq::Error) -> anyhow::Error {
        let image = self.r.to_string();
        match e {
            ureq::Error::Status(401 | 403, _) => hinted(
                format!("{} refused to give {what} of {image} (HTTP 401/403)", self.r.host),
                format!("the image may be private: log in with `podman login {}` (xroot reads its auth file), or check the name", self.r.host),
            ),
            ureq::Error::Status(404, _) if what == "manifest" => hinted(
                format!("{} has no image {image}", self.r.host),
                "check the name and tag (Docker Hub names without a '/' are library/NAME)",
            ),
            ureq::Error::Status(429, _) => hinted_retryable(
                format!("{} says too many requests (HTTP 429) for {url}", self.r.host),
                "wait and try again; logging in raises Docker Hub's pull limit",
            ),
            ureq::Error::Status(code, resp) => hinted(
                format!("GET {url}: HTTP {code} {}", resp.status_text()),
                format!("the registry could not serve this {what}; try again later"),
            ),
            ureq::Error::Transport(t) => hinted_retryable(
                format!("GET {url}: {t}"),
                match t.kind() {
                    ureq::ErrorKind::Dns => "check the registry host name and your network",
                    ureq::ErrorKind::ConnectionFailed => {
                        "is the registry up and reachable? (a plain-http registry must be on loopback or in XROOT_INSECURE_REGISTRIES)"
                    }
                    _ => "the connection failed or timed out (XROOT_TIMEOUT sets the limit in seconds)",
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_or_listed() {
        assert!(insecure("127.0.0.1:5000"));
        assert!(insecure("localhost"));
        assert!(!insecure("ghcr.io"));
        assert!(!insecure("127.0.0.1.evil.com"));
    }
}
