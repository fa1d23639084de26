//! Getting bytes from a URL: `http://`, `https://`, `file://` or a plain
//! path. Transient failures (connection errors, 5xx, 429) are retried with
//! backoff; every error names the URL. A download opened with
//! [`Transport::get_download`] resumes a body cut short with a `Range`
//! request (see [`Resuming`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::error::hinted;

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
            .redirects(8)
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
    /// allows it (see [`Resuming`]). Every request, resumes included, takes
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
            reader: Box::new(Resuming {
                agent: self.agent.clone(),
                url: url.to_string(),
                from,
                delivered: 0,
                attempts: attempts.clone(),
                warn,
                failed: None,
                inner: Box::new(resp.into_reader()),
            }),
        })
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
            match self.agent.get(url).call() {
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

fn content_length(resp: &ureq::Response) -> Option<u64> {
    resp.header("Content-Length")
        .and_then(|v| v.trim().parse().ok())
}

/// Whether trying the same request again may help.
fn transient(e: &ureq::Error) -> bool {
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

/// What a first response (`200`) tells about resuming its body.
#[derive(Debug, Clone)]
struct ResumeFrom {
    /// The body's declared length: a resume must continue this file to
    /// exactly this length.
    total: u64,
    /// Where the body came from after redirects: resumes ask the same
    /// server (a mirror director could send them to another mirror, with
    /// another copy).
    url: String,
    /// `If-Range` for the resume requests: the strong `ETag`, else
    /// `Last-Modified`, else none (then only the checksum notices a file
    /// that changed between two requests).
    if_range: Option<String>,
    /// The first response's `ETag`, weak or strong: a `206` with another
    /// one is of another file.
    etag: Option<String>,
}

impl ResumeFrom {
    /// Resuming needs a `200` with a `Content-Length` (to see that a body
    /// ended early, and to check a resume continues the same-sized file),
    /// and `Accept-Ranges: bytes`: a server that does not advertise ranges
    /// would most likely send the whole file again, which the restart from
    /// zero does anyway, without a wasted request. A body that ureq
    /// decompresses (`Content-Encoding`) has no usable length: ureq drops
    /// the header, and byte offsets would not match what was delivered.
    fn of(resp: &ureq::Response) -> Option<ResumeFrom> {
        if resp.status() != 200 || resp.header("Content-Encoding").is_some() {
            return None;
        }
        let total = content_length(resp)?;
        let ranges = resp.header("Accept-Ranges")?;
        if !ranges
            .split(',')
            .any(|u| u.trim().eq_ignore_ascii_case("bytes"))
        {
            return None;
        }
        let etag = resp.header("ETag").map(|v| v.trim().to_string());
        // RFC 9110 13.1.5: If-Range never carries a weak entity tag.
        let if_range = etag
            .clone()
            .filter(|t| !t.starts_with("W/"))
            .or_else(|| resp.header("Last-Modified").map(|v| v.trim().to_string()));
        Some(ResumeFrom {
            total,
            url: resp.get_url().to_string(),
            if_range,
            etag,
        })
    }

    /// Why a reply to `Range: bytes=<at>-` cannot continue the body, if it
    /// cannot.
    fn refuses(&self, resp: &ureq::Response, at: u64) -> Option<String> {
        if resp.status() != 206 {
            return Some(format!(
                "it answered HTTP {} instead of 206 Partial Content",
                resp.status()
            ));
        }
        let Some(cr) = resp.header("Content-Range") else {
            return Some("its 206 reply has no Content-Range".into());
        };
        let Some((start, end, total)) = parse_content_range(cr) else {
            return Some(format!("its Content-Range {cr:?} is malformed"));
        };
        if start != at || total != Some(self.total) || end + 1 != self.total {
            return Some(format!(
                "its Content-Range {cr:?} is not bytes {at}-{}/{}",
                self.total - 1,
                self.total
            ));
        }
        if let Some(len) = content_length(resp).filter(|l| *l != self.total - at) {
            return Some(format!(
                "its Content-Length {len} disagrees with its Content-Range {cr:?}"
            ));
        }
        if resp.header("Content-Encoding").is_some() {
            return Some("its 206 reply is content-encoded".into());
        }
        let etag = resp.header("ETag").map(str::trim);
        if let (Some(first), Some(now)) = (self.etag.as_deref(), etag) {
            if first != now {
                return Some(format!("the file changed (ETag {first} became {now})"));
            }
        }
        None
    }
}

/// Parses `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`) into
/// (START, END, TOTAL). `None` for anything else, including the
/// `bytes */TOTAL` of a 416 and ranges that end before they start or past
/// the total.
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let v = v.trim();
    let (unit, rest) = v.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, total) = rest.trim().split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (start, end) = (num(start)?, num(end)?);
    let total = match total.trim() {
        "*" => None,
        t => Some(num(t)?),
    };
    if start > end || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, end, total))
}

/// The body of an `http(s)` download that resumes transparently: when a
/// read fails (connection reset or closed, read timeout) or the body ends
/// before its `Content-Length`, and an attempt is left in the shared
/// [`Attempts`], it warns, waits the backoff and asks the same server for
/// `Range: bytes=<delivered>-` (with `If-Range` when the first response
/// had a validator). Only a `206` whose `Content-Range` is exactly
/// `bytes <delivered>-<total-1>/<total>` is spliced on; the reader's
/// consumer (hashes, decompressor, extractor) sees one seamless stream.
/// A reply that cannot continue the body (`200`: ranges ignored or the
/// file changed; `416`; another range or length; an error status) ends
/// the resuming: the read fails with the original error, extended by the
/// reason, and the caller restarts from zero. A resume request that fails
/// transiently (connection error, 5xx) is tried again while attempts are
/// left. The final checksum still guards the whole: a splice of two
/// different files cannot verify.
struct Resuming {
    agent: ureq::Agent,
    /// The URL as asked for, for messages.
    url: String,
    from: ResumeFrom,
    /// Body bytes handed out so far (across resumes).
    delivered: u64,
    attempts: Attempts,
    warn: Warn,
    /// Once resuming has failed: every later read fails the same way.
    failed: Option<(io::ErrorKind, String)>,
    inner: Box<dyn Read + Send + Sync>,
}

impl Read for Resuming {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        let left = self.from.total.saturating_sub(self.delivered);
        if buf.is_empty() || left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        loop {
            let cause = match self.inner.read(&mut buf[..want]) {
                Ok(0) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "response body closed before all bytes were read",
                ),
                Ok(n) => {
                    self.delivered += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            if let Err(e) = self.resume(cause) {
                self.failed = Some((e.kind(), e.to_string()));
                return Err(e);
            }
        }
    }
}

impl Resuming {
    /// Replaces the cut body with its continuation, or says why not.
    fn resume(&mut self, cause: io::Error) -> io::Result<()> {
        let at = self.delivered;
        let total = self.from.total;
        let refused = |cause: &io::Error, why: String| {
            io::Error::new(
                cause.kind(),
                format!("{cause}; could not resume at byte {at}: {why}"),
            )
        };
        let mut last_failure = None;
        while let Some((n, delay)) = self.attempts.next() {
            (self.warn)(&format!(
                "download of {} cut after {at} of {total} bytes: {cause}; resuming at byte {at} ({n}/{})",
                self.url,
                self.attempts.max()
            ));
            std::thread::sleep(delay);
            let mut req = self
                .agent
                .get(&self.from.url)
                .set("Range", &format!("bytes={at}-"));
            if let Some(v) = &self.from.if_range {
                req = req.set("If-Range", v);
            }
            match req.call() {
                Ok(resp) => {
                    if let Some(why) = self.from.refuses(&resp, at) {
                        return Err(refused(&cause, why));
                    }
                    self.inner = Box::new(resp.into_reader());
                    return Ok(());
                }
                Err(e) if transient(&e) => last_failure = Some(e.to_string()),
                Err(e) => return Err(refused(&cause, e.to_string())),
            }
        }
        Err(match last_failure {
            Some(why) => refused(&cause, why),
            None => cause,
        })
    }
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

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-999/1000"),
            Some((100, 999, Some(1000)))
        );
        assert_eq!(parse_content_range(" Bytes  0-0/1 "), Some((0, 0, Some(1))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        for bad in [
            "",
            "bytes",
            "bytes */1000",
            "bytes 100-/1000",
            "bytes -999/1000",
            "bytes 100-999",
            "bytes 999-100/1000",
            "bytes 100-1000/1000",
            "bytes +1-9/10",
            "bytes 1-9/-10",
            "bytes 1-9/x",
            "items 0-9/10",
            "bytes 0-99999999999999999999/1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    fn response(head: &str) -> ureq::Response {
        format!("{head}\r\n\r\n").parse().unwrap()
    }

    #[test]
    fn when_a_body_can_be_resumed() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nAccept-Ranges: bytes";
        let from = ResumeFrom::of(&response(&format!("{ok}\r\nETag: \"a\""))).unwrap();
        assert_eq!(from.total, 1000);
        assert_eq!(from.if_range.as_deref(), Some("\"a\""));
        // A weak ETag is never an If-Range; Last-Modified is used instead.
        let from = ResumeFrom::of(&response(&format!(
            "{ok}\r\nETag: W/\"a\"\r\nLast-Modified: Tue, 01 Oct 2024 10:00:00 GMT"
        )))
        .unwrap();
        assert_eq!(
            from.if_range.as_deref(),
            Some("Tue, 01 Oct 2024 10:00:00 GMT")
        );
        assert_eq!(ResumeFrom::of(&response(ok)).unwrap().if_range, None);
        for no in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1000",
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nAccept-Ranges: none",
            "HTTP/1.1 200 OK\r\nAccept-Ranges: bytes",
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 1000\r\nAccept-Ranges: bytes",
        ] {
            assert!(ResumeFrom::of(&response(no)).is_none(), "{no}");
        }

        let from = ResumeFrom::of(&response(&format!("{ok}\r\nETag: \"a\""))).unwrap();
        let good = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 400-999/1000\r\nContent-Length: 600";
        assert_eq!(from.refuses(&response(good), 400), None);
        assert_eq!(
            from.refuses(&response(&format!("{good}\r\nETag: \"a\"")), 400),
            None
        );
        for (bad, why) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 1000", "HTTP 200"),
            ("HTTP/1.1 206 Partial Content\r\nContent-Length: 600", "no Content-Range"),
            ("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 399-999/1000", "is not bytes 400-999/1000"),
            ("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 400-899/1000", "is not bytes"),
            ("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 400-999/2000", "is not bytes"),
            ("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 400-999/*", "is not bytes"),
            ("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 400-999/1000\r\nContent-Length: 700", "Content-Length 700"),
            (&format!("{good}\r\nETag: \"b\""), "the file changed"),
        ] {
            let r = from.refuses(&response(bad), 400);
            assert!(r.as_deref().is_some_and(|r| r.contains(why)), "{bad}: {r:?}");
        }
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
