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
pub mod index;
pub mod keys;
pub mod package;
pub mod resolve;
pub mod sign;
pub mod version;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use super::{GuestRun, InstallCx, Origin, Populated, Provider, Request};
use crate::error::hinted;
use crate::extract;
use crate::fetch::transport::Transport;
use crate::specs::{Source, Spec};
use crate::store::Store;
use crate::ui::Ui;
use index::{Dep, Package};
use package::Apk;
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
    for (name, pem) in keys_in_tree(root)? {
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
    let apks = download(env, &new, repositories, apk_arch, allow_untrusted)?;
    // Unpack in dependency order.
    let chown = nix::unistd::geteuid().is_root();
    let opts = extract::Options {
        limits: env.limits,
        chown,
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
    run_scripts(env, root, &records)?;
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

/// Downloads (or takes from the cache) and verifies every package, four
/// at a time, with one progress bar. Verified packages are kept in the
/// store's `cache/apk/`, named by their checksum.
fn download(
    env: &Env,
    pkgs: &[&Package],
    repos: &[String],
    apk_arch: &str,
    allow_untrusted: bool,
) -> Result<Vec<Apk>> {
    let cache = env.store.cache_dir().join("apk");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let total: u64 = pkgs.iter().map(|p| p.size).sum();
    let bar = env.ui.bar(Some(total), "packages");
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Apk>>>> =
        Mutex::new((0..pkgs.len()).map(|_| None).collect());
    let fetched = AtomicUsize::new(0);
    let one = |p: &Package| -> Result<Apk> {
        // Name and version become a URL path and a file name in the cache.
        if [&p.name, &p.version]
            .iter()
            .any(|s| s.is_empty() || s.starts_with('.') || s.contains(['/', '\0', '?', '#']))
        {
            bail!(hinted(
                format!(
                    "the index names a package {:?} version {:?}, which is not a safe file name",
                    p.name, p.version
                ),
                "the repository is broken or hostile; nothing was installed",
            ));
        }
        let url = format!("{}/{apk_arch}/{}", repos[p.repo], p.file_name());
        let cached = cache.join(cache_name(p));
        if let Ok(bytes) = std::fs::read(&cached) {
            if let Ok(apk) = package::verify(p, bytes, &url, allow_untrusted) {
                bar.inc(p.size);
                return Ok(apk);
            }
        }
        let body = env.transport.get(&url)?;
        let mut bytes = Vec::with_capacity(p.size as usize);
        let mut r = body
            .reader
            .take(if p.size > 0 { p.size + 1 } else { 1 << 30 });
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = r
                .read(&mut buf)
                .with_context(|| format!("downloading {url}"))?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
            bar.inc(n as u64);
        }
        package::check_size(p, bytes.len())?;
        let apk = package::verify(p, bytes, &url, allow_untrusted)?;
        fetched.fetch_add(1, Ordering::Relaxed);
        let tmp = cache.join(format!(".{}.{}", cache_name(p), std::process::id()));
        if std::fs::write(&tmp, &apk.bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &cached);
        }
        let _ = std::fs::remove_file(&tmp);
        Ok(apk)
    };
    std::thread::scope(|s| {
        for _ in 0..4.min(pkgs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = pkgs.get(i) else { break };
                let r = one(p);
                let failed = r.is_err();
                if let Ok(mut v) = results.lock() {
                    v[i] = Some(r);
                }
                if failed {
                    // Stop handing out work: the install fails anyway.
                    next.store(pkgs.len(), Ordering::Relaxed);
                }
            });
        }
    });
    bar.finish();
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a download thread panicked"))?;
    let mut out = Vec::with_capacity(pkgs.len());
    for (p, r) in pkgs.iter().zip(results) {
        match r {
            Some(Ok(a)) => out.push(a),
            Some(Err(e)) => return Err(e),
            None => bail!("{}-{} was not downloaded", p.name, p.version),
        }
    }
    let n = fetched.load(Ordering::Relaxed);
    env.ui.info(format!(
        "{n} packages downloaded, {} from the cache",
        pkgs.len() - n
    ));
    Ok(out)
}

/// `name-version.<hex SHA-1 of the control stream>.apk`.
fn cache_name(p: &Package) -> String {
    use base64::Engine;
    let hex = p
        .checksum
        .strip_prefix("Q1")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| crate::fetch::stream::hex(&b))
        .unwrap_or_else(|| "unverified".into());
    format!("{}-{}.{hex}.apk", p.name, p.version)
}

/// Runs the packages' scripts in the sandbox after everything is unpacked:
/// every `.pre-install`, then every `.post-install` (in install order,
/// with the version as argument, from `/`, as apk does), then each
/// `.trigger` with the trigger directories that exist. A failing script
/// fails the install, named by package.
fn run_scripts(env: &Env, root: &Path, records: &[db::Installed]) -> Result<()> {
    let mut steps: Vec<(String, &[u8], Vec<String>)> = Vec::new();
    for phase in [".pre-install", ".post-install"] {
        for r in records {
            if let Some((_, body)) = r.scripts.iter().find(|(n, _)| n == phase) {
                steps.push((
                    format!("{}{phase}", r.pkg.name),
                    body,
                    vec![r.pkg.version.clone()],
                ));
            }
        }
    }
    for r in records {
        if let Some((_, body)) = r.scripts.iter().find(|(n, _)| n == ".trigger") {
            let dirs: Vec<String> = r
                .triggers
                .iter()
                .filter(|t| !t.contains('*'))
                .filter(|t| {
                    std::fs::symlink_metadata(root.join(t.trim_start_matches('/')))
                        .is_ok_and(|m| m.is_dir())
                })
                .cloned()
                .collect();
            if !dirs.is_empty() {
                steps.push((format!("{}.trigger", r.pkg.name), body, dirs));
            }
        }
    }
    if steps.is_empty() {
        return Ok(());
    }
    let Some(guest) = env.guest else {
        env.ui.warn(format!(
            "{} install scripts were not run (no sandbox here)",
            steps.len()
        ));
        return Ok(());
    };
    const DIR: &str = "tmp/.xroot-apk";
    let mut driver = String::from(
        "#!/bin/sh\n# Written by xroot: runs the packages' install scripts, then removes itself.\ncd / || exit 1\nexec >&2\n",
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut h = db::header(tar::EntryType::Regular, 0o755, data.len() as u64);
        b.append_data(&mut h, format!("{DIR}/{name}"), data)
            .context("packing install scripts")
    };
    for (i, (name, body, args)) in steps.iter().enumerate() {
        let file = format!("{i:03}-{name}");
        add(&file, body)?;
        let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        driver.push_str(&format!(
            "/{DIR}/{file} {} || {{ s=$?; echo {} $s > /{DIR}/failed; exit 1; }}\n",
            args.join(" "),
            shell_quote(name)
        ));
    }
    add("run", driver.as_bytes())?;
    let mut tmp = db::header(tar::EntryType::Directory, 0o1777, 0);
    let mut tarball = tar::Builder::new(Vec::new());
    tarball
        .append_data(&mut tmp, "tmp", std::io::empty())
        .context("packing install scripts")?;
    let mut tarball = tarball.into_inner().context("packing install scripts")?;
    // Drop the first archive's end marker, then append the scripts.
    tarball.truncate(512);
    tarball.extend(b.into_inner().context("packing install scripts")?);
    let opts = extract::Options {
        limits: env.limits,
        chown: false,
    };
    extract::unpack(tarball.as_slice(), root, &opts, &mut |_| {})
        .map_err(|e| anyhow::anyhow!("placing install scripts in {}: {e}", root.display()))?;
    env.ui.info(format!(
        "running {} install scripts and triggers",
        steps.len()
    ));
    let status = guest(root, &["/bin/sh".into(), format!("/{DIR}/run")]);
    let failed = read_in_tree(root, &format!("{DIR}/failed")).ok().flatten();
    remove_scripts(root);
    let status = status.context("running install scripts")?;
    if status != 0 {
        let what = failed
            .map(|f| {
                let mut w = f.split_whitespace();
                let script = w.next().unwrap_or("?").to_string();
                let code = w.next().unwrap_or("?").to_string();
                format!("{script} exited with status {code}")
            })
            .unwrap_or_else(|| format!("the install scripts failed with status {status}"));
        bail!(hinted(
            format!("install script {what}; nothing was installed"),
            "see its messages above; the package or the emulation of this arch is at fault",
        ));
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Removes `tmp/.xroot-apk` through directory fds, never following a
/// symlink the scripts may have left (best effort).
fn remove_scripts(root: &Path) {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let dir = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(r) = nix::dir::Dir::open(root, dir, Mode::empty()) else {
        return;
    };
    let rfd = std::os::fd::AsRawFd::as_raw_fd(&r);
    let Ok(t) = openat(Some(rfd), "tmp", dir, Mode::empty()) else {
        return;
    };
    // SAFETY: openat just returned this fd; the guard owns and closes it.
    let _tguard = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(t) };
    let Ok(mut d) = nix::dir::Dir::openat(Some(t), ".xroot-apk", dir, Mode::empty()) else {
        return;
    };
    let dfd = std::os::fd::AsRawFd::as_raw_fd(&d);
    let names: Vec<std::ffi::CString> = d
        .iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for n in names {
        let _ = unlinkat(Some(dfd), n.as_c_str(), UnlinkatFlags::NoRemoveDir);
    }
    drop(d);
    let _ = unlinkat(Some(t), ".xroot-apk", UnlinkatFlags::RemoveDir);
}

/// Reads `rel` inside `root` without following any symlink on the way
/// (the tree is what packages made it). `None` if it does not exist.
pub fn read_in_tree(root: &Path, rel: &str) -> Result<Option<String>> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use std::os::fd::{FromRawFd, OwnedFd};
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur: OwnedFd = match nix::fcntl::open(root, flags | OFlag::O_DIRECTORY, Mode::empty()) {
        // SAFETY: open just returned this fd.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => return Err(e).with_context(|| format!("opening {}", root.display())),
    };
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let f = if last {
            flags
        } else {
            flags | OFlag::O_DIRECTORY
        };
        match openat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&cur)),
            *part,
            f,
            Mode::empty(),
        ) {
            // SAFETY: openat just returned this fd.
            Ok(fd) => cur = unsafe { OwnedFd::from_raw_fd(fd) },
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("reading {}/{rel} (not following symlinks)", root.display())
                })
            }
        }
    }
    let mut s = String::new();
    std::fs::File::from(cur)
        .take(64 << 20)
        .read_to_string(&mut s)
        .with_context(|| format!("reading {}/{rel}", root.display()))?;
    Ok(Some(s))
}

/// The public keys in the tree's `/etc/apk/keys`.
fn keys_in_tree(root: &Path) -> Result<Vec<(String, String)>> {
    let dir = root.join("etc/apk/keys");
    let meta = std::fs::symlink_metadata(&dir);
    if !meta.is_ok_and(|m| m.is_dir())
        || std::fs::symlink_metadata(root.join("etc/apk")).is_ok_and(|m| !m.is_dir())
    {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(pem) = read_in_tree(root, &format!("etc/apk/keys/{name}"))
            .ok()
            .flatten()
        {
            out.push((name, pem));
        }
    }
    Ok(out)
}

/// Which of `wanted` (package names, `so:`/`cmd:` names, with optional
/// constraints) no package in `root`'s database provides. Reads only the
/// tree: nothing is fetched when everything is there.
pub fn missing(root: &Path, wanted: &[String]) -> Result<Vec<String>> {
    if !is_apk_tree(root) {
        return Err(hinted(
            format!(
                "cannot add {}: {} is not apk-based (no /lib/apk/db/installed)",
                wanted.join(", "),
                root.display()
            ),
            "--packages installs apk packages; install others with the tree's own package manager via `xroot run`",
        ));
    }
    let installed = index::parse(
        &read_in_tree(root, "lib/apk/db/installed")?.unwrap_or_default(),
        0,
    )
    .with_context(|| format!("reading {}/lib/apk/db/installed", root.display()))?;
    Ok(wanted
        .iter()
        .filter(|w| {
            let Some(d) = Dep::parse(w) else { return true };
            !installed
                .iter()
                .any(|p| p.provides_name(&d.name).is_some_and(|v| d.allows(v)))
        })
        .cloned()
        .collect())
}

/// Whether `root` is an apk system (has `/lib/apk/db/installed`).
pub fn is_apk_tree(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join("lib/apk/db/installed")).is_ok_and(|m| m.is_file())
}
