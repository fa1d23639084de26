//! Reading a guest tree from the host without letting it point anywhere
//! else: every path is opened with `openat2(RESOLVE_IN_ROOT)` from a
//! directory fd of the tree's root, so a symlink in the guest resolves as
//! it would inside the guest (an absolute target stays within the tree, `..`
//! stops at its root) and never reaches a host file.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// A directory tree opened as a root.
pub struct Tree {
    root: PathBuf,
    fd: OwnedFd,
}

impl Tree {
    pub fn open(root: &Path) -> io::Result<Tree> {
        let root = root.canonicalize()?;
        let fd = File::open(&root)?;
        Ok(Tree {
            root,
            fd: fd.into(),
        })
    }

    /// Opens `path` (absolute, as seen inside the tree).
    fn open_in(&self, path: &Path, flags: OFlag) -> io::Result<File> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = nix::fcntl::openat2(self.fd.as_raw_fd(), rel, how)?;
        // SAFETY: openat2 returned a new fd that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open_in(path, OFlag::O_RDONLY)?.read_to_end(&mut v)?;
        Ok(v)
    }

    pub fn read_string(&self, path: &Path) -> io::Result<String> {
        String::from_utf8(self.read(path)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Whether `path` is a regular file (after the tree's own symlinks).
    pub fn is_file(&self, path: &Path) -> bool {
        self.open_in(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.is_file())
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.open_in(path, OFlag::O_PATH).is_ok()
    }

    /// The names in a directory, sorted; empty if it does not exist.
    pub fn entries(&self, path: &Path) -> Vec<OsString> {
        let Ok(dir) = self.open_in(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
            return Vec::new();
        };
        let Ok(mut d) = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(dir)) else {
            return Vec::new();
        };
        let mut names: Vec<OsString> = d
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| {
                use std::os::unix::ffi::OsStrExt;
                std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_os_string()
            })
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        names
    }

    /// `path` with every symlink of the tree resolved: the path a mount
    /// must cover so that all the guest's ways to reach the file see it.
    pub fn real_path(&self, path: &Path) -> io::Result<PathBuf> {
        let f = self.open_in(path, OFlag::O_PATH)?;
        let host = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
        let inside = host.strip_prefix(&self.root).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} resolved outside the tree", path.display()),
            )
        })?;
        Ok(Path::new("/").join(inside))
    }
}
