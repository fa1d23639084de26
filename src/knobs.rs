//! Settings that apply to every command, from a global option or its
//! environment variable (clap's `env`: so each is in `--help` and the man
//! pages, and a bad value is an error naming it, never silently ignored).
//! Parsed and validated once in `cli`; `main` stores them here for the
//! modules that use them deep below `commands` (the HTTP transport, the
//! qemu copies, the extraction limit).

use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Knobs {
    /// `--timeout` / `XROOT_TIMEOUT`: per connect and per read.
    pub timeout: Duration,
    /// `--retries` / `XROOT_RETRIES`: requests per download, at least 1.
    pub attempts: u32,
    /// `--max-size` / `XROOT_MAX_UNPACKED`: bytes an archive may unpack to.
    pub max_unpacked: u64,
    /// `--qemu-prelink` / `XROOT_QEMU_PRELINK`: guests run prelinked qemu copies.
    pub qemu_prelink: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            timeout: Duration::from_secs(30),
            attempts: 3,
            max_unpacked: crate::extract::Limits::default().max_bytes,
            qemu_prelink: true,
        }
    }
}

static KNOBS: OnceLock<Knobs> = OnceLock::new();

/// Called once, by `main`, with the parsed command line.
pub fn set(k: Knobs) {
    let _ = KNOBS.set(k);
}

/// The settings (the defaults when `set` was not called: unit tests).
pub fn get() -> &'static Knobs {
    KNOBS.get_or_init(Knobs::default)
}
