//! `xroot reset ARCH[@NAME]`: back to the pristine release.
//!
//! A reset is a fetch of the tarball the rootfs was installed from, kept
//! in the cache and verified again against the sha256 in the manifest: it
//! goes through the same verify → unpack → check → atomic swap as `fetch`
//! (so a failed reset leaves the installed tree as it was), and records the
//! same origin (branch, version, source, mirror). Packages added with
//! `--packages` are not added again: pristine means as published.

use std::fs::File;
use std::io;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::error::hinted;
use crate::fetch::{self, Origin, Request};
use crate::store::{Manifest, RootfsId};

pub fn reset(ctx: &Ctx, target: &str) -> Result<()> {
    let (arch, name) = RootfsId::parse(target)?;
    let spec = ctx.catalog.resolve(&arch)?;
    let id = RootfsId {
        arch: spec.name.clone(),
        name,
    };
    let not_installed = || {
        hinted(
            format!("{id} is not installed"),
            format!("install it with `xroot fetch {id}`; see `xroot list` for what is installed"),
        )
    };
    if ctx.store.get(&id)?.is_none() {
        return Err(not_installed());
    }
    // Exclusive, without waiting: a running guest holds the shared lock,
    // and pulling its root from under it is never what anyone wants.
    let Some(lock) = ctx.store.lock(&id, true, false)? else {
        return Err(hinted(
            format!("{id} is in use by a running xroot guest (or another xroot is changing it)"),
            format!("exit the guest(s) first, then run `xroot reset {id}` again"),
        ));
    };
    // Read again under the lock: it may have changed while we took it.
    let installed = ctx.store.get(&id)?.ok_or_else(not_installed)?;
    let m = &installed.manifest;
    if m.tarball.is_none() && (m.source.ends_with("/InRelease") || m.source.ends_with("/Release")) {
        return Err(hinted(
            format!("{id} was bootstrapped from a Debian archive; there is no release tarball to reset to"),
            format!("bootstrap it again: xroot fetch {id} --force --source debian (add your --suite/--packages)"),
        ));
    }
    let from = source(ctx, &id, m)?;
    let req = Request {
        id: id.clone(),
        branch: None,
        mirror: m.mirror.clone(),
        from: Some(from),
        sha256: Some(m.sha256.clone()),
        force: true,
        limits: super::fetch::limits(None)?,
        packages: Vec::new(),
        record_as: Some(Origin {
            branch: m.branch.clone(),
            version: m.version.clone(),
            source: m.source.clone(),
            mirror: m.mirror.clone(),
        }),
        debian: None,
    };
    fetch::install_locked(&ctx.store, &lock, &ctx.catalog, spec, &req, ctx.ui, None)?;
    ctx.ui.info(format!("reset {id} to its pristine release"));
    Ok(())
}

/// Where to read the release from: the cached tarball if it is still the
/// one recorded (no download), else its original source. The chosen file
/// is verified again while it is unpacked either way.
fn source(ctx: &Ctx, id: &RootfsId, m: &Manifest) -> Result<String> {
    if let Some(cached) = &m.tarball {
        match sha256_of(cached) {
            Ok(h) if h == m.sha256 => return Ok(cached.display().to_string()),
            Ok(h) => ctx.ui.warn(format!(
                "the cached {} no longer matches {id}'s sha256 ({h}, recorded {}); fetching {} again",
                cached.display(),
                m.sha256,
                m.source
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => ctx.ui.info(format!(
                "{} is no longer cached; fetching {} again",
                cached.display(),
                m.source
            )),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", cached.display()));
            }
        }
    }
    if m.source.is_empty() {
        return Err(hinted(
            format!("{id} has no recorded source to reset from"),
            format!("fetch it again: xroot fetch {id} --force"),
        ));
    }
    if let Some(p) = fetch::transport::local_path(&m.source) {
        if !p.exists() {
            return Err(hinted(
                format!(
                    "cannot reset {id}: its tarball is not cached and its source {} is gone",
                    p.display()
                ),
                format!("install it again: xroot fetch {id} --force --from FILE"),
            ));
        }
    }
    Ok(m.source.clone())
}

fn sha256_of(p: &Path) -> io::Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(crate::fetch::stream::hex(&h.finalize()))
}
