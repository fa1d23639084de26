//! The sandbox as data: a [`Plan`] says everything about a guest — its
//! root, the ordered mount steps with their reasons, the process to start
//! — and is built by a [`Builder`] that holds every default in one place.
//! Nothing here touches the kernel: `mounts::apply` and `init` carry a plan
//! out, and are the only code that does. Plans are unit-tested without
//! root (order, flags, the read-only set, refused destinations).

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use super::user;
use crate::binfmt::Registration;
use crate::error::hinted;
use crate::rootfs::Kind;
use crate::userns::IdMap;

/// The guest's default PATH (Alpine's, which covers Debian's too).
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A bind mount from the host into the guest.
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub src: PathBuf,
    /// Absolute path inside the guest (resolved inside the root at apply).
    pub dst: PathBuf,
    pub readonly: bool,
    /// Directory or file: what the mount point must be.
    pub kind: Kind,
    /// The implicit working-directory bind: if its mount point cannot be
    /// made (a read-only tree), the guest runs without it, with a warning.
    pub optional: bool,
}

impl Bind {
    /// Mount attributes set on the bind (all of it, recursively).
    /// nosuid always: a setuid program on the host side of a bind must not
    /// gain host privileges in the guest, nor a guest-planted one in binds.
    /// nodev unless the source is a device the user handed in on purpose.
    pub fn attrs(&self) -> Attrs {
        Attrs {
            readonly: self.readonly,
            nosuid: true,
            nodev: !(self.src.starts_with("/dev") && self.kind == Kind::File),
        }
    }
}

/// Mount attributes (`mount_setattr(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub readonly: bool,
    pub nosuid: bool,
    pub nodev: bool,
}

/// What becomes the guest's `/`.
#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    /// The tree itself, bound onto itself (pivot_root needs a mount point).
    Tree(PathBuf),
    /// `--ephemeral`: an overlay of the tree under a tmpfs mounted on
    /// `scratch` (an empty store directory); writes vanish with the guest.
    Overlay { lower: PathBuf, scratch: PathBuf },
}

/// One mount step, applied in order by `mounts::apply`.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A `/proc` of the guest's own PID namespace.
    Proc,
    /// A private binfmt_misc instance on `/proc/sys/fs/binfmt_misc`, with
    /// these handlers; each interpreter is first bound read-only onto
    /// itself so no guest can reopen it for writing (`/proc/PID/exe`).
    Binfmt(Vec<Registration>),
    /// The non-namespaced parts of `/proc` read-only (host sysctls,
    /// sysrq-trigger, ...): guest root may be host uid 0 to the kernel.
    ProcReadOnly,
    /// The host's `/sys`, read-only (sysfs cannot be mounted here).
    Sys,
    /// A minimal `/dev` on a tmpfs: bound host device nodes, a private
    /// devpts (`gid=5` when the tty group is mapped), `/dev/shm`.
    Dev { tty_gid: bool },
    /// The host's DNS configuration, read-only, on the guest's
    /// `/etc/resolv.conf` (followed inside the tree when it is a symlink).
    ResolvConf(PathBuf),
    /// A user bind (working directory, `--bind`, `--ro-bind`).
    Bind(Bind),
    /// An empty read-only tmpfs over a guest path that a bind made visible
    /// and the guest must not reach (the xroot store).
    Mask(PathBuf),
}

impl Step {
    /// Why the step is there (for `XROOT_TRACE` and the docs).
    pub fn reason(&self) -> &'static str {
        match self {
            Step::Proc => "proc of the guest's PID namespace",
            Step::Binfmt(_) => "private binfmt_misc with read-only interpreters",
            Step::ProcReadOnly => "host-wide parts of /proc read-only",
            Step::Sys => "host /sys read-only",
            Step::Dev { .. } => "minimal /dev with private devpts",
            Step::ResolvConf(_) => "host DNS configuration read-only",
            Step::Bind(_) => "user bind",
            Step::Mask(_) => "xroot store hidden from the guest",
        }
    }
}

/// The process side of a guest.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Working directory inside the guest.
    pub workdir: PathBuf,
    /// Where to start instead if `workdir` cannot be entered because its
    /// optional bind was skipped.
    pub workdir_fallback: Option<PathBuf>,
    /// Run with a 32-bit personality (x86 on x86_64, ARM on arm64).
    pub personality32: bool,
    pub idmap: IdMap,
    /// --user: run the command as this guest user.
    pub user: Option<user::Wanted>,
    /// --create-user: add the --user NAME to the guest first if missing.
    pub create_user: bool,
    /// The working directory was not asked for: use the --user's home.
    pub workdir_is_default: bool,
    /// Caller fds to close in the guest's PID 1.
    pub close_fds: Vec<RawFd>,
    /// The caller's terminal, when any of fds 0-2 is one: the guest then
    /// gets a pty of its own, relayed (see `pty`).
    pub terminal: Option<super::pty::Terminal>,
    /// --preserve-fds N: fds 3..3+N reach the command; every other fd
    /// above 2 is closed at its exec.
    pub preserve_fds: u32,
    /// --network.
    pub network: super::confine::Network,
}

/// Everything about one guest, decided before any namespace exists.
#[derive(Debug, Clone)]
pub struct Plan {
    pub root: Root,
    pub steps: Vec<Step>,
    /// Where PID 1 records the mount points it creates in the tree (None:
    /// it creates none there; with an overlay they go to the tmpfs layer).
    pub journal: Option<PathBuf>,
    pub config: Config,
}

impl Plan {
    /// Whether PID 1 may create missing mount points: in the throwaway
    /// layer always, in the tree only with a journal to undo them.
    pub fn may_create(&self) -> bool {
        matches!(self.root, Root::Overlay { .. }) || self.journal.is_some()
    }
}

/// Builds a [`Plan`]. Defaults, all here: hostname `xroot`, a clean
/// environment (PATH, HOME=/root, USER, LOGNAME, SHELL, TERM, LANG),
/// working directory `/`, no binds, no binfmt handlers, the caller's id
/// map, proc + read-only host parts + /sys + /dev always.
pub struct Builder {
    root: PathBuf,
    ephemeral: Option<PathBuf>,
    binds: Vec<Bind>,
    masks: Vec<PathBuf>,
    resolv_conf: Option<PathBuf>,
    binfmt: Vec<Registration>,
    journal: Option<PathBuf>,
    env: Vec<(String, String)>,
    cfg: Config,
}

impl Builder {
    pub fn new(root: &Path, argv: Vec<CString>, idmap: IdMap) -> Builder {
        let env = [
            ("PATH", GUEST_PATH),
            ("HOME", "/root"),
            ("USER", "root"),
            ("LOGNAME", "root"),
            ("SHELL", "/bin/sh"),
            ("TERM", "xterm"),
            ("LANG", "C.UTF-8"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Builder {
            root: root.to_path_buf(),
            ephemeral: None,
            binds: Vec::new(),
            masks: Vec::new(),
            resolv_conf: None,
            binfmt: Vec::new(),
            journal: None,
            env,
            cfg: Config {
                hostname: "xroot".into(),
                argv,
                env: Vec::new(),
                workdir: PathBuf::from("/"),
                workdir_fallback: None,
                personality32: false,
                idmap,
                user: None,
                create_user: false,
                workdir_is_default: true,
                close_fds: Vec::new(),
                terminal: None,
                preserve_fds: 0,
                network: super::confine::Network::Host,
            },
        }
    }

    pub fn hostname(mut self, h: String) -> Self {
        self.cfg.hostname = h;
        self
    }

    /// Sets (or replaces) one environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn workdir(mut self, w: PathBuf, fallback: Option<PathBuf>) -> Self {
        self.cfg.workdir = w;
        self.cfg.workdir_is_default = false;
        self.cfg.workdir_fallback = fallback;
        self.cfg.workdir_is_default = false;
        self
    }

    /// The working directory was not asked for (`--user` may replace it
    /// with that user's home).
    pub fn default_workdir(mut self) -> Self {
        self.cfg.workdir_is_default = true;
        self
    }

    pub fn bind(mut self, b: Bind) -> Self {
        self.binds.push(b);
        self
    }

    /// Hides `guest` (if a bind exposes it) behind an empty read-only tmpfs.
    pub fn mask(mut self, guest: PathBuf) -> Self {
        self.masks.push(guest);
        self
    }

    pub fn resolv_conf(mut self, host_file: Option<PathBuf>) -> Self {
        self.resolv_conf = host_file;
        self
    }

    pub fn binfmt(mut self, regs: Vec<Registration>, personality32: bool) -> Self {
        self.binfmt = regs;
        self.cfg.personality32 = personality32;
        self
    }

    /// `--ephemeral`: the throwaway layer's tmpfs goes on `scratch`.
    pub fn ephemeral(mut self, scratch: Option<PathBuf>) -> Self {
        self.ephemeral = scratch;
        self
    }

    /// Lets PID 1 create missing mount points in the tree, recorded here.
    pub fn journal(mut self, path: PathBuf) -> Self {
        self.journal = Some(path);
        self
    }

    pub fn user(mut self, u: Option<user::Wanted>, create: bool) -> Self {
        self.cfg.user = u;
        self.cfg.create_user = create;
        self
    }

    /// Gives the guest a pty of its own relayed to `t` (when the caller has
    /// a terminal: `pty::Terminal::detect`).
    pub fn terminal(mut self, t: Option<super::pty::Terminal>) -> Self {
        self.cfg.terminal = t;
        self
    }

    /// Passes fds 3..3+n to the command (`--preserve-fds`).
    pub fn preserve_fds(mut self, n: u32) -> Self {
        self.cfg.preserve_fds = n;
        self
    }

    pub fn network(mut self, n: super::confine::Network) -> Self {
        self.cfg.network = n;
        self
    }

    pub fn close_fd(mut self, fd: RawFd) -> Self {
        self.cfg.close_fds.push(fd);
        self
    }

    /// Checks the binds and lays out the steps in their order:
    /// proc → binfmt → read-only proc → sys → dev → resolv.conf → user
    /// binds (last, so they may cover anything above) → masks (after the
    /// binds they mask).
    pub fn build(self) -> Result<Plan> {
        for b in &self.binds {
            check_destination(&b.dst)?;
        }
        let tty_gid = self.cfg.idmap.maps_gid(5);
        let mut steps = vec![Step::Proc];
        if !self.binfmt.is_empty() {
            steps.push(Step::Binfmt(self.binfmt));
        }
        steps.extend([Step::ProcReadOnly, Step::Sys, Step::Dev { tty_gid }]);
        if let Some(rc) = self.resolv_conf {
            steps.push(Step::ResolvConf(rc));
        }
        steps.extend(self.binds.into_iter().map(Step::Bind));
        steps.extend(self.masks.into_iter().map(Step::Mask));
        let root = match self.ephemeral {
            None => Root::Tree(self.root),
            Some(scratch) => Root::Overlay {
                lower: self.root,
                scratch,
            },
        };
        let journal = match root {
            Root::Tree(_) => self.journal,
            Root::Overlay { .. } => None,
        };
        let mut cfg = self.cfg;
        cfg.env = self
            .env
            .iter()
            .map(|(k, v)| {
                CString::new(format!("{k}={v}")).map_err(|_| {
                    hinted(
                        format!("--env {k}: the value contains a NUL byte"),
                        "remove it",
                    )
                })
            })
            .collect::<Result<_>>()?;
        Ok(Plan {
            root,
            steps,
            journal,
            config: cfg,
        })
    }
}

/// Refuses bind destinations that would replace what the sandbox itself
/// provides: the root, `/proc` (the guest's PID namespace view, needed by
/// xroot's own setup), and the whole of `/dev` or `/sys`.
pub fn check_destination(dst: &Path) -> Result<()> {
    if !dst.is_absolute() || dst.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(hinted(
            format!(
                "bind destination {} must be an absolute path without '..'",
                dst.display()
            ),
            "write it as SRC:/path/in/guest",
        ));
    }
    let clean: PathBuf = dst.components().collect();
    let refused = if clean == Path::new("/") {
        Some("the guest's root; to run in another tree use --rootfs DIR")
    } else if clean.starts_with("/proc") {
        Some("the guest's /proc, which xroot mounts for the guest's own processes")
    } else if clean == Path::new("/dev") || clean == Path::new("/sys") {
        Some("a directory xroot sets up itself; bind single entries below it instead (e.g. /dev/kvm)")
    } else {
        None
    };
    match refused {
        Some(why) => Err(hinted(
            format!("cannot bind onto {}: it is {why}", dst.display()),
            "choose another destination with SRC:DST",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> Builder {
        Builder::new(
            Path::new("/store/rootfs/aarch64"),
            vec![CString::new("/bin/true").unwrap()],
            IdMap::for_caller(),
        )
    }

    fn bind(dst: &str, ro: bool) -> Bind {
        Bind {
            src: PathBuf::from("/src"),
            dst: PathBuf::from(dst),
            readonly: ro,
            kind: Kind::Dir,
            optional: false,
        }
    }

    #[test]
    fn steps_come_in_order_with_binds_last_and_masks_after_them() {
        let plan = builder()
            .resolv_conf(Some(PathBuf::from("/etc/resolv.conf")))
            .bind(bind("/work", false))
            .mask(PathBuf::from("/work/store"))
            .build()
            .unwrap();
        let names: Vec<&str> = plan.steps.iter().map(Step::reason).collect();
        assert_eq!(
            names,
            [
                "proc of the guest's PID namespace",
                "host-wide parts of /proc read-only",
                "host /sys read-only",
                "minimal /dev with private devpts",
                "host DNS configuration read-only",
                "user bind",
                "xroot store hidden from the guest",
            ]
        );
    }

    #[test]
    fn binfmt_comes_right_after_proc_and_before_it_is_sealed() {
        let reg = Registration {
            name: "qemu-aarch64".into(),
            magic: crate::specs::Magic {
                magic: vec![0x7f; 20],
                mask: vec![0xff; 20],
            },
            interpreter: PathBuf::from("/usr/bin/qemu-aarch64-static"),
            flags: crate::binfmt::Flags::parse("FC"),
        };
        let plan = builder().binfmt(vec![reg], false).build().unwrap();
        assert_eq!(plan.steps[0], Step::Proc);
        assert!(matches!(plan.steps[1], Step::Binfmt(_)));
        assert_eq!(plan.steps[2], Step::ProcReadOnly);
    }

    #[test]
    fn every_bind_is_nosuid_and_readonly_where_asked() {
        let plan = builder()
            .bind(bind("/a", false))
            .bind(bind("/b", true))
            .build()
            .unwrap();
        let attrs: Vec<Attrs> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Bind(b) => Some(b.attrs()),
                _ => None,
            })
            .collect();
        assert!(attrs.iter().all(|a| a.nosuid && a.nodev));
        assert_eq!(
            attrs.iter().map(|a| a.readonly).collect::<Vec<_>>(),
            [false, true]
        );
        let mut dev = bind("/dev/kvm", false);
        dev.src = PathBuf::from("/dev/kvm");
        dev.kind = Kind::File;
        assert!(!dev.attrs().nodev);
    }

    #[test]
    fn destinations_that_replace_the_sandbox_are_refused() {
        for d in [
            "/",
            "/proc",
            "/proc/sys",
            "/dev",
            "/sys",
            "//",
            "/proc/",
            "relative",
            "/a/../b",
        ] {
            assert!(check_destination(Path::new(d)).is_err(), "{d}");
        }
        for d in ["/dev/kvm", "/sys2", "/work", "/etc/hosts"] {
            assert!(check_destination(Path::new(d)).is_ok(), "{d}");
        }
    }

    #[test]
    fn an_ephemeral_plan_never_journals_and_may_create_in_its_layer() {
        let plan = builder()
            .journal(PathBuf::from("/store/locks/x.mountpoints"))
            .ephemeral(Some(PathBuf::from("/store/mnt")))
            .build()
            .unwrap();
        assert_eq!(plan.journal, None);
        assert!(plan.may_create());
        let plan = builder().build().unwrap();
        assert!(!plan.may_create());
    }

    #[test]
    fn env_defaults_are_replaced_not_duplicated() {
        let plan = builder()
            .env("TERM", "vt100")
            .env("A", "b")
            .build()
            .unwrap();
        let env: Vec<String> = plan
            .config
            .env
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(env.iter().filter(|e| e.starts_with("TERM=")).count(), 1);
        assert!(env.contains(&"TERM=vt100".to_string()));
        assert!(env.contains(&"A=b".to_string()));
    }
}
