//! Tree access on real directories (no root needed): symlinks planted in
//! the tree never lead outside it.

use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

fn tree() -> (tempfile::TempDir, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    (root, host)
}

#[test]
fn mount_points_are_made_inside_even_through_hostile_symlinks() {
    let (root, host) = tree();
    // etc -> the "host" directory, absolute; run -> ../../ (escapes by ..).
    symlink(host.path(), root.path().join("etc")).unwrap();
    symlink("../../..", root.path().join("run")).unwrap();
    let t = Tree::open(root.path()).unwrap();
    let mut made = Vec::new();
    let fd = t
        .mount_point(
            Path::new("/etc/resolv.conf"),
            Kind::File,
            true,
            &mut |p, _| {
                made.push(p.to_path_buf());
                Ok(())
            },
        )
        .unwrap();
    drop(fd);
    // The absolute symlink is taken from the tree's root: the host dir
    // stays empty and the file lands under root/<host path>.
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
    let inside = root
        .path()
        .join(host.path().strip_prefix("/").unwrap())
        .join("resolv.conf");
    assert!(inside.is_file(), "{}", inside.display());
    assert!(!made.is_empty());
    // `..` stops at the root.
    t.mount_point(Path::new("/run/x"), Kind::Dir, true, &mut |_, _| Ok(()))
        .unwrap();
    assert!(root.path().join("x").is_dir());
}

#[test]
fn a_dangling_symlink_is_followed_inside_and_its_target_made() {
    let (root, _host) = tree();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::create_dir_all(root.path().join("run")).unwrap();
    symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        root.path().join("etc/resolv.conf"),
    )
    .unwrap();
    let t = Tree::open(root.path()).unwrap();
    let mut made = Vec::new();
    t.mount_point(
        Path::new("/etc/resolv.conf"),
        Kind::File,
        true,
        &mut |p, _| {
            made.push(p.to_path_buf());
            Ok(())
        },
    )
    .unwrap();
    assert!(root
        .path()
        .join("run/systemd/resolve/stub-resolv.conf")
        .is_file());
    assert_eq!(
        made,
        [
            Path::new("/run/systemd"),
            Path::new("/run/systemd/resolve"),
            Path::new("/run/systemd/resolve/stub-resolv.conf")
        ]
    );
}

#[test]
fn without_create_a_missing_mount_point_is_an_error_and_nothing_is_made() {
    let (root, _host) = tree();
    let t = Tree::open(root.path()).unwrap();
    assert!(t
        .mount_point(Path::new("/a/b"), Kind::Dir, false, &mut |_, _| Ok(()))
        .is_err());
    assert!(!root.path().join("a").exists());
}

#[test]
fn a_file_where_a_directory_is_wanted_is_refused() {
    let (root, _host) = tree();
    std::fs::write(root.path().join("f"), b"").unwrap();
    let t = Tree::open(root.path()).unwrap();
    assert!(t
        .mount_point(Path::new("/f"), Kind::Dir, true, &mut |_, _| Ok(()))
        .is_err());
}

#[test]
fn the_shell_header_is_read_inside_the_tree_only() {
    let (root, host) = tree();
    // bin -> host dir holding an ELF "sh": must not be read.
    std::fs::write(host.path().join("sh"), b"\x7fELF host").unwrap();
    symlink(host.path(), root.path().join("bin")).unwrap();
    assert_eq!(shell_header(root.path()), None);
    // A FIFO is never opened for reading (it would block).
    std::fs::remove_file(root.path().join("bin")).unwrap();
    std::fs::create_dir(root.path().join("bin")).unwrap();
    nix::unistd::mkfifo(&root.path().join("bin/sh"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_eq!(shell_header(root.path()), None);
}

#[test]
fn prepare_mountpoints_never_writes_through_an_etc_symlink() {
    let (root, host) = tree();
    symlink(host.path(), root.path().join("etc")).unwrap();
    assert!(
        prepare_mountpoints(root.path()).is_err(),
        "an /etc symlink is refused"
    );
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
    assert!(root.path().join("proc").is_dir());
}

#[test]
fn cleanup_removes_what_was_made_and_never_follows_a_swapped_parent() {
    let (root, host) = tree();
    let journal_dir = tempfile::tempdir().unwrap();
    let jpath = journal_dir.path().join("t.mountpoints");
    let mut j = mountpoints::Journal::open(&jpath).unwrap();
    let t = Tree::open(root.path()).unwrap();
    t.mount_point(Path::new("/a/b"), Kind::Dir, true, &mut |p, parent| {
        j.record(p, parent)
    })
    .unwrap();
    t.mount_point(Path::new("/c/d"), Kind::Dir, true, &mut |p, parent| {
        j.record(p, parent)
    })
    .unwrap();
    // The "guest" swaps /c for a symlink to a host dir holding a `d`.
    std::fs::create_dir(host.path().join("d")).unwrap();
    std::fs::remove_dir(root.path().join("c/d")).unwrap();
    std::fs::remove_dir(root.path().join("c")).unwrap();
    symlink(host.path(), root.path().join("c")).unwrap();
    mountpoints::clean(root.path(), &jpath).unwrap();
    assert!(!root.path().join("a").exists());
    assert!(
        host.path().join("d").is_dir(),
        "a host directory was removed"
    );
    assert!(!jpath.exists());
}
