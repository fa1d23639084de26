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
    after_help = "Examples:\n  xroot fetch aarch64\n  xroot shell s390x\n  xroot run riscv64 -- uname -m\n  xroot run ppc64le -- sh -c 'exit 7'"
)]
pub struct Cli {
    /// Print only errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
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
    /// .tar.zst by extension), importable elsewhere with `fetch --from`.
    Export {
        /// ARCH or ARCH@NAME.
        target: String,
        /// Output file.
        file: PathBuf,
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
    /// Alpine mirror (http://, https:// or file://) [default: $XROOT_MIRROR or https://dl-cdn.alpinelinux.org/alpine]
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Alpine release branch, e.g. v3.20, edge [default: the arch's spec, usually latest-stable]
    #[arg(long)]
    pub branch: Option<String>,
    /// Refuse to unpack more than this many bytes [default: $XROOT_MAX_UNPACKED or 8 GiB]
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<u64>,
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
    /// Install this tarball (URL or file) instead of the arch's default source.
    #[arg(long, value_name = "URL|FILE")]
    pub from: Option<String>,
    /// Expected sha256 of --from.
    #[arg(long, value_name = "HEX", requires = "from")]
    pub sha256: Option<String>,
    /// Install these Alpine packages (`apk add`) after unpacking; needs the
    /// network (the mirror option also sets /etc/apk/repositories).
    #[arg(long, value_name = "PKG,...", value_delimiter = ',')]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub binfmt: BinfmtArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BinfmtMode {
    /// A binfmt_misc instance private to the guest (Linux 6.7+): the host's handlers are untouched.
    Private,
    /// The host's global handlers (installed by `xroot binfmt install`, or by root automatically).
    Host,
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
    #[arg(long, value_name = "K=V")]
    pub env: Vec<String>,
    /// Hostname inside the guest [default: xroot-ARCH].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Throwaway run: writes go to a tmpfs layer (overlayfs) and vanish at exit;
    /// the installed rootfs stays byte-for-byte unchanged.
    #[arg(long)]
    pub ephemeral: bool,
    /// Run as this guest user (NAME, UID or UID:GID), with its HOME.
    #[arg(long, value_name = "NAME|UID[:GID]")]
    pub user: Option<String>,
    /// Create the --user NAME in the guest if it does not exist.
    #[arg(long, requires = "user")]
    pub create_user: bool,
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
