//! The native directory: each native program, the host libraries it loads
//! and the host's dynamic loader, copied once into
//! `$XROOT_HOME/accel/<key>/` and mounted read-only at [`super::GUEST_DIR`].
//! A copy, not binds of the host's files, so the guest sees one directory
//! and nothing else of the host, and a host upgrade mid-build cannot mix
//! versions. The key hashes the programs' identities (path, size, mtime,
//! inode), so an upgraded cross package gets a fresh directory.
//!
//! Layout: `bin/<n>-<name>`, `lib/<sonames and the loader>`, and `map`,
//! which the trampoline reads: one line per covered guest path, four
//! tab-separated fields: guest path, program (relative), arguments to put
//! first, C++ include directories (lists separated by 0x1f).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _};
use sha2::Digest;

use super::Tool;

/// Makes (or finds) the native directory for `tools` under `base`.
pub fn prepare(base: &Path, tools: &[Tool]) -> Result<PathBuf> {
    let mut h = sha2::Sha256::new();
    // The map's format, for a future change of it.
    h.update(b"map v1\n");
    for t in tools {
        let m = fs::metadata(&t.host).with_context(|| format!("reading {}", t.host.display()))?;
        h.update(format!(
            "{}\0{}\0{}\0{}\0{}\0{}\0{}\n",
            t.guest.display(),
            t.host.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino(),
            t.args.join("\0"),
        ));
        h.update(t.cxx_dirs.join("\0"));
    }
    let key = hex::encode(&h.finalize()[..12]);
    let dir = base.join(&key);
    if dir.join("map").is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let staging = base.join(format!(".tmp-{key}-{}", std::process::id()));
    let _ = crate::store::remove_tree(&staging);
    let result = fill(&staging, tools);
    if let Err(e) = result {
        let _ = crate::store::remove_tree(&staging);
        return Err(e);
    }
    match fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        // Another run made it first: use theirs.
        Err(_) if dir.join("map").is_file() => {
            let _ = crate::store::remove_tree(&staging);
            Ok(dir)
        }
        Err(e) => {
            let _ = crate::store::remove_tree(&staging);
            Err(e).with_context(|| format!("renaming {} to {}", staging.display(), dir.display()))
        }
    }
}

fn fill(dir: &Path, tools: &[Tool]) -> Result<()> {
    let (bin, lib) = (dir.join("bin"), dir.join("lib"));
    for d in [&bin, &lib] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut map = String::new();
    let mut libs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut loader: Option<PathBuf> = None;
    for (i, t) in tools.iter().enumerate() {
        let name = t
            .host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = format!("bin/{i}-{name}");
        copy(&t.host, &dir.join(&rel))?;
        let elf = Elf::read(&t.host)?;
        match (&loader, &elf.interp) {
            (_, None) => {}
            (None, Some(i)) => loader = Some(PathBuf::from(i)),
            (Some(l), Some(i)) if l == Path::new(i) => {}
            (Some(l), Some(i)) => bail!(
                "{} wants the loader {i}, another program {}",
                t.host.display(),
                l.display()
            ),
        }
        needed(&elf, &t.host, &mut libs)?;
        let line = [
            t.guest.display().to_string(),
            rel,
            t.args.join("\x1f"),
            t.cxx_dirs.join("\x1f"),
        ];
        if line.iter().any(|f| f.contains(['\t', '\n']))
            || t.args.iter().chain(&t.cxx_dirs).any(|a| a.contains('\x1f'))
        {
            bail!("{line:?}: a tab, newline or \\x1f in a path or argument");
        }
        map.push_str(&line.join("\t"));
        map.push('\n');
    }
    let loader = loader.context("the native programs are not dynamically linked")?;
    copy(&loader, &lib.join(LOADER))?;
    for (soname, path) in &libs {
        copy(path, &lib.join(soname))?;
    }
    fs::write(dir.join("map"), map).with_context(|| format!("writing {}/map", dir.display()))?;
    Ok(())
}

/// The loader's name in `lib/`, whatever the host calls it.
pub const LOADER: &str = "ld.so";

/// Copies a host file (following symlinks: the library itself), keeping
/// the execute bit.
fn copy(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))
}

/// What the loader needs to know about one ELF file.
struct Elf {
    interp: Option<String>,
    needed: Vec<String>,
    runpath: Vec<String>,
    machine: u16,
}

impl Elf {
    fn read(path: &Path) -> Result<Elf> {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&data)
            .with_context(|| format!("{}: not a 64-bit ELF file xroot can read", path.display()))
    }

    fn parse(data: &[u8]) -> Result<Elf> {
        use object::elf::FileHeader64;
        use object::Endianness;
        let hdr = FileHeader64::<Endianness>::parse(data)?;
        let e = hdr.endian()?;
        let mut interp = None;
        for ph in hdr.program_headers(e, data)? {
            if let Some(i) = ph.interpreter(e, data)? {
                interp = Some(String::from_utf8_lossy(i).into_owned());
            }
        }
        let sections = hdr.sections(e, data)?;
        let mut needed = Vec::new();
        let mut runpath = Vec::new();
        if let Some((dynamic, strings)) = sections.dynamic(e, data)? {
            let strtab = sections.strings(e, data, strings)?;
            for d in dynamic {
                let s = || -> Result<String> {
                    Ok(String::from_utf8_lossy(d.string(e, strtab)?).into_owned())
                };
                match d.tag32(e) {
                    Some(object::elf::DT_NEEDED) => needed.push(s()?),
                    Some(object::elf::DT_RUNPATH) | Some(object::elf::DT_RPATH) => {
                        runpath.extend(s()?.split(':').map(str::to_string))
                    }
                    _ => {}
                }
            }
        }
        Ok(Elf {
            interp,
            needed,
            runpath,
            machine: hdr.e_machine(e),
        })
    }
}

/// The host's library directories, in the loader's order after RUNPATH:
/// /etc/ld.so.conf's (and its includes'), then the defaults.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut confs = vec![PathBuf::from("/etc/ld.so.conf")];
    while let Some(c) = confs.pop() {
        let Ok(text) = fs::read_to_string(&c) else {
            continue;
        };
        for l in text.lines().map(str::trim) {
            if let Some(pat) = l.strip_prefix("include ") {
                // Only the usual "DIR/*.conf" form.
                if let Some(d) = pat.trim().strip_suffix("/*.conf") {
                    let mut more: Vec<PathBuf> = fs::read_dir(d)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                        .collect();
                    more.sort();
                    more.reverse();
                    confs.extend(more);
                }
            } else if l.starts_with('/') {
                dirs.push(PathBuf::from(l));
            }
        }
    }
    dirs.extend(["/lib64", "/usr/lib64", "/lib", "/usr/lib"].map(PathBuf::from));
    dirs
}

/// Adds the libraries `elf` needs, and theirs, to `libs` (soname → file).
fn needed(elf: &Elf, path: &Path, libs: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    let dirs = search_dirs();
    let origin = path.parent().unwrap_or(Path::new("/"));
    let mut todo: Vec<(String, Vec<String>)> = elf
        .needed
        .iter()
        .map(|n| (n.clone(), elf.runpath.clone()))
        .collect();
    while let Some((soname, runpath)) = todo.pop() {
        if libs.contains_key(&soname) {
            continue;
        }
        let candidates = runpath
            .iter()
            .map(|r| PathBuf::from(r.replace("$ORIGIN", &origin.to_string_lossy())))
            .chain(dirs.iter().cloned());
        let mut found = None;
        for d in candidates {
            let p = d.join(&soname);
            if let Ok(lib) = Elf::read(&p) {
                if lib.machine == elf.machine {
                    found = Some((p, lib));
                    break;
                }
            }
        }
        let Some((p, lib)) = found else {
            bail!(
                "{} needs {soname}, which is not in the host's library directories",
                path.display()
            );
        };
        for n in &lib.needed {
            todo.push((n.clone(), lib.runpath.clone()));
        }
        libs.insert(soname, p);
    }
    Ok(())
}
