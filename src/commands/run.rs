//! `xroot run` and `xroot shell`: decide everything about the guest on the
//! host side, then hand a complete [`sandbox::Config`] to the sandbox.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Ctx;
use crate::cli::GuestArgs;
use crate::error::hinted;
use crate::fetch::{check_arch, check_header, shell_header};
use crate::sandbox::{self, Bind};
use crate::specs::Spec;
use crate::store::RootfsId;
use crate::userns::IdMap;

/// The guest's PATH: Alpine's default.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host directories never bound as the working directory: binding them
/// over the guest's own would hide its system.
const SYSTEM_DIRS: [&str; 16] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/var", "/tmp", "/root",
];

pub fn run(ctx: &Ctx, arch: Option<String>, g: GuestArgs, cmd: Vec<String>) -> Result<i32> {
    let (spec, rootfs, lock_name) = target(ctx, arch.as_deref(), &g, &cmd[0])?;
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
    let idmap = IdMap::for_caller();

    // Mount points that the rootfs lacks are created now and removed after
    // the run (see `MountPoints`), so entering leaves the tree as it was.
    let mut created = MountPoints::new(&rootfs);
    let mut binds = Vec::new();
    let mut workdir = None;
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|d| d.canonicalize().ok());
    if let Some(cwd) = &cwd {
        let system = SYSTEM_DIRS.iter().any(|s| Path::new(s) == cwd)
            || cwd.starts_with(&rootfs)
            || rootfs.starts_with(cwd);
        // The implicit current-directory bind is a convenience: when its
        // path cannot exist in the guest (a symlink there, e.g. /var/run),
        // run without it rather than fail.
        if !system {
            match created.ensure(cwd, true) {
                Ok(()) => {
                    binds.push(Bind {
                        src: cwd.clone(),
                        dst: cwd.clone(),
                        readonly: false,
                    });
                    workdir = Some(cwd.clone());
                }
                Err(e) => ctx.ui.warn(format!(
                    "not binding the current directory: {e:#}; use --bind SRC:DST and --workdir"
                )),
            }
        }
    }
    for (spec_str, ro) in g
        .bind
        .iter()
        .map(|b| (b, false))
        .chain(g.ro_bind.iter().map(|b| (b, true)))
    {
        binds.push(parse_bind(spec_str, ro)?);
    }
    // --accel: native programs behind the guest's compiler (after the
    // user's binds, so theirs cannot cover them).
    if let Some(mode) = g.accel {
        binds.extend(super::accel::binds(ctx, &rootfs, mode));
    }
    let cwd_bound = usize::from(workdir.is_some());
    let workdir_is_default = g.workdir.is_none() && workdir.is_none();
    let workdir = match g.workdir {
        Some(w) if w.is_absolute() => w,
        Some(w) => {
            return Err(hinted(
                format!("--workdir {} is not absolute", w.display()),
                "give a path inside the guest, e.g. --workdir /root",
            ))
        }
        None => workdir.unwrap_or_else(|| {
            if rootfs.join("root").is_dir() {
                PathBuf::from("/root")
            } else {
                PathBuf::from("/")
            }
        }),
    };

    for b in binds.iter().skip(cwd_bound) {
        created.ensure(&b.dst, b.src.is_dir())?;
    }
    for d in ["proc", "sys", "dev"] {
        created.ensure(Path::new("/").join(d).as_path(), true)?;
    }
    let resolv_conf = fs::canonicalize("/etc/resolv.conf")
        .ok()
        .filter(|p| p.is_file());
    if resolv_conf.is_some() && rootfs.join("etc").is_dir() {
        created.ensure(Path::new("/etc/resolv.conf"), false)?;
    }

    let mut env = vec![
        format!("PATH={GUEST_PATH}"),
        "HOME=/root".to_string(),
        "USER=root".to_string(),
        "LOGNAME=root".to_string(),
        "SHELL=/bin/sh".to_string(),
        format!(
            "TERM={}",
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into())
        ),
        format!(
            "LANG={}",
            std::env::var("LANG")
                .ok()
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "C.UTF-8".into())
        ),
    ];
    for kv in &g.env {
        let Some((k, _)) = kv.split_once('=') else {
            return Err(hinted(
                format!("--env {kv:?} is not K=V"),
                "write it as --env NAME=value",
            ));
        };
        env.retain(|e| !e.starts_with(&format!("{k}=")));
        env.push(kv.clone());
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
    // --ephemeral mounts its throwaway layer on an empty directory of the
    // store, inside the guest's own mount namespace only.
    let ephemeral = if g.ephemeral {
        let mnt = ctx.store.home.join("mnt");
        fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
        Some(mnt)
    } else {
        None
    };
    let cfg = sandbox::Config {
        rootfs: rootfs.clone(),
        hostname: g.hostname.unwrap_or_else(|| format!("xroot-{}", spec.name)),
        argv: cstrings(cmd.iter().map(String::as_str))?,
        env: cstrings(env.iter().map(String::as_str))?,
        workdir,
        binds,
        resolv_conf,
        binfmt: prepared.registrations,
        personality32: prepared.personality32,
        map_tty_gid: idmap.maps_gid(5),
        idmap,
        ephemeral,
        user,
        create_user: g.create_user,
        workdir_is_default,
        close_fds: lock.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect(),
    };
    crate::ui::trace("configured");
    let result = sandbox::run(&cfg);
    crate::ui::trace("guest exited");
    drop(lock);
    created.cleanup(ctx, &lock_name);
    crate::ui::trace("cleaned up");
    // xroot exits next: not freeing the configuration spares the
    // copy-on-write faults that freeing pages still shared with the dying
    // PID 1 would cost.
    std::mem::forget(cfg);
    result
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
        if !root.is_dir() {
            return Err(hinted(format!("--rootfs {} is not a directory", dir.display()), "give the unpacked tree, not a tarball (import tarballs with `xroot fetch ARCH --from FILE`)"));
        }
        // The tree's shell tells its arch; a tree without one (a single
        // static program) is judged by the program being run.
        let header = shell_header(&root).or_else(|| {
            let p = root.join(Path::new(program).strip_prefix("/").ok()?);
            let meta = fs::symlink_metadata(&p).ok()?;
            let h = crate::elf::read_header(&p, 64).ok()?;
            (meta.is_file() && h.starts_with(b"\x7fELF")).then(|| (PathBuf::from(program), h))
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
        use sha2::Digest;
        let lock = format!(
            "dir-{}",
            crate::fetch::stream::hex(&sha2::Sha256::digest(root.as_os_str().as_bytes())[..8])
        );
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
    let installed = super::fetch::ensure(ctx, spec, &id, &g.source)?;
    let root = installed.root();
    check_arch(&ctx.catalog, spec, &root).with_context(|| format!("checking {id}"))?;
    Ok((spec, root, id.dir_name()))
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
    let dst = PathBuf::from(dst.unwrap_or(src_path.to_str().unwrap_or(src)));
    if !dst.is_absolute()
        || dst
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(hinted(
            format!(
                "{flag} {s}: destination {} must be an absolute path without '..'",
                dst.display()
            ),
            "write it as SRC:/path/in/guest",
        ));
    }
    Ok(Bind {
        src: src_path,
        dst,
        readonly,
    })
}

pub(super) fn cstrings<'a>(it: impl Iterator<Item = &'a str>) -> Result<Vec<CString>> {
    it.map(|s| {
        CString::new(s)
            .map_err(|_| hinted(format!("argument {s:?} contains a NUL byte"), "remove it"))
    })
    .collect()
}

/// Mount points created in a rootfs for one run. Removed afterwards when no
/// other run of the same rootfs is active (another run may be using them);
/// otherwise recorded, and the last run removes them.
struct MountPoints {
    root: PathBuf,
    created: Vec<PathBuf>,
    /// Directories we created entries in, with their times, restored after
    /// removal so the tree is left exactly as it was.
    touched: Vec<(PathBuf, fs::Metadata)>,
}

impl MountPoints {
    fn new(root: &Path) -> Self {
        MountPoints {
            root: root.to_path_buf(),
            created: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Makes sure `guest` exists inside the root (a directory, or a file for
    /// file binds). Refuses to create through a symlink in the rootfs, which
    /// could point anywhere on the host.
    fn ensure(&mut self, guest: &Path, dir: bool) -> Result<()> {
        let rel = guest.strip_prefix("/").unwrap_or(guest);
        let mut cur = self.root.clone();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let last = i + 1 == comps.len();
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(hinted(
                        format!(
                            "cannot bind onto {} in the guest: {} is a symlink in the rootfs",
                            guest.display(),
                            cur.display()
                        ),
                        "choose another destination with SRC:DST or --workdir",
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(parent) = cur
                        .parent()
                        .filter(|p| !self.created.iter().any(|c| c == p))
                    {
                        if let Ok(m) = fs::metadata(parent) {
                            self.touched.push((parent.to_path_buf(), m));
                        }
                    }
                    if last && !dir {
                        fs::File::create(&cur)
                            .with_context(|| format!("creating mount point {}", cur.display()))?;
                    } else {
                        fs::create_dir(&cur)
                            .with_context(|| format!("creating mount point {}", cur.display()))?;
                    }
                    self.created.push(cur.clone());
                }
            }
        }
        Ok(())
    }

    fn cleanup(self, ctx: &Ctx, lock_name: &str) {
        if self.created.is_empty() && self.touched.is_empty() {
            // Nothing of ours to remove; pending entries are left to a run that creates some.
            return;
        }
        let pending = ctx
            .store
            .home
            .join("locks")
            .join(format!("{lock_name}.mountpoints"));
        let mut all = self.created;
        match ctx.store.lock_named(lock_name, true, false) {
            Ok(Some(_excl)) => {
                if let Ok(text) = fs::read_to_string(&pending) {
                    all.extend(text.lines().map(PathBuf::from));
                }
                // Deepest first; rmdir/unlink only what is still empty.
                all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
                all.dedup();
                for p in &all {
                    if p.starts_with(&self.root)
                        && (fs::remove_dir(p).is_ok()
                            || fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0)
                                && fs::remove_file(p).is_ok())
                    {
                        continue;
                    }
                }
                let _ = fs::remove_file(&pending);
                for (dir, meta) in &self.touched {
                    restore_times(dir, meta);
                }
            }
            _ if !all.is_empty() => {
                let text: String = all.iter().map(|p| format!("{}\n", p.display())).collect();
                let _ = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&pending)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
            }
            _ => {}
        }
    }
}

/// Puts a directory's access and modification times back.
fn restore_times(dir: &Path, meta: &fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    let ts = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    let _ = nix::sys::stat::utimensat(
        None,
        dir,
        &ts(meta.atime(), meta.atime_nsec()),
        &ts(meta.mtime(), meta.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}
