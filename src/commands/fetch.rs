//! `xroot fetch`, including `--packages`: `apk add` run inside the
//! unpacked staging tree, before it is committed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Ctx;
use crate::cli::{BinfmtArgs, FetchArgs, SourceArgs};
use crate::error::hinted;
use crate::extract::Limits;
use crate::sandbox;
use crate::source::oci::ImageRef;
use crate::source::{self as fetch, Request};
use crate::specs::Spec;
use crate::store::{Installed, RootfsId};
use crate::userns::IdMap;

/// apk repositories when `--repo` is not given (newline- or
/// comma-separated URLs), for `--packages` and `--source apk`.
pub const ENV_APK_REPOSITORIES: &str = "XROOT_APK_REPOSITORIES";
/// `1`: the same as `--allow-untrusted`. For tests and local, unsigned
/// repositories only: it turns off the signature checks.
pub const ENV_APK_ALLOW_UNTRUSTED: &str = "XROOT_APK_ALLOW_UNTRUSTED";

/// `$XROOT_APK_REPOSITORIES` as a list (empty when unset).
fn env_repositories() -> Result<Vec<String>> {
    let Some(v) = std::env::var_os(ENV_APK_REPOSITORIES).filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let v = v.to_str().ok_or_else(|| {
        hinted(
            format!("{ENV_APK_REPOSITORIES} is not valid UTF-8"),
            "give repository URLs separated by commas or newlines",
        )
    })?;
    Ok(v.split([',', '\n'])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.trim_end_matches('/').to_string())
        .collect())
}

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
        // An image is installed as ARCH@NAME, named after it unless told.
        let image = a.from.as_deref().map(image_ref).transpose()?.flatten();
        if image.is_some() && a.sha256.is_some() {
            return Err(hinted(
                "--sha256 is for tarballs; an image is verified by its digests",
                "pin the image instead: --from docker://NAME@sha256:DIGEST",
            ));
        }
        if let (None, Some(image)) = (&name, &image) {
            name = Some(image.default_name());
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
        req.from = match &image {
            Some(i) => Some(i.to_string()),
            None => a.from.as_deref().map(absolutize),
        };
        req.sha256 = a.sha256.clone();
        req.packages = packages(&a.packages)?;
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
    let binfmt = &a.binfmt;
    let one = |spec: &Spec, req: &Request| {
        let g = |root: &Path, argv: &[String]| guest_run(ctx, spec, binfmt, root, argv);
        let installed = fetch::fetch(&ctx.store, &ctx.catalog, spec, req, ui, Some(&g))?;
        // Already installed without some of --packages: added in place.
        fetch::add_to_installed(&ctx.store, spec, installed, req, ui, Some(&g))
    };
    // Install scripts run in a sandbox, whose clone(2) is only safe in a
    // single-threaded process (see `userns::spawn`): whatever may run
    // them is fetched one at a time.
    // (apk and Debian bootstraps run scripts in the guest.)
    let scripts = jobs.iter().any(|(spec, req)| {
        let kind = match (&req.source, &req.from) {
            (Some(k), _) => k.as_str(),
            (None, None) => spec.source.kind(),
            (None, Some(_)) => "tarball",
        };
        !req.packages.is_empty() || ["apk", "debian", "debian-ports"].contains(&kind)
    });
    let results: Vec<Result<Installed>> = if !scripts {
        std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(spec, req)| s.spawn(move || one(spec, req)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a fetch thread panicked")))
                })
                .collect()
        })
    } else {
        jobs.iter().map(|(spec, req)| one(spec, req)).collect()
    };
    let mut errors = Vec::new();
    for ((spec, req), r) in jobs.iter().zip(results) {
        match r {
            // Make sure it can run, now rather than at the first `run`.
            Ok(_) => {
                super::binfmt::prepare(ctx, spec, a.binfmt.binfmt, a.binfmt.qemu.as_deref(), false)
                    .map(|_| ())?
            }
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
    if let Some(k) = &s.source {
        if !fetch::KINDS.contains(&k.as_str()) {
            return Err(hinted(
                format!("unknown source kind {k:?}"),
                format!("--source takes one of: {}", fetch::KINDS.join(", ")),
            ));
        }
    }
    let mut r = Request::new(id, fetch::mirror_from(s.mirror.as_deref()), limits()?);
    r.source = s.source.clone();
    r.suite = s.suite.clone();
    r.keyring = s
        .keyring
        .as_deref()
        .map(|p| PathBuf::from(absolutize(&p.display().to_string())));
    r.variant = s.variant.clone();
    r.debian_mirror = s.mirror.clone().filter(|m| !m.is_empty());
    r.branch = s.branch.clone();
    r.repos = s.repos.clone();
    r.keys = s
        .keys
        .iter()
        .map(|k| PathBuf::from(absolutize(&k.display().to_string())))
        .collect();
    r.allow_untrusted =
        s.allow_untrusted || std::env::var(ENV_APK_ALLOW_UNTRUSTED).is_ok_and(|v| v == "1");
    if r.repos.is_empty() {
        r.repos = env_repositories()?;
    }
    Ok(r)
}

/// Extraction limits from `--max-size` / `XROOT_MAX_UNPACKED` (see `knobs`).
pub fn limits() -> Result<Limits> {
    Ok(Limits {
        max_bytes: crate::knobs::get().max_unpacked,
        ..Limits::default()
    })
}

/// `--from` as an image reference (`docker://`, `oci:`, ...), with a
/// relative path made absolute; `None` for a tarball.
fn image_ref(from: &str) -> Result<Option<ImageRef>> {
    if !crate::source::oci::is_image(from) {
        return Ok(None);
    }
    let mut r = ImageRef::parse(from).map_err(|e| {
        hinted(
            format!("--from {from}: {e}"),
            "write docker://[HOST/]NAME[:TAG][@sha256:HEX], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE",
        )
    })?;
    let cwd = std::env::current_dir().context("finding the current directory")?;
    match &mut r {
        ImageRef::OciDir { dir: p, .. }
        | ImageRef::OciArchive { file: p, .. }
        | ImageRef::DockerArchive { file: p } => *p = cwd.join(&*p),
        ImageRef::Registry(_) => {}
    }
    Ok(Some(r))
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
pub fn ensure(
    ctx: &Ctx,
    spec: &Spec,
    id: &RootfsId,
    s: &SourceArgs,
    b: &BinfmtArgs,
) -> Result<Installed> {
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
    let g = |root: &Path, argv: &[String]| guest_run(ctx, spec, b, root, argv);
    fetch::fetch(
        &ctx.store,
        &ctx.catalog,
        spec,
        &request(id.clone(), s)?,
        ctx.ui,
        Some(&g),
    )
}

/// `xroot run ARCH --packages a,b`: installs the tree if needed, then adds
/// what it lacks of `packages` (nothing is fetched when it has them all).
pub fn ensure_with(
    ctx: &Ctx,
    spec: &Spec,
    id: &RootfsId,
    s: &SourceArgs,
    b: &BinfmtArgs,
    packages: &[String],
) -> Result<Installed> {
    let installed = ensure(ctx, spec, id, s, b)?;
    if packages.is_empty() {
        return Ok(installed);
    }
    let mut req = request(id.clone(), s)?;
    req.packages = self::packages(packages)?;
    let g = |root: &Path, argv: &[String]| guest_run(ctx, spec, b, root, argv);
    fetch::add_to_installed(&ctx.store, spec, installed, &req, ctx.ui, Some(&g))
}

/// Checks `--packages` names: each becomes one argument of `apk add`, so
/// it must be a single word that apk cannot take for an option.
fn packages(list: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in list.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        if p.starts_with('-') || p.chars().any(|c| c.is_whitespace() || c == '\0') {
            return Err(hinted(
                format!("--packages: {p:?} is not a package name"),
                "list Alpine package names separated by commas, e.g. --packages gcc,musl-dev",
            ));
        }
        if !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    Ok(out)
}

/// Runs `argv` in the staging tree `root` through the sandbox, as a guest
/// of its own under the arch's emulator (for install scripts); returns its
/// exit status. Its output goes to stderr: `xroot fetch` prints nothing
/// on stdout.
pub fn guest_run(
    ctx: &Ctx,
    spec: &Spec,
    b: &BinfmtArgs,
    root: &Path,
    argv: &[String],
) -> Result<i32> {
    let prepared = super::binfmt::prepare(ctx, spec, b.binfmt, b.qemu.as_deref(), false)?;
    // Install scripts run in the staging tree, which is discarded or
    // committed whole: no mount-point journal. They are guest code: a
    // terminal of their own if the caller has one.
    let plan = sandbox::Builder::new(
        root,
        super::run::cstrings(argv.iter().map(String::as_str))?,
        IdMap::for_caller(),
    )
    .hostname(format!("xroot-{}", spec.name))
    .binfmt(prepared.registrations, prepared.personality32)
    .terminal(sandbox::pty::Terminal::detect())
    .build()?;
    let status = sandbox::run(&plan);
    sandbox::restore_signals();
    status.with_context(|| format!("running {} in {}", argv.join(" "), root.display()))
}
