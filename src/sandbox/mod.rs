//! Running a command inside a rootfs: namespaces, id maps, mounts, PID 1.
//!
//! Process layout:
//!
//! ```text
//! xroot (host)              waits, forwards signals, cleans up mount points;
//!  │                        relays the guest's pty to the caller's terminal
//!  └─ xroot init (PID 1)    new user+mount+PID+UTS+IPC namespaces; builds the
//!      │                    filesystem view, pivots into it, reaps orphans;
//!      │                    opens the guest's pty and passes its master out
//!      └─ COMMAND (PID 2)   its own session; no fd above 2, a new keyring,
//!                           Landlock scoping (`confine`); the guest program,
//!                           via binfmt_misc → qemu
//! ```
//!
//! The user namespace is created first, in the same `clone` as the others,
//! so the caller's user namespace owns the mount and PID namespaces and an
//! unprivileged caller can do all of this. The child then
//! waits on a pipe while the parent writes its id maps (an unprivileged
//! process cannot map subordinate ids itself; `newuidmap` must do it from
//! outside).

pub mod confine;
mod init;
mod mounts;
pub mod pty;
pub mod user;

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use anyhow::Result;
use nix::sched::CloneFlags;

use crate::binfmt::Registration;
use crate::userns::{self, IdMap};

/// A bind mount from the host into the guest.
#[derive(Debug, Clone)]
pub struct Bind {
    pub src: PathBuf,
    /// Absolute path inside the guest.
    pub dst: PathBuf,
    pub readonly: bool,
}

/// Everything the sandbox needs, decided before any namespace exists.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host directory that becomes the guest's `/`.
    pub rootfs: PathBuf,
    pub hostname: String,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Working directory inside the guest.
    pub workdir: PathBuf,
    pub binds: Vec<Bind>,
    /// Host file bound read-only onto the guest's /etc/resolv.conf.
    pub resolv_conf: Option<PathBuf>,
    /// Handlers for a private binfmt_misc instance; empty to use the host's.
    pub binfmt: Vec<Registration>,
    /// Run with a 32-bit personality (x86 on x86_64, ARM on arm64).
    pub personality32: bool,
    pub idmap: IdMap,
    /// Whether gid 5 (tty) exists inside, for devpts's gid= option.
    pub map_tty_gid: bool,
    /// --ephemeral: an empty host directory to mount the throwaway layer on.
    pub ephemeral: Option<PathBuf>,
    /// --user: run the command as this guest user.
    pub user: Option<user::Wanted>,
    /// --create-user: add the --user NAME to the guest first if missing.
    pub create_user: bool,
    /// The working directory was not asked for: use the --user's home.
    pub workdir_is_default: bool,
    /// Caller fds to close in the guest's PID 1.
    pub close_fds: Vec<RawFd>,
    /// The caller's terminal, when any of fds 0-2 is one: the guest then
    /// gets a pty of its own, relayed (see `pty`).
    pub terminal: Option<pty::Terminal>,
    /// --preserve-fds N: fds 3..3+N reach the command; every other fd
    /// above 2 is closed at its exec.
    pub preserve_fds: u32,
    /// --network.
    pub network: confine::Network,
}

/// Runs the guest and returns its exit status (128+N if killed by signal N).
pub fn run(cfg: &Config) -> Result<i32> {
    // UTS and IPC namespaces are made once, for the command (`init::run`):
    // PID 1 needs neither, and each namespace costs launch time (an IPC
    // namespace mounts an internal mqueue filesystem and registers sysctls).
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID;
    // PID 1 writes the command's status here just before it exits.
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| anyhow::anyhow!("creating a pipe: {e}"))?;
    let w = status_w.as_raw_fd();
    // With a terminal, PID 1 passes the guest pty's master out on this.
    let chan = cfg.terminal.as_ref().map(|_| pty::channel()).transpose()?;
    let socks = chan
        .as_ref()
        .map(|(ours, theirs)| (ours.as_raw_fd(), theirs.as_raw_fd()));
    let pid = userns::spawn(flags, &cfg.idmap, &mut || child(cfg, w, socks))?;
    drop(status_w);
    init::install_forwarding(pid, false);
    let mut status_r = std::fs::File::from(status_r);
    let got = match (chan, &cfg.terminal) {
        (Some((ours, theirs)), Some(t)) => {
            drop(theirs);
            pty::relay(ours, t, &mut status_r)
        }
        _ => pty::read_status(&mut status_r),
    };
    let status = match got {
        // The command is done; PID 1 may still be tearing down its
        // namespaces: reap it if it is already gone, else leave that to
        // the kernel (and to init, should we exit first).
        Some(buf) => {
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            Ok(i32::from_le_bytes(buf))
        }
        // PID 1 ended without a status: setup failed (125) or it was killed.
        None => userns::wait(pid),
    };
    // Signals stay forwarded: `xroot run` exits next. A caller that goes on
    // calls [`restore_signals`].
    status
}

/// Takes back the signals [`run`] forwarded to the guest (for a caller that
/// goes on working after the guest, as `fetch --packages` does).
pub fn restore_signals() {
    init::reset_signals();
}

/// The child: PID 1 of the new namespaces, its ids already mapped.
/// `socks`: xroot's and PID 1's ends of the terminal channel.
fn child(cfg: &Config, status_fd: RawFd, socks: Option<(RawFd, RawFd)>) -> i32 {
    // Inherited fds the guest must not hold (the store lock: a run's lock
    // belongs to xroot outside, which releases it when the command ends).
    // (Everything else above 2 is closed at the command's exec.)
    for fd in cfg.close_fds.iter().chain(socks.as_ref().map(|s| &s.0)) {
        // SAFETY: closing our copies of the caller's fds.
        unsafe { libc::close(*fd) };
    }
    if let Err(e) = mounts::setup(cfg) {
        let mut msg = format!("setting up the guest: {e}");
        for c in e.chain().skip(1) {
            msg.push_str(&format!(": {c}"));
        }
        let hint = crate::error::hint_of(&e)
            .map(|h| format!("\nhint: {h}"))
            .unwrap_or_default();
        init::die(125, &format!("{msg}{hint}"));
    }
    let slave = match (&cfg.terminal, socks) {
        (Some(t), Some((_, sock))) => {
            let s = pty::open_in_guest(t, sock)
                .unwrap_or_else(|e| init::die(125, &format!("giving the guest a terminal: {e:#}")));
            // SAFETY: our end of the channel; the master has been sent.
            unsafe { libc::close(sock) };
            Some(s)
        }
        _ => None,
    };
    init::run(cfg, status_fd, slave)
}
