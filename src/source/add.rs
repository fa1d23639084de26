//! `--packages` on a tree that is already installed (`xroot fetch ARCH
//! --packages a,b` again, `xroot run ARCH --packages a,b -- cmd`): what is
//! missing is added in place with the native apk installer, under the
//! tree's exclusive lock; the manifest records the packages.
//!
//! Unlike an install, this is not atomic: everything is downloaded and
//! verified before the tree is touched, but a failure while unpacking or
//! in an install script leaves what was added so far (as `apk add` does).

use std::fs;

use anyhow::{Context, Result};

use super::{apk, GuestRun, Request};
use crate::error::hinted;
use crate::specs::{Source, Spec};
use crate::store::{Installed, Store};
use crate::ui::Ui;

/// The repositories `--packages` installs from: `--repo` if given, else
/// for an Alpine release the branch's `main` and `community` on the
/// mirror it came from, else the tree's own (`None`).
pub fn package_repos(req: &Request, kind: &str, mirror: &str, branch: &str) -> Option<Vec<String>> {
    if !req.repos.is_empty() {
        Some(req.repos.clone())
    } else if (kind == "alpine" || kind.is_empty()) && !mirror.is_empty() && !branch.is_empty() {
        Some(apk::alpine_repositories(mirror, branch))
    } else {
        None
    }
}

/// The key ring shipped for a spec's repositories.
pub fn keyring(spec: &Spec) -> &str {
    match &spec.source {
        Source::Alpine { .. } => "alpine",
        Source::Apk { keyring, .. } => keyring,
        _ => "",
    }
}

/// Adds `req.packages` that `installed` lacks. Returns the tree as it is
/// afterwards. Refused while a guest runs in it.
pub fn add_to_installed(
    store: &Store,
    spec: &Spec,
    installed: Installed,
    req: &Request,
    ui: Ui,
    guest: Option<GuestRun>,
) -> Result<Installed> {
    if req.packages.is_empty() {
        return Ok(installed);
    }
    let root = installed.root();
    let missing = apk::missing(&root, &req.packages)?;
    if missing.is_empty() {
        return Ok(installed);
    }
    let id = &installed.id;
    let Some(_lock) = store.lock(id, true, false)? else {
        return Err(hinted(
            format!("cannot add {} to {id}: a guest is running in it", missing.join(", ")),
            format!("exit the guest(s) first, or use another tree: xroot fetch {id}@NAME --packages ..."),
        ));
    };
    let m = &installed.manifest;
    // A release tree's /etc/apk/repositories names Alpine's CDN; once
    // packages were added, it names where they came from.
    let repos = if m.packages.is_empty() {
        package_repos(req, &m.kind, &m.mirror, &m.branch)
    } else {
        package_repos(req, "", "", "")
    };
    let cfg = crate::fetch::transport::Config::from_knobs();
    let transport = crate::fetch::transport::Transport::new(cfg);
    let env = apk::Env {
        store,
        transport: &transport,
        ui,
        limits: req.limits,
        guest,
    };
    ui.info(format!("adding {} to {id}", missing.join(", ")));
    let done = apk::add(
        &env,
        &root,
        &missing,
        repos.as_deref(),
        keyring(spec),
        &req.keys,
        req.allow_untrusted,
    )?;
    let mut manifest = m.clone();
    // Owners the unpacking could not apply, as at install time: made real
    // with subordinate ids, else recorded beside the tree.
    let owners = &done.report.owners;
    if !owners.is_empty() && !nix::unistd::geteuid().is_root() {
        match crate::userns::subordinate_map() {
            Some(map) => crate::store::apply_owners(&map, &root, owners)?,
            None => {
                let tsv = installed.dir.join("owners.tsv");
                let mut text = fs::read_to_string(&tsv).unwrap_or_else(|_| {
                    "# path\tuid\tgid\tmode (ownership and modes not applied on the host)\n".into()
                });
                for o in owners {
                    text.push_str(&format!(
                        "{}\t{}\t{}\t{:o}\n",
                        o.path.display(),
                        o.uid,
                        o.gid,
                        o.mode
                    ));
                }
                fs::write(&tsv, text).with_context(|| format!("writing {}", tsv.display()))?;
                manifest.owners_recorded = true;
            }
        }
    }
    for p in &req.packages {
        if !manifest.packages.contains(p) {
            manifest.packages.push(p.clone());
        }
    }
    let mf = installed.dir.join("manifest.toml");
    let tmp = installed.dir.join(".manifest.toml.new");
    fs::write(
        &tmp,
        toml::to_string(&manifest).context("encoding manifest")?,
    )
    .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &mf).with_context(|| format!("replacing {}", mf.display()))?;
    store
        .get(id)?
        .context("the rootfs vanished right after adding packages")
}
