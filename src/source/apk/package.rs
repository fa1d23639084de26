//! One `.apk` (v2): [signature stream] control stream, data stream, each
//! gzip. Verified against the (signed) index: the SHA-1 of the control
//! stream as compressed bytes is the index's `C:`, and the SHA-256 of the
//! data stream is `.PKGINFO`'s `datahash`; so every byte unpacked is
//! covered by the index signature.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::index::Package;
use super::sign;
use crate::error::hinted;

/// Control files are small; a package's control stream is capped at this.
const MAX_CONTROL: u64 = 16 << 20;

/// A verified package, ready to unpack.
pub struct Apk {
    /// `.PKGINFO` as `key = value` pairs, in order.
    pub pkginfo: Vec<(String, String)>,
    /// Install scripts (`.pre-install`, `.post-install`, `.trigger`, ...) by name.
    pub scripts: Vec<(String, Vec<u8>)>,
    /// The whole file, and where its data stream starts in it.
    pub bytes: Vec<u8>,
    pub data_at: usize,
}

impl Apk {
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.data_at..]
    }

    pub fn info<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pkginfo
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses and verifies `bytes` as the package `p` of the index. `checked`:
/// whether `C:` must match (an index accepted with `--allow-untrusted`
/// still has checksums; only a package without one is taken as it is).
pub fn verify(p: &Package, bytes: Vec<u8>, url: &str, allow_untrusted: bool) -> Result<Apk> {
    let bad = |what: String| {
        hinted(
            format!("{}-{} ({url}): {what}", p.name, p.version),
            "the package is corrupt or was tampered with; nothing was installed. Try again or use another mirror",
        )
    };
    let (first_raw, first, rest) =
        sign::split_gzip(&bytes, MAX_CONTROL).map_err(|e| bad(format!("{e:#}")))?;
    let (control_raw, control, data_at) = if sign::signatures(&first).is_ok_and(|s| !s.is_empty()) {
        let (c_raw, c, _) = sign::split_gzip(rest, MAX_CONTROL)
            .map_err(|e| bad(format!("control segment: {e:#}")))?;
        (c_raw, c, first_raw.len() + c_raw.len())
    } else {
        (first_raw, first, first_raw.len())
    };
    match p.checksum.strip_prefix("Q1") {
        Some(_) => {
            let have = sign::q1(&sign::sha1(control_raw));
            if have != p.checksum {
                return Err(bad(format!(
                    "control checksum {have} does not match the index's {}",
                    p.checksum
                )));
            }
        }
        None if allow_untrusted => {}
        None => {
            return Err(bad(format!(
                "the index gives no SHA-1 checksum (C:{:?}) to verify it with",
                p.checksum
            )))
        }
    }
    let mut pkginfo = Vec::new();
    let mut scripts = Vec::new();
    let mut ar = tar::Archive::new(control.as_slice());
    for e in ar
        .entries()
        .map_err(|e| bad(format!("control segment: {e}")))?
    {
        let mut e = e.map_err(|e| bad(format!("control segment: {e}")))?;
        let name = e
            .path()
            .map_err(|e| bad(format!("control segment: {e}")))?
            .to_string_lossy()
            .into_owned();
        let mut body = Vec::new();
        e.read_to_end(&mut body)
            .map_err(|e| bad(format!("control segment: {e}")))?;
        if name == ".PKGINFO" {
            let text = String::from_utf8_lossy(&body);
            for l in text.lines() {
                if let Some((k, v)) = l.split_once(" = ") {
                    pkginfo.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        } else if name.starts_with('.') && !name.starts_with(".SIGN.") && !name.contains('/') {
            scripts.push((name, body));
        }
    }
    let data = &bytes[data_at..];
    match pkginfo.iter().find(|(k, _)| k == "datahash") {
        Some((_, want)) => {
            let have = hex::encode(Sha256::digest(data));
            if !have.eq_ignore_ascii_case(want) {
                return Err(bad(format!(
                    "data sha256 {have} does not match its .PKGINFO datahash {want}"
                )));
            }
        }
        None if allow_untrusted => {}
        None => {
            return Err(bad(
                "its .PKGINFO has no datahash to verify the data with".into()
            ))
        }
    }
    Ok(Apk {
        pkginfo,
        scripts,
        bytes,
        data_at,
    })
}

/// One entry of a package's data, for the installed database.
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub path: PathBuf,
    pub dir: bool,
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
    /// `Q1` SHA-1 of the content (a symlink: of its target).
    pub checksum: Option<String>,
}

/// Lists the data stream's entries (a first pass; unpacking is `extract`'s).
pub fn list_data(data: &[u8], limit: u64) -> Result<Vec<FileEntry>> {
    let gz = flate2::read::GzDecoder::new(data);
    let mut ar = tar::Archive::new(gz.take(limit));
    let mut out = Vec::new();
    for e in ar.entries().context("reading the data segment")? {
        let mut e = e.context("reading the data segment")?;
        let h = e.header().clone();
        let path = e.path()?.into_owned();
        let kind = h.entry_type();
        let mut checksum = None;
        if kind.is_file() {
            let mut hasher = sha1::Sha1::new();
            std::io::copy(&mut e, &mut hasher).context("reading the data segment")?;
            checksum = Some(sign::q1(&hasher.finalize()));
        } else if kind.is_symlink() {
            if let Some(t) = e.link_name()? {
                checksum = Some(sign::q1(&sign::sha1(t.as_os_str().as_encoded_bytes())));
            }
        }
        out.push(FileEntry {
            path,
            dir: kind.is_dir(),
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            checksum,
        });
    }
    Ok(out)
}

/// Fails unless `bytes` is at most `max` (a declared `S:` size).
pub fn check_size(p: &Package, len: usize) -> Result<()> {
    if p.size > 0 && len as u64 != p.size {
        bail!(hinted(
            format!(
                "{}-{} is {len} bytes, but the index says {}",
                p.name, p.version, p.size
            ),
            "the package is corrupt or was tampered with; nothing was installed",
        ));
    }
    Ok(())
}
