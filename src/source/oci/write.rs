//! Writing a tree out as a container image (`xroot export --format oci`).
