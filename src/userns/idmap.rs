//! User and group id maps for the user namespace every guest runs in.
//!
//! - root: the identity map over the whole id range, so files keep their
//!   real owners and the host's root is the guest's root;
//! - a user with a subordinate range in /etc/subuid and /etc/subgid and the
//!   setuid `newuidmap`/`newgidmap` helpers: 0 → the user, 1..=N → the range
//!   (as podman does), so `chown`, `adduser` and `apk` work with real ids;
//! - any other user: 0 → the user only (`setgroups` denied first, as the
//!   kernel requires for an unprivileged gid map).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A subordinate id range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMap {
    Identity,
    Single {
        uid: u32,
        gid: u32,
    },
    Subordinate {
        uid: u32,
        gid: u32,
        subuid: Range,
        subgid: Range,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
}

impl IdMap {
    /// Picks the richest map this caller can have.
    pub fn for_caller() -> IdMap {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        if uid == 0 {
            return IdMap::Identity;
        }
        subordinate(uid, gid).unwrap_or(IdMap::Single { uid, gid })
    }

    /// The map for a user namespace nested inside one with this map, with
    /// the same ids. The guest's command runs in such a namespace so that
    /// every mount the sandbox made is locked (see `sandbox::init`).
    ///
    /// Each line must lie within one line of the parent's map, so the
    /// subordinate case keeps the parent's two extents.
    pub fn nested(&self) -> NestedMap {
        match self {
            IdMap::Identity => NestedMap {
                uids: vec![(0, 4294967295)],
                gids: vec![(0, 4294967295)],
                deny_setgroups: false,
            },
            IdMap::Single { .. } => NestedMap {
                uids: vec![(0, 1)],
                gids: vec![(0, 1)],
                deny_setgroups: true,
            },
            IdMap::Subordinate { subuid, subgid, .. } => NestedMap {
                uids: vec![(0, 1), (1, subuid.count)],
                gids: vec![(0, 1), (1, subgid.count)],
                deny_setgroups: false,
            },
        }
    }

    /// Whether gid `g` (inside) is mapped.
    pub fn maps_gid(&self, g: u64) -> bool {
        match self {
            IdMap::Identity => true,
            IdMap::Single { .. } => g == 0,
            IdMap::Subordinate { subgid, .. } => g == 0 || g <= subgid.count,
        }
    }

    /// Writes the maps for process `pid` (which has just created its user
    /// namespace and waits for us).
    pub fn apply(&self, pid: i32) -> Result<()> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        match self {
            IdMap::Identity => {
                write(&proc.join("uid_map"), "0 0 4294967295\n")?;
                write(&proc.join("gid_map"), "0 0 4294967295\n")
            }
            IdMap::Single { uid, gid } => {
                write(&proc.join("uid_map"), &format!("0 {uid} 1\n"))?;
                write(&proc.join("setgroups"), "deny")?;
                write(&proc.join("gid_map"), &format!("0 {gid} 1\n"))
            }
            IdMap::Subordinate {
                uid,
                gid,
                subuid,
                subgid,
                newuidmap,
                newgidmap,
            } => {
                // Both helpers at once: each is a setuid process start,
                // the largest part of a rootless launch's overhead.
                let u = helper(newuidmap, pid, *uid, subuid)?;
                let g = helper(newgidmap, pid, *gid, subgid)?;
                finish(newuidmap, u).and(finish(newgidmap, g))
            }
        }
    }
}

/// The map of a user namespace nested in ours: the same ids onto
/// themselves (`0 0 N`), written by our PID 1, which holds the capabilities
/// for it in the parent namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedMap {
    /// (first id, count) extents, each mapped onto itself.
    uids: Vec<(u64, u64)>,
    gids: Vec<(u64, u64)>,
    deny_setgroups: bool,
}

/// Writes a child's id maps; implemented by both kinds of map.
pub trait ApplyMap {
    fn apply(&self, pid: i32) -> Result<()>;
}

impl ApplyMap for IdMap {
    fn apply(&self, pid: i32) -> Result<()> {
        IdMap::apply(self, pid)
    }
}

impl ApplyMap for NestedMap {
    fn apply(&self, pid: i32) -> Result<()> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let lines = |ext: &[(u64, u64)]| {
            ext.iter()
                .map(|(f, n)| format!("{f} {f} {n}\n"))
                .collect::<String>()
        };
        write(&proc.join("uid_map"), &lines(&self.uids))?;
        if self.deny_setgroups {
            write(&proc.join("setgroups"), "deny")?;
        }
        write(&proc.join("gid_map"), &lines(&self.gids))
    }
}

fn write(p: &Path, s: &str) -> Result<()> {
    fs::write(p, s).with_context(|| format!("writing {:?} to {}", s.trim(), p.display()))
}

/// Starts `newuidmap`/`newgidmap` for `pid`: 0 → id, 1.. → the range.
fn helper(tool: &Path, pid: i32, id: u32, r: &Range) -> Result<std::process::Child> {
    Command::new(tool)
        .args([
            pid.to_string(),
            "0".into(),
            id.to_string(),
            "1".into(),
            "1".into(),
            r.start.to_string(),
            r.count.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", tool.display()))
}

fn finish(tool: &Path, child: std::process::Child) -> Result<()> {
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {}", tool.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The subordinate map for this user, if the helpers and ranges exist.
pub fn subordinate(uid: u32, gid: u32) -> Option<IdMap> {
    let newuidmap = which("newuidmap")?;
    let newgidmap = which("newgidmap")?;
    let name = user_name(uid);
    let subuid = find_range(
        &fs::read_to_string("/etc/subuid").ok()?,
        uid,
        name.as_deref(),
    )?;
    let subgid = find_range(
        &fs::read_to_string("/etc/subgid").ok()?,
        uid,
        name.as_deref(),
    )?;
    Some(IdMap::Subordinate {
        uid,
        gid,
        subuid,
        subgid,
        newuidmap,
        newgidmap,
    })
}

/// Finds the first range for a user, by name or numeric uid
/// (`name:start:count` lines; capped at 65535 ids, enough for any distro).
pub fn find_range(text: &str, uid: u32, name: Option<&str>) -> Option<Range> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        let start: u64 = f.next()?.trim().parse().ok()?;
        let count: u64 = f.next()?.trim().parse().ok()?;
        let matches = Some(who) == name || who.parse::<u32>().ok() == Some(uid);
        (matches && count > 0).then_some(Range {
            start,
            count: count.min(65535),
        })
    })
}

/// A range of `count` ids that no line of `/etc/subuid` nor of
/// `/etc/subgid` (their texts) already gives anyone, for `xroot doctor` to
/// suggest: the lowest `100000 + k * 65536` (where `useradd` starts, in its
/// steps), below 2^32 - 1 (`(uid_t)-1` is no id). None if all are taken.
pub fn free_range(subuid: &str, subgid: &str, count: u64) -> Option<Range> {
    const FIRST: u64 = 100_000;
    const STEP: u64 = 65_536;
    let taken: Vec<(u64, u64)> = subuid
        .lines()
        .chain(subgid.lines())
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let _who = f.next()?;
            let start: u64 = f.next()?.trim().parse().ok()?;
            let n: u64 = f.next()?.trim().parse().ok()?;
            Some((start, start.saturating_add(n)))
        })
        .collect();
    let mut start = FIRST;
    while start + count <= u64::from(u32::MAX) {
        let end = start + count;
        match taken
            .iter()
            .filter(|(s, e)| *s < end && start < *e)
            .map(|(_, e)| *e)
            .max()
        {
            None => return Some(Range { start, count }),
            // Past the last range in the way, on the next step.
            Some(e) => start = FIRST + (e - FIRST).div_ceil(STEP) * STEP,
        }
    }
    None
}

/// The login name of `uid`: from /etc/passwd, else from `getent` (LDAP,
/// sssd, systemd-homed users).
///
/// Not getpwuid(3): release builds link glibc statically (launch speed,
/// see docs/performance.md), and a static glibc that has to load an NSS
/// module from the host's shared glibc is fragile. /etc/passwd holds most
/// users; the rest cost one `getent`, which uses the host's own NSS setup.
pub fn user_name(uid: u32) -> Option<String> {
    if let Some(n) = fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| passwd_name(&t, uid))
    {
        return Some(n);
    }
    let out = Command::new("getent")
        .args(["passwd", &uid.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    passwd_name(&String::from_utf8_lossy(&out.stdout), uid)
}

/// The name on the first passwd(5) line for `uid`.
pub fn passwd_name(text: &str, uid: u32) -> Option<String> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let u: u32 = f.next()?.parse().ok()?;
        (u == uid && !name.is_empty() && !name.starts_with(['+', '-'])).then(|| name.to_string())
    })
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/usr/sbin", "/bin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ranges_avoid_every_taken_one() {
        let r = |uid: &str, gid: &str| free_range(uid, gid, 65536).map(|r| r.start);
        assert_eq!(r("", ""), Some(100000));
        // 100000-165535 is another user's: the next step.
        assert_eq!(r("alice:100000:65536\n", ""), Some(165536));
        // Taken in subgid only counts too; ranges off the grid are stepped over.
        assert_eq!(r("alice:100000:65536\n", "bob:165536:10\n"), Some(231072));
        assert_eq!(r("x:150000:1\n", ""), Some(165536));
        assert_eq!(r("x:0:100000\n", ""), Some(100000));
        // Junk lines are ignored; a huge range pushes past itself.
        assert_eq!(r("junk\n#c\nx:100000:1000000\n", ""), Some(1_148_576));
        assert_eq!(r("x:100000:4294900000\n", ""), None);
        // The tests' own store of ranges on this kind of machine.
        let t = "xroot-test:200000:65536\nxroot-sub:300000:65536\nxroot-bound:400000:65536\n";
        let got = free_range(t, t, 65536).unwrap();
        for l in t.lines() {
            let f: Vec<u64> = l.split(':').skip(1).map(|x| x.parse().unwrap()).collect();
            assert!(
                got.start + got.count <= f[0] || f[0] + f[1] <= got.start,
                "{got:?} overlaps {l}"
            );
        }
    }

    #[test]
    fn ranges() {
        let t = "alice:100000:65536\n1001:200000:1000\nbob:0:0\n";
        assert_eq!(
            find_range(t, 1000, Some("alice")),
            Some(Range {
                start: 100000,
                count: 65535
            })
        );
        assert_eq!(
            find_range(t, 1001, Some("carol")),
            Some(Range {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(find_range(t, 1002, Some("bob")), None);
        assert_eq!(find_range("garbage\n", 1, None), None);
    }

    #[test]
    fn passwd_lookup() {
        let t = "root:x:0:0:root:/root:/bin/sh\n+:::\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken\nbob:x:notanumber:1::/:/bin/sh\n";
        assert_eq!(passwd_name(t, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(t, 1000).as_deref(), Some("alice"));
        assert_eq!(passwd_name(t, 1001), None);
        // The real file agrees with the real NSS for root.
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn gid_mapping() {
        assert!(IdMap::Identity.maps_gid(5));
        assert!(!IdMap::Single { uid: 1, gid: 1 }.maps_gid(5));
        assert!(IdMap::Single { uid: 1, gid: 1 }.maps_gid(0));
    }
}
