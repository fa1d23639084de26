//! `xroot fetch`.

use anyhow::Result;

use super::Ctx;
use crate::cli::{FetchArgs, SourceArgs};
use crate::error::hinted;
use crate::extract::Limits;
use crate::fetch::{self, Request};
use crate::specs::Spec;
use crate::store::{Installed, RootfsId};

/// `xroot fetch ARCH...`: several arches download in parallel, one thread
/// each (network-bound; extraction of one overlaps the download of others).
pub fn fetch_all(ctx: &Ctx, a: FetchArgs) -> Result<()> {
    if a.arches.len() > 1 && (a.name.is_some() || a.from.is_some()) {
        return Err(hinted(
            "--name and --from apply to one rootfs",
            "fetch one arch at a time with --name/--from",
        ));
    }
    // Resolve every name first: a typo fails before any download starts.
    let mut jobs = Vec::new();
    for arch in &a.arches {
        let (arch, mut name) = RootfsId::parse(arch)?;
        if let Some(n) = &a.name {
            crate::store::validate_name(n)?;
            if name.as_ref().is_some_and(|x| x != n) {
                return Err(hinted(
                    format!(
                        "{arch}@{} and --name {n} disagree",
                        name.unwrap_or_default()
                    ),
                    "give the name once, as ARCH@NAME or --name",
                ));
            }
            name = Some(n.clone());
        }
        let spec = ctx.catalog.resolve(&arch)?;
        let mut req = request(
            RootfsId {
                arch: spec.name.clone(),
                name,
            },
            &a.source,
        )?;
        req.force = a.force;
        req.from = a.from.as_deref().map(absolutize);
        req.sha256 = a.sha256.clone();
        jobs.push((spec, req));
    }
    let ui = if jobs.len() > 1 {
        crate::ui::Ui {
            tty: false,
            ..ctx.ui
        }
    } else {
        ctx.ui
    };
    let results: Vec<Result<Installed>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(spec, req)| {
                s.spawn(move || fetch::fetch(&ctx.store, &ctx.catalog, spec, req, ui))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a fetch thread panicked")))
            })
            .collect()
    });
    let mut errors = Vec::new();
    for ((spec, req), r) in jobs.iter().zip(results) {
        match r {
            // Make sure it can run, now rather than at the first `run`.
            Ok(_) => super::binfmt::prepare(ctx, spec, a.binfmt.binfmt, a.binfmt.qemu.as_deref())
                .map(|_| ())?,
            Err(e) if jobs.len() == 1 => return Err(e),
            Err(e) => {
                ctx.ui.warn(format!("{}: {e:#}", req.id));
                errors.push(req.id.to_string());
            }
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("fetching {} failed (see above)", errors.join(", "));
    }
    Ok(())
}

/// A fetch request from the shared source options.
pub fn request(id: RootfsId, s: &SourceArgs) -> Result<Request> {
    Ok(Request {
        id,
        branch: s.branch.clone(),
        mirror: fetch::mirror_from(s.mirror.as_deref()),
        from: None,
        sha256: None,
        force: false,
        limits: limits(s.max_size)?,
    })
}

/// Extraction limits from `--max-size` or `$XROOT_MAX_UNPACKED`.
pub fn limits(max_size: Option<u64>) -> Result<Limits> {
    let mut l = Limits::default();
    let env = std::env::var("XROOT_MAX_UNPACKED").ok();
    if let Some(v) = max_size.or(match env {
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            hinted(
                format!("XROOT_MAX_UNPACKED={s:?} is not a number of bytes"),
                "set it to e.g. 8589934592",
            )
        })?),
        None => None,
    }) {
        l.max_bytes = v;
    }
    Ok(l)
}

/// A relative `--from` path is relative to where the user is.
fn absolutize(from: &str) -> String {
    match crate::fetch::transport::local_path(from) {
        Some(p) if p.is_relative() && !from.starts_with("file://") => std::env::current_dir()
            .map(|d| d.join(p).display().to_string())
            .unwrap_or_else(|_| from.to_string()),
        _ => from.to_string(),
    }
}

/// Installs `id` if missing (used by `run` and `shell`).
pub fn ensure(ctx: &Ctx, spec: &Spec, id: &RootfsId, s: &SourceArgs) -> Result<Installed> {
    if let Some(i) = ctx.store.get(id)? {
        return Ok(i);
    }
    if id.name.is_some() {
        return Err(hinted(
            format!("{id} is not installed"),
            format!("install it first: xroot fetch {id} --from URL|FILE (or --branch BRANCH)"),
        ));
    }
    ctx.ui
        .info(format!("{id} is not installed; fetching it first"));
    fetch::fetch(
        &ctx.store,
        &ctx.catalog,
        spec,
        &request(id.clone(), s)?,
        ctx.ui,
    )
}
