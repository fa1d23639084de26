//! Embeds every `rootfs-specs/*.toml` into the binary, so an installed
//! `xroot` needs no data files next to it and a spec change is a rebuild.
//!
//! Each spec is embedded twice: as written (TOML, for the tests that check
//! the files themselves) and converted to JSON, which is what `xroot`
//! parses at start: TOML parsing of all specs cost ~0.3 ms of every launch,
//! JSON a small fraction of it. A spec that is not valid TOML fails the build.

use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rootfs-specs");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = String::from("/// (file name, contents) of every spec in rootfs-specs/.\n");
    out.push_str("pub const EMBEDDED_SPECS: &[(&str, &str)] = &[\n");
    let mut json =
        String::from("/// The same specs as JSON, parsed at run time (faster than TOML).\n");
    json.push_str("pub const EMBEDDED_SPECS_JSON: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            f.display().to_string()
        ));
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        let value: toml::Value = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", f.display()));
        let as_json = serde_json::to_string(&value)
            .unwrap_or_else(|e| panic!("converting {}: {e}", f.display()));
        json.push_str(&format!("    ({name:?}, {as_json:?}),\n"));
    }
    out.push_str("];\n");
    json.push_str("];\n");
    out.push_str(&json);
    let dest = Path::new(&env::var("OUT_DIR").expect("OUT_DIR set by cargo")).join("specs.rs");
    fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}
