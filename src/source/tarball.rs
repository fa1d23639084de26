//! The plain tarball provider: a `.tar[.gz|.xz|.zst]` by URL or path
//! (`--from`, or a spec's pinned URL), and the streaming unpacker the
//! Alpine release provider uses too.
//!
//! Download, verification and extraction are one pass: `stream::Tee`
//! hashes (sha256, sha512) and copies to the cache while the decompressor
//! feeds `extract`. The hashes are compared after the stream ends; a
//! mismatch fails the install, which removes the staging tree.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{InstallCx, Origin, Populated, Provider, Request};
use crate::error::hinted;
use crate::extract;
use crate::fetch::{stream, transport};
use crate::specs::{Source, Spec};

/// A tarball and what it must hash to.
#[derive(Debug, Clone)]
pub struct Tarball {
    pub url: String,
    /// Its file name, for the cache.
    pub file: String,
    pub sha256: Option<String>,
    pub sha512: Option<String>,
    /// Recorded in the manifest (kind, branch, version, mirror); `source`
    /// and `sha256` are filled in from the download.
    pub origin: Origin,
}

impl Tarball {
    /// `--from URL|FILE [--sha256 HEX]`.
    pub fn from_arg(from: &str, req: &Request) -> Result<Tarball> {
        let sha256 = req
            .sha256
            .as_ref()
            .map(|h| normalize_hex(h, 64, "--sha256"))
            .transpose()?;
        Ok(Tarball {
            url: from.to_string(),
            file: file_name(from),
            sha256,
            sha512: None,
            origin: Origin {
                kind: "tarball".into(),
                ..Origin::default()
            },
        })
    }

    /// A spec's `kind = "tarball"` source (checksum pinned or read from
    /// `sha256_url` in [`populate`](Provider::populate)).
    pub fn from_spec(spec: &Spec) -> Result<Tarball> {
        let Source::Tarball {
            url,
            sha256,
            version,
            ..
        } = &spec.source
        else {
            bail!("internal error: {} has no tarball source", spec.name);
        };
        Ok(Tarball {
            url: url.clone(),
            file: file_name(url),
            sha256: sha256
                .as_ref()
                .map(|h| normalize_hex(h, 64, "spec sha256"))
                .transpose()?,
            sha512: None,
            origin: Origin {
                kind: "tarball".into(),
                version: version.clone().unwrap_or_default(),
                ..Origin::default()
            },
        })
    }
}

fn file_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .filter(|f| !f.is_empty())
        .unwrap_or("rootfs.tar")
        .to_string()
}

impl Provider for Tarball {
    fn kind(&self) -> &'static str {
        "tarball"
    }

    fn populate(&self, cx: &InstallCx, root: &Path) -> Result<Populated> {
        let mut plan = self.clone();
        if plan.sha256.is_none() {
            if let Source::Tarball {
                sha256_url: Some(u),
                ..
            } = &cx.spec.source
            {
                if cx.req.from.is_none() {
                    let text = cx.transport.get_text(u, 1 << 20)?;
                    plan.sha256 = Some(
                        crate::mirror::parse_checksum_file(&text, &plan.file, 64)
                            .with_context(|| format!("reading {u}"))?,
                    );
                }
            }
        }
        if plan.sha256.is_none() {
            if cx.req.from.is_none() {
                bail!(
                    "spec {} has a tarball source without a checksum",
                    cx.spec.name
                );
            }
            cx.ui.warn(format!(
                "no --sha256 given: {} is installed unverified",
                plan.url
            ));
        }
        unpack(cx, &plan, root)
    }
}

pub(super) fn normalize_hex(h: &str, len: usize, what: &str) -> Result<String> {
    crate::mirror::check_hex(h, len).map_err(|_| {
        hinted(
            format!("{what} {h:?} is not a {len}-digit hex digest"),
            "pass the sha256 as printed by `sha256sum FILE`",
        )
    })?;
    Ok(h.to_ascii_lowercase())
}

/// Downloads (or reads) `plan.url`, hashing it, keeping a copy for the
/// cache and unpacking it into `root` in one pass; then checks the hashes.
pub(super) fn unpack(cx: &InstallCx, plan: &Tarball, root: &Path) -> Result<Populated> {
    let (t, ui, req) = (cx.transport, cx.ui, cx.req);
    let remote = transport::local_path(&plan.url).is_none();
    // The download is written inside the staging dir, never as a partial
    // file in cache/: every way this can end early (an error below, a
    // SIGKILL) then removes it with the staging dir (by the pipeline on
    // error, by `Store::staging`'s stale-dir cleanup after a kill), and
    // cache/ only ever holds tarballs that were verified.
    let cache_part = cx.staging.join("download.part");
    let cache_final = cx.store.cache_dir().join(&plan.file);
    let copy = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&cache_part)
        .ok();

    if remote {
        ui.info(format!("downloading {}", plan.url));
    } else {
        ui.info(format!("reading {}", plan.url));
    }
    let warner = ui.warner();
    let w = warner.clone();
    let body = t.get_download(&plan.url, cx.attempts, Box::new(move |m| w.warn(m)))?;
    let bar = ui.bar(body.len, "fetch");
    bar.attach(&warner);
    // A body may not run past its declared size by much; an undeclared one
    // is capped at the unpack limit (compressed data is smaller than that).
    let raw_limit = body.len.map(|l| l + 1).unwrap_or(req.limits.max_bytes);
    let mut tee = stream::Tee::new(body.reader, plan.sha512.is_some(), copy, raw_limit, &bar);
    let chown = nix::unistd::geteuid().is_root();
    let opts = extract::Options {
        limits: req.limits,
        chown,
        ..Default::default()
    };
    let cleanup = || {
        let _ = fs::remove_file(&cache_part);
    };
    let unpacked = {
        let mut buf = stream::buffered(&mut tee);
        let r = match stream::decompress(&mut buf) {
            Ok(Ok(reader)) => Some(extract::unpack(reader, root, &opts, &mut |_| {})),
            Ok(Err(kind)) => {
                cleanup();
                bail!(hinted(
                    format!(
                        "{} is {kind}-compressed, which this xroot build does not unpack",
                        plan.url
                    ),
                    "recompress it as .tar.gz: `{kind} -dc FILE | gzip > FILE.tar.gz`"
                ));
            }
            Err(_) => None, // a read error; reported below from tee.source_error
        };
        r
    };
    // Hash everything, even after an extraction error: a checksum mismatch
    // is the more useful message when the file is simply not the right one.
    // After an error, though, only up to DRAIN_AFTER_ERROR more: a hostile
    // server sending an endless body must not make us download it up to
    // the size limit (8 GiB by default) just to hash it. A body cut short
    // this way has no meaningful checksum: the extraction error is reported.
    let hashed_all = match &unpacked {
        Some(Ok(_)) => tee.drain().is_ok(),
        _ => tee.drain_at_most(DRAIN_AFTER_ERROR).unwrap_or(false),
    };
    bar.finish();
    let source_error = tee.source_error.take();
    let copy_ok = tee.copy_error.is_none();
    let bytes = tee.bytes;
    let (sha256, sha512) = tee.finish();
    if let Some(e) = source_error {
        cleanup();
        let declared = body.len.map(|l| format!(" of {l}")).unwrap_or_default();
        let tries = match cx.attempts.used() {
            1 => String::new(),
            n => format!(" (after {n} attempts)"),
        };
        let cause = format!(
            "download of {} failed after {bytes}{declared} bytes: {e}{tries}",
            plan.url
        );
        let hint = "try again; nothing was installed";
        // A cut download is worth starting again; a local file is not.
        bail!(if remote {
            crate::error::hinted_retryable(cause, hint)
        } else {
            hinted(cause, hint)
        });
    }
    if !hashed_all && matches!(unpacked, Some(Ok(_))) {
        // Unreachable in practice (a failed drain is a source error, reported
        // above), but a tree whose download was not hashed whole never installs.
        cleanup();
        bail!(
            "reading {} did not reach its end; nothing was installed",
            plan.url
        );
    }
    if let Some(expected) = plan.sha256.as_ref().filter(|_| hashed_all) {
        if &sha256 != expected {
            cleanup();
            bail!(hinted(
                format!("sha256 mismatch for {}: expected {expected}, got {sha256}", plan.url),
                "the download is corrupt or was tampered with; nothing was installed. Try again or use another mirror",
            ));
        }
    }
    if let (Some(expected), Some(actual), true) = (&plan.sha512, &sha512, hashed_all) {
        if expected != actual {
            cleanup();
            bail!(hinted(
                format!(
                    "sha512 mismatch for {}: expected {expected}, got {actual}",
                    plan.url
                ),
                "the download is corrupt or was tampered with; nothing was installed"
            ));
        }
    }
    let report = match unpacked {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            cleanup();
            return Err(hinted(
                format!("unpacking {}: {e}", plan.url),
                extract_hint(&e, &cx.store.home),
            ));
        }
        None => {
            cleanup();
            bail!("reading {} failed", plan.url);
        }
    };
    if !copy_ok {
        cleanup();
    }
    Ok(Populated {
        origin: Origin {
            source: plan.url.clone(),
            sha256,
            ..plan.origin.clone()
        },
        report,
        keep: copy_ok.then(|| (cache_part.clone(), cache_final)),
    })
}

/// How much more of a download is read and hashed once its extraction has
/// failed (see `unpack`). Real rootfs tarballs are a few MiB.
const DRAIN_AFTER_ERROR: u64 = 16 << 20;

fn extract_hint(e: &extract::ExtractError, home: &Path) -> String {
    let s = e.to_string();
    let full = match e {
        extract::ExtractError::Io { err, .. } | extract::ExtractError::Corrupt { err, .. } => {
            crate::error::io_disk_full(err)
        }
        _ => false,
    };
    if full {
        // Not the archive's fault: the archive verified, the disk said no.
        format!(
            "disk full at {}: free some space (df -h {0}) and fetch again; nothing was installed",
            home.display()
        )
    } else if s.contains("limit") {
        "raise the limit with --max-size BYTES (or XROOT_MAX_UNPACKED) if this archive is legitimate".into()
    } else {
        "the archive is damaged or hostile; nothing was installed".into()
    }
}
