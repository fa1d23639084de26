//! The stream itself: empty, truncated or corrupt input, the limits, and
//! long names.

use super::*;

#[test]
fn empty_archive_is_an_error() {
    let sb = Sandbox::new();
    assert!(matches!(sb.unpack(b""), Err(ExtractError::Empty)));
    let tar = Tar::new().bytes();
    assert_eq!(tar.len(), 1024);
    let err = sb.unpack(&tar).unwrap_err();
    assert_eq!(err.to_string(), "archive is empty");
}

#[test]
fn truncated_archive_is_corrupt() {
    let data = vec![7u8; 10_000];
    let tar = Tar::new()
        .file("first", 0o644, b"1")
        .file("big", 0o644, &data)
        .bytes();
    for cut in [1024 + 3000, 1024 + 300, 700] {
        let sb = Sandbox::new();
        let err = sb.unpack(&tar[..cut]).unwrap_err();
        assert!(
            matches!(err, ExtractError::Corrupt { .. }),
            "{cut}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("archive is corrupt or truncated"),
            "{err}"
        );
    }
    let err = Sandbox::new().unpack(&tar[..1024 + 3000]).unwrap_err();
    assert!(
        err.to_string()
            .contains("at entry `big`: file data ends after"),
        "{err}"
    );
}

#[test]
fn stream_is_checked_to_its_end() {
    use std::io::Write as _;
    let tar = Tar::new().file("a", 0o644, b"a").bytes();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).unwrap();
    let gz = e.finish().unwrap();
    let unpack_gz = |gz: &[u8]| {
        let sb = Sandbox::new();
        let r = sb.unpack_with_reader(flate2::read::GzDecoder::new(gz));
        (sb, r)
    };
    assert!(unpack_gz(&gz).1.is_ok());
    // A CRC-32 mismatch in the gzip trailer, after the tar end marker.
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 8] ^= 0xff;
    let err = unpack_gz(&bad).1.unwrap_err();
    assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
    // A gzip stream cut right after the tar end marker.
    let err = unpack_gz(&gz[..n - 4]).1.unwrap_err();
    assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
    // Padding is fine; endless data after the end is not.
    let sb = Sandbox::new();
    let mut padded = tar.clone();
    padded.extend(vec![0u8; 64 * 1024]);
    sb.unpack(&padded).unwrap();
    let sb = Sandbox::new();
    let endless = io::Cursor::new(tar).chain(io::repeat(0));
    let err = sb.unpack_with_reader(endless).unwrap_err();
    assert!(err.to_string().contains("after the end"), "{err}");
}

#[test]
fn bad_header_checksum_is_corrupt() {
    let sb = Sandbox::new();
    let mut tar = Tar::new().file("etc/passwd", 0o644, b"root").bytes();
    tar[0] = b'E';
    let err = sb.unpack(&tar).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(matches!(err, ExtractError::Corrupt { .. }));
    assert_eq!(fs::read_dir(&sb.dest).unwrap().count(), 0);
}

#[test]
fn byte_limit_is_checked_before_writing() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("a", 0o644, &[1; 60])
        .file("b", 0o644, &[2; 60])
        .bytes();
    let opts = Options {
        limits: Limits {
            max_bytes: 100,
            ..Limits::default()
        },
        chown: false,
        ..Options::default()
    };
    let mut seen = 0;
    let err = unpack(&tar[..], &sb.dest, &opts, &mut |n| seen += n).unwrap_err();
    assert!(
        matches!(err, ExtractError::TooLarge { limit: 100, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--max-size"), "{err}");
    assert_eq!(seen, 60);
    assert!(sb.p("a").exists() && !sb.p("b").exists());

    // A bomb declares a huge size; we refuse on the header, before reading.
    let mut h = header(Header::new_gnu(), EntryType::Regular, 0o644);
    h.set_path("bomb").unwrap();
    h.set_size(1 << 40);
    h.set_cksum();
    let err = sb.unpack(h.as_bytes()).unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge { .. }), "{err:?}");
    assert!(!sb.p("bomb").exists());
}

#[test]
fn entry_limit() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("a", 0o644, b"")
        .dir("b", 0o755)
        .file("c", 0o644, b"")
        .bytes();
    let opts = Options {
        limits: Limits {
            max_entries: 2,
            ..Limits::default()
        },
        chown: false,
        ..Options::default()
    };
    let err = sb.unpack_with(&tar, &opts).unwrap_err();
    assert!(
        matches!(err, ExtractError::TooManyEntries { limit: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("`c`"), "{err}");
    assert!(!sb.p("c").exists());
}

#[test]
fn long_names_gnu_and_pax() {
    let sb = Sandbox::new();
    let long_dir = "d".repeat(120);
    let gnu_path = format!("{long_dir}/{}", "f".repeat(150));
    let pax_path = format!("{long_dir}/{}", "p".repeat(200));
    let target = format!("/{}", "t".repeat(180));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(Header::new_gnu(), EntryType::Regular, 0o644);
    h.set_size(3);
    b.append_data(&mut h, &gnu_path, &b"gnu"[..]).unwrap();
    let mut h = header(Header::new_gnu(), EntryType::Symlink, 0o777);
    b.append_link(&mut h, "longlink", &target).unwrap();
    // PAX: a record "<len> path=<value>\n" whose length counts itself.
    let body = format!(" path={pax_path}\n");
    let len = (1..)
        .find(|n: &usize| n.to_string().len() + body.len() == *n)
        .unwrap();
    let record = format!("{len}{body}");
    let mut x = header(Header::new_ustar(), EntryType::XHeader, 0o644);
    x.set_path("PaxHeader").unwrap();
    x.set_size(record.len() as u64);
    x.set_cksum();
    b.append(&x, record.as_bytes()).unwrap();
    let mut h = header(Header::new_ustar(), EntryType::Regular, 0o644);
    h.set_path("short").unwrap();
    h.set_size(3);
    h.set_cksum();
    b.append(&h, &b"pax"[..]).unwrap();
    let tar = b.into_inner().unwrap();

    let report = sb.unpack(&tar).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(fs::read(sb.dest.join(&gnu_path)).unwrap(), b"gnu");
    assert_eq!(fs::read(sb.dest.join(&pax_path)).unwrap(), b"pax");
    assert_eq!(fs::read_link(sb.p("longlink")).unwrap(), Path::new(&target));
    assert!(!sb.p("short").exists());
}

#[test]
fn oversized_long_name_is_cut_off() {
    // A GNU long-name record the tar crate would buffer whole in memory.
    let mut h = header(Header::new_gnu(), EntryType::GNULongName, 0o644);
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_size(1 << 30);
    h.set_cksum();
    let stream = io::Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(b'a').take(1 << 30));
    let sb = Sandbox::new();
    let err = unpack(stream, &sb.dest, &Options::default(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("16 MiB"), "{err}");
}
