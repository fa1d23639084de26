//! `xroot export` of a tree whose guest is hostile (issue #13, class 2):
//! the walk is relative to directory fds, so swapping directories and
//! symlinks under it cannot get a host file into the archive, and a tree
//! deeper than PATH_MAX exports.

mod common;

use std::ffi::CString;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ok, stderr, Env, MirrorServer};

/// Every regular file's bytes in a tar archive, concatenated.
fn archive_contents(tar: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(tar).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        e.read_to_end(&mut all).unwrap();
    }
    all
}

#[test]
fn swapping_directories_and_symlinks_during_export_leaks_no_host_file() {
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64"]));
    let root = env.rootfs("aarch64");
    // A host directory with a secret the guest would like to read.
    let host = tempfile::tempdir().unwrap();
    let secret = format!("host-secret-{}", std::process::id());
    std::fs::write(host.path().join("shadow"), &secret).unwrap();
    // In the tree: `race/dN` are directories holding a file named like the
    // host's, `race/fN` files; the swapper makes them symlinks into the
    // host directory and back, as fast as it can. (Walking by path, an
    // export would list the host directory through a swapped `dN` and then
    // read `dN/shadow` through it.)
    let race = root.join("race");
    const N: usize = 16;
    for i in 0..N {
        std::fs::create_dir_all(race.join(format!("d{i}"))).unwrap();
        std::fs::write(race.join(format!("d{i}/shadow")), "guest").unwrap();
        std::fs::write(race.join(format!("f{i}")), "guest").unwrap();
    }
    let stop = AtomicBool::new(false);
    let out = env.dir.path().join("out.tar");
    let out_s = out.display().to_string();
    let (mut exported, mut refused) = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 1) % N;
                let (d, d2) = (race.join(format!("d{i}")), race.join(format!("d{i}.real")));
                let (f, f2) = (race.join(format!("f{i}")), race.join(format!("f{i}.real")));
                let _ = std::fs::rename(&d, &d2);
                let _ = std::os::unix::fs::symlink(host.path(), &d);
                let _ = std::fs::rename(&f, &f2);
                let _ = std::os::unix::fs::symlink(host.path().join("shadow"), &f);
                std::thread::yield_now();
                let _ = std::fs::remove_file(&d);
                let _ = std::fs::rename(&d2, &d);
                let _ = std::fs::remove_file(&f);
                let _ = std::fs::rename(&f2, &f);
            }
        });
        // The swapper stops however this thread leaves (an assertion too).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        // Export again and again for a bounded time.
        // (8 seconds, and at least 3 exports however slow the machine.)
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(8) || exported + refused < 3 {
            let o = env.run(&["export", "aarch64", &out_s]);
            if o.status.success() {
                exported += 1;
                let all = archive_contents(&out);
                assert!(
                    !all.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "a host file got into the archive"
                );
            } else {
                refused += 1;
                let e = stderr(&o);
                assert!(
                    e.contains("changed while being exported") || e.contains("shrank"),
                    "{e}"
                );
                assert!(e.len() < 400, "{e}");
            }
        }
    });
    eprintln!("{exported} exports, {refused} refused for a swap");
}

/// Makes `depth` nested directories `dd` under `dir` (relative to fds: the
/// path is longer than PATH_MAX) with a file `bottom` at the end.
fn deep_tree(dir: &Path, depth: usize) {
    let c = |s: &str| CString::new(s).unwrap();
    let mut fd = unsafe {
        libc::open(
            c(&dir.display().to_string()).as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY,
        )
    };
    assert!(fd >= 0);
    for _ in 0..depth {
        assert_eq!(unsafe { libc::mkdirat(fd, c("dd").as_ptr(), 0o755) }, 0);
        let next =
            unsafe { libc::openat(fd, c("dd").as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY) };
        assert!(next >= 0);
        unsafe { libc::close(fd) };
        fd = next;
    }
    let f = unsafe {
        libc::openat(
            fd,
            c("bottom").as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )
    };
    assert!(f >= 0);
    assert_eq!(unsafe { libc::write(f, b"deep\n".as_ptr().cast(), 5) }, 5);
    unsafe {
        libc::close(f);
        libc::close(fd)
    };
}

#[test]
fn a_tree_deeper_than_path_max_exports() {
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "x86_64"]));
    let depth = 2500; // 7500 bytes of path: past PATH_MAX (4096)
    deep_tree(&env.rootfs("x86_64").join("tmp"), depth);
    let out = env.dir.path().join("deep.tar.gz");
    let o = env.run(&["export", "x86_64", &out.display().to_string()]);
    ok(&o);
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&out).unwrap(),
    ));
    let mut found = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().into_owned();
        if p.ends_with("bottom") {
            assert_eq!(p.components().count(), depth + 3, "./tmp/dd.../bottom");
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            assert_eq!(s, "deep\n");
            found = true;
        }
    }
    assert!(found, "the deepest file is not in the archive");
}
