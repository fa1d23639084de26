//! The guest's own terminal (issue #13, class 1).
//!
//! A guest holding the caller's terminal could drive it: `TIOCSTI` types
//! text that the caller's shell runs after xroot exits (bubblewrap's
//! CVE-2017-5226), `TIOCSCTTY` would take a terminal that is nobody's
//! controlling tty, `TIOCLINUX` pastes on a virtual console. So no guest
//! process ever holds a descriptor of a terminal outside the sandbox:
//!
//! - When any of the caller's fds 0, 1, 2 is a terminal, the guest gets a
//!   pseudo-terminal of its own, and each of its fds 0-2 that was a
//!   terminal becomes that pty's slave; the others (a pipe, a file) are
//!   passed as they are. xroot outside relays between the pty's master and
//!   the caller's terminal.
//! - The command starts a new session (`setsid`) in every mode, with the
//!   pty's slave as its controlling terminal when there is one, so job
//!   control works inside and the caller's terminal is nobody's there.
//!
//! The pty is allocated from the guest's own devpts instance (mounted with
//! `newinstance` in `mounts.rs`), by its PID 1 after the mounts, and the
//! master is passed out over a unix socket (`SCM_RIGHTS`), as runc's
//! console socket and systemd-nspawn do. Allocated from the host's devpts
//! instead, the slave would be a `/dev/pts/N` that does not exist inside
//! (or is another pty there): `tty`, `ttyname` and programs that reopen
//! their terminal (`script`, `sudo`, `screen`) would be wrong.
//!
//! The relay puts the caller's terminal in raw mode when its stdin and
//! stdout are both terminals (interactive use) and xroot is in its
//! foreground, so Ctrl-C, Ctrl-Z, Ctrl-\ and Ctrl-D are bytes that the
//! guest's pty turns into its own signals and EOF; SIGWINCH is passed on as
//! `TIOCSWINSZ` on the master. With stdin a terminal but stdout not
//! (`xroot run ... | less`) the terminal is shared with the rest of the
//! pipeline: its modes are left alone, typed lines are relayed, Ctrl-C
//! reaches the guest through xroot's signal forwarding and Ctrl-D becomes
//! the guest pty's end-of-file. The saved
//! settings are restored on every way out: by the relay when it ends, and
//! by a small watcher process (forked before raw mode, in its own process
//! group, ignoring job-control and terminating signals) that restores them
//! when xroot's end of a pipe closes without a "done" byte, i.e. when xroot
//! was killed (SIGKILL included).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};

/// The caller's terminal, as found before the sandbox starts.
#[derive(Debug, Clone)]
pub struct Terminal {
    /// Which of fds 0, 1, 2 are terminals: each becomes the guest pty's slave.
    pub on_tty: [bool; 3],
    /// stdin and stdout are both terminals: interactive use, the caller's
    /// terminal goes raw. With only stdin a terminal (`xroot run ... |
    /// less`) its modes are left alone: it is shared with the pipeline.
    raw: bool,
    /// The settings the guest's pty starts with: the caller's.
    termios: Termios,
    /// rows, columns, x pixels, y pixels.
    winsize: [u16; 4],
}

impl Terminal {
    /// The caller's terminal, if any of fds 0, 1, 2 is one.
    pub fn detect() -> Option<Terminal> {
        // SAFETY: isatty only inspects the fd.
        let on_tty = [0, 1, 2].map(|fd| unsafe { libc::isatty(fd) } == 1);
        let src = on_tty.iter().position(|t| *t)? as RawFd;
        // SAFETY: a borrowed fd of ours for the duration of the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(src) };
        let mut termios = termios::tcgetattr(fd).ok()?;
        let raw = on_tty[0] && on_tty[1];
        if !raw {
            // The caller's terminal stays as it is and does its own output
            // processing and echo: the guest's pty lets output through
            // unchanged and does not echo again.
            termios.output_flags.remove(termios::OutputFlags::OPOST);
            termios.local_flags.remove(
                termios::LocalFlags::ECHO
                    | termios::LocalFlags::ECHOE
                    | termios::LocalFlags::ECHOK
                    | termios::LocalFlags::ECHONL,
            );
        }
        Some(Terminal {
            on_tty,
            raw,
            termios,
            winsize: winsize(src).unwrap_or([24, 80, 0, 0]),
        })
    }

    fn out_fd(&self) -> RawFd {
        out_fd(self.on_tty)
    }

    fn src_fd(&self) -> RawFd {
        src_fd(self.on_tty)
    }
}

/// The fd the guest's output is relayed to: stdout if it is a terminal,
/// else stderr, else stdin (terminal fds are opened read-write).
fn out_fd(on_tty: [bool; 3]) -> RawFd {
    [1, 2, 0]
        .into_iter()
        .find(|fd| on_tty[*fd as usize])
        .unwrap_or(1)
}

/// The terminal whose modes and window size the guest's pty copies.
fn src_fd(on_tty: [bool; 3]) -> RawFd {
    on_tty.iter().position(|t| *t).unwrap_or(0) as RawFd
}

/// Whether we are in the foreground of the terminal on `fd`: a background
/// job that read it would be stopped (SIGTTIN), so input is relayed only
/// in the foreground.
fn in_foreground(fd: RawFd) -> bool {
    // SAFETY: plain queries.
    unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() }
}

fn winsize(fd: RawFd) -> Option<[u16; 4]> {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some([
        ws.ws_row,
        ws.ws_col,
        ws.ws_xpixel,
        ws.ws_ypixel,
    ])
}

fn set_winsize(fd: RawFd, w: [u16; 4]) {
    let ws = libc::winsize {
        ws_row: w[0],
        ws_col: w[1],
        ws_xpixel: w[2],
        ws_ypixel: w[3],
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// A connected pair of unix sockets for passing the master out, made
/// before the sandbox's clone: (xroot's end, PID 1's end).
pub fn channel() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("creating a socket pair for the guest's terminal")
}

/// PID 1, after the mounts: allocates the guest's pty from its own devpts,
/// gives it the caller's settings and window size, sends the master to
/// xroot outside over `sock`, and returns the slave (close-on-exec).
pub fn open_in_guest(t: &Terminal, sock: RawFd) -> Result<OwnedFd> {
    // SAFETY: a constant path; the fd is checked below.
    let m = unsafe {
        libc::open(
            c"/dev/pts/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        return Err(std::io::Error::last_os_error()).context("opening /dev/pts/ptmx in the guest");
    }
    // SAFETY: we own the fd just opened.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int we own.
    if unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unlocking the guest's pty");
    }
    // Settings made on the master apply to the slave.
    termios::tcsetattr(&master, SetArg::TCSANOW, &t.termios)
        .context("setting the guest pty's modes")?;
    set_winsize(m, t.winsize);
    // TIOCGPTPEER opens the slave through the master, without a path.
    // SAFETY: the ioctl returns a new fd or -1.
    let s = unsafe {
        libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(std::io::Error::last_os_error()).context("opening the guest pty's slave");
    }
    // SAFETY: we own the new fd.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [m];
    let iov = [std::io::IoSlice::new(b"m")];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context("passing the guest's terminal to xroot")?;
    Ok(slave)
}

/// The command's process, before its exec: a new session, with the pty's
/// slave (if any) as its controlling terminal on the fds that were
/// terminals. Only system calls: it may share PID 1's memory.
pub fn attach(slave: Option<RawFd>, on_tty: [bool; 3]) -> std::io::Result<()> {
    // SAFETY: plain system calls on our own process and fds.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(s) = slave {
            if libc::ioctl(s, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 0..3 {
                if on_tty[fd as usize] && libc::dup2(s, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
    }
    Ok(())
}

/// The master's fd and the caller's terminal fd, for the SIGWINCH handler.
static MASTER: AtomicI32 = AtomicI32::new(-1);
static SOURCE: AtomicI32 = AtomicI32::new(-1);

/// From the signal handler: copies the caller's window size to the guest's
/// pty (the kernel then sends SIGWINCH to the pty's foreground group).
/// False when no relay runs. Async-signal-safe: two ioctls.
pub fn resize_on_winch() -> bool {
    let m = MASTER.load(Ordering::Relaxed);
    if m < 0 {
        return false;
    }
    if let Some(w) = winsize(SOURCE.load(Ordering::Relaxed)) {
        set_winsize(m, w);
    }
    true
}

/// Reads the 4-byte status PID 1 writes; None if it ended without one.
pub fn read_status(status: &mut File) -> Option<[u8; 4]> {
    let mut buf = [0u8; 4];
    status.read_exact(&mut buf).ok().map(|()| buf)
}

/// xroot outside: receives the guest's master, relays it to and from the
/// caller's terminal until PID 1 reports the command's status, and returns
/// that status (None if PID 1 ended without one).
pub fn relay(sock: OwnedFd, t: &Terminal, status: &mut File) -> Option<[u8; 4]> {
    let master = recv_master(&sock);
    drop(sock);
    let Some(master) = master else {
        // PID 1 failed before it made the pty; it reports through the pipe.
        return read_status(status);
    };
    let m = master.as_raw_fd();
    // SAFETY: fcntl on our fd.
    unsafe { libc::fcntl(m, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut raw = if t.raw { RawMode::enter(0) } else { None };
    SOURCE.store(t.src_fd(), Ordering::Relaxed);
    MASTER.store(m, Ordering::Relaxed);
    // The window may have changed since the sandbox started.
    resize_on_winch();
    let got = pump(master, t, status, &mut raw);
    drop(raw);
    got
}

fn recv_master(sock: &OwnedFd) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.ok()?,
        }
    };
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just gave us these fds.
            let mut it = fds
                .into_iter()
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
            return it.next();
        }
    }
    None
}

/// The relay loop: master → the caller's terminal, the caller's stdin
/// (when a terminal) → master, until the status pipe speaks.
/// `raw`: the caller's terminal in raw mode, entered here if xroot started
/// in the background and is brought to the foreground (`fg`) later.
///
/// When the caller's terminal goes away (hang-up: its window closed, the
/// ssh connection dropped) the master is closed, which hangs up the
/// guest's pty in turn: its shell gets SIGHUP and end-of-file, as it would
/// have on the caller's terminal, instead of waiting forever on a pty that
/// nobody types into.
fn pump(
    master: OwnedFd,
    t: &Terminal,
    status: &mut File,
    raw: &mut Option<RawMode>,
) -> Option<[u8; 4]> {
    let m = master.as_raw_fd();
    let mut master = Some(master);
    let out = t.out_fd();
    let src = t.src_fd();
    let mut input_open = t.on_tty[0];
    let mut caller_open = true;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let hang_up = |master: &mut Option<OwnedFd>| {
        MASTER.store(-1, Ordering::Relaxed);
        master.take();
    };
    loop {
        // Re-checked after every wake-up: `fg` sends SIGCONT, which
        // interrupts the poll.
        let fg = caller_open && in_foreground(0);
        if t.raw && raw.is_none() && fg {
            *raw = RawMode::enter(0);
        }
        let read_input = input_open && pending.is_empty() && fg;
        let master_open = master.is_some();
        let mut fds = [
            libc::pollfd {
                fd: status.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if master_open { m } else { -1 },
                events: libc::POLLIN | if pending.is_empty() { 0 } else { libc::POLLOUT },
                revents: 0,
            },
            // The caller's terminal: read when it is ours to read; watched
            // for a hang-up always (poll reports POLLHUP unasked).
            libc::pollfd {
                fd: if caller_open && master_open { src } else { -1 },
                events: if read_input { libc::POLLIN } else { 0 },
                revents: 0,
            },
        ];
        // SAFETY: poll over a local array.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) } < 0 {
            continue; // EINTR (SIGWINCH, SIGCONT, forwarded signals)
        }
        if fds[1].revents != 0 {
            if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match copy_out_once(m, out, &mut buf) {
                    Copy::Closed => {
                        MASTER.store(-1, Ordering::Relaxed);
                        master.take();
                    }
                    Copy::CallerGone => {
                        caller_open = false;
                        hang_up(&mut master);
                    }
                    Copy::More | Copy::Empty => {}
                }
            }
            if master.is_some() && fds[1].revents & libc::POLLOUT != 0 {
                // SAFETY: writing from our buffer to our nonblocking fd.
                let n = unsafe { libc::write(m, pending.as_ptr().cast(), pending.len()) };
                if n > 0 {
                    pending.drain(..n as usize);
                } else if n < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
                {
                    pending.clear();
                }
            }
        }
        if fds[2].revents & libc::POLLIN != 0 && read_input {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            let err = std::io::Error::last_os_error().kind();
            if n > 0 {
                pending.extend_from_slice(&buf[..n as usize]);
            } else if n == 0 && !t.raw {
                // Cooked: Ctrl-D was typed there; it becomes the guest
                // pty's end-of-file.
                let veof = termios::SpecialCharacterIndices::VEOF as usize;
                pending.push(t.termios.control_chars[veof]);
                input_open = false;
            } else if n == 0
                || !matches!(
                    err,
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                )
            {
                // Raw mode reads 0 only on a hang-up; EIO is one too.
                caller_open = false;
                hang_up(&mut master);
            }
        } else if fds[2].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            caller_open = false;
            hang_up(&mut master);
        }
        if fds[0].revents != 0 {
            let got = read_status(status);
            // Whatever the command wrote before it ended.
            while master.is_some() && copy_out_once(m, out, &mut buf) == Copy::More {}
            MASTER.store(-1, Ordering::Relaxed);
            return got;
        }
    }
}

#[derive(PartialEq)]
enum Copy {
    More,
    Empty,
    /// Every slave is closed: the guest is done with its terminal.
    Closed,
    /// Writing to the caller's terminal failed with EIO: it hung up.
    CallerGone,
}

/// One read from the master, written to `out`.
fn copy_out_once(m: RawFd, out: RawFd, buf: &mut [u8]) -> Copy {
    // SAFETY: reading into our buffer from our nonblocking fd.
    let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
    if n > 0 {
        // SAFETY: a borrowed fd of ours. Another failed write (the caller
        // closed a pipe) drops the output, the guest runs on.
        let mut f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(out) });
        return match f.write_all(&buf[..n as usize]) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Copy::CallerGone,
            _ => Copy::More,
        };
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted if n < 0 => Copy::Empty,
        // EIO: every slave is closed (the guest is done with its terminal).
        _ => Copy::Closed,
    }
}

/// The caller's terminal in raw mode, restored on drop, and by the watcher
/// if xroot dies first.
struct RawMode {
    fd: RawFd,
    saved: Termios,
    /// Our end of the watcher's pipe; a byte on it means "restored, stand down".
    watcher: Option<(File, nix::unistd::Pid)>,
}

impl RawMode {
    /// None when `fd` is not in the foreground (a background job would be
    /// stopped by SIGTTOU) or its settings cannot be read.
    fn enter(fd: RawFd) -> Option<RawMode> {
        if !in_foreground(fd) {
            return None;
        }
        // SAFETY: borrowed for the calls below.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let saved = termios::tcgetattr(b).ok()?;
        let watcher = spawn_watcher(fd, &saved);
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(b, SetArg::TCSADRAIN, &raw);
        Some(RawMode { fd, saved, watcher })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: borrowed for the call.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(b, SetArg::TCSADRAIN, &self.saved);
        if let Some((mut w, pid)) = self.watcher.take() {
            // The byte is there before the end-of-file, so the watcher
            // stands down whenever it runs; not waiting for it saves a
            // scheduling round trip (milliseconds on a busy machine). It is
            // reaped here if already gone, else by init after we exit.
            let _ = w.write_all(b"d");
            drop(w);
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }
}

/// Forks the watcher: it holds `saved` and restores it on `fd` when the
/// pipe's write end (only xroot holds it) closes without a byte.
fn spawn_watcher(fd: RawFd, saved: &Termios) -> Option<(File, nix::unistd::Pid)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    let saved: libc::termios = saved.clone().into();
    // SAFETY: xroot is single-threaded here; the child makes only system
    // calls and leaves with _exit.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => unsafe {
            for s in [
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
                libc::SIGPIPE,
                libc::SIGWINCH,
            ] {
                libc::signal(s, libc::SIG_IGN);
            }
            // Out of the job's process group: `kill -9 -PGID` of the job
            // does not reach us (and SIGTTOU is ignored for tcsetattr).
            libc::setpgid(0, 0);
            // Keep only the terminal (as 0) and the pipe (as 1).
            let r = r.as_raw_fd();
            if libc::dup2(fd, 0) < 0 || libc::dup2(r, 1) < 0 {
                libc::_exit(1);
            }
            libc::syscall(libc::SYS_close_range, 2u32, u32::MAX, 0u32);
            let mut b = 0u8;
            let n = loop {
                let n = libc::read(1, (&mut b as *mut u8).cast(), 1);
                if n >= 0 || *libc::__errno_location() != libc::EINTR {
                    break n;
                }
            };
            if n != 1 {
                libc::tcsetattr(0, libc::TCSADRAIN, &saved);
            }
            libc::_exit(0)
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(r);
            Some((File::from(w), child))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_goes_to_the_first_terminal_of_stdout_stderr_stdin() {
        assert_eq!(out_fd([true, true, true]), 1);
        assert_eq!(out_fd([true, false, true]), 2);
        assert_eq!(out_fd([true, false, false]), 0);
        assert_eq!(out_fd([false, true, false]), 1);
        assert_eq!(out_fd([false, false, true]), 2);
    }

    #[test]
    fn modes_come_from_the_first_terminal() {
        assert_eq!(src_fd([true, true, true]), 0);
        assert_eq!(src_fd([false, true, true]), 1);
        assert_eq!(src_fd([false, false, true]), 2);
    }
}
