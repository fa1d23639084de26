//! "No input may panic xroot": every parser of outside input is fed a few
//! thousand mutations of real inputs (deterministic, from a fixed seed, so
//! a failure reproduces) and must return Ok or Err, never panic. Covered:
//! the release index (YAML), checksum files, spec files (TOML), tar
//! archives (the extractor, into a temp dir), compression sniffing,
//! `ARCH@NAME`, `--user`, `--env`, `--hostname`, binfmt_misc handler files
//! and flags, /etc/subuid lines. (HTTP redirects and `Content-Range` have
//! their own tables in `fetch`.)

use std::io::Read;

/// xorshift64*: enough to spread mutations; no crate needed for a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Interesting bytes: separators and specials of the formats under test.
const SPICE: &[u8] = b"\x00\x1b\n\r\t:=@./-\"'[]{}#&*!|>%\\ 0123456789\xff\xc3";

/// One random edit of `b`: flip, insert, delete, duplicate a slice, truncate.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    let n = b.len();
    match rng.below(6) {
        0 if n > 0 => {
            let i = rng.below(n);
            b[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(n + 1);
            b.insert(i, SPICE[rng.below(SPICE.len())]);
        }
        2 if n > 0 => {
            let i = rng.below(n);
            let len = rng.below(16).min(n - i);
            b.drain(i..i + len);
        }
        3 if n > 0 => {
            let i = rng.below(n);
            let len = rng.below(64).min(n - i);
            let piece: Vec<u8> = b[i..i + len].to_vec();
            let at = rng.below(n + 1);
            b.splice(at..at, piece);
        }
        4 => b.truncate(rng.below(n + 1)),
        _ if n > 0 => {
            let i = rng.below(n);
            b[i] = SPICE[rng.below(SPICE.len())];
        }
        _ => b.push(SPICE[rng.below(SPICE.len())]),
    }
}

/// Calls `f` on `rounds` mutants of each seed (1-4 edits each), times
/// `XROOT_FUZZ_SCALE` (default 1; raise it for a longer run, and set
/// `XROOT_FUZZ_SEED` for other mutants).
fn fuzz(seeds: &[&[u8]], rounds: usize, mut f: impl FnMut(&[u8])) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = rounds * env("XROOT_FUZZ_SCALE").unwrap_or(1).max(1) as usize;
    let mut rng = Rng(env("XROOT_FUZZ_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15) | 1);
    for seed in seeds {
        f(seed);
        for _ in 0..rounds {
            let mut b = seed.to_vec();
            for _ in 0..=rng.below(4) {
                mutate(&mut rng, &mut b);
            }
            f(&b);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn text_parsers_never_panic() {
    let index = b"---\n-\n  title: \"Mini root filesystem\"\n  branch: v3.20\n  arch: aarch64\n  version: 3.20.3\n  flavor: alpine-minirootfs\n  file: alpine-minirootfs-3.20.3-aarch64.tar.gz\n  size: 3985467\n  sha256: 0fd3cdb9b5ee4bd8a2f3e1ed3ec0d3c7f1b1a7c0e1d0e2d8f7b9e3c2a4d5f6e7\n  sha512: aa\n  date: 2024-09-06\n";
    fuzz(&[index, b"[]", b"{a: b}", b"- &a [*a]"], 3000, |b| {
        let _ = crate::mirror::pick_minirootfs(&text(b));
    });
    let sums = b"0fd3cdb9b5ee4bd8a2f3e1ed3ec0d3c7f1b1a7c0e1d0e2d8f7b9e3c2a4d5f6e7  a.tar.gz\n";
    fuzz(&[sums], 2000, |b| {
        let _ = crate::mirror::parse_checksum_file(&text(b), "a.tar.gz", 64);
        let _ = crate::specs::schema::decode_hex(&text(b));
    });
    let spec = include_bytes!("../rootfs-specs/aarch64.toml");
    fuzz(&[spec], 1500, |b| {
        let _ = crate::specs::Catalog::parse(&[("aarch64.toml", &text(b))]);
    });
    let handler = b"enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    fuzz(&[handler], 2000, |b| {
        let t = text(b);
        let _ = crate::binfmt::Handler::parse("qemu-aarch64", &t);
        let _ = crate::binfmt::Flags::parse(&t);
    });
    fuzz(&[b"alice:100000:65536\nbob:165536:65536\n"], 2000, |b| {
        let _ = crate::userns::idmap::find_range(&text(b), 1000, Some("alice"));
    });
    fuzz(
        &[b"aarch64@my-tree", b"1000:1000", b"K=V", b"xroot-aarch64"],
        2000,
        |b| {
            let t = text(b);
            let _ = crate::store::RootfsId::parse(&t);
            let _ = crate::store::validate_name(&t);
            let _ = crate::validate::user(&t);
            let _ = crate::validate::env(&t);
            let _ = crate::validate::hostname(&t);
        },
    );
}

#[test]
fn the_extractor_never_panics() {
    let mut t = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_path(name).unwrap();
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        t.append(&h, data).unwrap();
    };
    add("d/", tar::EntryType::Directory, b"", None);
    add("d/f", tar::EntryType::Regular, b"hello", None);
    add("d/l", tar::EntryType::Symlink, b"", Some("f"));
    add("d/h", tar::EntryType::Link, b"", Some("d/f"));
    let tarball = t.into_inner().unwrap();
    let mut gz = Vec::new();
    flate2::read::GzEncoder::new(&tarball[..], flate2::Compression::fast())
        .read_to_end(&mut gz)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    fuzz(&[&tarball, &gz], 300, |b| {
        n += 1;
        let dest = tmp.path().join(n.to_string());
        std::fs::create_dir(&dest).unwrap();
        let mut r = crate::fetch::stream::buffered(b);
        if let Ok(Ok(d)) = crate::fetch::stream::decompress(&mut r) {
            let opts = crate::extract::Options::default();
            let _ = crate::extract::unpack(d, &dest, &opts, &mut |_| {});
        }
        let _ = crate::store::remove_tree(&dest);
    });
}
