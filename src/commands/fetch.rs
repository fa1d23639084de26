//! `xroot fetch`.

use anyhow::Result;

use super::Ctx;
use crate::cli::{FetchArgs, SourceArgs};
use crate::error::hinted;
use crate::extract::Limits;
use crate::fetch::{self, Request};
use crate::specs::Spec;
use crate::store::{Installed, RootfsId};

pub fn fetch(ctx: &Ctx, a: FetchArgs) -> Result<Installed> {
    let (arch, mut name) = RootfsId::parse(&a.arch)?;
    if let Some(n) = a.name {
        crate::store::validate_name(&n)?;
        if name.as_ref().is_some_and(|x| *x != n) {
            return Err(hinted(
                format!("{} and --name {n} disagree", a.arch),
                "give the name once, as ARCH@NAME or --name",
            ));
        }
        name = Some(n);
    }
    let spec = ctx.catalog.resolve(&arch)?;
    let id = RootfsId {
        arch: spec.name.clone(),
        name,
    };
    let mut req = request(id, &a.source)?;
    req.force = a.force;
    req.from = a.from.map(|f| absolutize(&f));
    req.sha256 = a.sha256;
    let installed = fetch::fetch(&ctx.store, &ctx.catalog, spec, &req, ctx.ui)?;
    // Make sure it can run, now rather than at the first `run`.
    super::binfmt::prepare(ctx, spec, a.binfmt.binfmt, a.binfmt.qemu.as_deref())?;
    Ok(installed)
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
