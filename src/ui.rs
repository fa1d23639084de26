//! Messages and progress on stderr. A progress bar when stderr is a
//! terminal; plain one-line messages otherwise (CI logs, pipes); nothing
//! but errors with `--quiet`.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
    pub tty: bool,
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        Ui {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// A one-line status message (control characters escaped).
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("xroot: {}", escape(msg.as_ref()));
        }
    }

    /// A warning is shown even with `--quiet`: it reports something the
    /// user should act on. Control characters are escaped.
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("xroot: warning: {}", escape(msg.as_ref()));
    }

    /// A byte-count progress bar (hidden unless stderr is a terminal).
    pub fn bar(&self, len: Option<u64>, msg: &str) -> Bar {
        if self.quiet || !self.tty {
            return Bar(None);
        }
        let pb = match len {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        let style = ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        pb.set_style(style);
        pb.set_message(msg.to_string());
        Bar(Some(pb))
    }
}

/// Makes text from an untrusted source safe to print on a terminal.
///
/// Messages carry names and fields that archives, indexes, servers and
/// guests choose: tar entry names, `version:` from an index, HTTP reason
/// phrases, a redirect's `Location`. Printed raw, an escape sequence in
/// one of them sets the terminal's title, erases lines, fakes output or
/// (on some terminals) answers back as typed input. So every message and
/// listing goes through this one function where it is printed (`main`'s
/// error and hint, [`Ui::info`], [`Ui::warn`], `xroot list`): C0 controls
/// (newline and tab too: no message of xroot spans lines), DEL, C1
/// controls (U+0080-U+009F, e.g. the one-byte CSI) and the Unicode bidi
/// overrides that reorder what is shown become visible `\xNN` / `\u{NNNN}`
/// escapes. Everything else, UTF-8 included, is printed as is.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    fn bad(c: char) -> bool {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !bad(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The reader of xroot's standard output went away (`xroot list | head -1`).
/// Not a failure: `main` exits quietly with 0, as ripgrep does, instead of
/// the panic `println!` would give.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Writes a command's output to stdout. A closed pipe becomes
/// [`StdoutClosed`]; any other failure (a full disk behind `>`) an error.
pub fn out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|_| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        r => Ok(r.map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))?),
    }
}

/// `println!` for command output, through [`out`]: use in a function that
/// returns `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::ui::out(format!("{}\n", format_args!($($arg)*)).as_bytes())?
    };
}
pub(crate) use outln;

/// Warnings from work that may run under a progress bar which does not
/// exist yet (a download's resumes: the bar needs the response's length).
#[derive(Clone)]
pub struct Warner {
    ui: Ui,
    bar: std::sync::Arc<std::sync::OnceLock<ProgressBar>>,
}

impl Warner {
    pub fn warn(&self, msg: &str) {
        match self.bar.get() {
            Some(b) => b.suspend(|| self.ui.warn(msg)),
            None => self.ui.warn(msg),
        }
    }
}

impl Ui {
    /// A [`Warner`]; see [`Bar::attach`].
    pub fn warner(&self) -> Warner {
        Warner {
            ui: *self,
            bar: Default::default(),
        }
    }
}

/// A progress bar, or nothing.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn hidden() -> Bar {
        Bar(None)
    }

    /// Sends `w`'s warnings above this bar from now on (cleared and
    /// redrawn around them), instead of into the bar's line.
    pub fn attach(&self, w: &Warner) {
        if let Some(pb) = &self.0 {
            let _ = w.bar.set(pb.clone());
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `XROOT_TRACE=1`: print how long each phase of a command took (µs since
/// xroot started), to see where launch time goes without a profiler.
pub fn trace(phase: &str) {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    let start = START.get_or_init(|| {
        std::env::var_os("XROOT_TRACE")
            .filter(|v| v != "0")
            .map(|_| Instant::now())
    });
    if let Some(t) = start {
        // Minor page faults so far in this process: on a VM each costs
        // microseconds, a large part of what a launch spends.
        let faults = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map(|u| u.minor_page_faults())
            .unwrap_or(0);
        eprintln!(
            "xroot: trace: {:>7} µs  {faults:>4} faults  [{}] {phase}",
            t.elapsed().as_micros(),
            std::process::id()
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_control_characters_only() {
        use super::escape;
        assert_eq!(escape("plain ünïcode ✓ text"), "plain ünïcode ✓ text");
        assert_eq!(escape("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(escape("a\nb\rc\td\x08"), "a\\x0ab\\x0dc\\x09d\\x08");
        assert_eq!(escape("\u{9b}2J\u{7f}"), "\\x9b2J\\x7f");
        assert_eq!(escape("x\u{202e}y\u{2066}"), "x\\u{202e}y\\u{2066}");
    }
}
