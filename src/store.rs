//! The store: where rootfs trees, their manifests and downloaded tarballs
//! live, and the locks that keep concurrent xroot processes from stepping
//! on each other.
//!
//! ```text
//! $XROOT_HOME/                       (0700: rootfs trees may hold setuid files)
//!   rootfs/<id>/manifest.toml        what was installed, from where, when
//!   rootfs/<id>/root/                the tree the guest sees as /
//!   tmp/<id>.<pid>.<n>/              staging; renamed into rootfs/ when complete
//!   cache/<file>                     verified tarballs, for `reset`/`export`
//!   locks/<id>.lock                  flock: exclusive to change, shared to run
//! ```
//!
//! A rootfs becomes visible only by an atomic `rename` of a complete staging
//! directory, so a crash at any moment never leaves a half tree that is used.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::hinted;

/// Identifies one installed rootfs: an arch and an optional name
/// (`aarch64`, `aarch64@old`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsId {
    pub arch: String,
    pub name: Option<String>,
}

impl RootfsId {
    /// Splits `ARCH[@NAME]` (the arch part is not resolved here).
    pub fn parse(s: &str) -> Result<(String, Option<String>)> {
        match s.split_once('@') {
            None => Ok((s.to_string(), None)),
            Some((a, n)) => {
                validate_name(n)?;
                Ok((a.to_string(), Some(n.to_string())))
            }
        }
    }

    pub fn dir_name(&self) -> String {
        match &self.name {
            None => self.arch.clone(),
            Some(n) => format!("{}@{n}", self.arch),
        }
    }
}

impl std::fmt::Display for RootfsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dir_name())
    }
}

/// Names are path components: keep them boring.
pub fn validate_name(n: &str) -> Result<()> {
    if n.is_empty()
        || n.len() > 64
        || n.starts_with('.')
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(hinted(
            format!("invalid rootfs name {n:?}"),
            "use 1-64 characters from A-Z a-z 0-9 . _ - (not starting with '.')",
        ));
    }
    Ok(())
}

/// What `fetch` recorded about an installed rootfs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub arch: String,
    pub name: Option<String>,
    /// The provider that made it (`alpine`, `apk`, `tarball`, ...); empty
    /// in manifests written before providers existed.
    #[serde(default)]
    pub kind: String,
    /// Release branch (`v3.20`), or empty for a plain tarball.
    #[serde(default)]
    pub branch: String,
    /// Distribution version (`3.20.3`), when known.
    #[serde(default)]
    pub version: String,
    pub sha256: String,
    /// Where the tarball came from (URL or file path).
    pub source: String,
    /// The mirror, for Alpine sources.
    #[serde(default)]
    pub mirror: String,
    /// apk repositories the tree was built from (`apk` provider).
    #[serde(default)]
    pub repositories: Vec<String>,
    /// `--key` files trusted when it was built, copied to `keys/` beside
    /// this manifest (out of the guest's reach) for `reset`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Built from an index accepted with `--allow-untrusted`.
    #[serde(default)]
    pub allow_untrusted: bool,
    /// RFC 3339, UTC.
    pub installed_at: String,
    /// The verified tarball kept in the cache, if any.
    #[serde(default)]
    pub tarball: Option<PathBuf>,
    /// Extraction left ownership or mode unapplied (rootless): listed in
    /// `owners.tsv` next to this manifest.
    #[serde(default)]
    pub owners_recorded: bool,
    /// Packages added with `fetch --packages` (empty after `reset`, which
    /// goes back to the release as published).
    #[serde(default)]
    pub packages: Vec<String>,
    /// For a container image: the digest of the image manifest installed
    /// (`sha256:…`); `fetch --from docker://NAME@DIGEST` installs it again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// For a container image: its platform (`linux/arm/v7`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform: String,
}

/// An installed rootfs.
#[derive(Debug, Clone)]
pub struct Installed {
    pub id: RootfsId,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Installed {
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

/// A held flock; released on drop (or when every process holding the fd exits).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl std::os::fd::AsRawFd for Lock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self._file.as_raw_fd()
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pub home: PathBuf,
    /// Set once [`create`](Self::create) succeeded: a launch would otherwise
    /// stat the five store directories at each lock and cache access.
    created: std::sync::OnceLock<()>,
}

impl Store {
    /// `$XROOT_HOME`, else `$XDG_DATA_HOME/xroot`, else `~/.local/share/xroot`.
    pub fn default_home() -> Result<PathBuf> {
        if let Some(h) = std::env::var_os("XROOT_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(h));
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(x).join("xroot"));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => Ok(PathBuf::from(h).join(".local/share/xroot")),
            None => Err(hinted(
                "cannot find a place for the store: HOME is not set",
                "set XROOT_HOME=/some/dir",
            )),
        }
    }

    /// Opens the store without creating anything (for read-only commands).
    pub fn at(home: PathBuf) -> Store {
        Store {
            home,
            created: std::sync::OnceLock::new(),
        }
    }

    /// Creates the store's directories (0700) if needed.
    pub fn create(&self) -> Result<()> {
        if self.created.get().is_some() {
            return Ok(());
        }
        for d in [
            self.home.clone(),
            self.rootfs_dir(),
            self.tmp_dir(),
            self.cache_dir(),
            self.home.join("locks"),
        ] {
            if d.is_dir() {
                continue; // the common case: one stat, no mkdir
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .with_context(|| format!("creating store directory {}", d.display()))?;
        }
        let _ = self.created.set(());
        Ok(())
    }

    pub fn rootfs_dir(&self) -> PathBuf {
        self.home.join("rootfs")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.home.join("cache")
    }
    /// Prelinked copies of qemu (`qemu::copy`), made when first needed.
    pub fn qemu_dir(&self) -> PathBuf {
        self.home.join("qemu")
    }

    pub fn path_of(&self, id: &RootfsId) -> PathBuf {
        self.rootfs_dir().join(id.dir_name())
    }

    /// Takes the lock of one rootfs id. `exclusive` to install or remove,
    /// shared while a guest runs in it. `wait=false` fails instead of blocking.
    pub fn lock(&self, id: &RootfsId, exclusive: bool, wait: bool) -> Result<Option<Lock>> {
        self.lock_named(&id.dir_name(), exclusive, wait)
    }

    /// Like [`lock`](Self::lock), for any name (`--rootfs` trees use a hash of their path).
    pub fn lock_named(&self, name: &str, exclusive: bool, wait: bool) -> Result<Option<Lock>> {
        self.create()?;
        let p = self.home.join("locks").join(format!("{name}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&p)
            .with_context(|| format!("opening lock {}", p.display()))?;
        let mut op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        if !wait {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a valid open fd.
            if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), op) } == 0 {
                return Ok(Some(Lock { _file: f }));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
                _ => return Err(e).with_context(|| format!("locking {}", p.display())),
            }
        }
    }

    /// The installed rootfs for `id`, if any.
    pub fn get(&self, id: &RootfsId) -> Result<Option<Installed>> {
        let dir = self.path_of(id);
        let mf = dir.join("manifest.toml");
        let text = match fs::read_to_string(&mf) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", mf.display())),
        };
        let manifest: Manifest = toml::from_str(&text).with_context(|| {
            format!(
                "{} is corrupt; remove it with `xroot rm {id}`",
                mf.display()
            )
        })?;
        Ok(Some(Installed {
            id: id.clone(),
            dir,
            manifest,
        }))
    }

    /// Every installed rootfs, sorted by id.
    pub fn list(&self) -> Result<Vec<Installed>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(self.rootfs_dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(e).with_context(|| format!("listing {}", self.rootfs_dir().display()))
            }
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let Ok((arch, name)) = RootfsId::parse(&n) else {
                continue;
            };
            if let Ok(Some(i)) = self.get(&RootfsId { arch, name }) {
                out.push(i);
            }
        }
        out.sort_by_key(|i| i.id.dir_name());
        Ok(out)
    }

    /// A fresh staging directory for `id`. Call with the id's exclusive lock
    /// held: stale staging dirs of the same id (from a killed fetch) are
    /// removed first.
    pub fn staging(&self, id: &RootfsId) -> Result<PathBuf> {
        self.create()?;
        self.clean_stale(id)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = self
            .tmp_dir()
            .join(format!("{}.{}.{nanos}", id.dir_name(), std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating staging directory {}", p.display()))?;
        Ok(p)
    }

    /// Removes staging dirs that a killed `fetch` of `id` left behind, if no
    /// other xroot holds `id`'s lock right now (else it is left for later).
    /// For the paths that do not stage anything themselves (`fetch` of an
    /// installed id), so leftovers do not wait for the next `--force`.
    /// Best effort: a failure here only leaves the leftovers in place.
    pub fn clean_stale_if_idle(&self, id: &RootfsId) {
        if !self.tmp_dir().is_dir() {
            return;
        }
        if let Ok(Some(_lock)) = self.lock(id, true, false) {
            let _ = self.clean_stale(id);
        }
    }

    fn clean_stale(&self, id: &RootfsId) -> Result<()> {
        let prefix = format!("{}.", id.dir_name());
        for e in fs::read_dir(self.tmp_dir())
            .with_context(|| format!("listing {}", self.tmp_dir().display()))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            // "aarch64." must not also catch "aarch64@x." or "aarch64_be.": ids
            // never contain '.', names after '@' may, so compare up to the pid.
            if n.strip_prefix(&prefix).is_some_and(|rest| {
                rest.split('.')
                    .next()
                    .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()) || pid == "old")
            }) {
                remove_tree(&e.path()).with_context(|| {
                    format!("removing stale staging directory {}", e.path().display())
                })?;
            }
        }
        Ok(())
    }

    /// Moves a complete staging dir into place, atomically replacing any
    /// existing install of `id` (whose old tree is then deleted).
    pub fn commit(&self, id: &RootfsId, staging: &Path) -> Result<()> {
        let dest = self.path_of(id);
        if dest.exists() {
            exchange(staging, &dest).with_context(|| {
                format!("swapping {} into {}", staging.display(), dest.display())
            })?;
            // `staging` now holds the old tree.
            remove_tree(staging)
                .with_context(|| format!("removing old tree {}", staging.display()))?;
        } else {
            fs::rename(staging, &dest)
                .with_context(|| format!("moving {} to {}", staging.display(), dest.display()))?;
        }
        Ok(())
    }

    /// Removes an installed rootfs. Refused while a guest runs in it.
    pub fn remove(&self, id: &RootfsId) -> Result<bool> {
        let Some(_lock) = self.lock(id, true, false)? else {
            bail!(hinted(
                format!("{id} is in use by a running xroot guest"),
                "exit the guest(s) first, then run `xroot rm` again"
            ));
        };
        let dest = self.path_of(id);
        if !dest.exists() {
            return Ok(false);
        }
        // Rename first so a crash mid-delete never leaves a half tree under rootfs/.
        let trash = self
            .tmp_dir()
            .join(format!("{}.old.{}", id.dir_name(), std::process::id()));
        fs::rename(&dest, &trash).with_context(|| format!("moving {} aside", dest.display()))?;
        remove_tree(&trash).with_context(|| format!("removing {}", trash.display()))?;
        Ok(true)
    }
}

/// Removes a tree from the store. A rootless caller with subordinate ids
/// may own files through those ids (see [`apply_owners`]), which it can
/// neither modify nor delete from outside: then the removal is retried as
/// root of a user namespace with the caller's id map.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match crate::extract::remove_tree(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            match crate::userns::subordinate_map() {
                Some(map) => crate::userns::run_as_root(
                    &map,
                    &format!("removing {}", path.display()),
                    &mut || crate::extract::remove_tree(path),
                )
                .map_err(|e2| std::io::Error::other(format!("{e}; {e2:#}"))),
                None => Err(e),
            }
        }
        r => r,
    }
}

/// Gives extracted files their archive owners (and the setuid/setgid bits
/// that extraction withheld) as root of a user namespace with the caller's
/// subordinate id map, so that inside the guest `/etc/shadow` belongs to
/// group shadow and `chown`/`apk` see real ids. On the host the files then
/// belong to the caller's subordinate ids, which grant nothing beyond what
/// /etc/subuid already delegates to the caller.
pub fn apply_owners(
    map: &crate::userns::IdMap,
    root: &Path,
    owners: &[crate::extract::OwnerRecord],
) -> Result<()> {
    let limit = match map {
        crate::userns::IdMap::Subordinate { subuid, subgid, .. } => (subuid.count, subgid.count),
        _ => return Ok(()),
    };
    crate::userns::run_as_root(
        map,
        &format!("setting file owners in {}", root.display()),
        &mut || {
            for o in owners {
                // Ids 0..=count exist in the namespace (0 is the caller,
                // 1..=count the subordinate range).
                let (uid, gid, mut mode) = (o.uid, o.gid, o.mode);
                let (uid, gid) = if uid <= limit.0 && gid <= limit.1 {
                    (uid as u32, gid as u32)
                } else {
                    // Not representable with this map: the entry stays the
                    // caller's (guest root), so a setuid/setgid bit would
                    // make it a setuid-root program the archive never had.
                    mode &= !0o6000;
                    (0, 0)
                };
                // setuid/setgid bits are kept: the guest needs su, passwd,
                // ping under its own ids, and on the host such a file is
                // owned by the caller or one of the caller's subordinate
                // ids, in a store only the caller can enter (0700).
                crate::extract::set_owner_beneath(root, &o.path, uid, gid, mode)?;
            }
            Ok(())
        },
    )
}

/// Swaps two paths atomically (`renameat2(RENAME_EXCHANGE)`). The raw
/// system call: nix wraps it for glibc only, and musl has no wrapper.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse() {
        assert_eq!(
            RootfsId::parse("aarch64").unwrap(),
            ("aarch64".into(), None)
        );
        assert_eq!(
            RootfsId::parse("aarch64@old").unwrap(),
            ("aarch64".into(), Some("old".into()))
        );
        assert!(RootfsId::parse("aarch64@").is_err());
        assert!(RootfsId::parse("aarch64@../x").is_err());
        assert!(RootfsId::parse("aarch64@.hidden").is_err());
    }

    #[test]
    fn stage_commit_replace_remove() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::at(t.path().join("home"));
        let id = RootfsId {
            arch: "aarch64".into(),
            name: None,
        };
        let other = RootfsId {
            arch: "aarch64".into(),
            name: Some("x".into()),
        };
        let _l = s.lock(&id, true, true).unwrap().unwrap();
        // A stale staging dir of another id must survive cleaning.
        let keep = s.staging(&other).unwrap();
        let a = s.staging(&id).unwrap();
        fs::write(a.join("f"), "1").unwrap();
        let stale = s.staging(&id).unwrap();
        assert!(!a.exists(), "stale staging removed");
        fs::write(stale.join("f"), "2").unwrap();
        s.commit(&id, &stale).unwrap();
        assert_eq!(fs::read_to_string(s.path_of(&id).join("f")).unwrap(), "2");
        let b = s.staging(&id).unwrap();
        fs::write(b.join("f"), "3").unwrap();
        s.commit(&id, &b).unwrap();
        assert_eq!(fs::read_to_string(s.path_of(&id).join("f")).unwrap(), "3");
        assert!(!b.exists());
        assert!(keep.exists());
        drop(_l);
        assert!(s.remove(&id).unwrap());
        assert!(!s.path_of(&id).exists());
        assert!(!s.remove(&id).unwrap());
    }

    #[test]
    fn remove_is_refused_while_shared_lock_held() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::at(t.path().to_path_buf());
        let id = RootfsId {
            arch: "x86".into(),
            name: None,
        };
        let _run = s.lock(&id, false, true).unwrap().unwrap();
        let err = s.remove(&id).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
