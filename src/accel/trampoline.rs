//! xroot's binary as a stand-in for a guest program (`--accel`).
//!
//! The binds that cover the guest's `cc1`, `as`, ... all point at xroot's
//! own executable: it is static and of the host's arch, so it runs natively
//! in any guest, needs nothing of the guest, and is always the version that
//! wrote the map it reads (a separate helper program could drift). It
//! learns which program it stands for from `/proc/self/exe`, which names
//! the covered guest path (the bind's mount point, after the guest's
//! symlinks), looks that up in [`super::GUEST_DIR`]`/map`, and execs the
//! native program through the copied loader with an explicit
//! `--library-path`, so no host library path is needed in the guest and
//! the guest's own `LD_*` variables (meant for its foreign programs) do not
//! reach it. The check costs nothing when xroot runs as itself: its name
//! says so.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use super::native::LOADER;
use super::GUEST_DIR;

/// If this process is a trampoline, runs the native program (never
/// returns on success) or returns the exit status of the failure.
#[cfg_attr(test, allow(dead_code))]
pub fn dispatch() -> Option<i32> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    let base = Path::new(&argv0)
        .file_name()
        .map(|n| n.as_bytes())
        .unwrap_or(b"");
    if base.starts_with(b"xroot") {
        return None;
    }
    // Leaked: the process execs or exits next.
    let map: &'static [u8] = std::fs::read(format!("{GUEST_DIR}/map")).ok()?.leak();
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let line = map
        .split(|&b| b == b'\n')
        .find(|l| l.split(|&b| b == b'\t').next() == Some(exe.as_os_str().as_bytes()));
    let Some(line) = line else {
        eprintln!(
            "xroot: {} is not a program xroot accelerates",
            exe.display()
        );
        return Some(127);
    };
    let mut fields = line.split(|&b| b == b'\t').skip(1);
    let prog = fields.next().unwrap_or_default();
    let list = |f: Option<&'static [u8]>| -> Vec<&'static [u8]> {
        f.map(|f| f.split(|&b| b == 0x1f).filter(|a| !a.is_empty()).collect())
            .unwrap_or_default()
    };
    let (first, last) = (list(fields.next()), list(fields.next()));
    let rest: Vec<OsString> = args.collect();
    // The driver may already say where the guest's gcc lives; without the
    // standard directories, the guest's C++ ones are not wanted either.
    let has = |flag: &str| rest.iter().any(|a| a == flag);
    let skip_first = has("-iprefix") && first.first() == Some(&b"-iprefix".as_slice());
    let skip_last = has("-nostdinc") || has("-nostdinc++");
    let c = |b: &[u8]| CString::new(b.to_vec()).ok();
    let mut argv: Vec<CString> = Vec::new();
    let loader = format!("{GUEST_DIR}/lib/{LOADER}");
    let mut push = |b: &[u8]| c(b).map(|s| argv.push(s));
    push(loader.as_bytes());
    push(b"--library-path");
    push(format!("{GUEST_DIR}/lib").as_bytes());
    push(b"--argv0");
    push(argv0.as_bytes());
    let mut native = format!("{GUEST_DIR}/").into_bytes();
    native.extend_from_slice(prog);
    push(&native);
    if !skip_first {
        for e in &first {
            push(e);
        }
    }
    for a in rest {
        if push(&a.into_vec()).is_none() {
            return Some(127);
        }
    }
    // The C++ directories go through CPLUS_INCLUDE_PATH, after the
    // guest's own value: cc1plus adds those after -isystem's and before
    // its standard ones, as system directories that know C++ (-isystem's
    // are treated as C headers: "3 4" in line markers instead of "3").
    let mut cxx_path: Option<Vec<u8>> = None;
    if !skip_last && !last.is_empty() {
        let mut v = std::env::var_os("CPLUS_INCLUDE_PATH")
            .map(OsString::into_vec)
            .unwrap_or_default();
        for d in &last {
            if !v.is_empty() {
                v.push(b':');
            }
            v.extend_from_slice(d);
        }
        cxx_path = Some(v);
    }
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "LD_PRELOAD" && k != "LD_LIBRARY_PATH")
        .filter(|(k, _)| !(cxx_path.is_some() && k == "CPLUS_INCLUDE_PATH"))
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    if let Some(v) = cxx_path {
        let mut kv = b"CPLUS_INCLUDE_PATH=".to_vec();
        kv.extend(v);
        env.extend(CString::new(kv).ok());
    }
    let Some(path) = c(loader.as_bytes()) else {
        return Some(127);
    };
    let err = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    eprintln!(
        "xroot: running the native {}: {loader}: {err}",
        exe.display()
    );
    Some(127)
}
