//! Issue #4: every architecture qemu-user runs, proven with the static
//! probe built for 14 targets, each in a tiny rootfs of its own.

mod common;
use common::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// (probe's qemu target, xroot arch, what `uname -m` says under it).
const PROBES: [(&str, &str, &str); 14] = [
    ("aarch64", "aarch64", "aarch64"),
    ("arm", "armv7", "armv7l"),
    ("armel", "armel", "armv7l"),
    ("i386", "x86", "i686"),
    ("x86_64", "x86_64", "x86_64"),
    ("ppc", "ppc", "ppc"),
    ("ppc64", "ppc64", "ppc64"),
    ("ppc64le", "ppc64le", "ppc64le"),
    ("mips", "mips", "mips"),
    ("mipsel", "mipsel", "mips"),
    ("mips64", "mips64", "mips64"),
    ("mips64el", "mips64el", "mips64"),
    ("s390x", "s390x", "s390x"),
    ("riscv64", "riscv64", "riscv64"),
];

/// A tree holding only the given probes, as /NAME.
fn tiny_rootfs(dir: &Path, probes: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for (target, name) in probes {
        std::fs::copy(probe(target), root.join(name)).unwrap();
    }
    root
}

fn report(out: &str) -> Vec<HashMap<String, String>> {
    let mut reports = Vec::new();
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k == "machine" {
            reports.push(HashMap::new());
        }
        reports
            .last_mut()
            .expect("report starts with machine=")
            .insert(k.to_string(), v.to_string());
    }
    reports
}

#[test]
fn every_probe_runs_in_its_own_sandbox() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let env = Env::new("http://127.0.0.1:9");
    for (target, arch, uname) in PROBES {
        // The armel probe runs under qemu-arm, like armhf/armv7.
        let qemu = if target == "armel" { "arm" } else { target };
        if !require(
            have_qemu(qemu) || ["x86_64", "i386"].contains(&target),
            &format!("qemu-{qemu}-static"),
        ) {
            continue;
        }
        let t = tempfile::tempdir().unwrap();
        let root = tiny_rootfs(t.path(), &[(target, "probe")]);
        let o = env.run(&[
            "run",
            arch,
            "--rootfs",
            root.to_str().unwrap(),
            "--",
            "/probe",
        ]);
        let out = ok(&o);
        let r = &report(&out)[0];
        assert_eq!(r["machine"], uname, "{target}: {out}");
        assert_eq!(
            r["pid"], "2",
            "{target}: own PID namespace, child of xroot's init"
        );
        assert_eq!(r["proc"], "yes", "{target}");
        assert_eq!(r["devnull"], "ok", "{target}");
        assert_eq!(r["ptmx"], "yes", "{target}");
        assert_eq!(r["sys"], "yes", "{target}");
        assert_eq!(r["argv0"], "/probe", "{target}");
        assert_eq!(r["uid"], "0", "{target}");
        assert_eq!(r["hostname"], format!("xroot-{arch}"), "{target}");
        assert_eq!(r["env_HOME"], "/root", "{target}");
        // The tiny tree is left as it was: only the probe.
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("probe")],
            "{target}: mount points cleaned up"
        );
        // Exit status passes through.
        let o = env.run(&[
            "run",
            "--rootfs",
            root.to_str().unwrap(),
            "--",
            "/probe",
            "exit",
            "9",
        ]);
        assert_eq!(
            o.status.code(),
            Some(9),
            "{target} (arch detected): {}",
            stderr(&o)
        );
    }
}

#[test]
fn foreign_program_execs_another_foreign_arch_with_argv0() {
    if !sandbox_ready("s390x") || !require(have_qemu("mips64el"), "qemu-mips64el-static") {
        return;
    }
    let env = Env::new("http://127.0.0.1:9");
    let t = tempfile::tempdir().unwrap();
    let root = tiny_rootfs(
        t.path(),
        &[("aarch64", "probe"), ("s390x", "be"), ("mips64el", "mips")],
    );
    // Without --multiarch only the guest's own arch has a handler: exec of
    // another foreign arch fails, and says why.
    let o = env.run(&[
        "run",
        "aarch64",
        "--rootfs",
        root.to_str().unwrap(),
        "--",
        "/probe",
        "exec",
        "/be",
    ]);
    let out = stdout(&o);
    assert!(out.contains("exec_error=Exec format error"), "{out}");
    // With it: aarch64 → s390x → mips64el.
    let o = env.run(&[
        "run",
        "aarch64",
        "--multiarch",
        "--rootfs",
        root.to_str().unwrap(),
        "--",
        "/probe",
        "exec",
        "/be",
        "exec",
        "/mips",
        "custom-argv0",
    ]);
    let out = ok(&o);
    let r = report(&out);
    assert_eq!(r.len(), 3, "{out}");
    assert_eq!(r[0]["machine"], "aarch64");
    assert_eq!(r[1]["machine"], "s390x");
    assert_eq!(r[2]["machine"], "mips64");
    // The probe's `exec PATH ARGS` passes PATH as argv[0].
    assert_eq!(r[1]["argv0"], "/be", "{out}");
    assert_eq!(r[2]["argv0"], "/mips", "{out}");
    assert_eq!(r[2]["argc"], "2", "{out}");
}

#[test]
fn argv0_is_preserved_with_p_flag() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "aarch64", "--quiet"]));
    // busybox's `exec -a` sets argv[0]; the probe reports what it got.
    let dir = env.rootfs("aarch64");
    std::fs::copy(probe("aarch64"), dir.join("usr/local/bin/probe")).unwrap();
    let o = env.run(&[
        "run",
        "aarch64",
        "--",
        "sh",
        "-c",
        "exec -a renamed /usr/local/bin/probe",
    ]);
    let r = &report(&ok(&o))[0];
    assert_eq!(r["argv0"], "renamed");
    // A login shell sees "-sh" as its $0.
    let o = env.run(&[
        "run",
        "aarch64",
        "--",
        "sh",
        "-c",
        "exec -a -sh /bin/sh -c 'echo $0'",
    ]);
    assert_eq!(ok(&o).trim(), "-sh");
}

#[test]
fn arch_mismatch_is_refused() {
    let env = Env::new("http://127.0.0.1:9");
    let t = tempfile::tempdir().unwrap();
    let root = tiny_rootfs(t.path(), &[("s390x", "probe")]);
    let o = env.run(&[
        "run",
        "aarch64",
        "--rootfs",
        root.to_str().unwrap(),
        "--",
        "/probe",
    ]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("is for s390x, not aarch64"),
        "{e}"
    );
    // A tree with nothing to judge by, and no arch given.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = env.run(&["run", "--rootfs", empty.to_str().unwrap(), "--", "/nothing"]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("cannot tell the architecture"),
        "{e}"
    );
}

fn aarch64_tarball() -> PathBuf {
    mirror_dir().join("v3.20/releases/aarch64/alpine-minirootfs-3.20.3-aarch64.tar.gz")
}

const AARCH64_SHA256: &str = "041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de";

#[test]
fn import_own_tarballs_under_names() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let env = Env::new(&server.url);
    let tgz = aarch64_tarball();
    // A verified import under a name, from a file and from a URL.
    ok(&env.run(&[
        "fetch",
        "aarch64",
        "--from",
        tgz.to_str().unwrap(),
        "--sha256",
        AARCH64_SHA256,
        "--name",
        "imported",
    ]));
    let url = format!(
        "{}/v3.20/releases/aarch64/alpine-minirootfs-3.20.3-aarch64.tar.gz",
        server.url
    );
    ok(&env.run(&[
        "fetch",
        "arm64@web",
        "--from",
        &url,
        "--sha256",
        AARCH64_SHA256,
        "--quiet",
    ]));
    // Another release branch under a name.
    ok(&env.run(&[
        "fetch", "aarch64", "--branch", "v3.20", "--name", "old", "--quiet",
    ]));
    // xz and zstd compressed tarballs are unpacked too.
    let t = tempfile::tempdir().unwrap();
    let raw = {
        use std::io::Read;
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&tgz).unwrap())
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    let xz = t.path().join("rootfs.tar.xz");
    {
        use std::io::Write;
        let mut enc = xz2::write::XzEncoder::new(std::fs::File::create(&xz).unwrap(), 1);
        enc.write_all(&raw).unwrap();
        enc.finish().unwrap();
    }
    let zst = t.path().join("rootfs.tar.zst");
    std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    ok(&env.run(&[
        "fetch",
        "aarch64@xz",
        "--from",
        xz.to_str().unwrap(),
        "--quiet",
    ]));
    ok(&env.run(&[
        "fetch",
        "aarch64@zst",
        "--from",
        zst.to_str().unwrap(),
        "--quiet",
    ]));
    for name in ["imported", "web", "old", "xz", "zst"] {
        let o = env.run(&[
            "run",
            &format!("aarch64@{name}"),
            "--",
            "cat",
            "/etc/alpine-release",
        ]);
        assert_eq!(ok(&o), "3.20.3\n", "{name}");
    }
    // `list` shows every named rootfs.
    let v: serde_json::Value = serde_json::from_str(&ok(&env.run(&["list", "--json"]))).unwrap();
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["arch"] == "aarch64")
        .unwrap();
    let ids: Vec<&str> = row["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "aarch64@imported",
            "aarch64@old",
            "aarch64@web",
            "aarch64@xz",
            "aarch64@zst"
        ]
    );
    // A named rootfs that is not installed is not fetched silently.
    let o = env.run(&["run", "aarch64@nope", "--", "true"]);
    assert!(
        !o.status.success() && stderr(&o).contains("aarch64@nope is not installed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn import_with_bad_checksum_installs_nothing() {
    let env = Env::new("http://127.0.0.1:9");
    let wrong = "0".repeat(64);
    let o = env.run(&[
        "fetch",
        "aarch64",
        "--from",
        aarch64_tarball().to_str().unwrap(),
        "--sha256",
        &wrong,
    ]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("sha256 mismatch") && e.contains(AARCH64_SHA256),
        "{e}"
    );
    assert!(!env.home().join("rootfs/aarch64").exists());
    // The wrong arch is refused even with the right checksum.
    let o = env.run(&[
        "fetch",
        "s390x",
        "--from",
        aarch64_tarball().to_str().unwrap(),
        "--sha256",
        AARCH64_SHA256,
    ]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("is for aarch64, not s390x"),
        "{e}"
    );
    assert!(!env.home().join("rootfs/s390x").exists());
    assert_eq!(
        std::fs::read_dir(env.home().join("tmp")).unwrap().count(),
        0
    );
}

/// A spec of the user's own (XROOT_SPECS_DIR) with a plain tarball source,
/// by pinned sha256 or by checksum file, and one that replaces a built-in.
#[test]
fn user_specs_with_tarball_sources() {
    if !sandbox_ready("aarch64") {
        return;
    }
    let server = MirrorServer::alpine();
    let specs = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/v3.20/releases/aarch64/alpine-minirootfs-3.20.3-aarch64.tar.gz",
        server.url
    );
    let spec = |name: &str, source: &str| {
        format!(
            "name = \"{name}\"\naliases = []\ndescription = \"test arch\"\nuname = \"aarch64\"\nqemu = \"aarch64\"\n\
             [binfmt]\nmagic = \"7f454c460201010000000000000000000200b700\"\nmask = \"ffffffffffffff00fffffffffffffffffeffffff\"\n\
             [source]\nkind = \"tarball\"\n{source}"
        )
    };
    std::fs::write(
        specs.path().join("pinned64.toml"),
        spec(
            "pinned64",
            &format!(
                "url = \"{url}\"\nsha256 = \"{AARCH64_SHA256}\"\nversion = \"3.20.3-pinned\"\n"
            ),
        ),
    )
    .unwrap();
    std::fs::write(
        specs.path().join("summed64.toml"),
        spec(
            "summed64",
            &format!("url = \"{url}\"\nsha256_url = \"{url}.sha256\"\n"),
        ),
    )
    .unwrap();
    std::fs::write(
        specs.path().join("bad64.toml"),
        spec(
            "bad64",
            &format!("url = \"{url}\"\nsha256 = \"{}\"\n", "1".repeat(64)),
        ),
    )
    .unwrap();
    let env = Env::new(&server.url);
    let run = |args: &[&str]| {
        env.cmd()
            .env("XROOT_SPECS_DIR", specs.path())
            .args(args)
            .output()
            .unwrap()
    };
    for name in ["pinned64", "summed64"] {
        ok(&run(&["fetch", name, "--quiet"]));
        assert_eq!(
            ok(&run(&["run", name, "--", "cat", "/etc/alpine-release"])),
            "3.20.3\n",
            "{name}"
        );
    }
    let o = run(&["fetch", "bad64"]);
    assert!(
        !o.status.success() && stderr(&o).contains("sha256 mismatch"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&run(&["list", "--json"]))).unwrap();
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["arch"] == "pinned64")
        .unwrap();
    assert_eq!(row["source"], url.as_str());
    assert_eq!(row["installed"][0]["version"], "3.20.3-pinned");
    // A user spec named like a built-in replaces it.
    std::fs::write(
        specs.path().join("s390x.toml"),
        spec(
            "s390x",
            &format!("url = \"{url}\"\nsha256 = \"{AARCH64_SHA256}\"\n"),
        )
        .replace("aliases = []", "aliases = [\"zarch\"]"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&run(&["list", "--json"]))).unwrap();
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["arch"] == "s390x")
        .unwrap();
    assert_eq!(row["source"], url.as_str());
    // A broken user spec is an error naming the file.
    std::fs::write(specs.path().join("broken.toml"), "name = 3").unwrap();
    let o = run(&["list"]);
    assert!(
        !o.status.success() && stderr(&o).contains("broken.toml"),
        "{}",
        stderr(&o)
    );
}
