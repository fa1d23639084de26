//! binfmt_misc: the kernel hook that runs foreign ELF binaries through qemu.
//!
//! This file is pure logic: encoding a registration line, parsing a handler's
//! status file, judging whether an existing handler is fit for xroot. The
//! code that reads and writes a binfmt_misc mount is in [`fs`]; it serves both
//! the host's global instance and a private per-run instance (Linux ≥ 6.7),
//! which differ only in where they are mounted.

pub mod fs;

use std::path::{Path, PathBuf};

use crate::specs::Magic;

/// Registration flags. See Documentation/admin-guide/binfmt-misc.rst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// P: preserve argv[0] (qemu ≥ 6.0 reads it from AT_FLAGS, kernel ≥ 5.12).
    pub preserve_argv0: bool,
    /// O: pass an open fd of the binary (implied by C).
    pub open_binary: bool,
    /// C: credentials from the binary, not the interpreter, so setuid
    /// programs (`su`, `doas`, `passwd`) work inside the guest.
    pub credentials: bool,
    /// F: open the interpreter at registration time, so it is found even
    /// after the guest's root replaces the host's.
    pub fix_binary: bool,
}

impl Flags {
    pub fn letters(&self) -> String {
        let mut s = String::new();
        for (on, c) in [
            (self.preserve_argv0, 'P'),
            (self.open_binary, 'O'),
            (self.credentials, 'C'),
            (self.fix_binary, 'F'),
        ] {
            if on {
                s.push(c);
            }
        }
        s
    }

    pub fn parse(letters: &str) -> Flags {
        Flags {
            preserve_argv0: letters.contains('P'),
            open_binary: letters.contains('O') || letters.contains('C'),
            credentials: letters.contains('C'),
            fix_binary: letters.contains('F'),
        }
    }
}

/// A handler to register.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub name: String,
    pub magic: Magic,
    pub interpreter: PathBuf,
    pub flags: Flags,
}

impl Registration {
    /// The line written to `register`: `:name:M:0:magic:mask:interpreter:flags`.
    /// Every magic/mask byte is `\x`-escaped so `:` and NUL bytes are safe.
    pub fn line(&self) -> Result<String, String> {
        let interp = self
            .interpreter
            .to_str()
            .ok_or("interpreter path is not UTF-8")?;
        if interp.contains(':') || interp.contains('\n') {
            return Err(format!(
                "interpreter path {interp:?} contains ':' or a newline"
            ));
        }
        if self.name.is_empty()
            || self.name.contains(['/', ':'])
            || self.name == "."
            || self.name == ".."
        {
            return Err(format!("bad handler name {:?}", self.name));
        }
        let esc = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
        Ok(format!(
            ":{}:M:0:{}:{}:{}:{}",
            self.name,
            esc(&self.magic.magic),
            esc(&self.magic.mask),
            interp,
            self.flags.letters()
        ))
    }
}

/// A handler as the kernel reports it in `binfmt_misc/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: PathBuf,
    pub flags: Flags,
    pub offset: u64,
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
}

impl Handler {
    /// Parses a status file. Extension-type (`E`) handlers have no magic and
    /// are returned with empty magic; they never match an ELF header.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut h = Handler {
            name: name.to_string(),
            enabled: false,
            interpreter: PathBuf::new(),
            flags: Flags::default(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        let mut saw_state = false;
        for line in text.lines() {
            let line = line.trim();
            if line == "enabled" || line == "disabled" {
                h.enabled = line == "enabled";
                saw_state = true;
            } else if let Some(v) = line.strip_prefix("interpreter ") {
                h.interpreter = PathBuf::from(v);
            } else if let Some(v) = line.strip_prefix("flags:") {
                h.flags = Flags::parse(v.trim());
            } else if let Some(v) = line.strip_prefix("offset ") {
                h.offset = v.trim().parse().ok()?;
            } else if let Some(v) = line.strip_prefix("magic ") {
                h.magic = crate::specs::decode_hex(v).ok()?;
            } else if let Some(v) = line.strip_prefix("mask ") {
                h.mask = crate::specs::decode_hex(v).ok()?;
            }
        }
        if !saw_state {
            return None;
        }
        if h.mask.is_empty() {
            h.mask = vec![0xff; h.magic.len()];
        }
        Some(h)
    }

    /// Would the kernel pick this handler for a file starting with `header`?
    pub fn matches(&self, header: &[u8]) -> bool {
        let off = self.offset as usize;
        !self.magic.is_empty()
            && header.len() >= off + self.magic.len()
            && self
                .magic
                .iter()
                .zip(&self.mask)
                .zip(&header[off..])
                .all(|((m, k), h)| h & k == m & k)
    }

    /// Would this handler claim binaries of the arch described by `magic`?
    /// Tested with the arch's own magic bytes as a sample header.
    pub fn claims(&self, magic: &Magic) -> bool {
        self.matches(&magic.magic)
    }

    /// What is wrong with this handler for running a chroot-style guest.
    /// `interp_exists` is injected so this stays pure.
    pub fn problems(&self, interp_exists: impl Fn(&Path) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        if !self.enabled {
            out.push(format!("handler '{}' is disabled", self.name));
        }
        if !self.flags.fix_binary {
            out.push(format!(
                "handler '{}' lacks the F flag: its interpreter {} is looked up inside the guest's root, where it does not exist",
                self.name,
                self.interpreter.display()
            ));
            if !interp_exists(&self.interpreter) {
                out.push(format!(
                    "its interpreter {} does not exist",
                    self.interpreter.display()
                ));
            }
        }
        out
    }

    /// Advice that does not make the handler unusable.
    pub fn warnings(&self, interp_exists: impl Fn(&Path) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.flags.fix_binary && !interp_exists(&self.interpreter) {
            out.push(format!(
                "interpreter {} was deleted; the handler still works because F pinned the file, until it is re-registered",
                self.interpreter.display()
            ));
        }
        if !self.flags.credentials {
            out.push(format!("handler '{}' lacks the C flag: setuid programs (su, doas) will not gain privileges", self.name));
        }
        out
    }
}

/// Whether to ask for P: the kernel passes AT_FLAGS_PRESERVE_ARGV0 since
/// 5.12 and qemu reads it since 6.0. With an older pair, P would shift argv.
pub fn want_preserve_argv0(kernel: (u32, u32), qemu_version: Option<(u32, u32)>) -> bool {
    kernel >= (5, 12) && qemu_version.is_some_and(|v| v >= (6, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::Catalog;

    #[test]
    fn registration_line() {
        let c = Catalog::builtin().unwrap();
        let r = Registration {
            name: "qemu-aarch64".into(),
            magic: c.find("aarch64").unwrap().binfmt.clone(),
            interpreter: "/usr/bin/qemu-aarch64-static".into(),
            flags: Flags {
                preserve_argv0: true,
                open_binary: true,
                credentials: true,
                fix_binary: true,
            },
        };
        let line = r.line().unwrap();
        assert!(
            line.starts_with(":qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02"),
            "{line}"
        );
        assert!(
            line.ends_with(":/usr/bin/qemu-aarch64-static:POCF"),
            "{line}"
        );
        let bad = Registration {
            interpreter: "/a:b".into(),
            ..r.clone()
        };
        assert!(bad.line().is_err());
        let bad = Registration {
            name: "../x".into(),
            ..r
        };
        assert!(bad.line().is_err());
    }

    const STATUS: &str = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn parses_status_and_matches() {
        let c = Catalog::builtin().unwrap();
        let h = Handler::parse("qemu-aarch64", STATUS).unwrap();
        assert!(h.enabled && h.flags.fix_binary && h.flags.credentials && h.flags.preserve_argv0);
        assert!(h.claims(&c.find("aarch64").unwrap().binfmt));
        assert!(!h.claims(&c.find("riscv64").unwrap().binfmt));
        assert!(h.problems(|_| true).is_empty());
        assert!(h.warnings(|_| true).is_empty());
    }

    #[test]
    fn unfit_handlers_are_explained() {
        let h = Handler::parse(
            "qemu-aarch64",
            &STATUS.replace("enabled", "disabled").replace("POCF", "P"),
        )
        .unwrap();
        let p = h.problems(|_| false);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].contains("disabled") && p[1].contains("F flag") && p[2].contains("does not exist")
        );
        let h = Handler::parse("qemu-aarch64", STATUS).unwrap();
        assert!(h.problems(|_| false).is_empty(), "F pins the interpreter");
        assert_eq!(h.warnings(|_| false).len(), 1);
    }

    #[test]
    fn extension_handlers_never_match() {
        let h = Handler::parse(
            "python",
            "enabled\ninterpreter /usr/bin/python3\nflags: \nextension .pyc\n",
        )
        .unwrap();
        assert!(
            !h.matches(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00")
        );
    }

    #[test]
    fn p_flag_rule() {
        assert!(want_preserve_argv0((6, 18), Some((7, 2))));
        assert!(!want_preserve_argv0((5, 11), Some((7, 2))));
        assert!(!want_preserve_argv0((6, 1), Some((5, 2))));
        assert!(!want_preserve_argv0((6, 1), None));
    }
}
