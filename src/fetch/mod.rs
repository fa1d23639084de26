//! Getting bytes: the HTTP/file transport (retries, timeouts, resuming a
//! cut download) and the streaming helpers (hashing tee, decompression).
//! What is fetched, and how it becomes a rootfs, is `source`'s business.

mod resume;
pub mod stream;
pub mod transport;
