//! Issue #13, the guest boundary, classes 1 (terminal injection), 3
//! (inherited file descriptors) and 6 (shared kernel objects: session
//! keyring, abstract unix sockets, signals, the network).
//!
//! The guest programs are small C programs (`tests/guest-c/`) compiled
//! statically with the host's gcc and run as `xroot run --rootfs DIR`,
//! where DIR holds only the program: a real x86_64 guest in real
//! namespaces, for a root caller and for an unprivileged one. Terminals are
//! real pseudo-terminals opened here, with xroot as the session leader
//! that owns them, as under a shell; `xroot shell` runs Alpine's real
//! busybox shell from the test mirror.

mod common;
use common::*;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Compiles `tests/guest-c/NAME.c` statically into `dir/NAME`.
fn compile(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/guest-c/{name}.c"));
    let out = dir.join(name);
    let o = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("running gcc");
    assert!(o.status.success(), "gcc {name}.c: {}", stderr(&o));
    out
}

fn have_gcc() -> bool {
    Command::new("gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Who runs xroot.
enum Caller {
    Root,
    /// An unprivileged user with subordinate ids, and a public copy of xroot.
    User(User, PathBuf),
}

/// A caller with a private directory holding a one-program rootfs
/// (`root/probe`) and a store.
struct Setup {
    caller: Caller,
    dir: tempfile::TempDir,
    _bin_dir: Option<tempfile::TempDir>,
}

impl Setup {
    fn new(rootless: bool) -> Option<Setup> {
        if !require(is_root(), "tests must run as root (CI does)")
            || !require(have_gcc(), "gcc (apt-get install gcc libc6-dev)")
        {
            return None;
        }
        let (caller, dir, bin_dir) = if rootless {
            let user = unprivileged_user("xroot-bound", Some(400000));
            let dir = user_tempdir(&user);
            let bin_dir = tempfile::Builder::new()
                .prefix("xroot-bin-")
                .tempdir_in("/tmp")
                .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            let bin = public_bin(bin_dir.path());
            (Caller::User(user, bin), dir, Some(bin_dir))
        } else {
            let dir = tempfile::Builder::new()
                .prefix("xroot-bound-")
                .tempdir()
                .unwrap();
            (Caller::Root, dir, None)
        };
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        compile("probe", &root);
        if let Caller::User(u, _) = &caller {
            for p in [root.clone(), root.join("probe")] {
                std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid)).unwrap();
            }
        }
        Some(Setup {
            caller,
            dir,
            _bin_dir: bin_dir,
        })
    }

    fn name(&self) -> &'static str {
        match self.caller {
            Caller::Root => "root",
            Caller::User(..) => "rootless",
        }
    }

    /// `xroot run --rootfs DIR ARGS -- /probe PROBE...` as this caller.
    fn probe(&self, args: &[&str], probe: &[&str]) -> Command {
        let mut c = self.xroot();
        c.args(["run", "--rootfs"])
            .arg(self.dir.path().join("root"))
            .args(args)
            .args(["--", "/probe"])
            .args(probe);
        c
    }

    fn xroot(&self) -> Command {
        let mut c = match &self.caller {
            Caller::Root => Command::new(bin()),
            Caller::User(u, b) => as_user(u, b),
        };
        c.env("XROOT_HOME", self.dir.path().join("store"))
            .env_remove("XROOT_QEMU_PRELINK")
            .current_dir(self.dir.path());
        c
    }

    /// Runs `cmd` (a command line of this caller) with stdio captured.
    fn output(&self, mut cmd: Command) -> (i32, String) {
        let o = cmd.stdin(Stdio::null()).output().expect("running xroot");
        let text = format!("{}{}", stdout(&o), stderr(&o));
        eprintln!("--- {} ({:?}):\n{text}", self.name(), o.status.code());
        (o.status.code().unwrap_or(-1), text)
    }
}

/// A pseudo-terminal standing for the caller's terminal: the test holds
/// the master (it "types" and "sees"), xroot gets the slave as its
/// controlling terminal in a session of its own, as under a login shell.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn open(rows: u16, cols: u16) -> Pty {
        // Both ends close-on-exec from the start: tests run in parallel
        // threads, and a child spawned by another must not inherit them.
        // SAFETY: plain system calls; each fd is checked.
        let (master, slave) = unsafe {
            let m = libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(m >= 0, "/dev/ptmx: {}", std::io::Error::last_os_error());
            let unlock: libc::c_int = 0;
            assert_eq!(libc::ioctl(m, libc::TIOCSPTLCK, &unlock), 0);
            let s = libc::ioctl(
                m,
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(s >= 0, "TIOCGPTPEER: {}", std::io::Error::last_os_error());
            (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s))
        };
        let pty = Pty {
            master,
            slave,
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        pty.resize(rows, cols);
        let reader = pty.master.try_clone().unwrap();
        let s = pty.seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into our buffer from our fd.
                let n =
                    unsafe { libc::read(reader.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    s.lock().unwrap().extend_from_slice(&buf[..n as usize]);
                    continue;
                }
                let e = std::io::Error::last_os_error();
                if n < 0 && e.kind() == std::io::ErrorKind::WouldBlock {
                    let mut p = libc::pollfd {
                        fd: reader.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: poll on one local pollfd.
                    unsafe { libc::poll(&mut p, 1, 1000) };
                    continue;
                }
                if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
        });
        // Writes must not hang a test whose guest stopped reading.
        // SAFETY: fcntl on our fd.
        unsafe { libc::fcntl(pty.master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        pty
    }

    /// Starts `cmd` on the terminal: the slave on fds 1 and 2, and on 0
    /// when `input`; its controlling terminal in a new session.
    fn spawn(&self, cmd: Command, input: bool) -> Child {
        self.spawn_on(cmd, [input, true, true], None)
    }

    /// Starts `cmd` with the slave on each fd of 0-2 that `tty` says
    /// (/dev/null on the others, or `stdout` there), as its controlling
    /// terminal in a new session.
    fn spawn_on(&self, mut cmd: Command, tty: [bool; 3], stdout: Option<Stdio>) -> Child {
        let io = |t: bool| {
            if t {
                Stdio::from(self.slave.try_clone().unwrap())
            } else {
                Stdio::null()
            }
        };
        cmd.stdin(io(tty[0]))
            .stdout(stdout.unwrap_or_else(|| io(tty[1])))
            .stderr(io(tty[2]));
        let first = tty.iter().position(|t| *t).unwrap_or(0) as i32;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(first, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        cmd.spawn().expect("starting xroot on the pty")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    #[track_caller]
    fn send(&self, bytes: &str) {
        let mut rest = bytes.as_bytes();
        let end = Instant::now() + Duration::from_secs(10);
        while !rest.is_empty() {
            // SAFETY: writing from our buffer to our nonblocking fd.
            let n =
                unsafe { libc::write(self.master.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                rest = &rest[n as usize..];
            } else if Instant::now() > end {
                panic!("the terminal takes no input; it shows:\n{}", self.text());
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Waits until the terminal has shown `what`.
    #[track_caller]
    fn wait_for(&self, what: &str, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if self.text().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the terminal never showed {what:?}; it shows:\n{}",
            self.text()
        );
    }

    /// The terminal's settings, comparable.
    fn termios(&self) -> String {
        let t = nix::sys::termios::tcgetattr(&self.slave).expect("tcgetattr");
        let t: libc::termios = t.into();
        format!(
            "{:o} {:o} {:o} {:o} {:?}",
            t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc
        )
    }

    fn is_raw(&self) -> bool {
        let t = nix::sys::termios::tcgetattr(&self.slave).expect("tcgetattr");
        !t.local_flags
            .contains(nix::sys::termios::LocalFlags::ICANON)
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads our winsize; the kernel sends SIGWINCH
        // to the terminal's foreground process group (xroot's).
        assert_eq!(
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
            0
        );
    }

    /// What is waiting to be read as input on the caller's terminal: what
    /// the caller's shell would run next.
    fn pending_input(&self) -> String {
        let fd: RawFd = self.slave.as_raw_fd();
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD fills an int we own.
        unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        if n <= 0 {
            return String::new();
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: nonblocking read into our buffer.
        let got = unsafe {
            libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
            libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
        };
        buf.truncate(got.max(0) as usize);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Waits for `child` at most `secs`; its exit status (128+N for signal N).
#[track_caller]
fn wait(child: &mut Child, secs: u64, pty: &Pty) -> i32 {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            return st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("xroot did not exit in {secs} s; terminal:\n{}", pty.text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Class 1: a guest types into every terminal it can reach (TIOCSTI on
/// fds 0-2 and /dev/tty, before and after trying to make each its
/// controlling terminal with TIOCSCTTY, plus TIOCLINUX): nothing reaches
/// the caller's terminal's input, whether the caller's stdin is that
/// terminal or only its stdout and stderr are; the caller's settings are
/// the same afterwards. (On the old code the guest's fd 0 or 1 was the
/// caller's controlling terminal and the text was queued for its shell.)
#[test]
fn terminal_injection_never_reaches_the_caller() {
    for rootless in [false, true] {
        let Some(s) = Setup::new(rootless) else {
            return;
        };
        // Interactive; output only; stdin and stderr (`xroot run ... | less`).
        for tty in [[true, true, true], [false, true, true], [true, false, true]] {
            let pty = Pty::open(24, 80);
            let before = pty.termios();
            let mut child = pty.spawn_on(s.probe(&[], &["sti"]), tty, None);
            let code = wait(&mut child, 60, &pty);
            let seen = pty.text();
            eprintln!("--- {} {tty:?} status {code}:\n{seen}", s.name());
            assert_eq!(code, 0, "{}: {seen}", s.name());
            if tty[1] {
                assert!(seen.contains("TIOCLINUX fd 2:"), "the probe ran: {seen}");
            }
            let queued = pty.pending_input();
            assert!(
                !queued.contains("XROOT-INJECTED"),
                "{} (terminal on {tty:?}): the guest typed into the caller's terminal: {queued:?}",
                s.name()
            );
            assert_eq!(pty.termios(), before, "{}: settings changed", s.name());
        }
    }
}

/// Class 1, the relay: Ctrl-C reaches the guest (status 130) and the
/// caller's terminal is back as it was; `kill -9` of xroot while the
/// terminal is raw still gives it back (the watcher), and the guest dies;
/// a hang-up of the caller's terminal ends the guest and xroot.
#[test]
fn callers_terminal_is_restored_after_ctrl_c_and_sigkill() {
    for rootless in [false, true] {
        let Some(s) = Setup::new(rootless) else {
            return;
        };
        let pty = Pty::open(24, 80);
        let before = pty.termios();
        let mut child = pty.spawn(s.probe(&[], &["sleep", "100"]), true);
        pty.wait_for("sleeping", 60);
        assert!(pty.is_raw(), "the caller's terminal is raw during the run");
        pty.send("\x03");
        let code = wait(&mut child, 10, &pty);
        assert_eq!(code, 130, "{}: Ctrl-C: {}", s.name(), pty.text());
        assert_eq!(pty.termios(), before, "{}: after Ctrl-C", s.name());

        let pty = Pty::open(24, 80);
        let before = pty.termios();
        let mut child = pty.spawn(s.probe(&[], &["sleep", "100"]), true);
        pty.wait_for("sleeping", 60);
        assert!(pty.is_raw());
        // SAFETY: killing our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        assert_eq!(wait(&mut child, 10, &pty), 128 + 9);
        let end = Instant::now() + Duration::from_secs(5);
        while pty.termios() != before && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(pty.termios(), before, "{}: after kill -9", s.name());
        // The caller's terminal hangs up (its window closed) while the
        // guest reads its own pty: the guest's pty is hung up in turn and
        // xroot ends, instead of relaying for ever from a dead terminal.
        let pty = Pty::open(24, 80);
        let mut child = pty.spawn(s.probe(&[], &["cat"]), true);
        pty.wait_for("reading", 60);
        // SAFETY: TIOCVHANGUP on our own slave (the test is root).
        assert_eq!(
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCVHANGUP, 0) },
            0
        );
        let code = wait(&mut child, 10, &pty);
        assert!(
            code == 0 || code == 129,
            "{}: after a hang-up: {code}",
            s.name()
        );

        // The guest went with xroot: no probe left running.
        std::thread::sleep(Duration::from_millis(300));
        let probe = s.dir.path().join("root");
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| {
                c.starts_with("/probe sleep 100")
                    || c.starts_with("/probe cat")
                    || c.contains(&*probe.to_string_lossy())
            })
            .collect();
        assert!(left.is_empty(), "{}: left running: {left:?}", s.name());
    }
}

/// Class 1: with stdin a terminal but stdout a pipe (`xroot run ... |
/// less`), the terminal is shared with the pipeline: xroot leaves its
/// modes alone (never raw), typed lines reach the guest, Ctrl-D typed there
/// is the guest's end-of-file.
#[test]
fn piped_output_leaves_the_terminal_cooked_and_relays_lines() {
    for rootless in [false, true] {
        let Some(s) = Setup::new(rootless) else {
            return;
        };
        let pty = Pty::open(24, 80);
        let before = pty.termios();
        let out = s.dir.path().join("out");
        let file = std::fs::File::create(&out).unwrap();
        let mut child = pty.spawn_on(
            s.probe(&[], &["cat"]),
            [true, false, true],
            Some(Stdio::from(file)),
        );
        let end = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&out).unwrap().contains("reading") {
            assert!(
                Instant::now() < end,
                "{}: the probe never started",
                s.name()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            pty.termios(),
            before,
            "{}: the terminal was changed",
            s.name()
        );
        pty.send("typed line\n");
        pty.send("\x04");
        assert_eq!(wait(&mut child, 10, &pty), 0, "{}", pty.text());
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, "reading\ntyped line\ncat done\n", "{}", s.name());
        assert_eq!(pty.termios(), before);
    }
}

/// Class 1: `xroot shell` in a real pty is as usable as a terminal:
/// window size and its changes, job control (`&`, `jobs`, `fg`, Ctrl-Z),
/// Ctrl-C, `exit 3`, EOF; the caller's settings are unchanged after.
/// Typed lines are `echo X$((N+1))` so that the echo of the typing is not
/// mistaken for the answer.
#[test]
fn shell_in_a_real_pty() {
    if !sandbox_ready("x86_64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "x86_64", "--quiet"]));

    let pty = Pty::open(24, 80);
    let before = pty.termios();
    let mut child = pty.spawn(
        {
            let mut c = env.cmd();
            c.args(["shell", "x86_64"]);
            c
        },
        true,
    );
    pty.send("stty size; tty; echo S$((10+1))\n");
    pty.wait_for("S11", 60);
    assert!(pty.text().contains("24 80"), "{}", pty.text());
    assert!(
        pty.text().contains("/dev/pts/0"),
        "the guest's own pty: {}",
        pty.text()
    );

    pty.resize(30, 100);
    std::thread::sleep(Duration::from_millis(300));
    pty.send("stty size; echo S$((10+2))\n");
    pty.wait_for("S12", 10);
    assert!(pty.text().contains("30 100"), "resize: {}", pty.text());

    pty.send("sleep 100 &\n");
    pty.send("jobs; echo J$((20+1))\n");
    pty.wait_for("J21", 10);
    assert!(pty.text().contains("Running"), "{}", pty.text());
    pty.send("fg\n");
    std::thread::sleep(Duration::from_millis(500));
    pty.send("\x03");
    pty.send("echo C$((30+1))\n");
    pty.wait_for("C31", 10);

    pty.send("sleep 50\n");
    std::thread::sleep(Duration::from_millis(500));
    pty.send("\x1a");
    pty.send("jobs; echo Z$((40+1))\n");
    pty.wait_for("Z41", 10);
    assert!(pty.text().contains("Stopped"), "Ctrl-Z: {}", pty.text());
    pty.send("kill -9 %1; echo K$((50+1))\n");
    pty.wait_for("K51", 10);

    pty.send("exit 3\n");
    assert_eq!(wait(&mut child, 20, &pty), 3, "{}", pty.text());
    assert_eq!(pty.termios(), before, "settings after exit");

    // EOF (Ctrl-D) ends the shell: status 0.
    let pty = Pty::open(24, 80);
    let mut child = pty.spawn(
        {
            let mut c = env.cmd();
            c.args(["shell", "x86_64"]);
            c
        },
        true,
    );
    pty.send("echo P$((1+1))\n");
    pty.wait_for("P2", 60);
    pty.send("\x04");
    assert_eq!(wait(&mut child, 20, &pty), 0, "{}", pty.text());
    assert_eq!(pty.termios(), before, "settings after EOF");

    // With --user the pty is the user's, as login(1) makes it: reopening
    // it by name works.
    let pty = Pty::open(24, 80);
    let mut c = env.cmd();
    c.args([
        "run",
        "--user",
        "nobody",
        "x86_64",
        "--",
        "sh",
        "-c",
        "id -u; : > \"$(tty)\" && echo REOPEN-$((1+1))",
    ]);
    let mut child = pty.spawn(c, true);
    assert_eq!(wait(&mut child, 30, &pty), 0, "{}", pty.text());
    assert!(
        pty.text().contains("65534") && pty.text().contains("REOPEN-2"),
        "{}",
        pty.text()
    );
}

/// Class 3: descriptors the caller had open (a root-only file for reading
/// and for writing, a directory) never reach the guest, neither as fds nor
/// through /proc/self/fd; `--preserve-fds N` passes exactly 3..3+N; a
/// `--preserve-fds` naming a closed fd is refused with the fd named.
#[test]
fn inherited_fds_are_closed_and_preserve_fds_passes_exactly_n() {
    for rootless in [false, true] {
        let Some(s) = Setup::new(rootless) else {
            return;
        };
        let secret = s.dir.path().join("secret");
        std::fs::write(&secret, "host-secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let with_fds = |args: &[&str]| {
            let mut c = s.probe(args, &["fds"]);
            let r = std::fs::File::open(&secret).unwrap();
            let w = std::fs::OpenOptions::new()
                .append(true)
                .open(&secret)
                .unwrap();
            let d = std::fs::File::open("/etc").unwrap();
            let fds = [r.as_raw_fd(), w.as_raw_fd(), d.as_raw_fd()];
            // SAFETY: fcntl and dup2 between fork and exec; the originals
            // are close-on-exec (and may sit at 3..5 themselves: moved
            // out of the way first), the copies at 3, 4, 5 are not.
            unsafe {
                c.pre_exec(move || {
                    let high = fds.map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100));
                    for (i, fd) in high.iter().enumerate() {
                        if *fd < 0 || libc::dup2(*fd, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                })
            };
            let out = s.output(c);
            drop((r, w, d));
            out
        };
        let (code, out) = with_fds(&[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("fds done"), "{out}");
        assert!(
            !out.contains("OPEN"),
            "{}: the guest got inherited fds:\n{out}",
            s.name()
        );
        assert!(!out.contains("host-secret"), "{out}");

        let (code, out) = with_fds(&["--preserve-fds", "1"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("OPEN 3 ") && out.contains("host-secret"),
            "{out}"
        );
        assert!(!out.contains("OPEN 4") && !out.contains("OPEN 5"), "{out}");

        let (code, out) = s.output(s.probe(&["--preserve-fds", "2"], &["fds"]));
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("file descriptor 3 is not open"), "{out}");
    }
}

/// Class 6: the guest's session keyring is a new one: it does not find the
/// caller's secret key in it, and the key it adds does not land in the
/// caller's.
#[test]
fn guest_gets_a_fresh_session_keyring() {
    for rootless in [false, true] {
        let Some(s) = Setup::new(rootless) else {
            return;
        };
        let keyhost = compile("keyhost", s.dir.path());
        // keyhost, as the caller, sets up the caller's session keyring,
        // then runs `xroot run ... -- /probe keys`.
        let (mut c, xroot) = match &s.caller {
            Caller::Root => (Command::new(&keyhost), bin()),
            Caller::User(u, b) => (as_user(u, &keyhost), b.clone()),
        };
        c.arg(xroot)
            .args(["run", "--rootfs"])
            .arg(s.dir.path().join("root"))
            .args(["--", "/probe", "keys", "xroot-test-secret"])
            .env("XROOT_HOME", s.dir.path().join("store"))
            .current_dir(s.dir.path());
        let (code, out) = s.output(c);
        assert_eq!(code, 0, "{out}");
        let host = out
            .lines()
            .find_map(|l| l.strip_prefix("host session "))
            .and_then(|l| l.split(' ').next())
            .expect("keyhost's session")
            .to_string();
        let guest = out
            .lines()
            .find_map(|l| l.strip_prefix("session "))
            .expect("the guest's session keyring");
        assert_ne!(
            guest,
            host,
            "{}: the guest shares the caller's session keyring",
            s.name()
        );
        assert!(
            out.contains("search caller's key: ENOKEY"),
            "{}: {out}",
            s.name()
        );
        assert!(!out.contains("s3cret"), "{out}");
        assert!(
            out.contains("host sees guest key: no"),
            "{}: {out}",
            s.name()
        );
    }
}

fn landlock_abi() -> i64 {
    // SAFETY: the version query of landlock_create_ruleset.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    }
}

/// A listening abstract unix socket of the host's, e.g. a desktop's X11
/// or D-Bus, with a random name.
fn abstract_listener() -> (std::os::unix::net::UnixListener, String) {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("xroot-test-{}-{}", std::process::id(), rand_suffix());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    (l, name)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// Class 6: the guest cannot connect to the host's abstract unix sockets
/// nor signal a process outside the sandbox (its PID 1 is xroot's) on a
/// kernel with Landlock scoping; the default network is the host's (its
/// 127.0.0.1 services answer, as docs/security.md says), `--network none`
/// is a namespace of its own where neither the host's loopback services
/// nor its abstract sockets exist, with a working `lo`.
#[test]
fn abstract_sockets_signals_and_network_stay_inside() {
    for rootless in [false, true] {
        let Some(s) = Setup::new(rootless) else {
            return;
        };
        if !require(
            landlock_abi() >= 6,
            "a kernel with Landlock ABI 6 (Linux 6.12+)",
        ) {
            return;
        }
        let (_l, name) = abstract_listener();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port().to_string();
        let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
        let host_net = host_net.to_string_lossy();

        let (code, out) = s.output(s.probe(&[], &["scope", &name, &port]));
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("connect abstract: EPERM"),
            "{}: {out}",
            s.name()
        );
        assert!(out.contains("kill 1 0: EPERM"), "{}: {out}", s.name());
        assert!(out.contains("kill 1 SIGUSR2: EPERM"), "{}: {out}", s.name());
        assert!(
            out.contains("connect tcp 127.0.0.1: ok"),
            "default is the host's network: {out}"
        );
        assert!(out.contains(&format!("net {host_net}")), "{out}");

        let (code, out) = s.output(s.probe(&["--network", "none"], &["scope", &name, &port]));
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("connect abstract: ok"), "{}: {out}", s.name());
        assert!(
            out.contains("connect tcp 127.0.0.1: ECONNREFUSED"),
            "{}: {out}",
            s.name()
        );
        assert!(!out.contains(&format!("net {host_net}")), "{out}");
    }
}

/// `--network none` has a loopback that works (a server and a client
/// inside), for root and rootless callers, in a real Alpine guest.
#[test]
fn network_none_has_a_working_loopback() {
    if !sandbox_ready("x86_64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "x86_64", "--quiet"]));
    let out = ok(&env.run(&[
        "run",
        "--network",
        "none",
        "x86_64",
        "--",
        "sh",
        "-c",
        "ip -o link | cut -d' ' -f2; ping -c1 -W2 127.0.0.1 >/dev/null && echo PING-OK",
    ]));
    assert_eq!(out, "lo:\nPING-OK\n");
    let o = env.run(&["run", "--network", "bogus", "x86_64", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--network"), "{}", stderr(&o));
}

/// `xroot doctor` says which of these protections the kernel gives.
#[test]
fn doctor_reports_the_boundary_protections() {
    let env = Env::new("http://127.0.0.1:9");
    let o = env.run(&["doctor", "--json"]);
    let checks: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("doctor --json");
    let find = |n: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("no {n} check: {checks}"))
            .clone()
    };
    let ll = find("landlock scoping");
    let abi = landlock_abi();
    assert_eq!(ll["ok"], abi >= 6, "{ll}");
    if abi > 0 {
        assert!(
            ll["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("ABI {abi}")),
            "{ll}"
        );
    }
    let t = find("terminal");
    if let Ok(v) = std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti") {
        assert!(
            t["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("legacy_tiocsti = {}", v.trim())),
            "{t}"
        );
    }
    assert!(find("private binfmt_misc")["detail"].is_string());
}
