//! `xroot run` and `xroot shell`: decide everything about the guest on the
//! host side, then hand a complete [`sandbox::Plan`] to the sandbox.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Ctx;
use crate::cli::{CwdBind, Dns, GuestArgs, NetworkMode};
use crate::error::hinted;
use crate::rootfs::{shell_header, Kind};
use crate::sandbox::{self, Bind, Builder};
use crate::source::{check_arch, check_header};
use crate::specs::Spec;
use crate::store::RootfsId;
use crate::userns::IdMap;

pub fn run(ctx: &Ctx, arch: Option<String>, g: GuestArgs, cmd: Vec<String>) -> Result<i32> {
    // Before xroot opens anything: a free number in the range would be
    // taken by one of xroot's own descriptors and handed to the guest.
    check_preserved_fds(g.preserve_fds)?;
    let (spec, rootfs, lock_name) = target(ctx, arch.as_deref(), &g, &cmd[0])?;
    // Mount points a killed run left in the tree are removed first, when
    // no other run of the tree is using them (see `rootfs::mountpoints`).
    let journal = ctx
        .store
        .home
        .join("locks")
        .join(format!("{lock_name}.mountpoints"));
    clean_mountpoints(ctx, &rootfs, &journal, &lock_name);
    // Shared lock: `xroot rm` of this rootfs waits for us to finish.
    let lock = ctx.store.lock_named(&lock_name, false, true)?;
    crate::ui::trace("rootfs resolved and checked");
    let prepared = super::binfmt::prepare(
        ctx,
        spec,
        g.binfmt.binfmt,
        g.binfmt.qemu.as_deref(),
        g.binfmt.multiarch,
    )?;

    let mut b = Builder::new(
        &rootfs,
        cstrings(cmd.iter().map(String::as_str))?,
        IdMap::for_caller(),
    )
    .hostname(
        g.hostname
            .clone()
            .unwrap_or_else(|| format!("xroot-{}", spec.name)),
    )
    .binfmt(prepared.registrations, prepared.personality32);
    for (k, v) in [
        ("TERM", std::env::var("TERM").ok()),
        ("LANG", std::env::var("LANG").ok()),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty() && !v.contains('\0')) {
            b = b.env(k, &v);
        }
    }
    for kv in &g.env {
        // NAME=value, checked by the argument parser (`validate::env`).
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        b = b.env(k, v);
    }
    let home = if rootfs.join("root").is_dir() {
        "/root"
    } else {
        "/"
    };
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|d| d.canonicalize().ok());
    let cwd_plan = match &cwd {
        Some(cwd) => cwd_plan(ctx, &rootfs, cwd, g.bind_cwd),
        None => CwdPlan::default(),
    };
    if let Some(note) = &cwd_plan.note {
        ctx.ui.info(note);
    }
    if let Some(bind) = cwd_plan.bind {
        b = b.bind(bind);
    }
    for m in cwd_plan.masks {
        b = b.mask(m);
    }
    for (spec_str, ro) in g
        .bind
        .iter()
        .map(|b| (b, false))
        .chain(g.ro_bind.iter().map(|b| (b, true)))
    {
        b = b.bind(parse_bind(spec_str, ro)?);
    }
    // --accel: native programs behind the guest's compiler (after the
    // user's binds, so theirs cannot cover them).
    if let Some(mode) = g.accel {
        for bind in super::accel::binds(ctx, &rootfs, mode) {
            b = b.bind(bind);
        }
    }
    match g.workdir {
        Some(w) if w.is_absolute() => b = b.workdir(w, None),
        Some(w) => {
            return Err(hinted(
                format!("--workdir {} is not absolute", w.display()),
                "give a path inside the guest, e.g. --workdir /root",
            ))
        }
        None => match cwd_plan.workdir {
            Some(w) => b = b.workdir(w, Some(PathBuf::from(home))),
            None => b = b.workdir(PathBuf::from(home), None).default_workdir(),
        },
    }
    if g.dns == Dns::Host {
        b = b.resolv_conf(
            fs::canonicalize("/etc/resolv.conf")
                .ok()
                .filter(|p| p.is_file()),
        );
    }

    let user = g
        .user
        .as_deref()
        .map(|u| {
            sandbox::user::parse(u)
                .map_err(|e| hinted(e, "write --user NAME, --user UID or --user UID:GID"))
        })
        .transpose()?;
    if g.create_user && !matches!(user, Some(sandbox::user::Wanted::Name(_))) {
        return Err(hinted(
            "--create-user needs --user NAME",
            "give the name of the user to create",
        ));
    }
    b = b.user(user, g.create_user);
    // --ephemeral mounts its throwaway layer on an empty directory of the
    // store, inside the guest's own mount namespace only; mount points go
    // into that layer, never into the tree.
    if g.ephemeral {
        let mnt = ctx.store.home.join("mnt");
        fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
        b = b.ephemeral(Some(mnt));
    } else {
        b = b.journal(journal.clone());
    }
    b = b
        .terminal(sandbox::pty::Terminal::detect())
        .preserve_fds(g.preserve_fds)
        .network(match g.network {
            NetworkMode::Host => sandbox::confine::Network::Host,
            NetworkMode::None => sandbox::confine::Network::None,
        });
    if let Some(l) = &lock {
        b = b.close_fd(std::os::fd::AsRawFd::as_raw_fd(l));
    }
    let plan = b.build()?;
    crate::ui::trace("planned");
    let result = sandbox::run(&plan);
    crate::ui::trace("guest exited");
    drop(lock);
    if plan.journal.is_some() {
        clean_mountpoints(ctx, &rootfs, &journal, &lock_name);
    }
    crate::ui::trace("cleaned up");
    // xroot exits next: not freeing the plan spares the copy-on-write
    // faults that freeing pages still shared with the dying PID 1 would cost.
    std::mem::forget(plan);
    result
}

/// Removes the mount points recorded in `journal` if no run of the tree
/// is active (else the last run does it). Only stats when there is none.
fn clean_mountpoints(ctx: &Ctx, rootfs: &Path, journal: &Path, lock_name: &str) {
    if fs::symlink_metadata(journal).is_err() {
        return;
    }
    if let Ok(Some(_excl)) = ctx.store.lock_named(lock_name, true, false) {
        if let Err(e) = crate::rootfs::mountpoints::clean(rootfs, journal) {
            ctx.ui.warn(format!(
                "removing mount points xroot made in {}: {e:#}",
                rootfs.display()
            ));
        }
    }
}

/// What to do about the caller's working directory.
#[derive(Debug, Default)]
struct CwdPlan {
    bind: Option<Bind>,
    workdir: Option<PathBuf>,
    masks: Vec<PathBuf>,
    note: Option<String>,
}

/// Decides the working directory's bind by what the guest's tree holds:
/// - inside the tree itself: start at the same place in the guest, no bind;
/// - where the guest has a non-empty directory of its own at that path
///   (`/usr/lib`, `/`): start there in the guest's own, no bind, and say so;
/// - else bind it (by default the enclosing git work tree, so `../configure`
///   from a build directory works) and start in it. If the bound directory
///   holds the xroot store (the default store is under `$HOME`), the store
///   is hidden in the guest behind an empty read-only mount.
fn cwd_plan(ctx: &Ctx, rootfs: &Path, cwd: &Path, mode: CwdBind) -> CwdPlan {
    if let Ok(rel) = cwd.strip_prefix(rootfs) {
        return CwdPlan {
            workdir: Some(Path::new("/").join(rel)),
            ..Default::default()
        };
    }
    let src = match mode {
        CwdBind::None => return CwdPlan::default(),
        CwdBind::Dir => cwd.to_path_buf(),
        CwdBind::Project => project_root(cwd).unwrap_or_else(|| cwd.to_path_buf()),
    };
    let guest_has = |p: &Path| guest_nonempty_dir(rootfs, p);
    if guest_has(&src) {
        return CwdPlan {
            // `/` is no particular place: the guest starts in its home.
            workdir: Some(cwd.to_path_buf()).filter(|c| c != Path::new("/") && guest_has(c)),
            // (Said, except for `/`, where nothing else was expected.)
            note: (src != Path::new("/"))
                .then(|| format!("not binding {}: the guest has its own {0}", src.display())),
            ..Default::default()
        };
    }
    let mut masks = Vec::new();
    if ctx.store.home.starts_with(&src) {
        masks.push(ctx.store.home.clone());
    }
    CwdPlan {
        bind: Some(Bind {
            src: src.clone(),
            dst: src,
            readonly: false,
            kind: Kind::Dir,
            optional: true,
        }),
        workdir: Some(cwd.to_path_buf()),
        masks,
        note: None,
    }
}

/// The top of the git work tree `dir` is in, if any (a `.git` directory
/// or file in it or an ancestor; `/` itself never counts).
fn project_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .filter(|d| d.parent().is_some())
        .find(|d| fs::symlink_metadata(d.join(".git")).is_ok())
        .map(Path::to_path_buf)
}

/// Whether the guest has a non-empty directory at `guest` (resolved inside
/// its tree, never outside).
fn guest_nonempty_dir(rootfs: &Path, guest: &Path) -> bool {
    let Ok(tree) = crate::rootfs::Tree::open(rootfs) else {
        return false;
    };
    let Ok(fd) = tree.open_in_root(
        guest,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
    ) else {
        return false;
    };
    let Ok(mut dir) = rustix::fs::Dir::read_from(&fd) else {
        return false;
    };
    dir.any(|e| {
        e.is_ok_and(|e| {
            let n = e.file_name().to_bytes();
            n != b"." && n != b".."
        })
    })
}

/// The spec and the root directory to run in, plus the name of its lock.
fn target<'c>(
    ctx: &'c Ctx,
    arch: Option<&str>,
    g: &GuestArgs,
    program: &str,
) -> Result<(&'c Spec, PathBuf, String)> {
    if let Some(dir) = &g.rootfs {
        let root = dir.canonicalize().map_err(|e| {
            hinted(
                format!("--rootfs {}: {e}", dir.display()),
                "give an existing directory holding a Linux root filesystem",
            )
        })?;
        if root == Path::new("/") {
            return Err(hinted(
                "--rootfs / is the host's own root",
                "a guest runs in a tree of its own: give the directory of an unpacked Linux system",
            ));
        }
        if !root.is_dir() {
            return Err(hinted(format!("--rootfs {} is not a directory", dir.display()), "give the unpacked tree, not a tarball (import tarballs with `xroot fetch ARCH --from FILE`)"));
        }
        // The tree's shell tells its arch; a tree without one (a single
        // static program) is judged by the program being run.
        let header = shell_header(&root).or_else(|| {
            // Read inside the tree only (a symlink on the way stays in it).
            let tree = crate::rootfs::Tree::open(&root).ok()?;
            let p = Path::new(program);
            let h = p.is_absolute().then(|| tree.read_head(p, 64))??;
            h.starts_with(b"\x7fELF").then(|| (p.to_path_buf(), h))
        });
        let spec = match (arch, header) {
            (Some(a), Some((path, h))) => {
                let spec = ctx.catalog.resolve(a)?;
                check_header(&ctx.catalog, spec, &root.join(path.strip_prefix("/").unwrap_or(&path)), &h)?;
                spec
            }
            (Some(a), None) => ctx.catalog.resolve(a)?,
            (None, Some((_, h))) => ctx.catalog.matching(&h).into_iter().next().ok_or_else(|| {
                hinted(
                    format!("cannot tell the architecture of {}: its ELF header matches no known arch", root.display()),
                    "name it: xroot run ARCH --rootfs DIR -- CMD",
                )
            })?,
            (None, None) => {
                return Err(hinted(
                    format!("cannot tell the architecture of {}: no /bin/sh and no ELF program to look at", root.display()),
                    "name it: xroot run ARCH --rootfs DIR -- CMD",
                ))
            }
        };
        // A tree of the store run by its path takes that tree's own lock,
        // as `xroot run ARCH` does: `xroot rm` refuses, `fetch --force` waits.
        let lock = store_tree_of(ctx, &root).unwrap_or_else(|| {
            use sha2::Digest;
            format!(
                "dir-{}",
                hex::encode(&sha2::Sha256::digest(root.as_os_str().as_bytes())[..8])
            )
        });
        return Ok((spec, root, lock));
    }
    let Some(arch) = arch else {
        return Err(hinted(
            "no architecture given",
            "name one (see `xroot list`), or pass --rootfs DIR",
        ));
    };
    let (a, name) = RootfsId::parse(arch)?;
    let spec = ctx.catalog.resolve(&a)?;
    let id = RootfsId {
        arch: spec.name.clone(),
        name,
    };
    if !g.packages.is_empty() && g.ephemeral {
        return Err(hinted(
            "--packages with --ephemeral is not supported yet",
            format!("add them to the tree (xroot run {id} --packages ...), or to a tree of its own: xroot fetch {}@NAME --packages ...", id.arch),
        ));
    }
    let installed = super::fetch::ensure_with(ctx, spec, &id, &g.source, &g.binfmt, &g.packages)?;
    let root = installed.root();
    check_arch(&ctx.catalog, spec, &root).with_context(|| format!("checking {id}"))?;
    Ok((spec, root, id.dir_name()))
}

/// The store id (its directory and lock name) whose tree holds the
/// canonical path `root`, if any.
fn store_tree_of(ctx: &Ctx, root: &Path) -> Option<String> {
    let trees = ctx.store.rootfs_dir().canonicalize().ok()?;
    let id = root.strip_prefix(&trees).ok()?.components().next()?;
    Some(id.as_os_str().to_str()?.to_string())
}

/// `--preserve-fds N`: fds 3..3+N must all be open.
fn check_preserved_fds(n: u32) -> Result<()> {
    if n > 1 << 20 {
        return Err(hinted(
            format!("--preserve-fds {n} is more descriptors than a process can have"),
            "give the number of descriptors from 3 on to pass to the command",
        ));
    }
    for fd in 3..3 + n as i32 {
        // SAFETY: F_GETFD only inspects the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(hinted(
                format!("--preserve-fds {n}: file descriptor {fd} is not open"),
                format!(
                    "open descriptors 3 to {} for xroot (e.g. `3<file`), or pass a smaller N",
                    2 + n
                ),
            ));
        }
    }
    Ok(())
}

fn parse_bind(s: &str, readonly: bool) -> Result<Bind> {
    let (src, dst) = match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let flag = if readonly { "--ro-bind" } else { "--bind" };
    let src_path = Path::new(src).canonicalize().map_err(|e| {
        hinted(
            format!("{flag} {s}: source {src}: {e}"),
            "the source must be an existing host path",
        )
    })?;
    let dst = match dst {
        Some(d) => PathBuf::from(d),
        None => src_path.clone(),
    };
    sandbox::plan::check_destination(&dst).with_context(|| format!("{flag} {s}"))?;
    let kind = if src_path.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    };
    Ok(Bind {
        src: src_path,
        dst,
        readonly,
        kind,
        optional: false,
    })
}

pub(super) fn cstrings<'a>(it: impl Iterator<Item = &'a str>) -> Result<Vec<CString>> {
    it.map(|s| {
        CString::new(s)
            .map_err(|_| hinted(format!("argument {s:?} contains a NUL byte"), "remove it"))
    })
    .collect()
}
