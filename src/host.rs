//! Facts about the machine xroot runs on: kernel version, native arch,
//! which foreign arches the CPU runs without emulation.

use crate::specs::Spec;

/// Kernel version as (major, minor), from `uname -r`.
pub fn kernel_version() -> (u32, u32) {
    parse_kernel_release(&uname().0)
}

/// (release, machine), asked once per process: both are consulted for
/// every arch during a launch.
fn uname() -> &'static (String, String) {
    static U: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    U.get_or_init(|| match nix::sys::utsname::uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => Default::default(),
    })
}

/// Parses "6.18.44-fc-v657" into (6, 18). Unknown formats give (0, 0),
/// which makes every feature check fail safe.
pub fn parse_kernel_release(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}

pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    kernel_version() >= (major, minor)
}

/// `uname -m` of the host.
pub fn machine() -> String {
    uname().1.clone()
}

/// How the host CPU runs an arch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    /// Same arch as the host.
    Yes,
    /// A 32-bit arch the 64-bit host kernel runs directly (x86 on x86_64,
    /// ARM on arm64); run it with a 32-bit personality so `uname -m` matches.
    Compat32,
    /// Needs qemu.
    No,
}

pub fn native(spec: &Spec) -> Native {
    native_for(&machine(), spec, compat32_available)
}

/// Pure core of [`native`], for tests.
pub fn native_for(host: &str, spec: &Spec, compat: impl Fn(&str) -> bool) -> Native {
    if spec.uname == host {
        return Native::Yes;
    }
    match (host, spec.qemu.as_str()) {
        ("x86_64", "i386") if compat("x86") => Native::Compat32,
        ("aarch64", "arm") if compat("arm") => Native::Compat32,
        _ => Native::No,
    }
}

/// Whether the kernel runs 32-bit programs of the host's family.
/// x86_64 kernels with IA32 emulation expose `/proc/sys/abi/vsyscall32`;
/// arm64 kernels with CONFIG_COMPAT list 32-bit ARM in the hwcap2-bearing
/// `/proc/sys/abi/` entries (e.g. `cp15_barrier`) — absent on CPUs without
/// AArch32 EL0.
fn compat32_available(family: &str) -> bool {
    match family {
        "x86" => std::path::Path::new("/proc/sys/abi/vsyscall32").exists(),
        "arm" => std::path::Path::new("/proc/sys/abi/cp15_barrier").exists(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::Catalog;

    #[test]
    fn kernel_release_parses() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v657"), (6, 18));
        assert_eq!(parse_kernel_release("5.4.0-150-generic"), (5, 4));
        assert_eq!(parse_kernel_release("garbage"), (0, 0));
    }

    #[test]
    fn native_rules() {
        let c = Catalog::builtin().unwrap();
        let yes = |_: &str| true;
        let no = |_: &str| false;
        assert_eq!(
            native_for("x86_64", c.find("x86_64").unwrap(), no),
            Native::Yes
        );
        assert_eq!(
            native_for("x86_64", c.find("x86").unwrap(), yes),
            Native::Compat32
        );
        assert_eq!(native_for("x86_64", c.find("x86").unwrap(), no), Native::No);
        assert_eq!(
            native_for("aarch64", c.find("armv7").unwrap(), yes),
            Native::Compat32
        );
        assert_eq!(
            native_for("x86_64", c.find("aarch64").unwrap(), yes),
            Native::No
        );
        assert_eq!(
            native_for("aarch64", c.find("aarch64").unwrap(), no),
            Native::Yes
        );
    }
}
