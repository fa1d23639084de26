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
//! so the caller's user namespace owns the mount, PID, UTS and IPC
//! namespaces and an unprivileged caller can do all of this. The child then
//! waits on a pipe while the parent writes its id maps (an unprivileged
//! process cannot map subordinate ids itself; `newuidmap` must do it from
//! outside).

mod init;
mod mounts;
pub mod user;

use std::ffi::CString;
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
}

/// Runs the guest and returns its exit status (128+N if killed by signal N).
pub fn run(cfg: &Config) -> Result<i32> {
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let pid = userns::spawn(flags, &cfg.idmap, &mut || child(cfg))?;
    init::install_forwarding(pid);
    let status = userns::wait(pid);
    // Signals are ours again (a fetch may go on after `apk add` ran).
    init::reset_signals();
    status
}

/// The child: PID 1 of the new namespaces, its ids already mapped.
fn child(cfg: &Config) -> i32 {
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
    init::run(cfg)
}
