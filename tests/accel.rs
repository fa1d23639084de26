//! Issue #16: `xroot run --accel` runs the guest's cc1 and assembler
//! natively from the host's matching cross toolchain, with identical output.
//!
//! The contract test builds a real project, zlib from Debian's source
//! package, in a real Debian 12 s390x tree twice, emulated and accelerated,
//! and compares every object file: the machine code (`objdump -d`) and every
//! byte outside `.comment` (which names the compiler's version string).
//!
//! The tree is made with mmdebstrap's `extract` variant (it needs no
//! emulation on the host, so no host binfmt handler) and configured by
//! `dpkg --install` of its own packages inside xroot (whose binfmt handler
//! is private to the guest). It takes minutes, so it is kept under
//! target/tmp, keyed by the recipe and the host cross packages' versions
//! (a new cross compiler wants the guest that matches it). Needs network
//! access to a Debian mirror (`XROOT_TEST_DEBIAN_MIRROR`, default
//! deb.debian.org), mmdebstrap, gcc-12-s390x-linux-gnu and
//! binutils-s390x-linux-gnu (.ci/run installs them).

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use sha2::{Digest, Sha256};

const TRIPLE: &str = "s390x-linux-gnu";
const SUITE: &str = "bookworm";
/// What the tree holds; part of the cache key.
const INCLUDE: [&str; 3] = ["?essential", "?priority(required)", "build-essential"];

fn mirror() -> String {
    std::env::var("XROOT_TEST_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("accel")
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn host_version(pkg: &str) -> Option<String> {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", pkg])
        .output()
        .ok()?;
    (o.status.success() && !o.stdout.is_empty())
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Everything the contract test needs; false (or a panic under CI) if not.
fn ready() -> bool {
    sandbox_ready("s390x")
        && require(
            have("mmdebstrap"),
            "mmdebstrap (apt-get install mmdebstrap)",
        )
        && require(
            Path::new(&format!("/usr/lib/gcc-cross/{TRIPLE}/12/cc1")).is_file()
                && host_version(&format!("cpp-12-{TRIPLE}")).is_some(),
            "the s390x cross compiler (apt-get install gcc-12-s390x-linux-gnu)",
        )
        && require(
            have(&format!("{TRIPLE}-objdump"))
                && host_version(&format!("binutils-{TRIPLE}")).is_some(),
            "the s390x binutils (apt-get install binutils-s390x-linux-gnu)",
        )
        && require(
            Path::new(&format!("/usr/lib/gcc-cross/{TRIPLE}/12/cc1plus")).is_file(),
            "the s390x cross C++ compiler (apt-get install g++-12-s390x-linux-gnu)",
        )
}

fn sh(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A configured Debian 12 s390x tree with build-essential, cached.
fn debian_tree(env: &Env) -> PathBuf {
    let recipe = format!(
        "{SUITE} s390x {INCLUDE:?} {} {}",
        host_version(&format!("cpp-12-{TRIPLE}")).unwrap_or_default(),
        host_version(&format!("binutils-{TRIPLE}")).unwrap_or_default()
    );
    let key = hex(&Sha256::digest(recipe.as_bytes())[..8]);
    let dir = cache().join(format!("debian-{key}"));
    let tree = dir.join("tree");
    if dir.join("ready").is_file() {
        return tree;
    }
    let staging = dir.join("staging");
    let _ = Command::new("rm").arg("-rf").arg(&staging).status();
    fs::create_dir_all(&staging).unwrap();
    let mut mm = Command::new("mmdebstrap");
    mm.args([
        "--variant=extract",
        "--architectures=s390x",
        "--skip=cleanup/apt/cache",
        "--quiet",
    ]);
    for i in INCLUDE {
        mm.arg(format!("--include={i}"));
    }
    sh(mm.arg(SUITE).arg(staging.join("tree")).arg(mirror()));
    // Configure it in its own arch, through xroot's private binfmt handler.
    sh(env.cmd().arg("run").arg("s390x").arg("--rootfs").arg(staging.join("tree")).args([
        "--",
        "sh",
        "-c",
        "cd /var/cache/apt/archives && dpkg --install --force-depends ./*.deb >/dev/null && rm -f ./*.deb && dpkg --audit",
    ]));
    fs::rename(staging.join("tree"), &tree).unwrap();
    fs::write(dir.join("ready"), recipe).unwrap();
    tree
}

/// zlib's source from Debian's archive (apt-get source with a private apt
/// configuration holding a deb-src line), unpacked; cached.
fn zlib_source() -> PathBuf {
    let dir = cache().join("zlib-source");
    let ready = dir.join("ready");
    if let Ok(name) = fs::read_to_string(&ready) {
        return dir.join(name.trim());
    }
    let _ = Command::new("rm").arg("-rf").arg(&dir).status();
    let apt = dir.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "dl"] {
        fs::create_dir_all(apt.join(d)).unwrap();
    }
    fs::write(
        apt.join("sources.list"),
        format!(
            "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {SUITE} main\n",
            mirror()
        ),
    )
    .unwrap();
    let opts = |c: &mut Command| {
        c.arg("-q")
            .arg("-o")
            .arg(format!(
                "Dir::Etc::SourceList={}",
                apt.join("sources.list").display()
            ))
            .args(["-o", "Dir::Etc::SourceParts=/nonexistent", "-o"])
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()))
            .args(["-o", "APT::Sandbox::User=root"]);
    };
    let mut update = Command::new("apt-get");
    opts(&mut update);
    sh(update.arg("update"));
    let mut source = Command::new("apt-get");
    opts(&mut source);
    sh(source
        .args(["source", "--download-only", "zlib"])
        .current_dir(apt.join("dl")));
    let orig = fs::read_dir(apt.join("dl"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".orig.tar."))
        .expect("zlib's .orig tarball");
    sh(Command::new("tar")
        .args(["--no-same-owner", "-xf"])
        .arg(&orig)
        .arg("-C")
        .arg(&dir));
    let name = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("zlib-"))
        .expect("unpacked zlib source");
    fs::write(&ready, &name).unwrap();
    dir.join(name)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Object files under `dir`, relative, sorted.
fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "o") {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Copies the source and builds it in the tree: configure, make, make test.
fn build(env: &Env, tree: &Path, src: &Path, work: &Path, accel: Option<&str>) -> (Output, f64) {
    sh(Command::new("cp").arg("-a").arg(src).arg(work));
    let mut c = env.cmd();
    c.arg("run")
        .arg("s390x")
        .arg("--rootfs")
        .arg(tree)
        .current_dir(work);
    if let Some(a) = accel {
        c.arg(format!("--accel={a}"));
    }
    c.args(["--", "sh", "-c", "./configure && make -j2 && make test"]);
    let t = Instant::now();
    let o = c.output().unwrap();
    (o, t.elapsed().as_secs_f64())
}

fn file_sha(p: &Path) -> String {
    hex(&Sha256::digest(fs::read(p).unwrap()))
}

/// C++ that pulls in most of libstdc++'s headers' machinery, with
/// __FILE__ (through assert) so header paths reach the object.
const CXX: &str = r#"#include <algorithm>
#include <cassert>
#include <iostream>
#include <map>
#include <string>
#include <vector>
template <typename T> T sum(const std::vector<T>& v) { T s{}; for (auto& x : v) s += x; return s; }
int main() {
    std::map<std::string, std::vector<int>> m{{"a", {3, 1, 2}}, {"b", {5}}};
    for (auto& [k, v] : m) { std::sort(v.begin(), v.end()); assert(!v.empty()); std::cout << k << sum(v) << "\n"; }
    return 0;
}
"#;

/// C through the gcc, local, multiarch and /usr/include directories.
const C: &str = "#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <float.h>\n#include <sys/types.h>\n#include <assert.h>\nint main(void) { uint64_t x = DBL_DIG; assert(x); printf(\"%zu %llu\\n\", sizeof(size_t), (unsigned long long)x); return 0; }\n";

#[test]
fn accelerated_zlib_build_gives_identical_objects() {
    if !ready() {
        return;
    }
    let env = Env::new("file:///nonexistent");
    let tree = debian_tree(&env);
    let src = zlib_source();
    let guest_cc1 = tree.join(format!("usr/lib/gcc/{TRIPLE}/12/cc1"));
    let guest_as = tree.join(format!("usr/bin/{TRIPLE}-as"));
    let before = (file_sha(&guest_cc1), file_sha(&guest_as));
    let mounts = host_mounts();

    let work = tempfile::tempdir().unwrap();
    let (emu_dir, acc_dir) = (
        work.path().join("emulated"),
        work.path().join("accelerated"),
    );
    let (emu, emu_s) = build(&env, &tree, &src, &emu_dir, None);
    assert!(
        emu.status.success(),
        "emulated build failed:\n{}\n{}",
        stdout(&emu),
        stderr(&emu)
    );
    // stable-updates: Debian 12's cross gcc is built from gcc-12 12.2.0-14,
    // its s390x gcc is 12.2.0-14+deb12u1 (an AArch64-only fix); this test
    // is what shows that it does not matter for s390x.
    let (acc, acc_s) = build(&env, &tree, &src, &acc_dir, Some("stable-updates"));
    assert!(
        acc.status.success(),
        "accelerated build failed:\n{}\n{}",
        stdout(&acc),
        stderr(&acc)
    );
    let note = stderr(&acc);
    assert!(
        note.contains("accelerated: cc1 (gcc 12") && note.contains("as (binutils"),
        "cc1 and as must run natively: {note}"
    );
    for o in [&emu, &acc] {
        assert!(
            stdout(o).contains("*** zlib test OK ***"),
            "make test: {}",
            stdout(o)
        );
    }
    eprintln!(
        "zlib configure+make+test: emulated {emu_s:.1} s, accelerated {acc_s:.1} s ({:.1}x)",
        emu_s / acc_s
    );

    let objs = objects(&emu_dir);
    assert!(objs.len() >= 15, "too few objects: {objs:?}");
    assert_eq!(
        objs,
        objects(&acc_dir),
        "the two builds made different object files"
    );
    let objdump = format!("{TRIPLE}-objdump");
    let objcopy = format!("{TRIPLE}-objcopy");
    for rel in &objs {
        let dis =
            |dir: &Path| sh(Command::new(&objdump).arg("-d").arg(rel).current_dir(dir)).stdout;
        assert!(
            dis(&emu_dir) == dis(&acc_dir),
            "{}: machine code differs",
            rel.display()
        );
        let strip = |dir: &Path, out: &str| {
            let o = work.path().join(out);
            sh(Command::new(&objcopy)
                .args(["-R", ".comment"])
                .arg(dir.join(rel))
                .arg(&o));
            fs::read(o).unwrap()
        };
        assert!(
            strip(&emu_dir, "a.o") == strip(&acc_dir, "b.o"),
            "{}: bytes outside .comment differ",
            rel.display()
        );
    }
    // Nothing of the guest changed, and no mount is left on the host.
    assert_eq!(before, (file_sha(&guest_cc1), file_sha(&guest_as)));
    assert!(
        !tree.join(".xroot").exists(),
        "the /.xroot mount point was left in the tree"
    );
    assert_eq!(mounts, host_mounts());

    // C++ through cc1plus, and the preprocessor: the same objects, and the
    // same preprocessed text (so the same headers, found in the same
    // directories, spelt the same way in line markers) both ways.
    let script = "g++ -O2 -c t.cc -o t.o && g++ -E t.cc -o t.ii && gcc -O2 -c t.c -o c.o && gcc -E t.c -o t.i";
    let mut outs = Vec::new();
    for (name, accel) in [
        ("cxx-emulated", None),
        ("cxx-accelerated", Some("--accel=stable-updates")),
    ] {
        let d = work.path().join(name);
        fs::create_dir(&d).unwrap();
        fs::write(d.join("t.cc"), CXX).unwrap();
        fs::write(d.join("t.c"), C).unwrap();
        let mut c = env.cmd();
        c.args(["run", "s390x", "--rootfs"])
            .arg(&tree)
            .current_dir(&d);
        c.args(accel).args(["--", "sh", "-c", script]);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        if accel.is_some() {
            assert!(
                stderr(&o).contains("cc1plus (gcc 12"),
                "cc1plus must run natively: {}",
                stderr(&o)
            );
        }
        outs.push(d);
    }
    for f in ["t.ii", "t.i"] {
        let (a, b) = (
            fs::read(outs[0].join(f)).unwrap(),
            fs::read(outs[1].join(f)).unwrap(),
        );
        assert!(a == b, "{f}: the preprocessed output differs");
    }
    for f in ["t.o", "c.o"] {
        let dis = |dir: &Path| sh(Command::new(&objdump).arg("-d").arg(f).current_dir(dir)).stdout;
        assert!(dis(&outs[0]) == dis(&outs[1]), "{f}: machine code differs");
        let strip = |dir: &Path, out: &str| {
            let o = work.path().join(out);
            sh(Command::new(&objcopy)
                .args(["-R", ".comment"])
                .arg(dir.join(f))
                .arg(&o));
            fs::read(o).unwrap()
        };
        assert!(
            strip(&outs[0], "a.o") == strip(&outs[1], "b.o"),
            "{f}: bytes outside .comment differ"
        );
    }

    // Exact matching says why when only a stable update differs, and
    // doctor explains each program.
    let doc = env.run(&["doctor", "--accel", tree.to_str().unwrap()]);
    let text = stdout(&doc);
    assert!(
        text.contains(&format!(
            "/usr/bin/{TRIPLE}-as runs /usr/bin/{TRIPLE}-as natively"
        )),
        "{text}"
    );
    assert!(text.contains("cc1"), "{text}");
}

#[test]
fn a_guest_without_a_debian_toolchain_runs_unaccelerated_with_a_note() {
    if !sandbox_ready("s390x") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    let o = env.run(&["run", "s390x", "--accel", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no acceleration: the guest has no dpkg database"),
        "{err}"
    );
    let doc = env.run(&["doctor", "--accel", "s390x"]);
    assert_eq!(doc.status.code(), Some(1));
    assert!(
        stdout(&doc).contains("NO    the guest has no dpkg database"),
        "{}",
        stdout(&doc)
    );
    // `--accel ARCH`: the flag takes no separate value, so ARCH stays ARCH.
    let o = env.run(&["run", "--accel", "s390x", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bad = env.run(&["run", "s390x", "--accel=fast", "--", "true"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("stable-updates"), "{}", stderr(&bad));
}
