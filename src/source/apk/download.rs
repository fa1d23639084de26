//! Getting the packages: four downloads at a time with one progress bar,
//! each verified against the index ([`package::verify`]) and kept in the
//! store's `cache/apk/`, named by its checksum, so a second bootstrap, a
//! `reset` or a `--packages` downloads nothing it already has (a cached
//! file is verified again at every use).

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use super::index::Package;
use super::package::{self, Apk};
use super::Env;
use crate::error::hinted;

/// Downloads (or takes from the cache) and verifies every package, four
/// at a time, with one progress bar. Verified packages are kept in the
/// store's `cache/apk/`, named by their checksum.
pub fn download(
    env: &Env,
    pkgs: &[&Package],
    repos: &[String],
    apk_arch: &str,
    allow_untrusted: bool,
) -> Result<Vec<Apk>> {
    let cache = env.store.cache_dir().join("apk");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let total: u64 = pkgs.iter().map(|p| p.size).sum();
    let bar = env.ui.bar(Some(total), "packages");
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Apk>>>> =
        Mutex::new((0..pkgs.len()).map(|_| None).collect());
    let fetched = AtomicUsize::new(0);
    let one = |p: &Package| -> Result<Apk> {
        // Name and version become a URL path and a file name in the cache.
        if [&p.name, &p.version]
            .iter()
            .any(|s| s.is_empty() || s.starts_with('.') || s.contains(['/', '\0', '?', '#']))
        {
            bail!(hinted(
                format!(
                    "the index names a package {:?} version {:?}, which is not a safe file name",
                    p.name, p.version
                ),
                "the repository is broken or hostile; nothing was installed",
            ));
        }
        let url = format!("{}/{apk_arch}/{}", repos[p.repo], p.file_name());
        let cached = cache.join(cache_name(p));
        if let Ok(bytes) = std::fs::read(&cached) {
            if let Ok(apk) = package::verify(p, bytes, &url, allow_untrusted) {
                bar.inc(p.size);
                return Ok(apk);
            }
        }
        let body = env.transport.get(&url)?;
        let mut bytes = Vec::with_capacity(p.size as usize);
        let mut r = body
            .reader
            .take(if p.size > 0 { p.size + 1 } else { 1 << 30 });
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = r
                .read(&mut buf)
                .with_context(|| format!("downloading {url}"))?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
            bar.inc(n as u64);
        }
        package::check_size(p, bytes.len())?;
        let apk = package::verify(p, bytes, &url, allow_untrusted)?;
        fetched.fetch_add(1, Ordering::Relaxed);
        let tmp = cache.join(format!(".{}.{}", cache_name(p), std::process::id()));
        if std::fs::write(&tmp, &apk.bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &cached);
        }
        let _ = std::fs::remove_file(&tmp);
        Ok(apk)
    };
    std::thread::scope(|s| {
        for _ in 0..4.min(pkgs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = pkgs.get(i) else { break };
                let r = one(p);
                let failed = r.is_err();
                if let Ok(mut v) = results.lock() {
                    v[i] = Some(r);
                }
                if failed {
                    // Stop handing out work: the install fails anyway.
                    next.store(pkgs.len(), Ordering::Relaxed);
                }
            });
        }
    });
    bar.finish();
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a download thread panicked"))?;
    let mut out = Vec::with_capacity(pkgs.len());
    for (p, r) in pkgs.iter().zip(results) {
        match r {
            Some(Ok(a)) => out.push(a),
            Some(Err(e)) => return Err(e),
            None => bail!("{}-{} was not downloaded", p.name, p.version),
        }
    }
    let n = fetched.load(Ordering::Relaxed);
    env.ui.info(format!(
        "{n} packages downloaded, {} from the cache",
        pkgs.len() - n
    ));
    Ok(out)
}

/// `name-version.<hex SHA-1 of the control stream>.apk`.
fn cache_name(p: &Package) -> String {
    use base64::Engine;
    let hex = p
        .checksum
        .strip_prefix("Q1")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| hex::encode(&b))
        .unwrap_or_else(|| "unverified".into());
    format!("{}-{}.{hex}.apk", p.name, p.version)
}
