//! `xroot fetch`, including `--packages`: `apk add` run inside the
//! unpacked staging tree, before it is committed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Ctx;
use crate::cli::{BinfmtArgs, FetchArgs, SourceArgs};
use crate::error::hinted;
use crate::extract::Limits;
use crate::fetch::{self, Request};
use crate::sandbox;
use crate::specs::Spec;
use crate::store::{Installed, Manifest, RootfsId};
use crate::ui::Ui;
use crate::userns::IdMap;

/// Replaces the tree's `/etc/apk/repositories` for `--packages`
/// (newline- or comma-separated URLs or guest paths).
pub const ENV_APK_REPOSITORIES: &str = "XROOT_APK_REPOSITORIES";
/// `1`: pass `--allow-untrusted` to apk. For tests and local, unsigned
/// repositories only: it turns off apk's signature checks.
pub const ENV_APK_ALLOW_UNTRUSTED: &str = "XROOT_APK_ALLOW_UNTRUSTED";

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
            ctx,
            spec,
            RootfsId {
                arch: spec.name.clone(),
                name,
            },
            &a.source,
        )?;
        if req.debian.is_some() && a.from.is_some() {
            if a.source.source.is_some() {
                return Err(hinted(
                    "--from and a Debian --source exclude each other",
                    "drop --source to install a tarball, or --from to bootstrap from the archive",
                ));
            }
            // The spec's default Debian source gives way to a tarball.
            req.debian = None;
        }
        req.force = a.force;
        req.from = a.from.as_deref().map(absolutize);
        req.sha256 = a.sha256.clone();
        req.packages = packages(&a.packages)?;
        if let Some(d) = req.debian.as_mut() {
            d.packages = req.packages.clone();
        }
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
        let h = |root: &Path, m: &Manifest| match &req.debian {
            Some(_) => debian_second_stage(ctx, spec, binfmt, root, m, ui),
            None => apk_add(ctx, spec, binfmt, root, m, ui),
        };
        let h: Option<fetch::PostExtract> = if req.packages.is_empty() && req.debian.is_none() {
            None
        } else {
            Some(&h)
        };
        fetch::fetch(&ctx.store, &ctx.catalog, spec, req, ui, h)
    };
    let sandboxed = !a.packages.is_empty() || jobs.iter().any(|(_, r)| r.debian.is_some());
    let results: Vec<Result<Installed>> = if !sandboxed {
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
        // One at a time: `apk add` runs in a sandbox, whose clone(2) is only
        // safe in a single-threaded process (see `userns::spawn`).
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
pub fn request(ctx: &Ctx, spec: &Spec, id: RootfsId, s: &SourceArgs) -> Result<Request> {
    let limits = limits(s.max_size)?;
    Ok(Request {
        id,
        branch: s.branch.clone(),
        mirror: fetch::mirror_from(s.mirror.as_deref()),
        from: None,
        sha256: None,
        force: false,
        limits,
        packages: Vec::new(),
        record_as: None,
        debian: debian_options(ctx, spec, s, limits)?,
    })
}

/// The Debian bootstrap asked for by `--source debian|debian-ports` (and
/// `--suite`, `--keyring`, `--variant`, `--mirror`), if any.
fn debian_options(
    ctx: &Ctx,
    spec: &Spec,
    s: &SourceArgs,
    limits: crate::extract::Limits,
) -> Result<Option<crate::source::debian::Options>> {
    use crate::source::debian::{self, Archive};
    let from_spec = match &spec.source {
        crate::specs::Source::Debian {
            archive,
            debian_arch,
            suite,
        } => Archive::from_kind(archive).map(|a| (a, debian_arch.as_str(), suite.as_deref())),
        _ => None,
    };
    let archive = match s.source.as_deref() {
        None => from_spec.map(|(a, _, _)| a),
        Some("alpine") => None,
        Some(k) => Some(Archive::from_kind(k).ok_or_else(|| {
            hinted(
                format!("unknown --source {k:?}"),
                "use alpine, debian or debian-ports",
            )
        })?),
    };
    let Some(archive) = archive else {
        if s.suite.is_some() || s.keyring.is_some() || s.variant.is_some() {
            return Err(hinted(
                "--suite, --keyring and --variant apply to Debian sources",
                "add --source debian (or debian-ports)",
            ));
        }
        return Ok(None);
    };
    let spec_arch = from_spec.map(|(_, a, _)| a);
    let arch = spec_arch
        .or(debian::debian_arch(&spec.name))
        .ok_or_else(|| {
            hinted(
                format!("Debian has no architecture for {}", spec.name),
                "see `xroot list` and the README for the arches Debian and its ports carry",
            )
        })?;
    if s.branch.is_some() {
        return Err(hinted(
            "--branch is an Alpine release branch",
            "for Debian, name the suite with --suite (e.g. bookworm, trixie, unstable)",
        ));
    }
    Ok(Some(debian::Options {
        archive,
        arch: arch.to_string(),
        suite: s
            .suite
            .clone()
            .or_else(|| {
                from_spec
                    .filter(|(a, _, _)| *a == archive)
                    .and_then(|(_, _, suite)| suite.map(String::from))
            })
            .unwrap_or_else(|| archive.default_suite().to_string()),
        mirror: s
            .mirror
            .clone()
            .unwrap_or_else(|| archive.default_mirror().to_string())
            .trim_end_matches('/')
            .to_string(),
        components: vec!["main".into()],
        keyring: s
            .keyring
            .as_deref()
            .map(|p| PathBuf::from(absolutize(&p.display().to_string()))),
        variant: s
            .variant
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default(),
        packages: Vec::new(),
        limits,
        cache: ctx.store.cache_dir().join("debs"),
    }))
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
    let req = request(ctx, spec, id.clone(), s)?;
    let b = BinfmtArgs {
        binfmt: None,
        qemu: None,
        multiarch: false,
    };
    let h = |root: &Path, m: &Manifest| debian_second_stage(ctx, spec, &b, root, m, ctx.ui);
    let hook: Option<fetch::PostExtract> = req.debian.as_ref().map(|_| &h as _);
    fetch::fetch(&ctx.store, &ctx.catalog, spec, &req, ctx.ui, hook)
}

/// The [`fetch::PostExtract`] hook of a Debian bootstrap: runs the second
/// stage that `source::debian` prepared (dpkg installing the verified
/// `.deb`s, maintainer scripts under the guest's emulator) in the staging
/// tree through the sandbox, with the package cache bound read-only. A
/// non-zero exit fails the fetch, which then discards the staging tree.
fn debian_second_stage(
    ctx: &Ctx,
    spec: &Spec,
    b: &BinfmtArgs,
    root: &Path,
    m: &Manifest,
    ui: Ui,
) -> Result<()> {
    use crate::source::debian::configure;
    let id = RootfsId {
        arch: m.arch.clone(),
        name: m.name.clone(),
    };
    let prepared = super::binfmt::prepare(ctx, spec, b.binfmt, b.qemu.as_deref(), false)?;
    let argv = [
        "/bin/sh",
        "-c",
        "exec /bin/sh \"$0\" >&2",
        &format!("/{}", configure::SCRIPT),
    ];
    let env = ["HOME=/root", "USER=root", "LOGNAME=root"];
    let idmap = IdMap::for_caller();
    let subordinate =
        matches!(idmap, IdMap::Subordinate { .. }) || nix::unistd::geteuid().is_root();
    let cfg = sandbox::Config {
        rootfs: root.to_path_buf(),
        hostname: format!("xroot-{}", spec.name),
        argv: super::run::cstrings(argv.into_iter())?,
        env: super::run::cstrings(env.into_iter())?,
        workdir: PathBuf::from("/"),
        binds: vec![sandbox::Bind {
            src: ctx.store.cache_dir().join("debs"),
            dst: PathBuf::from(configure::DEBS_IN_GUEST),
            readonly: true,
        }],
        resolv_conf: None,
        binfmt: prepared.registrations,
        personality32: prepared.personality32,
        map_tty_gid: idmap.maps_gid(5),
        idmap,
        ephemeral: None,
        user: None,
        create_user: false,
        workdir_is_default: false,
        close_fds: Vec::new(),
    };
    ui.info(format!(
        "configuring {id}: dpkg installs the packages inside the guest (second stage)"
    ));
    let status = sandbox::run(&cfg);
    sandbox::restore_signals();
    let status =
        status.with_context(|| format!("running the second stage in {}", root.display()))?;
    configure::cleanup(root)?;
    if status != 0 {
        let hint = if subordinate {
            "see dpkg's messages above; nothing was installed".to_string()
        } else {
            "without subordinate ids dpkg cannot give files their owners (root:shadow, ...): \
             add a range for your user in /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 \
             --add-subgids 100000-165535 USER) or run as root; nothing was installed"
                .to_string()
        };
        return Err(hinted(
            format!("the Debian second stage failed in {id} with exit status {status}"),
            hint,
        ));
    }
    Ok(())
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

/// The [`fetch::PostExtract`] hook of `--packages`: points apk at the
/// right repositories, then runs `apk add` in the staging tree through the
/// sandbox, as a guest of its own. A non-zero exit fails the fetch, which
/// then discards the staging tree.
fn apk_add(
    ctx: &Ctx,
    spec: &Spec,
    b: &BinfmtArgs,
    root: &Path,
    m: &Manifest,
    ui: Ui,
) -> Result<()> {
    let id = RootfsId {
        arch: m.arch.clone(),
        name: m.name.clone(),
    };
    let list = m.packages.join(", ");
    if !["sbin/apk", "usr/sbin/apk", "bin/apk", "usr/bin/apk"]
        .iter()
        .any(|p| fs::symlink_metadata(root.join(p)).is_ok())
    {
        return Err(hinted(
            format!("cannot add {list} to {id}: the rootfs has no apk"),
            "--packages needs an Alpine rootfs; install packages with the tree's own package manager via `xroot run`",
        ));
    }
    if let Some(text) = repositories(m)? {
        write_repositories(root, &text)?;
    }
    let prepared = super::binfmt::prepare(ctx, spec, b.binfmt, b.qemu.as_deref(), false)?;
    // apk's progress goes to stdout; `exec ... >&2` keeps stdout for the
    // user's own use (xroot fetch prints nothing there).
    let mut argv: Vec<String> = ["/bin/sh", "-c", "exec \"$@\" >&2", "sh", "apk", "add"]
        .map(String::from)
        .to_vec();
    argv.push("--no-progress".into());
    if ui.quiet {
        argv.push("--quiet".into());
    }
    if std::env::var(ENV_APK_ALLOW_UNTRUSTED).is_ok_and(|v| v == "1") {
        argv.push("--allow-untrusted".into());
    }
    argv.extend(m.packages.iter().cloned());
    let env = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "USER=root",
        "LOGNAME=root",
        "LANG=C.UTF-8",
    ];
    let idmap = IdMap::for_caller();
    let cfg = sandbox::Config {
        rootfs: root.to_path_buf(),
        hostname: format!("xroot-{}", spec.name),
        argv: super::run::cstrings(argv.iter().map(String::as_str))?,
        env: super::run::cstrings(env.into_iter())?,
        workdir: PathBuf::from("/"),
        binds: Vec::new(),
        // apk needs DNS to reach a mirror by name.
        resolv_conf: fs::canonicalize("/etc/resolv.conf")
            .ok()
            .filter(|p| p.is_file()),
        binfmt: prepared.registrations,
        personality32: prepared.personality32,
        map_tty_gid: idmap.maps_gid(5),
        idmap,
        ephemeral: None,
        user: None,
        create_user: false,
        workdir_is_default: false,
        close_fds: Vec::new(),
    };
    ui.info(format!("adding {list} to {id} (apk add)"));
    let status = sandbox::run(&cfg);
    sandbox::restore_signals();
    let status = status.with_context(|| format!("running apk add in {}", root.display()))?;
    if status != 0 {
        return Err(hinted(
            format!("apk add {list} failed in {id} with exit status {status}; nothing was installed"),
            format!(
                "check the package names and that the repositories are reachable (see apk's messages above); \
                 {ENV_APK_REPOSITORIES}=URL,... picks other repositories"
            ),
        ));
    }
    Ok(())
}

/// What `/etc/apk/repositories` should say for `--packages`:
/// `$XROOT_APK_REPOSITORIES` if set, else the mirror the rootfs came from
/// (its `main` and `community` of the release branch), else nothing to
/// change (a tarball from elsewhere keeps its own file).
fn repositories(m: &Manifest) -> Result<Option<String>> {
    if let Some(v) = std::env::var_os(ENV_APK_REPOSITORIES).filter(|v| !v.is_empty()) {
        let v = v.to_str().ok_or_else(|| {
            hinted(
                format!("{ENV_APK_REPOSITORIES} is not valid UTF-8"),
                "give repository URLs or guest paths, separated by commas or newlines",
            )
        })?;
        let repos: Vec<&str> = v
            .split([',', '\n'])
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        return Ok(Some(repos.iter().map(|r| format!("{r}\n")).collect()));
    }
    if m.mirror.is_empty() || m.branch.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{0}/{1}/main\n{0}/{1}/community\n",
        m.mirror, m.branch
    )))
}

/// Writes `etc/apk/repositories` in an unpacked, not yet trusted tree:
/// never through a symlink the archive may have planted (it could point
/// anywhere on the host), by writing a new file and renaming it over.
fn write_repositories(root: &Path, text: &str) -> Result<()> {
    let mut dir = root.to_path_buf();
    for part in ["etc", "apk"] {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(hinted(
                    format!("{} is not a directory", dir.display()),
                    "the rootfs is unusual; set up /etc/apk/repositories yourself and run apk with `xroot run`",
                ))
            }
            Err(_) => {
                fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?
            }
        }
    }
    let tmp = dir.join(".repositories.xroot");
    let dest = dir.join("repositories");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, &dest).with_context(|| format!("replacing {}", dest.display()))
}
