//! The tar stream on its way in: capping what the `tar` crate may buffer, and
//! reading past the end marker so the decompressor checks its trailer.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use super::{corrupt, ExtractError};

/// How much may follow the tar end marker. Tar writers pad to a record
/// (10 KiB by default); anything much larger is not a tarball we made sense of.
const TRAILER_BUDGET: u64 = 16 << 20;

/// Reads what follows the tar end marker to the end of the stream. The end
/// marker is not the end of a compressed file: only reading on to EOF makes
/// the decompressor check its trailer (gzip's CRC-32 and length), so without
/// this an archive whose corruption happens to decode cleanly, or whose
/// compressed stream is cut right after the marker, would be accepted.
pub(super) fn read_to_end_of_stream<R: Read>(
    mut rest: Metered<R>,
    budget: &Cell<u64>,
) -> Result<(), ExtractError> {
    budget.set(u64::MAX);
    let mut limited = (&mut rest).take(TRAILER_BUDGET + 1);
    let n = io::copy(&mut limited, &mut io::sink()).map_err(|e| corrupt(None, e))?;
    if n > TRAILER_BUDGET {
        let msg = "more than 16 MiB of data after the end of the tar archive";
        return Err(corrupt(None, io::Error::other(msg)));
    }
    Ok(())
}

/// How much of the tar stream the `tar` crate may read on its own between two
/// entries. It buffers GNU long names and PAX records in memory with no cap,
/// so without this a few KiB of gzip could make it allocate gigabytes.
pub(super) const META_BUDGET: u64 = 16 << 20;

/// A reader that fails once its budget runs out. [`unpack`](super::unpack)
/// resets the budget before each entry and adds a regular file's declared size
/// before copying it; the byte limit is enforced separately.
pub(super) struct Metered<R> {
    pub(super) inner: R,
    pub(super) budget: Rc<Cell<u64>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        if left == 0 && !buf.is_empty() {
            let msg = "more than 16 MiB of tar headers or non-file data between two entries";
            return Err(io::Error::other(msg));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..want])?;
        self.budget.set(left - got as u64);
        Ok(got)
    }
}
