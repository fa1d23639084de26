//! Issue #5, faults and concurrency: `xroot fetch` killed mid-download or
//! mid-extraction, many fetches and runs at once, `rm` of a rootfs in use.
//! Nothing half-done may ever be visible under `$XROOT_HOME/rootfs`, and
//! the next command must clean up whatever a killed one left.
//! (SIGKILL of `xroot run` is covered by tests/core.rs.)

mod common;
use common::faults::*;
use common::*;

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Watches `$XROOT_HOME/rootfs` in a thread for as long as it lives and
/// records every sighting of an incomplete tree.
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    looks: Arc<Mutex<u64>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(home: PathBuf) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let looks = Arc::new(Mutex::new(0));
        let (st, se, lk) = (stop.clone(), seen.clone(), looks.clone());
        let handle = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                for n in names(&home.join("rootfs")) {
                    let dir = home.join("rootfs").join(&n);
                    let complete = dir.join("manifest.toml").is_file()
                        && dir.join("root/bin/busybox").is_file()
                        && dir.join("root/etc/alpine-release").is_file();
                    if !complete {
                        se.lock().unwrap().push(dir.display().to_string());
                    }
                }
                *lk.lock().unwrap() += 1;
                thread::sleep(Duration::from_millis(2));
            }
        });
        Watcher {
            stop,
            seen,
            looks,
            handle: Some(handle),
        }
    }

    /// Stops watching; fails if an incomplete tree was ever seen.
    #[track_caller]
    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        assert!(*self.looks.lock().unwrap() > 10, "the watcher did not run");
        let seen = self.seen.lock().unwrap();
        assert!(seen.is_empty(), "half-made rootfs visible: {seen:?}");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The staging directories in `$XROOT_HOME/tmp`.
fn staging_dirs(home: &Path) -> Vec<PathBuf> {
    names(&home.join("tmp"))
        .into_iter()
        .map(|n| home.join("tmp").join(n))
        .collect()
}

/// Whether a staging dir holds a partly unpacked tree (extraction under way).
fn extraction_started(home: &Path) -> bool {
    staging_dirs(home)
        .iter()
        .any(|d| d.join("root/usr").is_dir() && d.join("root/bin").is_dir())
}

/// A child process that is killed and reaped when dropped, so that a
/// failing test never leaves an xroot behind.
struct Reaper(Option<Child>);

impl Reaper {
    fn get(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    fn take(mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            sigkill(&c);
            let _ = c.wait();
        }
    }
}

fn spawn_fetch(env: &Env, args: &[&str]) -> Reaper {
    Reaper(Some(
        env.cmd()
            .args(["fetch", "aarch64"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

#[track_caller]
fn kill_and_reap(child: Reaper) {
    let mut child = child.take();
    sigkill(&child);
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
}

#[track_caller]
fn assert_installed_cleanly(env: &Env) {
    let home = env.home();
    assert_eq!(names(&home.join("rootfs")), ["aarch64"]);
    assert_only_complete_rootfs(&home);
    assert_eq!(names(&home.join("tmp")), Vec::<String>::new(), "leftovers");
    let mf = fs::read_to_string(home.join("rootfs/aarch64/manifest.toml")).unwrap();
    assert!(
        mf.contains("041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de"),
        "{mf}"
    );
}

#[test]
fn sigkill_during_download_then_next_fetch_recovers() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let home = env.home();
    // 500 KB at once, then 16 KB every 50 ms: about 12 s for the rest.
    server.route(
        &tarball_path(),
        Reply::Trickle {
            body: tarball_bytes(),
            fast: 500_000,
            chunk: 16 * 1024,
            delay: Duration::from_millis(50),
        },
    );
    let watcher = Watcher::start(home.clone());
    let child = spawn_fetch(&env, &["--branch", "v3.20", "--quiet"]);
    assert!(
        wait_for(Duration::from_secs(20), || server.sent(&tarball_path())
            >= 500_000
            && extraction_started(&home)),
        "the download did not start: {:?}",
        server.all_hits()
    );
    kill_and_reap(child);
    // Killed mid-way: a staging dir is left, with the partial download in
    // it; nothing under rootfs/, nothing in cache/.
    assert_eq!(staging_dirs(&home).len(), 1);
    assert!(staging_dirs(&home)[0].join("download.part").is_file());
    assert_eq!(names(&home.join("rootfs")), Vec::<String>::new());
    assert_eq!(cached_downloads(&home), Vec::<String>::new());

    // The next fetch succeeds and removes the leftovers.
    server.route(&tarball_path(), Reply::Mirror);
    ok(&env.run(&["fetch", "aarch64", "--branch", "v3.20", "--quiet"]));
    assert_installed_cleanly(&env);
    assert_eq!(cached_downloads(&home), [TARBALL]);
    watcher.finish();
}

#[test]
fn sigkill_during_extraction_then_next_fetch_recovers() {
    // A FIFO as --from: the test decides exactly how much xroot has read,
    // so the kill lands while the tree is being unpacked.
    let env = Env::new("http://127.0.0.1:9");
    let home = env.home();
    let fifo = env.dir.path().join("rootfs.tar.gz");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let data = tarball_bytes();
    let watcher = Watcher::start(home.clone());
    let child = spawn_fetch(&env, &["--from", fifo.to_str().unwrap(), "--quiet"]);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fifo, done) = (fifo.clone(), done.clone());
        let part = data[..data.len() * 3 / 4].to_vec();
        thread::spawn(move || {
            let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let _ = w.write_all(&part);
            // Hold the FIFO open (no EOF) until the test is done.
            while !done.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // bin/busybox is about half-way through the archive's data.
    assert!(
        wait_for(Duration::from_secs(20), || extraction_started(&home)
            && staging_dirs(&home)
                .iter()
                .any(|d| d.join("root/bin/busybox").is_file())),
        "extraction did not start"
    );
    kill_and_reap(child);
    done.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(staging_dirs(&home).len(), 1, "killed mid-extraction");
    assert_eq!(names(&home.join("rootfs")), Vec::<String>::new());
    assert_eq!(cached_downloads(&home), Vec::<String>::new());

    let file = env.dir.path().join(TARBALL);
    fs::write(&file, &data).unwrap();
    ok(&env.run(&[
        "fetch",
        "aarch64",
        "--from",
        file.to_str().unwrap(),
        "--sha256",
        "041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de",
        "--quiet",
    ]));
    assert_installed_cleanly(&env);
    watcher.finish();
}

#[test]
fn sigkill_during_forced_refetch_keeps_the_old_rootfs() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let home = env.home();
    ok(&env.run(&["fetch", "aarch64", "--branch", "v3.20", "--quiet"]));
    let before = snapshot(&home.join("rootfs"));
    server.route(
        &tarball_path(),
        Reply::Trickle {
            body: tarball_bytes(),
            fast: 1_000_000,
            chunk: 16 * 1024,
            delay: Duration::from_millis(50),
        },
    );
    let watcher = Watcher::start(home.clone());
    let child = spawn_fetch(&env, &["--branch", "v3.20", "--force", "--quiet"]);
    assert!(
        wait_for(Duration::from_secs(20), || extraction_started(&home)),
        "the forced fetch did not start"
    );
    kill_and_reap(child);
    // The installed tree is exactly as it was: a replacement only ever
    // happens by one atomic rename of a complete tree.
    assert_eq!(snapshot(&home.join("rootfs")), before);
    assert_eq!(staging_dirs(&home).len(), 1);

    // The next fetch finds it installed and removes the leftovers.
    let o = env.run(&["fetch", "aarch64", "--branch", "v3.20"]);
    assert!(stderr(&o).contains("already installed"), "{}", stderr(&o));
    assert_eq!(staging_dirs(&home), Vec::<PathBuf>::new(), "leftovers");
    assert_eq!(snapshot(&home.join("rootfs")), before);
    // And a forced fetch now completes.
    server.route(&tarball_path(), Reply::Mirror);
    ok(&env.run(&[
        "fetch", "aarch64", "--branch", "v3.20", "--force", "--quiet",
    ]));
    assert_installed_cleanly(&env);
    watcher.finish();
}

#[test]
fn a_tampered_cache_is_never_trusted() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let home = env.home();
    ok(&env.run(&["fetch", "aarch64", "--branch", "v3.20", "--quiet"]));
    let cached = home.join("cache").join(TARBALL);
    assert!(cached.is_file());
    // A hostile local user or a bad disk changes the cached tarball.
    let mut data = fs::read(&cached).unwrap();
    let n = data.len();
    data[n / 2] ^= 0x40;
    fs::write(&cached, &data).unwrap();
    fs::write(home.join("rootfs/aarch64/root/etc/motd"), b"changed\n").unwrap();

    // With the mirror down too, reset fails and changes nothing.
    server.route(&tarball_path(), Reply::Status(503));
    let before = snapshot(&home.join("rootfs"));
    let o = env
        .cmd()
        .env("XROOT_RETRIES", "1")
        .args(["reset", "aarch64"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("no longer matches") && e.contains("HTTP 503"),
        "{e}"
    );
    assert_eq!(snapshot(&home.join("rootfs")), before);
    assert_eq!(staging_dirs(&home), Vec::<PathBuf>::new());

    // With the mirror back, reset downloads a verified copy again.
    server.route(&tarball_path(), Reply::Mirror);
    let o = env.run(&["reset", "aarch64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.hits(&tarball_path()), 3, "{:?}", server.all_hits());
    assert_installed_cleanly(&env);
    assert_ne!(
        fs::read(home.join("rootfs/aarch64/root/etc/motd")).unwrap(),
        b"changed\n"
    );
    assert_eq!(fs::read(&cached).unwrap(), tarball_bytes());
}

#[test]
fn eight_concurrent_fetches_download_once() {
    let server = FaultServer::alpine();
    let env = Env::new(&server.url);
    let home = env.home();
    let watcher = Watcher::start(home.clone());
    let children: Vec<Reaper> = (0..8)
        .map(|_| spawn_fetch(&env, &["--branch", "v3.20"]))
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.take().wait_with_output().unwrap();
        assert!(o.status.success(), "fetch {i}: {}", stderr(&o));
    }
    assert_eq!(
        server.hits(&tarball_path()),
        1,
        "one download: {:?}",
        server.all_hits()
    );
    assert_eq!(server.hits(&index_path()), 1, "{:?}", server.all_hits());
    assert_installed_cleanly(&env);
    assert_eq!(cached_downloads(&home), [TARBALL]);
    assert_eq!(names(&home.join("rootfs")), ["aarch64"]);
    watcher.finish();
}

#[test]
fn twenty_concurrent_runs() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    let tree_before = snapshot(&env.home().join("rootfs"));
    let mounts_before = host_mounts();
    let children: Vec<(i32, Child)> = (0..20)
        .map(|i| {
            let code = 100 + i;
            let c = env
                .cmd()
                .args([
                    "run",
                    "aarch64",
                    "--",
                    "sh",
                    "-c",
                    &format!("echo $$; echo {code}; exit {code}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (code, c)
        })
        .collect();
    for (code, c) in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        // Each guest is PID 2 of its own PID namespace.
        assert_eq!(stdout(&o), format!("2\n{code}\n"), "{}", stderr(&o));
    }
    assert_eq!(host_mounts(), mounts_before, "a mount leaked to the host");
    assert_eq!(
        snapshot(&env.home().join("rootfs")),
        tree_before,
        "the rootfs changed (a mount point left behind?)"
    );
}

#[test]
fn rm_while_running_is_refused_and_the_guest_is_unaffected() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    // The store is inside env.dir, so the guest does not get env.dir as its
    // working directory: share a separate directory for the go signal.
    let shared = tempfile::tempdir().unwrap();
    let go = shared.path().join("go");
    let mut guest = Reaper(Some(
        env.cmd()
            .args(["run", "aarch64", "--bind"])
            .arg(format!("{}:/shared", shared.path().display()))
            .args([
                "--",
                "sh",
                "-c",
                "echo started; while [ ! -e /shared/go ]; do sleep 0.05; done; cat /etc/alpine-release; ls /bin/busybox",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut out = std::io::BufReader::new(guest.get().stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");

    let o = env.run(&["rm", "aarch64"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("aarch64 is in use by a running xroot guest") && e.contains("hint:"),
        "{e}"
    );
    assert!(env.rootfs("aarch64").join("bin/busybox").is_file());
    // A forced re-fetch does not pull the tree from under the guest
    // either: it waits for the guest to finish.
    let before = snapshot(&env.home().join("rootfs"));
    let mut refetch = spawn_fetch(&env, &["--force", "--quiet"]);
    thread::sleep(Duration::from_millis(700));
    assert!(
        refetch.get().try_wait().unwrap().is_none(),
        "--force did not wait"
    );
    assert_eq!(snapshot(&env.home().join("rootfs")), before);
    fs::write(&go, b"").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let o = guest.take().wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rest, "3.20.3\n/bin/busybox\n");
    let o = refetch.take().wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_installed_cleanly(&env);
    // Once the guest is gone, rm works.
    ok(&env.run(&["rm", "aarch64"]));
    assert_eq!(names(&env.home().join("rootfs")), Vec::<String>::new());
}
