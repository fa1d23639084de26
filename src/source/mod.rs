//! Where a rootfs comes from, beyond a single tarball: package-archive
//! providers that populate an empty staging tree.

pub mod debian;
