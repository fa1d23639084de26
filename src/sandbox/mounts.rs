//! Building the guest's filesystem view, inside the new mount namespace.
//! Each step says why it is there; the order follows bubblewrap's.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::Config;
use crate::binfmt::fs::Instance;

const NONE: Option<&str> = None;

/// Host device nodes bound into the guest's /dev. Device nodes cannot be
/// created in a user namespace, and binding the host's is what a rootless
/// runtime must do anyway.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the view under `cfg.rootfs` and pivots into it.
pub fn setup(cfg: &Config) -> Result<()> {
    // 1. Nothing we mount may propagate back to the host's namespace.
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .context("making / private")?;

    // 2. pivot_root needs the new root to be a mount point: the rootfs bound
    //    onto itself, or for --ephemeral an overlay whose writable layer is
    //    a tmpfs that vanishes with this mount namespace.
    let root = &match &cfg.ephemeral {
        None => {
            bind(&cfg.rootfs, &cfg.rootfs, false)
                .with_context(|| format!("binding {} onto itself", cfg.rootfs.display()))?;
            cfg.rootfs.clone()
        }
        Some(mnt) => overlay(&cfg.rootfs, mnt)?,
    };

    crate::ui::trace("root mounted");
    // 3. A /proc of the guest's own PID namespace (mounted by its PID 1).
    let proc = root.join("proc");
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .with_context(|| format!("mounting proc on {}", proc.display()))?;

    // 4. A private binfmt_misc instance: handlers registered here exist only
    //    in this user namespace and vanish with it. F makes the kernel open
    //    each qemu now, by its host path, before the host's root goes away.
    if !cfg.binfmt.is_empty() {
        let inst = Instance {
            dir: proc.join("sys/fs/binfmt_misc"),
        };
        mount(
            Some("binfmt_misc"),
            &inst.dir,
            Some("binfmt_misc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            NONE,
        )
        .with_context(|| {
            format!(
                "mounting a private binfmt_misc on {} (needs Linux 6.7 or later)",
                inst.dir.display()
            )
        })?;
        for r in &cfg.binfmt {
            inst.register(r)?;
        }
    }

    crate::ui::trace("proc and binfmt_misc ready");
    // 5. Guest root is (for a root caller) the host's uid 0 to the kernel's
    //    permission checks, so the non-namespaced parts of /proc are made
    //    read-only: /proc/sys (host sysctls, and the binfmt_misc instance
    //    above, now sealed), /proc/sysrq-trigger (could reboot the host),
    //    /proc/irq, /proc/bus, /proc/fs. As Docker and bubblewrap do.
    //    (Each is bound if it exists: the bind's ENOENT is the test, one
    //    syscall instead of two; sysrq-trigger is absent without CONFIG_MAGIC_SYSRQ.)
    for p in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
        let p = proc.join(p);
        if bind_if_exists(&p, &p, true)
            .with_context(|| format!("binding {} read-only", p.display()))?
        {
            make_readonly(&p, true)?;
        }
    }

    // 6. /sys: sysfs cannot be mounted in a user namespace without its own
    //    network namespace, so the host's is bound, read-only, recursively.
    //    (xroot outside created the mount point if the rootfs lacked it.)
    let sys = root.join("sys");
    if bind_if_exists(Path::new("/sys"), &sys, true)
        .with_context(|| format!("binding /sys on {}", sys.display()))?
    {
        make_readonly(&sys, true)?;
    }

    // 7. A minimal /dev on a tmpfs: bound device nodes, a private devpts,
    //    /dev/shm, and the usual links.
    setup_dev(&root.join("dev"), cfg.map_tty_gid)?;

    // 8. Host DNS configuration, read-only, so `apk add` resolves names and
    //    the guest cannot edit the host's file.
    if let Some(rc) = &cfg.resolv_conf {
        let dst = root.join("etc/resolv.conf");
        if dst.is_file() {
            bind(rc, &dst, false)
                .with_context(|| format!("binding {} on {}", rc.display(), dst.display()))?;
            make_readonly(&dst, false)?;
        }
    }

    // 9. User binds (the current directory, --bind, --ro-bind), last so they
    //    may cover anything above.
    for b in &cfg.binds {
        let dst = root.join(b.dst.strip_prefix("/").unwrap_or(&b.dst));
        bind(&b.src, &dst, true)
            .with_context(|| format!("binding {} on {}", b.src.display(), b.dst.display()))?;
        if b.readonly {
            make_readonly(&dst, true)?;
        }
    }

    crate::ui::trace("mounts done");
    // 10. (The hostname is set by the command's process, in the UTS
    //     namespace it creates: see `init::run`.)

    // 11. Enter: pivot_root and detach the old root, so the host's tree is
    //     not reachable from inside (a bare chroot would leave it reachable).
    nix::unistd::chdir(root).with_context(|| format!("entering {}", root.display()))?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    crate::ui::trace("pivoted, old root detached");
    Ok(())
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
        fs::create_dir(mnt.join(d))
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

fn bind(src: &Path, dst: &Path, recursive: bool) -> nix::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, NONE, flags, NONE)
}

/// [`bind`], but a missing source or mount point is not an error: Ok(false).
fn bind_if_exists(src: &Path, dst: &Path, recursive: bool) -> nix::Result<bool> {
    match bind(src, dst, recursive) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes a mount (and, if `recursive`, every mount below it) read-only with
/// mount_setattr(2), which leaves the other flags alone: a plain remount
/// would have to repeat the source's locked flags (nosuid, nodev, ...) or be
/// refused in a user namespace.
fn make_readonly(path: &Path, recursive: bool) -> Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 1;
    const AT_RECURSIVE: libc::c_int = 0x8000;
    let c = CString::new(path.as_os_str().as_bytes()).context("path with NUL")?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: valid C string and a correctly sized mount_attr struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOSYS) {
        // Linux < 5.12: remount keeping the flags statvfs reports.
        let st = nix::sys::statvfs::statvfs(path)
            .with_context(|| format!("statvfs {}", path.display()))?;
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        use nix::sys::statvfs::FsFlags;
        for (f, m) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ] {
            if st.flags().contains(f) {
                flags |= m;
            }
        }
        return mount(NONE, path, NONE, flags, NONE)
            .with_context(|| format!("remounting {} read-only", path.display()));
    }
    Err(err).with_context(|| format!("making {} read-only", path.display()))
}

fn setup_dev(dev: &Path, tty_gid: bool) -> Result<()> {
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )
    .with_context(|| format!("mounting tmpfs on {}", dev.display()))?;
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        let p = dev.join(d);
        // An empty regular file as the mount point: mknod makes it in one
        // syscall (open+close would be two); no device node is created.
        nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFREG,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            0,
        )
        .with_context(|| format!("creating {}", p.display()))?;
        // A host without this device (a minimal container's /dev): skip it.
        if !bind_if_exists(&host, &p, false)
            .with_context(|| format!("binding {} on {}", host.display(), p.display()))?
        {
            let _ = fs::remove_file(&p);
        }
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).with_context(|| format!("creating {}", pts.display()))?;
    // newinstance: the guest's ptys are its own, not the host's.
    // gid=5 (tty) only when that gid exists in the guest's id map.
    let opts = if tty_gid {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        "newinstance,ptmxmode=0666,mode=0620"
    };
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(opts),
    )
    .with_context(|| format!("mounting devpts on {}", pts.display()))?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).with_context(|| format!("creating {}", shm.display()))?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .with_context(|| format!("mounting tmpfs on {}", shm.display()))?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p: PathBuf = dev.join(name);
        symlink(target, &p).with_context(|| format!("creating {}", p.display()))?;
    }
    Ok(())
}
