//! Real apk repositories for the tests, made from real material: a
//! minirootfs tarball from `../shared/alpine-mirror` is split back into
//! its packages using its own `/lib/apk/db/installed` (each package's
//! files, dependencies and metadata) and `scripts.tar` / `triggers`; the
//! packages are packed in apk's v2 format (signature, control and data
//! gzip streams), indexed and signed with a test RSA key, as abuild does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A signing key: the private half signs, the public half is what
/// `xroot --key` is given (its file name is the key's name).
pub struct TestKey {
    pub name: String,
    pub private: RsaPrivateKey,
    pub public_file: PathBuf,
}

impl TestKey {
    /// A fresh 1024-bit key (small: made at every test run) written to `dir/NAME`.
    pub fn new(dir: &Path, name: &str) -> TestKey {
        let mut rng = rsa::rand_core::OsRng;
        let private = RsaPrivateKey::new(&mut rng, 1024).expect("rsa keygen");
        let pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        std::fs::create_dir_all(dir).unwrap();
        let public_file = dir.join(name);
        std::fs::write(&public_file, pem).unwrap();
        TestKey {
            name: name.to_string(),
            private,
            public_file,
        }
    }

    /// RSA PKCS#1 v1.5 over SHA-1 of `data`, as `.SIGN.RSA.` holds.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.private
            .sign(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(data))
            .expect("sign")
    }

    /// A signature stream (gzip of a cut tar) for `signed`.
    pub fn signature_stream(&self, signed: &[u8]) -> Vec<u8> {
        let sig = self.sign(signed);
        gzip(&cut_tar(&[(
            format!(".SIGN.RSA.{}", self.name),
            sig,
            0o644,
        )]))
    }
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// A tar of regular files without the end-of-archive blocks (how abuild
/// cuts the signature and control segments so the streams continue).
pub fn cut_tar(files: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    let mut v = b.into_inner().unwrap();
    v.truncate(v.len() - 1024);
    v
}

pub fn q1(data: &[u8]) -> String {
    use base64::Engine;
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(data))
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A package to put in a repository.
#[derive(Clone, Debug)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    /// Index fields other than C, P, V, S (kept in order): A, T, D, p, ...
    pub fields: Vec<(char, String)>,
    /// Data entries, in order.
    pub entries: Vec<Entry>,
    /// Control files (`.post-install`, ...).
    pub scripts: Vec<(String, Vec<u8>)>,
    pub triggers: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Pkg {
    /// A package with nothing but metadata (`alpine-base`-style meta packages).
    pub fn meta(name: &str, version: &str, arch: &str, depends: &[&str]) -> Pkg {
        let mut fields = vec![
            ('A', arch.to_string()),
            ('T', format!("{name} (xroot test)")),
        ];
        if !depends.is_empty() {
            fields.push(('D', depends.join(" ")));
        }
        Pkg {
            name: name.into(),
            version: version.into(),
            fields,
            entries: Vec::new(),
            scripts: Vec::new(),
            triggers: Vec::new(),
        }
    }

    fn field(&self, k: char) -> Option<&str> {
        self.fields
            .iter()
            .find(|(x, _)| *x == k)
            .map(|(_, v)| v.as_str())
    }

    /// The `.apk` bytes (signed with `key`) and its index entry.
    pub fn build(&self, key: &TestKey) -> (Vec<u8>, String) {
        let mut data = tar::Builder::new(Vec::new());
        let mut installed = 0u64;
        for e in &self.entries {
            match e {
                Entry::Dir {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    let mut h = header(tar::EntryType::Directory, *mode, 0);
                    h.set_uid(*uid);
                    h.set_gid(*gid);
                    data.append_data(&mut h, format!("{path}/"), std::io::empty())
                        .unwrap();
                }
                Entry::File {
                    path,
                    mode,
                    uid,
                    gid,
                    data: d,
                } => {
                    let mut h = header(tar::EntryType::Regular, *mode, d.len() as u64);
                    h.set_uid(*uid);
                    h.set_gid(*gid);
                    // abuild puts each file's SHA-1 in a PAX header before
                    // it (named, as apk's tar reader wants a name).
                    let record = format!(" APK-TOOLS.checksum.SHA1={}\n", hex(&Sha1::digest(d)));
                    let record = format!("{}{record}", record.len() + 2);
                    let mut ph = header(tar::EntryType::XHeader, 0o644, record.len() as u64);
                    data.append_data(&mut ph, format!("PaxHeaders/{path}"), record.as_bytes())
                        .unwrap();
                    data.append_data(&mut h, path, d.as_slice()).unwrap();
                    installed += d.len() as u64;
                }
                Entry::Symlink { path, target } => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    data.append_link(&mut h, path, target).unwrap();
                }
            }
        }
        let data_gz = gzip(&data.into_inner().unwrap());
        let mut pkginfo = format!(
            "# Generated by xroot's tests from a real package database\npkgname = {}\npkgver = {}\n",
            self.name, self.version
        );
        let map = [
            ('T', "pkgdesc"),
            ('U', "url"),
            ('t', "builddate"),
            ('A', "arch"),
            ('o', "origin"),
            ('c', "commit"),
            ('m', "maintainer"),
            ('L', "license"),
        ];
        for (k, key_name) in map {
            if let Some(v) = self.field(k) {
                pkginfo.push_str(&format!("{key_name} = {v}\n"));
            }
        }
        pkginfo.push_str(&format!("size = {installed}\n"));
        for (k, key_name) in [
            ('D', "depend"),
            ('p', "provides"),
            ('r', "replaces"),
            ('i', "install_if"),
        ] {
            for (_, v) in self.fields.iter().filter(|(x, _)| *x == k) {
                for tok in v.split_whitespace() {
                    pkginfo.push_str(&format!("{key_name} = {tok}\n"));
                }
            }
        }
        if !self.triggers.is_empty() {
            pkginfo.push_str(&format!("triggers = {}\n", self.triggers.join(" ")));
        }
        pkginfo.push_str(&format!("datahash = {}\n", hex(&Sha256::digest(&data_gz))));
        let mut control = vec![(".PKGINFO".to_string(), pkginfo.into_bytes(), 0o644)];
        for (n, body) in &self.scripts {
            control.push((n.clone(), body.clone(), 0o755));
        }
        let control_gz = gzip(&cut_tar(&control));
        let mut apk = key.signature_stream(&control_gz);
        apk.extend_from_slice(&control_gz);
        apk.extend_from_slice(&data_gz);
        let mut entry = format!(
            "C:{}\nP:{}\nV:{}\nS:{}\nI:{installed}\n",
            q1(&control_gz),
            self.name,
            self.version,
            apk.len()
        );
        for (k, v) in &self.fields {
            if !matches!(k, 'S' | 'I') {
                entry.push_str(&format!("{k}:{v}\n"));
            }
        }
        entry.push('\n');
        (apk, entry)
    }
}

/// A tar entry: kind, mode, uid, gid, content, link target.
pub type TarEntry = (tar::EntryType, u32, u64, u64, Vec<u8>, Option<String>);

/// Reads a minirootfs tarball whole: normalized path → tar entry.
pub struct Tree {
    pub entries: BTreeMap<String, TarEntry>,
}

impl Tree {
    pub fn read(tarball: &Path) -> Tree {
        let f = std::fs::File::open(tarball).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut entries = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let path = path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            if path.is_empty() || path == "." {
                continue;
            }
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            entries.insert(
                path,
                (
                    h.entry_type(),
                    h.mode().unwrap() & 0o7777,
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    data,
                    link,
                ),
            );
        }
        Tree { entries }
    }

    pub fn text(&self, path: &str) -> String {
        String::from_utf8(self.entries[path].4.clone()).unwrap()
    }
}

/// Splits a real tree into its packages with its own database.
pub fn split(tree: &Tree) -> Vec<Pkg> {
    // Scripts by "name-version.Q1...": `.post-install` etc.
    let mut scripts: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    let mut ar = tar::Archive::new(tree.entries["lib/apk/db/scripts.tar"].4.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        // "busybox-1.36.1-r29.Q1PZ3T+...=.post-install"
        let dot = name.rfind('.').unwrap();
        let (head, script) = (&name[..dot], &name[dot..]);
        let q = head.rfind(".Q1").unwrap();
        let csum = head[q + 1..].to_string();
        scripts
            .entry(csum)
            .or_default()
            .push((script.to_string(), body));
    }
    let mut triggers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in tree.text("lib/apk/db/triggers").lines() {
        let mut w = l.split_whitespace();
        if let Some(c) = w.next() {
            triggers.insert(c.to_string(), w.map(str::to_string).collect());
        }
    }
    let db = tree.text("lib/apk/db/installed");
    let mut out = Vec::new();
    for block in db.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut p = Pkg {
            name: String::new(),
            version: String::new(),
            fields: Vec::new(),
            entries: Vec::new(),
            scripts: Vec::new(),
            triggers: Vec::new(),
        };
        let mut csum = String::new();
        let mut dir = String::new();
        for l in block.lines() {
            let (k, v) = (l.as_bytes()[0] as char, l[2..].to_string());
            match k {
                'C' => csum = v,
                'P' => p.name = v,
                'V' => p.version = v,
                'F' => {
                    dir = v.clone();
                    // A directory the tree does not have (emptied by the
                    // minirootfs build) is packed as apk would make it.
                    let (mode, uid, gid) = tree
                        .entries
                        .get(&v)
                        .map(|e| (e.1, e.2, e.3))
                        .unwrap_or((0o755, 0, 0));
                    p.entries.push(Entry::Dir {
                        path: v,
                        mode,
                        uid,
                        gid,
                    });
                }
                'M' | 'a' | 'Z' => {} // taken from the tree itself
                'R' => {
                    let path = if dir.is_empty() {
                        v
                    } else {
                        format!("{dir}/{v}")
                    };
                    let Some((kind, mode, uid, gid, data, link)) = tree.entries.get(&path).cloned()
                    else {
                        eprintln!("{}: {path} is not in the tree; left out", p.name);
                        continue;
                    };
                    if kind.is_symlink() {
                        p.entries.push(Entry::Symlink {
                            path,
                            target: link.unwrap(),
                        });
                    } else if kind.is_hard_link() {
                        let target = link.unwrap();
                        let data = tree.entries[target.trim_start_matches("./")].4.clone();
                        p.entries.push(Entry::File {
                            path,
                            mode,
                            uid,
                            gid,
                            data,
                        });
                    } else {
                        p.entries.push(Entry::File {
                            path,
                            mode,
                            uid,
                            gid,
                            data,
                        });
                    }
                }
                _ => p.fields.push((k, v)),
            }
        }
        p.scripts = scripts.remove(&csum).unwrap_or_default();
        p.triggers = triggers.remove(&csum).unwrap_or_default();
        out.push(p);
    }
    out
}

/// Writes `dir/ARCH/` (the packages and a signed `APKINDEX.tar.gz`).
/// `key: None` leaves the index unsigned.
pub fn write_repo(dir: &Path, arch: &str, pkgs: &[Pkg], key: &TestKey, sign_index: bool) {
    let d = dir.join(arch);
    std::fs::create_dir_all(&d).unwrap();
    let mut index = String::new();
    for p in pkgs {
        let (apk, entry) = p.build(key);
        std::fs::write(d.join(format!("{}-{}.apk", p.name, p.version)), apk).unwrap();
        index.push_str(&entry);
    }
    write_index(&d, &index, key, sign_index);
}

/// `APKINDEX.tar.gz` holding `DESCRIPTION` and `index`, signed with `key`
/// (or not).
pub fn write_index(arch_dir: &Path, index: &str, key: &TestKey, sign: bool) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("DESCRIPTION", b"xroot test repository\n".as_slice()),
        ("APKINDEX", index.as_bytes()),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    }
    let index_gz = gzip(&b.into_inner().unwrap());
    let mut out = if sign {
        key.signature_stream(&index_gz)
    } else {
        Vec::new()
    };
    out.extend_from_slice(&index_gz);
    std::fs::write(arch_dir.join("APKINDEX.tar.gz"), out).unwrap();
}

/// The text of `APKINDEX` in `arch_dir/APKINDEX.tar.gz`.
pub fn read_index(arch_dir: &Path) -> String {
    let bytes = std::fs::read(arch_dir.join("APKINDEX.tar.gz")).unwrap();
    // The last gzip member holds the index.
    let mut rest = bytes.as_slice();
    let mut last = Vec::new();
    while !rest.is_empty() {
        let mut out = Vec::new();
        let mut dec = flate2::bufread::GzDecoder::new(&mut rest);
        dec.read_to_end(&mut out).unwrap();
        last = out;
    }
    let mut ar = tar::Archive::new(last.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().as_os_str() == "APKINDEX" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return s;
        }
    }
    panic!("no APKINDEX");
}

/// An Alpine-layout mirror in `root`: `latest-stable` → `v3.20`, with
/// `v3.20/main/ARCH` made from that arch's minirootfs plus an
/// `alpine-base` meta package depending on its world, an empty signed
/// `community`, and the release files of ../shared (for `--source alpine`).
pub fn alpine_mirror(root: &Path, arches: &[&str], key: &TestKey, extra: &[Pkg]) {
    std::fs::write(root.join("latest-stable"), "v3.20\n").unwrap();
    let rel = super::mirror_dir().join("v3.20/releases");
    std::fs::create_dir_all(root.join("v3.20")).unwrap();
    let _ = std::os::unix::fs::symlink(&rel, root.join("v3.20/releases"));
    for arch in arches {
        let tarball = rel.join(format!("{arch}/alpine-minirootfs-3.20.3-{arch}.tar.gz"));
        let tree = Tree::read(&tarball);
        let mut pkgs = split(&tree);
        let world: Vec<String> = tree
            .text("etc/apk/world")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let w: Vec<&str> = world.iter().map(String::as_str).collect();
        pkgs.push(Pkg::meta("alpine-base", "3.20.3-r0", arch, &w));
        for p in extra {
            let mut p = p.clone();
            for f in p.fields.iter_mut().filter(|(k, _)| *k == 'A') {
                f.1 = arch.to_string();
            }
            pkgs.push(p);
        }
        write_repo(&root.join("v3.20/main"), arch, &pkgs, key, true);
        write_repo(&root.join("v3.20/community"), arch, &[], key, true);
    }
}
