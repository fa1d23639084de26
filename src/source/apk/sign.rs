//! Trust: which public keys sign a repository, and checking apk's
//! signatures with them.
//!
//! An apk v2 file (`.apk`, `APKINDEX.tar.gz`) is several gzip streams
//! back to back. The first may be a *signature* stream: a tar holding one
//! `.SIGN.RSA.<key name>` (RSA PKCS#1 v1.5 over the SHA-1 of what
//! follows) or `.SIGN.RSA256.<key name>` (over the SHA-256). "What
//! follows" is the next gzip stream as compressed bytes: the index, or a
//! package's control segment. The key is found by its file name.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::keys;

/// A trusted public key: its file name (how signatures name it) and PEM.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub pem: String,
}

/// The keys trusted for a bootstrap: the shipped key ring for the arch
/// plus the user's `--key` files.
pub fn trusted(keyring: &str, apk_arch: &str, extra: &[PathBuf]) -> Result<Vec<Key>> {
    let mut out: Vec<Key> = Vec::new();
    match keyring {
        "alpine" => {
            let names: Vec<&str> = match keys::ALPINE_ARCH.iter().find(|(a, _)| *a == apk_arch) {
                Some((_, names)) => names.to_vec(),
                // An arch newer than the shipped list: any Alpine key.
                None => keys::ALPINE.iter().map(|(n, _)| *n).collect(),
            };
            for (n, pem) in keys::ALPINE.iter().filter(|(n, _)| names.contains(n)) {
                out.push(Key {
                    name: n.to_string(),
                    pem: pem.to_string(),
                });
            }
        }
        "adelie" => {
            for (n, pem) in keys::ADELIE {
                out.push(Key {
                    name: n.to_string(),
                    pem: pem.to_string(),
                });
            }
        }
        "" => {}
        other => bail!("unknown key ring {other:?} in the spec (known: alpine, adelie)"),
    }
    for p in extra {
        out.push(read_key(p)?);
    }
    Ok(out)
}

/// Reads a `--key FILE`: a PEM public key, named by its file name.
pub fn read_key(p: &Path) -> Result<Key> {
    let pem = std::fs::read_to_string(p).with_context(|| format!("reading key {}", p.display()))?;
    RsaPublicKey::from_public_key_pem(pem.trim()).map_err(|e| {
        crate::error::hinted(
            format!("{} is not an RSA public key in PEM form: {e}", p.display()),
            "give the repository's public key (-----BEGIN PUBLIC KEY-----), e.g. from /etc/apk/keys/ of a system that uses it",
        )
    })?;
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .context("a key file needs a name")?
        .to_string();
    Ok(Key { name, pem })
}

/// Splits off the first gzip stream of `data`: (its compressed bytes,
/// its decompressed bytes, the rest). `max` caps the decompressed size.
pub fn split_gzip(data: &[u8], max: u64) -> Result<(&[u8], Vec<u8>, &[u8])> {
    let mut rest = data;
    let mut out = Vec::new();
    let mut dec = flate2::bufread::GzDecoder::new(&mut rest);
    (&mut dec)
        .take(max + 1)
        .read_to_end(&mut out)
        .context("not a gzip stream")?;
    if out.len() as u64 > max {
        bail!("a gzip stream unpacks to more than {max} bytes");
    }
    drop(dec);
    let used = data.len() - rest.len();
    Ok((&data[..used], out, rest))
}

/// A signature found in a signature stream.
#[derive(Debug, Clone)]
pub struct Signature {
    pub key_name: String,
    pub sha256: bool,
    pub bytes: Vec<u8>,
}

/// If `tar_bytes` (a decompressed first stream) is a signature stream,
/// its signatures; else an empty list.
pub fn signatures(tar_bytes: &[u8]) -> Result<Vec<Signature>> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().context("reading the signature stream")? {
        let mut e = e.context("reading the signature stream")?;
        let path = e.path()?.to_string_lossy().into_owned();
        let (sha256, name) = if let Some(n) = path.strip_prefix(".SIGN.RSA256.") {
            (true, n)
        } else if let Some(n) = path.strip_prefix(".SIGN.RSA.") {
            (false, n)
        } else {
            // Not a signature stream: a control segment comes first.
            return Ok(Vec::new());
        };
        let name = name.to_string();
        let mut bytes = Vec::new();
        e.by_ref()
            .take(64 * 1024)
            .read_to_end(&mut bytes)
            .context("reading a signature")?;
        out.push(Signature {
            key_name: name,
            sha256,
            bytes,
        });
    }
    Ok(out)
}

/// Why a signed thing is not trusted.
#[derive(Debug)]
pub enum Untrusted {
    Unsigned,
    UnknownKey(Vec<String>),
    BadSignature(String),
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untrusted::Unsigned => f.write_str("it is not signed"),
            Untrusted::UnknownKey(k) => write!(
                f,
                "it is signed with {}, which is not a trusted key",
                k.join(", ")
            ),
            Untrusted::BadSignature(k) => write!(
                f,
                "its signature by {k} does not match its contents (tampered with or corrupt)"
            ),
        }
    }
}

/// Checks that one of `sigs` is a valid signature of `signed` by one of
/// `keys`.
pub fn verify(sigs: &[Signature], signed: &[u8], keys: &[Key]) -> Result<String, Untrusted> {
    if sigs.is_empty() {
        return Err(Untrusted::Unsigned);
    }
    let mut bad = None;
    for s in sigs {
        let Some(k) = keys.iter().find(|k| k.name == s.key_name) else {
            continue;
        };
        let Ok(pk) = RsaPublicKey::from_public_key_pem(k.pem.trim()) else {
            continue;
        };
        let ok = if s.sha256 {
            pk.verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(signed),
                &s.bytes,
            )
        } else {
            pk.verify(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(signed), &s.bytes)
        };
        match ok {
            Ok(()) => return Ok(k.name.clone()),
            Err(_) => bad = Some(k.name.clone()),
        }
    }
    Err(match bad {
        Some(k) => Untrusted::BadSignature(k),
        None => Untrusted::UnknownKey(sigs.iter().map(|s| s.key_name.clone()).collect()),
    })
}

/// apk's `Q1` form of a SHA-1: `Q1` + base64.
pub fn q1(sha1: &[u8]) -> String {
    use base64::Engine;
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(sha1)
    )
}

pub fn sha1(data: &[u8]) -> Vec<u8> {
    Sha1::digest(data).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_keys_parse_and_per_arch_lists_name_shipped_keys() {
        for (n, pem) in keys::ALPINE.iter().chain(keys::ADELIE) {
            RsaPublicKey::from_public_key_pem(pem.trim()).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        for (arch, names) in keys::ALPINE_ARCH {
            let t = trusted("alpine", arch, &[]).unwrap();
            assert_eq!(t.len(), names.len(), "{arch}");
        }
        assert!(trusted("nope", "x", &[]).is_err());
    }

    #[test]
    fn gzip_streams_split() {
        use std::io::Write;
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let (a, b) = (gz(b"first"), gz(b"second"));
        let all = [a.clone(), b.clone()].concat();
        let (raw, dec, rest) = split_gzip(&all, 100).unwrap();
        assert_eq!(
            (raw, dec.as_slice(), rest),
            (a.as_slice(), &b"first"[..], b.as_slice())
        );
        assert!(split_gzip(b"not gzip", 100).is_err());
        assert!(split_gzip(&a, 2).is_err());
        assert_eq!(q1(&sha1(b"")), "Q12jmj7l5rSw0yVb/vlWAYkK/YBwk=");
    }
}
