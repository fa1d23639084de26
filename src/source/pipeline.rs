//! The install pipeline every [`Provider`] plugs into:
//!
//! 1. **lock**: the id's exclusive `flock` (concurrent fetches wait, then
//!    find it installed: one download);
//! 2. **acquire + populate**: the provider downloads and verifies its
//!    artifacts and fills `staging/root` (see [`Provider::populate`]);
//! 3. **arch check**: the tree's `/bin/sh` must be an ELF of the arch asked for;
//! 4. **owners**: applied in a user namespace, or recorded in `owners.tsv`;
//! 5. **packages** (`--packages`) and the caller's hook;
//! 6. **manifest**, then an **atomic commit** (`rename` of the staging dir).
//!
//! Any error removes the staging dir: the store is as it was before. A
//! download cut short that could not be resumed restarts the whole
//! install, within one budget of `XROOT_RETRIES` requests.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{apk, provider_for, GuestRun, InstallCx, Populated, Provider, Request};
use crate::error::hinted;
use crate::fetch::transport;
use crate::specs::{Catalog, Spec};
use crate::store::{self, Installed, Manifest, Store};
use crate::ui::Ui;

/// Installs the rootfs for `req` unless it is already there. `guest` runs
/// install scripts in the staging tree (see [`GuestRun`]).
pub fn fetch(
    store: &Store,
    catalog: &Catalog,
    spec: &Spec,
    req: &Request,
    ui: Ui,
    guest: Option<GuestRun>,
) -> Result<Installed> {
    // Fast path: already installed, no lock needed to see it.
    if !req.force {
        if let Some(i) = store.get(&req.id)? {
            same_source(&i, req)?;
            // (Missing `--packages` are the caller's: `add_to_installed`.)
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
            same_source(&i, req)?;
            ui.info(format!(
                "{} was installed meanwhile by another xroot",
                req.id
            ));
            return Ok(i);
        }
    }
    install_locked(store, &lock, catalog, spec, req, ui, guest)
}

/// Picks the provider, populates a staging tree with it and commits it,
/// replacing any installed tree. The caller holds the id's exclusive lock
/// (`_held`): `reset` takes it without waiting, `fetch` waits for it.
#[allow(clippy::too_many_arguments)]
pub fn install_locked(
    store: &Store,
    _held: &store::Lock,
    catalog: &Catalog,
    spec: &Spec,
    req: &Request,
    ui: Ui,
    guest: Option<GuestRun>,
) -> Result<Installed> {
    let provider = provider_for(spec, req, &store.cache_dir())?;
    if !provider.kind().starts_with("debian")
        && (req.suite.is_some() || req.keyring.is_some() || req.variant.is_some())
    {
        return Err(hinted(
            "--suite, --keyring and --variant apply to Debian sources",
            "add --source debian (or debian-ports)",
        ));
    }
    let cfg = transport::Config::from_knobs();
    let transport = transport::Transport::new(cfg.clone());
    // One budget for the whole install: connection retries, resumes of a
    // cut body (inside the transport) and restarts from zero (here).
    let attempts = transport::Attempts::new(&cfg);
    loop {
        let staging = store.staging(&req.id)?;
        let cx = InstallCx {
            store,
            catalog,
            spec,
            req,
            ui,
            transport: &transport,
            attempts: &attempts,
            staging: &staging,
            guest,
        };
        let result = install(&cx, provider.as_ref());
        let Err(e) = result else { return result };
        // Nothing half-done: the staging tree goes; the store is as before.
        let _ = store::remove_tree(&staging);
        // A download cut short that could not be resumed (the server does
        // not do ranges, or its reply did not continue the same file) is
        // tried again from the start, as a failed connection is.
        if crate::error::is_retryable(&e) {
            if let Some((n, delay)) = attempts.next() {
                ui.warn(format!("{e}; retrying ({n}/{})", attempts.max()));
                std::thread::sleep(delay);
                continue;
            }
        }
        return Err(e);
    }
}

/// An installed rootfs satisfies `--from X [--sha256 Y]` only if it came
/// from X (and has digest Y): exiting 0 without looking at them would let
/// the user believe X is what they now run.
fn same_source(i: &Installed, req: &Request) -> Result<()> {
    let Some(from) = &req.from else {
        return Ok(());
    };
    let m = &i.manifest;
    let other_file = &m.source != from;
    let other_digest = req
        .sha256
        .as_ref()
        .is_some_and(|h| !h.eq_ignore_ascii_case(&m.sha256));
    if !other_file && !other_digest {
        return Ok(());
    }
    let what = if other_file {
        format!("from {}", m.source)
    } else {
        format!("with sha256 {}", m.sha256)
    };
    Err(hinted(
        format!(
            "{} is already installed {what}; not replacing it with {from}",
            i.id
        ),
        format!(
            "replace it: xroot fetch {} --from {from} --force (or keep both: xroot fetch {}@NAME --from {from})",
            i.id, i.id.arch
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

/// Steps 2 to 6 for one staging directory.
fn install(cx: &InstallCx, provider: &dyn Provider) -> Result<Installed> {
    let (store, req, spec) = (cx.store, cx.req, cx.spec);
    let root = cx.staging.join("root");
    fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
    let Populated {
        origin,
        mut report,
        keep,
    } = provider.populate(cx, &root)?;
    let drop_keep = || {
        if let Some((part, _)) = &keep {
            let _ = fs::remove_file(part);
        }
    };
    check_arch(cx.catalog, spec, &root).inspect_err(|_| drop_keep())?;
    crate::rootfs::prepare_mountpoints(&root)?;
    // `--packages`: added natively to any apk-based tree (the apk
    // provider installed them with its world already).
    // (apk and Debian bootstraps installed them with their base system.)
    if !req.packages.is_empty() && !["apk", "debian", "debian-ports"].contains(&provider.kind()) {
        let added = add_packages(cx, &root, &origin).inspect_err(|_| drop_keep())?;
        report.entries += added.entries;
        report.bytes += added.bytes;
        report.skipped.extend(added.skipped);
        report.owners.extend(added.owners);
    }
    for (p, why) in report.skipped.iter().take(5) {
        cx.ui.info(format!("skipped {}: {why}", p.display()));
    }
    let owners_recorded = owners(&root, cx.staging, &report)?;
    let tarball = match &keep {
        Some((part, dest)) if fs::rename(part, dest).is_ok() => Some(dest.clone()),
        _ => {
            drop_keep();
            None
        }
    };
    let origin = req.record_as.clone().unwrap_or(super::Origin {
        kind: provider.kind().to_string(),
        ..origin
    });
    let keys = keep_keys(cx)?;
    let manifest = Manifest {
        arch: spec.name.clone(),
        name: req.id.name.clone(),
        kind: origin.kind,
        branch: origin.branch,
        version: origin.version,
        sha256: origin.sha256,
        source: origin.source,
        mirror: origin.mirror,
        repositories: origin.repositories,
        keys,
        allow_untrusted: req.allow_untrusted,
        installed_at: store::now_rfc3339(),
        tarball,
        owners_recorded,
        packages: req.packages.clone(),
        digest: origin.digest,
        platform: origin.platform,
    };
    let mf = cx.staging.join("manifest.toml");
    fs::write(
        &mf,
        toml::to_string(&manifest).context("encoding manifest")?,
    )
    .with_context(|| format!("writing {}", mf.display()))?;
    store.commit(&req.id, cx.staging)?;
    cx.ui.info(format!(
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

/// Adds `req.packages` to a freshly populated tree with the native apk
/// installer: from `--repo` if given, else, for an Alpine release, the
/// branch's `main` and `community` on the mirror it came from, else the
/// tree's own `/etc/apk/repositories`.
fn add_packages(
    cx: &InstallCx,
    root: &Path,
    origin: &super::Origin,
) -> Result<crate::extract::Report> {
    if !apk::is_apk_tree(root) {
        return Err(hinted(
            format!(
                "cannot add {} to {}: the rootfs is not apk-based (no /lib/apk/db/installed)",
                cx.req.packages.join(", "),
                cx.req.id
            ),
            "--packages installs apk packages; install others with the tree's own package manager via `xroot run`",
        ));
    }
    let repos = super::add::package_repos(cx.req, &origin.kind, &origin.mirror, &origin.branch);
    let keyring = super::add::keyring(cx.spec);
    let env = apk::Env::of(cx);
    cx.ui.info(format!(
        "adding {} to {}",
        cx.req.packages.join(", "),
        cx.req.id
    ));
    let done = apk::add(
        &env,
        root,
        &cx.req.packages,
        repos.as_deref(),
        keyring,
        &cx.req.keys,
        cx.req.allow_untrusted,
    )?;
    Ok(done.report)
}

/// Copies the `--key` files into `staging/keys/` (beside the manifest,
/// where no guest reaches) so `reset` trusts the same keys; their names.
fn keep_keys(cx: &InstallCx) -> Result<Vec<String>> {
    let mut names = Vec::new();
    if cx.req.keys.is_empty() {
        return Ok(names);
    }
    let dir = cx.staging.join("keys");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for k in &cx.req.keys {
        let key = apk::sign::read_key(k)?;
        if key.name.starts_with('.') || key.name.contains('/') {
            continue;
        }
        let p = dir.join(&key.name);
        fs::write(&p, &key.pem).with_context(|| format!("writing {}", p.display()))?;
        names.push(key.name);
    }
    Ok(names)
}

/// Rootless with subordinate ids: makes the archive's ownership real (in a
/// user namespace). Else the owners that could not be applied are written
/// to `owners.tsv` beside the tree. Returns whether they were recorded.
fn owners(root: &Path, staging: &Path, report: &crate::extract::Report) -> Result<bool> {
    if report.owners.is_empty() {
        return Ok(false);
    }
    // (Root applies owners while unpacking: what it reports is recorded.)
    if !nix::unistd::geteuid().is_root() {
        if let Some(map) = crate::userns::subordinate_map() {
            store::apply_owners(&map, root, &report.owners)?;
            return Ok(false);
        }
    }
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
    let p = staging.join("owners.tsv");
    fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(true)
}

/// Refuses a tree whose `/bin/busybox` or `/bin/sh` is not for `spec`.
pub fn check_arch(catalog: &Catalog, spec: &Spec, root: &Path) -> Result<()> {
    let Some((path, header)) = crate::rootfs::shell_header(root) else {
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
