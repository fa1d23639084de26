//! The command line: definitions only. Parsing happens here; every
//! decision is in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "xroot",
    version,
    about = "Step into a Linux system of another CPU architecture in one command"
)]
#[command(
    after_help = "Examples:\n  xroot fetch aarch64\n  xroot shell s390x\n  xroot run riscv64 -- uname -m\n  xroot run ppc64le -- sh -c 'exit 7'",
    after_long_help = "Examples:\n  xroot fetch aarch64\n  xroot shell s390x\n  xroot run riscv64 -- uname -m\n  xroot run ppc64le -- sh -c 'exit 7'\n\n\
Environment (each also shown with its option in `xroot SUBCOMMAND --help`):\n  \
XROOT_HOME                 the store [default: $XDG_DATA_HOME/xroot or ~/.local/share/xroot]\n  \
XROOT_SPECS_DIR            your own arch specs [default: $XROOT_HOME/specs]\n  \
XROOT_MIRROR               --mirror\n  \
XROOT_TIMEOUT              --timeout\n  \
XROOT_RETRIES              --retries\n  \
XROOT_MAX_UNPACKED         --max-size\n  \
XROOT_QEMU_PRELINK         --qemu-prelink\n  \
XROOT_MULTIARCH            --multiarch\n  \
XROOT_APK_REPOSITORIES     repositories for --packages (URLs or guest paths)\n  \
XROOT_APK_ALLOW_UNTRUSTED  1: apk add --allow-untrusted (tests, local repositories)\n  \
XROOT_TRACE                1: print where launch time goes"
)]
pub struct Cli {
    /// Print only errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Give up on a connection, or on a read that stalls, after this many seconds.
    #[arg(long, global = true, env = "XROOT_TIMEOUT", value_name = "SECONDS", default_value = "30",
          value_parser = crate::validate::seconds, hide_short_help = true)]
    pub timeout: f64,
    /// Requests per download in all, retries of transient failures and
    /// resumes of a cut body included (1: neither).
    #[arg(long, global = true, env = "XROOT_RETRIES", value_name = "N", default_value = "3",
          value_parser = crate::validate::attempts, hide_short_help = true)]
    pub retries: u32,
    /// Refuse to unpack an archive to more than this many bytes.
    #[arg(long, global = true, env = "XROOT_MAX_UNPACKED", value_name = "BYTES",
          default_value = "8589934592", value_parser = crate::validate::bytes, hide_short_help = true)]
    pub max_size: u64,
    /// Run guests on the store's prelinked copy of qemu (0: the system's qemu).
    #[arg(long, global = true, env = "XROOT_QEMU_PRELINK", value_name = "1|0", default_value = "1",
          value_parser = crate::validate::switch, hide_short_help = true)]
    pub qemu_prelink: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `defer`: clap builds a subcommand's arguments only when that subcommand
/// is used (help, completions and man pages still see all of them). Building
/// every subcommand's definitions cost ~0.1 ms of each `xroot run`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Download, verify and install a rootfs.
    Fetch(FetchArgs),
    /// Run a command inside a rootfs.
    Run(RunArgs),
    /// Start an interactive login shell inside a rootfs.
    Shell(ShellArgs),
    /// List known architectures, what runs them here, and what is installed.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove installed rootfs trees.
    Rm {
        /// ARCH or ARCH@NAME.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Inspect or change the host's binfmt_misc handlers.
    #[command(subcommand)]
    Binfmt(BinfmtCommand),
    /// Check this machine for everything xroot needs.
    Doctor {
        #[arg(long)]
        json: bool,
        /// Explain in full what `run --accel` would run natively in this
        /// tree (ARCH[@NAME] or a directory).
        #[arg(long, value_name = "ARCH|DIR")]
        accel: Option<String>,
    },
    /// Put an installed rootfs back to its pristine release (from the
    /// cached tarball, verified again; downloaded only if not cached).
    Reset {
        /// ARCH or ARCH@NAME.
        target: String,
    },
    /// Write an installed rootfs to a tarball (.tar, .tar.gz, .tar.xz,
    /// .tar.zst by extension), importable elsewhere with `fetch --from`,
    /// or as a container image (`--format oci`: `podman load -i FILE`).
    Export {
        /// ARCH or ARCH@NAME.
        target: String,
        /// Output file.
        file: PathBuf,
        /// tar: a tarball, compressed by FILE's extension; oci: an OCI image
        /// archive (oci-archive); docker-archive: as `docker save` writes.
        #[arg(long, value_enum, default_value = "tar")]
        format: ExportFormat,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (xroot.1 and one per subcommand) into a directory.
    Man {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Where the rootfs comes from: alpine (release tarball), apk (built
    /// from apk repositories), tarball (--from) [default: the arch's spec]
    #[arg(long, value_name = "KIND")]
    pub source: Option<String>,
    /// apk repository URL for --source apk and --packages (repeatable) [default: the spec's; $XROOT_APK_REPOSITORIES]
    #[arg(long = "repo", value_name = "URL")]
    pub repos: Vec<String>,
    /// Also trust this public key (PEM) for apk repository signatures (repeatable)
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// Accept unsigned or badly signed apk indexes and packages (unsafe: for local test repositories)
    #[arg(long)]
    pub allow_untrusted: bool,
    /// Alpine mirror (http://, https:// or file://) [default: https://dl-cdn.alpinelinux.org/alpine]
    #[arg(long, value_name = "URL", env = "XROOT_MIRROR")]
    pub mirror: Option<String>,
    /// Alpine release branch, e.g. v3.20, edge [default: the arch's spec, usually latest-stable]
    #[arg(long)]
    pub branch: Option<String>,
    /// Debian suite [default: bookworm; unstable for debian-ports]
    #[arg(long, value_name = "SUITE")]
    pub suite: Option<String>,
    /// Trust this OpenPGP keyring for a Debian archive instead of the built-in one
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// Debian package set: essential, minbase or buildd (mmdebstrap's variants) [default: minbase]
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Architectures (or aliases), each optionally ARCH@NAME to keep several.
    /// Several arches are downloaded in parallel.
    #[arg(required = true, value_name = "ARCH")]
    pub arches: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Install under this name (same as ARCH@NAME).
    #[arg(long)]
    pub name: Option<String>,
    /// Fetch and replace even if installed.
    #[arg(long)]
    pub force: bool,
    /// Install this tarball (URL or file) instead of the arch's default
    /// source, or this container image's build for the arch (installed as
    /// ARCH@NAME): docker://[HOST/]NAME[:TAG][@sha256:DIGEST], oci:DIR[:TAG],
    /// oci-archive:FILE[:TAG] or docker-archive:FILE.
    #[arg(long, value_name = "URL|FILE|IMAGE", value_parser = crate::validate::from)]
    pub from: Option<String>,
    /// Expected sha256 of --from.
    #[arg(long, value_name = "HEX", requires = "from", value_parser = crate::validate::sha256)]
    pub sha256: Option<String>,
    /// Install these apk packages (natively, verified against the signed
    /// index) before the tree is committed, or into an installed tree;
    /// from --repo, else the Alpine mirror/branch, else the tree's own
    /// /etc/apk/repositories.
    /// With a Debian source: Debian packages installed with the bootstrap.
    #[arg(long, value_name = "PKG,...", value_delimiter = ',')]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub binfmt: BinfmtArgs,
}

/// What `xroot export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Tar,
    Oci,
    DockerArchive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BinfmtMode {
    /// A binfmt_misc instance private to the guest (Linux 6.7+): the host's handlers are untouched.
    Private,
    /// The host's global handlers (installed by `xroot binfmt install`, or by root automatically).
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkMode {
    /// The caller's network namespace.
    Host,
    /// A network namespace of the guest's own, with only a loopback interface.
    None,
}

#[derive(Debug, Args)]
pub struct BinfmtArgs {
    /// Which binfmt_misc handlers run foreign binaries [default: private when the kernel supports it]
    #[arg(long, value_enum)]
    pub binfmt: Option<BinfmtMode>,
    /// Use this qemu-user binary (must be statically linked).
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// With private handlers: register every foreign arch that has a qemu,
    /// not just the guest's, so a guest program can exec programs of other
    /// arches (costs ~0.3 ms per launch).
    #[arg(long, env = "XROOT_MULTIARCH")]
    pub multiarch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CwdBind {
    /// The top of the git work tree the current directory is in, else the directory.
    Project,
    /// Only the current directory.
    Dir,
    /// Nothing: the guest starts in its home.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dns {
    /// The host's resolv.conf, read-only (followed inside the tree if the guest's is a symlink).
    Host,
    /// The guest's own /etc/resolv.conf, untouched.
    Guest,
}

#[derive(Debug, Args)]
pub struct GuestArgs {
    /// Use this directory as the root instead of an installed rootfs.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Bind a host path into the guest (read-write). DST defaults to SRC.
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind: Vec<String>,
    /// Bind a host path into the guest, read-only.
    #[arg(long, value_name = "SRC[:DST]")]
    pub ro_bind: Vec<String>,
    /// Working directory inside the guest [default: the current directory, bound at the same path].
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Set an environment variable in the guest.
    #[arg(long, value_name = "K=V", value_parser = crate::validate::env)]
    pub env: Vec<String>,
    /// Hostname inside the guest [default: xroot-ARCH].
    #[arg(long, value_parser = crate::validate::hostname)]
    pub hostname: Option<String>,
    /// Throwaway run: writes go to a tmpfs layer (overlayfs) and vanish at exit;
    /// the installed rootfs stays byte-for-byte unchanged.
    #[arg(long)]
    pub ephemeral: bool,
    /// Which host directory is bound as the working directory: the
    /// enclosing git work tree (so `../configure` works from a build
    /// directory), only the current directory, or none. Never bound where
    /// the guest has a non-empty directory of its own at that path.
    #[arg(long, value_enum, default_value_t = CwdBind::Project, value_name = "WHAT")]
    pub bind_cwd: CwdBind,
    /// DNS configuration in the guest: the host's /etc/resolv.conf
    /// (read-only), or the guest's own file left as it is.
    #[arg(long, value_enum, default_value_t = Dns::Host)]
    pub dns: Dns,
    /// Run as this guest user (NAME, UID or UID:GID), with its HOME.
    #[arg(long, value_name = "NAME|UID[:GID]", value_parser = crate::validate::user)]
    pub user: Option<String>,
    /// Create the --user NAME in the guest if it does not exist.
    #[arg(long, requires = "user")]
    pub create_user: bool,
    /// Pass the caller's file descriptors 3 to 3+N-1 to the command; every
    /// other descriptor above 2 is closed before it starts.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// The guest's network: `host` shares the caller's (its interfaces and
    /// 127.0.0.1 services); `none` gives it a namespace with only loopback.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = NetworkMode::Host)]
    pub network: NetworkMode,
    /// Install these apk packages into the tree first, if it lacks them
    /// (natively, verified; see `fetch --packages`).
    #[arg(long, value_name = "PKG,...", value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Run the guest's cc1, cc1plus and assembler natively, from the host's
    /// cross toolchain of the same version (Debian's gcc-N-TRIPLE, binutils-TRIPLE);
    /// `--accel=stable-updates` also when only Debian stable updates differ.
    /// See `xroot doctor --accel TARGET`.
    #[arg(long, value_enum, value_name = "MATCH", num_args = 0..=1, require_equals = true, default_missing_value = "exact", env = "XROOT_ACCEL")]
    pub accel: Option<AccelMode>,
    #[command(flatten)]
    pub binfmt: BinfmtArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelMode {
    /// Native programs only of exactly the guest's source version.
    Exact,
    /// Also when the versions differ only by Debian stable updates (+debNuM).
    StableUpdates,
    /// No acceleration (e.g. to override XROOT_ACCEL).
    Off,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// ARCH or ARCH@NAME (may be omitted with --rootfs: detected from its /bin/sh).
    pub arch: Option<String>,
    #[command(flatten)]
    pub guest: GuestArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// ARCH or ARCH@NAME.
    pub arch: Option<String>,
    #[command(flatten)]
    pub guest: GuestArgs,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum BinfmtCommand {
    /// Show the host's handler for each arch and whether it fits.
    Status {
        arches: Vec<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "PATH")]
        qemu: Option<PathBuf>,
    },
    /// Register host handlers (flags F, C and, where supported, P). Needs root.
    Install {
        arches: Vec<String>,
        /// Replace a handler that exists but does not fit.
        #[arg(long)]
        force: bool,
        #[arg(long, value_name = "PATH")]
        qemu: Option<PathBuf>,
    },
    /// Remove host handlers for these arches. Needs root.
    Remove {
        #[arg(required = true)]
        arches: Vec<String>,
    },
}
