//! `--user`: which guest user runs the command. Parsing `/etc/passwd` and
//! `/etc/group` of the guest is pure and unit-tested here; switching ids
//! happens in `init`.

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Name(String),
    Id { uid: u32, gid: Option<u32> },
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wanted::Name(n) => f.write_str(n),
            Wanted::Id { uid, gid: None } => write!(f, "{uid}"),
            Wanted::Id { uid, gid: Some(g) } => write!(f, "{uid}:{g}"),
        }
    }
}

/// The largest valid uid or gid. `(uid_t)-1` (4294967295) is not an id:
/// to setresuid/setresgid it means "leave unchanged", so accepting it would
/// run the command as whoever the sandbox's init is (root).
const MAX_ID: u32 = u32::MAX - 1;

/// A decimal id in `0..=MAX_ID`, or why not.
fn parse_id(s: &str, what: &str, arg: &str) -> Result<u32, String> {
    match s.parse::<u64>() {
        Ok(n) if n <= u64::from(MAX_ID) => Ok(n as u32),
        Ok(_) => Err(format!(
            "--user {arg}: {what} {s} is not a valid id (ids go from 0 to {MAX_ID})"
        )),
        Err(_) => Err(format!("--user {arg}: {what} {s:?} is not a number")),
    }
}

/// `NAME`, `UID` or `UID:GID`.
pub fn parse(arg: &str) -> Result<Wanted, String> {
    let (u, g) = match arg.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (arg, None),
    };
    if !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()) {
        let uid = parse_id(u, "UID", arg)?;
        let gid = g.map(|g| parse_id(g, "GID", arg)).transpose()?;
        return Ok(Wanted::Id { uid, gid });
    }
    if g.is_some() {
        return Err(format!("--user {arg}: use NAME, UID or UID:GID"));
    }
    if u.is_empty()
        || !u
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || u.starts_with('-')
    {
        return Err(format!("--user {arg:?} is not a valid user name"));
    }
    Ok(Wanted::Name(u.to_string()))
}

/// The account tools a guest may have, as found on its PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adduser {
    /// busybox's `adduser` (Alpine): `adduser -D NAME`.
    Busybox,
    /// Debian's `adduser`, a Perl script around `useradd`, whose options
    /// are long ones (`-D` gets its 35-line usage).
    Debian,
}

/// The command that creates user `name` with a home and no password, by
/// the tools the guest has: shadow's `useradd` (Debian, Ubuntu, Fedora,
/// Arch, Alpine with `shadow`), else busybox's or Debian's `adduser`.
/// None if the guest has neither.
pub fn add_user_command(
    useradd: bool,
    adduser: Option<Adduser>,
    name: &str,
) -> Option<Vec<String>> {
    let v = |a: &[&str]| Some(a.iter().map(|s| s.to_string()).collect());
    match (useradd, adduser) {
        (true, _) => v(&["useradd", "-m", "--", name]),
        (false, Some(Adduser::Busybox)) => v(&["adduser", "-D", name]),
        (false, Some(Adduser::Debian)) => {
            v(&["adduser", "--disabled-password", "--gecos", "", "--", name])
        }
        (false, None) => None,
    }
}

/// Which `adduser` a file is, from its first bytes: Debian's is a Perl
/// script; anything else (busybox's applet, a link to it) takes `-D`.
pub fn adduser_kind(head: &[u8]) -> Adduser {
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    if first.starts_with(b"#!") && first.windows(4).any(|w| w == b"perl") {
        Adduser::Debian
    } else {
        Adduser::Busybox
    }
}

/// The ids and home the command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub groups: Vec<u32>,
}

/// Resolves against the guest's passwd and group files. A numeric id
/// need not exist (as with `docker run --user 1234`): then name is the
/// number and home is `/`.
pub fn resolve(w: &Wanted, passwd: &str, group: &str) -> Option<Resolved> {
    let entries = passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7).then(|| {
            (
                f[0],
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5],
            )
        })
    });
    let mut found = None;
    for (name, uid, gid, home) in entries {
        // An entry with (uid_t)-1 would mean "no change" to setresuid.
        let (Some(uid), Some(gid)) = (uid.filter(|u| *u <= MAX_ID), gid.filter(|g| *g <= MAX_ID))
        else {
            continue;
        };
        let hit = match w {
            Wanted::Name(n) => n == name,
            Wanted::Id { uid: u, .. } => *u == uid,
        };
        if hit {
            found = Some(Resolved {
                name: name.into(),
                uid,
                gid,
                home: home.into(),
                groups: Vec::new(),
            });
            break;
        }
    }
    let mut r = match (found, w) {
        (Some(r), _) => r,
        (None, Wanted::Id { uid, gid }) => Resolved {
            name: uid.to_string(),
            uid: *uid,
            gid: gid.unwrap_or(*uid),
            home: "/".into(),
            groups: Vec::new(),
        },
        (None, Wanted::Name(_)) => return None,
    };
    if let Wanted::Id { gid: Some(g), .. } = w {
        r.gid = *g;
    }
    r.groups = group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let gid = f.get(2)?.parse::<u32>().ok()?;
            f.get(3)?.split(',').any(|m| m == r.name).then_some(gid)
        })
        .filter(|g| *g != r.gid)
        .collect();
    r.groups.insert(0, r.gid);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:root\nwheel:x:10:root,alice\nalice:x:1000:\naudio:x:18:alice\n";

    #[test]
    fn parses_arguments() {
        assert_eq!(parse("alice"), Ok(Wanted::Name("alice".into())));
        assert_eq!(
            parse("1000"),
            Ok(Wanted::Id {
                uid: 1000,
                gid: None
            })
        );
        assert_eq!(
            parse("1000:18"),
            Ok(Wanted::Id {
                uid: 1000,
                gid: Some(18)
            })
        );
        assert!(parse("alice:x").is_err());
        assert!(parse("1000:x").is_err());
        assert!(parse("-rf").is_err());
        // (uid_t)-1 means "no change" to setresuid: never an id.
        assert!(parse("4294967295").is_err());
        assert!(parse("65534:4294967295").is_err());
        assert!(parse("4294967296").is_err());
        assert!(parse("99999999999999999999999").is_err());
        assert!(parse("1000:").is_err());
        assert!(parse("+5").is_err());
        assert_eq!(
            parse("4294967294:0"),
            Ok(Wanted::Id {
                uid: 4294967294,
                gid: Some(0)
            })
        );
        assert!(parse("a/b").is_err());
    }

    #[test]
    fn picks_the_guests_account_tool() {
        assert_eq!(
            adduser_kind(b"#! /usr/bin/perl\nuse strict;"),
            Adduser::Debian
        );
        assert_eq!(adduser_kind(b"#!/usr/bin/perl -w\n"), Adduser::Debian);
        assert_eq!(adduser_kind(b"\x7fELF\x02\x01"), Adduser::Busybox);
        assert_eq!(adduser_kind(b"#!/bin/sh\n# perl"), Adduser::Busybox);
        let c = |u, a| add_user_command(u, a, "eve").map(|v| v.join(" "));
        assert_eq!(
            c(true, Some(Adduser::Debian)).as_deref(),
            Some("useradd -m -- eve")
        );
        assert_eq!(
            c(false, Some(Adduser::Busybox)).as_deref(),
            Some("adduser -D eve")
        );
        assert_eq!(
            c(false, Some(Adduser::Debian)).as_deref(),
            Some("adduser --disabled-password --gecos  -- eve")
        );
        assert_eq!(c(false, None), None);
    }

    #[test]
    fn resolves_names_ids_and_groups() {
        let r = resolve(&Wanted::Name("alice".into()), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (1000, 1000, "/home/alice"));
        assert_eq!(r.groups, vec![1000, 10, 18]);
        let r = resolve(
            &Wanted::Id {
                uid: 1000,
                gid: Some(18),
            },
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!((r.name.as_str(), r.gid), ("alice", 18));
        let r = resolve(
            &Wanted::Id {
                uid: 4242,
                gid: None,
            },
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!(
            (r.name.as_str(), r.uid, r.gid, r.home.as_str()),
            ("4242", 4242, 4242, "/")
        );
        assert!(resolve(&Wanted::Name("bob".into()), PASSWD, GROUP).is_none());
    }
}
