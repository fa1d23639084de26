//! What the command's process does to itself between its namespaces and
//! its `execve`: the kernel objects it must not share with the caller
//! (issue #13, classes 3 and 6).
//!
//! - **File descriptors.** Every descriptor above 2 (above 2 + `--preserve-fds`)
//!   is marked close-on-exec with one `close_range` call, so nothing the
//!   caller had open (a file of `/etc`, a socket, a directory fd that
//!   `/proc/self/fd/N` would reopen) reaches the guest.
//! - **Keyrings.** The command joins a new anonymous session keyring, so
//!   `KEY_SPEC_SESSION_KEYRING` is not the caller's (its user keyring is
//!   already its user namespace's own).
//! - **Landlock scoping** (Linux 6.12+, ABI 6): the guest cannot connect to
//!   abstract unix sockets (X11, D-Bus, systemd's, ...) made outside its
//!   Landlock domain, nor signal processes outside it. Best effort: an older
//!   kernel just does not get it (`xroot doctor` says so).
//! - **Network.** With `--network none` the command's clone made a network
//!   namespace: [`loopback_up`] gives it a working `lo`.
//!
//! Every function here runs in the command's process, which may share its
//! memory with PID 1 until its exec (`userns::spawn_exec`): they only make
//! system calls and never print (the caller reports).

use std::os::fd::RawFd;

/// Which network the guest gets (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The caller's network namespace: the guest reaches what the host
    /// reaches, including services on the host's 127.0.0.1. Abstract unix
    /// sockets are still closed to it where Landlock scoping exists.
    #[default]
    Host,
    /// A network namespace of its own with only a loopback interface.
    None,
}

/// Marks every fd from `3 + preserve` on close-on-exec (Linux 5.11+), and
/// clears close-on-exec on the preserved ones (3 .. 3+preserve), as
/// systemd-nspawn does with `--preserve-fds`.
pub fn close_inherited_fds(preserve: u32) -> std::io::Result<()> {
    for fd in 3..3 + preserve as RawFd {
        // SAFETY: fcntl on an fd number; fails harmlessly if it is not open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    let first = 3 + preserve;
    // SAFETY: close_range only changes flags of our own fd table.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Linux < 5.11: set the flag on each open fd, found in /proc/self/fd
    // (the guest's own /proc, already mounted).
    let rd = std::fs::read_dir("/proc/self/fd")?;
    for e in rd.flatten() {
        if let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) {
            if fd >= first as RawFd {
                // SAFETY: as above.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
    Ok(())
}

/// Joins a new anonymous session keyring. A kernel without keys support
/// (ENOSYS) has nothing to share.
pub fn join_fresh_session_keyring() -> std::io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a NULL name asks for a new anonymous keyring.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if rc >= 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        return Ok(());
    }
    Err(e)
}

/// How much of Landlock's scoping the guest got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoping {
    /// Abstract unix sockets and signals are both scoped.
    Full,
    /// The kernel has Landlock but not scoping (ABI < 6), or no Landlock.
    Unavailable,
}

/// Restricts the calling process and its descendants to their own Landlock
/// domain for abstract unix sockets and signals. Needs `CAP_SYS_ADMIN` in
/// the current user namespace (which the command has until `--user` drops
/// root) instead of `no_new_privs`: setting that would stop the guest's
/// setuid programs (`su`) from working, so it is not set.
pub fn landlock_scope() -> Result<Scoping, landlock::RulesetError> {
    use landlock::{
        Access, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        Scope, ABI,
    };
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::from_all(ABI::V6))?
        .create()?
        .no_new_privs(false)
        .restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Scoping::Full,
        _ => Scoping::Unavailable,
    })
}

/// The running kernel's Landlock ABI version, or None without Landlock.
pub fn landlock_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no attribute struct.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as i32)
}

/// Landlock ABI from which abstract unix sockets and signals are scoped.
pub const SCOPING_ABI: i32 = 6;

/// Brings up `lo` in the command's own network namespace (`--network none`).
pub fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket, closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: an all-zero ifreq is valid; the name fits (3 of 16 bytes).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which we own.
    let rc = unsafe {
        if libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS as _, &req)
        } else {
            -1
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: our socket.
    unsafe { libc::close(s) };
    if rc == 0 {
        Ok(())
    } else {
        Err(err)
    }
}
