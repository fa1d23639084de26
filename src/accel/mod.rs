//! Native toolchains behind a foreign guest's compiler (`xroot run --accel`).
//!
//! In a foreign guest, builds spend their time in qemu translating the
//! compiler. The guest's `gcc` driver stays emulated, but the expensive
//! programs it runs — `cc1`, `cc1plus` and the assembler — are architecture-neutral
//! in what they produce: a host-built cross `cc1` of the *same* gcc source
//! version emits the same code for the same target. So when the host has
//! the matching Debian cross packages (`cpp-N-TRIPLE`, `binutils-TRIPLE`),
//! those programs run natively in place of the guest's:
//!
//! 1. [`survey`] reads the guest's tree and dpkg database (nothing runs)
//!    and the host's, and decides program by program: same source version
//!    (the cross package's `Built-Using: gcc-N (= V)` against the guest's
//!    `cpp-N`; `binutils-TRIPLE` against `binutils-TRIPLE`) and a guest
//!    whose include directories the cross `cc1` sees the same way.
//! 2. [`native::prepare`] copies each native program, the host libraries
//!    it needs and the host's dynamic loader into one directory of the
//!    store, mounted read-only at [`GUEST_DIR`] in the guest.
//! 3. The guest's program paths are covered by read-only binds of xroot's
//!    own static binary, which starts as a [`trampoline`] there and execs the
//!    native program through that loader with an explicit library path. The
//!    guest's files are not changed: the mounts vanish with the guest.

mod dpkg;
pub mod native;
pub mod trampoline;
mod tree;

use std::path::{Path, PathBuf};

use tree::Tree;

/// Where the native directory appears inside the guest.
pub const GUEST_DIR: &str = "/.xroot/native";

/// How exactly versions must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The same source version.
    Exact,
    /// The same source version apart from Debian stable updates
    /// (`+deb12u1`), for a user who has checked that they do not touch
    /// the guest's target (the notes name both versions).
    StableUpdates,
}

/// A guest program to replace by a native one.
#[derive(Debug, Clone)]
pub struct Tool {
    /// For notes: "cc1 (gcc 12.2.0-14)".
    pub label: String,
    /// The guest path to cover (symlinks resolved).
    pub guest: PathBuf,
    /// The native program on the host.
    pub host: PathBuf,
    /// Arguments the trampoline puts first.
    pub args: Vec<String>,
    /// Include directories the trampoline appends to `CPLUS_INCLUDE_PATH`,
    /// unless the command has `-nostdinc` or `-nostdinc++`: the guest
    /// `cc1plus`'s own libstdc++ directories, which the cross one lacks.
    pub cxx_dirs: Vec<String>,
}

/// What the survey found.
#[derive(Debug, Default)]
pub struct Survey {
    pub tools: Vec<Tool>,
    /// Why a program is not accelerated, one line each.
    pub refused: Vec<String>,
}

impl Survey {
    /// The one-line note for `xroot run`.
    pub fn note(&self) -> String {
        if self.tools.is_empty() {
            format!(
                "no acceleration: {} (`xroot doctor --accel` explains)",
                self.refused
                    .first()
                    .map(String::as_str)
                    .unwrap_or("nothing to accelerate")
            )
        } else {
            let names: Vec<&str> = self.tools.iter().map(|t| t.label.as_str()).collect();
            let mut s = format!("accelerated: {}", names.join(", "));
            if !self.refused.is_empty() {
                s.push_str(&format!(
                    " ({} not: see `xroot doctor --accel`)",
                    self.refused.len()
                ));
            }
            s
        }
    }
}

/// Decides which of the guest's programs under `rootfs` get a native
/// stand-in from the host rooted at `host` ("/" but for tests).
pub fn survey(rootfs: &Path, host: &Path, m: Match) -> Survey {
    let mut s = Survey::default();
    let (guest, hostt) = match (Tree::open(rootfs), Tree::open(host)) {
        (Ok(g), Ok(h)) => (g, h),
        (Err(e), _) => {
            s.refused
                .push(format!("cannot open {}: {e}", rootfs.display()));
            return s;
        }
        (_, Err(e)) => {
            s.refused
                .push(format!("cannot open {}: {e}", host.display()));
            return s;
        }
    };
    let status = Path::new("/var/lib/dpkg/status");
    let Ok(gstatus) = guest.read_string(status) else {
        s.refused.push("the guest has no dpkg database (/var/lib/dpkg/status): only Debian-family guests are understood".into());
        return s;
    };
    let Ok(hstatus) = hostt.read_string(status) else {
        s.refused.push("the host has no dpkg database (/var/lib/dpkg/status): the native toolchain is found through Debian's cross packages".into());
        return s;
    };
    let mut triples = Vec::new();
    for t in guest.entries(Path::new("/usr/lib/gcc")) {
        let Some(triple) = t.to_str().map(str::to_string) else {
            continue;
        };
        for n in guest.entries(&Path::new("/usr/lib/gcc").join(&triple)) {
            let Some(n) = n.to_str() else { continue };
            let cc1 = PathBuf::from(format!("/usr/lib/gcc/{triple}/{n}/cc1"));
            if guest.is_file(&cc1) {
                if !triples.contains(&triple) {
                    triples.push(triple.clone());
                }
                match cc1_tool(&guest, &hostt, &gstatus, &hstatus, &triple, n, m, "cc1") {
                    Ok(t) => s.tools.push(t),
                    Err(e) => s.refused.push(format!("cc1 of gcc {n}: {e}")),
                }
                let plus = PathBuf::from(format!("/usr/lib/gcc/{triple}/{n}/cc1plus"));
                if guest.is_file(&plus) {
                    match cc1_tool(&guest, &hostt, &gstatus, &hstatus, &triple, n, m, "cc1plus") {
                        Ok(t) => s.tools.push(t),
                        Err(e) => s.refused.push(format!("cc1plus of gcc {n}: {e}")),
                    }
                }
            }
        }
    }
    if triples.is_empty() {
        s.refused
            .push("no gcc in the guest (no /usr/lib/gcc/TRIPLE/N/cc1)".into());
    }
    for triple in &triples {
        match as_tool(&guest, &hostt, &gstatus, &hstatus, triple, m) {
            Ok(Some(t)) => s.tools.push(t),
            Ok(None) => {}
            Err(e) => s.refused.push(format!("{triple}-as: {e}")),
        }
    }
    s
}

/// Compares a guest source version with the host's.
fn versions(what: &str, guest: &str, host: &str, m: Match) -> Result<String, String> {
    if guest == host {
        return Ok(host.to_string());
    }
    let loose = dpkg::without_stable_update(guest) == dpkg::without_stable_update(host);
    match (loose, m) {
        (true, Match::StableUpdates) => Ok(format!("{host} for the guest's {guest}")),
        (true, Match::Exact) => Err(format!(
            "the guest's {what} is {guest}, the host's is {host}: they differ only by a Debian stable update; if it cannot matter for this target, use --accel=stable-updates"
        )),
        (false, _) => Err(format!(
            "the guest's {what} is {guest}, the host's is {host}: no native match (needs the same version)"
        )),
    }
}

/// `cc1` (from `cpp-N`) or `cc1plus` (from `g++-N`) of gcc `n`.
#[allow(clippy::too_many_arguments)]
fn cc1_tool(
    guest: &Tree,
    host: &Tree,
    gstatus: &str,
    hstatus: &str,
    triple: &str,
    n: &str,
    m: Match,
    prog: &str,
) -> Result<Tool, String> {
    let cxx = prog == "cc1plus";
    let gpkg = if cxx {
        format!("g++-{n}")
    } else {
        format!("cpp-{n}")
    };
    let gsrc = format!("gcc-{n}");
    let g = dpkg::installed(gstatus, &gpkg).ok_or_else(|| {
        format!("no {gpkg} package installed in the guest: the compiler is not Debian's")
    })?;
    let hpkg = format!("{gpkg}-{triple}");
    let hcc1 = PathBuf::from(format!("/usr/lib/gcc-cross/{triple}/{n}/{prog}"));
    let h = dpkg::installed(hstatus, &hpkg)
        .filter(|_| host.is_file(&hcc1))
        .ok_or_else(|| {
            let driver = if cxx { "g++" } else { "gcc" };
            format!("no host cross compiler: apt-get install {driver}-{n}-{triple}")
        })?;
    let built = h
        .built_using
        .iter()
        .find(|(p, _)| *p == gsrc)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| {
            format!(
                "the host's {hpkg} does not say which {gsrc} it was built from (no Built-Using)"
            )
        })?;
    let how = versions(&gsrc, &g.source_version, &built, m)?;
    // The cross cc1 finds the guest's gcc headers through -iprefix (below);
    // the rest of its search list differs from the guest cc1's in three
    // places, which must not matter: it skips /usr/local/include, and it
    // also looks in /usr/lib/gcc-cross/TRIPLE and /usr/TRIPLE/include.
    if !guest.entries(Path::new("/usr/local/include")).is_empty() {
        return Err(
            "the guest has headers in /usr/local/include, which the cross cc1 does not search"
                .into(),
        );
    }
    for p in [
        format!("/usr/lib/gcc-cross/{triple}"),
        format!("/usr/{triple}/include"),
    ] {
        if guest.exists(Path::new(&p)) {
            return Err(format!(
                "the guest has {p}, which only the cross cc1 would search"
            ));
        }
    }
    let guest_cc1 = guest
        .real_path(Path::new(&format!("/usr/lib/gcc/{triple}/{n}/{prog}")))
        .map_err(|e| format!("resolving the guest's {prog}: {e}"))?;
    // The guest cc1plus's libstdc++ directories, spelt as it spells them
    // (they reach __FILE__ and dependency files). The cross cc1plus looks
    // under /usr/TRIPLE/include/c++, absent in the guest (checked above).
    let cxx_dirs = if cxx {
        let up = format!("/usr/lib/gcc/{triple}/{n}/../../../..");
        let dirs = vec![
            format!("{up}/include/c++/{n}"),
            format!("{up}/include/{triple}/c++/{n}"),
            format!("{up}/include/c++/{n}/backward"),
        ];
        if !guest.exists(Path::new(&dirs[0])) {
            return Err(format!(
                "the guest has no libstdc++ headers in /usr/include/c++/{n}"
            ));
        }
        dirs
    } else {
        Vec::new()
    };
    Ok(Tool {
        label: format!("{prog} (gcc {how})"),
        guest: guest_cc1,
        host: hcc1,
        // Where the guest's own gcc headers are: the cross cc1 maps its
        // gcc-cross include directories onto this prefix.
        args: vec!["-iprefix".into(), format!("/usr/lib/gcc/{triple}/{n}/")],
        cxx_dirs,
    })
}

fn as_tool(
    guest: &Tree,
    host: &Tree,
    gstatus: &str,
    hstatus: &str,
    triple: &str,
    m: Match,
) -> Result<Option<Tool>, String> {
    let prog = PathBuf::from(format!("/usr/bin/{triple}-as"));
    if !guest.is_file(&prog) {
        return Ok(None);
    }
    let pkg = format!("binutils-{triple}");
    let g = dpkg::installed(gstatus, &pkg).ok_or_else(|| {
        format!("no {pkg} package installed in the guest: the assembler is not Debian's")
    })?;
    let h = dpkg::installed(hstatus, &pkg)
        .filter(|_| host.is_file(&prog))
        .ok_or_else(|| format!("no host cross assembler: apt-get install {pkg}"))?;
    let how = versions(&pkg, &g.source_version, &h.source_version, m)?;
    let real = guest
        .real_path(&prog)
        .map_err(|e| format!("resolving the guest's {}: {e}", prog.display()))?;
    Ok(Some(Tool {
        label: format!("as (binutils {how})"),
        guest: real,
        host: prog,
        args: Vec::new(),
        cxx_dirs: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_exactly_or_by_stable_update_when_asked() {
        assert!(versions("gcc-12", "12.2.0-14", "12.2.0-14", Match::Exact).is_ok());
        let e = versions("gcc-12", "12.2.0-14+deb12u1", "12.2.0-14", Match::Exact).unwrap_err();
        assert!(e.contains("--accel=stable-updates"), "{e}");
        assert!(versions(
            "gcc-12",
            "12.2.0-14+deb12u1",
            "12.2.0-14",
            Match::StableUpdates
        )
        .is_ok());
        assert!(versions("gcc-12", "12.2.0-15", "12.2.0-14", Match::StableUpdates).is_err());
        assert!(versions("gcc-12", "12.3.0-1", "12.2.0-14", Match::Exact).is_err());
    }
}
