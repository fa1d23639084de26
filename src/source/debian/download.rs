//! Step 4 of the bootstrap: the `.deb`s, downloaded `WORKERS` at a time
//! into a content-addressed cache (`SHA256.deb`) shared by every arch and
//! run, each checked against the verified index's SHA256 and size, also
//! when it was cached already. A download goes to a `.part` file renamed
//! into place only once it verified, so the cache never holds a file that
//! did not match.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};

use super::packages;
use crate::error::hinted;
use crate::fetch::transport;
use crate::ui::Ui;

/// Parallel `.deb` downloads.
const WORKERS: usize = 4;

/// Cache file name: content-addressed, so arches and runs share it and
/// two packages can never collide.
pub fn cache_name(p: &packages::Package) -> String {
    format!("{}.deb", p.sha256)
}

pub fn cache_path(cache: &Path, p: &packages::Package) -> PathBuf {
    cache.join(cache_name(p))
}

/// Downloads what is not cached yet, `WORKERS` at a time, and checks every
/// file (cached or new) against the index.
pub fn download_all(
    t: &transport::Transport,
    mirror: &str,
    cache: &Path,
    pkgs: &[&packages::Package],
    ui: Ui,
) -> Result<()> {
    let total: u64 = pkgs.iter().map(|p| p.size).sum();
    let bar = ui.bar(Some(total), "packages");
    let next = AtomicUsize::new(0);
    let failed: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(pkgs.len()) {
            s.spawn(|| loop {
                if failed.lock().map(|f| !f.is_empty()).unwrap_or(true) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = pkgs.get(i) else { return };
                if let Err(e) = fetch_deb(t, mirror, cache, p, &bar) {
                    if let Ok(mut f) = failed.lock() {
                        f.push(e);
                    }
                    return;
                }
            });
        }
    });
    bar.finish();
    let mut failed = failed.into_inner().unwrap_or_default();
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.swap_remove(0)),
    }
}

fn fetch_deb(
    t: &transport::Transport,
    mirror: &str,
    cache: &Path,
    p: &packages::Package,
    bar: &crate::ui::Bar,
) -> Result<()> {
    let dest = cache_path(cache, p);
    if let Ok(f) = File::open(&dest) {
        let (n, h) =
            hash_reader(f, p.size + 1).with_context(|| format!("reading {}", dest.display()))?;
        if n == p.size && h == p.sha256 {
            bar.inc(p.size);
            return Ok(());
        }
        // A damaged cache entry is replaced, never trusted.
        let _ = fs::remove_file(&dest);
    }
    if p.filename.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(hinted(
            format!("package {} has a bad Filename {:?}", p.name, p.filename),
            "the index is hostile or damaged; nothing was installed",
        ));
    }
    let url = format!("{mirror}/{}", p.filename);
    let cfg = transport::Config::from_knobs();
    let attempts = transport::Attempts::new(&cfg);
    let body = t.get_download(&url, &attempts, Box::new(|_| {}))?;
    let part = cache.join(format!(
        "{}.part.{}.{:?}",
        p.sha256,
        std::process::id(),
        std::thread::current().id()
    ));
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&part)
        .with_context(|| format!("creating {}", part.display()))?;
    let mut hasher = Sha256::new();
    let mut reader = body.reader.take(p.size + 1);
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    let result = (|| -> Result<()> {
        loop {
            let k = reader
                .read(&mut buf)
                .map_err(|e| anyhow!("downloading {url}: {e}"))?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            out.write_all(&buf[..k])
                .with_context(|| format!("writing {}", part.display()))?;
            n += k as u64;
            bar.inc(k as u64);
        }
        let got = hex::encode(hasher.finalize_reset());
        if n != p.size || got != p.sha256 {
            return Err(hinted(
                format!(
                    "{url} does not match the verified index: expected sha256 {} ({} bytes), got {got} ({n} bytes)",
                    p.sha256, p.size
                ),
                "the download is corrupt or was tampered with; nothing was installed. Try again or another --mirror",
            ));
        }
        fs::rename(&part, &dest).with_context(|| format!("renaming into {}", dest.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result
}

fn hash_reader(mut r: impl Read, max: u64) -> std::io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 || n > max {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}
