//! Resuming a cut HTTP download where it stopped (`Range`/`If-Range`),
//! transparently to the reader: the hasher, gunzip and tar see one
//! uninterrupted body. Used by [`Transport::get_download`](super::transport::Transport::get_download).

use std::io::{self, Read};

use super::transport::{call, content_length, transient, Attempts, Warn};

/// What a first response (`200`) tells about resuming its body.
#[derive(Debug, Clone)]
pub(super) struct ResumeFrom {
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
    pub(super) fn of(resp: &ureq::Response) -> Option<ResumeFrom> {
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
pub(super) struct Resuming {
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
    /// Reads `inner`, the body of the first response, resuming as `from` allows.
    pub(super) fn new(
        agent: ureq::Agent,
        url: &str,
        from: ResumeFrom,
        attempts: Attempts,
        warn: Warn,
        inner: Box<dyn Read + Send + Sync>,
    ) -> Resuming {
        Resuming {
            agent,
            url: url.to_string(),
            from,
            delivered: 0,
            attempts,
            warn,
            failed: None,
            inner,
        }
    }

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
            let range = format!("bytes={at}-");
            let mut headers = vec![("Range", range.as_str())];
            if let Some(v) = &self.from.if_range {
                headers.push(("If-Range", v));
            }
            match call(&self.agent, &self.from.url, &headers) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
