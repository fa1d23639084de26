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
pub mod plan;
pub mod pty;
pub mod user;

use std::os::fd::{AsRawFd, RawFd};

use anyhow::Result;
use nix::sched::CloneFlags;

pub use plan::{Bind, Builder, Config, Plan};

use crate::rootfs::mountpoints::Journal;
use crate::userns;

/// Runs the guest and returns its exit status (128+N if killed by signal N).
pub fn run(plan: &Plan) -> Result<i32> {
    let cfg = &plan.config;
    // UTS and IPC namespaces are made once, for the command (`init::run`):
    // PID 1 needs neither, and each namespace costs launch time (an IPC
    // namespace mounts an internal mqueue filesystem and registers sysctls).
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID;
    // PID 1 writes the command's status here just before it exits.
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| anyhow::anyhow!("creating a pipe: {e}"))?;
    let w = status_w.as_raw_fd();
    // PID 1 appends to it each mount point it creates in the tree, before
    // creating it (see `rootfs::mountpoints`).
    let mut journal = plan.journal.as_deref().map(Journal::open).transpose()?;
    // With a terminal, PID 1 passes the guest pty's master out on this.
    let chan = cfg.terminal.as_ref().map(|_| pty::channel()).transpose()?;
    let socks = chan
        .as_ref()
        .map(|(ours, theirs)| (ours.as_raw_fd(), theirs.as_raw_fd()));
    let pid = userns::spawn(flags, &cfg.idmap, &mut || {
        child(plan, journal.as_mut(), w, socks)
    })?;
    drop(journal);
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
        // The command is done. PID 1 is reaped (blocking) before xroot
        // exits, although it may still be tearing down its namespaces:
        // only a reaped child's rusage (with that of every process *it*
        // reaped: the command and its descendants) is added to ours, so
        // without this `time xroot run ... gcc`, hyperfine and CI
        // accounting saw none of the guest's CPU time (issue #18). What
        // the wait costs at launch is in docs/performance.md.
        Some(buf) => {
            crate::ui::trace("command's status read");
            let _ = userns::wait(pid);
            crate::ui::trace("pid 1 reaped");
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
fn child(
    plan: &Plan,
    journal: Option<&mut Journal>,
    status_fd: RawFd,
    socks: Option<(RawFd, RawFd)>,
) -> i32 {
    let cfg = &plan.config;
    // Inherited fds the guest must not hold (the store lock: a run's lock
    // belongs to xroot outside, which releases it when the command ends).
    // (Everything else above 2 is closed at the command's exec.)
    for fd in cfg.close_fds.iter().chain(socks.as_ref().map(|s| &s.0)) {
        // SAFETY: closing our copies of the caller's fds.
        unsafe { libc::close(*fd) };
    }
    let applied = match mounts::apply(plan, journal) {
        Ok(a) => a,
        Err(e) => {
            let mut msg = format!("setting up the guest: {e}");
            for c in e.chain().skip(1) {
                msg.push_str(&format!(": {c}"));
            }
            let hint = crate::error::hint_of(&e)
                .map(|h| format!("\nhint: {h}"))
                .unwrap_or_default();
            init::die(125, &format!("{msg}{hint}"));
        }
    };
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
    init::run(cfg, &applied, status_fd, slave)
}
