//! Just enough ELF parsing to answer three questions: which arch is this
//! binary for, is it statically linked (no `PT_INTERP`), and is it ELF at all.
//! Used to check that a qemu is static (a dynamic one cannot run once the
//! guest's root replaces the host's) and that a rootfs matches its arch.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context, Result};

const PT_INTERP: u32 = 3;

/// Whether the ELF file at `path` has a `PT_INTERP` program header, i.e.
/// needs a dynamic loader.
pub fn has_interp(path: &Path) -> Result<bool> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hdr = [0u8; 64];
    f.read_exact(&mut hdr[..52])
        .with_context(|| format!("{} is too short to be an ELF binary", path.display()))?;
    let _ = f.read(&mut hdr[52..]);
    let h =
        Header::parse(&hdr).with_context(|| format!("{} is not an ELF binary", path.display()))?;
    let table_len = h.phnum as u64 * h.phentsize as u64;
    if table_len > 1 << 20 {
        bail!("{}: implausible program header table", path.display());
    }
    let mut table = vec![0u8; table_len as usize];
    f.seek(SeekFrom::Start(h.phoff))
        .and_then(|_| f.read_exact(&mut table))
        .with_context(|| format!("reading program headers of {}", path.display()))?;
    Ok(table
        .chunks(h.phentsize as usize)
        .any(|ph| h.u32_at(ph, 0) == Some(PT_INTERP)))
}

/// The fields of an ELF header that xroot cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub is64: bool,
    pub big_endian: bool,
    pub machine: u16,
    pub phoff: u64,
    pub phentsize: u16,
    pub phnum: u16,
}

impl Header {
    pub fn parse(b: &[u8]) -> Result<Header> {
        if b.len() < 52 || &b[..4] != b"\x7fELF" {
            bail!("no ELF magic");
        }
        let is64 = match b[4] {
            1 => false,
            2 => true,
            c => bail!("bad ELF class {c}"),
        };
        let big_endian = match b[5] {
            1 => false,
            2 => true,
            d => bail!("bad ELF data encoding {d}"),
        };
        let u16_at = |o: usize| {
            let v = [b[o], b[o + 1]];
            if big_endian {
                u16::from_be_bytes(v)
            } else {
                u16::from_le_bytes(v)
            }
        };
        let (phoff, phentsize, phnum) = if is64 {
            if b.len() < 64 {
                bail!("truncated ELF64 header");
            }
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[32..40]);
            let off = if big_endian {
                u64::from_be_bytes(v)
            } else {
                u64::from_le_bytes(v)
            };
            (off, u16_at(54), u16_at(56))
        } else {
            let mut v = [0u8; 4];
            v.copy_from_slice(&b[28..32]);
            let off = if big_endian {
                u32::from_be_bytes(v)
            } else {
                u32::from_le_bytes(v)
            };
            (off as u64, u16_at(42), u16_at(44))
        };
        let min_ent = if is64 { 56 } else { 32 };
        if phnum > 0 && (phentsize as usize) < min_ent {
            bail!("bad program header entry size {phentsize}");
        }
        Ok(Header {
            is64,
            big_endian,
            machine: u16_at(18),
            phoff,
            phentsize,
            phnum,
        })
    }

    fn u32_at(&self, b: &[u8], o: usize) -> Option<u32> {
        let v: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_static_and_parse() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/probe/bin");
        for (name, be, is64) in [
            ("aarch64", false, true),
            ("s390x", true, true),
            ("ppc", true, false),
            ("arm", false, false),
        ] {
            let p = dir.join(name);
            let h = Header::parse(&std::fs::read(&p).unwrap()[..64]).unwrap();
            assert_eq!((h.big_endian, h.is64), (be, is64), "{name}");
            assert!(!has_interp(&p).unwrap(), "{name} probe is static");
        }
    }

    #[test]
    fn dynamic_binary_has_interp() {
        assert!(has_interp(std::path::Path::new("/bin/sh")).unwrap());
    }

    #[test]
    fn non_elf_is_refused() {
        assert!(Header::parse(b"#!/bin/sh\n").is_err());
        assert!(Header::parse(&[0u8; 64]).is_err());
        assert!(
            has_interp(std::path::Path::new("/etc/hostname")).is_err()
                || !std::path::Path::new("/etc/hostname").exists()
        );
    }
}
