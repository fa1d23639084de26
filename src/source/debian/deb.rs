//! Unpacking a `.deb` natively: an `ar` archive (`debian-binary`,
//! `control.tar.*`, `data.tar.*`) whose `data.tar` goes through xroot's
//! safe extractor, as any untrusted tarball does. The `.deb` was verified
//! against the index's SHA256 before it gets here; the extractor's rules
//! hold regardless.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::error::hinted;
use crate::extract;
use crate::fetch::stream;

/// Unpacks the `data.tar` of the `.deb` at `deb` into `root` (which
/// already holds earlier packages).
pub fn unpack(deb: &Path, root: &Path, opts: &extract::Options) -> Result<extract::Report> {
    let what = deb.display();
    let f = File::open(deb).with_context(|| format!("opening {what}"))?;
    let mut ar = ar::Archive::new(BufReader::new(f));
    let mut first = true;
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| anyhow!("{what} is not a valid .deb (ar archive): {e}"))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).to_string();
        if first {
            if name != "debian-binary" {
                return Err(anyhow!(
                    "{what} is not a .deb: its first member is {name:?}"
                ));
            }
            first = false;
            continue;
        }
        if !name.starts_with("data.tar") {
            continue;
        }
        let reader = stream::decompress(BufReader::with_capacity(256 * 1024, entry))
            .with_context(|| format!("reading {what}"))?
            .map_err(|kind| {
                anyhow!("{what}: {name} is {kind}-compressed, which xroot does not unpack")
            })?;
        return extract::unpack(reader, root, opts, &mut |_| {}).map_err(|e| {
            hinted(
                format!("unpacking {what} ({name}): {e}"),
                "the package is damaged or hostile; nothing was installed",
            )
        });
    }
    Err(anyhow!("{what} has no data.tar member"))
}
