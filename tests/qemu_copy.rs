//! Guests run on a prelinked copy of qemu (issue #6: launch speed; see
//! src/qemu/prelink.rs): made once in the store, used by the guest's
//! private binfmt handler, replaced when qemu changes, and never used when
//! it cannot be made or `XROOT_QEMU_PRELINK=0`.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The interpreter of the guest's private aarch64 handler, as the guest sees it.
fn interpreter(env: &Env, extra: &[&str]) -> PathBuf {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "aarch64",
        "--",
        "cat",
        "/proc/sys/fs/binfmt_misc/qemu-aarch64",
    ]);
    let out = ok(&env.run(&args));
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("interpreter "))
        .unwrap_or_else(|| panic!("no interpreter line: {out}"));
    PathBuf::from(line)
}

/// The files in the store's qemu directory but the makers' lock files
/// (`.NAME.lock`); a half-written copy (`.tmp-PID`) would be listed.
fn copies(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.home().join("qemu"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !(n.ends_with(".seal") || n.starts_with('.') && n.ends_with(".lock")))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn e_type(p: &Path) -> u16 {
    let b = std::fs::read(p).unwrap();
    u16::from_le_bytes([b[16], b[17]])
}

fn local_env() -> Env {
    let env = Env::new(&format!("file://{}", mirror_dir().display()));
    ok(&env.run(&["fetch", "aarch64", "--branch", "v3.20", "--quiet"]));
    env
}

#[test]
fn guests_run_on_a_prelinked_copy_made_once() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let env = local_env();
    let interp = interpreter(&env, &[]);
    assert!(
        interp.starts_with(env.home().join("qemu")),
        "the handler runs the store's copy: {}",
        interp.display()
    );
    let name = interp.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("qemu-aarch64-static."),
        "named after the original: {name}"
    );
    assert_eq!(
        copies(&env),
        std::slice::from_ref(&name),
        "one copy, nothing else"
    );
    assert_eq!(e_type(&interp), 2, "ET_EXEC: nothing left to relocate");

    // It really runs the guest: a pipeline (several foreign execs), and
    // the same copy, untouched, on the next launch.
    let made = std::fs::metadata(&interp).unwrap().modified().unwrap();
    let out = ok(&env.run(&[
        "run",
        "aarch64",
        "--",
        "sh",
        "-c",
        "uname -m; echo hi | sha256sum",
    ]));
    assert_eq!(
        out,
        "aarch64\n98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4  -\n"
    );
    assert_eq!(interpreter(&env, &[]), interp);
    assert_eq!(
        std::fs::metadata(&interp).unwrap().modified().unwrap(),
        made
    );

    // XROOT_QEMU_PRELINK=0: the system's qemu itself.
    let mut c = env.cmd();
    c.env("XROOT_QEMU_PRELINK", "0").args([
        "run",
        "aarch64",
        "--",
        "cat",
        "/proc/sys/fs/binfmt_misc/qemu-aarch64",
    ]);
    let out = ok(&c.output().unwrap());
    assert!(
        out.contains("interpreter /") && !out.contains(&env.home().display().to_string()),
        "{out}"
    );
    assert!(out.contains("qemu-aarch64-static"), "{out}");
}

#[test]
fn a_changed_qemu_gets_a_new_copy_and_the_old_one_goes() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let env = local_env();
    let mine = env.dir.path().join("bin/qemu-aarch64-static");
    std::fs::create_dir_all(mine.parent().unwrap()).unwrap();
    std::fs::copy("/usr/bin/qemu-aarch64-static", &mine).unwrap();
    let q = mine.display().to_string();
    let first = interpreter(&env, &["--qemu", &q]);
    assert_eq!(copies(&env).len(), 1);

    // "Upgraded": a new mtime is a new identity.
    let f = std::fs::File::options().write(true).open(&mine).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    drop(f);
    let second = interpreter(&env, &["--qemu", &q]);
    assert_ne!(first, second);
    assert_eq!(
        copies(&env),
        [second.file_name().unwrap().to_string_lossy().into_owned()],
        "the old copy was removed"
    );
}

#[test]
fn a_qemu_that_cannot_be_prelinked_is_used_as_it_is() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let env = local_env();
    // A prelinked copy is no longer a PIE: as --qemu it cannot be
    // prelinked again, and is used directly.
    let copy = interpreter(&env, &[]);
    let already = env.dir.path().join("qemu-aarch64-static");
    std::fs::copy(&copy, &already).unwrap();
    let q = already.display().to_string();
    assert_eq!(interpreter(&env, &["--qemu", &q]), already);
    let marker = copies(&env)
        .into_iter()
        .find(|n| n.starts_with("qemu-aarch64-static.") && n.ends_with(".unusable"))
        .expect("the refusal is recorded");
    let why = std::fs::read_to_string(env.home().join("qemu").join(&marker)).unwrap();
    assert!(why.contains(&q) && why.contains("ET_DYN"), "{why}");
    // ... and shown by doctor.
    let doctor = stdout(&env.run(&["doctor"]));
    let line = doctor.lines().find(|l| l.contains("qemu copies")).unwrap();
    assert!(
        line.contains("1 prelinked") && line.contains("not prelinked") && line.contains("ET_DYN"),
        "{line}"
    );
    // Recorded: the next launch does not try again, and works.
    let out = ok(&env.run(&["run", "--qemu", &q, "aarch64", "--", "uname", "-m"]));
    assert_eq!(out, "aarch64\n");
}

#[test]
fn guests_started_together_make_one_copy() {
    if !sandbox_ready("aarch64") {
        return;
    }
    // Fetched without a copy, so the runs below find none.
    let env = Env::new(&format!("file://{}", mirror_dir().display()));
    let mut c = env.cmd();
    c.env("XROOT_QEMU_PRELINK", "0")
        .args(["fetch", "aarch64", "--branch", "v3.20", "--quiet"]);
    ok(&c.output().unwrap());
    assert!(copies(&env).is_empty());
    let children: Vec<_> = (0..8)
        .map(|_| {
            env.cmd()
                .env("XROOT_TRACE", "1")
                .args(["run", "aarch64", "--", "uname", "-m"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut makers = 0;
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert_eq!(ok(&o), "aarch64\n");
        makers += stderr(&o).matches("qemu copy made").count();
    }
    assert_eq!(makers, 1, "the others waited for the first maker");
    let made = copies(&env);
    assert_eq!(made.len(), 1, "one copy, no half-written one: {made:?}");
    assert!(made[0].starts_with("qemu-aarch64-static."), "{made:?}");
}
