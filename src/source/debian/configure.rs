//! The second stage, as debootstrap's `second_stage_install` and
//! mmdebstrap's essential hook do it: the natively unpacked tree holds a
//! working shell and dpkg, so inside the sandbox (under the guest's
//! emulator) dpkg installs the same verified `.deb`s again, which runs
//! the maintainer scripts and records every package in dpkg's database.
//!
//! Order (debootstrap's): dpkg is feigned installed; base-passwd,
//! base-files, dpkg, libc6, perl-base, mawk and debconf are installed one
//! by one (`--force-depends`, as their maintainer scripts need each
//! other); the other required packages are unpacked and configured; then
//! the rest is unpacked and configured. A `policy-rc.d` that exits 101
//! keeps services from starting; it is removed at the end. dpkg runs with
//! `--force-unsafe-io` (as mmdebstrap and debootstrap do): no fsync per
//! file, since a bootstrap that dies is thrown away whole anyway.
//!
//! This module writes into the unpacked tree (archive-controlled, so
//! never through a symlink: every directory is opened with `O_NOFOLLOW`
//! from the root's fd) and builds the guest script; the caller runs it.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path};

use anyhow::{Context, Result};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};

/// Where the second stage sees the package cache (bound read-only).
pub const DEBS_IN_GUEST: &str = "/var/cache/xroot-debs";
/// The second-stage script, inside the tree.
pub const SCRIPT: &str = "var/lib/xroot/second-stage";
/// dpkg's output goes here (inside the guest); its tail is shown on failure.
const LOG: &str = "/var/log/xroot-bootstrap.log";

/// debootstrap's core packages, installed one at a time first.
const CORE: [&str; 7] = [
    "base-passwd",
    "base-files",
    "dpkg",
    "libc6",
    "perl-base",
    "mawk",
    "debconf",
];

/// One package for the second stage: its name and `.deb` file name in
/// the cache.
pub struct Deb<'a> {
    pub name: &'a str,
    pub file: String,
    pub required: bool,
}

/// The guest script for `debs` (in install order).
pub fn script(debs: &[Deb<'_>]) -> String {
    let path = |d: &Deb<'_>| format!("{DEBS_IN_GUEST}/{}", d.file);
    let mut s = String::from(
        "set -e\n\
         export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true LC_ALL=C \
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
    );
    s.push_str(&format!(
        "run() {{ \"$@\" >>{LOG} 2>&1 || {{ s=$?; tail -n 30 {LOG} >&2; echo \"xroot: '$*' failed with exit status $s\" >&2; exit $s; }}; }}\n\
         : > {LOG}\n\
         if [ -x /sbin/ldconfig ]; then run /sbin/ldconfig; fi\n\
         if [ ! -e /usr/bin/awk ] && [ -e /usr/bin/mawk ]; then ln -s mawk /usr/bin/awk; fi\n"
    ));
    for core in CORE {
        if let Some(d) = debs.iter().find(|d| d.name == core) {
            if core == "mawk" {
                s.push_str("if [ -L /usr/bin/awk ]; then rm -f /usr/bin/awk; fi\n");
            }
            s.push_str(&format!(
                "echo 'xroot: installing {core}' >&2\nrun dpkg --force-unsafe-io --force-depends --install {}\n",
                path(d)
            ));
            if core == "dpkg" {
                s.push_str(
                    "[ -e /etc/localtime ] || ln -sf /usr/share/zoneinfo/UTC /etc/localtime\n",
                );
            }
        }
    }
    let rest_req: Vec<String> = debs
        .iter()
        .filter(|d| d.required && !CORE.contains(&d.name))
        .map(path)
        .collect();
    if !rest_req.is_empty() {
        s.push_str(&format!(
            "echo 'xroot: unpacking {} required packages' >&2\n\
             run dpkg --force-unsafe-io --force-depends --unpack {}\n",
            rest_req.len(),
            rest_req.join(" ")
        ));
    }
    s.push_str(
        "echo 'xroot: configuring required packages' >&2\n\
         run dpkg --force-unsafe-io --configure --pending --force-configure-any --force-depends\n",
    );
    let rest: Vec<String> = debs
        .iter()
        .filter(|d| !d.required && !CORE.contains(&d.name))
        .map(path)
        .collect();
    if !rest.is_empty() {
        s.push_str(&format!(
            "echo 'xroot: unpacking {} more packages' >&2\n\
             run dpkg --force-unsafe-io --force-depends --force-confold --unpack {}\n",
            rest.len(),
            rest.join(" ")
        ));
    }
    s.push_str(
        "echo 'xroot: configuring all packages' >&2\n\
         run dpkg --force-unsafe-io --force-confold --configure -a\n\
         run dpkg --audit\n\
         rm -f /usr/sbin/policy-rc.d\n",
    );
    s
}

/// Files the tree needs before the second stage: dpkg's database
/// skeleton with dpkg feigned installed (debootstrap's `x_feign_install`),
/// the `policy-rc.d`, apt's sources and keyring, the script itself and
/// the mount point for the package cache.
pub struct Setup<'a> {
    pub dpkg_version: &'a str,
    pub sources_list: &'a str,
    /// File name under `/etc/apt/keyrings/` and contents.
    pub keyring: (&'a str, &'a [u8]),
    pub script: &'a str,
}

pub fn prepare(root: &Path, s: &Setup<'_>) -> Result<()> {
    write(
        root,
        "var/lib/dpkg/status",
        format!(
            "Package: dpkg\nVersion: {}\nMaintainer: unknown\nStatus: install ok installed\n\n",
            s.dpkg_version
        )
        .as_bytes(),
        0o644,
    )?;
    write(root, "var/lib/dpkg/available", b"", 0o644)?;
    write(root, "var/lib/dpkg/info/dpkg.list", b"", 0o644)?;
    write(
        root,
        "usr/sbin/policy-rc.d",
        b"#!/bin/sh\n# xroot: no service starts while the system is bootstrapped\nexit 101\n",
        0o755,
    )?;
    write(
        root,
        "etc/apt/sources.list",
        s.sources_list.as_bytes(),
        0o644,
    )?;
    write(
        root,
        &format!("etc/apt/keyrings/{}", s.keyring.0),
        s.keyring.1,
        0o644,
    )?;
    write(root, SCRIPT, s.script.as_bytes(), 0o644)?;
    mkdirs(root, Path::new(DEBS_IN_GUEST.trim_start_matches('/')))?;
    Ok(())
}

/// Opens (creating) each directory of `rel` under `root`, never
/// following a symlink.
fn mkdirs(root: &Path, rel: &Path) -> Result<OwnedFd> {
    let open = |dir: Option<&OwnedFd>, name: &Path| -> nix::Result<OwnedFd> {
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
        let fd = openat(dir.map(|d| d.as_raw_fd()), name, flags, Mode::empty())?;
        // SAFETY: openat returned a new fd that nothing else owns.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    };
    let mut cur = open(None, root).with_context(|| format!("opening {}", root.display()))?;
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        let name = Path::new(name);
        let next = match open(Some(&cur), name) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => {
                mkdirat(Some(cur.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
                    .with_context(|| format!("creating {}", root.join(rel).display()))?;
                open(Some(&cur), name)
                    .with_context(|| format!("opening {}", root.join(rel).display()))?
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "opening {} without following symlinks",
                        root.join(rel).display()
                    )
                })
            }
        };
        cur = next;
    }
    Ok(cur)
}

/// Writes `rel` under `root` (replacing a file, never writing through a
/// symlink).
pub fn write(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    let rel = Path::new(rel);
    let dir = mkdirs(root, rel.parent().unwrap_or(Path::new("")))?;
    let name = rel.file_name().context("empty path")?;
    let _ = nix::unistd::unlinkat(
        Some(dir.as_raw_fd()),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        flags,
        Mode::from_bits_truncate(mode),
    )
    .with_context(|| format!("creating {}", root.join(rel).display()))?;
    // SAFETY: openat returned a new fd that nothing else owns.
    let mut f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(data)
        .with_context(|| format!("writing {}", root.join(rel).display()))?;
    nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(mode))
        .with_context(|| format!("chmod {}", root.join(rel).display()))?;
    Ok(())
}

/// Removes what [`prepare`] left that the result should not keep (the
/// script and the cache mount point), never following a symlink.
pub fn cleanup(root: &Path) -> Result<()> {
    for (dir, name, flag) in [
        (
            "var/lib/xroot",
            "second-stage",
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ),
        ("var/lib", "xroot", nix::unistd::UnlinkatFlags::RemoveDir),
        (
            "var/cache",
            "xroot-debs",
            nix::unistd::UnlinkatFlags::RemoveDir,
        ),
    ] {
        if let Ok(d) = mkdirs(root, Path::new(dir)) {
            let _ = nix::unistd::unlinkat(Some(d.as_raw_fd()), name, flag);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_follows_debootstraps_order() {
        let d = |name, required| Deb {
            name,
            file: format!("{name}.deb"),
            required,
        };
        let s = script(&[
            d("libc6", true),
            d("base-files", true),
            d("coreutils", true),
            d("base-passwd", true),
            d("gcc", false),
        ]);
        let pos = |x: &str| s.find(x).unwrap_or_else(|| panic!("{x} not in {s}"));
        assert!(pos("base-passwd.deb") < pos("base-files.deb"));
        assert!(pos("base-files.deb") < pos("libc6.deb"));
        assert!(pos("libc6.deb") < pos("--unpack /var/cache/xroot-debs/coreutils.deb"));
        assert!(pos("coreutils.deb") < pos("gcc.deb"));
        assert!(pos("gcc.deb") < pos("--configure -a"));
    }

    #[test]
    fn writes_never_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("etc")).unwrap();
        assert!(write(t.path(), "etc/apt/sources.list", b"x", 0o644).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        write(t.path(), "var/lib/dpkg/status", b"y", 0o644).unwrap();
        assert_eq!(
            std::fs::read(t.path().join("var/lib/dpkg/status")).unwrap(),
            b"y"
        );
    }
}
