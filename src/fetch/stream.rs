//! One streaming pass over a download: bytes are hashed (sha256, and
//! sha512 when the index gives one), copied to the cache file and fed to
//! the decompressor and extractor as they arrive. Verification happens at
//! the end; nothing is committed to the store before it succeeds.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};

use sha2::{Digest, Sha256, Sha512};

use crate::ui::Bar;

/// A reader that hashes, counts and copies what passes through, and
/// remembers the first read error of the underlying network stream (so a
/// failure mid-body is reported as a download error, not as a corrupt archive).
pub struct Tee<'a> {
    inner: Box<dyn Read + Send>,
    sha256: Sha256,
    sha512: Option<Sha512>,
    copy: Option<File>,
    pub bytes: u64,
    pub source_error: Option<String>,
    pub copy_error: Option<io::Error>,
    /// Refuse to read past this many raw bytes (a hostile endless body).
    limit: u64,
    bar: &'a Bar,
}

impl<'a> Tee<'a> {
    pub fn new(
        inner: Box<dyn Read + Send>,
        want_sha512: bool,
        copy: Option<File>,
        limit: u64,
        bar: &'a Bar,
    ) -> Self {
        Tee {
            inner,
            sha256: Sha256::new(),
            sha512: want_sha512.then(Sha512::new),
            copy,
            bytes: 0,
            source_error: None,
            copy_error: None,
            limit,
            bar,
        }
    }

    /// Reads and hashes whatever is left (after the tar end marker there is
    /// padding, and a hostile file may append data: it is all hashed).
    pub fn drain(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read(&mut buf)? > 0 {}
        Ok(())
    }

    /// Like [`drain`](Self::drain), but stops after `max` more bytes.
    /// Returns whether the end of the stream was reached.
    pub fn drain_at_most(&mut self, max: u64) -> io::Result<bool> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = max;
        loop {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if want == 0 {
                // At the cap: at the end only if nothing at all is left.
                return Ok(self.read(&mut buf[..1])? == 0);
            }
            match self.read(&mut buf[..want])? {
                0 => return Ok(true),
                n => left -= n as u64,
            }
        }
    }

    /// (sha256, sha512) as lowercase hex.
    pub fn finish(self) -> (String, Option<String>) {
        (
            hex::encode(self.sha256.finalize()),
            self.sha512.map(|h| hex::encode(h.finalize())),
        )
    }
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bytes >= self.limit {
            let e = io::Error::other(format!("download exceeds {} bytes", self.limit));
            self.source_error.get_or_insert_with(|| e.to_string());
            return Err(e);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.source_error.get_or_insert_with(|| e.to_string());
                return Err(e);
            }
        };
        let data = &buf[..n];
        self.sha256.update(data);
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
        if let Some(f) = &mut self.copy {
            if let Err(e) = f.write_all(data) {
                self.copy_error.get_or_insert(e);
                self.copy = None;
            }
        }
        self.bytes += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Compression detected from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    None,
}

/// Detects the compression by magic bytes, not by file name (mirrors and
/// users mislabel files).
pub fn sniff<R: BufRead>(r: &mut R) -> io::Result<Result<Compression, String>> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Ok(Compression::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.starts_with(b"BZh") {
        Err("bzip2".into())
    } else {
        // Plain tar, or garbage; the tar reader will tell.
        Ok(Compression::None)
    })
}

/// Wraps a reader in the right decompressor.
pub fn decompress<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Result<Box<dyn Read + 'a>, String>> {
    Ok(match sniff(&mut r)? {
        Ok(Compression::Gzip) => Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r))),
        Ok(Compression::Xz) => Ok(Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r))),
        Ok(Compression::Zstd) => Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?)),
        Ok(Compression::None) => Ok(Box::new(r)),
        Err(kind) => Err(kind),
    })
}

/// Convenience for callers: a buffered reader over the tee.
pub fn buffered<R: Read>(r: R) -> BufReader<R> {
    BufReader::with_capacity(256 * 1024, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_hashes_and_limits() {
        let bar = Bar::hidden();
        let mut t = Tee::new(
            Box::new(io::Cursor::new(b"abc".to_vec())),
            true,
            None,
            1 << 20,
            &bar,
        );
        t.drain().unwrap();
        let (s256, s512) = t.finish();
        assert_eq!(
            s256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(s512.unwrap().starts_with("ddaf35a193617aba"));
        let mut t = Tee::new(Box::new(io::repeat(0)), false, None, 1 << 20, &bar);
        assert!(!t.drain_at_most(1000).unwrap());
        assert_eq!(t.bytes, 1001);
        let mut t = Tee::new(
            Box::new(io::Cursor::new(vec![1; 1000])),
            false,
            None,
            1 << 20,
            &bar,
        );
        assert!(t.drain_at_most(1000).unwrap());
        let mut t = Tee::new(Box::new(io::repeat(0)), false, None, 1000, &bar);
        assert!(t.drain().is_err());
        assert!(t.source_error.unwrap().contains("exceeds"));
    }

    #[test]
    fn sniffs_formats() {
        let mut gz = io::Cursor::new(vec![0x1f, 0x8b, 8, 0]);
        assert_eq!(sniff(&mut gz).unwrap(), Ok(Compression::Gzip));
        let mut xz = io::Cursor::new(vec![0xfd, b'7', b'z', b'X', b'Z', 0]);
        assert_eq!(sniff(&mut xz).unwrap(), Ok(Compression::Xz));
        let mut bz = io::Cursor::new(b"BZh91AY".to_vec());
        assert_eq!(sniff(&mut bz).unwrap(), Err("bzip2".to_string()));
        let mut tar = io::Cursor::new(vec![b'.', b'/', 0]);
        assert_eq!(sniff(&mut tar).unwrap(), Ok(Compression::None));
    }
}
