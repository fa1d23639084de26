//! `xroot list`: every known arch, how it runs here, what is installed.

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::host;
use crate::qemu::{self, Lookup};
use crate::specs::Source;
use crate::ui::outln;

#[derive(Serialize)]
struct Row {
    arch: String,
    aliases: Vec<String>,
    description: String,
    /// "yes", "compat32" or "no".
    native: &'static str,
    /// Path of a static qemu for this arch, if found.
    qemu: Option<String>,
    /// Where `fetch` gets a rootfs by default ("alpine:BRANCH", a URL, or "none").
    source: String,
    installed: Vec<InstalledRow>,
}

#[derive(Serialize)]
struct InstalledRow {
    id: String,
    /// The provider that made it (`alpine`, `apk`, `tarball`; empty if unknown).
    kind: String,
    /// What it was made from: the tarball URL or path, or the first apk repository.
    from: String,
    version: String,
    branch: String,
    path: String,
    installed_at: String,
    /// A container image's manifest digest (`sha256:…`), else empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    digest: String,
}

pub fn list(ctx: &Ctx, json: bool) -> Result<()> {
    let installed = ctx.store.list()?;
    let mut rows = Vec::new();
    for spec in ctx.catalog.iter() {
        let native = host::native(spec);
        let qemu = match native {
            host::Native::No => match qemu::lookup(&spec.qemu, None) {
                Lookup::Found(p) => Some(p.display().to_string()),
                _ => None,
            },
            _ => None,
        };
        rows.push(Row {
            arch: spec.name.clone(),
            aliases: spec.aliases.clone(),
            description: spec.description.clone(),
            native: super::binfmt::native_word(native),
            qemu,
            source: match &spec.source {
                Source::Alpine { branch, .. } => format!("alpine:{branch}"),
                Source::Tarball { url, .. } => url.clone(),
                Source::Apk { repositories, .. } => {
                    format!(
                        "apk:{}",
                        repositories.first().map(String::as_str).unwrap_or("")
                    )
                }
                Source::Debian { archive, suite, .. } => format!(
                    "{archive}:{}",
                    suite.as_deref().unwrap_or(if archive == "debian" {
                        "bookworm"
                    } else {
                        "unstable"
                    })
                ),
                Source::None { .. } => "none".into(),
            },
            installed: installed
                .iter()
                .filter(|i| i.id.arch == spec.name)
                .map(|i| InstalledRow {
                    id: i.id.dir_name(),
                    kind: i.manifest.kind.clone(),
                    from: i.manifest.source.clone(),
                    version: i.manifest.version.clone(),
                    branch: i.manifest.branch.clone(),
                    path: i.root().display().to_string(),
                    installed_at: i.manifest.installed_at.clone(),
                    digest: i.manifest.digest.clone(),
                })
                .collect(),
        });
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    outln!(
        "{:<12} {:<34} {:<9} {:<8} INSTALLED",
        "ARCH",
        "ALIASES",
        "NATIVE",
        "QEMU"
    );
    for r in &rows {
        let qemu = match (r.native, &r.qemu) {
            ("no", Some(_)) => "found",
            ("no", None) => "missing",
            _ => "-",
        };
        let inst = if r.installed.is_empty() {
            "-".to_string()
        } else {
            r.installed
                .iter()
                .map(|i| {
                    if !i.digest.is_empty() {
                        // An image: the digest its reference resolved to.
                        let short: String = i.digest.chars().take(19).collect();
                        format!("{} ({short})", i.id)
                    } else {
                        let mut what: Vec<&str> = Vec::new();
                        if !i.kind.is_empty() {
                            what.push(&i.kind);
                        }
                        if !i.version.is_empty() {
                            what.push(&i.version);
                        }
                        if !i.from.is_empty() {
                            what.push(&i.from);
                        }
                        if what.is_empty() {
                            i.id.clone()
                        } else {
                            format!("{} ({})", i.id, crate::ui::escape(&what.join(" ")))
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        outln!(
            "{:<12} {:<34} {:<9} {:<8} {}",
            crate::ui::escape(&r.arch),
            crate::ui::escape(&r.aliases.join(",")),
            r.native,
            qemu,
            inst
        );
    }
    outln!("\nstore: {}", ctx.store.home.display());
    Ok(())
}
