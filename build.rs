//! Compiles every `rootfs-specs/*.toml` into the binary, so an installed
//! `xroot` needs no data files next to it and a spec change is a rebuild.
//!
//! The specs are parsed and checked here, with the same types and checks
//! xroot applies to user specs (`src/specs/schema.rs`, included below), and
//! written out as Rust code that builds the `Spec` values: a launch then
//! parses nothing (parsing all specs as JSON cost ~0.1 ms of each launch,
//! as TOML ~0.3 ms). A spec that does not parse or check fails the build.
//! The TOML texts are embedded too, for the tests that check the files.

use std::{env, fs, path::Path};

#[allow(dead_code)]
#[path = "src/specs/schema.rs"]
mod schema;

use schema::{Magic, Source, Spec};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rootfs-specs");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed=src/specs/schema.rs");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = String::from("/// (file name, contents) of every spec in rootfs-specs/.\n");
    out.push_str("pub const EMBEDDED_SPECS: &[(&str, &str)] = &[\n");
    let mut specs = Vec::new();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            f.display().to_string()
        ));
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        let spec: Spec =
            toml::from_str(&text).unwrap_or_else(|e| panic!("rootfs-specs/{name} is invalid: {e}"));
        schema::check_file(name, &spec).unwrap_or_else(|e| panic!("{e}"));
        specs.push(spec);
    }
    schema::check_names(&specs).unwrap_or_else(|e| panic!("rootfs-specs: {e}"));
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    out.push_str("];\n\n/// The same specs, parsed and checked at build time, sorted by name.\n");
    out.push_str("pub fn builtin_specs() -> Vec<Spec> {\n    vec![\n");
    for s in &specs {
        out.push_str(&format!("        {},\n", spec_expr(s)));
    }
    out.push_str("    ]\n}\n");
    let dest = Path::new(&env::var("OUT_DIR").expect("OUT_DIR set by cargo")).join("specs.rs");
    fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}

/// A Rust expression that builds `s` (string literals via `{:?}`, which
/// escapes as Rust does).
fn spec_expr(s: &Spec) -> String {
    let aliases: Vec<String> = s.aliases.iter().map(|a| format!("{a:?}.into()")).collect();
    format!(
        "Spec {{ name: {:?}.into(), aliases: vec![{}], description: {:?}.into(), uname: {:?}.into(), qemu: {:?}.into(), binfmt: {}, source: {}, oci_platform: {} }}",
        s.name,
        aliases.join(", "),
        s.description,
        s.uname,
        s.qemu,
        magic_expr(&s.binfmt),
        source_expr(&s.source),
        match &s.oci_platform {
            Some(p) => format!("Some({p:?}.into())"),
            None => "None".into(),
        }
    )
}

fn magic_expr(m: &Magic) -> String {
    format!(
        "Magic {{ magic: vec!{:?}, mask: vec!{:?} }}",
        m.magic, m.mask
    )
}

fn strs(v: &[String]) -> String {
    v.iter()
        .map(|x| format!("{x:?}.into()"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn source_expr(s: &Source) -> String {
    let opt = |o: &Option<String>| match o {
        Some(v) => format!("Some({v:?}.into())"),
        None => "None".into(),
    };
    match s {
        Source::Alpine {
            alpine_arch,
            branch,
        } => format!(
            "Source::Alpine {{ alpine_arch: {alpine_arch:?}.into(), branch: {branch:?}.into() }}"
        ),
        Source::Tarball {
            url,
            sha256,
            sha256_url,
            version,
        } => format!(
            "Source::Tarball {{ url: {url:?}.into(), sha256: {}, sha256_url: {}, version: {} }}",
            opt(sha256),
            opt(sha256_url),
            opt(version)
        ),
        Source::Apk {
            apk_arch,
            repositories,
            keyring,
            world,
            version,
        } => format!(
            "Source::Apk {{ apk_arch: {apk_arch:?}.into(), repositories: vec![{}], keyring: {keyring:?}.into(), world: vec![{}], version: {} }}",
            strs(repositories),
            strs(world),
            opt(version)
        ),
        Source::Debian {
            archive,
            debian_arch,
            suite,
        } => format!(
            "Source::Debian {{ archive: {archive:?}.into(), debian_arch: {debian_arch:?}.into(), suite: {} }}",
            opt(suite)
        ),
        Source::None { hint } => format!("Source::None {{ hint: {hint:?}.into() }}"),
    }
}
