//! Finding a qemu-user emulator for an arch and checking it can work
//! inside a chroot (statically linked).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::hinted;

pub mod copy;
pub mod prelink;

/// Where a search for qemu went.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(PathBuf),
    /// Found, but dynamically linked: it cannot start once the guest's
    /// root (without the host's libraries) is in place.
    Dynamic(PathBuf),
    Missing,
}

/// Searched after `$PATH`, in case it is minimal.
const USUAL_DIRS: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

/// The candidates for target `t`, in order: `qemu-t-static`, `qemu-t`, on
/// `$PATH`, then in the usual directories in case `$PATH` is minimal.
pub fn candidates(target: &str, path_var: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_var
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    for d in USUAL_DIRS {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    let mut out = Vec::new();
    for name in [format!("qemu-{target}-static"), format!("qemu-{target}")] {
        for d in &dirs {
            out.push(d.join(&name));
        }
    }
    out
}

/// Looks for qemu for `target`. `override_path` is `--qemu`.
pub fn lookup(target: &str, override_path: Option<&Path>) -> Lookup {
    let list = match override_path {
        Some(p) => vec![p.to_path_buf()],
        None => candidates(target, std::env::var("PATH").ok().as_deref()),
    };
    let mut dynamic = None;
    for p in list {
        if !is_executable(&p) {
            continue;
        }
        match crate::elf::has_interp(&p) {
            Ok(false) => return Lookup::Found(p),
            Ok(true) => {
                dynamic.get_or_insert(p);
            }
            Err(_) => continue,
        }
    }
    dynamic.map(Lookup::Dynamic).unwrap_or(Lookup::Missing)
}

/// Finds a static qemu for `target` or explains how to get one.
pub fn find(target: &str, override_path: Option<&Path>) -> Result<PathBuf> {
    match lookup(target, override_path) {
        Lookup::Found(p) => Ok(p),
        Lookup::Dynamic(p) => Err(hinted(
            format!("{} is dynamically linked; it cannot run inside the guest's root, where the host's libraries are absent", p.display()),
            install_hint(target),
        )),
        Lookup::Missing => Err(hinted(
            match override_path {
                Some(p) => format!("--qemu {} is not an executable file", p.display()),
                None => format!("no qemu-{target}-static (or qemu-{target}) found on PATH"),
            },
            install_hint(target),
        )),
    }
}

/// The package that provides a static qemu, per distribution.
pub fn install_hint(target: &str) -> String {
    format!(
        "install a static qemu-user: `apt-get install qemu-user-static` (Debian/Ubuntu), `dnf install qemu-user-static` (Fedora), `apk add qemu-{target}` (Alpine), `pacman -S qemu-user-static` (Arch); or pass --qemu PATH"
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads qemu's version by running it. Costs a process start, so callers
/// cache the answer (see `store::Store::qemu_version`).
pub fn probe_version(path: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// "qemu-aarch64 version 7.2.22 (Debian ...)" → (7, 2).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split(" version ").nth(1)?;
    let mut it = rest.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parses() {
        assert_eq!(
            parse_version(
                "qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some((7, 2))
        );
        assert_eq!(parse_version("qemu-riscv64 version 10.0.2"), Some((10, 0)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn candidate_order() {
        let c = candidates("arm", Some("/opt/q:/usr/bin"));
        assert_eq!(c[0], PathBuf::from("/opt/q/qemu-arm-static"));
        assert_eq!(c[1], PathBuf::from("/usr/bin/qemu-arm-static"));
        assert!(
            c.iter().position(|p| p.ends_with("qemu-arm")).unwrap()
                > c.iter()
                    .rposition(|p| p.ends_with("qemu-arm-static"))
                    .unwrap()
        );
    }

    #[test]
    fn finder_caches_lookups_and_versions() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("qemu.tsv");
        let mut f = Finder::load(Some(file.clone()));
        let first = f.lookup("no-such-target");
        assert!(matches!(first, Lookup::Missing));
        let real = f.lookup("aarch64");
        f.save();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("v2 PATH="), "{text}");
        assert!(text.contains("no-such-target\t\t0"), "{text}");
        // A fresh load answers from the file, identically.
        let mut g = Finder::load(Some(file.clone()));
        assert!(!g.dirty);
        assert_eq!(format!("{:?}", g.lookup("aarch64")), format!("{real:?}"));
        let found = matches!(real, Lookup::Found(_));
        crate::test_support::require(
            found,
            "qemu-aarch64-static, for the version half of this test",
        );
        if let Lookup::Found(p) = real {
            let v = g.version(&p);
            assert!(v.is_some_and(|v| v >= (2, 0)), "{v:?}");
            g.save();
            let mut h = Finder::load(Some(file.clone()));
            assert_eq!(h.entries["aarch64"].version, v, "version remembered");
            assert_eq!(h.version(&p), v);
        }
        // A different PATH invalidates everything.
        std::fs::write(&file, "v1 PATH=/elsewhere\naarch64\t/bogus\t1\t1\t1\t9.9\n").unwrap();
        let mut k = Finder::load(Some(file));
        assert!(k.entries.is_empty() && k.dirty);
        assert!(!matches!(k.lookup("aarch64"), Lookup::Found(ref p) if p == Path::new("/bogus")));
    }

    #[test]
    fn one_cache_file_per_path_and_only_the_newest_kept() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..MAX_CACHE_FILES + 4 {
            std::fs::write(t.path().join(format!("qemu-{i:016x}.tsv")), "v1 PATH=/x\n").unwrap();
        }
        std::fs::write(t.path().join("alpine.tar.gz"), "not a cache").unwrap();
        let mut f = Finder::load_in(t.path());
        let mine = f.file.clone().unwrap();
        f.lookup("no-such-target");
        f.save();
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names.iter().filter(|n| is_cache_file(n)).count(),
            MAX_CACHE_FILES,
            "{names:?}"
        );
        assert!(mine.exists(), "the cache just written is kept");
        assert!(
            names.contains(&"alpine.tar.gz".to_string()),
            "downloads are not touched"
        );
        // Another PATH gets another file.
        assert_eq!(
            mine.file_name().unwrap().to_str().unwrap(),
            cache_name(&std::env::var("PATH").unwrap_or_default())
        );
        assert_ne!(cache_name("/usr/bin:/bin"), cache_name("/bin:/usr/bin"));
    }

    #[test]
    fn dynamic_binary_is_refused() {
        // /bin/ls stands in for a dynamically linked qemu.
        let err = find("aarch64", Some(Path::new("/bin/ls"))).unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        assert!(crate::error::hint_of(&err)
            .unwrap()
            .contains("qemu-user-static"));
        let err = find("aarch64", Some(Path::new("/nonexistent/qemu"))).unwrap_err();
        assert!(err.to_string().contains("not an executable"), "{err}");
    }
}

/// Remembers, across runs, where each target's qemu is, whether it is
/// static and its version, so that `run` does not search `$PATH`, read ELF
/// headers and start qemu for every registered target on each launch.
///
/// An entry holds only while the qemu file keeps its size and mtime, and
/// the whole cache only while `$PATH` and the mtimes of its directories are
/// unchanged (installing or removing a qemu changes its directory's mtime).
pub struct Finder {
    file: Option<PathBuf>,
    signature: String,
    entries: std::collections::BTreeMap<String, Entry>,
    dirty: bool,
}

#[derive(Clone)]
struct Entry {
    /// Empty when missing.
    path: PathBuf,
    is_static: bool,
    len: u64,
    mtime: i64,
    version: Option<(u32, u32)>,
}

impl Finder {
    /// Loads the cache for the current `$PATH` from `dir`: one small file
    /// per `$PATH` (named by its hash), so switching between shells, `sudo`
    /// and CI environments does not keep invalidating a single cache. At
    /// most [`MAX_CACHE_FILES`] are kept; the least recently written go.
    pub fn load_in(dir: &Path) -> Finder {
        let path_var = std::env::var("PATH").unwrap_or_default();
        Finder::load(Some(dir.join(cache_name(&path_var))))
    }

    /// Loads the cache at `file` (None: no cache, always search).
    pub fn load(file: Option<PathBuf>) -> Finder {
        let signature = path_signature(std::env::var("PATH").ok().as_deref());
        let mut f = Finder {
            file,
            signature,
            entries: Default::default(),
            dirty: false,
        };
        let Some(text) = f
            .file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        else {
            return f;
        };
        let mut lines = text.lines();
        if lines.next() != Some(f.signature.as_str()) {
            f.dirty = true; // stale: rebuilt as targets are looked up
            return f;
        }
        for l in lines {
            let c: Vec<&str> = l.split('\t').collect();
            let [target, path, st, len, mtime, ver] = c[..] else {
                continue;
            };
            let version = ver
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            let (Ok(len), Ok(mtime)) = (len.parse(), mtime.parse()) else {
                continue;
            };
            f.entries.insert(
                target.to_string(),
                Entry {
                    path: PathBuf::from(path),
                    is_static: st == "1",
                    len,
                    mtime,
                    version,
                },
            );
        }
        f
    }

    /// Like [`lookup`], from the cache when it still holds.
    pub fn lookup(&mut self, target: &str) -> Lookup {
        if let Some(e) = self.entries.get(target).filter(|e| fresh(e)) {
            return match (e.path.as_os_str().is_empty(), e.is_static) {
                (true, _) => Lookup::Missing,
                (false, true) => Lookup::Found(e.path.clone()),
                (false, false) => Lookup::Dynamic(e.path.clone()),
            };
        }
        let found = lookup(target, None);
        let (path, is_static) = match &found {
            Lookup::Found(p) => (p.clone(), true),
            Lookup::Dynamic(p) => (p.clone(), false),
            Lookup::Missing => (PathBuf::new(), false),
        };
        let (len, mtime) = stat(&path).unwrap_or((0, 0));
        self.entries.insert(
            target.to_string(),
            Entry {
                path,
                is_static,
                len,
                mtime,
                version: None,
            },
        );
        self.dirty = true;
        found
    }

    /// qemu's (major, minor) version, probed once per binary.
    pub fn version(&mut self, qemu: &Path) -> Option<(u32, u32)> {
        if let Some(v) = self
            .entries
            .values()
            .find(|e| e.path == qemu && fresh(e))
            .and_then(|e| e.version)
        {
            return Some(v);
        }
        let v = probe_version(qemu)?;
        for e in self.entries.values_mut().filter(|e| e.path == qemu) {
            e.version = Some(v);
            self.dirty = true;
        }
        Some(v)
    }

    /// Whether lookups changed the cache (so [`save`](Self::save) would write).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the cache back if it changed (best effort: a lost cache only
    /// costs a search next time).
    pub fn save(&self) {
        let (Some(file), true) = (&self.file, self.dirty) else {
            return;
        };
        let mut text = format!("{}\n", self.signature);
        for (t, e) in &self.entries {
            let v = e
                .version
                .map(|(a, b)| format!("{a}.{b}"))
                .unwrap_or_default();
            text.push_str(&format!(
                "{t}\t{}\t{}\t{}\t{}\t{v}\n",
                e.path.display(),
                u8::from(e.is_static),
                e.len,
                e.mtime
            ));
        }
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        if let Some(dir) = file.parent() {
            prune(dir);
        }
    }
}

/// The cache's format, in its file name and first line. A new format gets
/// new files: xroot versions used side by side (an upgrade, an A/B
/// benchmark) would otherwise each find the other's cache stale and probe
/// qemu again (~4 ms) at every launch.
const CACHE_FORMAT: &str = "v2";

/// The cache file's name for a `$PATH` value.
fn cache_name(path_var: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(path_var.as_bytes());
    format!("qemu-{CACHE_FORMAT}-{}.tsv", hex::encode(&h[..8]))
}

/// How many per-`$PATH` qemu caches [`Finder::load_in`] keeps.
pub const MAX_CACHE_FILES: usize = 8;

/// Whether `name` is one of the qemu lookup caches (not a download).
pub fn is_cache_file(name: &str) -> bool {
    name.starts_with("qemu-") && name.ends_with(".tsv")
}

/// Removes all but the [`MAX_CACHE_FILES`] newest qemu caches in `dir`.
fn prune(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut caches: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_cache_file))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if caches.len() <= MAX_CACHE_FILES {
        return;
    }
    caches.sort();
    for (_, p) in &caches[..caches.len() - MAX_CACHE_FILES] {
        let _ = std::fs::remove_file(p);
    }
}

fn stat(p: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000))
}

fn fresh(e: &Entry) -> bool {
    e.path.as_os_str().is_empty() || stat(&e.path) == Some((e.len, e.mtime))
}

/// `$PATH` plus the mtime of each directory searched (those of
/// [`candidates`]: `$PATH`'s, then the usual ones), each once: `$PATH` often
/// repeats directories (shell rc files prepending again).
fn path_signature(path_var: Option<&str>) -> String {
    let mut dirs: Vec<&str> = Vec::new();
    for d in path_var.unwrap_or_default().split(':').chain(USUAL_DIRS) {
        if !d.is_empty() && !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let mut s = format!("{CACHE_FORMAT} PATH={}", path_var.unwrap_or_default());
    for d in dirs {
        match stat(Path::new(d)) {
            Some((_, m)) => s.push_str(&format!(" {m}")),
            None => s.push_str(" -"),
        }
    }
    s
}
