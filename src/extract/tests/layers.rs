//! Image layers: whiteouts, opaque directories and replacements across
//! layers ([`Layers`]).

use super::*;

fn apply(sb: &Sandbox, layers: &[Vec<u8>]) -> Result<Report, ExtractError> {
    let opts = Options::default();
    let mut l = Layers::new(&sb.dest, &opts)?;
    for layer in layers {
        l.apply(&layer[..], &mut |_| {})?;
    }
    l.finish()
}

#[test]
fn whiteouts_delete_lower_entries_only() {
    let sb = Sandbox::new();
    let lower = Tar::new()
        .dir("etc/", 0o755)
        .file("etc/gone", 0o644, b"x")
        .dir("etc/tree/", 0o755)
        .dir("etc/tree/sub/", 0o555)
        .file("etc/tree/sub/f", 0o644, b"x")
        .file("etc/kept", 0o644, b"x")
        .dir("opq/", 0o755)
        .file("opq/old", 0o644, b"x")
        .dir("opq/d/", 0o755)
        .file("opq/d/old", 0o644, b"x")
        .bytes();
    let upper = Tar::new()
        .file("etc/.wh.gone", 0o644, b"")
        .file("etc/.wh.tree", 0o644, b"")
        .file("etc/.wh.never-existed", 0o644, b"")
        .file("nodir/.wh.x", 0o644, b"")
        // The layer's own entry before its opaque marker survives it.
        .file("opq/new", 0o644, b"new")
        .file("opq/.wh..wh..opq", 0o644, b"")
        .bytes();
    apply(&sb, &[lower, upper]).unwrap();
    assert!(!sb.p("etc/gone").exists());
    assert!(!sb.p("etc/tree").exists());
    assert!(sb.p("etc/kept").exists());
    assert!(!sb.p("etc/.wh.gone").exists());
    assert!(!sb.p("nodir").exists());
    assert_eq!(fs::read(sb.p("opq/new")).unwrap(), b"new");
    assert!(!sb.p("opq/old").exists());
    assert!(!sb.p("opq/d").exists());
    assert!(!sb.p("opq/.wh..wh..opq").exists());
}

#[test]
fn a_file_replaces_a_lower_directory() {
    let sb = Sandbox::new();
    let lower = Tar::new().dir("d/", 0o755).file("d/a", 0o644, b"x").bytes();
    let upper = Tar::new().file("d", 0o644, b"now a file").bytes();
    apply(&sb, &[lower, upper]).unwrap();
    assert_eq!(fs::read(sb.p("d")).unwrap(), b"now a file");
    // Within one archive that is still refused.
    let sb = Sandbox::new();
    let one = Tar::new()
        .dir("d/", 0o755)
        .file("d/a", 0o644, b"x")
        .file("d", 0o644, b"y")
        .bytes();
    assert!(refused_reason(apply(&sb, &[one])).contains("non-empty directory"));
}

#[test]
fn whiteouts_never_leave_the_tree() {
    let sb = Sandbox::new();
    fs::write(sb.outside().join("victim"), b"host").unwrap();
    let lower = Tar::new().symlink("link", "..").bytes();
    let upper = Tar::new().file("link/.wh.victim", 0o644, b"").bytes();
    let r = apply(&sb, &[lower, upper]);
    assert!(refused_reason(r).contains("is a symlink"));
    assert!(sb.outside().join("victim").exists());
    let bad = Tar::new().file("a/.wh.", 0o644, b"").bytes();
    let sb = Sandbox::new();
    assert!(refused_reason(apply(&sb, &[bad])).contains("no name"));
}

#[test]
fn outside_layers_whiteout_names_are_plain_files() {
    let sb = Sandbox::new();
    sb.unpack(&Tar::new().file(".wh.x", 0o644, b"").bytes())
        .unwrap();
    assert!(sb.p(".wh.x").exists());
}
