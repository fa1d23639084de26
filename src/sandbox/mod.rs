//! Running a command inside a rootfs: namespaces, id maps, mounts, PID 1.
//!
//! Process layout:
//!
//! ```text
//! xroot (host)              waits, forwards signals, cleans up mount points
//!  └─ xroot init (PID 1)    new user+mount+PID+UTS+IPC namespaces; builds the
//!      │                    filesystem view, pivots into it, reaps orphans
//!      └─ COMMAND (PID 2)   the guest program, via binfmt_misc → qemu
//! ```
//!
//! The user namespace is created first, in the same `clone` as the others,
//! so the caller's user namespace owns the mount and PID namespaces and an
//! unprivileged caller can do all of this. The child then
//! waits on a pipe while the parent writes its id maps (an unprivileged
//! process cannot map subordinate ids itself; `newuidmap` must do it from
//! outside).

mod init;
mod mounts;
pub mod plan;
pub mod user;

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};

use anyhow::Result;
use nix::sched::CloneFlags;

pub use plan::{Bind, Builder, Config, Plan};

use crate::rootfs::mountpoints::Journal;
use crate::userns;

/// Runs the guest and returns its exit status (128+N if killed by signal N).
pub fn run(plan: &Plan) -> Result<i32> {
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
    let pid = userns::spawn(flags, &plan.config.idmap, &mut || {
        child(plan, journal.as_mut(), w)
    })?;
    drop(journal);
    drop(status_w);
    init::install_forwarding(pid);
    let mut buf = [0u8; 4];
    let status = match std::fs::File::from(status_r).read_exact(&mut buf) {
        // The command is done. PID 1 is reaped (blocking) before xroot
        // exits, although it may still be tearing down its namespaces:
        // only a reaped child's rusage (with that of every process *it*
        // reaped: the command and its descendants) is added to ours, so
        // without this `time xroot run ... gcc`, hyperfine and CI
        // accounting saw none of the guest's CPU time (issue #18). What
        // the wait costs at launch is in docs/performance.md.
        Ok(()) => {
            crate::ui::trace("command's status read");
            let _ = userns::wait(pid);
            crate::ui::trace("pid 1 reaped");
            Ok(i32::from_le_bytes(buf))
        }
        // PID 1 ended without a status: setup failed (125) or it was killed.
        Err(_) => userns::wait(pid),
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
fn child(plan: &Plan, journal: Option<&mut Journal>, status_fd: RawFd) -> i32 {
    let cfg = &plan.config;
    // Inherited fds the guest must not hold (the store lock: a run's lock
    // belongs to xroot outside, which releases it when the command ends).
    for fd in &cfg.close_fds {
        // SAFETY: closing our copies of the caller's fds.
        unsafe { libc::close(*fd) };
    }
    let applied = mounts::apply(plan, journal);
    let applied = match applied {
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
    init::run(cfg, &applied, status_fd)
}
