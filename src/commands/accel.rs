//! `run --accel` and `doctor --accel`: decide which of the guest's
//! programs run natively (see `crate::accel`) and turn that into binds.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::accel::{self, Match, Survey};
use crate::cli::AccelMode;
use crate::error::hinted;
use crate::sandbox::Bind;
use crate::store::RootfsId;
use crate::ui::outln;

fn matching(mode: AccelMode) -> Option<Match> {
    match mode {
        AccelMode::Exact => Some(Match::Exact),
        AccelMode::StableUpdates => Some(Match::StableUpdates),
        AccelMode::Off => None,
    }
}

/// The survey, plus the reason xroot itself cannot be the trampoline.
fn survey(rootfs: &Path, m: Match) -> (Survey, Option<PathBuf>) {
    let mut s = accel::survey(rootfs, Path::new("/"), m);
    let exe = std::env::current_exe().ok();
    let usable = exe
        .as_deref()
        .filter(|e| crate::elf::has_interp(e).is_ok_and(|dynamic| !dynamic));
    if usable.is_none() && !s.tools.is_empty() {
        s.refused.insert(0, "xroot is dynamically linked, and its trampoline must run inside the guest: use a static build (the default; see README)".into());
        s.tools.clear();
    }
    (s, usable.map(Path::to_path_buf))
}

/// The binds that put native programs behind the guest's; none, with a
/// one-line note saying why, when nothing matches. Never fails the run:
/// without acceleration the build is slower, not wrong.
pub fn binds(ctx: &Ctx, rootfs: &Path, mode: AccelMode) -> Vec<Bind> {
    let Some(m) = matching(mode) else {
        return Vec::new();
    };
    let (s, exe) = survey(rootfs, m);
    let Some(exe) = exe.filter(|_| !s.tools.is_empty()) else {
        ctx.ui.warn(s.note());
        return Vec::new();
    };
    let dir = match accel::native::prepare(&ctx.store.home.join("accel"), &s.tools) {
        Ok(d) => d,
        Err(e) => {
            ctx.ui.warn(format!(
                "no acceleration: preparing the native programs: {e:#}"
            ));
            return Vec::new();
        }
    };
    ctx.ui.info(s.note());
    let mut binds = vec![Bind {
        src: dir,
        dst: PathBuf::from(accel::GUEST_DIR),
        readonly: true,
        kind: crate::rootfs::Kind::Dir,
        optional: false,
    }];
    binds.extend(s.tools.iter().map(|t| Bind {
        src: exe.clone(),
        dst: t.guest.clone(),
        readonly: true,
        kind: crate::rootfs::Kind::File,
        optional: false,
    }));
    binds
}

#[derive(Serialize)]
struct Row {
    program: String,
    ok: bool,
    detail: String,
}

/// `xroot doctor --accel TARGET`: every program's verdict, in full.
pub fn doctor(ctx: &Ctx, target: &str, json: bool) -> Result<i32> {
    let root = if target.contains('/') || Path::new(target).is_dir() {
        PathBuf::from(target)
    } else {
        let (a, name) = RootfsId::parse(target)?;
        let spec = ctx.catalog.resolve(&a)?;
        let id = RootfsId {
            arch: spec.name.clone(),
            name,
        };
        ctx.store
            .get(&id)?
            .ok_or_else(|| {
                hinted(
                    format!("{id} is not installed"),
                    format!("xroot fetch {id}, or give a directory"),
                )
            })?
            .root()
    };
    if !root.is_dir() {
        return Err(hinted(
            format!("--accel {target}: {} is not a directory", root.display()),
            "give ARCH[@NAME] of an installed rootfs or a tree's directory",
        ));
    }
    let (exact, _) = survey(&root, Match::Exact);
    let mut rows: Vec<Row> = exact
        .tools
        .iter()
        .map(|t| Row {
            program: t.label.clone(),
            ok: true,
            detail: format!(
                "{} runs {} natively{}",
                t.guest.display(),
                t.host.display(),
                if t.args.is_empty() {
                    String::new()
                } else {
                    format!(" (with {})", t.args.join(" "))
                }
            ),
        })
        .collect();
    rows.extend(exact.refused.iter().map(|r| {
        Row {
            program: r
                .split_once(':')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default(),
            ok: false,
            detail: r.clone(),
        }
    }));
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        outln!(
            "what `xroot run --accel` would run natively in {}:",
            root.display()
        );
        for r in &rows {
            outln!("{:<5} {}", if r.ok { "OK" } else { "NO" }, r.detail);
        }
        outln!("(guest binds: the native programs, their host libraries and loader at {} read-only; xroot's static binary over each guest program)", accel::GUEST_DIR);
    }
    Ok(if exact.tools.is_empty() { 1 } else { 0 })
}
