//! Getting bytes from a URL: `http://`, `https://`, `file://` or a plain
//! path. Transient failures (connection errors, 5xx, 429) are retried with
//! backoff; every error names the URL.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::error::hinted;

/// Settings, from the command line or environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Give up on a connection, or on a read that stalls, after this long.
    pub timeout: Duration,
    /// Attempts for transient failures (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Duration::from_secs(30),
            attempts: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

impl Config {
    /// Defaults, overridden by `XROOT_TIMEOUT` (seconds) and `XROOT_RETRIES`.
    pub fn from_env() -> Config {
        let mut c = Config::default();
        if let Some(t) = std::env::var("XROOT_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|t| *t > 0.0)
        {
            c.timeout = Duration::from_secs_f64(t);
        }
        if let Some(n) = std::env::var("XROOT_RETRIES")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            c.attempts = n.max(1);
        }
        c
    }
}

/// An open download.
pub struct Body {
    /// Declared length (Content-Length or file size).
    pub len: Option<u64>,
    pub reader: Box<dyn Read + Send>,
}

pub struct Transport {
    agent: ureq::Agent,
    cfg: Config,
}

impl Transport {
    pub fn new(cfg: Config) -> Transport {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(cfg.timeout)
            .timeout_read(cfg.timeout)
            .redirects(8)
            .user_agent(concat!("xroot/", env!("CARGO_PKG_VERSION")))
            .build();
        Transport { agent, cfg }
    }

    /// Opens `url` for reading.
    pub fn get(&self, url: &str) -> Result<Body> {
        if let Some(path) = local_path(url) {
            let f = File::open(&path).map_err(|e| {
                hinted(
                    format!("cannot read {url}: {e}"),
                    "check the path, or the --mirror/--branch that led to it",
                )
            })?;
            // Only a regular file's size is its length: a pipe or FIFO
            // (`--from /dev/stdin`, `--from <(curl ...)`) reports 0, which
            // would otherwise cap the download at one byte.
            let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            return Ok(Body {
                len,
                reader: Box::new(f),
            });
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(hinted(
                format!("unsupported URL {url:?}"),
                "use http://, https://, file:// or a local path",
            ));
        }
        let mut delay = self.cfg.backoff;
        let mut attempt = 1;
        loop {
            match self.agent.get(url).call() {
                Ok(resp) => {
                    let len = resp
                        .header("Content-Length")
                        .and_then(|v| v.trim().parse().ok());
                    return Ok(Body {
                        len,
                        reader: Box::new(resp.into_reader()),
                    });
                }
                Err(e) => {
                    let transient = match &e {
                        ureq::Error::Status(code, _) => {
                            *code >= 500 || *code == 429 || *code == 408
                        }
                        ureq::Error::Transport(t) => !matches!(
                            t.kind(),
                            ureq::ErrorKind::InvalidUrl
                                | ureq::ErrorKind::UnknownScheme
                                | ureq::ErrorKind::TooManyRedirects
                                | ureq::ErrorKind::BadStatus
                                | ureq::ErrorKind::BadHeader
                        ),
                    };
                    if transient && attempt < self.cfg.attempts {
                        std::thread::sleep(delay);
                        delay *= 2;
                        attempt += 1;
                        continue;
                    }
                    return Err(describe(url, e, attempt));
                }
            }
        }
    }

    /// Reads a small text resource whole (an index or checksum file).
    pub fn get_text(&self, url: &str, max: u64) -> Result<String> {
        let body = self.get(url)?;
        let mut buf = Vec::new();
        body.reader
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| anyhow!("reading {url}: {e}"))?;
        if buf.len() as u64 > max {
            return Err(anyhow!(
                "{url} is larger than {max} bytes; this is not the small text file expected"
            ));
        }
        String::from_utf8(buf).map_err(|_| anyhow!("{url} is not UTF-8 text"))
    }

    /// Whether a URL exists (for optional files such as `.sha256`): Ok(None) on 404.
    pub fn get_text_optional(&self, url: &str, max: u64) -> Result<Option<String>> {
        match self.get_text(url, max) {
            Ok(t) => Ok(Some(t)),
            Err(e)
                if e.to_string().contains("HTTP 404")
                    || (local_path(url).is_some() && e.to_string().contains("No such file")) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// `file:///x` or a bare path → the path.
pub fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(p) = url.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    if url.starts_with('/')
        || url.starts_with("./")
        || url.starts_with("../")
        || !url.contains("://")
    {
        return Some(PathBuf::from(url));
    }
    None
}

fn describe(url: &str, e: ureq::Error, attempts: u32) -> anyhow::Error {
    let tries = if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    };
    match e {
        ureq::Error::Status(code, resp) => {
            let hint = if code == 404 {
                "the mirror has no such file: check --mirror, --branch and the arch (Alpine's layout is {mirror}/{branch}/releases/{arch}/)"
            } else {
                "the server failed; try again later or use another --mirror"
            };
            hinted(
                format!("GET {url}: HTTP {code} {}{tries}", resp.status_text()),
                hint,
            )
        }
        ureq::Error::Transport(t) => {
            let hint = match t.kind() {
                ureq::ErrorKind::TooManyRedirects => {
                    "the server redirects in a loop; use another --mirror"
                }
                ureq::ErrorKind::Dns => {
                    "check the host name and your network, or set --mirror / XROOT_MIRROR"
                }
                ureq::ErrorKind::ConnectionFailed => {
                    "is the mirror up and reachable? Set --mirror / XROOT_MIRROR to another one"
                }
                ureq::ErrorKind::Io => {
                    "the connection failed or timed out (XROOT_TIMEOUT sets the limit in seconds)"
                }
                _ => "check the URL and your network",
            };
            hinted(format!("GET {url}: {t}{tries}"), hint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths() {
        assert_eq!(local_path("file:///a/b"), Some(PathBuf::from("/a/b")));
        assert_eq!(local_path("/a/b"), Some(PathBuf::from("/a/b")));
        assert_eq!(local_path("rel.tar.gz"), Some(PathBuf::from("rel.tar.gz")));
        assert_eq!(local_path("http://x/y"), None);
    }
}
