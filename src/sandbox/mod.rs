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
pub mod user;

use std::ffi::CString;
use std::io::Read;
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
    let pid = userns::spawn(flags, &cfg.idmap, &mut || child(cfg, w))?;
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
fn child(cfg: &Config, status_fd: RawFd) -> i32 {
    // Inherited fds the guest must not hold (the store lock: a run's lock
    // belongs to xroot outside, which releases it when the command ends).
    for fd in &cfg.close_fds {
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
    init::run(cfg, status_fd)
}
