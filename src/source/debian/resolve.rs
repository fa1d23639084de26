//! Which packages a bootstrap installs, in which order: mmdebstrap's
//! variants as the seed set, then the closure over `Pre-Depends` and
//! `Depends` (not `Recommends`, as `--no-install-recommends`), choosing
//! among alternatives and virtual packages the way apt does in the simple
//! case: an alternative already chosen wins; else the first alternative
//! that a real package satisfies; else a package that `Provides` it.
//! `Conflicts`/`Breaks` are not solved for: the seed sets of a bootstrap
//! do not conflict, and dpkg checks them in the second stage.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use super::packages::{Dep, Package};
use crate::error::hinted;

/// mmdebstrap's variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// `Essential: yes` packages only (dpkg can run; no apt).
    Essential,
    /// Essential, `Priority: required`, and apt.
    #[default]
    Minbase,
    /// Minbase plus `build-essential`.
    Buildd,
}

impl std::str::FromStr for Variant {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Variant> {
        match s {
            "essential" => Ok(Variant::Essential),
            "minbase" | "required" => Ok(Variant::Minbase),
            "buildd" => Ok(Variant::Buildd),
            _ => Err(hinted(
                format!("unknown --variant {s:?}"),
                "use essential, minbase or buildd",
            )),
        }
    }
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Essential => "essential",
            Variant::Minbase => "minbase",
            Variant::Buildd => "buildd",
        }
    }
}

/// The result: indexes into the package list.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Every package to install, dependencies (Pre-Depends first) before
    /// the packages that need them where the graph allows.
    pub order: Vec<usize>,
    /// Which of them are Essential or Priority: required: the second stage
    /// installs these first, as debootstrap does.
    pub required: HashSet<usize>,
}

struct Index<'a> {
    pkgs: &'a [Package],
    /// Name → the best (highest version) package of that name.
    by_name: HashMap<&'a str, usize>,
    /// Virtual name → packages providing it.
    providers: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(pkgs: &'a [Package]) -> Index<'a> {
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut providers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in pkgs.iter().enumerate() {
            by_name
                .entry(&p.name)
                .and_modify(|j| {
                    if p.version > pkgs[*j].version {
                        *j = i
                    }
                })
                .or_insert(i);
            for (v, _) in &p.provides {
                providers.entry(v).or_default().push(i);
            }
        }
        Index {
            pkgs,
            by_name,
            providers,
        }
    }

    /// Does package `i` satisfy `d`, directly or through a `Provides`?
    fn satisfies(&self, i: usize, d: &Dep) -> bool {
        let p = &self.pkgs[i];
        if d.any && p.multi_arch != "allowed" {
            return false;
        }
        if p.name == d.name {
            return d
                .version
                .as_ref()
                .map_or(true, |(r, v)| r.holds(&p.version, v));
        }
        p.provides.iter().any(|(n, pv)| {
            n == &d.name
                && match (&d.version, pv) {
                    (None, _) => true,
                    (Some((r, v)), Some(pv)) => r.holds(pv, v),
                    // An unversioned Provides satisfies no versioned dependency.
                    (Some(_), None) => false,
                }
        })
    }

    /// Candidates for `d`, best first: the real package, then providers
    /// (required/important first, then by name, so the choice is stable).
    fn candidates(&self, d: &Dep) -> Vec<usize> {
        let mut out = Vec::new();
        if let Some(&i) = self.by_name.get(d.name.as_str()) {
            if self.satisfies(i, d) {
                out.push(i);
            }
        }
        let mut prov: Vec<usize> = self
            .providers
            .get(d.name.as_str())
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|&i| self.satisfies(i, d))
                    .collect()
            })
            .unwrap_or_default();
        prov.sort_by_key(|&i| (rank(&self.pkgs[i].priority), &self.pkgs[i].name));
        out.extend(prov);
        out
    }
}

fn rank(priority: &str) -> u8 {
    match priority {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        _ => 3,
    }
}

/// Resolves `variant` plus `extra` package names against `pkgs`.
pub fn resolve(pkgs: &[Package], variant: Variant, extra: &[String]) -> Result<Selection> {
    let ix = Index::new(pkgs);
    let mut seeds: Vec<usize> = Vec::new();
    let mut required = HashSet::new();
    for &i in ix.by_name.values() {
        let p = &pkgs[i];
        let base = p.essential || (variant != Variant::Essential && p.priority == "required");
        if base {
            seeds.push(i);
            required.insert(i);
        }
    }
    seeds.sort_by_key(|&i| &pkgs[i].name);
    let mut wanted: Vec<String> = Vec::new();
    if variant != Variant::Essential {
        wanted.push("apt".into());
    }
    if variant == Variant::Buildd {
        wanted.push("build-essential".into());
    }
    wanted.extend(extra.iter().cloned());
    for name in &wanted {
        let d = Dep {
            name: name.clone(),
            any: false,
            version: None,
        };
        match ix.candidates(&d).first() {
            Some(&i) => seeds.push(i),
            None => {
                return Err(hinted(
                    format!("package {name} is not in the archive's index"),
                    "check the name (Debian package names, e.g. build-essential) and --suite",
                ))
            }
        }
    }
    // Closure, breadth first from the seeds.
    let mut chosen: HashSet<usize> = HashSet::new();
    let mut queue: std::collections::VecDeque<usize> = seeds.iter().copied().collect();
    for &s in &seeds {
        chosen.insert(s);
    }
    // Each name chosen so far → its package (for "already chosen wins").
    while let Some(i) = queue.pop_front() {
        let p = &pkgs[i];
        for group in p.pre_depends.iter().chain(&p.depends) {
            if group
                .iter()
                .any(|d| chosen.iter().any(|&c| ix.satisfies(c, d)))
            {
                continue;
            }
            let pick = group.iter().find_map(|d| ix.candidates(d).first().copied());
            let Some(pick) = pick else {
                let g: Vec<String> = group.iter().map(show).collect();
                return Err(hinted(
                    format!(
                        "{} {} depends on {}, which nothing in the archive satisfies",
                        p.name,
                        p.version,
                        g.join(" | ")
                    ),
                    "the index is incomplete for this architecture, or a --packages name needs another suite",
                ));
            };
            if chosen.insert(pick) {
                queue.push_back(pick);
            }
        }
    }
    Ok(Selection {
        order: order(&ix, &chosen),
        required: required.intersection(&chosen).copied().collect(),
    })
}

fn show(d: &Dep) -> String {
    match &d.version {
        None => d.name.clone(),
        Some((r, v)) => format!("{} ({:?} {v})", d.name, r),
    }
}

/// Dependencies first: a depth-first post-order over Pre-Depends, then
/// Depends (each edge to the chosen package that satisfies it); a cycle
/// (libc6 ↔ libgcc-s1, ...) is cut where it closes. Starting points in
/// name order, so the order is stable.
fn order(ix: &Index<'_>, chosen: &HashSet<usize>) -> Vec<usize> {
    let mut start: Vec<usize> = chosen.iter().copied().collect();
    start.sort_by_key(|&i| &ix.pkgs[i].name);
    let edges = |i: usize| -> Vec<usize> {
        let p = &ix.pkgs[i];
        let mut out = Vec::new();
        for g in p.pre_depends.iter().chain(&p.depends) {
            let mut hit: Vec<usize> = start
                .iter()
                .copied()
                .filter(|&c| c != i && g.iter().any(|d| ix.satisfies(c, d)))
                .collect();
            hit.truncate(1);
            out.extend(hit);
        }
        out
    };
    let mut state: HashMap<usize, u8> = HashMap::new(); // 1 = on stack, 2 = done
    let mut out = Vec::with_capacity(start.len());
    for &s in &start {
        if state.contains_key(&s) {
            continue;
        }
        // Iterative DFS: (node, its edges, next edge).
        let mut stack = vec![(s, edges(s), 0usize)];
        state.insert(s, 1);
        while let Some((n, es, k)) = stack.last_mut() {
            if *k < es.len() {
                let m = es[*k];
                *k += 1;
                if let std::collections::hash_map::Entry::Vacant(v) = state.entry(m) {
                    v.insert(1);
                    let e = edges(m);
                    stack.push((m, e, 0));
                }
            } else {
                let n = *n;
                state.insert(n, 2);
                out.push(n);
                stack.pop();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::packages::parse;
    use super::*;

    fn index() -> Vec<Package> {
        let h = "0".repeat(64);
        let mut t = String::new();
        for (name, extra) in [
            ("libc6", "Priority: required\nDepends: libgcc-s1"),
            ("libgcc-s1", "Priority: required\nDepends: libc6 (>= 2.35)"),
            (
                "dash",
                "Essential: yes\nPriority: required\nPre-Depends: libc6 (>= 2.34)",
            ),
            (
                "mawk",
                "Priority: required\nProvides: awk\nPre-Depends: libc6",
            ),
            ("gawk", "Priority: optional\nProvides: awk"),
            (
                "base-files",
                "Essential: yes\nPriority: required\nPre-Depends: awk",
            ),
            ("apt", "Priority: required\nDepends: libc6, gpgv | gpgv2"),
            ("gpgv", "Priority: important\nDepends: libc6"),
            (
                "build-essential",
                "Priority: optional\nDepends: gcc (>= 4:12), make",
            ),
            ("gcc", "Priority: optional\nDepends: libc6"),
            (
                "make",
                "Priority: optional\nDepends: make-guile | make-plain",
            ),
            ("make-plain", "Priority: optional\nProvides: make-plain"),
            ("hello", "Priority: optional\nDepends: nosuch"),
            ("perl", "Priority: optional\nMulti-Arch: allowed"),
            ("python3", "Priority: optional"),
            (
                "needs-any",
                "Priority: optional\nDepends: perl:any, python3:any | perl",
            ),
        ] {
            let v = if name == "libc6" {
                "2.36-9"
            } else if name == "gcc" {
                "4:12.2.0-14"
            } else {
                "1.0"
            };
            t.push_str(&format!(
                "Package: {name}\nVersion: {v}\nArchitecture: s390x\n{extra}\nFilename: pool/{name}.deb\nSize: 1\nSHA256: {h}\n\n"
            ));
        }
        parse("P", &t, "s390x").unwrap()
    }

    fn names(p: &[Package], s: &Selection) -> Vec<String> {
        s.order.iter().map(|&i| p[i].name.clone()).collect()
    }

    #[test]
    fn minbase_closure_and_order() {
        let p = index();
        let s = resolve(&p, Variant::Minbase, &[]).unwrap();
        let n = names(&p, &s);
        for want in [
            "libc6",
            "libgcc-s1",
            "dash",
            "mawk",
            "base-files",
            "apt",
            "gpgv",
        ] {
            assert!(n.contains(&want.to_string()), "{want} missing from {n:?}");
        }
        // awk is satisfied by the required mawk, not the optional gawk.
        assert!(!n.contains(&"gawk".to_string()));
        // Pre-Depends before dependants.
        let pos = |x: &str| n.iter().position(|y| y == x).unwrap();
        assert!(pos("libc6") < pos("dash") || pos("libgcc-s1") < pos("dash"));
        assert!(pos("mawk") < pos("base-files"));
        assert_eq!(s.required.len(), 5 + 1); // + apt is required here
    }

    #[test]
    fn essential_and_buildd() {
        let p = index();
        let s = resolve(&p, Variant::Essential, &[]).unwrap();
        let n = names(&p, &s);
        assert!(n.contains(&"dash".to_string()) && !n.contains(&"apt".to_string()));
        let s = resolve(&p, Variant::Buildd, &[]).unwrap();
        let n = names(&p, &s);
        // make-guile does not exist: the second alternative is taken.
        for want in ["build-essential", "gcc", "make", "make-plain"] {
            assert!(n.contains(&want.to_string()), "{want} missing from {n:?}");
        }
    }

    #[test]
    fn any_qualifier_needs_multi_arch_allowed() {
        let p = index();
        let s = resolve(&p, Variant::Essential, &["needs-any".into()]).unwrap();
        let n = names(&p, &s);
        // perl:any is satisfied (Multi-Arch: allowed); python3:any is not,
        // so the alternative perl (already chosen) is taken.
        assert!(
            n.contains(&"perl".to_string()) && !n.contains(&"python3".to_string()),
            "{n:?}"
        );
    }

    #[test]
    fn unsatisfiable_and_unknown_are_errors() {
        let p = index();
        let e = resolve(&p, Variant::Minbase, &["hello".into()]).unwrap_err();
        assert!(e.to_string().contains("hello 1.0 depends on nosuch"), "{e}");
        let e = resolve(&p, Variant::Minbase, &["nope".into()]).unwrap_err();
        assert!(e.to_string().contains("package nope is not"), "{e}");
    }
}
