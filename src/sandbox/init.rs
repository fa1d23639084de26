//! The guest's PID 1: it starts the command as PID 2, passes signals on,
//! reaps orphans, and exits with the command's status. When it exits the
//! kernel kills everything left in the PID namespace.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sched::CloneFlags;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use super::mounts::Applied;
use super::{user, Config};

static CHILD: AtomicI32 = AtomicI32::new(0);
/// Set in PID 1: the command leads a session and process group of its own
/// (`pty::attach`), so signals typed at a terminal go to that group.
static GROUP: AtomicBool = AtomicBool::new(false);

/// Signals passed on to the command. SIGINT/SIGQUIT typed at the caller's
/// terminal (si_code SI_KERNEL) reach xroot and PID 1 directly (same
/// process group): xroot leaves them to PID 1, which passes them to the
/// command's whole process group, as the terminal would have (the command
/// is in a session of its own). In PID 1 a typed SIGTSTP stops that group
/// too (SIGSTOP: the kernel discards SIGTSTP sent to an orphaned group),
/// and SIGCONT continues it.
const FORWARDED: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let pid = CHILD.load(Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    let typed =
        matches!(sig, libc::SIGINT | libc::SIGQUIT | libc::SIGTSTP) && code == libc::SI_KERNEL;
    // With a relay, a resize is copied to the guest's pty instead.
    if sig == libc::SIGWINCH && super::pty::resize_on_winch() {
        return;
    }
    if pid <= 0 {
        return;
    }
    let group = GROUP.load(Ordering::Relaxed);
    // SAFETY: kill is async-signal-safe.
    unsafe {
        match (group, typed || sig == libc::SIGCONT) {
            (true, true) if sig == libc::SIGTSTP => libc::kill(-pid, libc::SIGSTOP),
            (true, true) => libc::kill(-pid, sig),
            (false, true) if typed => 0, // PID 1 got it too
            _ => libc::kill(pid, sig),
        }
    };
}

/// Installs the forwarding handlers, for the guest's PID 1 (`group`: the
/// target leads its own process group; SIGTSTP is handled too) and for
/// xroot's outer process.
pub fn install_forwarding(target: Pid, group: bool) {
    CHILD.store(target.as_raw(), Ordering::Relaxed);
    GROUP.store(group, Ordering::Relaxed);
    let act = SigAction::new(
        SigHandler::SigAction(forward),
        SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    for s in FORWARDED {
        // SAFETY: the handler only calls async-signal-safe functions.
        let _ = unsafe { sigaction(s, &act) };
    }
    if group {
        // SAFETY: as above.
        let _ = unsafe { sigaction(Signal::SIGTSTP, &act) };
    }
}

/// Restores the default action of every forwarded signal.
pub fn reset_signals() {
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for s in FORWARDED {
        // SAFETY: restoring default dispositions.
        let _ = unsafe { sigaction(s, &dfl) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    );
}

/// Runs as PID 1 after the filesystem is set up. Never returns.
///
/// The command starts in a user and mount namespace nested in ours, with
/// the same ids. Mounts copied into a namespace owned by a less privileged
/// user namespace are locked by the kernel: the guest's root cannot
/// unmount or remount read-write what we mounted read-only (/proc/sys,
/// /sys, /etc/resolv.conf, --ro-bind), which for a root caller would give
/// host uid 0 write access to host kernel settings. bubblewrap does the same.
/// `slave`: the guest pty's slave (see `pty`), closed here once the command
/// has its copies.
pub fn run(
    cfg: &Config,
    applied: &Applied,
    status_fd: RawFd,
    slave: Option<std::os::fd::OwnedFd>,
) -> ! {
    let nested = cfg.idmap.nested();
    // The guest's UTS and IPC namespaces are made here, owned by the nested
    // user namespace, so the guest's root may set its hostname and manage
    // SysV IPC (and nothing of the host's is shared).
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    // --network none: a network namespace owned by the guest's user
    // namespace, so guest root may configure it (and bind low ports).
    if cfg.network == super::confine::Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let slave_fd = slave.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // The command shares our memory until its exec (no copy: faster). With
    // --user it reads the guest's user database and may run `adduser`
    // first, in a copy of our memory as usual.
    let spawned = if cfg.user.is_none() {
        crate::userns::spawn_exec(flags, &nested, &mut || exec_command(cfg, applied, slave_fd))
    } else {
        crate::userns::spawn(flags, &nested, &mut || exec_command(cfg, applied, slave_fd))
    };
    drop(slave);
    match spawned {
        Err(e) => die(125, &format!("cannot start the command: {e:#}")),
        Ok(child) => {
            install_forwarding(child, true);
            loop {
                match waitpid(None, Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => report(status_fd, code),
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                        report(status_fd, 128 + sig as i32)
                    }
                    Ok(_) => continue, // an orphan reaped
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => die(125, &format!("waiting for the command: {e}")),
                }
            }
        }
    }
}

/// The command's side: never returns; failures leave through [`die_child`].
fn exec_command(cfg: &Config, applied: &Applied, slave: Option<RawFd>) -> ! {
    // Signals: execve resets caught ones to their defaults, and nothing is
    // blocked; only SIGPIPE, which xroot ignores (as Rust programs do), must
    // be given back to the guest. (The parent-death signal is already set
    // by `userns::spawn*`.)
    // SAFETY: restoring a default disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // A session of its own, on the guest's pty when there is one: the
    // caller's terminal is nobody's controlling terminal in here.
    let on_tty = cfg.terminal.as_ref().map_or([false; 3], |t| t.on_tty);
    if let Err(e) = super::pty::attach(slave, on_tty) {
        die_child(
            125,
            &format!("giving the command its own session and terminal: {e}"),
        );
    }
    if cfg.network == super::confine::Network::None {
        if let Err(e) = super::confine::loopback_up() {
            die_child(
                125,
                &format!("bringing up lo in the guest's network namespace: {e}"),
            );
        }
    }
    // In our own UTS namespace, before any --user drops root.
    if let Err(e) = nix::unistd::sethostname(&cfg.hostname) {
        die_child(125, &format!("setting hostname {}: {e}", cfg.hostname));
    }
    if cfg.personality32 {
        // PER_LINUX32: `uname -m` says i686/armv7l, as on real 32-bit hardware.
        // SAFETY: personality(2) has no memory effects.
        unsafe { libc::personality(0x0008) };
    }
    // Kernel objects shared with the caller, before --user drops root
    // (Landlock needs CAP_SYS_ADMIN here, as it does not set no_new_privs).
    if let Err(e) = super::confine::join_fresh_session_keyring() {
        die_child(125, &format!("joining a new session keyring: {e}"));
    }
    if let Err(e) = super::confine::landlock_scope() {
        die_child(
            125,
            &format!("Landlock scoping of abstract unix sockets and signals: {e}"),
        );
    }
    let mut env = cfg.env.clone();
    let mut workdir = cfg.workdir.clone();
    if let Some(wanted) = &cfg.user {
        let u = switch_user(wanted, cfg.create_user, slave);
        env.retain(|e| {
            !["HOME=", "USER=", "LOGNAME="]
                .iter()
                .any(|k| e.as_bytes().starts_with(k.as_bytes()))
        });
        for (k, v) in [("HOME", &u.home), ("USER", &u.name), ("LOGNAME", &u.name)] {
            if let Ok(c) = CString::new(format!("{k}={v}")) {
                env.push(c);
            }
        }
        if cfg.workdir_is_default {
            workdir = PathBuf::from(&u.home);
        }
    }
    // The working directory's bind was skipped (warned about by PID 1).
    if applied.skipped_optional {
        if let Some(f) = &cfg.workdir_fallback {
            workdir = f.clone();
        }
    }
    if let Err(e) = nix::unistd::chdir(&workdir) {
        die_child(
            125,
            &format!(
                "cannot enter working directory {} in the guest: {e}",
                workdir.display()
            ),
        );
    }
    let prog = match resolve(&cfg.argv[0], &env) {
        Some(p) => p,
        None => die_child(
            127,
            &format!(
                "{}: command not found in the guest's PATH",
                cfg.argv[0].to_string_lossy()
            ),
        ),
    };
    let Ok(cprog) = CString::new(prog.as_os_str().as_bytes()) else {
        die_child(127, "command path contains NUL")
    };
    // Nothing the caller had open reaches the guest (but --preserve-fds).
    if let Err(e) = super::confine::close_inherited_fds(cfg.preserve_fds) {
        die_child(125, &format!("closing inherited file descriptors: {e}"));
    }
    crate::ui::trace("exec");
    let e = nix::unistd::execve(&cprog, &cfg.argv, &env).unwrap_err();
    let code = if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    let extra = if e == nix::errno::Errno::ENOEXEC {
        " (no binfmt handler for this binary's architecture?)"
    } else {
        ""
    };
    die_child(code, &format!("cannot run {}: {e}{extra}", prog.display()))
}

/// Becomes the `--user` (creating it first with `--create-user`), or exits.
/// `slave`: the guest's pty, given to the user as login(1) gives a tty, so
/// that reopening it (`ttyname`, `script`) works for them too.
fn switch_user(wanted: &user::Wanted, create: bool, slave: Option<RawFd>) -> user::Resolved {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut found = user::resolve(wanted, &read("/etc/passwd"), &read("/etc/group"));
    if found.is_none() && create {
        if let user::Wanted::Name(name) = wanted {
            add_user(name);
            found = user::resolve(wanted, &read("/etc/passwd"), &read("/etc/group"));
        }
    }
    let Some(u) = found else {
        die_child(
            125,
            &format!(
                "no user '{wanted}' in the guest's /etc/passwd (add --create-user to create it)"
            ),
        );
    };
    if let Some(s) = slave {
        // SAFETY: fchown of our own fd; a failure leaves it root's.
        unsafe { libc::fchown(s, u.uid, u32::MAX) };
    }
    let gids: Vec<Gid> = u.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    // setgroups is denied in a user namespace that maps only root; then
    // the command keeps no supplementary groups, which is all it could have.
    let _ = nix::unistd::setgroups(&gids);
    let unmapped = |e| {
        die_child(
            125,
            &format!("cannot become uid {} gid {} in the guest: {e}; only ids in the user namespace's map exist (see `xroot doctor`: subordinate ids)", u.uid, u.gid),
        )
    };
    let (g, uu) = (Gid::from_raw(u.gid), Uid::from_raw(u.uid));
    nix::unistd::setresgid(g, g, g).unwrap_or_else(unmapped);
    nix::unistd::setresuid(uu, uu, uu).unwrap_or_else(unmapped);
    // Changing credentials clears the parent-death signal: set it again.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    u
}

/// Creates user `name` with the guest's own tool, chosen by what the guest
/// has (see [`user::add_user_command`]) rather than by trying one and
/// falling back: Debian's `adduser` answers busybox's `-D` with 35 lines of
/// usage. The tool's output is shown only if it fails.
fn add_user(name: &str) {
    const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let find = |tool: &str| {
        PATH.split(':').map(|d| Path::new(d).join(tool)).find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    };
    let adduser = find("adduser").map(|p| {
        let mut head = [0u8; 128];
        let n = std::fs::File::open(&p)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .unwrap_or(0);
        user::adduser_kind(&head[..n])
    });
    let Some(argv) = user::add_user_command(find("useradd").is_some(), adduser, name) else {
        die_child(
            125,
            &format!("cannot create user {name}: the guest has neither useradd nor adduser"),
        );
    };
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let text = String::from_utf8_lossy(if o.stderr.is_empty() {
                &o.stdout
            } else {
                &o.stderr
            });
            let last: Vec<&str> = text.lines().rev().take(3).collect();
            die_child(
                125,
                &format!(
                    "creating user {name} in the guest failed ({}, {}): {}",
                    argv.join(" "),
                    o.status,
                    last.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
            );
        }
        Err(e) => die_child(125, &format!("cannot run {} in the guest: {e}", argv[0])),
    }
}

/// execvp's search, but over the guest's PATH from `env`, not ours.
fn resolve(arg0: &CString, env: &[CString]) -> Option<PathBuf> {
    let a = Path::new(std::ffi::OsStr::from_bytes(arg0.as_bytes()));
    if arg0.as_bytes().contains(&b'/') {
        return Some(a.to_path_buf());
    }
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(a))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Hands the command's status to xroot outside, then exits with it. xroot
/// then waits until the kernel has dismantled our namespaces (killing
/// leftover guest processes, unmounting two mount trees) and reaps us, so
/// that our CPU time and the guest's reach xroot's caller (`sandbox::run`).
fn report(status_fd: RawFd, code: i32) -> ! {
    // SAFETY: writing 4 bytes from a local to a pipe fd we own.
    unsafe { libc::write(status_fd, code.to_le_bytes().as_ptr().cast(), 4) };
    std::process::exit(code)
}

/// [`die`] for the command's process before its exec: `_exit`, because it
/// may share PID 1's memory (see `userns::spawn_exec`), where `exit` would
/// run PID 1's exit handlers and thread-local destructors.
fn die_child(code: i32, msg: &str) -> ! {
    eprintln!("xroot: error: {}", crate::ui::escape(msg));
    // SAFETY: leaving at once, without exit handlers.
    unsafe { libc::_exit(code) }
}

/// Reports a failure inside the sandbox and exits. 125: xroot's own setup
/// failed; 126/127: the command could not be run (as in a shell).
pub fn die(code: i32, msg: &str) -> ! {
    eprintln!("xroot: error: {}", crate::ui::escape(msg));
    std::process::exit(code)
}
