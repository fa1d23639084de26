//! Archives that break a safety rule: refused as a whole, nothing outside
//! `dest` touched.

use super::*;

#[test]
fn dotdot_is_refused() {
    for evil in ["../evil", "a/../../evil", "./../evil", "a/b/../../../evil"] {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .file("ok", 0o644, b"x")
            .file(evil, 0o644, b"pwned")
            .bytes();
        let err = sb.unpack(&tar).unwrap_err();
        assert!(err.to_string().contains("`..`"), "{err}");
        assert_eq!(sb.outer_names(), ["dest"], "{evil}");
        assert!(!sb.outside().parent().unwrap().join("evil").exists());
    }
}

#[test]
fn absolute_paths_are_rerooted() {
    // Absolute names point into the sandbox, so a regression cannot touch
    // the real system.
    let sb = Sandbox::new();
    let abs = sb.outside().join("abs-target");
    let abs = abs.to_str().unwrap();
    let tar = Tar::new()
        .file(abs, 0o644, b"inside")
        .dir("/", 0o755)
        .file("//./twice//slashed", 0o644, b"s")
        .bytes();
    sb.unpack(&tar).unwrap();
    assert_eq!(sb.outer_names(), ["dest"]);
    let rerooted = sb.dest.join(abs.trim_start_matches('/'));
    assert_eq!(fs::read(rerooted).unwrap(), b"inside");
    assert_eq!(fs::read(sb.p("twice/slashed")).unwrap(), b"s");
}

#[test]
fn writing_through_symlink_to_outside_is_refused() {
    let sb = Sandbox::new();
    let outside = sb.outside().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"original").unwrap();
    let abs = outside.to_str().unwrap();
    for (link, target) in [("link", abs), ("a/b/up", "../../.."), ("rel", "../outside")] {
        let tar = Tar::new()
            .symlink(link, target)
            .file(&format!("{link}/victim"), 0o644, b"pwned")
            .file(&format!("{link}/new"), 0o644, b"pwned")
            .bytes();
        let reason = refused_reason(sb.unpack(&tar));
        assert!(reason.contains("is a symlink"), "{reason}");
        remove_tree(&sb.dest).unwrap();
        fs::create_dir(&sb.dest).unwrap();
        assert_eq!(sb.outer_names(), ["dest", "outside"], "{link}");
    }
    // Also via a directory entry placed under the symlink.
    let tar = Tar::new()
        .symlink("link", abs)
        .dir("link/sub", 0o755)
        .bytes();
    refused_reason(sb.unpack(&tar));
    remove_tree(&sb.dest).unwrap();
    fs::create_dir(&sb.dest).unwrap();
    // A symlink that is *replaced* by a later entry is removed, not followed.
    let victim = outside.join("victim");
    let tar = Tar::new()
        .symlink("f", victim.to_str().unwrap())
        .file("f", 0o600, b"mine")
        .symlink("d", abs)
        .dir("d", 0o700)
        .bytes();
    sb.unpack(&tar).unwrap();
    assert_eq!(fs::read(sb.p("f")).unwrap(), b"mine");
    assert!(fs::symlink_metadata(sb.p("d")).unwrap().is_dir());
    assert_eq!(mode(&sb.p("d")), 0o700);
    assert_eq!(mode(&outside), 0o755);
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"original");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert_eq!(sb.outer_names(), ["dest", "outside"]);
}

#[test]
fn writing_through_symlink_to_inside_dir_is_refused() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("real", 0o755)
        .symlink("alias", "real")
        .file("alias/f", 0o644, b"x")
        .bytes();
    let reason = refused_reason(sb.unpack(&tar));
    assert!(
        reason.contains("goes through `alias`, which is a symlink"),
        "{reason}"
    );
    assert!(!sb.p("real/f").exists());
}

#[test]
fn parent_that_is_a_file_is_refused() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("a", 0o644, b"x")
        .file("a/b", 0o644, b"y")
        .bytes();
    let reason = refused_reason(sb.unpack(&tar));
    assert!(reason.contains("is not a directory"), "{reason}");
}

#[test]
fn hard_links_outside_or_missing_are_refused() {
    let sb = Sandbox::new();
    fs::write(sb.outside().join("x"), b"secret").unwrap();
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let cases = [
        ("/etc/passwd", "goes through `etc`, which does not exist"),
        ("/dir/nope", "was not extracted before it"),
        ("../x", "`..`"),
        ("dir/../../x", "`..`"),
        ("missing", "was not extracted before it"),
        ("dir", "is a directory"),
        ("./", "is the archive root"),
        ("link/f", "is a symlink"),
    ];
    for (target, why) in cases {
        let tar = Tar::new()
            .dir("dir", 0o755)
            .file("dir/f", 0o644, b"f")
            .symlink("link", "dir")
            .hardlink("h", target)
            .bytes();
        let reason = refused_reason(sb.unpack(&tar));
        assert!(reason.contains(why), "{target}: {reason}");
        assert!(!sb.p("h").exists());
        remove_tree(&sb.dest).unwrap();
        fs::create_dir(&sb.dest).unwrap();
    }
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
    assert_eq!(fs::metadata(sb.outside().join("x")).unwrap().nlink(), 1);
    assert_eq!(sb.outer_names(), ["dest", "x"]);
}

#[test]
fn root_entry_must_be_a_directory() {
    let sb = Sandbox::new();
    let tar = Tar::new().file("./", 0o644, b"x").bytes();
    assert!(refused_reason(sb.unpack(&tar)).contains("archive root"));
    let tar = Tar::new().symlink("/", "/etc").bytes();
    assert!(refused_reason(sb.unpack(&tar)).contains("archive root"));
}
