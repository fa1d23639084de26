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

pub mod idmap;
mod init;
mod mounts;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};

use crate::binfmt::Registration;
use idmap::IdMap;

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
}

/// Runs the guest and returns its exit status (128+N if killed by signal N).
pub fn run(cfg: &Config) -> Result<i32> {
    let (go_r, go_w) = nix::unistd::pipe().context("creating a pipe")?;
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    // The child runs on its own stack; pages are only touched as used.
    let mut stack = vec![0u8; 8 << 20];
    let go_w_raw = go_w.as_raw_fd();
    let go_r_raw = go_r.as_raw_fd();
    let child_main = Box::new(|| -> isize {
        // SAFETY: the child has its own copy of the fd table.
        unsafe { libc::close(go_w_raw) };
        child(cfg, go_r_raw)
    });
    // SAFETY: no CLONE_VM: the child gets a copy of our memory, like fork;
    // xroot is single-threaded here (downloads are done before).
    let pid = unsafe { nix::sched::clone(child_main, &mut stack, flags, Some(libc::SIGCHLD)) }.map_err(|e| {
        crate::error::hinted(
            format!("cannot create the guest's namespaces: {e}"),
            "user namespaces may be disabled: see `xroot doctor` (sysctl user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns)",
        )
    })?;
    drop(go_r);
    let mapped = cfg.idmap.apply(pid.as_raw());
    let mut go_w = std::fs::File::from(go_w);
    if let Err(e) = mapped {
        // Closing the pipe without a byte tells the child to give up.
        drop(go_w);
        let _ = waitpid(pid, None);
        return Err(e.context("setting up the guest's user and group ids"));
    }
    go_w.write_all(b"1").context("starting the guest")?;
    drop(go_w);
    init::install_forwarding(pid);
    let status = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("waiting for the guest: {e}"),
        }
    };
    Ok(status)
}

/// The child: PID 1 of the new namespaces.
fn child(cfg: &Config, go_r: i32) -> isize {
    // If xroot dies, so does the guest (and with PID 1, its whole namespace).
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: the fd is ours, inherited from the parent.
    let mut go = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(go_r) });
    let mut b = [0u8; 1];
    if go.read(&mut b).ok() != Some(1) {
        // Parent failed or died before mapping our ids.
        return 125;
    }
    drop(go);
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
