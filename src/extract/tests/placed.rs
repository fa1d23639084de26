//! What ends up on disk for archives that are accepted: links, skipped
//! entries, owners and modes, later entries replacing earlier ones.

use super::*;

#[test]
fn hard_link_to_earlier_entry_shares_the_inode() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("bin/busybox", 0o755, b"elf")
        .hardlink("bin/ls", "/bin/busybox")
        .hardlink("usr/bin/cat", "./bin/busybox")
        .symlink("bin/sh", "/bin/busybox")
        .hardlink("bin/sh2", "bin/sh")
        .bytes();
    let report = sb.unpack(&tar).unwrap();
    let ino = fs::metadata(sb.p("bin/busybox")).unwrap().ino();
    assert_eq!(fs::metadata(sb.p("bin/ls")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(sb.p("usr/bin/cat")).unwrap().ino(), ino);
    // A hard link to a symlink links the symlink itself, not its target.
    let sh = fs::symlink_metadata(sb.p("bin/sh")).unwrap().ino();
    assert_eq!(fs::symlink_metadata(sb.p("bin/sh2")).unwrap().ino(), sh);
    assert_eq!(report.bytes, 3);
}

#[test]
fn devices_and_fifos_are_skipped_and_listed() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .raw(EntryType::Char, "dev/null", "", 0o666, (0, 0), b"")
        .raw(EntryType::Block, "dev/sda", "", 0o660, (0, 6), b"")
        .raw(EntryType::Fifo, "run/fifo", "", 0o600, (0, 0), b"")
        .raw(EntryType::new(b'V'), "label", "", 0o600, (0, 0), b"")
        .file("etc/ok", 0o644, b"ok")
        .bytes();
    let report = sb.unpack(&tar).unwrap();
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|(p, _)| p.to_str().unwrap())
        .collect();
    assert_eq!(skipped, ["dev/null", "dev/sda", "run/fifo", "label"]);
    assert!(report.skipped[0].1.contains("/dev"));
    assert!(report.skipped[3].1.contains("unsupported"));
    assert!(!sb.p("dev/null").exists() && !sb.p("dev/sda").exists());
    assert!(!sb.p("run/fifo").exists() && !sb.p("label").exists());
    assert_eq!(report.entries, 5);
    assert_eq!(fs::read(sb.p("etc/ok")).unwrap(), b"ok");
}

#[test]
fn setuid_is_stripped_and_recorded_without_chown() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .raw(EntryType::Regular, "bin/su", "", 0o4755, (0, 0), b"su")
        .raw(EntryType::Regular, "bin/wall", "", 0o2755, (0, 5), b"w")
        .raw(EntryType::Directory, "tmp", "", 0o1777, (0, 0), b"")
        .raw(
            EntryType::Regular,
            "home/u/f",
            "",
            0o644,
            (1000, 1000),
            b"u",
        )
        .raw(
            EntryType::Symlink,
            "home/u/l",
            "f",
            0o777,
            (1000, 1000),
            b"",
        )
        .bytes();
    let report = sb.unpack(&tar).unwrap();
    assert_eq!(mode(&sb.p("bin/su")), 0o755);
    assert_eq!(mode(&sb.p("bin/wall")), 0o755);
    assert_eq!(mode(&sb.p("tmp")), 0o1777, "sticky is harmless and kept");
    let rec = |path: &str, uid, gid, mode| OwnerRecord {
        path: path.into(),
        uid,
        gid,
        mode,
    };
    assert_eq!(
        report.owners,
        [
            rec("bin/su", 0, 0, 0o4755),
            rec("bin/wall", 0, 5, 0o2755),
            rec("home/u/f", 1000, 1000, 0o644),
            rec("home/u/l", 1000, 1000, 0o777),
        ]
    );
    if is_root() {
        // chown=false: files belong to whoever extracted, never to uid 1000.
        assert_eq!(fs::metadata(sb.p("home/u/f")).unwrap().uid(), 0);
    }
}

#[test]
fn chown_keeps_setuid_and_applies_owners() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let tar = Tar::new()
        .raw(EntryType::Regular, "bin/su", "", 0o4755, (0, 0), b"su")
        .raw(EntryType::Directory, "home/u", "", 0o700, (1000, 1001), b"")
        .raw(
            EntryType::Regular,
            "home/u/f",
            "",
            0o2640,
            (1000, 1001),
            b"u",
        )
        .raw(
            EntryType::Symlink,
            "home/u/l",
            "/nowhere",
            0o777,
            (1002, 1003),
            b"",
        )
        .bytes();
    let opts = Options {
        chown: true,
        ..Options::default()
    };
    let report = sb.unpack_with(&tar, &opts).unwrap();
    assert!(report.owners.is_empty(), "{:?}", report.owners);
    assert_eq!(mode(&sb.p("bin/su")), 0o4755);
    assert_eq!(mode(&sb.p("home/u/f")), 0o2640);
    let f = fs::metadata(sb.p("home/u/f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (1000, 1001));
    let d = fs::metadata(sb.p("home/u")).unwrap();
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (1000, 1001, 0o700));
    let l = fs::symlink_metadata(sb.p("home/u/l")).unwrap();
    assert_eq!((l.uid(), l.gid(), l.mtime() as u64), (1002, 1003, MTIME));
    // uid -1 would mean "unchanged" to chown(2): refused.
    let tar = Tar::new()
        .raw(
            EntryType::Regular,
            "x",
            "",
            0o644,
            (u32::MAX as u64, 0),
            b"",
        )
        .bytes();
    assert!(refused_reason(Sandbox::new().unpack_with(&tar, &opts)).contains("out of range"));
}

#[test]
fn absurd_modes_are_masked_and_files_stay_readable() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("zero", 0o000, b"data")
        .file("wo", 0o200, b"data")
        .file("huge", 0o177777, b"data")
        .raw(EntryType::Directory, "d", "", 0o170755, (0, 0), b"")
        .bytes();
    let report = sb.unpack(&tar).unwrap();
    assert_eq!(mode(&sb.p("zero")), 0o400);
    assert_eq!(mode(&sb.p("wo")), 0o600);
    assert_eq!(
        mode(&sb.p("huge")),
        0o1777,
        "masked, setuid/setgid stripped"
    );
    assert_eq!(mode(&sb.p("d")), 0o755);
    assert_eq!(fs::read(sb.p("zero")).unwrap(), b"data");
    let recorded: Vec<_> = report
        .owners
        .iter()
        .map(|o| (o.path.to_str().unwrap(), o.mode))
        .collect();
    assert_eq!(recorded, [("zero", 0), ("wo", 0o200), ("huge", 0o7777)]);
}

#[test]
fn duplicate_entries_last_wins() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("etc/motd", 0o644, b"first")
        .file("etc/motd", 0o600, b"second")
        .symlink("bin/sh", "/bin/ash")
        .symlink("bin/sh", "/bin/busybox")
        .file("x", 0o644, b"file")
        .symlink("x", "target")
        .dir("d", 0o755)
        .dir("d", 0o700)
        .bytes();
    let report = sb.unpack(&tar).unwrap();
    assert_eq!(fs::read(sb.p("etc/motd")).unwrap(), b"second");
    assert_eq!(mode(&sb.p("etc/motd")), 0o600);
    assert_eq!(
        fs::read_link(sb.p("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(fs::read_link(sb.p("x")).unwrap(), Path::new("target"));
    assert_eq!(mode(&sb.p("d")), 0o700);
    assert_eq!(report.bytes, 15);
}

#[test]
fn file_replaced_by_dir_and_back() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("a", 0o644, b"file")
        .dir("a", 0o555)
        .file("a", 0o640, b"again")
        .dir("b", 0o755)
        .file("b/c", 0o644, b"c")
        .bytes();
    sb.unpack(&tar).unwrap();
    assert_eq!(fs::read(sb.p("a")).unwrap(), b"again");
    assert_eq!(
        mode(&sb.p("a")),
        0o640,
        "the dir's deferred 0555 must not land on the file"
    );

    // A directory that is not empty is never removed to make room.
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("b", 0o755)
        .file("b/c", 0o644, b"c")
        .file("b", 0o644, b"x")
        .bytes();
    let reason = refused_reason(sb.unpack(&tar));
    assert!(reason.contains("non-empty directory"), "{reason}");
    assert_eq!(fs::read(sb.p("b/c")).unwrap(), b"c");
}

#[test]
fn readonly_dirs_get_their_mode_last() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("./", 0o755)
        .dir("ro", 0o555)
        .file("ro/a", 0o644, b"a")
        .dir("ro/sub", 0o500)
        .file("ro/sub/b", 0o644, b"b")
        .dir("locked", 0o000)
        .file("locked/c", 0o644, b"c")
        .bytes();
    sb.unpack(&tar).unwrap();
    assert_eq!(mode(&sb.p("ro")), 0o555);
    assert_eq!(mode(&sb.p("ro/sub")), 0o500);
    assert_eq!(mode(&sb.p("locked")), 0o000);
    assert_eq!(mode(&sb.dest), 0o755, "`./` sets dest's permission bits");
    assert_eq!(fs::read(sb.p("ro/sub/b")).unwrap(), b"b");
    assert_eq!(fs::metadata(sb.p("ro")).unwrap().mtime() as u64, MTIME);
    remove_tree(&sb.dest).unwrap();
    assert_eq!(sb.outer_names(), Vec::<String>::new());
}

/// Merged /usr (Debian bootstraps): entries under `bin/` land in
/// `usr/bin/`, hard links too; the top-level symlink is never written
/// through or replaced.
#[test]
fn usrmerge_redirects_into_usr() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.p("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", sb.p("bin")).unwrap();
    let tar = Tar::new()
        .dir("./", 0o755)
        .dir("./bin/", 0o755)
        .file("./bin/sh", 0o755, b"sh")
        .hardlink("./bin/sh2", "./bin/sh")
        .dir("./usr/", 0o755)
        .file("./usr/lib/x", 0o644, b"x")
        .bytes();
    let opts = Options {
        usrmerge: &["bin", "sbin", "lib"],
        ..Options::default()
    };
    sb.unpack_with(&tar, &opts).unwrap();
    assert_eq!(fs::read_link(sb.p("bin")).unwrap(), Path::new("usr/bin"));
    assert_eq!(fs::read(sb.p("usr/bin/sh")).unwrap(), b"sh");
    assert_eq!(
        fs::metadata(sb.p("usr/bin/sh2")).unwrap().ino(),
        fs::metadata(sb.p("usr/bin/sh")).unwrap().ino()
    );
    // Without the option the archive's `bin/` replaces the symlink: it is
    // never written through.
    let sb2 = Sandbox::new();
    fs::create_dir_all(sb2.p("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", sb2.p("bin")).unwrap();
    sb2.unpack(&tar).unwrap();
    assert!(fs::symlink_metadata(sb2.p("bin")).unwrap().is_dir());
    assert!(!sb2.p("usr/bin/sh").exists());
}
