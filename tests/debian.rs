//! Issue #15: Debian bootstraps from real Debian data. A local mirror is
//! built by apt (tests/common/debmirror.sh: the real signed InRelease, the
//! Packages index it verifies, the .debs from Debian's pool) and served
//! over local HTTP; xroot bootstraps from it, verifying against the
//! Debian keyring it embeds, and runs the second stage under qemu.

mod common;
#[path = "common/debmirror.rs"]
mod debmirror;

use std::path::{Path, PathBuf};

use common::*;

/// What a failed fetch must leave behind: nothing.
fn nothing_installed(env: &Env, arch: &str) {
    assert!(!env.rootfs(arch).exists(), "a rootfs was installed");
    let tmp = env.home().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left behind: {left:?}");
    let list = stdout(&env.run(&["list", "--json"]));
    assert!(!list.contains("\"installed_at\""), "{list}");
}

fn fetch(env: &Env, arch: &str, mirror: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["fetch", arch, "--source", "debian", "--mirror", mirror];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// Bootstraps Debian 12 for `arch` with build-essential from the real
/// archive data and checks it is a normal Debian: dpkg knows every
/// package, apt works against the mirror, gcc builds a program that runs.
fn bootstrap_and_build(xarch: &str, debarch: &str, qemu: &str) {
    if !sandbox_ready(qemu) {
        return;
    }
    let Some(dir) = debmirror::mirror(debarch, &["build-essential"]) else {
        return;
    };
    let server = MirrorServer::start(dir);
    let env = Env::new(&server.url);
    let o = fetch(&env, xarch, &server.url, &["--variant", "buildd"]);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("verifying"), "{err}");
    assert!(err.contains("installed"), "{err}");
    let m =
        std::fs::read_to_string(env.home().join(format!("rootfs/{xarch}/manifest.toml"))).unwrap();
    assert!(m.contains("bookworm"), "{m}");
    assert!(m.contains("/dists/bookworm/InRelease"), "{m}");

    let root = env.rootfs(xarch);
    // Merged /usr, dash as /bin/sh, no stray bootstrap files.
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/sh")).unwrap(),
        Path::new("dash")
    );
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    assert!(!root.join("var/cache/xroot-debs").exists());
    assert!(!root.join("var/lib/xroot").exists());

    let script = "set -e
        test \"$(dpkg --print-architecture)\" = \"$1\"
        dpkg --audit
        n=$(dpkg-query -W -f '${db:Status-Abbrev}\\n' | grep -c '^ii')
        echo \"installed=$n\"
        dpkg -l build-essential gcc libc6 dash apt | grep -c '^ii'
        apt-get -q -o Acquire::Languages=none update >/dev/null
        apt-cache policy apt | grep -q 127.0.0.1
        apt-get install -y -q -s hello | grep -q '^Inst hello'
        cd /tmp && printf '#include <stdio.h>\\nint main(void){puts(\"hello from debian\");return 0;}\\n' > hello.c
        gcc hello.c -o hello && ./hello
        stat -c '%U:%G' /etc/shadow";
    let o = env.run(&["run", xarch, "--", "sh", "-c", script, "sh", debarch]);
    let out = ok(&o);
    let n: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("installed="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(n > 100, "dpkg lists only {n} packages:\n{out}");
    assert!(out.contains("\n5\n"), "{out}");
    assert!(out.contains("hello from debian"), "{out}");
    assert!(out.contains("root:shadow"), "{out}");
}

#[test]
fn s390x_bookworm_buildd_verified_configured_and_compiles() {
    bootstrap_and_build("s390x", "s390x", "s390x");
}

#[test]
fn arm64_bookworm_buildd_verified_configured_and_compiles() {
    bootstrap_and_build("aarch64", "arm64", "aarch64");
}

/// A tampering test: the s390x mirror as an overlay with one file changed.
fn refused(change: impl FnOnce(&Path), extra: &[&str], expect: &str) {
    if !sandbox_ready("s390x") {
        return;
    }
    let Some(dir) = debmirror::mirror("s390x", &["build-essential"]) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("mirror");
    debmirror::overlay(&dir, &m);
    change(&m);
    let server = MirrorServer::start(m);
    let env = Env::new(&server.url);
    let o = fetch(&env, "s390x", &server.url, extra);
    assert!(!o.status.success(), "a tampered archive was installed");
    let err = stderr(&o);
    assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
    assert!(err.contains("hint:"), "{err}");
    nothing_installed(&env, "s390x");
}

#[test]
fn tampered_inrelease_is_refused() {
    refused(
        |m| {
            debmirror::tamper(&m.join("dists/bookworm/InRelease"), |b| {
                let t = String::from_utf8(b.clone()).unwrap();
                // One hash digit of the s390x index, inside the signed text.
                let i = t.find("main/binary-s390x/Packages.xz").unwrap() - 20;
                b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            })
        },
        &[],
        "bad signature",
    );
}

#[test]
fn tampered_packages_index_is_refused() {
    refused(
        |m| {
            debmirror::tamper(&m.join("dists/bookworm/main/binary-s390x/Packages"), |b| {
                let t = String::from_utf8(b.clone()).unwrap();
                let i = t.find("Package: dash\n").unwrap();
                b[i + 9] = b'D';
            })
        },
        &[],
        "does not match the signed Release",
    );
}

#[test]
fn tampered_deb_is_refused() {
    refused(
        |m| {
            debmirror::tamper(&debmirror::pool_file(m, "s390x", "base-files"), |b| {
                let n = b.len();
                b[n - 100] ^= 0xff;
            })
        },
        &[],
        "does not match the verified index",
    );
}

#[test]
fn unknown_key_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("other.gpg");
    let (public, _) = test_key();
    std::fs::write(&key, public).unwrap();
    let k = key.display().to_string();
    refused(|_| {}, &["--keyring", &k], "not in the");
}

/// A fresh Ed25519 signing key made with rPGP: (public keyring bytes, secret key).
fn test_key() -> (Vec<u8>, pgp::composed::SignedSecretKey) {
    use pgp::composed::{EncryptionCaps, KeyType, SecretKeyParamsBuilder, SignedPublicKey};
    use pgp::ser::Serialize;
    let mut p = SecretKeyParamsBuilder::default();
    p.key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id("xroot test archive <test@xroot.invalid>".into());
    let secret = p.build().unwrap().generate(rand::thread_rng()).unwrap();
    let public = SignedPublicKey::from(secret.clone());
    let mut bytes = Vec::new();
    public.to_writer(&mut bytes).unwrap();
    (bytes, secret)
}

/// debian-ports: the ports layout (`/debian-ports`, suite `unstable`,
/// `Release` + detached `Release.gpg`, no InRelease), signed with a key
/// made here, since the ports archive is not reachable from CI. Its
/// packages are real Debian s390x ones; the essential variant keeps the
/// second stage short.
#[test]
fn debian_ports_layout_signed_with_a_test_key() {
    use pgp::composed::DetachedSignature;
    use pgp::crypto::hash::HashAlgorithm;
    use pgp::types::Password;
    if !sandbox_ready("s390x") {
        return;
    }
    let Some(dir) = debmirror::mirror("s390x", &["build-essential"]) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let ports = t.path().join("www/debian-ports");
    std::fs::create_dir_all(ports.join("dists/unstable/main/binary-s390x")).unwrap();
    std::os::unix::fs::symlink(dir.join("pool"), ports.join("pool")).unwrap();
    let packages = std::fs::read(dir.join("dists/bookworm/main/binary-s390x/Packages")).unwrap();
    std::fs::write(
        ports.join("dists/unstable/main/binary-s390x/Packages"),
        &packages,
    )
    .unwrap();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&packages)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let release = format!(
        "Origin: Debian Ports\nLabel: ftp.ports.debian.org\nSuite: unstable\nCodename: sid\n\
         Date: Mon, 30 Nov 2026 00:00:00 UTC\nValid-Until: Mon, 07 Dec 2099 00:00:00 UTC\n\
         Architectures: s390x\nComponents: main\nSHA256:\n {sha} {} main/binary-s390x/Packages\n",
        packages.len()
    );
    let dists = ports.join("dists/unstable");
    std::fs::write(dists.join("Release"), &release).unwrap();
    let (public, secret) = test_key();
    let sig = DetachedSignature::sign_binary_data(
        rand::thread_rng(),
        &secret.primary_key,
        &Password::empty(),
        HashAlgorithm::Sha256,
        release.as_bytes(),
    )
    .unwrap();
    let armored = sig.to_armored_bytes(Default::default()).unwrap();
    std::fs::write(dists.join("Release.gpg"), armored).unwrap();
    let key = t.path().join("ports-test.gpg");
    std::fs::write(&key, &public).unwrap();

    let server = MirrorServer::start(t.path().join("www"));
    let env = Env::new(&server.url);
    let mirror = format!("{}/debian-ports", server.url);
    let k = key.display().to_string();
    // Without the test key: the built-in ports keyring does not know it.
    let o = env.run(&[
        "fetch",
        "s390x",
        "--source",
        "debian-ports",
        "--mirror",
        &mirror,
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Debian ports archive keyring"),
        "{}",
        stderr(&o)
    );
    nothing_installed(&env, "s390x");
    // With it.
    let o = env.run(&[
        "fetch",
        "s390x",
        "--source",
        "debian-ports",
        "--mirror",
        &mirror,
        "--keyring",
        &k,
        "--variant",
        "essential",
    ]);
    ok(&o);
    let m = std::fs::read_to_string(env.home().join("rootfs/s390x/manifest.toml")).unwrap();
    assert!(
        m.contains("unstable") && m.contains("/debian-ports/dists/unstable/Release"),
        "{m}"
    );
    let out = ok(&env.run(&[
        "run",
        "s390x",
        "--",
        "sh",
        "-c",
        "dpkg --audit && dpkg-query -W dash && cat /etc/apt/sources.list",
    ]));
    assert!(out.contains("dash\t"), "{out}");
    assert!(out.contains("/debian-ports unstable main"), "{out}");
}

/// Rootless with subordinate ids: the second stage runs as guest root in
/// a user namespace mapping 1..65535 onto the user's range, so dpkg gives
/// files their real owners and setgid bits (`root:shadow 2755`), which the
/// host sees as the user's subordinate ids.
#[test]
fn rootless_with_subordinate_ids_gets_real_owners() {
    use std::os::unix::fs::MetadataExt;
    if !sandbox_ready("s390x") {
        return;
    }
    let Some(dir) = debmirror::mirror("s390x", &["build-essential"]) else {
        return;
    };
    let server = MirrorServer::start(dir);
    let user = unprivileged_user("xroot-debian", Some(400_000));
    let home = user_tempdir(&user);
    let bin_dir = tempfile::Builder::new()
        .prefix("xroot-bin-")
        .tempdir_in("/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bin = public_bin(bin_dir.path());
    let store = home.path().join("store");
    let xroot = |args: &[&str]| {
        as_user(&user, &bin)
            .args(args)
            .env("XROOT_HOME", &store)
            .current_dir(home.path())
            .output()
            .unwrap()
    };
    ok(&xroot(&[
        "fetch",
        "s390x",
        "--source",
        "debian",
        "--mirror",
        &server.url,
        "--variant",
        "essential",
    ]));
    let out = ok(&xroot(&[
        "run",
        "s390x",
        "--",
        "sh",
        "-c",
        "dpkg --audit && id -u && stat -c '%U:%G %a' /usr/sbin/unix_chkpwd",
    ]));
    assert!(out.contains("0\nroot:shadow 2755"), "{out}");
    // On the host: the user's subordinate group, not the user's own.
    let m = std::fs::metadata(store.join("rootfs/s390x/root/usr/sbin/unix_chkpwd")).unwrap();
    assert!(
        m.gid() >= 400_000 && m.gid() < 400_000 + 65_536,
        "gid {}",
        m.gid()
    );
    assert_eq!(m.uid(), user.uid);
}

/// Options that only make sense for a Debian source are refused without
/// one, and an unknown source or variant is named in the error.
#[test]
fn bad_debian_options_are_clear_errors() {
    let env = Env::new("http://127.0.0.1:9");
    for (args, expect) in [
        (
            vec!["fetch", "s390x", "--suite", "trixie"],
            "add --source debian",
        ),
        (
            vec!["fetch", "s390x", "--source", "gentoo"],
            "unknown source kind \"gentoo\"",
        ),
        (
            vec!["fetch", "s390x", "--source", "debian", "--variant", "huge"],
            "unknown --variant",
        ),
        (
            vec!["fetch", "mips", "--source", "debian"],
            "Debian has no architecture for mips",
        ),
        (
            vec!["fetch", "s390x", "--source", "debian", "--branch", "v3.20"],
            "--suite",
        ),
    ] {
        let o = env.run(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
    let _ = PathBuf::new();
}
