//! The store's prelinked copies of qemu (see [`super::prelink`] for why).
//!
//! One copy per qemu binary, made the first time a guest needs it (~50 ms),
//! named after the original's identity (device, inode, size, mtime), so an
//! upgraded qemu gets a new copy and the old one is removed. A copy is used
//! only after it has been run and printed the same `-version` as the
//! original; a binary that cannot be prelinked or whose copy misbehaves is
//! recorded (`NAME.unusable`, with the reason) and used as it is; a
//! failure of the machine rather than of the binary (disk full, out of
//! memory) is not recorded, so a later launch tries again. Temporary files
//! of a maker that was killed are removed by the next maker of that copy.
//!
//! Copies serve only the guest's private binfmt_misc handlers. A host
//! handler (`xroot binfmt install`) is global and keeps the system's qemu.
//! `XROOT_QEMU_PRELINK=0` turns copies off.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use crate::store::Store;

/// Where the kernel itself puts a PIE on x86_64 and arm64 (`ELF_ET_DYN_BASE`,
/// 2/3 of a 47/48-bit address space) ...
const BASE_LOW: u64 = 0x5555_5555_4000;
/// ... plus a random number of pages below 2^28, as the kernel's own
/// randomisation of that base (`mmap_rnd_bits` = 28).
const RANDOM_PAGES: u64 = 1 << 28;

/// Whether guests run on copies (`--qemu-prelink 0` / `XROOT_QEMU_PRELINK=0` say no).
fn enabled() -> bool {
    crate::knobs::get().qemu_prelink
}

/// The binary a guest's binfmt handler should run for `qemu`: its
/// prelinked copy in the store, made now if needed, or `qemu` itself.
pub fn for_guest(store: &Store, qemu: &Path) -> PathBuf {
    if !enabled() {
        return qemu.to_path_buf();
    }
    let Some(name) = copy_name(qemu) else {
        return qemu.to_path_buf();
    };
    let dir = store.qemu_dir();
    let copy = dir.join(&name);
    let unusable = dir.join(format!("{name}.unusable"));
    let seal = dir.join(format!("{name}.seal"));
    // What an earlier launch decided, if anything. A copy is used only
    // while it is exactly the file that was checked: its inode, size and
    // change time are sealed when it is published, and any write to it
    // since (a guest that reached the store through a bind, anything else)
    // changes the ctime, which no one can set back. A broken seal means
    // the copy is thrown away and made again.
    let decided = || {
        if let Ok(m) = fs::symlink_metadata(&copy) {
            if fs::read_to_string(&seal).is_ok_and(|s| s == identity(&m)) {
                return Some(copy.clone());
            }
            return None;
        }
        if unusable.exists() {
            return Some(qemu.to_path_buf());
        }
        None
    };
    // The launch path: one stat.
    if let Some(p) = decided() {
        return p;
    }
    // One maker at a time (20 guests started at once on a new store must
    // not each write 13 MB); the others wait, then find what it decided.
    // Without the lock (it could not be made) makers race, which is safe.
    let _lock = store.lock_named(&format!("qemu-{name}"), true, true);
    if let Some(p) = decided() {
        return p;
    }
    // Under the lock no one else makes this copy: a temporary file of it
    // is what a killed maker left (13 MB each; nothing else removes them).
    remove_stale_temps(&dir, &name);
    let made = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))
        .and_then(|_| {
            // A copy whose seal is broken (tampered with) goes first.
            let _ = fs::remove_file(&copy);
            make(&dir, qemu, &copy, &name)
        })
        .and_then(|_| {
            let m = fs::symlink_metadata(&copy)
                .with_context(|| format!("reading {}", copy.display()))?;
            fs::write(&seal, identity(&m)).with_context(|| format!("writing {}", seal.display()))
        });
    match made {
        Ok(()) => {
            prune(&dir, qemu, &name);
            crate::ui::trace("qemu copy made");
            copy
        }
        Err(e) if crate::error::is_transient_io(&e) => {
            // Disk full, out of memory or processes: says nothing about
            // this qemu. Not recorded, so a later launch tries again.
            crate::ui::trace(&format!("qemu copy not made this time: {e:#}"));
            qemu.to_path_buf()
        }
        Err(e) => {
            // Recorded, so the next launch does not try again; shown by
            // `XROOT_TRACE=1` and kept in the file for whoever looks.
            let _ = fs::write(&unusable, format!("{}: {e:#}\n", qemu.display()));
            crate::ui::trace(&format!("qemu copy not used: {e:#}"));
            qemu.to_path_buf()
        }
    }
}

/// For `xroot doctor`: whether copies are on, the copies in `dir`, and
/// the reasons recorded for qemus that could not be prelinked.
pub fn summary(dir: &Path) -> (bool, Vec<String>, Vec<String>) {
    let (mut copies, mut refused) = (Vec::new(), Vec::new());
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if name.ends_with(".seal") {
            continue;
        }
        if name.ends_with(".unusable") {
            let why = fs::read_to_string(e.path()).unwrap_or_default();
            refused.push(why.trim().to_string());
        } else {
            copies.push(name);
        }
    }
    copies.sort();
    refused.sort();
    (enabled(), copies, refused)
}

/// What a copy's seal holds: the identity a write to the file changes.
fn identity(m: &fs::Metadata) -> String {
    format!(
        "{} {} {} {} {}\n",
        m.dev(),
        m.ino(),
        m.size(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// `qemu-aarch64-static.<16 hex digits>`: the file name plus a hash of the
/// original's identity. (std's hasher with its fixed keys: on the launch
/// path, and cheaper than SHA-256's code; should it change with a Rust
/// release, a new copy is made and the old one pruned.)
fn copy_name(qemu: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let m = fs::metadata(qemu).ok()?;
    let file = qemu.file_name()?.to_str()?;
    let mut h = std::hash::DefaultHasher::new();
    (qemu, m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h);
    Some(format!("{file}.{:016x}", h.finish()))
}

/// Writes, checks and publishes the copy of `qemu` at `copy`.
fn make(dir: &Path, qemu: &Path, copy: &Path, name: &str) -> Result<()> {
    let file = fs::File::open(qemu).with_context(|| format!("opening {}", qemu.display()))?;
    // Mapped, not read: only the pages the prelinker looks at (headers,
    // relocations, the data they patch; ~5 of qemu's 13 MB) are touched.
    // SAFETY: a read-only private mapping; if the file were rewritten
    // underneath us, the copy would fail its -version check below.
    let original = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", qemu.display()))?;
    let base = BASE_LOW + random_u64()? % RANDOM_PAGES * 4096;
    let p = super::prelink::prelink(&original, base).map_err(|e| anyhow!("{e}"))?;
    drop(original);
    // Written under a name of our own, then renamed: a concurrent launch
    // sees the whole copy or none, and so does one after a crash.
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let result = (|| {
        // The kernel copies the bytes (copy_file_range); the changes go on top.
        fs::copy(qemu, &tmp)
            .with_context(|| format!("copying {} to {}", qemu.display(), tmp.display()))?;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .with_context(|| format!("opening {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(0o555))
            .and_then(|_| p.write_into(&f))
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(f);
        let want = version(qemu)?;
        let got = version(&tmp).context("the prelinked copy does not run")?;
        if got != want {
            bail!("the prelinked copy says {got:?}, the original {want:?}");
        }
        fs::rename(&tmp, copy).with_context(|| format!("renaming to {}", copy.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `.tmp-NAME-PID` files of copy `name` that no live process is
/// writing: made by another pid that is gone, or older than an hour (a
/// pid may be reused). Called with the copy's lock held, so no live maker
/// of this copy exists but us; the pid check is for the case where the
/// lock could not be taken.
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let prefix = format!(".tmp-{name}-");
    for e in rd.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = pid != std::process::id() as i32
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH);
        if gone || older_than_an_hour(&e) {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn older_than_an_hour(e: &fs::DirEntry) -> bool {
    e.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 3600)
}

/// What `qemu -version` prints (its first line).
fn version(qemu: &Path) -> Result<String> {
    let o = Command::new(qemu)
        .arg("-version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {} -version", qemu.display()))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().next().unwrap_or_default().to_string();
    if !o.status.success() || line.is_empty() {
        bail!("{} -version failed ({})", qemu.display(), o.status);
    }
    Ok(line)
}

/// Removes the copies of earlier versions of the same qemu, and copies
/// left half-written an hour ago or more by a killed xroot.
fn prune(dir: &Path, qemu: &Path, keep: &str) {
    let Some(file) = qemu.file_name().and_then(|f| f.to_str()) else {
        return;
    };
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(".tmp-") {
            if older_than_an_hour(&e) {
                let _ = fs::remove_file(e.path());
            }
            continue;
        }
        // NAME and NAME.unusable, NAME = FILE.<16 hex digits>.
        let Some(rest) = name.strip_prefix(file).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let base = |n: &'_ str| {
            let n = n.strip_suffix(".unusable").unwrap_or(n);
            n.strip_suffix(".seal").unwrap_or(n).to_string()
        };
        let digest = base(rest);
        let ours = base(name) == keep;
        if !ours && digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        bail!("getrandom failed: {}", std::io::Error::last_os_error());
    }
    Ok(u64::from_le_bytes(b))
}
