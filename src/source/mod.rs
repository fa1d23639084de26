//! Where a rootfs comes from, besides Alpine releases and plain tarballs
//! (which `fetch` handles itself): container images ([`oci`]).

pub mod oci;
