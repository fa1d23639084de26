//! The guest's PID 1: it starts the command as PID 2, passes signals on,
//! reaps orphans, and exits with the command's status. When it exits the
//! kernel kills everything left in the PID namespace.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::Config;

static CHILD: AtomicI32 = AtomicI32::new(0);

/// Signals passed on to the command. SIGINT/SIGQUIT/SIGTSTP typed at the
/// terminal reach the command directly (same process group), so they are
/// passed on only when another process sent them (si_code SI_USER).
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
    let from_tty = (sig == libc::SIGINT || sig == libc::SIGQUIT) && code == libc::SI_KERNEL;
    if pid > 0 && !from_tty {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Installs the forwarding handlers, for the guest's PID 1 and for xroot's
/// outer process alike, and returns the previous actions.
pub fn install_forwarding(target: Pid) {
    CHILD.store(target.as_raw(), Ordering::Relaxed);
    let act = SigAction::new(
        SigHandler::SigAction(forward),
        SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    for s in FORWARDED {
        // SAFETY: the handler only calls async-signal-safe functions.
        let _ = unsafe { sigaction(s, &act) };
    }
}

fn reset_signals() {
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
pub fn run(cfg: &Config) -> ! {
    // SAFETY: this process is single-threaded (a fresh clone of xroot).
    match unsafe { fork() } {
        Err(e) => die(125, &format!("cannot start the command: fork: {e}")),
        Ok(ForkResult::Child) => exec_command(cfg),
        Ok(ForkResult::Parent { child }) => {
            install_forwarding(child);
            loop {
                match waitpid(None, Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                        std::process::exit(128 + sig as i32)
                    }
                    Ok(_) => continue, // an orphan reaped
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => die(125, &format!("waiting for the command: {e}")),
                }
            }
        }
    }
}

fn exec_command(cfg: &Config) -> ! {
    reset_signals();
    // SAFETY: plain prctl; the command dies with its PID 1.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if cfg.personality32 {
        // PER_LINUX32: `uname -m` says i686/armv7l, as on real 32-bit hardware.
        // SAFETY: personality(2) has no memory effects.
        unsafe { libc::personality(0x0008) };
    }
    if let Err(e) = nix::unistd::chdir(&cfg.workdir) {
        die(
            125,
            &format!(
                "cannot enter working directory {} in the guest: {e}",
                cfg.workdir.display()
            ),
        );
    }
    let prog = match resolve(&cfg.argv[0], &cfg.env) {
        Some(p) => p,
        None => die(
            127,
            &format!(
                "{}: command not found in the guest's PATH",
                cfg.argv[0].to_string_lossy()
            ),
        ),
    };
    let Ok(cprog) = CString::new(prog.as_os_str().as_bytes()) else {
        die(127, "command path contains NUL")
    };
    let e = nix::unistd::execve(&cprog, &cfg.argv, &cfg.env).unwrap_err();
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
    die(code, &format!("cannot run {}: {e}{extra}", prog.display()))
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

/// Reports a failure inside the sandbox and exits. 125: xroot's own setup
/// failed; 126/127: the command could not be run (as in a shell).
pub fn die(code: i32, msg: &str) -> ! {
    eprintln!("xroot: error: {msg}");
    std::process::exit(code)
}
