//! `fetch`: resolve where a rootfs comes from, download it, verify it,
//! unpack it and install it into the store atomically.
//!
//! Order matters for the guarantees in docs/security.md:
//! 1. take the id's exclusive lock (concurrent fetches wait, then find it installed);
//! 2. resolve the source and cross-check the index against the `.sha256` file
//!    *before* downloading the tarball;
//! 3. stream: hash + cache copy + decompress + extract into a staging dir
//!    (a body cut short is resumed with a Range request when the server
//!    allows it, else the whole install is tried again);
//! 4. verify hashes (a mismatch removes the staging dir and the cache copy);
//! 5. check the tree really is of the arch asked for;
//! 6. write the manifest, then `rename` the staging dir into place.

mod resume;
pub mod stream;
pub mod transport;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::error::hinted;
use crate::extract;
use crate::specs::{Catalog, Source, Spec};
use crate::store::{self, Installed, Manifest, RootfsId, Store};
use crate::ui::Ui;

pub const DEFAULT_MIRROR: &str = "https://dl-cdn.alpinelinux.org/alpine";

/// Everything `fetch` needs to know.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: RootfsId,
    /// Release branch override (`--branch`).
    pub branch: Option<String>,
    /// Alpine mirror (already resolved from `--mirror`/`$XROOT_MIRROR`).
    pub mirror: String,
    /// Bring-your-own tarball (`--from`) and its checksum (`--sha256`).
    pub from: Option<String>,
    pub sha256: Option<String>,
    pub force: bool,
    pub limits: extract::Limits,
    /// Alpine packages to add before the commit (by the caller's
    /// [`PostExtract`] hook, which knows how to run the guest's `apk`);
    /// recorded in the manifest.
    pub packages: Vec<String>,
    /// Recorded as the tree's origin instead of where it is read from:
    /// `reset` reinstalls from the cached tarball but the rootfs still
    /// comes from the release it was first fetched from.
    pub record_as: Option<Origin>,
    /// Bootstrap from a Debian archive instead of unpacking a tarball.
    pub debian: Option<crate::source::debian::Options>,
}

/// Where a rootfs comes from, as recorded in its manifest.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub branch: String,
    pub version: String,
    pub source: String,
    pub mirror: String,
}

/// Runs on a verified, unpacked staging tree (its `root/`) just before the
/// commit, given the manifest about to be recorded. An error discards the
/// whole staging tree, so the store never holds a half-configured rootfs.
/// `Sync`: several arches are fetched in parallel threads.
pub type PostExtract<'a> = &'a (dyn Fn(&Path, &Manifest) -> Result<()> + Sync);

/// A resolved download.
#[derive(Debug, Clone)]
struct Plan {
    url: String,
    file: String,
    sha256: Option<String>,
    sha512: Option<String>,
    branch: String,
    version: String,
    mirror: String,
}

/// The mirror from `--mirror`, else `$XROOT_MIRROR`, else Alpine's CDN.
pub fn mirror_from(arg: Option<&str>) -> String {
    arg.map(str::to_string)
        .or_else(|| std::env::var("XROOT_MIRROR").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Installs the rootfs for `req` unless it is already there. `hook` runs
/// on the unpacked tree before it is committed (see [`PostExtract`]).
pub fn fetch(
    store: &Store,
    catalog: &Catalog,
    spec: &Spec,
    req: &Request,
    ui: Ui,
    hook: Option<PostExtract>,
) -> Result<Installed> {
    // Fast path: already installed, no lock needed to see it.
    if !req.force {
        if let Some(i) = store.get(&req.id)? {
            has_packages(&i, &req.packages)?;
            // A `fetch --force` killed mid-way left a staging dir: this
            // fetch stages nothing, so it cleans up instead.
            store.clean_stale_if_idle(&req.id);
            ui.info(format!(
                "{} is already installed ({}); use --force to fetch again",
                req.id,
                describe(&i.manifest)
            ));
            return Ok(i);
        }
    }
    store.create()?;
    // Waiting for the lock always ends with it held.
    let lock = store
        .lock(&req.id, true, true)?
        .with_context(|| format!("locking {}", req.id))?;
    // Another process may have installed it while we waited for the lock.
    if !req.force {
        if let Some(i) = store.get(&req.id)? {
            has_packages(&i, &req.packages)?;
            ui.info(format!(
                "{} was installed meanwhile by another xroot",
                req.id
            ));
            return Ok(i);
        }
    }
    install_locked(store, &lock, catalog, spec, req, ui, hook)
}

/// Resolves, downloads (or reads), verifies and unpacks `req` and commits
/// it, replacing any installed tree. The caller holds the id's exclusive
/// lock (`_held`): `reset` takes it without waiting, `fetch` waits for it.
pub fn install_locked(
    store: &Store,
    _held: &store::Lock,
    catalog: &Catalog,
    spec: &Spec,
    req: &Request,
    ui: Ui,
    hook: Option<PostExtract>,
) -> Result<Installed> {
    if !req.packages.is_empty() && hook.is_none() {
        bail!("internal error: packages requested without a way to install them");
    }
    if let Some(d) = &req.debian {
        return install_debian(store, catalog, spec, req, d, ui, hook);
    }
    let cfg = transport::Config::from_env();
    let transport = transport::Transport::new(cfg.clone());
    let plan = resolve(&transport, spec, req, ui)?;
    let remote = transport::local_path(&plan.url).is_none();
    // One budget for the whole download: connection retries, resumes of a
    // cut body (inside the transport) and restarts from zero (here).
    let attempts = transport::Attempts::new(&cfg);
    loop {
        let staging = store.staging(&req.id)?;
        let result = install(
            store, catalog, spec, req, &plan, &transport, &attempts, &staging, ui, hook,
        );
        let Err(e) = result else { return result };
        // Nothing half-done: the staging tree goes; the store is as before.
        let _ = store::remove_tree(&staging);
        // A download cut short that could not be resumed (the server does
        // not do ranges, or its reply did not continue the same file) is
        // tried again from the start, as a failed connection is.
        if remote && crate::error::is_retryable(&e) {
            if let Some((n, delay)) = attempts.next() {
                ui.warn(format!("{e}; retrying ({n}/{})", attempts.max()));
                std::thread::sleep(delay);
                continue;
            }
        }
        return Err(e);
    }
}

/// A Debian bootstrap (`source::debian`) into a fresh staging tree, then
/// the `hook` (its second stage), the manifest and the commit: on any
/// error the staging tree is deleted and nothing is installed.
fn install_debian(
    store: &Store,
    catalog: &Catalog,
    spec: &Spec,
    req: &Request,
    d: &crate::source::debian::Options,
    ui: Ui,
    hook: Option<PostExtract>,
) -> Result<Installed> {
    let staging = store.staging(&req.id)?;
    let result = (|| {
        let root = staging.join("root");
        fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        let p = crate::source::debian::populate(d, &root, ui)?;
        check_arch(catalog, spec, &root)?;
        prepare_mountpoints(&root)?;
        let manifest = Manifest {
            arch: spec.name.clone(),
            name: req.id.name.clone(),
            branch: p.suite,
            version: p.version,
            sha256: p.release_sha256,
            source: p.source,
            mirror: p.mirror,
            installed_at: store::now_rfc3339(),
            tarball: None,
            owners_recorded: false,
            packages: req.packages.clone(),
        };
        if let Some(hook) = hook {
            hook(&root, &manifest)?;
        }
        let mf = staging.join("manifest.toml");
        fs::write(
            &mf,
            toml::to_string(&manifest).context("encoding manifest")?,
        )
        .with_context(|| format!("writing {}", mf.display()))?;
        store.commit(&req.id, &staging)?;
        ui.info(format!(
            "installed {} ({} packages, {} files, {} MB) in {}",
            req.id,
            p.installed.len(),
            p.files,
            p.bytes / 1_000_000,
            store.path_of(&req.id).display()
        ));
        store
            .get(&req.id)?
            .context("the rootfs vanished right after installing it")
    })();
    if result.is_err() {
        let _ = store::remove_tree(&staging);
    }
    result
}

/// An installed rootfs satisfies a request for packages only if it has
/// them: silently skipping `--packages` would leave the user without them.
fn has_packages(i: &Installed, packages: &[String]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|p| !i.manifest.packages.contains(p))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(hinted(
        format!(
            "{} is already installed, without {}",
            i.id,
            missing.join(", ")
        ),
        format!(
            "reinstall it with them: xroot fetch {} --force --packages {} (or add them in place: xroot run {} -- apk add {})",
            i.id,
            packages.join(","),
            i.id,
            missing.join(" ")
        ),
    ))
}

fn describe(m: &Manifest) -> String {
    if m.version.is_empty() {
        m.source.clone()
    } else {
        format!("version {}", m.version)
    }
}

/// Finds the tarball URL and its expected checksums.
fn resolve(t: &transport::Transport, spec: &Spec, req: &Request, ui: Ui) -> Result<Plan> {
    if let Some(from) = &req.from {
        let sha256 = req
            .sha256
            .as_ref()
            .map(|h| normalize_hex(h, 64, "--sha256"))
            .transpose()?;
        if sha256.is_none() {
            ui.warn(format!("no --sha256 given: {from} is installed unverified"));
        }
        return Ok(Plan {
            url: from.clone(),
            file: from.rsplit('/').next().unwrap_or("rootfs.tar").to_string(),
            sha256,
            sha512: None,
            branch: String::new(),
            version: String::new(),
            mirror: String::new(),
        });
    }
    match &spec.source {
        Source::Alpine {
            alpine_arch,
            branch,
        } => {
            let branch = req.branch.clone().unwrap_or_else(|| branch.clone());
            let dir = format!("{}/{}/releases/{}", req.mirror, branch, alpine_arch);
            let index_url = format!("{dir}/latest-releases.yaml");
            ui.info(format!("resolving {index_url}"));
            let yaml = t.get_text(&index_url, 1 << 20)?;
            let rel = crate::mirror::pick_minirootfs(&yaml)
                .with_context(|| format!("reading {index_url}"))?;
            let url = format!("{dir}/{}", rel.file);
            let sha256 = rel.sha256.clone().unwrap_or_default().to_ascii_lowercase();
            // Cross-check the index with the checksum file beside the tarball.
            let sums_url = format!("{url}.sha256");
            match t.get_text_optional(&sums_url, 64 * 1024)? {
                Some(text) => {
                    let listed = crate::mirror::parse_checksum_file(&text, &rel.file, 64)
                        .with_context(|| format!("reading {sums_url}"))?;
                    if listed != sha256 {
                        bail!(hinted(
                            format!("checksum mismatch for {}: {index_url} says sha256 {sha256}, {sums_url} says {listed}", rel.file),
                            "the mirror is inconsistent or tampered with; try another --mirror",
                        ));
                    }
                }
                None => ui.warn(format!(
                    "{sums_url} is missing; verifying with the index's checksum alone"
                )),
            }
            Ok(Plan {
                url,
                file: rel.file.clone(),
                sha256: Some(sha256),
                sha512: rel.sha512.map(|s| s.to_ascii_lowercase()),
                branch: rel.branch.unwrap_or(branch),
                version: rel.version.unwrap_or_default(),
                mirror: req.mirror.clone(),
            })
        }
        Source::Tarball {
            url,
            sha256,
            sha256_url,
            version,
        } => {
            let file = url.rsplit('/').next().unwrap_or("rootfs.tar").to_string();
            let sha256 = match (sha256, sha256_url) {
                (Some(h), _) => normalize_hex(h, 64, "spec sha256")?,
                (None, Some(u)) => {
                    crate::mirror::parse_checksum_file(&t.get_text(u, 1 << 20)?, &file, 64)
                        .with_context(|| format!("reading {u}"))?
                }
                (None, None) => bail!("spec {} has a tarball source without a checksum", spec.name),
            };
            Ok(Plan {
                url: url.clone(),
                file,
                sha256: Some(sha256),
                sha512: None,
                branch: String::new(),
                version: version.clone().unwrap_or_default(),
                mirror: String::new(),
            })
        }
        Source::Debian { archive, .. } => Err(hinted(
            format!(
                "{} is bootstrapped from a Debian archive, not unpacked from a release tarball",
                spec.name
            ),
            format!("xroot fetch {} --source {archive}", spec.name),
        )),
        Source::None { hint } => Err(hinted(
            format!("there is no known rootfs source for {}", spec.name),
            hint.clone(),
        )),
    }
}

fn normalize_hex(h: &str, len: usize, what: &str) -> Result<String> {
    crate::mirror::check_hex(h, len).map_err(|_| {
        hinted(
            format!("{what} {h:?} is not a {len}-digit hex digest"),
            "pass the sha256 as printed by `sha256sum FILE`",
        )
    })?;
    Ok(h.to_ascii_lowercase())
}

#[allow(clippy::too_many_arguments)]
fn install(
    store: &Store,
    catalog: &Catalog,
    spec: &Spec,
    req: &Request,
    plan: &Plan,
    t: &transport::Transport,
    attempts: &transport::Attempts,
    staging: &Path,
    ui: Ui,
    hook: Option<PostExtract>,
) -> Result<Installed> {
    let root = staging.join("root");
    fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
    // The download is written inside the staging dir, never as a partial
    // file in cache/: every way this can end early (an error below, a
    // SIGKILL) then removes it with the staging dir (by `fetch` on error, by
    // `Store::staging`'s stale-dir cleanup after a kill), and cache/ only
    // ever holds tarballs that were verified.
    let cache_part = staging.join("download.part");
    let cache_final = store.cache_dir().join(&plan.file);
    let copy = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&cache_part)
        .ok();

    if transport::local_path(&plan.url).is_some() {
        ui.info(format!("reading {}", plan.url));
    } else {
        ui.info(format!("downloading {}", plan.url));
    }
    let warner = ui.warner();
    let w = warner.clone();
    let body = t.get_download(&plan.url, attempts, Box::new(move |m| w.warn(m)))?;
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
    let unpacked = {
        let mut buf = stream::buffered(&mut tee);
        let r = match stream::decompress(&mut buf) {
            Ok(Ok(reader)) => Some(extract::unpack(reader, &root, &opts, &mut |_| {})),
            Ok(Err(kind)) => {
                let _ = fs::remove_file(&cache_part);
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
    let cleanup = || {
        let _ = fs::remove_file(&cache_part);
    };
    if let Some(e) = source_error {
        cleanup();
        let declared = body.len.map(|l| format!(" of {l}")).unwrap_or_default();
        let tries = match attempts.used() {
            1 => String::new(),
            n => format!(" (after {n} attempts)"),
        };
        bail!(crate::error::hinted_retryable(
            format!(
                "download of {} failed after {bytes}{declared} bytes: {e}{tries}",
                plan.url
            ),
            "try again; nothing was installed"
        ));
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
                extract_hint(&e),
            ));
        }
        None => {
            cleanup();
            bail!("reading {} failed", plan.url);
        }
    };
    check_arch(catalog, spec, &root).inspect_err(|_| cleanup())?;
    prepare_mountpoints(&root)?;
    for (p, why) in report.skipped.iter().take(5) {
        ui.info(format!("skipped {}: {why}", p.display()));
    }
    // Rootless with subordinate ids: make ownership real (in a user namespace).
    let mut owners_recorded = !report.owners.is_empty();
    if owners_recorded && !chown {
        if let Some(map) = crate::userns::subordinate_map() {
            store::apply_owners(&map, &root, &report.owners)?;
            owners_recorded = false;
        }
    }
    if owners_recorded {
        let mut text =
            String::from("# path\tuid\tgid\tmode (ownership and modes not applied on the host)\n");
        for o in &report.owners {
            text.push_str(&format!(
                "{}\t{}\t{}\t{:o}\n",
                o.path.display(),
                o.uid,
                o.gid,
                o.mode
            ));
        }
        fs::write(staging.join("owners.tsv"), text)
            .with_context(|| format!("writing {}", staging.join("owners.tsv").display()))?;
    }
    let kept = copy_ok && fs::rename(&cache_part, &cache_final).is_ok();
    if !kept {
        cleanup();
    }
    let origin = req.record_as.clone().unwrap_or_else(|| Origin {
        branch: plan.branch.clone(),
        version: plan.version.clone(),
        source: plan.url.clone(),
        mirror: plan.mirror.clone(),
    });
    let manifest = Manifest {
        arch: spec.name.clone(),
        name: req.id.name.clone(),
        branch: origin.branch,
        version: origin.version,
        sha256,
        source: origin.source,
        mirror: origin.mirror,
        installed_at: store::now_rfc3339(),
        tarball: kept.then(|| cache_final.clone()),
        owners_recorded,
        packages: req.packages.clone(),
    };
    if let Some(hook) = hook {
        hook(&root, &manifest)?;
    }
    let mf = staging.join("manifest.toml");
    fs::write(
        &mf,
        toml::to_string(&manifest).context("encoding manifest")?,
    )
    .with_context(|| format!("writing {}", mf.display()))?;
    store.commit(&req.id, staging)?;
    ui.info(format!(
        "installed {} ({} files, {} MB) in {}",
        req.id,
        report.entries,
        report.bytes / 1_000_000,
        store.path_of(&req.id).display()
    ));
    store
        .get(&req.id)?
        .context("the rootfs vanished right after installing it")
}

/// How much more of a download is read and hashed once its extraction has
/// failed (see `install`). Real rootfs tarballs are a few MiB.
const DRAIN_AFTER_ERROR: u64 = 16 << 20;

fn extract_hint(e: &extract::ExtractError) -> String {
    let s = e.to_string();
    if s.contains("limit") {
        "raise the limit with --max-size BYTES (or XROOT_MAX_UNPACKED) if this archive is legitimate".into()
    } else {
        "the archive is damaged or hostile; nothing was installed".into()
    }
}

/// Refuses a tree whose `/bin/busybox` or `/bin/sh` is not for `spec`.
pub fn check_arch(catalog: &Catalog, spec: &Spec, root: &Path) -> Result<()> {
    let Some((path, header)) = shell_header(root) else {
        bail!(hinted(
            format!(
                "{} has no /bin/sh or /bin/busybox ELF binary",
                root.display()
            ),
            "this does not look like a Linux root filesystem"
        ));
    };
    check_header(catalog, spec, &path, &header)
}

/// Refuses an ELF header (of `path`, for messages) that is not for `spec`.
pub fn check_header(catalog: &Catalog, spec: &Spec, path: &Path, header: &[u8]) -> Result<()> {
    let matched = catalog.matching(header);
    if matched.iter().any(|s| s.qemu == spec.qemu) {
        return Ok(());
    }
    let found = matched
        .first()
        .map(|s| s.name.as_str())
        .unwrap_or("an unknown architecture");
    Err(hinted(
        format!("{} is for {found}, not {}", path.display(), spec.name),
        format!(
            "this rootfs is not a {} system; use it as `{found}`, or pick the right tarball",
            spec.name
        ),
    ))
}

/// Reads the ELF header of the tree's shell, resolving symlinks inside the
/// tree only (an absolute link target is taken relative to `root`).
pub fn shell_header(root: &Path) -> Option<(PathBuf, Vec<u8>)> {
    for start in ["bin/busybox", "bin/sh", "usr/bin/busybox", "bin/bash"] {
        let mut rel = PathBuf::from(start);
        for _ in 0..8 {
            let p = root.join(&rel);
            let Ok(meta) = fs::symlink_metadata(&p) else {
                break;
            };
            if meta.file_type().is_symlink() {
                let Ok(target) = fs::read_link(&p) else { break };
                rel = if target.is_absolute() {
                    target.strip_prefix("/").ok()?.to_path_buf()
                } else {
                    rel.parent().unwrap_or(Path::new("")).join(target)
                };
                if rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    break;
                }
                continue;
            }
            if meta.is_file() {
                let h = crate::elf::read_header(&p, 64).ok()?;
                if h.starts_with(b"\x7fELF") {
                    return Some((PathBuf::from("/").join(&rel), h));
                }
            }
            break;
        }
    }
    None
}

/// Creates what the sandbox mounts onto, so that entering the rootfs later
/// never has to change it: `/etc/resolv.conf` (Alpine's minirootfs has
/// none) and the `proc`, `sys`, `dev`, `tmp` directories.
fn prepare_mountpoints(root: &Path) -> Result<()> {
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        let p = root.join(d);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        }
    }
    let rc = root.join("etc/resolv.conf");
    if fs::symlink_metadata(&rc).is_err() {
        File::create(&rc).with_context(|| format!("creating {}", rc.display()))?;
    }
    Ok(())
}
