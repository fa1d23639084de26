//! [`remove_tree`] on locked directories and symlinks that point outside.

use super::*;

#[test]
fn remove_tree_handles_locked_dirs_and_never_follows() {
    let sb = Sandbox::new();
    let outside = sb.outside().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"keep").unwrap();
    let tree = sb.p("tree");
    fs::create_dir_all(tree.join("locked/deeper")).unwrap();
    fs::write(tree.join("locked/deeper/f"), b"f").unwrap();
    fs::create_dir_all(tree.join("ro")).unwrap();
    fs::write(tree.join("ro/f"), b"f").unwrap();
    std::os::unix::fs::symlink(&outside, tree.join("ro/to-outside")).unwrap();
    std::os::unix::fs::symlink(outside.join("keep"), tree.join("to-file")).unwrap();
    std::os::unix::fs::symlink("/", tree.join("to-root")).unwrap();
    fs::set_permissions(
        tree.join("locked/deeper"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    fs::set_permissions(tree.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();

    // A symlink as the path itself: only the link goes.
    let link = sb.p("link-to-outside");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    remove_tree(&link).unwrap();
    assert!(!link.exists() && outside.join("keep").exists());

    remove_tree(&tree).unwrap();
    assert!(!tree.exists());
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");
    assert_eq!(mode(&outside), 0o755);
    remove_tree(&tree).unwrap(); // already gone is fine
    remove_tree(&sb.p("no/such/parent")).unwrap();
    assert!(remove_tree(Path::new("/")).is_err());
    assert_eq!(sb.outer_names(), ["dest", "outside"]);
}
