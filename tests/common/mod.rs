//! Shared test support: the real `xroot` binary, a real HTTP server over
//! `../shared/alpine-mirror`, temporary stores, and prerequisite checks that
//! fail (not skip) under CI=true.
#![allow(dead_code)]

pub mod apkrepo;
pub mod faults;
pub mod oci;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread;

/// The eight arches in the shared mirror.
pub const MIRROR_ARCHES: [&str; 8] = [
    "aarch64", "armhf", "armv7", "ppc64le", "riscv64", "s390x", "x86", "x86_64",
];

pub fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    // A git worktree of the project one level further down (../wt/NAME)
    // finds the project's ../shared one level further up.
    let p = if p.exists() {
        p
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
    };
    p.canonicalize().unwrap_or(p)
}

pub fn mirror_dir() -> PathBuf {
    shared().join("alpine-mirror")
}

pub fn probe(target: &str) -> PathBuf {
    shared().join("fixtures/probe/bin").join(target)
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xroot"))
}

/// Whether we are under CI, where missing prerequisites are failures.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks a prerequisite: missing under CI, the test fails (panics with
/// `what`); locally it says so and returns false, and the caller returns.
///
/// The notice is written to the process's stderr directly, not through
/// `eprintln!`, which libtest captures and throws away for a passing test:
/// so `cargo test` shows `SKIPPED test_name: what` next to the test's `ok`.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if ci() {
        panic!("prerequisite missing under CI: {what}");
    }
    use std::io::Write;
    let test = thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test} (not run, not CI): {what}"
    );
    false
}

/// Tests that change the host (create users, rewrite /etc/subuid and
/// /etc/subgid, register host binfmt_misc handlers) run only when asked
/// with `XROOT_TEST_HOST=1` (`.ci/run` sets it), so that `cargo test` on a
/// developer's machine leaves it alone. Otherwise a visible skip (a
/// failure under CI, where the switch must be set).
pub fn host_changes_allowed() -> bool {
    require(
        std::env::var("XROOT_TEST_HOST").is_ok_and(|v| v == "1"),
        "this test changes the host (users, /etc/subuid, binfmt handlers): set XROOT_TEST_HOST=1 to run it",
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn have_qemu(target: &str) -> bool {
    ["/usr/bin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(format!("qemu-{target}-static")).exists())
}

/// Root, qemu-user-static and a kernel with private binfmt_misc: what the
/// sandbox tests need.
pub fn sandbox_ready(qemu_target: &str) -> bool {
    require(is_root(), "tests must run as root (CI does)")
        && require(
            have_qemu(qemu_target),
            &format!("qemu-{qemu_target}-static (apt-get install qemu-user-static)"),
        )
}

/// A temporary store plus the environment to run xroot against it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub mirror: String,
}

impl Env {
    /// A store in a fresh temp dir; `mirror` is an http:// or file:// URL.
    pub fn new(mirror: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("xroot-test-")
            .tempdir()
            .expect("tempdir");
        Env {
            dir,
            mirror: mirror.to_string(),
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("XROOT_HOME", self.home())
            .env("XROOT_MIRROR", &self.mirror)
            .env("XROOT_RETRIES", "2")
            .env_remove("XROOT_MAX_UNPACKED")
            .env_remove("XROOT_QEMU_PRELINK")
            .current_dir(self.dir.path());
        c
    }

    /// Runs xroot with args; returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running xroot")
    }

    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.home().join("rootfs").join(id).join("root")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success, showing stderr otherwise.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "xroot failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// The host's mount table, for before/after comparisons.
pub fn host_mounts() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.split(' ').skip(3).take(2).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

/// The host's binfmt_misc entries (empty if not mounted).
pub fn host_binfmt_entries() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A real HTTP server (tiny_http) serving a directory tree. Alpine's
/// mirrors make `latest-stable` a symlink to the newest branch; the copy in
/// ../shared holds it as a small text file naming the branch, so the server
/// resolves a path component that is such a file the way the symlink would.
pub struct MirrorServer {
    pub url: String,
    server: Arc<tiny_http::Server>,
    handle: Option<thread::JoinHandle<()>>,
}

impl MirrorServer {
    pub fn start(root: PathBuf) -> MirrorServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind test server"));
        let port = server.server_addr().to_ip().expect("ip addr").port();
        let s = server.clone();
        let handle = thread::spawn(move || {
            for req in s.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("/").to_string();
                match resolve(&root, &path) {
                    Some(file) => {
                        let f = std::fs::File::open(&file).expect("open served file");
                        let _ = req.respond(tiny_http::Response::from_file(f));
                    }
                    None => {
                        let _ = req.respond(
                            tiny_http::Response::from_string("not found").with_status_code(404),
                        );
                    }
                }
            }
        });
        MirrorServer {
            url: format!("http://127.0.0.1:{port}"),
            server,
            handle: Some(handle),
        }
    }

    /// The shared Alpine mirror.
    pub fn alpine() -> MirrorServer {
        MirrorServer::start(mirror_dir())
    }
}

impl Drop for MirrorServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Maps a URL path to a file under `root`, refusing `..`, following
/// "symlink files" (a file whose whole content names a sibling directory).
pub fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let mut cur = root.to_path_buf();
    let parts: Vec<&str> = url_path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." || *part == "." {
            return None;
        }
        let next = cur.join(part);
        let last = i + 1 == parts.len();
        if !last && next.is_file() {
            let target = std::fs::read_to_string(&next).ok()?;
            let target = target.trim();
            if target.is_empty() || target.contains('/') || !cur.join(target).is_dir() {
                return None;
            }
            cur = cur.join(target);
        } else {
            cur = next;
        }
    }
    cur.is_file().then_some(cur)
}

/// An unprivileged user for rootless tests, created if missing (as root).
/// `subids`: whether /etc/subuid and /etc/subgid give it a range.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

static USER_SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn unprivileged_user(name: &str, subids: Option<u64>) -> User {
    let _g = USER_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .expect("id")
        .status
        .success();
    if !exists {
        let o = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", name])
            .output()
            .expect("useradd");
        assert!(o.status.success(), "useradd {name}: {}", stderr(&o));
    }
    // Make the subordinate ranges exactly what the test asks for.
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{name}:")))
            .map(str::to_string)
            .collect();
        if let Some(start) = subids {
            lines.push(format!("{name}:{start}:65536"));
        }
        std::fs::write(
            file,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .expect("write subid file");
    }
    let id = |flag: &str| -> u32 {
        String::from_utf8(
            Command::new("id")
                .arg(flag)
                .arg(name)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    };
    let home = PathBuf::from(format!("/home/{name}"));
    User {
        name: name.to_string(),
        uid: id("-u"),
        gid: id("-g"),
        home,
    }
}

/// A copy of the xroot binary that any user can execute (the build
/// directory may be under a 0700 home).
pub fn public_bin(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("xroot");
    std::fs::copy(bin(), &p).expect("copy xroot");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A temp dir that `user` owns, with traversable parents.
pub fn user_tempdir(user: &User) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("xroot-rootless-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(d.path(), Some(user.uid), Some(user.gid)).expect("chown");
    d
}

/// A command that runs `program` as `user` (setpriv sets real, effective
/// and saved ids and the user's groups; no capabilities remain), with a
/// minimal environment of that user.
pub fn as_user(user: &User, program: &Path) -> Command {
    let mut c = Command::new("/usr/bin/setpriv");
    c.args([
        "--reuid",
        &user.uid.to_string(),
        "--regid",
        &user.gid.to_string(),
        "--init-groups",
        "--",
    ])
    .arg(program);
    c.env_clear()
        .env("HOME", &user.home)
        .env("USER", &user.name)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    c
}
