//! Issue #5, the host's binfmt_misc handlers: xroot never silently replaces
//! a handler it did not make, reports unusable ones, and refuses to run
//! through them with a hint.
//!
//! These steps change the host's global /proc/sys/fs/binfmt_misc, so they
//! are ONE test function (nothing else in this binary runs alongside), they
//! use riscv64 and a test-only handler name, and a guard puts back whatever
//! claimed riscv64 before and unmounts binfmt_misc if it was not mounted,
//! even when an assertion fails half-way.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DIR: &str = "/proc/sys/fs/binfmt_misc";
/// A handler name only this test uses.
const TEST_NAME: &str = "xroot-test-riscv64";
const XROOT_NAME: &str = "qemu-riscv64";
/// riscv64's magic and mask, as in rootfs-specs/riscv64.toml.
const MAGIC: &str = "7f454c460201010000000000000000000200f300";
const MASK: &str = "ffffffffffffff00fffffffffffffffffeffffff";

fn mounted() -> bool {
    Path::new(DIR).join("register").exists()
}

fn esc(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| format!("\\x{}", std::str::from_utf8(c).unwrap()))
        .collect()
}

fn register(line: &str) {
    fs::write(Path::new(DIR).join("register"), line)
        .unwrap_or_else(|e| panic!("registering {line}: {e}"));
}

fn remove(name: &str) {
    let p = Path::new(DIR).join(name);
    if p.exists() {
        fs::write(&p, "-1").unwrap_or_else(|e| panic!("removing {}: {e}", p.display()));
    }
}

fn status_of(name: &str) -> Option<String> {
    fs::read_to_string(Path::new(DIR).join(name)).ok()
}

/// The registration line that recreates a handler from its status text.
fn line_from_status(name: &str, text: &str) -> Option<String> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    let magic = field("magic ")?;
    let mask = field("mask ").unwrap_or_default();
    Some(format!(
        ":{name}:M:{}:{}:{}:{}:{}",
        field("offset ").unwrap_or_else(|| "0".into()),
        esc(&magic),
        esc(&mask),
        field("interpreter ")?,
        field("flags:").unwrap_or_default()
    ))
}

/// Names of the handlers that claim riscv64 binaries.
fn riscv64_claimers() -> Vec<String> {
    names_in(DIR)
        .into_iter()
        .filter(|n| n != "register" && n != "status")
        .filter(|n| {
            status_of(n).is_some_and(|t| {
                t.lines()
                    .any(|l| l.trim() == format!("magic {MAGIC}").as_str())
            })
        })
        .collect()
}

fn names_in(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Restores the host's binfmt_misc state on drop.
struct Guard {
    was_mounted: bool,
    /// Handlers that claimed riscv64 before the test: (name, status text).
    saved: Vec<(String, String)>,
}

impl Guard {
    /// Records the state, then clears riscv64 handlers for a clean start.
    fn take() -> Guard {
        let was_mounted = mounted();
        let saved: Vec<(String, String)> = if was_mounted {
            riscv64_claimers()
                .into_iter()
                .filter_map(|n| status_of(&n).map(|t| (n, t)))
                .collect()
        } else {
            Vec::new()
        };
        for (n, _) in &saved {
            remove(n);
        }
        Guard { was_mounted, saved }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if mounted() {
            for n in riscv64_claimers()
                .into_iter()
                .chain([TEST_NAME.to_string()])
            {
                let _ = fs::write(Path::new(DIR).join(&n), "-1");
            }
            for (n, text) in &self.saved {
                if let Some(line) = line_from_status(n, text) {
                    if let Err(e) = fs::write(Path::new(DIR).join("register"), &line) {
                        eprintln!("could not restore binfmt handler {n} ({line}): {e}");
                        continue;
                    }
                    if text.lines().next() == Some("disabled") {
                        let _ = fs::write(Path::new(DIR).join(n), "0");
                    }
                }
            }
        }
        if !self.was_mounted && mounted() {
            let _ = nix::mount::umount(DIR);
        }
    }
}

fn xroot(env: &Env, args: &[&str]) -> Output {
    let o = env.run(args);
    eprintln!("$ xroot {}\n{}{}", args.join(" "), stdout(&o), stderr(&o));
    o
}

#[track_caller]
fn fails_with(o: &Output, wants: &[&str]) -> String {
    let text = format!("{}{}", stdout(o), stderr(o));
    assert_eq!(o.status.code(), Some(1), "{text}");
    for w in wants {
        assert!(text.contains(w), "lacks {w:?}:\n{text}");
    }
    text
}

/// The status line for riscv64 in `xroot binfmt status riscv64`.
fn status_row(env: &Env) -> String {
    let o = xroot(env, &["binfmt", "status", "riscv64"]);
    let out = ok(&o);
    out.lines()
        .find(|l| l.starts_with("riscv64"))
        .unwrap_or_else(|| panic!("no riscv64 row:\n{out}"))
        .to_string()
}

#[test]
fn host_handlers_are_respected_and_restored() {
    // Registers and removes host binfmt_misc handlers.
    if !sandbox_ready("riscv64") || !host_changes_allowed() {
        return;
    }
    let qemu = PathBuf::from("/usr/bin/qemu-riscv64-static");
    assert!(
        require(qemu.is_file(), "/usr/bin/qemu-riscv64-static"),
        "skipped"
    );
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "riscv64", "--binfmt", "private", "--quiet"]));
    let guard = Guard::take();

    // 1. binfmt_misc not mounted: `install` mounts it. Shown in a private
    //    mount namespace, so the host's own mount table is never touched
    //    by this step (the handlers themselves are global either way).
    let mounts_before = host_mounts();
    let script = format!(
        "umount {DIR} 2>/dev/null; {x} binfmt status riscv64 | head -n1; \
         {x} binfmt install riscv64 && test -e {DIR}/register && echo MOUNTED-BY-XROOT",
        x = bin().display()
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("XROOT_HOME", env.home())
        .output()
        .unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    eprintln!("{out}");
    assert!(o.status.success(), "{out}");
    assert!(out.contains("host binfmt_misc: not mounted"), "{out}");
    assert!(out.contains("MOUNTED-BY-XROOT"), "{out}");
    assert_eq!(host_mounts(), mounts_before, "the host's mounts changed");
    // On the host (mounting it here too if it was not).
    ok(&xroot(&env, &["binfmt", "install", "riscv64"]));
    assert!(mounted());
    let ours = status_of(XROOT_NAME).expect("xroot's handler registered");
    assert!(ours.starts_with("enabled"), "{ours}");
    assert!(ours.contains("flags: ") && ours.contains('F'), "{ours}");

    // 2. A fitting handler is left alone.
    let o = xroot(&env, &["binfmt", "install", "riscv64"]);
    assert!(stderr(&o).contains("already fits"), "{}", stderr(&o));
    assert_eq!(status_of(XROOT_NAME).as_deref(), Some(ours.as_str()));
    assert!(status_row(&env).contains("qemu-riscv64 ok"));
    assert_eq!(
        ok(&xroot(
            &env,
            &["run", "riscv64", "--binfmt", "host", "--", "uname", "-m"]
        )),
        "riscv64\n"
    );

    // 3. Disabled: reported, refused with a hint, not changed without --force.
    fs::write(Path::new(DIR).join(XROOT_NAME), "0").unwrap();
    let row = status_row(&env);
    assert!(row.contains("UNFIT") && row.contains("disabled"), "{row}");
    let o = xroot(&env, &["run", "riscv64", "--binfmt", "host", "--", "true"]);
    fails_with(&o, &["riscv64", "disabled", "hint:"]);
    let o = xroot(&env, &["binfmt", "install", "riscv64"]);
    fails_with(&o, &["disabled", "--force"]);
    assert!(status_of(XROOT_NAME).unwrap().starts_with("disabled"));
    fs::write(Path::new(DIR).join(XROOT_NAME), "1").unwrap();
    ok(&xroot(
        &env,
        &["run", "riscv64", "--binfmt", "host", "--", "true"],
    ));

    // 4. Someone else's handler without F (its interpreter would be looked
    //    up inside the guest): not changed without --force; --force replaces.
    remove(XROOT_NAME);
    let foreign = format!(
        ":{TEST_NAME}:M:0:{}:{}:/nonexistent/xroot-test-interp:",
        esc(MAGIC),
        esc(MASK)
    );
    register(&foreign);
    let theirs = status_of(TEST_NAME).unwrap();
    let row = status_row(&env);
    assert!(
        row.contains(&format!("{TEST_NAME} UNFIT")) && row.contains("lacks the F flag"),
        "{row}"
    );
    assert!(row.contains("does not exist"), "{row}");
    let o = xroot(&env, &["binfmt", "install", "riscv64"]);
    fails_with(
        &o,
        &[TEST_NAME, "does not fit", "lacks the F flag", "--force"],
    );
    assert_eq!(status_of(TEST_NAME).as_deref(), Some(theirs.as_str()));
    assert!(status_of(XROOT_NAME).is_none());
    let o = xroot(&env, &["run", "riscv64", "--binfmt", "host", "--", "true"]);
    fails_with(&o, &["lacks the F flag", "--force"]);
    let o = xroot(&env, &["binfmt", "install", "riscv64", "--force"]);
    ok(&o);
    assert!(stderr(&o).contains(&format!("removed handler {TEST_NAME}")));
    assert!(status_of(TEST_NAME).is_none());
    assert!(status_of(XROOT_NAME).is_some());

    // 5. Another interpreter, with F: it works, so it is kept (and said so).
    remove(XROOT_NAME);
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("qemu-riscv64-other");
    fs::copy(&qemu, &other).unwrap();
    register(&format!(
        ":{TEST_NAME}:M:0:{}:{}:{}:F",
        esc(MAGIC),
        esc(MASK),
        other.display()
    ));
    let theirs = status_of(TEST_NAME).unwrap();
    let o = xroot(&env, &["binfmt", "install", "riscv64"]);
    assert!(
        stderr(&o).contains(&format!("handler {TEST_NAME} already fits")),
        "{}",
        stderr(&o)
    );
    assert_eq!(status_of(TEST_NAME).as_deref(), Some(theirs.as_str()));
    assert_eq!(
        ok(&xroot(
            &env,
            &["run", "riscv64", "--binfmt", "host", "--", "uname", "-m"]
        )),
        "riscv64\n"
    );

    // 6. Its interpreter file deleted: F pinned it, so it still works, and
    //    status says what happened.
    fs::remove_file(&other).unwrap();
    let row = status_row(&env);
    assert!(
        row.contains(&format!("{TEST_NAME} ok")) && row.contains("was deleted"),
        "{row}"
    );
    assert_eq!(
        ok(&xroot(
            &env,
            &["run", "riscv64", "--binfmt", "host", "--", "uname", "-m"]
        )),
        "riscv64\n"
    );
    // Without F, a deleted interpreter is unusable: reported and refused.
    remove(TEST_NAME);
    register(&format!(
        ":{TEST_NAME}:M:0:{}:{}:{}:",
        esc(MAGIC),
        esc(MASK),
        other.display()
    ));
    let row = status_row(&env);
    assert!(
        row.contains("UNFIT") && row.contains("does not exist"),
        "{row}"
    );
    let o = xroot(&env, &["run", "riscv64", "--binfmt", "host", "--", "true"]);
    fails_with(&o, &["does not exist", "hint:"]);
    ok(&xroot(&env, &["binfmt", "install", "riscv64", "--force"]));
    assert!(status_of(TEST_NAME).is_none());

    // 7. The guest cannot change the host's handlers.
    let before = status_of(XROOT_NAME).unwrap();
    let o = xroot(
        &env,
        &[
            "run",
            "riscv64",
            "--binfmt",
            "host",
            "--",
            "sh",
            "-c",
            &format!(
                "echo ':xroot-guest:M::\\x7fELF::/bin/sh:' > {DIR}/register && echo REGISTERED; \
                 echo -1 > {DIR}/{XROOT_NAME} && echo REMOVED; echo 0 > {DIR}/status && echo DISABLED-ALL; \
                 mkdir -p /mnt/b && mount -t binfmt_misc binfmt_misc /mnt/b 2>/dev/null && \
                 echo ':xroot-guest:M::\\x7fELF::/bin/sh:' > /mnt/b/register; \
                 test -e /mnt/b/{XROOT_NAME} && echo SEES-HOST-HANDLERS; echo done"
            ),
        ],
    );
    assert_eq!(ok(&o), "done\n");
    assert!(status_of("xroot-guest").is_none());
    assert_eq!(status_of(XROOT_NAME).as_deref(), Some(before.as_str()));
    assert_eq!(
        fs::read_to_string(Path::new(DIR).join("status"))
            .unwrap()
            .trim(),
        "enabled"
    );

    // 8. `binfmt remove` removes what claims riscv64, and only that.
    let others: Vec<String> = names_in(DIR)
        .into_iter()
        .filter(|n| n != XROOT_NAME)
        .collect();
    ok(&xroot(&env, &["binfmt", "remove", "riscv64"]));
    assert!(riscv64_claimers().is_empty());
    let now: Vec<String> = names_in(DIR);
    for n in &others {
        // Other sessions may register handlers of their own meanwhile;
        // none that was there may be gone.
        assert!(now.contains(n), "binfmt remove riscv64 removed {n}");
    }
    drop(guard);
}
