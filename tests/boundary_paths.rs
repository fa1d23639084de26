//! Issue #13 class 2 and 5, issue #18 items 1, 2, 6-9: xroot acts on a tree
//! that a guest or an archive controls only through descriptors, leaves it
//! as it was, and works in the shapes real trees and real projects have.
//! Each test runs the real binary, real namespaces and real qemu.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn installed() -> Option<(MirrorServer, Env)> {
    if !sandbox_ready("aarch64") {
        return None;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    Some((server, env))
}

/// Runs `script` in the aarch64 guest from `cwd` with extra `args`.
fn guest_in(env: &Env, cwd: &Path, args: &[&str], script: &str) -> std::process::Output {
    let mut c = env.cmd();
    c.current_dir(cwd)
        .args(["run", "aarch64"])
        .args(args)
        .args(["--", "sh", "-c", script]);
    c.output().expect("running xroot")
}

/// Every entry of a tree with its mode, size and mtime.
fn snapshot(p: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(p).unwrap().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            use std::os::unix::fs::MetadataExt;
            out.push(format!(
                "{} {:o} {} {}",
                e.path().display(),
                m.mode(),
                m.len(),
                m.mtime()
            ));
            if m.is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut v = Vec::new();
    walk(p, &mut v);
    v.sort();
    v
}

#[test]
fn cleanup_never_follows_a_parent_the_guest_swapped_for_a_symlink() {
    let Some((_s, env)) = installed() else { return };
    // A host directory with an empty `q` in it, as the bind's mount point
    // would be: the old clean-up removed it through the guest's symlink.
    let victim = tempfile::tempdir().unwrap();
    fs::create_dir(victim.path().join("q")).unwrap();
    let proj = env.dir.path().join("p/q");
    fs::create_dir_all(&proj).unwrap();
    let p_in_guest = env.dir.path().join("p");
    let script = format!(
        "cd / && mv {p} {p}.moved && ln -s {v} {p} && echo swapped",
        p = p_in_guest.display(),
        v = victim.path().display()
    );
    let o = guest_in(&env, &proj, &["--bind-cwd", "dir"], &script);
    assert_eq!(ok(&o), "swapped\n");
    assert!(
        victim.path().join("q").is_dir(),
        "xroot removed a host directory"
    );
}

#[test]
fn a_racing_guest_never_makes_xroot_create_a_host_file() {
    let Some((_s, env)) = installed() else { return };
    let victim = tempfile::tempdir().unwrap();
    let file = env.dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    // Guest A flips /tmp/race between a directory and a symlink to the
    // victim (a host path) for a bounded time, while guest B is started
    // again and again with a bind whose mount point is under /tmp/race.
    let flipper = format!(
        "end=$(( $(date +%s) + 6 )); while [ $(date +%s) -lt $end ]; do \
         rm -rf /tmp/race; ln -s {v} /tmp/race; rm -f /tmp/race; mkdir /tmp/race; done",
        v = victim.path().display()
    );
    let mut a = env.cmd();
    a.current_dir("/")
        .args(["run", "aarch64", "--", "sh", "-c", &flipper]);
    let mut a = a.spawn().unwrap();
    let bind = format!("{}:/tmp/race/f", file.display());
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < Duration::from_secs(5) {
        let _ = env
            .cmd()
            .current_dir("/")
            .args(["run", "aarch64", "--bind", &bind, "--", "true"])
            .output()
            .unwrap();
        runs += 1;
    }
    let _ = a.wait();
    assert!(runs > 3, "only {runs} runs");
    assert_eq!(
        fs::read_dir(victim.path()).unwrap().count(),
        0,
        "xroot created something in a host directory"
    );
}

#[test]
fn resolv_conf_in_every_real_shape() {
    let Some((_s, env)) = installed() else { return };
    let host = fs::read_to_string(fs::canonicalize("/etc/resolv.conf").unwrap()).unwrap();
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path().join("root");
    assert!(Command::new("cp")
        .args(["-a"])
        .arg(env.rootfs("aarch64"))
        .arg(&root)
        .status()
        .unwrap()
        .success());
    let rc = root.join("etc/resolv.conf");
    let shapes: [(&str, &dyn Fn()); 5] = [
        ("regular", &|| {
            fs::write(&rc, "nameserver 192.0.2.1\n").unwrap()
        }),
        ("absent", &|| ()),
        ("relative dangling into /run", &|| {
            symlink("../run/systemd/resolve/stub-resolv.conf", &rc).unwrap()
        }),
        ("absolute dangling", &|| {
            symlink("/run/systemd/resolve/resolv.conf", &rc).unwrap()
        }),
        ("absolute to an existing file", &|| {
            fs::write(root.join("etc/real.conf"), "nameserver 192.0.2.2\n").unwrap();
            symlink("/etc/real.conf", &rc).unwrap()
        }),
    ];
    let rootfs = root.display().to_string();
    for (what, make) in shapes {
        let _ = fs::remove_file(&rc);
        let _ = fs::remove_file(root.join("etc/real.conf"));
        make();
        let before = snapshot(&root);
        for extra in [&[][..], &["--ephemeral"][..]] {
            let mut args = vec!["--rootfs", &rootfs];
            args.extend_from_slice(extra);
            let o = guest_in(&env, Path::new("/"), &args, "cat /etc/resolv.conf");
            assert_eq!(ok(&o), host, "{what} {extra:?}");
            assert_eq!(
                snapshot(&root),
                before,
                "{what} {extra:?}: the tree changed"
            );
        }
        // --dns guest: the guest's own configuration, untouched.
        let o = guest_in(
            &env,
            Path::new("/"),
            &["--rootfs", &rootfs, "--dns", "guest"],
            "cat /etc/resolv.conf 2>/dev/null; true",
        );
        // What the guest itself would read: its symlink taken inside its tree.
        let own = match fs::read_link(&rc) {
            Ok(t) if t.is_absolute() => fs::read_to_string(root.join(t.strip_prefix("/").unwrap())),
            Ok(t) => fs::read_to_string(root.join("etc").join(t)),
            Err(_) => fs::read_to_string(&rc),
        }
        .unwrap_or_default();
        assert_eq!(ok(&o), own, "{what} --dns guest");
    }
}

#[test]
fn ephemeral_runs_never_write_the_lower_tree() {
    let Some((_s, env)) = installed() else { return };
    let proj = env.dir.path().join("new/project");
    fs::create_dir_all(&proj).unwrap();
    let extra = env.dir.path().join("extra");
    fs::create_dir_all(&extra).unwrap();
    let before = snapshot(&env.rootfs("aarch64"));
    let bind = format!("{}:/opt/deep/extra", extra.display());
    let o = guest_in(
        &env,
        &proj,
        &["--ephemeral", "--bind", &bind],
        "pwd; touch /etc/x /opt/deep/extra/y",
    );
    assert_eq!(ok(&o), format!("{}\n", proj.display()));
    assert!(extra.join("y").exists(), "the bind is the host directory");
    assert_eq!(snapshot(&env.rootfs("aarch64")), before);
    // A read-only tree (bound read-only on the host): the working
    // directory is still bound, in the throwaway layer.
    let ro = tempfile::tempdir().unwrap();
    let mnt = ro.path().join("ro");
    fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(env.rootfs("aarch64"))
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(mnt.clone());
    let m = mnt.display().to_string();
    let o = guest_in(&env, &proj, &["--rootfs", &m, "--ephemeral"], "pwd");
    assert_eq!(ok(&o), format!("{}\n", proj.display()));
}

#[test]
fn working_directory_follows_the_guests_tree() {
    let Some((_s, env)) = installed() else { return };
    // A host system directory the guest has too: the guest's own is used.
    let o = guest_in(
        &env,
        Path::new("/usr/lib"),
        &[],
        "pwd; test -d /usr/lib/engines-3 && /bin/true && echo guest-own",
    );
    assert_eq!(ok(&o), "/usr/lib\nguest-own\n");
    // Inside the tree itself: the same place in the guest.
    let etc = env.rootfs("aarch64").join("etc/apk");
    let o = guest_in(&env, &etc, &[], "pwd");
    assert_eq!(ok(&o), "/etc/apk\n");
    // In a git work tree: its top is bound, so ../configure works from a
    // build directory and what the build writes to .. reaches the host.
    let proj = env.dir.path().join("proj");
    fs::create_dir_all(proj.join(".git")).unwrap();
    fs::create_dir_all(proj.join("build")).unwrap();
    fs::write(
        proj.join("configure"),
        "#!/bin/sh\necho configured > ../out\n",
    )
    .unwrap();
    let o = guest_in(&env, &proj.join("build"), &[], "sh ../configure && pwd");
    assert_eq!(ok(&o), format!("{}\n", proj.join("build").display()));
    assert_eq!(
        fs::read_to_string(proj.join("out")).unwrap(),
        "configured\n"
    );
    // --bind-cwd dir: only the directory itself.
    let o = guest_in(
        &env,
        &proj.join("build"),
        &["--bind-cwd", "dir"],
        "test -e ../configure || echo hidden",
    );
    assert_eq!(ok(&o), "hidden\n");
}

#[test]
fn the_store_is_hidden_when_the_working_directory_holds_it() {
    let Some((_s, env)) = installed() else { return };
    // The test's cwd holds the store ($XROOT_HOME = cwd/home), as $HOME
    // holds the default store: the directory is bound, the store is not.
    fs::write(env.dir.path().join("main.c"), "int main(){return 0;}\n").unwrap();
    let home = env.home().display().to_string();
    let o = guest_in(
        &env,
        env.dir.path(),
        &[],
        &format!("ls main.c; ls -A {home} | wc -l; touch {home}/x 2>/dev/null || echo ro"),
    );
    assert_eq!(ok(&o), "main.c\n0\nro\n");
}

#[test]
fn mount_points_left_by_a_killed_run_are_removed_by_the_next() {
    let Some((_s, env)) = installed() else { return };
    let proj = env.dir.path().join("killed/here");
    fs::create_dir_all(&proj).unwrap();
    let top = env
        .rootfs("aarch64")
        .join(env.dir.path().strip_prefix("/").unwrap());
    let mut c = env.cmd();
    c.current_dir(&proj)
        .args(["run", "aarch64", "--bind-cwd", "dir", "--", "sleep", "30"]);
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while !top.join("killed/here").exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(top.join("killed/here").exists(), "the mount point was made");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(top.exists(), "a killed run cannot clean up");
    ok(&guest_in(&env, Path::new("/"), &[], "true"));
    assert!(
        !top.exists(),
        "the next run removed what the killed one left"
    );
}

/// The attack of issue #13 class 5, with two cooperating guests. `send`
/// runs (natively, x86_64 static) in an aarch64 guest: it starts an aarch64
/// child, opens the child's `/proc/PID/exe` — the qemu the guest runs on —
/// and passes that descriptor over an abstract unix socket. `recv` runs in
/// a second, native guest (no aarch64 handler of its own, so nothing there
/// keeps the file "text busy"), waits until the first guest is gone, then
/// reopens the descriptor for writing.
const SEND_RECV: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
static int sock(const char *name, struct sockaddr_un *a, socklen_t *len) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    strcpy(a->sun_path + 1, name);
    *len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
    return socket(AF_UNIX, SOCK_STREAM, 0);
}
int main(int argc, char **argv) {
    struct sockaddr_un a; socklen_t len;
    int s = sock(argv[2], &a, &len);
    char c = 0; struct iovec io = { &c, 1 };
    union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr h; } u;
    struct msghdr m = { 0 }; m.msg_iov = &io; m.msg_iovlen = 1;
    m.msg_control = u.b; m.msg_controllen = sizeof u.b;
    if (!strcmp(argv[1], "send")) {
        pid_t p = fork();
        if (p == 0) { execl("/bin/sleep", "sleep", "1", (char *)0); _exit(127); }
        usleep(400000);
        char path[64]; snprintf(path, sizeof path, "/proc/%d/exe", (int)p);
        int fd = open(path, O_RDONLY);
        if (fd < 0) { printf("open exe: %s\n", strerror(errno)); return 2; }
        if (connect(s, (struct sockaddr *)&a, len)) { printf("connect: %s\n", strerror(errno)); return 0; }
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &fd, sizeof fd);
        sendmsg(s, &m, 0);
        waitpid(p, 0, 0);
        printf("sent\n");
        return 0;
    }
    alarm(20); /* never wait for a sender that could not connect */
    if (bind(s, (struct sockaddr *)&a, len) || listen(s, 1)) { printf("bind: %s\n", strerror(errno)); return 2; }
    printf("ready\n"); fflush(stdout);
    int c2 = accept(s, 0, 0);
    if (c2 < 0 || recvmsg(c2, &m, 0) < 1) { printf("nothing received\n"); return 0; }
    int fd; memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
    sleep(3); /* the first guest is gone by then */
    char path[64]; snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int w = open(path, O_WRONLY | O_APPEND);
    if (w < 0) { printf("refused: %s\n", strerror(errno)); return 0; }
    printf("WRITABLE\n");
    return 0;
}
"#;

#[test]
fn no_guest_can_rewrite_the_interpreter_it_runs_on() {
    let Some((_s, env)) = installed() else { return };
    if !require(
        Path::new("/usr/bin/gcc").exists(),
        "gcc (apt-get install gcc libc6-dev)",
    ) {
        return;
    }
    let dir = env.dir.path().join("native");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("sr.c"), SEND_RECV).unwrap();
    let built = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(dir.join("sr"))
        .arg(dir.join("sr.c"))
        .status()
        .unwrap();
    assert!(built.success());
    // The second guest: a tree holding only the program (arch detected
    // from it: native, so no binfmt handler at all).
    let tree = env.dir.path().join("nativetree");
    fs::create_dir_all(&tree).unwrap();
    fs::copy(dir.join("sr"), tree.join("sr")).unwrap();
    let name = format!("xroot-test-{}", std::process::id());
    let t = tree.display().to_string();
    let mut recv = env.cmd();
    recv.current_dir("/")
        .args(["run", "--rootfs", &t, "--", "/sr", "recv", &name])
        .stdout(std::process::Stdio::piped());
    let recv = recv.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let prog = dir.join("sr").display().to_string();
    let o = env
        .cmd()
        .current_dir(&dir)
        .args([
            "run",
            "aarch64",
            "--bind-cwd",
            "dir",
            "--",
            &prog,
            "send",
            &name,
        ])
        .output()
        .unwrap();
    let sent = ok(&o);
    let mut recv = recv;
    if sent.contains("connect:") {
        // Scoped apart (Landlock): the receiver waits for nothing.
        let _ = recv.kill();
    }
    let out = stdout(&recv.wait_with_output().unwrap());
    assert!(
        !out.contains("WRITABLE"),
        "a guest could write the qemu: {sent}{out}"
    );
    // Either the descriptor never crossed (a kernel that scopes abstract
    // sockets per sandbox), or it did and the file is read-only.
    assert!(
        sent.contains("connect:") || out.contains("refused: Read-only file system"),
        "{sent}{out}"
    );
    // A copy changed behind xroot's back (not through a guest) is not used
    // again: its seal is broken and a fresh copy is made.
    let qdir = env.home().join("qemu");
    let copy = fs::read_dir(&qdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("qemu-aarch64-static.")
                && !n.contains(".seal")
                && !n.contains(".unusable")
        })
        .expect("a qemu copy");
    let len = fs::metadata(&copy).unwrap().len();
    let mut perms = fs::metadata(&copy).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    perms.set_mode(0o755);
    fs::set_permissions(&copy, perms).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&copy)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"tampered"))
        .unwrap();
    let o = guest_in(&env, Path::new("/"), &[], "uname -m");
    assert_eq!(ok(&o), "aarch64\n");
    assert_eq!(
        fs::metadata(&copy).unwrap().len(),
        len,
        "the tampered copy was replaced"
    );
}
