//! Container images in and out (issue #17), against real parts: the
//! reference registry (`docker-registry`) on 127.0.0.1, images built from
//! the shared Alpine tarballs and pushed as one multi-platform index with
//! `skopeo copy --all`, the real `xroot` binary pulling them.

mod common;

use std::path::Path;

use common::oci::{build_layout, Built, Registry, ARCHES};
use common::{ok, stderr, Env};

/// ELF `e_machine` of a file (big- or little-endian, by its header).
fn machine(p: &Path) -> u16 {
    let h = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(&h[..4], b"\x7fELF", "{} is not ELF", p.display());
    let b = [h[18], h[19]];
    if h[5] == 2 {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

/// A registry holding `alpine:3.20` for every arch in `ARCHES`.
fn registry_with_alpine() -> Option<(Registry, Built, tempfile::TempDir)> {
    let reg = Registry::start()?;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let built = build_layout(&layout, "3.20", true);
    reg.push(&layout, "3.20", "xroot/alpine");
    Some((reg, built, dir))
}

fn manifest_of(env: &Env, id: &str) -> String {
    std::fs::read_to_string(env.home().join("rootfs").join(id).join("manifest.toml")).unwrap()
}

#[test]
fn pull_chooses_the_platform_and_applies_whiteouts() {
    let Some((reg, built, _d)) = registry_with_alpine() else {
        return;
    };
    let env = Env::new("http://127.0.0.1:1");
    let image = format!("docker://{}/xroot/alpine:3.20", reg.host);
    for (i, (arch, em)) in [
        ("s390x", 22u16),
        ("aarch64", 183),
        ("riscv64", 243),
        ("armv7", 40),
    ]
    .into_iter()
    .enumerate()
    {
        let o = env.run(&["fetch", arch, "--from", &image]);
        ok(&o);
        let id = format!("{arch}@alpine-3.20");
        let root = env.rootfs(&id);
        // The right platform: the tree's busybox is for this arch.
        assert_eq!(machine(&root.join("bin/busybox")), em, "{arch}");
        let want = ARCHES.iter().position(|a| a.alpine == arch).unwrap();
        let m = manifest_of(&env, &id);
        assert!(m.contains(&built.images[want].0), "{arch}: {m}");
        // Whiteouts: /etc/motd deleted, /etc/apk opaque (only the new
        // layer's file left), the rest of the lower layer untouched.
        assert!(!root.join("etc/motd").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/apk/arch")).unwrap(),
            "overlaid\n"
        );
        let apk: Vec<_> = std::fs::read_dir(root.join("etc/apk")).unwrap().collect();
        assert_eq!(apk.len(), 1, "{arch}: /etc/apk is not opaque");
        assert!(!root.join("etc/.wh.motd").exists());
        assert!(root.join("etc/os-release").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/xroot-layer")).unwrap(),
            "second layer\n"
        );
        // The shared top layer was downloaded once, for the first arch.
        assert_eq!(reg.blob_gets(&built.top_layer), 1, "after {i} pulls");
    }
    // `xroot list` shows the digest the tag resolved to.
    let list = ok(&env.run(&["list"]));
    assert!(
        list.contains(&format!("s390x@alpine-3.20 ({})", &built.images[1].0[..19])),
        "{list}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&env.run(&["list", "--json"]))).unwrap();
    let s390x = json
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arch"] == "s390x")
        .unwrap();
    assert_eq!(s390x["installed"][0]["digest"], built.images[1].0.as_str());
}

#[test]
fn a_re_pull_downloads_only_new_layers_and_a_digest_pins_the_image() {
    let Some((reg, built, _d)) = registry_with_alpine() else {
        return;
    };
    let env = Env::new("http://127.0.0.1:1");
    let (manifest, base) = &built.images[0];
    let image = format!("docker://{}/xroot/alpine:3.20", reg.host);
    ok(&env.run(&["fetch", "aarch64", "--from", &image]));
    assert_eq!(reg.blob_gets(base), 1);
    // Again, replacing it: every layer from the cache.
    let o = env.run(&["fetch", "aarch64", "--from", &image, "--force"]);
    ok(&o);
    assert!(
        stderr(&o).contains("2 layers, 2 from the layer cache"),
        "{}",
        stderr(&o)
    );
    assert_eq!(reg.blob_gets(base), 1);
    assert_eq!(reg.blob_gets(&built.top_layer), 1);
    // `reset` puts back the image installed (by its digest), from the cache.
    let root = env.rootfs("aarch64@alpine-3.20");
    std::fs::write(root.join("etc/os-release"), "changed").unwrap();
    ok(&env.run(&["reset", "aarch64@alpine-3.20"]));
    assert!(std::fs::read_to_string(root.join("etc/os-release"))
        .unwrap()
        .contains("Alpine"));
    assert!(manifest_of(&env, "aarch64@alpine-3.20").contains(manifest.as_str()));
    assert_eq!(reg.blob_gets(base), 1);
    // By digest, under another name: the same image, nothing downloaded.
    let pinned = format!("docker://{}/xroot/alpine@{manifest}", reg.host);
    ok(&env.run(&["fetch", "aarch64@pinned", "--from", &pinned]));
    assert!(manifest_of(&env, "aarch64@pinned").contains(manifest.as_str()));
    assert_eq!(reg.blob_gets(base), 1);
    // A digest the registry does not have: refused, nothing installed.
    let missing = format!(
        "docker://{}/xroot/alpine@sha256:{}",
        reg.host,
        "0".repeat(64)
    );
    let o = env.run(&["fetch", "aarch64@missing", "--from", &missing]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("has no image"), "{}", stderr(&o));
    assert!(!env.home().join("rootfs/aarch64@missing").exists());
    // No platform for the arch: a clear error listing what there is.
    let o = env.run(&["fetch", "x86_64", "--from", &image]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no image for x86_64 (linux/amd64)") && e.contains("linux/s390x"),
        "{e}"
    );
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_installed() {
    let Some((reg, built, _d)) = registry_with_alpine() else {
        return;
    };
    let env = Env::new("http://127.0.0.1:1");
    // Flip one byte in the middle of riscv64's base layer, in the
    // registry's own storage (same size, so only the digest tells).
    let (_, base) = &built.images[2];
    let file = reg.blob_file(base);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let image = format!("docker://{}/xroot/alpine:3.20", reg.host);
    let o = env.run(&["fetch", "riscv64", "--from", &image]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "expected {} bytes with digest {base}",
            bytes.len()
        )) || e.contains("digest"),
        "{e}"
    );
    assert!(e.contains("nothing was installed"), "{e}");
    assert!(!env.home().join("rootfs/riscv64@alpine-3.20").exists());
    let tmp: Vec<_> = std::fs::read_dir(env.home().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "staging left behind: {tmp:?}");
    let cached = env
        .home()
        .join("cache/oci/blobs/sha256")
        .join(base.trim_start_matches("sha256:"));
    assert!(!cached.exists(), "a bad layer went into the cache");
}

#[test]
fn local_layouts_and_archives() {
    if !common::require(
        common::oci::have("skopeo"),
        "skopeo (apt-get install skopeo)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let built = build_layout(&layout, "3.20", true);
    // Docker's formats have no zstd layers: a gzip-only layout for those.
    let gz_layout = dir.path().join("gz");
    build_layout(&gz_layout, "3.20", false);
    let env = Env::new("http://127.0.0.1:1");
    ok(&env.run(&[
        "fetch",
        "s390x",
        "--from",
        &format!("oci:{}:3.20", layout.display()),
    ]));
    assert!(manifest_of(&env, "s390x@layout-3.20").contains(&built.images[1].0));
    assert!(!env.rootfs("s390x@layout-3.20").join("etc/motd").exists());
    // The same as an oci-archive and a docker-archive, made by skopeo.
    for (transport, file) in [("oci-archive", "img.tar"), ("docker-archive", "docker.tar")] {
        let out = dir.path().join(file);
        let o = std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--override-arch", "riscv64"])
            .arg(format!("oci:{}:3.20", gz_layout.display()))
            .arg(format!("{transport}:{}", out.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = env.run(&[
            "fetch",
            "riscv64",
            "--from",
            &format!("{transport}:{}", out.display()),
        ]);
        ok(&o);
        let stem = file.trim_end_matches(".tar");
        let root = env.rootfs(&format!("riscv64@{stem}"));
        assert_eq!(machine(&root.join("bin/busybox")), 243);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/apk/arch")).unwrap(),
            "overlaid\n"
        );
    }
    // An image whose /etc is a symlink to a host directory: refused, and
    // nothing is created there (the mount points are made from fds).
    let host = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append_data(&mut h, ".wh.etc", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    b.append_link(&mut h, "etc", host.path()).unwrap();
    let evil = dir.path().join("evil");
    common::oci::build_layout_with(&evil, "1", &b.into_inner().unwrap(), false);
    let o = env.run(&[
        "fetch",
        "s390x",
        "--from",
        &format!("oci:{}:1", evil.display()),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/etc is not a directory"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
    assert!(!env.home().join("rootfs/s390x@evil-1").exists());
    // Not an image: clear errors.
    let o = env.run(&[
        "fetch",
        "s390x",
        "--from",
        &format!("oci:{}", dir.path().display()),
    ]);
    assert!(
        stderr(&o).contains("not an OCI image layout"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["fetch", "s390x", "--from", "docker://UPPER/case"]);
    assert!(
        stderr(&o).contains("not a repository name"),
        "{}",
        stderr(&o)
    );
}

/// Runs a tool, asserting success; returns stdout.
fn tool(program: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        o.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn an_exported_tree_loads_in_skopeo_umoci_podman_and_a_registry() {
    let Some(reg) = Registry::start() else {
        return;
    };
    if !common::require(
        common::oci::have("umoci") && common::oci::have("podman"),
        "umoci and podman (apt-get install umoci podman)",
    ) {
        return;
    }
    let server = common::MirrorServer::alpine();
    let env = Env::new(&server.url);
    ok(&env.run(&["fetch", "s390x"]));
    // What a user would have done in the tree: a file, a symlink, a hard link.
    let root = env.rootfs("s390x");
    std::fs::write(root.join("etc/prepared"), "by xroot\n").unwrap();
    std::os::unix::fs::symlink("/etc/prepared", root.join("etc/prepared-link")).unwrap();
    std::fs::hard_link(root.join("etc/prepared"), root.join("etc/prepared-hard")).unwrap();
    let out = env.dir.path();
    let img = out.join("image.tar");
    let img_s = img.display().to_string();
    let o = env.run(&["export", "s390x", &img_s, "--format", "oci"]);
    ok(&o);
    assert!(stderr(&o).contains("podman load -i"), "{}", stderr(&o));
    // The platform is in the config.
    let config = tool(
        "skopeo",
        &["inspect", "--config", &format!("oci-archive:{img_s}")],
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["architecture"], "s390x");
    assert_eq!(config["os"], "linux");
    // skopeo reads it into a layout, umoci unpacks that: the same files.
    let layout = out.join("layout");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci-archive:{img_s}"),
            &format!("oci:{}:t", layout.display()),
        ],
    );
    let bundle = out.join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:t", layout.display()),
            &bundle.display().to_string(),
        ],
    );
    let unpacked = bundle.join("rootfs");
    for f in [
        "etc/prepared",
        "etc/os-release",
        "bin/busybox",
        "etc/apk/world",
    ] {
        assert_eq!(
            std::fs::read(unpacked.join(f)).unwrap(),
            std::fs::read(root.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_link(unpacked.join("etc/prepared-link")).unwrap(),
        Path::new("/etc/prepared")
    );
    assert_eq!(
        std::fs::read_link(unpacked.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(unpacked.join("etc/prepared-hard"))
            .unwrap()
            .ino(),
        std::fs::metadata(unpacked.join("etc/prepared"))
            .unwrap()
            .ino()
    );
    // Pushed with skopeo, pulled back with xroot.
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci-archive:{img_s}"),
            &format!("docker://{}/exported:1", reg.host),
        ],
    );
    ok(&env.run(&[
        "fetch",
        "s390x",
        "--from",
        &format!("docker://{}/exported:1", reg.host),
    ]));
    assert_eq!(
        std::fs::read_to_string(env.rootfs("s390x@exported-1").join("etc/prepared")).unwrap(),
        "by xroot\n"
    );
    // podman loads both formats (a store of its own in the temp dir).
    let docker = out.join("docker.tar");
    let docker_s = docker.display().to_string();
    ok(&env.run(&["export", "s390x", &docker_s, "--format", "docker-archive"]));
    let podman_root = out.join("podman");
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root".to_string(),
            podman_root.join("root").display().to_string(),
            "--runroot".to_string(),
            podman_root.join("run").display().to_string(),
            "--storage-driver".to_string(),
            "vfs".to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        tool("podman", &all)
    };
    for file in [&img_s, &docker_s] {
        let loaded = podman(&["load", "-i", file]);
        assert!(loaded.contains("localhost/xroot/s390x:latest"), "{loaded}");
        let arch = podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Architecture}}",
            "localhost/xroot/s390x:latest",
        ]);
        assert_eq!(arch.trim(), "s390x");
        podman(&["rmi", "localhost/xroot/s390x:latest"]);
    }
    // And xroot imports its own docker-archive.
    ok(&env.run(&[
        "fetch",
        "s390x@back",
        "--from",
        &format!("docker-archive:{docker_s}"),
    ]));
    assert!(env
        .rootfs("s390x@back")
        .join("etc/prepared-link")
        .is_symlink());
    // An arch without a container platform is refused with a clear error.
    let o = env.run(&[
        "export",
        "ppc",
        &out.join("x.tar").display().to_string(),
        "--format",
        "oci",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ppc has no container image platform"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn token_and_basic_authentication_with_the_auth_file() {
    use common::oci::{AuthGate, Gate};
    let Some((reg, _built, dir)) = registry_with_alpine() else {
        return;
    };
    let env = Env::new("http://127.0.0.1:1");
    let no_auth = dir.path().join("none.json");
    // Anonymous token, as Docker Hub's anonymous pulls: one token request.
    let gate = AuthGate::start(&reg, Gate::Token);
    let image = format!("docker://{}/xroot/alpine:3.20", gate.host);
    let o = env
        .cmd()
        .env("REGISTRY_AUTH_FILE", &no_auth)
        .args(["fetch", "s390x", "--from", &image])
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        gate.token_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    drop(gate);
    // A token only for credentials: refused without them, with a hint...
    let gate = AuthGate::start(&reg, Gate::TokenForCredentials("me:secret"));
    let image = format!("docker://{}/xroot/alpine:3.20", gate.host);
    let fetch = |auth: &Path, id: &str| {
        env.cmd()
            .env("REGISTRY_AUTH_FILE", auth)
            .args(["fetch", id, "--from", &image])
            .output()
            .unwrap()
    };
    let o = fetch(&no_auth, "aarch64@a");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("login"), "{}", stderr(&o));
    assert!(!env.home().join("rootfs/aarch64@a").exists());
    // ... and given with them, from the auth file podman/docker write.
    use base64::Engine;
    let auth_file = dir.path().join("auth.json");
    let enc = |c: &str| base64::engine::general_purpose::STANDARD.encode(c);
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            gate.host,
            enc("me:secret")
        ),
    )
    .unwrap();
    ok(&fetch(&auth_file, "aarch64@a"));
    drop(gate);
    // Basic authentication with the same file; wrong credentials refused.
    let gate = AuthGate::start(&reg, Gate::Basic("me:secret"));
    let image = format!("docker://{}/xroot/alpine:3.20", gate.host);
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            gate.host,
            enc("me:secret")
        ),
    )
    .unwrap();
    let o = env
        .cmd()
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["fetch", "riscv64", "--from", &image])
        .output()
        .unwrap();
    ok(&o);
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            gate.host,
            enc("me:wrong")
        ),
    )
    .unwrap();
    let o = env
        .cmd()
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["fetch", "riscv64@b", "--from", &image])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("podman login"), "{}", stderr(&o));
}

#[test]
fn an_ordinary_user_pulls_and_runs_an_image() {
    if !common::sandbox_ready("s390x") {
        return;
    }
    let Some((reg, built, _d)) = registry_with_alpine() else {
        return;
    };
    let user = common::unprivileged_user("xroot-oci", None);
    let dir = common::user_tempdir(&user);
    let bin = common::public_bin(dir.path());
    let home = dir.path().join("store");
    let image = format!("docker://{}/xroot/alpine:3.20", reg.host);
    let xroot = |args: &[&str]| {
        common::as_user(&user, &bin)
            .args(args)
            .env("XROOT_HOME", &home)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    ok(&xroot(&["fetch", "s390x", "--from", &image]));
    let root = home.join("rootfs/s390x@alpine-3.20/root");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(root.join("etc/xroot-layer"))
            .unwrap()
            .uid(),
        user.uid
    );
    assert!(!root.join("etc/motd").exists());
    let m = std::fs::read_to_string(home.join("rootfs/s390x@alpine-3.20/manifest.toml")).unwrap();
    assert!(m.contains(&built.images[1].0));
    let o = xroot(&[
        "run",
        "s390x@alpine-3.20",
        "--",
        "sh",
        "-c",
        "uname -m; cat /etc/apk/arch",
    ]);
    assert_eq!(ok(&o), "s390x\noverlaid\n");
}

#[test]
fn a_layer_cut_mid_transfer_is_fetched_again() {
    use common::oci::{AuthGate, Gate};
    let Some((reg, built, _d)) = registry_with_alpine() else {
        return;
    };
    let gate = AuthGate::start(&reg, Gate::TokenCutFirstBlob);
    let env = Env::new("http://127.0.0.1:1");
    let image = format!("docker://{}/xroot/alpine:3.20", gate.host);
    let o = env
        .cmd()
        .env("XROOT_TIMEOUT", "5")
        .args(["fetch", "s390x", "--from", &image])
        .output()
        .unwrap();
    ok(&o);
    let e = stderr(&o);
    assert!(e.contains("retrying (2/2)"), "{e}");
    let root = env.rootfs("s390x@alpine-3.20");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/apk/arch")).unwrap(),
        "overlaid\n"
    );
    // Cut once, fetched twice; nothing else downloaded twice.
    assert_eq!(reg.blob_gets(&built.images[1].1), 2);
    assert_eq!(reg.blob_gets(&built.top_layer), 1);
}

#[test]
fn docker_manifest_lists_are_followed() {
    let Some(reg) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    // Docker's formats have no zstd: a gzip-only image, pushed as a Docker
    // manifest list of Docker v2 manifests.
    build_layout(&layout, "3.20", false);
    reg.push_as(&layout, "3.20", "docker/alpine", &["--format", "v2s2"]);
    let image = format!("docker://{}/docker/alpine:3.20", reg.host);
    let raw = tool(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &image],
    );
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.list.v2+json"),
        "{raw}"
    );
    let env = Env::new("http://127.0.0.1:1");
    ok(&env.run(&["fetch", "armv7", "--from", &image]));
    let root = env.rootfs("armv7@alpine-3.20");
    assert_eq!(machine(&root.join("bin/busybox")), 40);
    assert!(!root.join("etc/motd").exists());
}
