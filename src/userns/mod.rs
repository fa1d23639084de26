//! User namespaces: the caller's id map, and starting a child in new
//! namespaces with that map applied.
//!
//! Used by the sandbox (the guest's namespaces) and by the store, which for
//! a rootless caller with subordinate ids applies and removes guest file
//! ownership from inside a user namespace (outside, the caller cannot chown
//! to, or delete files of, its subordinate ids).

pub mod idmap;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

pub use idmap::IdMap;

/// Starts `child` in a new user namespace (plus `extra` namespaces), after
/// the parent has written its id maps. The user namespace is created in
/// the same clone as the others, so it owns them and an unprivileged
/// caller may create them. `child`'s return value is its exit status.
///
/// The child waits on a pipe until the maps are written: it cannot map
/// subordinate ids itself; `newuidmap` must, from outside.
pub fn spawn(
    extra: CloneFlags,
    map: &dyn idmap::ApplyMap,
    child: &mut dyn FnMut() -> i32,
) -> Result<Pid> {
    let (go_r, go_w) = nix::unistd::pipe().context("creating a pipe")?;
    // The child runs on its own stack; pages are only touched as used.
    let mut stack = vec![0u8; 8 << 20];
    let go_w_raw = go_w.as_raw_fd();
    let go_r_raw = go_r.as_raw_fd();
    let child_main = Box::new(|| -> isize {
        // SAFETY: the child has its own copy of the fd table.
        unsafe { libc::close(go_w_raw) };
        // If the parent dies, so does the child.
        // SAFETY: plain prctl.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        // SAFETY: the fd is ours, inherited from the parent.
        let mut go = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(go_r_raw) });
        let mut b = [0u8; 1];
        if go.read(&mut b).ok() != Some(1) {
            // Parent failed or died before mapping our ids.
            return 125;
        }
        drop(go);
        crate::ui::trace("ids mapped");
        child() as isize
    });
    // SAFETY: no CLONE_VM: the child gets a copy of our memory, like fork.
    // Callers are single-threaded here (downloads are joined before).
    let pid = unsafe {
        nix::sched::clone(
            child_main,
            &mut stack,
            CloneFlags::CLONE_NEWUSER | extra,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(clone_failed)?;
    drop(go_r);
    let mut go_w = std::fs::File::from(go_w);
    if let Err(e) = map.apply(pid.as_raw()) {
        // Closing the pipe without a byte tells the child to give up.
        drop(go_w);
        let _ = waitpid(pid, None);
        return Err(e.context("setting up user and group ids"));
    }
    go_w.write_all(b"1").context("starting the child")?;
    Ok(pid)
}

/// Like [`spawn`], for a child whose last act is `execve`: it shares our
/// memory (`CLONE_VM`, as `vfork` does) instead of getting a copy, and this
/// returns only once it has exec'd or died. No page tables are copied and
/// neither process takes copy-on-write faults afterwards: ~0.1 ms of a
/// launch. `child` must not return; on failure it must leave with
/// `libc::_exit` (never `exit`: that would run our atexit handlers and
/// thread-local destructors in the memory we share).
///
/// Sharing memory is safe because the two never run Rust code at the same
/// time: while we write the id maps the child is blocked on the go pipe,
/// and from the go byte until its exec we are blocked on a pipe that its
/// exec closes (close-on-exec). The stack it runs on lives until then.
pub fn spawn_exec(
    extra: CloneFlags,
    map: &dyn idmap::ApplyMap,
    child: &mut dyn FnMut() -> i32,
) -> Result<Pid> {
    /// What the child needs; lives on our stack until the child has exec'd.
    struct Start<'a> {
        go_r: RawFd,
        go_w: RawFd,
        done_r: RawFd,
        child: &'a mut dyn FnMut() -> i32,
    }
    extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Start` below, alive until we exec (see above).
        let st = unsafe { &mut *arg.cast::<Start>() };
        // SAFETY: closing fds of our own fd table (not shared: no CLONE_FILES).
        unsafe {
            libc::close(st.go_w);
            libc::close(st.done_r);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        let mut b = 0u8;
        // SAFETY: reading one byte into a local.
        if unsafe { libc::read(st.go_r, (&mut b as *mut u8).cast(), 1) } != 1 {
            // SAFETY: the parent gave up before mapping our ids; leave at once.
            unsafe { libc::_exit(125) };
        }
        // SAFETY: our copy of the fd.
        unsafe { libc::close(st.go_r) };
        crate::ui::trace("ids mapped");
        let code = (st.child)();
        // SAFETY: see above: never run exit handlers in shared memory.
        unsafe { libc::_exit(code) }
    }

    let (go_r, go_w) = nix::unistd::pipe().context("creating a pipe")?;
    // Closed by the child's exec (O_CLOEXEC), or at its death.
    let (done_r, done_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
    let mut stack = vec![0u8; 8 << 20];
    let mut st = Start {
        go_r: go_r.as_raw_fd(),
        go_w: go_w.as_raw_fd(),
        done_r: done_r.as_raw_fd(),
        child,
    };
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_VM | extra;
    // SAFETY: CLONE_VM without CLONE_VFORK: the child runs on `stack` and
    // reads `st`, both of which outlive it until its exec (we wait for that
    // below); see the doc comment for why the two never touch the shared
    // heap at once. The stack pointer is the 16-byte aligned top.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            start,
            top.cast(),
            flags.bits() | libc::SIGCHLD,
            (&mut st as *mut Start).cast(),
        )
    };
    if pid < 0 {
        return Err(clone_failed(std::io::Error::last_os_error()));
    }
    let pid = Pid::from_raw(pid);
    drop(go_r);
    drop(done_w);
    if let Err(e) = map.apply(pid.as_raw()) {
        // Closing the go pipe without a byte tells the child to give up.
        drop(go_w);
        let _ = waitpid(pid, None);
        return Err(e.context("setting up user and group ids"));
    }
    // From the go byte until the child's exec, run nothing but these two
    // syscalls (no allocation, no errno reads: errno is shared too).
    // SAFETY: writing one byte from a constant; reading into a local.
    unsafe {
        if libc::write(go_w.as_raw_fd(), b"1".as_ptr().cast(), 1) == 1 {
            let mut b = 0u8;
            // Returns 0 at the child's exec or death; -1 only on a signal.
            while libc::read(done_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) < 0 {}
        }
    }
    // The child is past its exec (or dead): `st` and `stack` may go now.
    std::hint::black_box(&st);
    drop(stack);
    Ok(pid)
}

/// The error for a clone into a new user namespace that failed.
fn clone_failed(e: impl std::fmt::Display) -> anyhow::Error {
    crate::error::hinted(
        format!("cannot create a user namespace: {e}"),
        "user namespaces may be disabled: see `xroot doctor` (sysctl user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns)",
    )
}

/// Waits for a child; its exit status, or 128+N if killed by signal N.
pub fn wait(pid: Pid) -> Result<i32> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("waiting for process {pid}: {e}"),
        }
    }
}

/// Runs `f` as root of a user namespace with the caller's id map, for
/// file work on subordinate-owned trees.
///
/// Unlike [`spawn`] this uses fork(2) then unshare(2) in the child: fork
/// runs libc's atfork handlers, so the child may allocate even when the
/// caller has other threads (parallel fetches).
pub fn run_as_root(
    map: &IdMap,
    what: &str,
    f: &mut dyn FnMut() -> std::io::Result<()>,
) -> Result<()> {
    let (ready_r, ready_w) = nix::unistd::pipe().context("creating a pipe")?;
    let (go_r, go_w) = nix::unistd::pipe().context("creating a pipe")?;
    // SAFETY: the child only runs `f` and exits; see the doc comment.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            let code = (|| {
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER).ok()?;
                std::fs::File::from(ready_w).write_all(b"1").ok()?;
                let mut b = [0u8; 1];
                (std::fs::File::from(go_r).read(&mut b).ok()? == 1).then_some(())?;
                Some(match f() {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!(
                            "xroot: error: {}",
                            crate::ui::escape(&format!("{what}: {e}"))
                        );
                        1
                    }
                })
            })()
            .unwrap_or(125);
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut b = [0u8; 1];
            let ready = std::fs::File::from(ready_r).read(&mut b).ok() == Some(1);
            let mapped = if ready {
                map.apply(child.as_raw())
            } else {
                Err(anyhow::anyhow!(
                    "the child could not create a user namespace"
                ))
            };
            let mut go = std::fs::File::from(go_w);
            if mapped.is_ok() {
                let _ = go.write_all(b"1");
            }
            drop(go);
            let code = wait(child)?;
            mapped.with_context(|| format!("{what}: setting up a user namespace"))?;
            if code != 0 {
                bail!("{what} failed in a user namespace (status {code})");
            }
            Ok(())
        }
    }
}

/// Whether this caller's files may be owned by subordinate ids (rootless
/// with a subordinate range).
pub fn subordinate_map() -> Option<IdMap> {
    match IdMap::for_caller() {
        m @ IdMap::Subordinate { .. } => Some(m),
        _ => None,
    }
}
