//! What makes the bootstrapped tree a normal apk system for the guest's
//! own `apk`: `/lib/apk/db/installed` (every package's index fields and
//! files), `scripts.tar`, `triggers`, `/etc/apk/world`, `repositories`,
//! `arch` and the trusted keys. Written as one tar through the safe
//! extractor, so nothing a package planted (a symlinked `/etc/apk`) can
//! redirect the writes.

use std::path::Path;

use anyhow::{Context, Result};

use super::index::Package;
use super::package::FileEntry;
use super::sign::Key;
use crate::extract;

/// One installed package, as the database records it.
pub struct Installed<'a> {
    pub pkg: &'a Package,
    pub files: Vec<FileEntry>,
    pub scripts: &'a [(String, Vec<u8>)],
    pub triggers: Vec<String>,
}

/// The `installed` text: the index fields, then `F:` directories (with
/// `M:` owner and mode when not root:root 0755) and `R:` files (with `a:`
/// when not root:root 0644, and `Z:` checksums), as apk writes it.
pub fn installed_text(pkgs: &[Installed]) -> String {
    let mut s = String::new();
    for i in pkgs {
        for (k, v) in &i.pkg.fields {
            s.push_str(&format!("{k}:{v}\n"));
        }
        let mut cur_dir: Option<String> = None;
        for f in &i.files {
            let p = f.path.to_string_lossy();
            let p = p.trim_end_matches('/');
            if f.dir {
                s.push_str(&format!("F:{p}\n"));
                if (f.uid, f.gid, f.mode) != (0, 0, 0o755) {
                    s.push_str(&format!("M:{}:{}:{:o}\n", f.uid, f.gid, f.mode));
                }
                cur_dir = Some(p.to_string());
                continue;
            }
            let (dir, name) = match p.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n),
                None => (String::new(), p),
            };
            if cur_dir.as_deref() != Some(dir.as_str()) && !dir.is_empty() {
                s.push_str(&format!("F:{dir}\n"));
                cur_dir = Some(dir);
            }
            s.push_str(&format!("R:{name}\n"));
            if (f.uid, f.gid, f.mode) != (0, 0, 0o644) {
                s.push_str(&format!("a:{}:{}:{:o}\n", f.uid, f.gid, f.mode));
            }
            if let Some(c) = &f.checksum {
                s.push_str(&format!("Z:{c}\n"));
            }
        }
        s.push('\n');
    }
    s
}

/// Everything [`write`] puts into the tree.
pub struct Db<'a> {
    /// The packages installed now (their scripts and triggers).
    pub pkgs: &'a [Installed<'a>],
    /// The whole `installed` file (what was there, then `pkgs`).
    pub installed_text: &'a str,
    pub world: &'a [String],
    pub repositories: &'a [String],
    /// (repository, its `APKINDEX.tar.gz` as fetched), for apk's cache.
    pub indexes: &'a [(String, Vec<u8>)],
    pub apk_arch: &'a str,
    pub keys: &'a [Key],
}

/// apk's name for a repository's cached index: `APKINDEX.<first 4 bytes
/// of the SHA-1 of the index URL, hex>.tar.gz`.
pub fn cache_index_name(repo: &str, apk_arch: &str) -> String {
    let h = super::sign::sha1(format!("{repo}/{apk_arch}/APKINDEX.tar.gz").as_bytes());
    format!("APKINDEX.{}.tar.gz", hex::encode(&h[..4]))
}

/// Writes the database and `/etc/apk` into `root`.
pub fn write(root: &Path, db: &Db, limits: extract::Limits) -> Result<extract::Report> {
    let Db {
        pkgs,
        installed_text,
        world,
        repositories,
        indexes,
        apk_arch,
        keys,
    } = *db;
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str| -> Result<()> {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, p, std::io::empty())
            .with_context(|| format!("packing {p}"))
    };
    for d in [
        "etc",
        "etc/apk",
        "etc/apk/keys",
        "lib",
        "lib/apk",
        "lib/apk/db",
        "var",
        "var/cache",
        "var/cache/apk",
    ] {
        dir(&mut b, d)?;
    }
    let file = |b: &mut tar::Builder<Vec<u8>>, p: &str, data: &[u8], mode: u32| -> Result<()> {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, p, data)
            .with_context(|| format!("packing {p}"))
    };
    file(
        &mut b,
        "lib/apk/db/installed",
        installed_text.as_bytes(),
        0o644,
    )?;
    // scripts.tar: `name-version.Q1checksum.script`, as apk keeps them.
    let mut scripts = tar::Builder::new(Vec::new());
    let mut triggers = String::new();
    for i in pkgs {
        for (name, body) in i.scripts {
            let n = format!(
                "{}-{}.{}{}",
                i.pkg.name, i.pkg.version, i.pkg.checksum, name
            );
            file(&mut scripts, &n, body, 0o755)?;
        }
        if !i.triggers.is_empty() {
            triggers.push_str(&format!("{} {}\n", i.pkg.checksum, i.triggers.join(" ")));
        }
    }
    let scripts = scripts.into_inner().context("packing scripts.tar")?;
    file(&mut b, "lib/apk/db/scripts.tar", &scripts, 0o644)?;
    file(&mut b, "lib/apk/db/triggers", triggers.as_bytes(), 0o644)?;
    file(&mut b, "lib/apk/db/lock", b"", 0o600)?;
    let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    file(&mut b, "etc/apk/world", lines(world).as_bytes(), 0o644)?;
    file(
        &mut b,
        "etc/apk/repositories",
        lines(repositories).as_bytes(),
        0o644,
    )?;
    file(
        &mut b,
        "etc/apk/arch",
        format!("{apk_arch}\n").as_bytes(),
        0o644,
    )?;
    // The indexes as apk caches them, so `apk add` works without `apk update`.
    for (repo, raw) in indexes {
        file(
            &mut b,
            &format!("var/cache/apk/{}", cache_index_name(repo, apk_arch)),
            raw,
            0o644,
        )?;
    }
    for k in keys {
        if k.name.contains('/') || k.name.starts_with('.') {
            continue;
        }
        file(
            &mut b,
            &format!("etc/apk/keys/{}", k.name),
            k.pem.as_bytes(),
            0o644,
        )?;
    }
    let data = b.into_inner().context("packing the apk database")?;
    let opts = extract::Options {
        limits,
        chown: nix::unistd::geteuid().is_root(),
        ..Default::default()
    };
    extract::unpack(data.as_slice(), root, &opts, &mut |_| {})
        .map_err(|e| anyhow::anyhow!("writing the apk database into {}: {e}", root.display()))
}

/// A tar header owned by root, dated now.
pub fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(now());
    h
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    /// The name apk 2.14 itself gave the cache of this index (seen in a
    /// guest after `apk update`).
    #[test]
    fn cache_index_names_are_apks() {
        assert_eq!(
            super::cache_index_name("http://127.0.0.1:50825/latest-stable/main", "aarch64"),
            "APKINDEX.d0340df9.tar.gz"
        );
    }
}
