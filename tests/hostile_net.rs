//! Issue #5, network and mirror: a mirror that fails, lies, stalls or loops.
//! Every case runs the real `xroot fetch` against a [`FaultServer`] on
//! 127.0.0.1 and asserts a non-zero exit, a message naming the URL and what
//! went wrong, and a store with nothing installed, nothing staged and no
//! partial download cached.

mod common;
use common::faults::*;
use common::*;

use std::process::Output;
use std::time::{Duration, Instant};

/// `xroot fetch aarch64 --branch v3.20` against `server`, no retries and a
/// 1 s timeout unless `env_extra` says otherwise.
fn fetch(env: &Env, env_extra: &[(&str, &str)], extra_args: &[&str]) -> Output {
    let mut c = env.cmd();
    c.env("XROOT_RETRIES", "1").env("XROOT_TIMEOUT", "1");
    for (k, v) in env_extra {
        c.env(k, v);
    }
    c.args(["fetch", "aarch64", "--branch", "v3.20"])
        .args(extra_args);
    c.output().expect("running xroot")
}

/// Asserts failure, that stderr contains every one of `wants`, and that
/// nothing was installed. Returns stderr.
#[track_caller]
fn fails(env: &Env, o: &Output, wants: &[&str], case: &str) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{case}: exit status\n{e}");
    for w in wants {
        assert!(e.contains(w), "{case}: stderr lacks {w:?}:\n{e}");
    }
    assert!(e.contains("xroot: error:"), "{case}: {e}");
    assert_nothing_installed(&env.home(), case);
    e
}

#[test]
fn http_errors_name_the_url_and_status() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let index = server.at(&index_path());
    let tarball = server.at(&tarball_path());

    server.route(&index_path(), Reply::Status(404));
    let o = fetch(&env, &[], &[]);
    fails(&env, &o, &[&index, "HTTP 404", "hint:"], "index 404");

    server.route(&index_path(), Reply::Status(500));
    let o = fetch(&env, &[], &[]);
    fails(&env, &o, &[&index, "HTTP 500"], "index 500");

    server.route(&index_path(), Reply::Mirror);
    server.route(&tarball_path(), Reply::Status(404));
    let o = fetch(&env, &[], &[]);
    fails(&env, &o, &[&tarball, "HTTP 404"], "tarball 404");

    server.route(&tarball_path(), Reply::Status(500));
    let o = fetch(&env, &[], &[]);
    fails(&env, &o, &[&tarball, "HTTP 500"], "tarball 500");

    // The checksum file failing with 500 is an error too, not a reason to
    // skip the cross-check.
    let sums = format!("{}.sha256", tarball_path());
    server.route(&tarball_path(), Reply::Mirror);
    server.route(&sums, Reply::Status(500));
    let o = fetch(&env, &[], &[]);
    fails(
        &env,
        &o,
        &[&server.at(&sums), "HTTP 500"],
        "sha256 file 500",
    );
    assert_eq!(server.hits(&tarball_path()), 2, "{:?}", server.all_hits());
}

#[test]
fn connection_refused_names_the_url() {
    // A port that was just free: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror = format!("http://127.0.0.1:{port}");
    let env = Env::new(&mirror);
    let o = fetch(&env, &[], &[]);
    let e = fails(
        &env,
        &o,
        &[&format!("{mirror}{}", index_path()), "hint:"],
        "refused",
    );
    assert!(e.to_lowercase().contains("connect"), "{e}");
}

#[test]
fn connection_closed_mid_body() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let full = tarball_bytes();
    let half = full[..full.len() / 2].to_vec();
    server.route(
        &tarball_path(),
        Reply::Lying {
            declared: full.len() as u64,
            body: half.clone(),
            after: After::Close,
        },
    );
    let o = fetch(&env, &[], &[]);
    let e = fails(
        &env,
        &o,
        &[&server.at(&tarball_path()), "download of", "failed after"],
        "closed mid-body",
    );
    assert!(
        e.contains(&format!("of {} bytes", full.len())),
        "names the declared size: {e}"
    );
}

#[test]
fn content_length_disagreeing_with_the_body() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let full = tarball_bytes();
    let url = server.at(&tarball_path());

    // Longer than the body, then the server closes: a short download.
    server.route(
        &tarball_path(),
        Reply::Lying {
            declared: full.len() as u64 + 1000,
            body: full.clone(),
            after: After::Close,
        },
    );
    let o = fetch(&env, &[], &[]);
    fails(&env, &o, &[&url, "failed after"], "Content-Length too long");

    // Longer than the body and the server keeps the connection open: the
    // read times out (XROOT_TIMEOUT=1).
    server.route(
        &tarball_path(),
        Reply::Lying {
            declared: full.len() as u64 + 1000,
            body: full.clone(),
            after: After::Hang,
        },
    );
    let t = Instant::now();
    let o = fetch(&env, &[], &[]);
    fails(
        &env,
        &o,
        &[&url, "failed after"],
        "Content-Length too long, hang",
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    // Shorter than the body: the client reads only what was declared (the
    // rest is indistinguishable from a next response), so the file is
    // truncated and its checksum cannot match.
    server.route(
        &tarball_path(),
        Reply::Lying {
            declared: full.len() as u64 - 1000,
            body: full.clone(),
            after: After::Close,
        },
    );
    let o = fetch(&env, &[], &[]);
    fails(
        &env,
        &o,
        &[&url, "sha256 mismatch"],
        "Content-Length too short",
    );
}

#[test]
fn stalled_server_times_out() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);

    // No response at all to the index request.
    server.route(&index_path(), Reply::Hang);
    let t = Instant::now();
    let o = fetch(&env, &[("XROOT_TIMEOUT", "1")], &[]);
    let e = fails(&env, &o, &[&server.at(&index_path())], "index stalls");
    assert!(
        e.to_lowercase().contains("timed out") || e.contains("XROOT_TIMEOUT"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // The tarball's body stops after 300 KB.
    server.route(&index_path(), Reply::Mirror);
    let full = tarball_bytes();
    server.route(
        &tarball_path(),
        Reply::Lying {
            declared: full.len() as u64,
            body: full[..300_000].to_vec(),
            after: After::Hang,
        },
    );
    let t = Instant::now();
    let o = fetch(&env, &[("XROOT_TIMEOUT", "1")], &[]);
    let e = fails(
        &env,
        &o,
        &[&server.at(&tarball_path()), "failed after 300000"],
        "body stalls",
    );
    assert!(e.to_lowercase().contains("timed out"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // A slow but steady server within the timeout is fine: 64 KiB every
    // 20 ms with a 1 s timeout.
    server.route(
        &tarball_path(),
        Reply::Trickle {
            body: full,
            fast: 0,
            chunk: 256 * 1024,
            delay: Duration::from_millis(20),
        },
    );
    ok(&fetch(&env, &[("XROOT_TIMEOUT", "1")], &["--quiet"]));
}

#[test]
fn redirect_loop_is_refused() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    server.route(&index_path(), Reply::Redirect("/loop/a".into()));
    server.route("/loop/a", Reply::Redirect("/loop/b".into()));
    server.route("/loop/b", Reply::Redirect("/loop/a".into()));
    let o = fetch(&env, &[], &[]);
    let e = fails(&env, &o, &[&server.at(&index_path())], "redirect loop");
    assert!(e.to_lowercase().contains("redirect"), "{e}");
    assert!(server.hits("/loop/a") <= 10, "{:?}", server.all_hits());

    // A single redirect to a good copy is followed.
    server.route(
        &index_path(),
        Reply::Redirect("/elsewhere/index.yaml".into()),
    );
    server.route(
        "/elsewhere/index.yaml",
        Reply::Body(200, index_text().into_bytes()),
    );
    ok(&fetch(&env, &[], &["--quiet"]));
    assert!(env.rootfs("aarch64").join("bin/busybox").is_file());
}

#[test]
fn garbage_instead_of_http_is_an_error() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    server.route(
        &index_path(),
        Reply::Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
    );
    let o = fetch(&env, &[], &[]);
    fails(&env, &o, &[&server.at(&index_path())], "not HTTP");
}

#[test]
fn malformed_indexes_are_refused_before_any_download() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let index = server.at(&index_path());
    let real = index_text();
    let cases: Vec<(&str, String, &str)> = vec![
        ("not YAML", "this: [is not yaml".into(), "not a YAML list"),
        ("a map", "flavor: alpine-minirootfs\n".into(), "not a YAML list"),
        ("empty", String::new(), "no 'alpine-minirootfs'"),
        (
            "no minirootfs",
            "- flavor: alpine-virt\n  file: alpine-virt-3.20.3-aarch64.iso\n  sha256: 81df854fbd7327d293c726b1eeeb82061d3bc8f5a86a6f77eea720f6be372261\n".into(),
            "no 'alpine-minirootfs'",
        ),
        (
            "no sha256",
            "- flavor: alpine-minirootfs\n  file: alpine-minirootfs-3.20.3-aarch64.tar.gz\n".into(),
            "has no sha256",
        ),
        (
            "bad sha256",
            real.replace("041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de", "041fa34a"),
            "hex digest",
        ),
        (
            "path in file name",
            real.replace(
                "file: alpine-minirootfs-3.20.3-aarch64.tar.gz",
                "file: ../../../../etc/passwd",
            ),
            "unsafe file",
        ),
        ("binary junk", "\u{0}\u{1}\u{2}garbage\u{7f}".into(), "latest-releases.yaml"),
    ];
    for (case, body, want) in cases {
        server.route(&index_path(), Reply::Body(200, body.into_bytes()));
        let o = fetch(&env, &[], &[]);
        fails(&env, &o, &[&index, want], case);
    }
    // An index far larger than any real one (a hostile endless file).
    server.route(&index_path(), Reply::Body(200, vec![b'#'; 3 << 20]));
    let o = fetch(&env, &[], &[]);
    fails(&env, &o, &[&index, "larger than"], "huge index");
    // Not UTF-8.
    server.route(
        &index_path(),
        Reply::Body(200, vec![0xff, 0xfe, 0x00, 0x80]),
    );
    let o = fetch(&env, &[], &[]);
    fails(&env, &o, &[&index, "UTF-8"], "not UTF-8");
    assert_eq!(
        server.hits(&tarball_path()),
        0,
        "a bad index must stop before the download: {:?}",
        server.all_hits()
    );
}

#[test]
fn index_and_checksum_file_must_agree() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let sums = format!("{}.sha256", tarball_path());
    let other = "0".repeat(64);
    server.route(
        &sums,
        Reply::Body(200, format!("{other}  {TARBALL}\n").into_bytes()),
    );
    let o = fetch(&env, &[], &[]);
    fails(
        &env,
        &o,
        &[
            "checksum mismatch",
            &server.at(&index_path()),
            &server.at(&sums),
            &other,
            "041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de",
        ],
        "index vs .sha256",
    );
    assert_eq!(server.hits(&tarball_path()), 0, "{:?}", server.all_hits());

    // A checksum file that lists another file only.
    server.route(
        &sums,
        Reply::Body(
            200,
            format!("{other}  something-else.tar.gz\n").into_bytes(),
        ),
    );
    let o = fetch(&env, &[], &[]);
    fails(
        &env,
        &o,
        &[&server.at(&sums), "no checksum for"],
        "other file",
    );

    // An index whose sha512 is wrong (sha256 right): refused after download.
    server.route(&sums, Reply::Mirror);
    let index = index_text();
    let mut bad = String::new();
    for line in index.lines() {
        if let Some(h) = line.trim().strip_prefix("sha512: ") {
            let flipped: String = h.chars().map(|c| if c == 'a' { 'b' } else { c }).collect();
            bad.push_str(&line.replace(h, &flipped));
        } else {
            bad.push_str(line);
        }
        bad.push('\n');
    }
    assert_ne!(bad, index);
    server.route(&index_path(), Reply::Body(200, bad.into_bytes()));
    let o = fetch(&env, &[], &[]);
    fails(
        &env,
        &o,
        &["sha512 mismatch", &server.at(&tarball_path())],
        "sha512",
    );

    // A tarball whose bytes differ from the index's checksums.
    server.route(&index_path(), Reply::Mirror);
    let mut data = tarball_bytes();
    let n = data.len();
    data[n - 100] ^= 0x55;
    server.route(&tarball_path(), Reply::Body(200, data));
    let o = fetch(&env, &[], &[]);
    fails(
        &env,
        &o,
        &["sha256 mismatch", &server.at(&tarball_path())],
        "tampered tarball",
    );

    // A missing .sha256 file is a documented warning, not an error: the
    // index's own checksums still verify the download.
    server.route(&tarball_path(), Reply::Mirror);
    server.route(&sums, Reply::Status(404));
    let o = fetch(&env, &[], &[]);
    ok(&o);
    assert!(stderr(&o).contains("is missing"), "{}", stderr(&o));
    assert!(env.rootfs("aarch64").join("bin/busybox").is_file());
}

#[test]
fn endless_body_is_cut_at_the_limit() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    // No Content-Length, a real gzip start, then zeros for ever.
    let full = tarball_bytes();
    server.route(
        &tarball_path(),
        Reply::Endless {
            prefix: full[..100_000].to_vec(),
        },
    );
    let t = Instant::now();
    let o = fetch(&env, &[], &["--max-size", "2000000"]);
    let e = fails(&env, &o, &[&server.at(&tarball_path())], "endless body");
    assert!(
        e.contains("exceeds") || e.contains("corrupt") || e.contains("mismatch"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn transient_failures_are_retried() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);

    // 500 once on the tarball, then fine: fetch succeeds after a backoff.
    server.route(
        &tarball_path(),
        Reply::FailFirst {
            times: 1,
            status: 500,
        },
    );
    server.route(
        &index_path(),
        Reply::FailFirst {
            times: 1,
            status: 503,
        },
    );
    let t = Instant::now();
    let o = fetch(&env, &[("XROOT_RETRIES", "3")], &["--quiet"]);
    ok(&o);
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "two 0.5 s backoffs: {:?}",
        t.elapsed()
    );
    assert_eq!(server.hits(&tarball_path()), 2);
    assert_eq!(server.hits(&index_path()), 2);
    assert!(env.rootfs("aarch64").join("bin/busybox").is_file());
    assert_eq!(cached_downloads(&env.home()), [TARBALL]);

    // A download cut mid-body by a server that does not advertise
    // `Accept-Ranges` is not resumed but tried again from the start.
    let env = Env::new(&server.url);
    server.route(&index_path(), Reply::Mirror);
    // (Hits count from the server's start: cut just the next request.)
    let times = server.hits(&tarball_path()) + 1;
    server.route(&tarball_path(), Reply::CutFirst { times });
    let o = fetch(&env, &[("XROOT_RETRIES", "3")], &[]);
    ok(&o);
    assert!(stderr(&o).contains("retrying (2/3)"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("resuming"), "{}", stderr(&o));
    assert!(env.rootfs("aarch64").join("bin/busybox").is_file());
    assert_eq!(cached_downloads(&env.home()), [TARBALL]);
    assert_eq!(
        std::fs::read_dir(env.home().join("tmp")).unwrap().count(),
        0
    );

    // The default is 3 attempts with 0.5 s, 1 s backoff: a server failing
    // more often than that fails the fetch, which says how often it tried.
    let env = Env::new(&server.url);
    server.route(
        &tarball_path(),
        Reply::FailFirst {
            times: 100,
            status: 502,
        },
    );
    let before = server.hits(&tarball_path());
    let t = Instant::now();
    let mut c = env.cmd();
    c.env_remove("XROOT_RETRIES")
        .env("XROOT_TIMEOUT", "2")
        .args(["fetch", "aarch64", "--branch", "v3.20"]);
    let o = c.output().unwrap();
    fails(
        &env,
        &o,
        &["HTTP 502", "after 3 attempts", &server.at(&tarball_path())],
        "persistent 502",
    );
    assert_eq!(server.hits(&tarball_path()) - before, 3);
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // XROOT_RETRIES=1: no retry at all.
    let before = server.hits(&tarball_path());
    let o = fetch(&env, &[("XROOT_RETRIES", "1")], &[]);
    fails(&env, &o, &["HTTP 502"], "no retry");
    assert_eq!(server.hits(&tarball_path()) - before, 1);

    // A 404 is not transient: never retried.
    server.route(&tarball_path(), Reply::Status(404));
    let before = server.hits(&tarball_path());
    let o = fetch(&env, &[("XROOT_RETRIES", "3")], &[]);
    fails(&env, &o, &["HTTP 404"], "404 not retried");
    assert_eq!(server.hits(&tarball_path()) - before, 1);
}

#[test]
fn a_hostile_endless_body_is_not_read_after_the_archive_fails() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    // Not a tarball at all, then zeros for ever, with no Content-Length
    // and the default (8 GiB) limit: once the archive is known to be bad,
    // reading on only wastes the user's bandwidth.
    server.route(
        &tarball_path(),
        Reply::Endless {
            prefix: b"\x1f\x8b\x08\x00garbage that is not deflate data".to_vec(),
        },
    );
    let t = Instant::now();
    let o = fetch(&env, &[("XROOT_TIMEOUT", "2")], &[]);
    let e = fails(&env, &o, &[&server.at(&tarball_path())], "endless junk");
    assert!(e.contains("corrupt"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(
        server.sent(&tarball_path()) < 1 << 30,
        "read {} bytes of junk",
        server.sent(&tarball_path())
    );
}

// ---------------------------------------------------------------------------
// Resuming a cut download with a Range request.

/// Every entry of the tarball `data` exists in the installed tree `root`,
/// with the right size for regular files.
#[track_caller]
fn assert_tree_complete(root: &std::path::Path, data: &[u8]) {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let mut n = 0;
    for entry in archive.entries().expect("tar entries") {
        let entry = entry.expect("tar entry");
        let path = entry.path().expect("entry path").into_owned();
        let meta = std::fs::symlink_metadata(root.join(&path))
            .unwrap_or_else(|e| panic!("{} missing from the rootfs: {e}", path.display()));
        if entry.header().entry_type().is_file() {
            assert_eq!(meta.len(), entry.size(), "{}", path.display());
        }
        n += 1;
    }
    assert!(n > 50, "only {n} entries in the tarball");
}

/// The tarball with one byte changed near its end: same length, another
/// file (which no checksum accepts).
fn other_tarball() -> Vec<u8> {
    let mut data = tarball_bytes();
    let n = data.len();
    data[n - 100] ^= 0x55;
    data
}

/// Serves the tarball (`etag` as its ETag), cut as `cut` says, and answers
/// range requests as `range` says.
fn serve_cut(server: &FaultServer, etag: Option<&str>, cut: Cut, range: RangeMode) {
    server.route(
        &tarball_path(),
        Reply::Ranges {
            body: tarball_bytes(),
            etag: etag.map(str::to_string),
            cut,
            range,
        },
    );
}

#[test]
fn a_cut_download_is_resumed_where_it_stopped() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let full = tarball_bytes();
    let cut = full.len() / 2;
    serve_cut(
        &server,
        Some("\"v1\""),
        Cut {
            times: 1,
            after: cut,
            stall: false,
        },
        RangeMode::Honour,
    );
    let o = fetch(&env, &[("XROOT_RETRIES", "3")], &[]);
    ok(&o);
    let e = stderr(&o);
    assert!(
        e.contains(&format!("cut after {cut} of {} bytes", full.len()))
            && e.contains(&format!("resuming at byte {cut} (2/3)")),
        "{e}"
    );
    assert!(!e.contains("retrying"), "resumed, not restarted: {e}");
    let reqs = server.requests(&tarball_path());
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0], Seen::default(), "the first request is a plain GET");
    assert_eq!(reqs[1].range, Some(format!("bytes={cut}-")));
    assert_eq!(reqs[1].if_range.as_deref(), Some("\"v1\""));
    // The file was sent once, not one and a half times.
    assert_eq!(server.sent(&tarball_path()), full.len() as u64);
    assert_tree_complete(&env.rootfs("aarch64"), &full);
    assert_eq!(
        std::fs::read(env.home().join("cache").join(TARBALL)).unwrap(),
        full,
        "the cached tarball is the file, spliced seamlessly"
    );
    assert_eq!(names(&env.home().join("tmp")), Vec::<String>::new());

    // A body that stalls (read timeout, XROOT_TIMEOUT=1) is resumed too.
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    serve_cut(
        &server,
        None,
        Cut {
            times: 1,
            after: 300_000,
            stall: true,
        },
        RangeMode::Honour,
    );
    let o = fetch(&env, &[("XROOT_RETRIES", "2")], &[]);
    ok(&o);
    let e = stderr(&o);
    assert!(e.contains("resuming at byte 300000 (2/2)"), "{e}");
    assert!(e.to_lowercase().contains("timed out"), "{e}");
    let reqs = server.requests(&tarball_path());
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=300000-"));
    assert_eq!(server.sent(&tarball_path()), full.len() as u64);
    assert_tree_complete(&env.rootfs("aarch64"), &full);
}

#[test]
fn a_server_that_ignores_ranges_gets_a_restart() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let full = tarball_bytes();
    let cut = full.len() / 2;
    serve_cut(
        &server,
        None,
        Cut {
            times: 1,
            after: cut,
            stall: false,
        },
        RangeMode::Ignore,
    );
    let o = fetch(&env, &[("XROOT_RETRIES", "3")], &[]);
    ok(&o);
    let e = stderr(&o);
    assert!(e.contains(&format!("resuming at byte {cut} (2/3)")), "{e}");
    assert!(
        e.contains("could not resume") && e.contains("HTTP 200 instead of 206"),
        "{e}"
    );
    assert!(e.contains("retrying (3/3)"), "{e}");
    let reqs = server.requests(&tarball_path());
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[1].range, Some(format!("bytes={cut}-")));
    assert_eq!(reqs[1].if_range, None, "no validator, no If-Range");
    assert_eq!(
        reqs[2],
        Seen::default(),
        "the restart asks for the whole file"
    );
    assert_tree_complete(&env.rootfs("aarch64"), &full);
    assert_eq!(cached_downloads(&env.home()), [TARBALL]);
}

#[test]
fn a_wrong_content_range_is_not_spliced() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let full = tarball_bytes();
    let cut = full.len() / 2;
    // The server answers 206 for a range that starts 1000 bytes early:
    // splicing it on would duplicate 1000 bytes.
    serve_cut(
        &server,
        Some("\"v1\""),
        Cut {
            times: 1,
            after: cut,
            stall: false,
        },
        RangeMode::WrongStart(-1000),
    );
    let o = fetch(&env, &[("XROOT_RETRIES", "3")], &[]);
    ok(&o);
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "Content-Range \"bytes {}-{}/{}\" is not bytes {cut}-",
            cut - 1000,
            full.len() - 1,
            full.len()
        )),
        "{e}"
    );
    assert!(e.contains("retrying (3/3)"), "{e}");
    assert_eq!(server.requests(&tarball_path()).len(), 3);
    assert_tree_complete(&env.rootfs("aarch64"), &full);
    assert_eq!(cached_downloads(&env.home()), [TARBALL]);
}

#[test]
fn resumes_count_against_the_attempt_budget() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let full = tarball_bytes();
    let url = server.at(&tarball_path());
    // Every reply stops after a quarter of the file.
    let quarter = full.len() / 4;
    serve_cut(
        &server,
        Some("\"v1\""),
        Cut {
            times: 1000,
            after: quarter,
            stall: false,
        },
        RangeMode::Honour,
    );
    let o = fetch(&env, &[("XROOT_RETRIES", "3")], &[]);
    let e = fails(
        &env,
        &o,
        &[
            &url,
            &format!(
                "download of {url} failed after {} of {} bytes",
                3 * quarter,
                full.len()
            ),
            "(after 3 attempts)",
            "resuming at byte",
        ],
        "cut beyond the budget",
    );
    assert!(!e.contains("retrying"), "no attempt left to restart: {e}");
    let ranges: Vec<_> = server
        .requests(&tarball_path())
        .into_iter()
        .map(|s| s.range)
        .collect();
    assert_eq!(
        ranges,
        [
            None,
            Some(format!("bytes={quarter}-")),
            Some(format!("bytes={}-", 2 * quarter))
        ]
    );

    // XROOT_RETRIES=1: no resume either.
    let before = server.hits(&tarball_path());
    let o = fetch(&env, &[("XROOT_RETRIES", "1")], &[]);
    let e = fails(
        &env,
        &o,
        &[
            &url,
            &format!("failed after {quarter} of {} bytes", full.len()),
        ],
        "one attempt",
    );
    assert!(!e.contains("resuming"), "{e}");
    assert_eq!(server.hits(&tarball_path()) - before, 1);
}

#[test]
fn a_resume_from_another_file_fails_the_checksum() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let full = tarball_bytes();
    let cut = full.len() / 2;
    // No ETag or Last-Modified, so no If-Range: the server's file changes
    // between the two requests and nothing in HTTP can tell.
    serve_cut(
        &server,
        None,
        Cut {
            times: 1,
            after: cut,
            stall: false,
        },
        RangeMode::Other(other_tarball()),
    );
    let o = fetch(&env, &[("XROOT_RETRIES", "3")], &[]);
    let e = fails(
        &env,
        &o,
        &[
            &server.at(&tarball_path()),
            "sha256 mismatch",
            &format!("resuming at byte {cut}"),
        ],
        "spliced from another file",
    );
    assert!(!e.contains("retrying"), "a mismatch is not retried: {e}");
    let reqs = server.requests(&tarball_path());
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(
        reqs[1],
        Seen {
            range: Some(format!("bytes={cut}-")),
            if_range: None
        }
    );
}
