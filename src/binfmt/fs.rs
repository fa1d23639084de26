//! Reading and writing a mounted binfmt_misc instance.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

use super::{Handler, Registration};
use crate::error::hinted;

/// The host's global instance.
pub const HOST_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// A mounted binfmt_misc instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub dir: PathBuf,
}

impl Instance {
    pub fn host() -> Instance {
        Instance {
            dir: PathBuf::from(HOST_DIR),
        }
    }

    pub fn is_mounted(&self) -> bool {
        self.dir.join("register").exists()
    }

    /// Mounts binfmt_misc at `dir` unless it already is.
    pub fn ensure_mounted(&self) -> Result<()> {
        if self.is_mounted() {
            return Ok(());
        }
        mount(Some("binfmt_misc"), &self.dir, Some("binfmt_misc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
            .map_err(|e| {
                hinted(
                    format!("binfmt_misc is not mounted at {} and mounting it failed: {e}", self.dir.display()),
                    "run as root, or mount it once: sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc",
                )
            })
    }

    /// Whether the instance as a whole is enabled (`echo 0 > status` disables all).
    pub fn enabled(&self) -> bool {
        fs::read_to_string(self.dir.join("status"))
            .map(|s| s.trim() == "enabled")
            .unwrap_or(false)
    }

    /// Every handler registered in this instance.
    pub fn handlers(&self) -> Result<Vec<Handler>> {
        let mut out = Vec::new();
        let rd =
            fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?;
        for e in rd {
            let e = e.with_context(|| format!("listing {}", self.dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "register" || name == "status" {
                continue;
            }
            let Ok(text) = fs::read_to_string(e.path()) else {
                continue;
            };
            if let Some(h) = Handler::parse(&name, &text) {
                out.push(h);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Registers a handler. With F, the kernel opens the interpreter now,
    /// resolving its path in the caller's current root.
    pub fn register(&self, r: &Registration) -> Result<()> {
        let line = r
            .line()
            .map_err(|e| anyhow::anyhow!("cannot register {}: {e}", r.name))?;
        let reg = self.dir.join("register");
        fs::write(&reg, line.as_bytes()).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EEXIST) {
                format!("a handler named '{}' already exists; remove it first (xroot binfmt remove --force)", r.name)
            } else if e.kind() == std::io::ErrorKind::PermissionDenied {
                "registering a host handler needs root: sudo xroot binfmt install ARCH".to_string()
            } else {
                "check `dmesg` and that the interpreter is a readable executable".to_string()
            };
            hinted(format!("writing {} for {} ({}): {e}", reg.display(), r.name, r.interpreter.display()), hint)
        })
    }

    /// Removes a handler by name (`echo -1 > binfmt_misc/NAME`).
    pub fn remove(&self, name: &str) -> Result<()> {
        let p = self.dir.join(name);
        fs::write(&p, b"-1").with_context(|| format!("removing binfmt handler {}", p.display()))
    }
}

/// Whether a path exists (for [`Handler::problems`]).
pub fn exists(p: &Path) -> bool {
    p.exists()
}
