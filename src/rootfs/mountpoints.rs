//! Mount points a run creates in a tree, and their removal.
//!
//! A guest may bind a directory the tree lacks (the caller's working
//! directory, a `--bind` destination). Its PID 1 creates the mount point
//! inside the tree, through the tree's descriptor ([`super::Tree::mount_point`]),
//! and first appends it to a journal in the store (`locks/<tree>.mountpoints`)
//! together with the times of the directory it is made in. After the run,
//! or at the next run of the tree if xroot was killed (SIGKILL leaves no
//! chance to clean up), [`clean`] removes each journalled entry that is
//! still an empty directory or an empty file, newest first, and puts the
//! parent's times back, so the tree is left as it was. It walks there with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: if a guest replaced a parent
//! with a symlink, the entry is left alone rather than a host path removed.
//!
//! The caller holds the tree's exclusive lock while cleaning (no other run
//! of the tree is using the mount points).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::{beneath, Tree};

/// One journalled entry: the guest path created and the times its parent
/// directory had before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub parent_atime: (i64, i64),
    pub parent_mtime: (i64, i64),
}

impl Entry {
    /// One line: `atime_s atime_ns mtime_s mtime_ns HEX(path)`; hex so that
    /// any byte in a path (a newline too) round-trips.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {}\n",
            self.parent_atime.0,
            self.parent_atime.1,
            self.parent_mtime.0,
            self.parent_mtime.1,
            hex::encode(self.path.as_os_str().as_bytes())
        )
    }

    pub fn parse(line: &str) -> Option<Entry> {
        let f: Vec<&str> = line.split(' ').collect();
        let [a, an, m, mn, p] = f[..] else {
            return None;
        };
        let bytes = hex::decode(p).ok()?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return None;
        }
        Some(Entry {
            path,
            parent_atime: (a.parse().ok()?, an.parse().ok()?),
            parent_mtime: (m.parse().ok()?, mn.parse().ok()?),
        })
    }
}

/// The journal a run's PID 1 appends to before it creates a mount point.
pub struct Journal {
    file: File,
}

impl Journal {
    /// Opens (creating) the journal at `path`, a store path.
    pub fn open(path: &Path) -> Result<Journal> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Journal { file })
    }

    /// Records `guest`, about to be created in `parent`.
    pub fn record(&mut self, guest: &Path, parent: BorrowedFd) -> Result<()> {
        let st = rustix::fs::fstat(parent).context("reading the mount point's parent")?;
        let e = Entry {
            path: guest.to_path_buf(),
            parent_atime: (st.st_atime, st.st_atime_nsec as i64),
            parent_mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        };
        // One write(2) of a whole line on an O_APPEND file: lines of
        // concurrent runs never interleave.
        self.file
            .write_all(e.line().as_bytes())
            .context("writing the mount-point journal")
    }
}

/// Removes what the journal at `journal` lists from the tree at `root`
/// (see the module doc). Entries that could not be removed yet (still
/// mounted) stay in the journal for the next run; the journal is deleted
/// when nothing is left. The caller holds the tree's exclusive lock.
pub fn clean(root: &Path, journal: &Path) -> Result<()> {
    let text = match std::fs::read_to_string(journal) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", journal.display())),
    };
    let entries: Vec<Entry> = text.lines().filter_map(Entry::parse).collect();
    let mut left = Vec::new();
    match Tree::open(root) {
        Ok(tree) => {
            for e in entries.iter().rev() {
                if !remove(&tree, e) {
                    left.push(e.clone());
                }
            }
        }
        // The tree is gone (removed or reset): nothing of ours is left.
        Err(_) if !root.exists() => {}
        Err(e) => return Err(e),
    }
    if left.is_empty() {
        match std::fs::remove_file(journal) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", journal.display())),
        }
    } else {
        left.reverse();
        let text: String = left.iter().map(Entry::line).collect();
        let tmp = journal.with_extension("mountpoints.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, journal).with_context(|| format!("replacing {}", journal.display()))
    }
}

/// Removes one entry if it is still what xroot made (an empty directory
/// or an empty regular file) and restores its parent's times. `false`
/// when it must be tried again later (still a mount point).
fn remove(tree: &Tree, e: &Entry) -> bool {
    let rel = super::relative(&e.path);
    let (Some(parent_rel), Some(name)) = (rel.parent(), rel.file_name()) else {
        return true;
    };
    // Never through a symlink: a guest may have swapped a parent.
    let Ok(parent) = beneath(tree.fd(), parent_rel, OFlags::RDONLY | OFlags::DIRECTORY) else {
        return true;
    };
    let Ok(st) = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return true; // already gone
    };
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let flags = match ft {
        rustix::fs::FileType::Directory => AtFlags::REMOVEDIR,
        rustix::fs::FileType::RegularFile if st.st_size == 0 => AtFlags::empty(),
        // Something else now stands there: the guest's, not ours.
        _ => return true,
    };
    // The guest's mount namespace may still be going away: a mount point
    // in use is EBUSY for a moment.
    for _ in 0..20 {
        match rustix::fs::unlinkat(&parent, name, flags) {
            Ok(()) => {
                let ts = |(s, ns): (i64, i64)| Timespec {
                    tv_sec: s,
                    tv_nsec: ns as _,
                };
                let _ = rustix::fs::futimens(
                    &parent,
                    &Timestamps {
                        last_access: ts(e.parent_atime),
                        last_modification: ts(e.parent_mtime),
                    },
                );
                return true;
            }
            Err(Errno::BUSY) => std::thread::sleep(Duration::from_millis(10)),
            // Not empty: the guest put something there; it stays.
            Err(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_any_path() {
        let e = Entry {
            path: PathBuf::from("/home/a b/new\nline"),
            parent_atime: (1, 2),
            parent_mtime: (3, 4),
        };
        assert_eq!(Entry::parse(e.line().trim_end()), Some(e));
    }

    #[test]
    fn hostile_journal_lines_are_ignored() {
        assert_eq!(Entry::parse("1 2 3 4 2e2e2f657463"), None); // "../etc"
        assert_eq!(Entry::parse("garbage"), None);
        assert_eq!(Entry::parse("1 2 3 4 7a7a"), None); // relative
    }
}
