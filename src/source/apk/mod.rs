//! The apk repository provider: builds a system from apk repositories,
//! natively, what `apk add --root ROOT --initdb --arch ARCH alpine-base`
//! does:
//!
//! 1. fetch each repository's `ARCH/APKINDEX.tar.gz` and check its
//!    signature against the trusted keys ([`sign`]); an unsigned or badly
//!    signed index is refused unless `--allow-untrusted`;
//! 2. resolve the world with apk's rules ([`resolve`]);
//! 3. download the packages in parallel (one progress bar), or take them
//!    from the store's cache, and verify each against the index
//!    ([`package`]);
//! 4. unpack them in dependency order with the safe extractor;
//! 5. write apk's database, world, repositories, arch and keys ([`db`]);
//! 6. run the install scripts and triggers in the sandbox, under the
//!    guest's emulator, after everything is unpacked.
//!
//! [`add`] does 1-6 for `--packages` on a tree that is already an apk
//! system (a release tarball, or a tree in the store), reading its
//! database, repositories and keys.

pub mod db;
mod download;
pub mod index;
pub mod keys;
pub mod package;
pub mod resolve;
mod scripts;
pub mod sign;
mod tree;
pub mod version;

pub use tree::{is_apk_tree, missing, read_in_tree};

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{GuestRun, InstallCx, Origin, Populated, Provider, Request};
use crate::error::hinted;
use crate::extract;
use crate::fetch::transport::Transport;
use crate::specs::{Source, Spec};
use crate::store::Store;
use crate::ui::Ui;
use index::{Dep, Package};
use sign::Key;

/// What to bootstrap, from where, trusting which keys.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// apk's arch name (the folder under each repository).
    pub apk_arch: String,
    /// Repository URLs, as `/etc/apk/repositories` lists them.
    pub repositories: Vec<String>,
    /// The shipped key set to trust (`alpine`, `adelie`).
    pub keyring: String,
    /// Extra trusted public keys (`--key FILE`).
    pub extra_keys: Vec<PathBuf>,
    pub allow_untrusted: bool,
    /// The base system and `--packages`.
    pub world: Vec<String>,
    pub branch: String,
    pub mirror: String,
}

impl Bootstrap {
    pub fn new(spec: &Spec, req: &Request) -> Result<Bootstrap> {
        let mut b = match &spec.source {
            Source::Alpine {
                alpine_arch,
                branch,
            } => {
                let branch = req.branch.clone().unwrap_or_else(|| branch.clone());
                Bootstrap {
                    apk_arch: alpine_arch.clone(),
                    repositories: alpine_repositories(&req.mirror, &branch),
                    keyring: "alpine".into(),
                    extra_keys: Vec::new(),
                    allow_untrusted: false,
                    world: vec!["alpine-base".into()],
                    branch,
                    mirror: req.mirror.clone(),
                }
            }
            Source::Apk {
                apk_arch,
                repositories,
                keyring,
                world,
                ..
            } => Bootstrap {
                apk_arch: apk_arch.clone(),
                repositories: repositories.clone(),
                keyring: keyring.clone(),
                extra_keys: Vec::new(),
                allow_untrusted: false,
                world: world.clone(),
                branch: String::new(),
                mirror: String::new(),
            },
            _ if !req.repos.is_empty() => Bootstrap {
                apk_arch: spec.name.clone(),
                repositories: Vec::new(),
                keyring: String::new(),
                extra_keys: Vec::new(),
                allow_untrusted: false,
                world: Vec::new(),
                branch: String::new(),
                mirror: String::new(),
            },
            _ => {
                return Err(hinted(
                    format!("{} has no apk repositories in its spec", spec.name),
                    format!(
                        "name them: xroot fetch {} --source apk --repo URL [--key FILE] --packages BASE-PACKAGE",
                        spec.name
                    ),
                ))
            }
        };
        if !req.repos.is_empty() {
            b.repositories = req
                .repos
                .iter()
                .map(|r| r.trim_end_matches('/').to_string())
                .collect();
        }
        b.extra_keys = req.keys.clone();
        b.allow_untrusted = req.allow_untrusted;
        for p in &req.packages {
            if !b.world.contains(p) {
                b.world.push(p.clone());
            }
        }
        if b.world.is_empty() {
            return Err(hinted(
                format!("nothing to install into {}", req.id),
                "name the base system with --packages, e.g. --packages alpine-base",
            ));
        }
        Ok(b)
    }
}

/// An Alpine branch's `main` and `community` repositories on `mirror`.
pub fn alpine_repositories(mirror: &str, branch: &str) -> Vec<String> {
    ["main", "community"]
        .iter()
        .map(|r| format!("{mirror}/{branch}/{r}"))
        .collect()
}

impl Provider for Bootstrap {
    fn kind(&self) -> &'static str {
        "apk"
    }

    fn populate(&self, cx: &InstallCx, root: &Path) -> Result<Populated> {
        let keys = sign::trusted(&self.keyring, &self.apk_arch, &self.extra_keys)?;
        if keys.is_empty() && !self.allow_untrusted {
            return Err(hinted(
                format!(
                    "xroot ships no signing key for {}'s repositories ({})",
                    cx.spec.name,
                    self.repositories.join(", ")
                ),
                match &cx.spec.source {
                    Source::Apk { keyring, .. } if keyring == "adelie" => format!(
                        "download Adélie's key from https://distfiles.adelielinux.org/adelie/packages@adelielinux.org.pub, check it, and pass it: xroot fetch {} --key packages@adelielinux.org.pub",
                        cx.spec.name
                    ),
                    _ => "pass the repository's public key with --key FILE".to_string(),
                },
            ));
        }
        let env = Env::of(cx);
        let tree = Tree {
            installed: Vec::new(),
            world: Vec::new(),
        };
        let done = install(
            &env,
            root,
            &self.repositories,
            &self.apk_arch,
            &keys,
            self.allow_untrusted,
            &self.world,
            tree,
        )?;
        let version = done
            .versions
            .iter()
            .find(|(n, _)| Some(n) == self.world.first())
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        Ok(Populated {
            origin: Origin {
                kind: "apk".into(),
                branch: self.branch.clone(),
                version,
                source: self.repositories.first().cloned().unwrap_or_default(),
                mirror: self.mirror.clone(),
                sha256: String::new(),
                repositories: self.repositories.clone(),
                ..Origin::default()
            },
            report: done.report,
            keep: None,
        })
    }
}

/// What an install needs from its surroundings.
pub struct Env<'a> {
    pub store: &'a Store,
    pub transport: &'a Transport,
    pub ui: Ui,
    pub limits: extract::Limits,
    pub guest: Option<GuestRun<'a>>,
}

impl<'a> Env<'a> {
    pub fn of(cx: &'a InstallCx) -> Env<'a> {
        Env {
            store: cx.store,
            transport: cx.transport,
            ui: cx.ui,
            limits: cx.req.limits,
            guest: cx.guest,
        }
    }
}

/// What is in the tree already (empty for a bootstrap).
struct Tree {
    installed: Vec<Package>,
    world: Vec<String>,
}

/// What an install did.
pub struct Done {
    pub report: extract::Report,
    /// (name, version) of every package installed now.
    pub versions: Vec<(String, String)>,
}

/// Adds `packages` to `root`, an apk system: its repositories (unless
/// `repos` replaces them), its keys plus the shipped ring and `extra`
/// keys, its installed database. Nothing already installed is changed.
pub fn add(
    env: &Env,
    root: &Path,
    packages: &[String],
    repos: Option<&[String]>,
    keyring: &str,
    extra: &[PathBuf],
    allow_untrusted: bool,
) -> Result<Done> {
    let read = |rel: &str| read_in_tree(root, rel);
    let apk_arch = read("etc/apk/arch")?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            hinted(
                format!(
                    "{} has no /etc/apk/arch: it is not an apk system",
                    root.display()
                ),
                "--packages needs an apk-based rootfs (Alpine, Adélie, ...)",
            )
        })?;
    let repositories: Vec<String> = match repos {
        Some(r) => r.to_vec(),
        None => read("etc/apk/repositories")?
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
    };
    if repositories.is_empty() {
        bail!(hinted(
            format!("{} lists no apk repositories", root.display()),
            "name one with --repo URL",
        ));
    }
    let mut keys = sign::trusted(keyring, &apk_arch, extra)?;
    for (name, pem) in tree::keys_in_tree(root)? {
        if !keys.iter().any(|k| k.name == name) {
            keys.push(Key { name, pem });
        }
    }
    let mut installed = index::parse(
        &read("lib/apk/db/installed")?.unwrap_or_default(),
        usize::MAX,
    )
    .with_context(|| format!("reading {}/lib/apk/db/installed", root.display()))?;
    for p in &mut installed {
        p.installed = true;
    }
    let world: Vec<String> = read("etc/apk/world")?
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    install(
        env,
        root,
        &repositories,
        &apk_arch,
        &keys,
        allow_untrusted,
        packages,
        Tree { installed, world },
    )
}

/// Steps 1-6 of the module docs, into `root`, on top of `tree`.
#[allow(clippy::too_many_arguments)]
fn install(
    env: &Env,
    root: &Path,
    repositories: &[String],
    apk_arch: &str,
    keys: &[Key],
    allow_untrusted: bool,
    wanted: &[String],
    tree: Tree,
) -> Result<Done> {
    let ui = env.ui;
    let mut pkgs = Vec::new();
    let mut indexes = Vec::new();
    for (i, repo) in repositories.iter().enumerate() {
        let (p, raw) = load_index(env, repo, i, apk_arch, keys, allow_untrusted)?;
        pkgs.extend(p);
        indexes.push((repo.clone(), raw));
    }
    let n_installed = tree.installed.len();
    let mut all = tree.installed;
    all.extend(pkgs);
    let mut world_names = tree.world.clone();
    for w in wanted {
        if !world_names.contains(w) {
            world_names.push(w.clone());
        }
    }
    let world: Vec<Dep> = world_names
        .iter()
        .map(|w| {
            Dep::parse(w).ok_or_else(|| {
                hinted(
                    format!("{w:?} is not a package name"),
                    "name packages as apk does: NAME or NAME=VERSION",
                )
            })
        })
        .collect::<Result<_>>()?;
    let order = resolve::resolve(&all, &world)?;
    let new: Vec<&Package> = order
        .iter()
        .filter(|&&i| i >= n_installed)
        .map(|&i| &all[i])
        .collect();
    if new.is_empty() {
        ui.info("every requested package is installed already");
        return Ok(Done {
            report: extract::Report::default(),
            versions: Vec::new(),
        });
    }
    let total: u64 = new.iter().map(|p| p.size).sum();
    ui.info(format!(
        "{} packages to install ({} MB) from {}",
        new.len(),
        total.div_ceil(1_000_000),
        repositories.join(", ")
    ));
    let apks = download::download(env, &new, repositories, apk_arch, allow_untrusted)?;
    // Unpack in dependency order.
    let chown = nix::unistd::geteuid().is_root();
    let opts = extract::Options {
        limits: env.limits,
        chown,
        ..Default::default()
    };
    let mut report = extract::Report::default();
    let mut records = Vec::new();
    for (i, (p, apk)) in new.iter().zip(&apks).enumerate() {
        ui.info(format!(
            "({}/{}) Installing {} ({})",
            i + 1,
            new.len(),
            p.name,
            p.version
        ));
        let files = package::list_data(apk.data(), env.limits.max_bytes)
            .with_context(|| format!("reading {}-{}", p.name, p.version))?;
        // A meta package (alpine-base) has an empty data tar.
        let r = if files.is_empty() {
            extract::Report::default()
        } else {
            extract::unpack(
                flate2::read::GzDecoder::new(apk.data()),
                root,
                &opts,
                &mut |_| {},
            )
            .map_err(|e| {
                hinted(
                    format!("unpacking {}-{}: {e}", p.name, p.version),
                    "the package is damaged or hostile; nothing was installed",
                )
            })?
        };
        report.entries += r.entries;
        report.bytes += r.bytes;
        report.skipped.extend(r.skipped);
        report.owners.extend(r.owners);
        let triggers = apk
            .info("triggers")
            .flat_map(|t| t.split_whitespace())
            .map(str::to_string)
            .collect();
        records.push(db::Installed {
            pkg: p,
            files,
            scripts: &apk.scripts,
            triggers,
        });
    }
    // The database: what was there, then what is new.
    let old_text = read_in_tree(root, "lib/apk/db/installed")?.unwrap_or_default();
    let mut db_report = {
        let mut text = old_text;
        if !text.is_empty() && !text.ends_with("\n\n") {
            text.push('\n');
        }
        text.push_str(&db::installed_text(&records));
        db::write(
            root,
            &db::Db {
                pkgs: &records,
                installed_text: &text,
                world: &world_names,
                repositories,
                indexes: &indexes,
                apk_arch,
                keys,
            },
            env.limits,
        )?
    };
    report.owners.append(&mut db_report.owners);
    scripts::run_scripts(env, root, &records)?;
    Ok(Done {
        report,
        versions: new
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect(),
    })
}

/// Fetches `{repo}/{arch}/APKINDEX.tar.gz`, checks its signature, parses it.
fn load_index(
    env: &Env,
    repo: &str,
    n: usize,
    apk_arch: &str,
    keys: &[Key],
    allow_untrusted: bool,
) -> Result<(Vec<Package>, Vec<u8>)> {
    let url = format!("{repo}/{apk_arch}/APKINDEX.tar.gz");
    env.ui.info(format!("reading {url}"));
    let bytes = get_bytes(env.transport, &url, 256 << 20).map_err(|e| {
        if e.to_string().contains("HTTP 404") || e.to_string().contains("No such file") {
            hinted(
                e.to_string(),
                format!("{repo} has no {apk_arch} index: check --repo and the arch (an apk repository holds REPO/ARCH/APKINDEX.tar.gz)"),
            )
        } else {
            e
        }
    })?;
    let (first_raw, first, rest) =
        sign::split_gzip(&bytes, 256 << 20).with_context(|| format!("reading {url}"))?;
    let sigs = sign::signatures(&first).unwrap_or_default();
    let (index_gz, index_tar) = if sigs.is_empty() {
        (first_raw, first)
    } else {
        let (raw, dec, _) =
            sign::split_gzip(rest, 256 << 20).with_context(|| format!("reading {url}"))?;
        (raw, dec)
    };
    match sign::verify(&sigs, index_gz, keys) {
        Ok(k) => env.ui.info(format!("{url}: signed by {k}")),
        Err(why) if allow_untrusted => env.ui.warn(format!(
            "UNTRUSTED: {url} is used although {why} (--allow-untrusted): anyone who can change it controls this rootfs"
        )),
        Err(why) => {
            let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
            return Err(hinted(
                format!("refusing {url}: {why}"),
                format!(
                    "trusted keys: {}. Pass the repository's public key with --key FILE; for a local test repository only, --allow-untrusted. Nothing was installed",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ),
            ));
        }
    }
    let mut ar = tar::Archive::new(index_tar.as_slice());
    for e in ar.entries().with_context(|| format!("reading {url}"))? {
        let mut e = e.with_context(|| format!("reading {url}"))?;
        if e.path().is_ok_and(|p| p.as_os_str() == "APKINDEX") {
            let mut text = String::new();
            e.read_to_string(&mut text)
                .with_context(|| format!("reading APKINDEX of {url}"))?;
            let pkgs = index::parse(&text, n)
                .with_context(|| format!("reading APKINDEX of {url}"))?
                .into_iter()
                .filter(|p| p.arch.is_empty() || p.arch == apk_arch || p.arch == "noarch")
                .collect();
            return Ok((pkgs, bytes));
        }
    }
    bail!(hinted(
        format!("{url} holds no APKINDEX"),
        "this is not an apk repository index; check --repo"
    ))
}

/// Reads a whole (small) resource into memory, at most `max` bytes.
fn get_bytes(t: &Transport, url: &str, max: u64) -> Result<Vec<u8>> {
    let body = t.get(url)?;
    let mut buf = Vec::new();
    body.reader
        .take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {url}"))?;
    if buf.len() as u64 > max {
        bail!("{url} is larger than {max} bytes");
    }
    Ok(buf)
}
