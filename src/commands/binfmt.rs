//! `xroot binfmt status|install|remove`, and [`prepare`]: making sure a
//! foreign arch can run before `run`/`shell`/`fetch` need it.

use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::Ctx;
use crate::binfmt::fs::{exists, Instance};
use crate::binfmt::{want_preserve_argv0, Flags, Handler, Registration};
use crate::cli::{BinfmtCommand, BinfmtMode};
use crate::error::hinted;
use crate::host::{self, Native};
use crate::qemu::{self, Lookup};
use crate::specs::Spec;
use crate::ui::outln;

/// What a run needs for foreign binaries.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Handlers for a private instance (empty: native, or host handlers).
    pub registrations: Vec<Registration>,
    pub personality32: bool,
}

/// Private binfmt_misc instances in user namespaces arrived in Linux 6.7.
pub fn private_supported() -> bool {
    host::kernel_at_least(6, 7)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Decides how `spec` binaries will run and checks that they can.
pub fn prepare(
    ctx: &Ctx,
    spec: &Spec,
    mode: Option<BinfmtMode>,
    qemu_override: Option<&Path>,
    multiarch: bool,
) -> Result<Prepared> {
    let native = host::native(spec);
    let mode = mode.unwrap_or(if private_supported() {
        BinfmtMode::Private
    } else {
        BinfmtMode::Host
    });
    let mut out = Prepared {
        personality32: native == Native::Compat32,
        ..Default::default()
    };
    match mode {
        BinfmtMode::Private => {
            if !private_supported() {
                return Err(hinted(
                    format!("--binfmt private needs Linux 6.7 or later; this kernel is {}.{}", host::kernel_version().0, host::kernel_version().1),
                    format!("use the host's handler instead: sudo xroot binfmt install {} (once), then --binfmt host", spec.name),
                ));
            }
            let mut finder = qemu::Finder::load_in(&ctx.store.cache_dir());
            if native == Native::No {
                let q = match qemu_override {
                    Some(_) => qemu::find(&spec.qemu, qemu_override)?,
                    None => match finder.lookup(&spec.qemu) {
                        Lookup::Found(q) => q,
                        // Not found (or dynamic): the full search explains why.
                        _ => qemu::find(&spec.qemu, None)?,
                    },
                };
                let run = qemu::copy::for_guest(&ctx.store, &q);
                out.registrations
                    .push(registration(spec, &q, &run, &mut finder));
            }
            // With --multiarch, every other foreign arch with a qemu too, so a
            // guest program may exec a program of yet another arch. Not by
            // default: each handler costs launch time (a lookup, a
            // registration that opens qemu, its teardown).
            for other in ctx.catalog.qemu_targets() {
                if !multiarch || other.qemu == spec.qemu || host::native(other) != Native::No {
                    continue;
                }
                if let Lookup::Found(q) = finder.lookup(&other.qemu) {
                    let run = qemu::copy::for_guest(&ctx.store, &q);
                    out.registrations
                        .push(registration(other, &q, &run, &mut finder));
                }
            }
            if finder.is_dirty() && ctx.store.create().is_ok() {
                finder.save();
            }
        }
        BinfmtMode::Host => {
            if native == Native::No {
                ensure_host_handler(ctx, spec, qemu_override)?;
            }
        }
    }
    Ok(out)
}

/// A private handler for `spec` that runs `run`: `qemu` itself or its
/// prelinked copy (whose version is the original's, cached by path).
fn registration(spec: &Spec, qemu: &Path, run: &Path, finder: &mut qemu::Finder) -> Registration {
    let p = want_preserve_argv0(host::kernel_version(), finder.version(qemu));
    Registration {
        name: format!("qemu-{}", spec.qemu),
        magic: spec.binfmt.clone(),
        interpreter: run.to_path_buf(),
        flags: Flags {
            preserve_argv0: p,
            open_binary: true,
            credentials: true,
            fix_binary: true,
        },
    }
}

/// The host handlers that would claim `spec`'s binaries.
fn claimers(inst: &Instance, spec: &Spec) -> Result<Vec<Handler>> {
    Ok(inst
        .handlers()?
        .into_iter()
        .filter(|h| h.claims(&spec.binfmt))
        .collect())
}

/// Host mode: a fitting host handler must exist; root installs a missing
/// one automatically, but never replaces an existing one without --force.
fn ensure_host_handler(ctx: &Ctx, spec: &Spec, qemu_override: Option<&Path>) -> Result<()> {
    let inst = Instance::host();
    if !inst.is_mounted() {
        if !is_root() {
            return Err(hinted(
                format!(
                    "binfmt_misc is not mounted at {} and there is no host handler for {}",
                    inst.dir.display(),
                    spec.name
                ),
                format!(
                    "run once as root: sudo xroot binfmt install {}{}",
                    spec.name,
                    private_hint()
                ),
            ));
        }
        inst.ensure_mounted()?;
    }
    if !inst.enabled() {
        return Err(hinted(
            format!(
                "binfmt_misc is disabled on this host ({}/status)",
                inst.dir.display()
            ),
            "enable it: echo 1 | sudo tee /proc/sys/fs/binfmt_misc/status",
        ));
    }
    let found = claimers(&inst, spec)?;
    if found.is_empty() {
        if !is_root() {
            return Err(hinted(
                format!("no binfmt_misc handler for {} on this host", spec.name),
                format!(
                    "register one once as root: sudo xroot binfmt install {}{}",
                    spec.name,
                    private_hint()
                ),
            ));
        }
        let q = qemu::find(&spec.qemu, qemu_override)?;
        let r = registration(spec, &q, &q, &mut qemu::Finder::load(None));
        inst.register(&r)?;
        ctx.ui.info(format!(
            "registered host binfmt handler {} → {} (flags {})",
            r.name,
            q.display(),
            r.flags.letters()
        ));
        return Ok(());
    }
    let h = &found[0];
    let problems = h.problems(exists);
    if !problems.is_empty() {
        return Err(hinted(
            format!(
                "the host's binfmt handler for {} cannot run a guest: {}",
                spec.name,
                problems.join("; ")
            ),
            if !h.enabled && problems.len() == 1 {
                // Only switched off: turning it back on keeps the owner's setup.
                format!(
                    "enable it: echo 1 | sudo tee {}/{}; or replace it: sudo xroot binfmt install {} --force{}",
                    inst.dir.display(),
                    h.name,
                    spec.name,
                    private_hint()
                )
            } else {
                format!(
                    "replace it: sudo xroot binfmt install {} --force{}",
                    spec.name,
                    private_hint()
                )
            },
        ));
    }
    for w in h.warnings(exists) {
        ctx.ui.warn(w);
    }
    Ok(())
}

fn private_hint() -> &'static str {
    if private_supported() {
        " (or use --binfmt private, which needs no root)"
    } else {
        ""
    }
}

#[derive(Serialize)]
struct Status {
    arch: String,
    qemu_target: String,
    native: &'static str,
    qemu: Option<String>,
    qemu_static: bool,
    handlers: Vec<HandlerStatus>,
    ok: bool,
}

#[derive(Serialize)]
struct HandlerStatus {
    name: String,
    enabled: bool,
    interpreter: String,
    flags: String,
    problems: Vec<String>,
    warnings: Vec<String>,
}

pub fn native_word(n: Native) -> &'static str {
    match n {
        Native::Yes => "yes",
        Native::Compat32 => "compat32",
        Native::No => "no",
    }
}

fn selected<'a>(ctx: &'a Ctx, arches: &[String]) -> Result<Vec<&'a Spec>> {
    if arches.is_empty() {
        return Ok(ctx.catalog.qemu_targets());
    }
    arches.iter().map(|a| ctx.catalog.resolve(a)).collect()
}

pub fn command(ctx: &Ctx, cmd: BinfmtCommand) -> Result<i32> {
    match cmd {
        BinfmtCommand::Status { arches, json, qemu } => status(ctx, &arches, json, qemu.as_deref()),
        BinfmtCommand::Install {
            arches,
            force,
            qemu,
        } => install(ctx, &arches, force, qemu.as_deref()).map(|_| 0),
        BinfmtCommand::Remove { arches } => remove(ctx, &arches).map(|_| 0),
    }
}

fn status(ctx: &Ctx, arches: &[String], json: bool, qemu_override: Option<&Path>) -> Result<i32> {
    let inst = Instance::host();
    // Every arch, not one per qemu target: a user looks for their arch's name.
    let all: Vec<String> = ctx.catalog.iter().map(|s| s.name.clone()).collect();
    let arches = if arches.is_empty() { &all[..] } else { arches };
    let handlers = if inst.is_mounted() {
        inst.handlers()?
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    for spec in selected(ctx, arches)? {
        let native = host::native(spec);
        let (qemu, qemu_static) = match qemu::lookup(&spec.qemu, qemu_override) {
            Lookup::Found(p) => (Some(p.display().to_string()), true),
            Lookup::Dynamic(p) => (Some(p.display().to_string()), false),
            Lookup::Missing => (None, false),
        };
        let hs: Vec<HandlerStatus> = handlers
            .iter()
            .filter(|h| h.claims(&spec.binfmt))
            .map(|h| HandlerStatus {
                name: h.name.clone(),
                enabled: h.enabled,
                interpreter: h.interpreter.display().to_string(),
                flags: h.flags.letters(),
                problems: h.problems(exists),
                warnings: h.warnings(exists),
            })
            .collect();
        let ok = native != Native::No || hs.first().is_some_and(|h| h.problems.is_empty());
        rows.push(Status {
            arch: spec.name.clone(),
            qemu_target: spec.qemu.clone(),
            native: native_word(native),
            qemu,
            qemu_static,
            handlers: hs,
            ok,
        });
    }
    if json {
        #[derive(Serialize)]
        struct Out {
            binfmt_misc_mounted: bool,
            binfmt_misc_enabled: bool,
            private_supported: bool,
            arches: Vec<Status>,
        }
        let out = Out {
            binfmt_misc_mounted: inst.is_mounted(),
            binfmt_misc_enabled: inst.enabled(),
            private_supported: private_supported(),
            arches: rows,
        };
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    outln!(
        "host binfmt_misc: {}",
        if !inst.is_mounted() {
            "not mounted"
        } else if inst.enabled() {
            "mounted, enabled"
        } else {
            "mounted, DISABLED"
        }
    );
    outln!(
        "private per-guest handlers (Linux 6.7+): {}",
        if private_supported() {
            "supported (default for run/shell)"
        } else {
            "not supported by this kernel"
        }
    );
    outln!("{:<12} {:<8} {:<34} HOST HANDLER", "ARCH", "NATIVE", "QEMU");
    for r in &rows {
        let q = match (&r.qemu, r.qemu_static) {
            (Some(p), true) => p.clone(),
            (Some(p), false) => format!("{p} (DYNAMIC: unusable)"),
            (None, _) => "missing".into(),
        };
        let h = match r.handlers.first() {
            None if r.native != "no" => "not needed".to_string(),
            None => "none".to_string(),
            Some(h) if h.problems.is_empty() => format!(
                "{} ok (flags {}){}",
                h.name,
                h.flags,
                h.warnings
                    .iter()
                    .map(|w| format!("; {w}"))
                    .collect::<String>()
            ),
            Some(h) => format!("{} UNFIT: {}", h.name, h.problems.join("; ")),
        };
        outln!(
            "{:<12} {:<8} {:<34} {}",
            r.arch,
            r.native,
            crate::ui::escape(&q),
            crate::ui::escape(&h)
        );
    }
    Ok(0)
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(hinted(
            format!("{what} changes the host's global binfmt_misc handlers and needs root"),
            format!(
                "sudo xroot binfmt {what}{}",
                if private_supported() {
                    "; or skip it: run/shell use a private handler without root"
                } else {
                    ""
                }
            )
        ));
    }
    Ok(())
}

fn install(ctx: &Ctx, arches: &[String], force: bool, qemu_override: Option<&Path>) -> Result<()> {
    require_root("install")?;
    let inst = Instance::host();
    inst.ensure_mounted()?;
    let explicit = !arches.is_empty();
    let mut failed = Vec::new();
    for spec in selected(ctx, arches)? {
        if host::native(spec) != Native::No {
            ctx.ui.info(format!(
                "{}: runs natively here; no handler needed",
                spec.name
            ));
            continue;
        }
        let q = match qemu::find(&spec.qemu, qemu_override) {
            Ok(q) => q,
            Err(e) if !explicit => {
                ctx.ui.info(format!("{}: skipped ({e})", spec.name));
                continue;
            }
            Err(e) => return Err(e),
        };
        let existing = claimers(&inst, spec)?;
        if let Some(h) = existing.first() {
            let problems = h.problems(exists);
            if !force {
                if problems.is_empty() {
                    ctx.ui.info(format!(
                        "{}: handler {} already fits (flags {})",
                        spec.name,
                        h.name,
                        h.flags.letters()
                    ));
                    continue;
                }
                ctx.ui.warn(format!("{}: existing handler {} does not fit: {}; not changed (use --force to replace it)", spec.name, h.name, problems.join("; ")));
                failed.push(spec.name.clone());
                continue;
            }
            for h in &existing {
                inst.remove(&h.name)?;
                ctx.ui.info(format!(
                    "{}: removed handler {} ({})",
                    spec.name,
                    h.name,
                    h.interpreter.display()
                ));
            }
        }
        let r = registration(spec, &q, &q, &mut qemu::Finder::load(None));
        // A handler of the same name that claims other bytes is in the way too.
        if inst.dir.join(&r.name).exists() {
            if !force {
                ctx.ui.warn(format!(
                    "{}: a handler named {} exists (for other binaries); not changed (use --force)",
                    spec.name, r.name
                ));
                failed.push(spec.name.clone());
                continue;
            }
            inst.remove(&r.name)?;
        }
        inst.register(&r)?;
        ctx.ui.info(format!(
            "{}: registered {} → {} (flags {})",
            spec.name,
            r.name,
            q.display(),
            r.flags.letters()
        ));
    }
    if !failed.is_empty() {
        bail!(hinted(
            format!("handlers left unchanged for: {}", failed.join(", ")),
            "see `xroot binfmt status`; replace with --force"
        ));
    }
    Ok(())
}

fn remove(ctx: &Ctx, arches: &[String]) -> Result<()> {
    require_root("remove")?;
    let inst = Instance::host();
    if !inst.is_mounted() {
        ctx.ui
            .info("binfmt_misc is not mounted: no handlers to remove");
        return Ok(());
    }
    for spec in selected(ctx, arches)? {
        let hs = claimers(&inst, spec)?;
        if hs.is_empty() {
            ctx.ui.info(format!("{}: no handler", spec.name));
        }
        for h in hs {
            inst.remove(&h.name)?;
            ctx.ui
                .info(format!("{}: removed handler {}", spec.name, h.name));
        }
    }
    Ok(())
}
