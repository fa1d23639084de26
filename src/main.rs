//! xroot: step into a Linux system of another CPU architecture.
//!
//! Layers, each depending only on the ones below:
//! `cli` (parse) → `commands` (decide) → `specs`, `mirror`, `store`,
//! `fetch`, `extract`, `binfmt`, `qemu`, `sandbox` → the OS.

// On glibc, xroot has its own C `main` (below) instead of Rust's runtime
// entry. Only on glibc: std reads the arguments from glibc's start-up data
// (`.init_array` gets argc/argv there), which musl does not give, so a
// musl build with its own `main` saw no arguments at all.
#![cfg_attr(all(not(test), target_env = "gnu"), no_main)]

mod accel;
mod binfmt;
mod cli;
mod commands;
mod elf;
mod error;
mod extract;
mod fetch;
#[cfg(test)]
mod fuzz_tests;
mod host;
mod knobs;
mod mirror;
mod qemu;
mod rootfs;
mod sandbox;
mod source;
mod specs;
mod store;
#[cfg(test)]
mod test_support;
mod ui;
mod userns;
mod validate;

use clap::Parser;

/// The process entry, in place of Rust's runtime start-up.
///
/// Rust's start-up reads /proc/self/maps and sets up an alternate signal
/// stack to report main-thread stack overflows: ~0.1 ms of every launch on
/// a VM, for a message in place of a plain SIGSEGV. The two things it does
/// that matter are kept: standard fds that are closed become /dev/null (so
/// no file xroot opens can become "stdout"), and SIGPIPE is ignored (writes
/// to a closed pipe return EPIPE). Arguments and environment need nothing:
/// std reads them from glibc's startup data (hence glibc only; elsewhere
/// Rust's own entry, [`main`] below, runs).
#[cfg(all(not(test), target_env = "gnu"))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    sanitize_standard_fds();
    // Started in a guest in place of a program --accel replaces.
    if let Some(code) = accel::trampoline::dispatch() {
        return code;
    }
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    xroot_main()
}

/// Rust's runtime entry, where xroot has no C `main` of its own (musl).
#[cfg(all(not(test), not(target_env = "gnu")))]
fn main() {
    // Started in a guest in place of a program --accel replaces.
    if let Some(code) = accel::trampoline::dispatch() {
        std::process::exit(code);
    }
    xroot_main()
}

/// Opens /dev/null on each of fds 0, 1, 2 that is closed, as Rust's runtime does.
#[cfg(all(not(test), target_env = "gnu"))]
fn sanitize_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll on a local array of 3 pollfds, zero timeout.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for p in fds {
        if p.revents & libc::POLLNVAL != 0 {
            // open returns the lowest free fd: the closed one.
            // SAFETY: a constant NUL-terminated path.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if fd != p.fd {
                // Cannot even do that: exit as Rust's runtime would.
                // SAFETY: leaving at once.
                unsafe { libc::abort() };
            }
        }
    }
}

/// Prints clap's message and exits with its status. Help and version as
/// clap prints them; an error line by line through [`ui::escape`], since it
/// quotes the offending value, which may hold control characters.
#[cfg_attr(test, allow(dead_code))]
fn parse_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.render().to_string();
    for line in text.trim_end().split('\n') {
        eprintln!("{}", ui::escape(line));
    }
    std::process::exit(e.exit_code())
}

#[cfg_attr(test, allow(dead_code))]
fn xroot_main() -> ! {
    ui::trace("start");
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => parse_error(e),
    };
    knobs::set(knobs::Knobs {
        timeout: std::time::Duration::from_secs_f64(cli.timeout),
        attempts: cli.retries,
        max_unpacked: cli.max_size,
        qemu_prelink: cli.qemu_prelink,
    });
    let ui = ui::Ui::new(cli.quiet);
    match commands::dispatch(cli.command, ui) {
        Ok(code) => std::process::exit(code),
        // `xroot list | head -1`: the reader has all it wanted.
        Err(e) if e.is::<ui::StdoutClosed>() => std::process::exit(0),
        Err(e) => {
            // Causes carry names from archives, indexes and servers.
            eprintln!("xroot: error: {}", ui::escape(&format!("{e:#}")));
            if let Some(h) = error::hint_of(&e) {
                eprintln!("hint: {}", ui::escape(h));
            }
            std::process::exit(1);
        }
    }
}
