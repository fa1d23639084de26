//! Streaming one layer into the tree: its size and sha256 checked while it
//! is read (and copied to the layer cache), decompressed by magic bytes,
//! its uncompressed stream checked against the config's `diff_id`, and
//! applied by the extractor's layer mode.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use oci_spec::image::Descriptor;
use sha2::{Digest as _, Sha256};

use crate::error::hinted_retryable;
use crate::extract;
use crate::fetch::stream;
use crate::ui::Bar;

/// A layer whose bytes are not what its descriptor or diff_id says.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Mismatch(String);

/// Streams one layer: size and digest checked while it is read (and copied
/// to `copy` when given), decompressed, checked against `diff_id` and
/// applied. The digest is checked before an extraction error is reported.
pub(super) fn apply_layer(
    applier: &mut extract::Layers,
    reader: Box<dyn Read + Send>,
    desc: &Descriptor,
    diff_id: &str,
    copy: Option<&Path>,
    bar: &Bar,
) -> Result<()> {
    let copy = match copy {
        Some(p) => Some(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    let mut v = Verify {
        inner: reader,
        hash: Sha256::new(),
        bytes: 0,
        limit: desc.size(),
        copy,
        error: None,
        bar,
    };
    let mut diff = Sha256::new();
    let applied = {
        let mut buf = stream::buffered(&mut v);
        let r = match stream::decompress(&mut buf) {
            Ok(Ok(r)) => {
                let mut h = HashRead {
                    inner: r,
                    hash: &mut diff,
                };
                applier
                    .apply(&mut h, &mut |_| {})
                    .map_err(|e| anyhow::anyhow!("{e}"))
            }
            Ok(Err(kind)) => Err(anyhow::anyhow!(
                "it is {kind}-compressed, which images do not use"
            )),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        r
    };
    // Read what is left (padding after the tar end), bounded by the size.
    let _ = io::copy(&mut v, &mut io::sink());
    if let Some(e) = v.error.take() {
        bail!(hinted_retryable(
            format!("reading it failed: {e}"),
            "try again"
        ));
    }
    if v.bytes < desc.size() {
        // A body that ends early is a cut transfer (tried again), not yet
        // a wrong blob; a short blob that is all there is fails every try.
        bail!(hinted_retryable(
            format!(
                "the transfer ended after {} of {} bytes",
                v.bytes,
                desc.size()
            ),
            "try again; nothing was installed",
        ));
    }
    let got = format!("sha256:{}", hex::encode(v.hash.finalize_reset()));
    if v.bytes != desc.size() || got != desc.digest().as_ref() {
        return Err(Mismatch(format!(
            "got {} bytes with digest {got}, expected {} bytes with digest {}",
            v.bytes,
            desc.size(),
            desc.digest()
        ))
        .into());
    }
    applied?;
    let got = format!("sha256:{}", hex::encode(diff.finalize()));
    if got != diff_id {
        return Err(Mismatch(format!(
            "its uncompressed content has digest {got}, the config says {diff_id}"
        ))
        .into());
    }
    if let Some(mut f) = v.copy.take() {
        f.flush()
            .and_then(|_| f.sync_all())
            .context("writing the layer cache")?;
    }
    Ok(())
}

/// Hashes, counts, copies; refuses to read past the declared size.
struct Verify<'b> {
    inner: Box<dyn Read + Send>,
    hash: Sha256,
    bytes: u64,
    limit: u64,
    copy: Option<File>,
    error: Option<String>,
    bar: &'b Bar,
}

impl Read for Verify<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit is read, so a longer blob is noticed.
        let room = (self.limit + 1).saturating_sub(self.bytes);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => {
                self.error.get_or_insert_with(|| e.to_string());
                return Err(e);
            }
        };
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        self.bar.inc(n as u64);
        if let Some(f) = &mut self.copy {
            if f.write_all(&buf[..n]).is_err() {
                self.copy = None;
            }
        }
        Ok(n)
    }
}

struct HashRead<'h, R> {
    inner: R,
    hash: &'h mut Sha256,
}

impl<R: Read> Read for HashRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
