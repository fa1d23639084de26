//! Install scripts and triggers, run in the sandbox under the guest's
//! emulator after every package is unpacked (through [`super::Env::guest`]).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{db, tree::read_in_tree, Env};
use crate::error::hinted;
use crate::extract;

/// Runs the packages' scripts in the sandbox after everything is unpacked:
/// every `.pre-install`, then every `.post-install` (in install order,
/// with the version as argument, from `/`, as apk does), then each
/// `.trigger` with the trigger directories that exist. A failing script
/// fails the install, named by package.
pub fn run_scripts(env: &Env, root: &Path, records: &[db::Installed]) -> Result<()> {
    let mut steps: Vec<(String, &[u8], Vec<String>)> = Vec::new();
    for phase in [".pre-install", ".post-install"] {
        for r in records {
            if let Some((_, body)) = r.scripts.iter().find(|(n, _)| n == phase) {
                steps.push((
                    format!("{}{phase}", r.pkg.name),
                    body,
                    vec![r.pkg.version.clone()],
                ));
            }
        }
    }
    for r in records {
        if let Some((_, body)) = r.scripts.iter().find(|(n, _)| n == ".trigger") {
            let dirs: Vec<String> = r
                .triggers
                .iter()
                .filter(|t| !t.contains('*'))
                .filter(|t| {
                    std::fs::symlink_metadata(root.join(t.trim_start_matches('/')))
                        .is_ok_and(|m| m.is_dir())
                })
                .cloned()
                .collect();
            if !dirs.is_empty() {
                steps.push((format!("{}.trigger", r.pkg.name), body, dirs));
            }
        }
    }
    if steps.is_empty() {
        return Ok(());
    }
    let Some(guest) = env.guest else {
        env.ui.warn(format!(
            "{} install scripts were not run (no sandbox here)",
            steps.len()
        ));
        return Ok(());
    };
    const DIR: &str = "tmp/.xroot-apk";
    let mut driver = String::from(
        "#!/bin/sh\n# Written by xroot: runs the packages' install scripts, then removes itself.\ncd / || exit 1\nexec >&2\n",
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut h = db::header(tar::EntryType::Regular, 0o755, data.len() as u64);
        b.append_data(&mut h, format!("{DIR}/{name}"), data)
            .context("packing install scripts")
    };
    for (i, (name, body, args)) in steps.iter().enumerate() {
        let file = format!("{i:03}-{name}");
        add(&file, body)?;
        let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        driver.push_str(&format!(
            "/{DIR}/{file} {} || {{ s=$?; echo {} $s > /{DIR}/failed; exit 1; }}\n",
            args.join(" "),
            shell_quote(name)
        ));
    }
    add("run", driver.as_bytes())?;
    let mut tmp = db::header(tar::EntryType::Directory, 0o1777, 0);
    let mut tarball = tar::Builder::new(Vec::new());
    tarball
        .append_data(&mut tmp, "tmp", std::io::empty())
        .context("packing install scripts")?;
    let mut tarball = tarball.into_inner().context("packing install scripts")?;
    // Drop the first archive's end marker, then append the scripts.
    tarball.truncate(512);
    tarball.extend(b.into_inner().context("packing install scripts")?);
    let opts = extract::Options {
        limits: env.limits,
        chown: false,
        ..Default::default()
    };
    extract::unpack(tarball.as_slice(), root, &opts, &mut |_| {})
        .map_err(|e| anyhow::anyhow!("placing install scripts in {}: {e}", root.display()))?;
    env.ui.info(format!(
        "running {} install scripts and triggers",
        steps.len()
    ));
    let status = guest(root, &["/bin/sh".into(), format!("/{DIR}/run")]);
    let failed = read_in_tree(root, &format!("{DIR}/failed")).ok().flatten();
    remove_scripts(root);
    let status = status.context("running install scripts")?;
    if status != 0 {
        let what = failed
            .map(|f| {
                let mut w = f.split_whitespace();
                let script = w.next().unwrap_or("?").to_string();
                let code = w.next().unwrap_or("?").to_string();
                format!("{script} exited with status {code}")
            })
            .unwrap_or_else(|| format!("the install scripts failed with status {status}"));
        bail!(hinted(
            format!("install script {what}; nothing was installed"),
            "see its messages above; the package or the emulation of this arch is at fault",
        ));
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Removes `tmp/.xroot-apk` through directory fds, never following a
/// symlink the scripts may have left (best effort).
fn remove_scripts(root: &Path) {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let dir = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(r) = nix::dir::Dir::open(root, dir, Mode::empty()) else {
        return;
    };
    let rfd = std::os::fd::AsRawFd::as_raw_fd(&r);
    let Ok(t) = openat(Some(rfd), "tmp", dir, Mode::empty()) else {
        return;
    };
    // SAFETY: openat just returned this fd; the guard owns and closes it.
    let _tguard = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(t) };
    let Ok(mut d) = nix::dir::Dir::openat(Some(t), ".xroot-apk", dir, Mode::empty()) else {
        return;
    };
    let dfd = std::os::fd::AsRawFd::as_raw_fd(&d);
    let names: Vec<std::ffi::CString> = d
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for n in names {
        let _ = unlinkat(Some(dfd), n.as_c_str(), UnlinkatFlags::NoRemoveDir);
    }
    drop(d);
    let _ = unlinkat(Some(t), ".xroot-apk", UnlinkatFlags::RemoveDir);
}
