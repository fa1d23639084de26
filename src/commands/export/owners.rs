//! The owners and modes an export records, as the guest sees them.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::stat::FileStat;

use crate::userns::IdMap;

/// The owners and modes to record, as the guest sees them.
///
/// - real root: the files' own;
/// - rootless with a subordinate id range: files belong to the caller (guest
///   root) or to its range (guest ids 1..=N), mapped back here;
/// - rootless without one: extraction could not apply them and listed them
///   in `owners.tsv` next to the manifest; those records win.
pub(super) struct Owners {
    map: IdMap,
    recorded: HashMap<PathBuf, (u64, u64, u32)>,
}

impl Owners {
    pub(super) fn load(dir: &Path, recorded: bool) -> Result<Owners> {
        let mut out = Owners {
            map: IdMap::for_caller(),
            recorded: HashMap::new(),
        };
        if !recorded {
            return Ok(out);
        }
        let p = dir.join("owners.tsv");
        let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let parsed = (f.len() == 4)
                .then(|| {
                    Some((
                        f[1].parse::<u64>().ok()?,
                        f[2].parse::<u64>().ok()?,
                        u32::from_str_radix(f[3], 8).ok()?,
                    ))
                })
                .flatten();
            let Some(v) = parsed else {
                bail!("{}:{}: not PATH\\tUID\\tGID\\tMODE", p.display(), n + 1);
            };
            out.recorded.insert(PathBuf::from(f[0]), v);
        }
        Ok(out)
    }

    /// (uid, gid, mode) of `rel`, whose host `stat` is `st`.
    pub(super) fn of(&self, rel: &Path, st: &FileStat) -> (u64, u64, u32) {
        if let Some(&(u, g, m)) = self.recorded.get(rel) {
            return (u, g, m);
        }
        let mode = st.st_mode & 0o7777;
        match &self.map {
            IdMap::Subordinate {
                uid,
                gid,
                subuid,
                subgid,
                ..
            } => (
                back(st.st_uid, *uid, subuid),
                back(st.st_gid, *gid, subgid),
                mode,
            ),
            IdMap::Single { uid, gid } => (
                if st.st_uid == *uid {
                    0
                } else {
                    st.st_uid as u64
                },
                if st.st_gid == *gid {
                    0
                } else {
                    st.st_gid as u64
                },
                mode,
            ),
            IdMap::Identity => (st.st_uid as u64, st.st_gid as u64, mode),
        }
    }
}

/// A host id seen through a subordinate map: the caller is guest 0, the
/// range is guest 1..=N; anything else (nobody inside) stays as it is.
fn back(host: u32, me: u32, r: &crate::userns::idmap::Range) -> u64 {
    let h = host as u64;
    if host == me {
        0
    } else if h >= r.start && h < r.start + r.count {
        h - r.start + 1
    } else {
        h
    }
}
