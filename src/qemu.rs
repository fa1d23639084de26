//! Finding a qemu-user emulator for an arch and checking it can work
//! inside a chroot (statically linked).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::hinted;

/// Where a search for qemu went.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(PathBuf),
    /// Found, but dynamically linked: it cannot start once the guest's
    /// root (without the host's libraries) is in place.
    Dynamic(PathBuf),
    Missing,
}

/// The candidates for target `t`, in order: `qemu-t-static`, `qemu-t`, on
/// `$PATH`, then in the usual directories in case `$PATH` is minimal.
pub fn candidates(target: &str, path_var: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_var
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    for d in ["/usr/local/bin", "/usr/bin", "/bin"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    let mut out = Vec::new();
    for name in [format!("qemu-{target}-static"), format!("qemu-{target}")] {
        for d in &dirs {
            out.push(d.join(&name));
        }
    }
    out
}

/// Looks for qemu for `target`. `override_path` is `--qemu`.
pub fn lookup(target: &str, override_path: Option<&Path>) -> Lookup {
    let list = match override_path {
        Some(p) => vec![p.to_path_buf()],
        None => candidates(target, std::env::var("PATH").ok().as_deref()),
    };
    let mut dynamic = None;
    for p in list {
        if !is_executable(&p) {
            continue;
        }
        match crate::elf::has_interp(&p) {
            Ok(false) => return Lookup::Found(p),
            Ok(true) => {
                dynamic.get_or_insert(p);
            }
            Err(_) => continue,
        }
    }
    dynamic.map(Lookup::Dynamic).unwrap_or(Lookup::Missing)
}

/// Finds a static qemu for `target` or explains how to get one.
pub fn find(target: &str, override_path: Option<&Path>) -> Result<PathBuf> {
    match lookup(target, override_path) {
        Lookup::Found(p) => Ok(p),
        Lookup::Dynamic(p) => Err(hinted(
            format!("{} is dynamically linked; it cannot run inside the guest's root, where the host's libraries are absent", p.display()),
            install_hint(target),
        )),
        Lookup::Missing => Err(hinted(
            match override_path {
                Some(p) => format!("--qemu {} is not an executable file", p.display()),
                None => format!("no qemu-{target}-static (or qemu-{target}) found on PATH"),
            },
            install_hint(target),
        )),
    }
}

/// The package that provides a static qemu, per distribution.
pub fn install_hint(target: &str) -> String {
    format!(
        "install a static qemu-user: `apt-get install qemu-user-static` (Debian/Ubuntu), `dnf install qemu-user-static` (Fedora), `apk add qemu-{target}` (Alpine), `pacman -S qemu-user-static` (Arch); or pass --qemu PATH"
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads qemu's version by running it. Costs a process start, so callers
/// cache the answer (see `store::Store::qemu_version`).
pub fn probe_version(path: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// "qemu-aarch64 version 7.2.22 (Debian ...)" → (7, 2).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split(" version ").nth(1)?;
    let mut it = rest.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parses() {
        assert_eq!(
            parse_version(
                "qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some((7, 2))
        );
        assert_eq!(parse_version("qemu-riscv64 version 10.0.2"), Some((10, 0)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn candidate_order() {
        let c = candidates("arm", Some("/opt/q:/usr/bin"));
        assert_eq!(c[0], PathBuf::from("/opt/q/qemu-arm-static"));
        assert_eq!(c[1], PathBuf::from("/usr/bin/qemu-arm-static"));
        assert!(
            c.iter().position(|p| p.ends_with("qemu-arm")).unwrap()
                > c.iter()
                    .rposition(|p| p.ends_with("qemu-arm-static"))
                    .unwrap()
        );
    }

    #[test]
    fn dynamic_binary_is_refused() {
        // /bin/ls stands in for a dynamically linked qemu.
        let err = find("aarch64", Some(Path::new("/bin/ls"))).unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        assert!(crate::error::hint_of(&err)
            .unwrap()
            .contains("qemu-user-static"));
        let err = find("aarch64", Some(Path::new("/nonexistent/qemu"))).unwrap_err();
        assert!(err.to_string().contains("not an executable"), "{err}");
    }
}
