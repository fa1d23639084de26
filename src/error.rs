//! User-facing errors: a one-line cause plus a hint that names the fix.
//!
//! Everything else in xroot uses `anyhow` with `.context(...)` naming the
//! path, URL or arch involved. When a failure has a known remedy, the code
//! raises a [`Hinted`] error; `main` prints its hint on a second line.

use std::fmt;

/// An error whose remedy we know. `Display` is the cause only; the hint is
/// printed separately so the cause stays greppable.
#[derive(Debug)]
pub struct Hinted {
    pub cause: String,
    pub hint: String,
    /// A transient failure that trying again may cure (a download cut short).
    pub retryable: bool,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)
    }
}

impl std::error::Error for Hinted {}

/// Build an `anyhow::Error` carrying a cause and a hint.
pub fn hinted(cause: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        cause: cause.into(),
        hint: hint.into(),
        retryable: false,
    })
}

/// Like [`hinted`], for a transient failure worth retrying.
pub fn hinted_retryable(cause: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        cause: cause.into(),
        hint: hint.into(),
        retryable: true,
    })
}

/// Whether an error chain holds a retryable failure.
pub fn is_retryable(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<Hinted>().is_some_and(|h| h.retryable))
}

/// Finds the first hint in an error chain, if any.
pub fn hint_of(err: &anyhow::Error) -> Option<&str> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Hinted>())
        .map(|h| h.hint.as_str())
}

/// The OS error codes that say "out of space", not "bad input".
const DISK_FULL: [i32; 2] = [libc::ENOSPC, libc::EDQUOT];

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn io_disk_full(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(|c| DISK_FULL.contains(&c))
}

/// Whether an error chain holds an I/O error that is a condition of the
/// machine at this moment (disk full, out of memory or processes, too many
/// open files, interrupted), not a property of the input: worth trying
/// again later, never worth recording as a verdict.
pub fn is_transient_io(err: &anyhow::Error) -> bool {
    const TRANSIENT: [i32; 7] = [
        libc::ENOSPC,
        libc::EDQUOT,
        libc::ENOMEM,
        libc::EAGAIN,
        libc::EMFILE,
        libc::ENFILE,
        libc::EINTR,
    ];
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|c| TRANSIENT.contains(&c))
    })
}
