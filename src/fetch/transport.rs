//! Getting bytes from a URL: `http://`, `https://`, `file://` or a plain
//! path. Transient failures (connection errors, 5xx, 429) are retried with
//! backoff; every error names the URL. A download opened with
//! [`Transport::get_download`] resumes a body cut short with a `Range`
//! request (see [`Resuming`]).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::error::hinted;

use super::resume::{ResumeFrom, Resuming};

/// Settings, from the command line or environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Give up on a connection, or on a read that stalls, after this long.
    pub timeout: Duration,
    /// Attempts for transient failures, resumes of a cut download included
    /// (1 = neither retry nor resume; see [`Attempts`]).
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
    /// From `--timeout` / `XROOT_TIMEOUT` and `--retries` / `XROOT_RETRIES`
    /// (see `knobs`).
    pub fn from_knobs() -> Config {
        let k = crate::knobs::get();
        Config {
            timeout: k.timeout,
            attempts: k.attempts.max(1),
            ..Config::default()
        }
    }
}

/// The attempt budget of one download (`Config::attempts`), shared by
/// everything that tries it again: the connection retries of
/// [`Transport::get_download`], the resumes of its [`Resuming`] reader and
/// the caller's restarts from zero. Each request for the file is one
/// attempt, so `XROOT_RETRIES=3` means at most three requests in all and
/// `XROOT_RETRIES=1` means neither retry nor resume. Clones share the count.
#[derive(Debug, Clone)]
pub struct Attempts {
    used: Arc<AtomicU32>,
    max: u32,
    backoff: Duration,
}

impl Attempts {
    /// A fresh budget; the first attempt is under way.
    pub fn new(cfg: &Config) -> Attempts {
        Attempts {
            used: Arc::new(AtomicU32::new(1)),
            max: cfg.attempts.max(1),
            backoff: cfg.backoff,
        }
    }

    /// Attempts made so far (the current one included).
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::SeqCst)
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Starts the next attempt if the budget allows one: its number (2 or
    /// more) and the delay to wait before it (the backoff, doubled for each
    /// attempt after the second).
    pub fn next(&self) -> Option<(u32, Duration)> {
        let n = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                (u < self.max).then_some(u + 1)
            })
            .ok()?
            + 1;
        let doublings = (n - 2).min(20);
        Some((n, self.backoff.saturating_mul(1 << doublings)))
    }
}

/// Shows a warning (how a resume is announced; the transport has no `Ui`).
pub type Warn = Box<dyn Fn(&str) + Send>;

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
            // Redirects are followed by `call` (below), which checks them.
            .redirects(0)
            .user_agent(concat!("xroot/", env!("CARGO_PKG_VERSION")))
            .build();
        Transport { agent, cfg }
    }

    /// Opens `url` for reading.
    pub fn get(&self, url: &str) -> Result<Body> {
        if let Some(path) = local_path(url) {
            return open_local(url, path);
        }
        let resp = self.request(url, &Attempts::new(&self.cfg))?;
        let len = content_length(&resp);
        Ok(Body {
            len,
            reader: Box::new(resp.into_reader()),
        })
    }

    /// Opens `url` like [`get`](Self::get), for a large download: an
    /// `http(s)` body cut short is resumed where it stopped when the server
    /// allows it (see [`Resuming`](super::resume::Resuming)). Every request, resumes included, takes
    /// an attempt from `attempts`; `warn` announces each resume.
    pub fn get_download(&self, url: &str, attempts: &Attempts, warn: Warn) -> Result<Body> {
        if let Some(path) = local_path(url) {
            return open_local(url, path);
        }
        let resp = self.request(url, attempts)?;
        let len = content_length(&resp);
        let Some(from) = ResumeFrom::of(&resp) else {
            return Ok(Body {
                len,
                reader: Box::new(resp.into_reader()),
            });
        };
        Ok(Body {
            len,
            reader: Box::new(Resuming::new(
                self.agent.clone(),
                url,
                from,
                attempts.clone(),
                warn,
                Box::new(resp.into_reader()),
            )),
        })
    }

    /// The HTTP agent (its timeouts and user agent), for requests that need
    /// headers of their own (the registry client); send them with [`call`](Self::call).
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// Sends `req`, retrying transient failures (connection errors, 5xx,
    /// 429) within a fresh attempt budget. An HTTP error status is returned
    /// as is, for the caller to act on (a registry's 401 asks for a token).
    // ureq's own error type, unboxed: callers match on its status.
    #[allow(clippy::result_large_err)]
    pub fn call(&self, req: &ureq::Request) -> Result<ureq::Response, ureq::Error> {
        let attempts = Attempts::new(&self.cfg);
        loop {
            match follow(&self.agent, req) {
                Err(e) if transient_ureq(&e) => match attempts.next() {
                    Some((_, delay)) => std::thread::sleep(delay),
                    None => return Err(e),
                },
                res => return res,
            }
        }
    }

    /// GET `url` (http or https), retrying transient failures while
    /// `attempts` allows.
    fn request(&self, url: &str, attempts: &Attempts) -> Result<ureq::Response> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(hinted(
                format!("unsupported URL {url:?}"),
                "use http://, https://, file:// or a local path",
            ));
        }
        loop {
            match call(&self.agent, url, &[]) {
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    if transient(&e) {
                        if let Some((_, delay)) = attempts.next() {
                            std::thread::sleep(delay);
                            continue;
                        }
                    }
                    return Err(describe(url, e, attempts.used()));
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

fn open_local(url: &str, path: PathBuf) -> Result<Body> {
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
    Ok(Body {
        len,
        reader: Box::new(f),
    })
}

pub(super) fn content_length(resp: &ureq::Response) -> Option<u64> {
    resp.header("Content-Length")
        .and_then(|v| v.trim().parse().ok())
}

/// Redirects followed per request, as curl's `--max-redirs` would.
const MAX_REDIRECTS: usize = 8;

/// Why a request failed: ureq's error, or a redirect xroot refuses.
#[derive(Debug)]
pub(super) enum Failure {
    Ureq(Box<ureq::Error>),
    /// A redirect to something that is not an `http(s)://` URL with a host.
    BadRedirect {
        to: String,
        why: String,
    },
    TooManyRedirects,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Ureq(e) => e.fmt(f),
            Failure::BadRedirect { to, why } => {
                write!(f, "redirected to {}: {why}", crate::ui::escape(to))
            }
            Failure::TooManyRedirects => write!(f, "more than {MAX_REDIRECTS} redirects"),
        }
    }
}

/// GET `url` with `headers`, following redirects itself. ureq 2 would
/// follow them too, but it panics (abort, exit 134) on a redirect to a URL
/// without a host (`file:///etc/passwd`, `gopher:/x`): so the agent follows
/// none, and each `Location` is resolved and checked here first: only
/// `http://` and `https://` URLs with a host are followed.
pub(super) fn call(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<ureq::Response, Failure> {
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let mut req = agent.get(&current);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let resp = req.call().map_err(|e| Failure::Ureq(Box::new(e)))?;
        if !(300..400).contains(&resp.status()) {
            return Ok(resp);
        }
        // Any other 3xx, or one without a Location that ureq can read (a
        // header with control characters), has no body worth reading.
        let location = match resp.header("Location") {
            Some(l) if matches!(resp.status(), 301 | 302 | 303 | 307 | 308) => l,
            _ => {
                return Err(Failure::BadRedirect {
                    to: "nowhere".into(),
                    why: format!("HTTP {} without a usable Location header", resp.status()),
                })
            }
        };
        current =
            redirect_target(resp.get_url(), location).map_err(|why| Failure::BadRedirect {
                to: location.to_string(),
                why,
            })?;
    }
    Err(Failure::TooManyRedirects)
}

/// Sends `req`, following redirects as [`call`] does (each `Location`
/// checked first), keeping its headers but dropping `Authorization` when a
/// redirect leaves the host (a registry's blob handed to a CDN must not get
/// the registry's token). A refused or endless redirect comes back as the
/// 3xx status itself.
// ureq's own error type, unboxed, as [`Transport::call`] returns it.
#[allow(clippy::result_large_err)]
fn follow(agent: &ureq::Agent, req: &ureq::Request) -> Result<ureq::Response, ureq::Error> {
    let mut cur = req.clone();
    for _ in 0..=MAX_REDIRECTS {
        let resp = cur.clone().call()?;
        if !(300..400).contains(&resp.status()) {
            return Ok(resp);
        }
        let from = resp.get_url().to_string();
        let Some(target) = resp
            .header("Location")
            .and_then(|l| redirect_target(&from, l).ok())
        else {
            return Err(ureq::Error::Status(resp.status(), resp));
        };
        let host = |u: &str| {
            url::Url::parse(u)
                .ok()
                .map(|u| (u.host_str().map(str::to_string), u.port_or_known_default()))
        };
        let same_host = host(&from) == host(&target);
        let mut next = agent.get(&target);
        for name in cur.header_names() {
            if name.eq_ignore_ascii_case("authorization") && !same_host {
                continue;
            }
            if let Some(v) = cur.header(&name) {
                next = next.set(&name, v);
            }
        }
        cur = next;
    }
    let resp = cur.call()?;
    Err(ureq::Error::Status(resp.status(), resp))
}

/// The URL a `Location` header sends `base` to, if xroot follows it.
fn redirect_target(base: &str, location: &str) -> Result<String, String> {
    let base = url::Url::parse(base).map_err(|e| e.to_string())?;
    let to = base.join(location.trim()).map_err(|e| e.to_string())?;
    if !matches!(to.scheme(), "http" | "https") {
        return Err(format!(
            "not an http:// or https:// URL (scheme {:?})",
            to.scheme()
        ));
    }
    if to.host_str().map_or(true, str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(to.into())
}

/// Whether trying the same request again may help.
pub(super) fn transient(e: &Failure) -> bool {
    match e {
        Failure::Ureq(e) => transient_ureq(e),
        _ => false,
    }
}

fn transient_ureq(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Status(code, _) => *code >= 500 || *code == 429 || *code == 408,
        ureq::Error::Transport(t) => !matches!(
            t.kind(),
            ureq::ErrorKind::InvalidUrl
                | ureq::ErrorKind::UnknownScheme
                | ureq::ErrorKind::TooManyRedirects
                | ureq::ErrorKind::BadStatus
                | ureq::ErrorKind::BadHeader
        ),
    }
}

fn describe(url: &str, e: Failure, attempts: u32) -> anyhow::Error {
    let tries = if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    };
    let e = match e {
        Failure::Ureq(e) => *e,
        Failure::TooManyRedirects => {
            return hinted(
                format!("GET {url}: {e}{tries}"),
                "the server redirects in a loop; use another --mirror",
            )
        }
        Failure::BadRedirect { .. } => {
            return hinted(
                format!("GET {url}: {e}"),
                "a mirror may only redirect to http:// or https:// URLs; use another --mirror",
            )
        }
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
    fn redirects_are_checked() {
        let b = "http://m.example/a/b";
        assert_eq!(
            redirect_target(b, "c").as_deref(),
            Ok("http://m.example/a/c")
        );
        assert_eq!(
            redirect_target(b, "https://x.example/y").as_deref(),
            Ok("https://x.example/y")
        );
        assert_eq!(
            redirect_target(b, "//o.example/z").as_deref(),
            Ok("http://o.example/z")
        );
        for bad in [
            "file:///etc/passwd",
            "gopher:/x",
            "ftp://example.com/x",
            "data:x",
            "http://[::1",
            "http://",
            "javascript:alert(1)",
        ] {
            assert!(redirect_target(b, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_paths() {
        assert_eq!(local_path("file:///a/b"), Some(PathBuf::from("/a/b")));
        assert_eq!(local_path("/a/b"), Some(PathBuf::from("/a/b")));
        assert_eq!(local_path("rel.tar.gz"), Some(PathBuf::from("rel.tar.gz")));
        assert_eq!(local_path("http://x/y"), None);
    }

    #[test]
    fn attempts_are_shared_and_back_off() {
        let cfg = Config {
            timeout: Duration::from_secs(1),
            attempts: 3,
            backoff: Duration::from_millis(500),
        };
        let a = Attempts::new(&cfg);
        let b = a.clone();
        assert_eq!(a.used(), 1);
        assert_eq!(a.next(), Some((2, Duration::from_millis(500))));
        assert_eq!(b.next(), Some((3, Duration::from_millis(1000))));
        assert_eq!(a.next(), None);
        assert_eq!(b.used(), 3);
        let one = Attempts::new(&Config {
            attempts: 1,
            ..cfg.clone()
        });
        assert_eq!(one.next(), None);
        let many = Attempts::new(&Config {
            attempts: u32::MAX,
            ..cfg
        });
        for _ in 0..100 {
            assert!(many.next().is_some());
        }
    }
}
