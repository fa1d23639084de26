//! A copy of a static-pie qemu with its relocations already applied.
//!
//! Why: Debian's `qemu-*-static` is a static PIE. Every time it starts (at
//! every foreign `exec` in the guest) glibc first applies ~94,000
//! `R_X86_64_RELATIVE` relocations to it, writing a pointer into nearly
//! every page of its 1.5 MB of `.data.rel.ro`: ~420 copy-on-write page
//! faults, about 2 ms of a 13 ms `/bin/true` on a VM, before qemu runs a
//! single guest instruction. A copy whose relocations are applied for one
//! load address and which the kernel maps at that address (an `ET_EXEC`)
//! has nothing to relocate: its pages stay shared in the page cache.
//!
//! How, precisely (all offsets come from the input; nothing is assumed
//! about qemu itself):
//!
//! 1. Each `RELATIVE` relocation whose target lies in a segment's file
//!    image is applied for `base` (`*target = base + addend`) and dropped.
//!    Any other relocation (`IRELATIVE`, whose value depends on the CPU)
//!    stays, to be applied by glibc at start-up as before.
//! 2. `PT_LOAD` addresses move up by `base` and the file becomes `ET_EXEC`,
//!    so the kernel maps it exactly there.
//! 3. glibc still believes it is a PIE loaded at `base`: it takes its load
//!    address from `&__ehdr_start` and adds it to every address it reads
//!    from the program headers. For `PT_GNU_RELRO`, `PT_TLS`,
//!    `PT_GNU_EH_FRAME` that is right as they are (left unmoved). For
//!    `PT_LOAD` it would count `base` twice, and the unwinder (used by
//!    `pthread_exit`, which qemu calls when a guest thread ends) would not
//!    find qemu's code and abort. So the program header table moves to a
//!    new small writable segment, and a few `RELATIVE` relocations, kept
//!    for glibc to apply at start-up, write the `PT_LOAD` addresses in that
//!    in-memory table back to their unmoved values: the kernel reads the
//!    moved ones from the file, glibc the unmoved ones from memory.
//!
//! The result is checked by running it (see `super::fast`) before use.

use object::elf::{self, Dyn64, FileHeader64, ProgramHeader64, Rela64};
use object::endian::LittleEndian as LE;
use object::pod;
use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _};

const PAGE: u64 = 4096;
const PHDR_SIZE: usize = std::mem::size_of::<ProgramHeader64<LE>>();
const RELA_SIZE: usize = std::mem::size_of::<Rela64<LE>>();

/// `R_*_RELATIVE` for the machines whose static-pie layout this handles.
fn relative_type(machine: u16) -> Option<u32> {
    match machine {
        elf::EM_X86_64 => Some(elf::R_X86_64_RELATIVE),
        elf::EM_AARCH64 => Some(elf::R_AARCH64_RELATIVE),
        _ => None,
    }
}

/// What [`prelink`] made: the copy as changes to the original, so that
/// neither has to be held in memory whole (qemu is 13 MB).
#[derive(Debug)]
pub struct Prelinked {
    /// (file offset, new bytes), to write in this order over a copy of the
    /// original: later ones win where they overlap.
    pub patches: Vec<(usize, Vec<u8>)>,
    /// Where the new program header table goes (the original's size,
    /// rounded up to a page; zeros in between).
    pub table_offset: u64,
    pub table: Vec<u8>,
    /// Relocations applied ahead of time.
    #[cfg_attr(not(test), allow(dead_code))]
    pub applied: usize,
    /// Relocations left for glibc at start-up (the table fix-ups included).
    #[cfg_attr(not(test), allow(dead_code))]
    pub kept: usize,
}

impl Prelinked {
    /// Turns `file`, a copy of the original, into the prelinked copy.
    pub fn write_into(&self, file: &std::fs::File) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        for (at, bytes) in &self.patches {
            file.write_all_at(bytes, *at as u64)?;
        }
        file.set_len(self.table_offset)?;
        file.write_all_at(&self.table, self.table_offset)
    }

    /// The whole copy in memory (for tests).
    #[cfg(test)]
    pub fn image(&self, original: &[u8]) -> Vec<u8> {
        let mut out = original.to_vec();
        for (at, bytes) in &self.patches {
            out[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        out.resize(self.table_offset as usize, 0);
        out.extend_from_slice(&self.table);
        out
    }
}

/// Makes an `ET_EXEC` copy of the static PIE `elf`, relocated for `base`
/// (page-aligned). Errors say why a binary is not one this can handle (a
/// dynamic or non-PIE executable, another machine, `DT_RELR`...); the
/// caller then uses the binary as it is.
pub fn prelink(elf_bytes: &[u8], base: u64) -> Result<Prelinked, String> {
    if base % PAGE != 0 {
        return Err(format!("base {base:#x} is not page-aligned"));
    }
    let hdr = FileHeader64::<LE>::parse(elf_bytes).map_err(|e| format!("not a 64-bit ELF: {e}"))?;
    // Little-endian only (x86_64, arm64): `LE` below.
    hdr.endian().map_err(|e| format!("{e}"))?;
    if hdr.e_type.get(LE) != elf::ET_DYN {
        return Err("not position-independent (not ET_DYN)".into());
    }
    let relative = relative_type(hdr.e_machine.get(LE))
        .ok_or_else(|| format!("machine {} not handled", hdr.e_machine.get(LE)))?;
    let phdrs = hdr
        .program_headers(LE, elf_bytes)
        .map_err(|e| format!("program headers: {e}"))?;
    if phdrs.iter().any(|p| p.p_type(LE) == elf::PT_INTERP) {
        return Err("dynamically linked (has PT_INTERP)".into());
    }
    let loads: Vec<&ProgramHeader64<LE>> = phdrs
        .iter()
        .filter(|p| p.p_type(LE) == elf::PT_LOAD)
        .collect();
    // A virtual address range → its offset in the file, if it is file-backed.
    let file_offset = |vaddr: u64, len: u64| -> Option<usize> {
        loads.iter().find_map(|p| {
            let (v, f) = (p.p_vaddr(LE), p.p_filesz(LE));
            (vaddr >= v && vaddr.checked_add(len)? <= v + f)
                .then(|| (p.p_offset(LE) + (vaddr - v)) as usize)
        })
    };

    // The dynamic section: where the relocations are, and the two entries
    // to rewrite (their sizes are file offsets of the d_val fields).
    let dyn_ph = phdrs
        .iter()
        .find(|p| p.p_type(LE) == elf::PT_DYNAMIC)
        .ok_or("no PT_DYNAMIC (not a static PIE)")?;
    let dyns: &[Dyn64<LE>] = dyn_ph
        .dynamic(LE, elf_bytes)
        .map_err(|e| format!("dynamic section: {e}"))?
        .ok_or("empty PT_DYNAMIC")?;
    let dyn_off = dyn_ph.p_offset(LE) as usize;
    let (mut rela, mut relasz, mut relasz_at, mut relacount_at) = (None, None, None, None);
    for (i, d) in dyns.iter().enumerate() {
        let at = dyn_off + i * std::mem::size_of::<Dyn64<LE>>() + 8;
        match d.tag32(LE) {
            Some(elf::DT_NULL) => break,
            Some(elf::DT_RELA) => rela = Some(d.d_val(LE)),
            Some(elf::DT_RELASZ) => (relasz, relasz_at) = (Some(d.d_val(LE)), Some(at)),
            Some(elf::DT_RELACOUNT) => relacount_at = Some(at),
            Some(elf::DT_RELAENT) if d.d_val(LE) != RELA_SIZE as u64 => {
                return Err("unexpected DT_RELAENT".into())
            }
            Some(elf::DT_REL | elf::DT_TEXTREL) => return Err("uses REL or TEXTREL".into()),
            Some(t) if t as u64 == DT_RELR => return Err("uses DT_RELR".into()),
            _ => {}
        }
    }
    let (Some(rela), Some(relasz), Some(relasz_at)) = (rela, relasz, relasz_at) else {
        return Err("no RELA relocations (nothing to gain)".into());
    };
    let rela_off = file_offset(rela, relasz).ok_or("relocation table outside the file")?;
    let count = relasz as usize / RELA_SIZE;
    let relocs: &[Rela64<LE>] = pod::slice_from_bytes(&elf_bytes[rela_off..], count)
        .map_err(|_| "relocation table truncated")?
        .0;

    // Applied relocations are written into copies of the stretches of the
    // original they fall in: targets sorted, and a stretch goes on while
    // the next target is within a page of it (for a real qemu: one stretch,
    // its 2 MB of writable data).
    let mut targets = Vec::with_capacity(relocs.len());
    let mut kept_relative = Vec::new();
    let mut kept_other = Vec::new();
    for r in relocs {
        let is_relative = r.r_type(LE, false) == relative;
        match file_offset(r.r_offset.get(LE), 8).filter(|_| is_relative) {
            Some(at) => targets.push((at, base.wrapping_add(r.r_addend.get(LE) as u64))),
            None if is_relative => kept_relative.push(*r),
            None => kept_other.push(*r),
        }
    }
    let applied = targets.len();
    targets.sort_unstable();
    let mut patches: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut span: Option<(usize, usize)> = None;
    let page = PAGE as usize;
    let flush = |span: (usize, usize), patches: &mut Vec<(usize, Vec<u8>)>| {
        patches.push((span.0, elf_bytes[span.0..span.1].to_vec()));
    };
    for &(at, _) in &targets {
        span = match span {
            Some((s, e)) if at <= e + page => Some((s, e.max(at + 8))),
            Some(done) => {
                flush(done, &mut patches);
                Some((at - at % page, at + 8))
            }
            None => Some((at - at % page, at + 8)),
        };
    }
    if let Some(done) = span {
        flush(done, &mut patches);
    }
    // Both sorted by offset: one pass.
    let mut i = 0;
    for (at, value) in targets {
        while patches[i].0 + patches[i].1.len() < at + 8 {
            i += 1;
        }
        let (s, buf) = &mut patches[i];
        let o = at - *s;
        buf[o..o + 8].copy_from_slice(&value.to_le_bytes());
    }

    // The new segment for the program header table, after everything else
    // in memory (page-aligned, so file offset and address agree mod PAGE).
    let top = loads
        .iter()
        .map(|p| p.p_vaddr(LE) + p.p_memsz(LE))
        .max()
        .ok_or("no PT_LOAD")?;
    let table_vaddr = top.next_multiple_of(PAGE);
    let table_off = (elf_bytes.len() as u64).next_multiple_of(PAGE);
    let mut table: Vec<ProgramHeader64<LE>> = phdrs.to_vec();
    let size = ((table.len() + 1) * PHDR_SIZE) as u64;
    // Points a program header at the table (the new segment, PT_PHDR).
    let at_table = |p: &mut ProgramHeader64<LE>| {
        for (field, v) in [
            (&mut p.p_offset, table_off),
            (&mut p.p_vaddr, table_vaddr),
            (&mut p.p_paddr, table_vaddr),
            (&mut p.p_filesz, size),
            (&mut p.p_memsz, size),
        ] {
            field.set(LE, v);
        }
    };
    let mut seg = table[0];
    at_table(&mut seg);
    seg.p_align.set(LE, PAGE);
    seg.p_type.set(LE, elf::PT_LOAD);
    seg.p_flags.set(LE, elf::PF_R | elf::PF_W);
    table.push(seg);
    let mut fixups = Vec::new();
    for (i, p) in table.iter_mut().enumerate() {
        match p.p_type(LE) {
            elf::PT_PHDR => at_table(p),
            elf::PT_LOAD => {
                let entry = table_vaddr + (i * PHDR_SIZE) as u64;
                // p_vaddr at +16, p_paddr at +24 of a 64-bit program header.
                for (delta, field) in [(16, &mut p.p_vaddr), (24, &mut p.p_paddr)] {
                    let unmoved = field.get(LE);
                    fixups.push(rela_entry(
                        entry + delta,
                        relative,
                        unmoved.wrapping_sub(base),
                    ));
                    field.set(LE, unmoved.wrapping_add(base));
                }
            }
            _ => {}
        }
    }

    // The relocations glibc still applies, RELATIVE ones first (DT_RELACOUNT
    // counts them), written over the start of the old table.
    let relative_count = fixups.len() + kept_relative.len();
    let kept: Vec<Rela64<LE>> = fixups
        .into_iter()
        .chain(kept_relative)
        .chain(kept_other)
        .collect();
    if kept.len() > count {
        return Err("too few relocations to make room for the table fix-ups".into());
    }
    // Later patches win where they overlap earlier ones (the dynamic
    // section lies in the writable data copied above).
    let kept_bytes: Vec<u8> = kept
        .iter()
        .flat_map(|r| pod::bytes_of(r).to_vec())
        .collect();
    patches.push((rela_off, kept_bytes));
    patches.push((
        relasz_at,
        ((kept.len() * RELA_SIZE) as u64).to_le_bytes().to_vec(),
    ));
    if let Some(at) = relacount_at {
        patches.push((at, (relative_count as u64).to_le_bytes().to_vec()));
    }
    let phnum = u16::try_from(table.len()).map_err(|_| "too many program headers")?;
    let mut h = *hdr;
    h.e_type.set(LE, elf::ET_EXEC);
    h.e_entry.set(LE, h.e_entry.get(LE).wrapping_add(base));
    h.e_phoff.set(LE, table_off);
    h.e_phnum.set(LE, phnum);
    patches.push((0, pod::bytes_of(&h).to_vec()));
    Ok(Prelinked {
        patches,
        table_offset: table_off,
        table: table
            .iter()
            .flat_map(|p| pod::bytes_of(p).to_vec())
            .collect(),
        applied,
        kept: kept.len(),
    })
}

/// `DT_RELR` (packed relative relocations), not in object's constants here.
const DT_RELR: u64 = 36;

fn rela_entry(offset: u64, kind: u32, addend: u64) -> Rela64<LE> {
    let mut r = Rela64::<LE> {
        r_offset: Default::default(),
        r_info: Default::default(),
        r_addend: Default::default(),
    };
    r.r_offset.set(LE, offset);
    r.r_info.set(LE, u64::from(kind));
    r.r_addend.set(LE, addend as i64);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const BASE: u64 = 0x5555_6666_7000;

    use crate::test_support::ci;

    /// Writes `image` as an executable file in `dir`.
    fn write_exe(dir: &Path, name: &str, image: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, image).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Builds `src` as a static PIE with `compiler`; None (a failure in CI)
    /// when there is no compiler.
    fn static_pie(dir: &Path, compiler: &str, src: &str, ext: &str) -> Option<Vec<u8>> {
        let c = dir.join(format!("t.{ext}"));
        std::fs::write(&c, src).unwrap();
        let out = dir.join(format!("t-{ext}"));
        let built = Command::new(compiler)
            .args(["-O2", "-static-pie", "-pthread", "-o"])
            .arg(&out)
            .arg(&c)
            .status();
        match built {
            Ok(s) if s.success() => Some(std::fs::read(&out).unwrap()),
            _ => {
                crate::test_support::require(
                    false,
                    &format!("{compiler} that can link -static-pie"),
                );
                None
            }
        }
    }

    /// Every qemu-*-static of the host: the copy runs and says what the
    /// original says, and ~all its relocations were applied ahead.
    #[test]
    fn the_hosts_qemus_prelink_and_run() {
        let mut found = 0;
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir("/usr/bin").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("qemu-") && name.ends_with("-static")) || found >= 6 {
                continue;
            }
            found += 1;
            let original = std::fs::read(e.path()).unwrap();
            let p = prelink(&original, BASE).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(p.applied > 10_000, "{name}: {} applied", p.applied);
            assert!(p.kept < 100, "{name}: {} kept", p.kept);
            let copy = write_exe(dir.path(), &name, &p.image(&original));
            // The way xroot writes it (changes over a copy of the file)
            // gives the same bytes.
            let other = dir.path().join(format!("{name}.patched"));
            std::fs::copy(e.path(), &other).unwrap();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&other)
                .unwrap();
            p.write_into(&f).unwrap();
            drop(f);
            assert!(std::fs::read(&other).unwrap() == std::fs::read(&copy).unwrap());
            let version = |exe: &Path| {
                let o = Command::new(exe).arg("-version").output().unwrap();
                assert!(o.status.success(), "{}: {o:?}", exe.display());
                String::from_utf8(o.stdout).unwrap()
            };
            assert_eq!(version(&copy), version(&e.path()), "{name}");
            let image = p.image(&original);
            let h = FileHeader64::<LE>::parse(&image[..]).unwrap();
            assert_eq!(h.e_type.get(LE), elf::ET_EXEC);
            assert_eq!(
                h.e_entry.get(LE),
                FileHeader64::<LE>::parse(&original[..])
                    .unwrap()
                    .e_entry
                    .get(LE)
                    + BASE
            );
        }
        assert!(found > 0 || !ci(), "qemu-user-static is needed in CI");
    }

    /// What the table fix-up is for: glibc's unwinder must find the code,
    /// for `pthread_exit`/`pthread_cancel` (qemu ends guest threads with
    /// `pthread_exit`) and for C++ exceptions. Without the fix-up both
    /// programs abort.
    #[test]
    fn threads_and_unwinding_work_in_a_prelinked_program() {
        let dir = tempfile::tempdir().unwrap();
        let threads = r#"
            #include <pthread.h>
            #include <stdio.h>
            #include <unistd.h>
            static void *f(void *a) {
                if ((long)a % 3 == 0) pthread_exit((void *)7);
                if ((long)a % 3 == 1) for (;;) { pthread_testcancel(); usleep(1000); }
                return a;
            }
            int main(void) {
                pthread_t t[12]; long ok = 0;
                for (long i = 0; i < 12; i++) pthread_create(&t[i], 0, f, (void *)i);
                for (long i = 0; i < 12; i++) {
                    void *r;
                    if (i % 3 == 1) pthread_cancel(t[i]);
                    pthread_join(t[i], &r);
                    ok += (i % 3 == 0 && r == (void *)7) || (i % 3 == 1 && r == PTHREAD_CANCELED)
                        || (i % 3 == 2 && r == (void *)i);
                }
                printf("ok=%ld\n", ok);
                return ok != 12;
            }"#;
        let exceptions = r#"
            #include <cstdio>
            #include <stdexcept>
            static int g(int x) { if (x > 2) throw std::runtime_error("boom"); return x; }
            int main() {
                int n = 0;
                for (int i = 0; i < 5; i++) try { g(i); } catch (const std::exception &) { n++; }
                std::printf("caught=%d\n", n);
                return n != 2;
            }"#;
        for (compiler, src, ext, want) in [
            ("gcc", threads, "c", "ok=12\n"),
            ("g++", exceptions, "cc", "caught=2\n"),
        ] {
            let Some(original) = static_pie(dir.path(), compiler, src, ext) else {
                continue;
            };
            let p = prelink(&original, BASE).unwrap();
            let exe = write_exe(dir.path(), &format!("pre-{ext}"), &p.image(&original));
            let o = Command::new(&exe).output().unwrap();
            assert!(o.status.success(), "{compiler}: {o:?}");
            assert_eq!(String::from_utf8_lossy(&o.stdout), want);
        }
    }

    #[test]
    fn what_it_cannot_handle_is_refused_with_a_reason() {
        let dynamic = std::fs::read("/bin/sh").unwrap();
        assert!(prelink(&dynamic, BASE).unwrap_err().contains("PT_INTERP"));
        assert!(prelink(b"#!/bin/sh\n", BASE).unwrap_err().contains("ELF"));
        assert!(prelink(&[], BASE).is_err());
        let q = std::fs::read("/usr/bin/qemu-aarch64-static");
        crate::test_support::require(
            q.is_ok(),
            "/usr/bin/qemu-aarch64-static, for half of this test",
        );
        if let Ok(q) = q {
            assert!(prelink(&q, BASE + 1).unwrap_err().contains("page-aligned"));
            // A prelinked copy is an ET_EXEC: not prelinked twice.
            let once = prelink(&q, BASE).unwrap().image(&q);
            assert!(prelink(&once, BASE).unwrap_err().contains("ET_DYN"));
        }
    }
}
