//! Carrying out a [`Plan`]'s mount steps, inside the guest's new mount
//! namespace (run by its PID 1). The only code that mounts anything.
//!
//! Every mount goes onto a *descriptor* of its target, never a path: the
//! target is resolved inside the guest's root with `openat2`
//! (`rootfs::Tree::mount_point`, `RESOLVE_IN_ROOT`), and the new mount is
//! made detached (`fsopen`/`fsmount`, or `open_tree` for binds), given its
//! attributes, and attached with `move_mount` onto that descriptor. So a
//! tree whose `proc`, `dev` or `etc` is a symlink, or a guest that swaps a
//! directory for a symlink meanwhile, can at most move a mount somewhere
//! else inside its own tree — never onto a host path.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree, FsMountFlags,
    FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};

use super::plan::{Attrs, Bind, Plan, Root, Step};
use crate::binfmt::fs::Instance;
use crate::rootfs::mountpoints::Journal;
use crate::rootfs::{Kind, Tree};

const NONE: Option<&str> = None;

/// What the host's /sys and resolv.conf get in the guest: read-only, no
/// setuid programs, no device nodes.
const READ_ONLY: Attrs = Attrs {
    readonly: true,
    nosuid: true,
    nodev: true,
};

/// Host device nodes bound into the guest's /dev. Device nodes cannot be
/// created in a user namespace, and binding the host's is what a rootless
/// runtime must do anyway.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Host-wide parts of /proc made read-only (as Docker and bubblewrap do):
/// sysctls (and the binfmt_misc instance, sealed with them), the magic
/// SysRq trigger (could reboot the host), irq, bus, fs.
const PROC_READONLY: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// What applying a plan left for the command to know.
#[derive(Debug, Default)]
pub struct Applied {
    /// An optional bind (the working directory) was skipped.
    pub skipped_optional: bool,
}

/// Builds the guest's view and pivots into it.
pub fn apply(plan: &Plan, mut journal: Option<&mut Journal>) -> Result<Applied> {
    let mut applied = Applied::default();
    // Nothing we mount may propagate back to the host's namespace.
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .context("making / private")?;

    let tree = mount_root(&plan.root)?;
    crate::ui::trace("root mounted");
    let create = plan.may_create();
    let mut record = |p: &Path, parent: BorrowedFd| -> Result<()> {
        match journal.as_deref_mut() {
            Some(j) => j.record(p, parent),
            None => Ok(()),
        }
    };
    let mut proc: Option<OwnedFd> = None;
    for step in &plan.steps {
        crate::ui::trace(step.reason());
        match step {
            Step::Proc => {
                let target =
                    tree.mount_point(Path::new("/proc"), Kind::Dir, create, &mut record)?;
                let m = new_fs("proc", &[], nosuid_nodev_noexec())
                    .context("mounting proc (needs a PID namespace of the guest's own)")?;
                attach(&m, &target).context("attaching the guest's /proc")?;
                proc = Some(m);
            }
            Step::Binfmt(regs) => {
                let proc = proc.as_ref().context("binfmt_misc needs /proc first")?;
                let target = at(proc.as_fd(), "sys/fs/binfmt_misc")?;
                let m = new_fs("binfmt_misc", &[], nosuid_nodev_noexec())
                    .context("mounting a private binfmt_misc (needs Linux 6.7 or later)")?;
                attach(&m, &target).context("attaching the private binfmt_misc")?;
                let inst = Instance {
                    dir: PathBuf::from(format!("/proc/self/fd/{}", m.as_raw_fd())),
                };
                for r in regs {
                    seal_interpreter(&r.interpreter)?;
                    inst.register(r)?;
                }
            }
            Step::ProcReadOnly => {
                let proc = proc.as_ref().context("no /proc")?;
                for p in PROC_READONLY {
                    match clone_tree(proc.as_fd(), p, true) {
                        Ok(t) => {
                            set_attrs(
                                &t,
                                Attrs {
                                    readonly: true,
                                    nosuid: false,
                                    nodev: false,
                                },
                            )?;
                            let target = at(proc.as_fd(), p)?;
                            attach(&t, &target).with_context(|| format!("sealing /proc/{p}"))?;
                        }
                        // sysrq-trigger is absent without CONFIG_MAGIC_SYSRQ.
                        Err(Errno::NOENT) => {}
                        Err(e) => return Err(e).with_context(|| format!("binding /proc/{p}")),
                    }
                }
            }
            Step::Sys => match clone_tree(CWD, "/sys", true) {
                Ok(t) => {
                    set_attrs(&t, READ_ONLY)?;
                    let target =
                        tree.mount_point(Path::new("/sys"), Kind::Dir, create, &mut record)?;
                    attach(&t, &target).context("binding /sys")?;
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e).context("binding /sys"),
            },
            Step::Dev { tty_gid } => {
                let target = tree.mount_point(Path::new("/dev"), Kind::Dir, create, &mut record)?;
                setup_dev(&target, *tty_gid)?;
            }
            Step::ResolvConf(host) => {
                // A tree without /etc gets none made for this.
                if tree
                    .open_in_root(Path::new("/etc"), OFlags::PATH | OFlags::DIRECTORY)
                    .is_err()
                {
                    continue;
                }
                let target = tree
                    .mount_point(
                        Path::new("/etc/resolv.conf"),
                        Kind::File,
                        create,
                        &mut record,
                    )
                    .context("the guest's /etc/resolv.conf")?;
                let t = clone_tree(CWD, host, false)
                    .with_context(|| format!("binding {}", host.display()))?;
                set_attrs(&t, READ_ONLY)?;
                attach(&t, &target).context("binding the host's resolv.conf")?;
            }
            Step::Bind(b) => match bind(&tree, b, create, &mut record) {
                Ok(()) => {}
                Err(e) if b.optional => {
                    applied.skipped_optional = true;
                    crate::ui::Ui::new(false).warn(format!(
                        "not binding {}: {e:#}; use --bind SRC:DST and --workdir",
                        b.dst.display()
                    ));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("binding {} on {}", b.src.display(), b.dst.display())
                    })
                }
            },
            Step::Mask(guest) => {
                let Ok(target) = tree.mount_point(guest, Kind::Dir, false, &mut record) else {
                    continue; // not visible in the guest: nothing to hide
                };
                let m = new_fs("tmpfs", &[("mode", "0555"), ("size", "4k")], readonly_all())?;
                attach(&m, &target).with_context(|| format!("hiding {}", guest.display()))?;
            }
        }
    }
    crate::ui::trace("mounts done");

    // Enter: pivot_root and detach the old root, so the host's tree is not
    // reachable from inside (a bare chroot would leave it reachable).
    nix::unistd::fchdir(tree.fd().as_raw_fd()).context("entering the guest's root")?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    crate::ui::trace("pivoted, old root detached");
    Ok(applied)
}

/// Mounts the guest's root and opens it. The root's own path is xroot's
/// choice (a store directory or the user's `--rootfs`), not the guest's.
fn mount_root(root: &Root) -> Result<Tree> {
    match root {
        Root::Tree(dir) => {
            let t = clone_tree(CWD, dir, false)
                .with_context(|| format!("binding {} onto itself", dir.display()))?;
            move_mount(
                t.as_fd(),
                "",
                CWD,
                dir,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .with_context(|| format!("binding {} onto itself", dir.display()))?;
            Tree::open(dir)
        }
        Root::Overlay { lower, scratch } => {
            let root = overlay(lower, scratch)?;
            Tree::open(&root)
        }
    }
}

/// Mounts a tmpfs on `mnt` and an overlay of `lower` + that tmpfs at
/// `mnt/root`. `userxattr`: in a user namespace overlayfs may only use
/// `user.*` xattrs (Linux 5.11+). Costs two mounts, no copy.
fn overlay(lower: &Path, mnt: &Path) -> Result<PathBuf> {
    mount(
        Some("tmpfs"),
        mnt,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .with_context(|| format!("mounting the ephemeral layer's tmpfs on {}", mnt.display()))?;
    for d in ["upper", "work", "root"] {
        std::fs::create_dir(mnt.join(d))
            .with_context(|| format!("creating {}", mnt.join(d).display()))?;
    }
    let esc = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(':', "\\:")
    };
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        esc(lower),
        esc(&mnt.join("upper")),
        esc(&mnt.join("work"))
    );
    let root = mnt.join("root");
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .with_context(|| {
        format!(
            "mounting an overlay of {} (needs Linux 5.11+ for overlayfs in a user namespace)",
            lower.display()
        )
    })?;
    Ok(root)
}

/// A user bind: the source cloned (with what is mounted below it), its
/// attributes set, attached on the mount point resolved in the root.
fn bind(
    tree: &Tree,
    b: &Bind,
    create: bool,
    record: &mut dyn FnMut(&Path, BorrowedFd) -> Result<()>,
) -> Result<()> {
    let t =
        clone_tree(CWD, &b.src, true).with_context(|| format!("opening {}", b.src.display()))?;
    set_attrs(&t, b.attrs())?;
    let target = tree.mount_point(&b.dst, b.kind, create, record)?;
    attach(&t, &target)?;
    Ok(())
}

/// Binds a qemu read-only onto itself in this namespace before its handler
/// opens it (flag F): the file behind every foreign process's
/// `/proc/PID/exe` is then on a read-only mount, and no guest can reopen
/// it for writing, whatever its ids.
fn seal_interpreter(path: &Path) -> Result<()> {
    let t = clone_tree(CWD, path, false)
        .with_context(|| format!("opening the interpreter {}", path.display()))?;
    set_attrs(
        &t,
        Attrs {
            readonly: true,
            nosuid: false,
            nodev: true,
        },
    )?;
    move_mount(
        t.as_fd(),
        "",
        CWD,
        path,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .with_context(|| format!("binding {} read-only", path.display()))?;
    Ok(())
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE)`).
fn clone_tree<P: rustix::path::Arg>(
    dir: BorrowedFd,
    path: P,
    recursive: bool,
) -> rustix::io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    open_tree(dir, path, flags)
}

/// A new, detached filesystem instance with `opts` and mount attributes.
fn new_fs(fstype: &str, opts: &[(&str, &str)], attrs: MountAttrFlags) -> Result<OwnedFd> {
    let fs =
        fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).with_context(|| format!("fsopen {fstype}"))?;
    for (k, v) in opts {
        fsconfig_set_string(&fs, *k, *v).with_context(|| format!("{fstype} option {k}={v}"))?;
    }
    fsconfig_create(&fs).with_context(|| format!("creating a {fstype} instance"))?;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).with_context(|| format!("fsmount {fstype}"))
}

fn nosuid_nodev_noexec() -> MountAttrFlags {
    MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC
}

fn readonly_all() -> MountAttrFlags {
    MountAttrFlags::MOUNT_ATTR_RDONLY | nosuid_nodev_noexec()
}

/// Attaches the detached mount `m` on the target descriptor.
fn attach(m: &OwnedFd, target: &OwnedFd) -> rustix::io::Result<()> {
    move_mount(
        m.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// `O_PATH` of `rel` below a mount xroot made itself (proc, /dev's tmpfs).
fn at(dir: BorrowedFd, rel: &str) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {rel}"))
}

/// Sets attributes on a whole (detached) mount tree with mount_setattr(2),
/// which leaves the other flags alone (a remount would have to repeat the
/// source's locked flags or be refused in a user namespace).
fn set_attrs(m: &OwnedFd, a: Attrs) -> Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let mut set = 0u64;
    for (on, bit) in [
        (a.readonly, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (a.nosuid, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (a.nodev, MountAttrFlags::MOUNT_ATTR_NODEV),
    ] {
        if on {
            set |= u64::from(bit.bits());
        }
    }
    if set == 0 {
        return Ok(());
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = CString::default();
    // SAFETY: a valid fd, an empty C string and a correctly sized mount_attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            m.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
            .context("setting mount attributes (needs Linux 5.12 or later)")
    }
}

/// A minimal /dev on a tmpfs, attached first and then filled relative to
/// its own descriptor: bound device nodes, a private devpts, /dev/shm and
/// the usual links.
fn setup_dev(target: &OwnedFd, tty_gid: bool) -> Result<()> {
    let dev = new_fs(
        "tmpfs",
        &[("mode", "0755"), ("size", "1m")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    attach(&dev, target).context("attaching /dev")?;
    for d in DEVICES {
        // An empty regular file as the mount point (no device node is made).
        rustix::fs::mknodat(
            &dev,
            d,
            rustix::fs::FileType::RegularFile,
            Mode::from_raw_mode(0o666),
            0,
        )
        .with_context(|| format!("creating /dev/{d}"))?;
        let host = Path::new("/dev").join(d);
        match clone_tree(CWD, &host, false) {
            Ok(t) => move_mount(
                t.as_fd(),
                "",
                dev.as_fd(),
                d,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .with_context(|| format!("binding {}", host.display()))?,
            // A host without this device (a minimal container's /dev).
            Err(Errno::NOENT) => {
                let _ = rustix::fs::unlinkat(&dev, d, rustix::fs::AtFlags::empty());
            }
            Err(e) => return Err(e).with_context(|| format!("binding {}", host.display())),
        }
    }
    for d in ["pts", "shm"] {
        rustix::fs::mkdirat(&dev, d, Mode::from_raw_mode(0o755))
            .with_context(|| format!("creating /dev/{d}"))?;
    }
    // newinstance: the guest's ptys are its own, not the host's. gid=5
    // (tty) only when that gid exists in the guest's id map.
    let mut pts_opts = vec![("newinstance", ""), ("ptmxmode", "0666"), ("mode", "0620")];
    if tty_gid {
        pts_opts.push(("gid", "5"));
    }
    let pts_opts: Vec<(&str, &str)> = pts_opts;
    let pts = new_devpts(&pts_opts)?;
    move_mount(
        pts.as_fd(),
        "",
        dev.as_fd(),
        "pts",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .context("attaching /dev/pts")?;
    let shm = new_fs(
        "tmpfs",
        &[("mode", "1777")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    move_mount(
        shm.as_fd(),
        "",
        dev.as_fd(),
        "shm",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .context("attaching /dev/shm")?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(target, &dev, name)
            .with_context(|| format!("creating /dev/{name}"))?;
    }
    Ok(())
}

/// devpts takes `newinstance` as a flag, the rest as strings.
fn new_devpts(opts: &[(&str, &str)]) -> Result<OwnedFd> {
    let fs = fsopen("devpts", FsOpenFlags::FSOPEN_CLOEXEC).context("fsopen devpts")?;
    for (k, v) in opts {
        if v.is_empty() {
            rustix::mount::fsconfig_set_flag(&fs, *k)
        } else {
            fsconfig_set_string(&fs, *k, *v)
        }
        .with_context(|| format!("devpts option {k}"))?;
    }
    fsconfig_create(&fs).context("creating a devpts instance")?;
    fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .context("fsmount devpts")
}
