//! Picks the packages to install for a world, with apk's rules: names and
//! `provides` (including `so:` and `cmd:` names), version constraints,
//! provider priority, conflicts (`!name`) and `install_if`. The result is
//! in install order (dependencies first); a dependency loop is an error.
//!
//! This is a greedy resolver, not apk's full solver: for each name it takes
//! a package already chosen if one fits, else the best candidate (the
//! package of that very name, then the highest `k:` priority, then the
//! newest version, then the first repository), and never backtracks. That
//! is what a base system and the usual `--packages` need; a request it
//! cannot satisfy this way is reported, naming the package and the
//! dependency.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;

use super::index::{Dep, Package};
use super::version;
use crate::error::hinted;

/// Resolves `world` against `pkgs` (every repository's packages). Returns
/// indexes into `pkgs`, dependencies before dependents.
pub fn resolve(pkgs: &[Package], world: &[Dep]) -> Result<Vec<usize>> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in pkgs.iter().enumerate() {
        by_name.entry(&p.name).or_default().push(i);
        for (n, _) in &p.provides {
            by_name.entry(n).or_default().push(i);
        }
    }
    let mut r = Resolver {
        pkgs,
        by_name,
        chosen: BTreeMap::new(),
        order: Vec::new(),
    };
    for d in world {
        if d.conflict {
            continue;
        }
        r.want(d, None, &mut Vec::new())?;
    }
    // install_if: a package comes along once everything it names is there.
    loop {
        let mut added = false;
        for p in pkgs {
            if p.install_if.is_empty() || r.chosen_name(&p.name).is_some() {
                continue;
            }
            if p.install_if.iter().all(|d| r.satisfied(d)) {
                let dep = Dep {
                    name: p.name.clone(),
                    constraint: Some((EQ, p.version.clone())),
                    conflict: false,
                };
                r.want(&dep, None, &mut Vec::new())?;
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    r.check_conflicts(world)?;
    Ok(r.order)
}

const EQ: version::Op = version::Op {
    less: false,
    equal: true,
    greater: false,
    fuzzy: false,
};

struct Resolver<'a> {
    pkgs: &'a [Package],
    by_name: HashMap<&'a str, Vec<usize>>,
    /// package name → index, for every chosen package.
    chosen: BTreeMap<&'a str, usize>,
    order: Vec<usize>,
}

impl<'a> Resolver<'a> {
    fn chosen_name(&self, name: &str) -> Option<usize> {
        self.chosen.get(name).copied()
    }

    /// A chosen package satisfying `d`, if any.
    fn satisfied(&self, d: &Dep) -> bool {
        self.chosen.values().any(|&i| {
            self.pkgs[i]
                .provides_name(&d.name)
                .is_some_and(|v| d.allows(v))
        })
    }

    /// Chooses a package for `d` (and, first, its dependencies). `from`
    /// is the package that needs it, for messages; `path` the chain of
    /// packages being resolved, to find loops.
    fn want(&mut self, d: &Dep, from: Option<usize>, path: &mut Vec<usize>) -> Result<()> {
        // Already there?
        if let Some(&i) = self.chosen.values().find(|&&i| {
            self.pkgs[i]
                .provides_name(&d.name)
                .is_some_and(|v| d.allows(v))
        }) {
            if let Some(pos) = path.iter().position(|&p| p == i) {
                let mut cycle: Vec<String> = path[pos..]
                    .iter()
                    .map(|&p| self.pkgs[p].name.clone())
                    .collect();
                cycle.push(self.pkgs[i].name.clone());
                return Err(hinted(
                    format!("dependency loop: {}", cycle.join(" -> ")),
                    "the repository's packages depend on each other in a circle; nothing was installed. Report it to the repository's maintainers",
                ));
            }
            return Ok(());
        }
        let cands: Vec<usize> = self
            .by_name
            .get(d.name.as_str())
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|&i| {
                        self.pkgs[i]
                            .provides_name(&d.name)
                            .is_some_and(|v| d.allows(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(best) = cands.into_iter().max_by(|&a, &b| self.rank(a, b, &d.name)) else {
            return Err(self.missing(d, from));
        };
        let p = &self.pkgs[best];
        if let Some(&other) = self.chosen.get(p.name.as_str()) {
            return Err(hinted(
                format!(
                    "{} needs {d}, but {}-{} is already chosen",
                    from.map(|f| self.pkgs[f].name.as_str()).unwrap_or("the world"),
                    self.pkgs[other].name,
                    self.pkgs[other].version
                ),
                "two packages need different versions of it; pick versions that agree with --packages NAME=VERSION",
            ));
        }
        self.chosen.insert(&p.name, best);
        path.push(best);
        for dep in &p.depends {
            if dep.conflict {
                continue;
            }
            self.want(dep, Some(best), path)?;
        }
        path.pop();
        self.order.push(best);
        Ok(())
    }

    /// Candidate order: the package of that name, then priority, newest, first repository.
    fn rank(&self, a: usize, b: usize, name: &str) -> std::cmp::Ordering {
        let (pa, pb) = (&self.pkgs[a], &self.pkgs[b]);
        (pa.name == name)
            .cmp(&(pb.name == name))
            .then(pa.installed.cmp(&pb.installed))
            .then(pa.priority.cmp(&pb.priority))
            .then_with(|| version::compare(&pa.version, &pb.version))
            .then(pb.repo.cmp(&pa.repo))
    }

    fn missing(&self, d: &Dep, from: Option<usize>) -> anyhow::Error {
        let who = match from {
            Some(f) => format!("{}-{}", self.pkgs[f].name, self.pkgs[f].version),
            None => "the requested world".to_string(),
        };
        let known: Vec<String> = self
            .by_name
            .get(d.name.as_str())
            .into_iter()
            .flatten()
            .map(|&i| format!("{}-{}", self.pkgs[i].name, self.pkgs[i].version))
            .collect();
        if known.is_empty() {
            hinted(
                format!("{who} depends on {d}, which no repository provides"),
                "check the package name and the repositories (--repo); nothing was installed",
            )
        } else {
            hinted(
                format!(
                    "{who} depends on {d}, but the repositories only have {}",
                    known.join(", ")
                ),
                "the repositories are inconsistent or a version constraint cannot be met; nothing was installed",
            )
        }
    }

    /// `!name` in a chosen package (or the world) against what was chosen.
    fn check_conflicts(&self, world: &[Dep]) -> Result<()> {
        let mut rules: Vec<(String, &Dep)> = world
            .iter()
            .filter(|d| d.conflict)
            .map(|d| ("the requested world".to_string(), d))
            .collect();
        for &i in &self.order {
            let p = &self.pkgs[i];
            for d in p.depends.iter().filter(|d| d.conflict) {
                rules.push((format!("{}-{}", p.name, p.version), d));
            }
        }
        for (who, d) in rules {
            for &i in &self.order {
                let p = &self.pkgs[i];
                if format!("{}-{}", p.name, p.version) == who {
                    continue;
                }
                if p.provides_name(&d.name).is_some_and(|v| d.allows(v)) {
                    return Err(hinted(
                        format!("{who} conflicts with {}-{} ({d})", p.name, p.version),
                        "these packages cannot be installed together; leave one out. Nothing was installed",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::apk::index::parse;

    fn names(pkgs: &[Package], order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| pkgs[i].name.clone()).collect()
    }

    fn world(s: &str) -> Vec<Dep> {
        s.split_whitespace().filter_map(Dep::parse).collect()
    }

    #[test]
    fn provides_so_cmd_versions_and_order() {
        let idx = "P:musl\nV:1.2.5-r0\np:so:libc.musl-x86_64.so.1=1\n\n\
                   P:busybox\nV:1.36.1-r29\nD:so:libc.musl-x86_64.so.1\np:cmd:busybox\n\n\
                   P:busybox-binsh\nV:1.36.1-r29\nD:busybox=1.36.1-r29\np:/bin/sh cmd:sh=1.36.1-r29\nk:100\n\n\
                   P:bash-binsh\nV:5.2-r0\np:/bin/sh cmd:sh=5.2-r0\nk:0\n\n\
                   P:base\nV:1\nD:/bin/sh musl>=1.2 cmd:busybox\n\n\
                   P:old\nV:1.0-r0\n\nP:old\nV:1.1-r0\n";
        let p = parse(idx, 0).unwrap();
        let o = resolve(&p, &world("base old")).unwrap();
        assert_eq!(
            names(&p, &o),
            ["musl", "busybox", "busybox-binsh", "base", "old"]
        );
        assert_eq!(p[o[4]].version, "1.1-r0");
        let o = resolve(&p, &world("old<1.1")).unwrap();
        assert_eq!(p[o[0]].version, "1.0-r0");
    }

    #[test]
    fn install_if_and_conflicts() {
        let idx = "P:a\nV:1\n\nP:b\nV:1\n\nP:a-b\nV:1\ni:a b\n\nP:c\nV:1\nD:!a\n";
        let p = parse(idx, 0).unwrap();
        let o = resolve(&p, &world("a b")).unwrap();
        assert_eq!(names(&p, &o), ["a", "b", "a-b"]);
        let o = resolve(&p, &world("a")).unwrap();
        assert_eq!(names(&p, &o), ["a"]);
        let e = resolve(&p, &world("a c")).unwrap_err().to_string();
        assert!(e.contains("c-1 conflicts with a-1"), "{e}");
    }

    #[test]
    fn missing_and_loops_are_named() {
        let idx = "P:a\nV:1\nD:b\n\nP:b\nV:1\nD:nothere>=2\n\nP:x\nV:1\nD:y\n\nP:y\nV:1\nD:x\n";
        let p = parse(idx, 0).unwrap();
        let e = resolve(&p, &world("a")).unwrap_err().to_string();
        assert!(
            e.contains("b-1 depends on nothere>=2, which no repository provides"),
            "{e}"
        );
        let e = resolve(&p, &world("x")).unwrap_err().to_string();
        assert!(e.contains("dependency loop: x -> y -> x"), "{e}");
        let e = resolve(&p, &world("zzz")).unwrap_err().to_string();
        assert!(e.contains("the requested world depends on zzz"), "{e}");
    }
}
