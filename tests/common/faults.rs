//! A fault-injecting HTTP server for the hostile-input tests (issue #5), and
//! helpers that check the store and the host were left as they were.
//!
//! [`FaultServer`] is a raw `std::net::TcpListener` server, so it can send
//! what a well-behaved HTTP library never would: a body shorter or longer
//! than its Content-Length, a connection closed mid-body, a stall, garbage
//! instead of a status line. By default it serves `../shared/alpine-mirror`
//! like [`super::MirrorServer`]; a [`Reply`] set with [`FaultServer::route`]
//! overrides one URL path. It counts requests and body bytes sent per path,
//! so tests can assert "one download" or wait until a download is under way,
//! and records each request's `Range` and `If-Range` headers
//! ([`FaultServer::requests`]). [`Reply::Ranges`] serves a file that honours
//! (or mishandles) `Range: bytes=N-` requests.
//!
//! Every loop in here is bounded: a stalled reply ends when the server is
//! dropped or after [`MAX_STALL`], whichever comes first. It listens on
//! 127.0.0.1 only.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any reply stalls or trickles, so a test that fails never
/// leaves a thread behind for long.
pub const MAX_STALL: Duration = Duration::from_secs(60);

/// The shared mirror's aarch64 release directory, as a URL path.
pub const REL: &str = "/v3.20/releases/aarch64";
pub const TARBALL: &str = "alpine-minirootfs-3.20.3-aarch64.tar.gz";

/// `REL/latest-releases.yaml`.
pub fn index_path() -> String {
    format!("{REL}/latest-releases.yaml")
}

/// `REL/<tarball>`.
pub fn tarball_path() -> String {
    format!("{REL}/{TARBALL}")
}

/// The real aarch64 tarball's bytes.
pub fn tarball_bytes() -> Vec<u8> {
    std::fs::read(
        super::mirror_dir()
            .join("v3.20/releases/aarch64")
            .join(TARBALL),
    )
    .expect("reading the shared aarch64 tarball")
}

/// The real aarch64 index's text.
pub fn index_text() -> String {
    std::fs::read_to_string(
        super::mirror_dir()
            .join("v3.20/releases/aarch64")
            .join("latest-releases.yaml"),
    )
    .expect("reading the shared aarch64 index")
}

/// What the server does for one URL path.
#[derive(Clone)]
pub enum Reply {
    /// Serve the file from the mirror directory (404 if there is none).
    Mirror,
    /// This status and body, with a correct Content-Length.
    Body(u16, Vec<u8>),
    /// An error status with a short text body.
    Status(u16),
    /// `Status(status)` for the first `times` requests, then `Mirror`.
    FailFirst { times: usize, status: u16 },
    /// The first `times` requests get half the file and a closed
    /// connection (the full length declared), then `Mirror`.
    CutFirst { times: usize },
    /// Headers declaring `declared` bytes, then `body`, then `after`.
    Lying {
        declared: u64,
        body: Vec<u8>,
        after: After,
    },
    /// A correct response whose body is sent `fast` bytes at once, then
    /// `chunk` bytes every `delay` (a slow mirror).
    Trickle {
        body: Vec<u8>,
        fast: usize,
        chunk: usize,
        delay: Duration,
    },
    /// Read the request, then say nothing (until the server is dropped).
    Hang,
    /// 302 to this location (a path or a full URL).
    Redirect(String),
    /// These bytes instead of an HTTP response, then close.
    Raw(Vec<u8>),
    /// 200 without Content-Length, then `prefix` and zero bytes for ever
    /// (until the client goes away or [`MAX_STALL`]).
    Endless { prefix: Vec<u8> },
    /// `body` served with `Accept-Ranges: bytes` (and `etag` as `ETag`, if
    /// any): a request with `Range: bytes=N-` gets what `range` says, any
    /// other a 200 with the whole body. The first `cut.times` requests
    /// send at most `cut.after` bytes of their reply's body, then close
    /// the connection or stall (the full reply length declared).
    Ranges {
        body: Vec<u8>,
        etag: Option<String>,
        cut: Cut,
        range: RangeMode,
    },
}

/// Which requests of a [`Reply::Ranges`] are cut short, and where.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cut {
    pub times: usize,
    pub after: usize,
    /// Stall (send nothing more, keep the connection open) instead of
    /// closing the connection.
    pub stall: bool,
}

/// How a [`Reply::Ranges`] answers `Range: bytes=N-`. In every mode an
/// `If-Range` that is not the current `ETag` gets a 200 with the whole
/// body (as RFC 9110 says), and a start at or past the end a 416.
#[derive(Clone)]
pub enum RangeMode {
    /// 206 with `Content-Range: bytes N-(len-1)/len` and the rest of the file.
    Honour,
    /// Ignore the range: 200 and the whole body.
    Ignore,
    /// 206 for another start (N + shift), with its Content-Range and bytes.
    WrongStart(i64),
    /// 206 with the right Content-Range, but the bytes of this other file
    /// of the same length (a file replaced between two requests, which
    /// only a validator would reveal).
    Other(Vec<u8>),
}

/// The headers of one request that matter to resuming.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub range: Option<String>,
    pub if_range: Option<String>,
}

/// What a [`Reply::Lying`] does once its body is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Close the connection.
    Close,
    /// Keep it open, sending nothing more.
    Hang,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Reply>,
    hits: HashMap<String, usize>,
    sent: HashMap<String, u64>,
    requests: HashMap<String, Vec<Seen>>,
}

pub struct FaultServer {
    pub url: String,
    root: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl FaultServer {
    /// A server over the shared Alpine mirror.
    pub fn alpine() -> FaultServer {
        FaultServer::start(super::mirror_dir())
    }

    pub fn start(root: PathBuf) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, rt) = (state.clone(), stop.clone(), root.clone());
        let handle = thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (st, sp, rt) = (st.clone(), sp.clone(), rt.clone());
                        thread::spawn(move || serve(conn, &rt, &st, &sp));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultServer {
            url: format!("http://127.0.0.1:{port}"),
            root,
            state,
            stop,
            handle: Some(handle),
        }
    }

    /// Makes `path` (e.g. [`tarball_path`]) answer with `reply` from now on.
    pub fn route(&self, path: &str, reply: Reply) -> &Self {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), reply);
        self
    }

    /// Requests received for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        *self.state.lock().unwrap().hits.get(path).unwrap_or(&0)
    }

    /// Body bytes sent for `path` so far (all requests together).
    pub fn sent(&self, path: &str) -> u64 {
        *self.state.lock().unwrap().sent.get(path).unwrap_or(&0)
    }

    /// The `Range` and `If-Range` headers of each request for `path`, in
    /// the order they arrived.
    pub fn requests(&self, path: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .requests
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Every request count, for failure messages.
    pub fn all_hits(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .state
            .lock()
            .unwrap()
            .hits
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reads the request head; returns the URL path and the headers tests
/// look at.
fn read_request(conn: &mut TcpStream) -> Option<(String, Seen)> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let target = lines.next()?.split(' ').nth(1)?.to_string();
    let mut seen = Seen::default();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = Some(v.trim().to_string());
        if k.trim().eq_ignore_ascii_case("range") {
            seen.range = v;
        } else if k.trim().eq_ignore_ascii_case("if-range") {
            seen.if_range = v;
        }
    }
    Some((target.split('?').next().unwrap_or("/").to_string(), seen))
}

fn serve(mut conn: TcpStream, root: &Path, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let Some((path, seen)) = read_request(&mut conn) else {
        return;
    };
    let (reply, n) = {
        let mut s = state.lock().unwrap();
        let n = {
            let h = s.hits.entry(path.clone()).or_insert(0);
            *h += 1;
            *h
        };
        s.requests
            .entry(path.clone())
            .or_default()
            .push(seen.clone());
        let reply = match s.routes.get(&path).cloned().unwrap_or(Reply::Mirror) {
            Reply::FailFirst { times, status } if n <= times => Reply::Status(status),
            Reply::FailFirst { .. } => Reply::Mirror,
            Reply::CutFirst { times } if n <= times => {
                let full = super::resolve(root, &path)
                    .and_then(|f| std::fs::read(f).ok())
                    .unwrap_or_default();
                Reply::Lying {
                    declared: full.len() as u64,
                    body: full[..full.len() / 2].to_vec(),
                    after: After::Close,
                }
            }
            Reply::CutFirst { .. } => Reply::Mirror,
            r => r,
        };
        (reply, n)
    };
    let count = |n: usize| {
        *state.lock().unwrap().sent.entry(path.clone()).or_insert(0) += n as u64;
    };
    let stalled = |conn: &TcpStream| {
        let start = Instant::now();
        while !stop.load(Ordering::SeqCst) && start.elapsed() < MAX_STALL {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = conn.shutdown(std::net::Shutdown::Both);
    };
    match reply {
        Reply::Mirror | Reply::CutFirst { .. } => {
            match super::resolve(root, &path).and_then(|f| std::fs::read(f).ok()) {
                Some(body) => send(&mut conn, 200, &body, &count),
                None => send(&mut conn, 404, b"not found\n", &count),
            }
        }
        Reply::Body(code, body) => send(&mut conn, code, &body, &count),
        Reply::Status(code) | Reply::FailFirst { status: code, .. } => send(
            &mut conn,
            code,
            format!("error {code}\n").as_bytes(),
            &count,
        ),
        Reply::Lying {
            declared,
            body,
            after,
        } => {
            let _ = head(&mut conn, 200, &[("Content-Length", declared.to_string())]);
            if conn.write_all(&body).is_ok() {
                count(body.len());
            }
            let _ = conn.flush();
            if after == After::Hang {
                stalled(&conn);
            }
        }
        Reply::Trickle {
            body,
            fast,
            chunk,
            delay,
        } => {
            let _ = head(
                &mut conn,
                200,
                &[("Content-Length", body.len().to_string())],
            );
            let start = Instant::now();
            let mut off = fast.min(body.len());
            if conn.write_all(&body[..off]).is_err() {
                return;
            }
            count(off);
            while off < body.len() && !stop.load(Ordering::SeqCst) && start.elapsed() < MAX_STALL {
                thread::sleep(delay);
                let end = (off + chunk).min(body.len());
                if conn.write_all(&body[off..end]).is_err() {
                    return;
                }
                count(end - off);
                off = end;
            }
        }
        Reply::Hang => stalled(&conn),
        Reply::Redirect(to) => {
            let _ = head(
                &mut conn,
                302,
                &[("Location", to), ("Content-Length", "0".into())],
            );
        }
        Reply::Raw(bytes) => {
            let _ = conn.write_all(&bytes);
        }
        Reply::Endless { prefix } => {
            let _ = head(&mut conn, 200, &[]);
            if conn.write_all(&prefix).is_err() {
                return;
            }
            count(prefix.len());
            let zeros = vec![0u8; 64 * 1024];
            let start = Instant::now();
            while !stop.load(Ordering::SeqCst) && start.elapsed() < MAX_STALL {
                if conn.write_all(&zeros).is_err() {
                    return;
                }
                count(zeros.len());
            }
        }
        Reply::Ranges {
            body,
            etag,
            cut,
            range,
        } => {
            let limit = (n <= cut.times).then_some(cut.after);
            serve_ranges(&mut conn, &body, etag, &range, &seen, limit, &count);
            if limit.is_some() && cut.stall {
                stalled(&conn);
            }
        }
    }
    let _ = conn.flush();
}

/// A [`Reply::Ranges`] reply; at most `limit` body bytes are sent.
fn serve_ranges(
    conn: &mut TcpStream,
    body: &[u8],
    etag: Option<String>,
    mode: &RangeMode,
    seen: &Seen,
    limit: Option<usize>,
    count: &dyn Fn(usize),
) {
    let len = body.len();
    let start = seen
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let validated = match (&seen.if_range, &etag) {
        (None, _) => true,
        (Some(v), Some(e)) => v == e,
        (Some(_), None) => false,
    };
    // (status, Content-Range, bytes sent)
    let (code, content_range, data): (u16, Option<String>, &[u8]) = match (start, mode) {
        (None, _) | (_, RangeMode::Ignore) => (200, None, body),
        (Some(_), _) if !validated => (200, None, body),
        (Some(s), _) if s >= len => (416, Some(format!("bytes */{len}")), &[]),
        (Some(s), RangeMode::Honour) => (
            206,
            Some(format!("bytes {s}-{}/{len}", len - 1)),
            &body[s..],
        ),
        (Some(s), RangeMode::WrongStart(shift)) => {
            let s = (s as i64 + shift).clamp(0, len as i64 - 1) as usize;
            (
                206,
                Some(format!("bytes {s}-{}/{len}", len - 1)),
                &body[s..],
            )
        }
        (Some(s), RangeMode::Other(other)) => (
            206,
            Some(format!("bytes {s}-{}/{}", other.len() - 1, other.len())),
            &other[s.min(other.len())..],
        ),
    };
    let mut headers = vec![
        ("Content-Length", data.len().to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    if let Some(cr) = content_range {
        headers.push(("Content-Range", cr));
    }
    if let Some(e) = etag {
        headers.push(("ETag", e));
    }
    if head(conn, code, &headers).is_err() {
        return;
    }
    let data = &data[..limit.unwrap_or(data.len()).min(data.len())];
    // In pieces, so that `sent` counts what a client that hangs up early
    // (after a 200 it did not want) was really sent.
    for piece in data.chunks(64 * 1024) {
        if conn.write_all(piece).is_err() {
            return;
        }
        count(piece.len());
    }
}

fn head(conn: &mut TcpStream, code: u16, headers: &[(&str, String)]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut h = format!("HTTP/1.1 {code} {reason}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    conn.write_all(h.as_bytes())
}

fn send(conn: &mut TcpStream, code: u16, body: &[u8], count: &dyn Fn(usize)) {
    if head(conn, code, &[("Content-Length", body.len().to_string())]).is_ok()
        && conn.write_all(body).is_ok()
    {
        count(body.len());
    }
}

// ---------------------------------------------------------------------------
// Store and host checks.

/// Names in a directory, sorted (empty if it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Files in the store's cache that a later run could take for a download:
/// everything but the qemu version cache.
pub fn cached_downloads(home: &Path) -> Vec<String> {
    names(&home.join("cache"))
        .into_iter()
        .filter(|n| !(n.starts_with("qemu-") && n.ends_with(".tsv"))) // qemu lookup caches, not downloads
        .collect()
}

/// The store holds no rootfs, no staging leftovers and no download (a
/// failed fetch must leave it exactly like this).
#[track_caller]
pub fn assert_nothing_installed(home: &Path, context: &str) {
    assert_eq!(
        names(&home.join("rootfs")),
        Vec::<String>::new(),
        "{context}: a rootfs was installed"
    );
    assert_eq!(
        names(&home.join("tmp")),
        Vec::<String>::new(),
        "{context}: staging left in $XROOT_HOME/tmp"
    );
    assert_eq!(
        cached_downloads(home),
        Vec::<String>::new(),
        "{context}: a partial or unverified download left in $XROOT_HOME/cache"
    );
}

/// Every installed rootfs is complete: it has its manifest (written last,
/// inside the staging dir, before the atomic rename) and its shell.
#[track_caller]
pub fn assert_only_complete_rootfs(home: &Path) {
    for n in names(&home.join("rootfs")) {
        let dir = home.join("rootfs").join(&n);
        assert!(
            dir.join("manifest.toml").is_file() && dir.join("root/bin/busybox").is_file(),
            "half-made rootfs visible: {}",
            dir.display()
        );
    }
}

/// A listing of a host tree (path, type+mode, size, mtime, content hash for
/// small files), for before/after comparisons. Never follows symlinks.
pub fn snapshot(root: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        let extra = if m.file_type().is_symlink() {
            std::fs::read_link(p)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        } else if m.is_file() && m.len() <= 1 << 20 {
            let data = std::fs::read(p).unwrap_or_default();
            format!("{:x}", fnv(&data))
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {} {} {} {extra}",
            p.display(),
            m.mode(),
            m.len(),
            m.mtime(),
            m.nlink()
        ));
        if m.is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            kids.sort();
            for k in kids {
                walk(&k, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(root, &mut v);
    v
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Sends SIGKILL to a child process.
pub fn sigkill(child: &std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    cond()
}
