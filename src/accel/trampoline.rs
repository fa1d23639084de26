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

use std::ffi::CString;
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
    let map = std::fs::read(format!("{GUEST_DIR}/map")).ok()?;
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let rest: Vec<Vec<u8>> = args.map(|a| a.into_vec()).collect();
    let env: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
        .map(|(k, v)| (k.into_vec(), v.into_vec()))
        .collect();
    let Some(exec) = plan(
        &map,
        exe.as_os_str().as_bytes(),
        argv0.as_bytes(),
        &rest,
        &env,
    ) else {
        eprintln!(
            "xroot: {} is not a program xroot accelerates",
            exe.display()
        );
        return Some(127);
    };
    // Arguments and environment strings from the kernel hold no NUL.
    let cs = |v: Vec<Vec<u8>>| -> Vec<CString> {
        v.into_iter().filter_map(|b| CString::new(b).ok()).collect()
    };
    let loader = exec.argv[0].clone();
    let (argv, envp) = (cs(exec.argv), cs(exec.env));
    let Ok(path) = CString::new(loader) else {
        return Some(127);
    };
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    eprintln!(
        "xroot: running the native program for {}: {}: {err}",
        exe.display(),
        path.to_string_lossy()
    );
    Some(127)
}

/// What to exec: `argv[0]` is the loader's path.
#[derive(Debug, PartialEq, Eq)]
struct Exec {
    argv: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
}

/// The native command for the guest program `exe` run as `argv0 rest...`
/// with `env`, from the `map` (see `native`); None if `exe` is not in it.
fn plan(
    map: &[u8],
    exe: &[u8],
    argv0: &[u8],
    rest: &[Vec<u8>],
    env: &[(Vec<u8>, Vec<u8>)],
) -> Option<Exec> {
    let line = map
        .split(|&b| b == b'\n')
        .find(|l| l.split(|&b| b == b'\t').next() == Some(exe))?;
    let mut fields = line.split(|&b| b == b'\t').skip(1);
    let prog = fields.next()?;
    let list = |f: Option<&[u8]>| -> Vec<Vec<u8>> {
        f.map(|f| {
            f.split(|&b| b == 0x1f)
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default()
    };
    let (first, cxx_dirs) = (list(fields.next()), list(fields.next()));
    let has = |flag: &[u8]| rest.iter().any(|a| a == flag);
    let loader = format!("{GUEST_DIR}/lib/{LOADER}").into_bytes();
    let mut argv = vec![
        loader,
        b"--library-path".to_vec(),
        format!("{GUEST_DIR}/lib").into_bytes(),
        b"--argv0".to_vec(),
        argv0.to_vec(),
        [format!("{GUEST_DIR}/").as_bytes(), prog].concat(),
    ];
    // The driver may already say where the guest's gcc lives.
    if !(has(b"-iprefix") && first.first().is_some_and(|a| a == b"-iprefix")) {
        argv.extend(first);
    }
    argv.extend(rest.iter().cloned());
    // The C++ directories go through CPLUS_INCLUDE_PATH, after the guest's
    // own value: cc1plus adds those after -isystem's and before its
    // standard ones, as system directories that know C++ (-isystem's are
    // taken as C headers: "3 4" in line markers instead of "3"). Without
    // the standard directories, the guest's C++ ones are not wanted.
    let var: &[u8] = b"CPLUS_INCLUDE_PATH";
    let cxx_path =
        (!cxx_dirs.is_empty() && !has(b"-nostdinc") && !has(b"-nostdinc++")).then(|| {
            let mut v = env
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            for d in &cxx_dirs {
                if !v.is_empty() {
                    v.push(b':');
                }
                v.extend_from_slice(d);
            }
            v
        });
    // The guest's LD_* variables are meant for its foreign programs.
    let mut envp: Vec<Vec<u8>> = env
        .iter()
        .filter(|(k, _)| k != b"LD_PRELOAD" && k != b"LD_LIBRARY_PATH")
        .filter(|(k, _)| !(cxx_path.is_some() && k == var))
        .map(|(k, v)| [k.as_slice(), b"=", v].concat())
        .collect();
    if let Some(v) = cxx_path {
        envp.push([var, b"=", &v].concat());
    }
    Some(Exec { argv, env: envp })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &[u8] = b"/usr/lib/gcc/t/12/cc1\tbin/0-cc1\t-iprefix\x1f/usr/lib/gcc/t/12/\t\n/usr/lib/gcc/t/12/cc1plus\tbin/1-cc1plus\t-iprefix\x1f/usr/lib/gcc/t/12/\t/a\x1f/b\n/usr/bin/t-as\tbin/2-t-as\t\t\n";

    fn v(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|a| a.as_bytes().to_vec()).collect()
    }
    fn kv(s: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        s.iter()
            .map(|(k, x)| (k.as_bytes().to_vec(), x.as_bytes().to_vec()))
            .collect()
    }
    fn text(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn cc1_runs_through_the_loader_with_the_guest_gcc_prefix_first() {
        let e = plan(
            MAP,
            b"/usr/lib/gcc/t/12/cc1",
            b"cc1",
            &v(&["-quiet", "x.c"]),
            &kv(&[("PATH", "/bin"), ("LD_PRELOAD", "/x.so")]),
        )
        .unwrap();
        assert_eq!(
            text(&e.argv),
            [
                "/.xroot/native/lib/ld.so",
                "--library-path",
                "/.xroot/native/lib",
                "--argv0",
                "cc1",
                "/.xroot/native/bin/0-cc1",
                "-iprefix",
                "/usr/lib/gcc/t/12/",
                "-quiet",
                "x.c"
            ]
        );
        assert_eq!(text(&e.env), ["PATH=/bin"]);
        // A driver that passes its own -iprefix keeps it alone.
        let e = plan(
            MAP,
            b"/usr/lib/gcc/t/12/cc1",
            b"cc1",
            &v(&["-iprefix", "/p/", "x.c"]),
            &[],
        )
        .unwrap();
        assert_eq!(
            text(&e.argv[5..]),
            ["/.xroot/native/bin/0-cc1", "-iprefix", "/p/", "x.c"]
        );
    }

    #[test]
    fn cc1plus_gets_the_guest_cxx_dirs_after_the_callers_unless_nostdinc() {
        let e = plan(
            MAP,
            b"/usr/lib/gcc/t/12/cc1plus",
            b"cc1plus",
            &v(&["x.cc"]),
            &kv(&[("CPLUS_INCLUDE_PATH", "/mine")]),
        )
        .unwrap();
        assert_eq!(text(&e.env), ["CPLUS_INCLUDE_PATH=/mine:/a:/b"]);
        let e = plan(
            MAP,
            b"/usr/lib/gcc/t/12/cc1plus",
            b"cc1plus",
            &v(&["x.cc"]),
            &[],
        )
        .unwrap();
        assert_eq!(text(&e.env), ["CPLUS_INCLUDE_PATH=/a:/b"]);
        for flag in ["-nostdinc", "-nostdinc++"] {
            let e = plan(
                MAP,
                b"/usr/lib/gcc/t/12/cc1plus",
                b"cc1plus",
                &v(&[flag, "x.cc"]),
                &kv(&[("CPLUS_INCLUDE_PATH", "/mine")]),
            )
            .unwrap();
            assert_eq!(text(&e.env), ["CPLUS_INCLUDE_PATH=/mine"]);
        }
    }

    #[test]
    fn as_gets_no_extra_arguments_and_unknown_programs_none() {
        let e = plan(MAP, b"/usr/bin/t-as", b"as", &v(&["-o", "x.o"]), &[]).unwrap();
        assert_eq!(
            text(&e.argv[5..]),
            ["/.xroot/native/bin/2-t-as", "-o", "x.o"]
        );
        assert_eq!(plan(MAP, b"/usr/bin/ld", b"ld", &[], &[]), None);
        assert_eq!(plan(b"", b"/usr/bin/t-as", b"as", &[], &[]), None);
    }
}
