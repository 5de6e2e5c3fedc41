//! Embeds the converter SDK's sources and the WIT interface, so that
//! `plugin new` writes a crate that builds from this binary alone (no
//! checkout of this repository, no published SDK). Every file under
//! `plugins/sdk/src` and `wit/` is listed, so a new one cannot be
//! forgotten.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.join("../..");
    let mut files = Vec::new();
    // (directory in this repository, where it goes in a scaffold)
    for (from, to) in [
        ("plugins/sdk/src", "vendor/hermes-converter-sdk/src"),
        ("plugins/abi/src", "vendor/hermes-converter-abi/src"),
        ("wit", "wit"),
    ] {
        let dir = root.join(from);
        println!("cargo:rerun-if-changed={}", dir.display());
        collect(&dir, to, &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// The SDK and WIT files a scaffold holds: (path in the scaffold, contents).\n\
         pub const EMBEDDED: &[(&str, &str)] = &[\n",
    );
    for (to, from) in &files {
        let _ = writeln!(out, "    ({to:?}, include_str!({:?})),", from.display());
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("sdk_files.rs");
    std::fs::write(dest, out).expect("write the embedded file list");
}

/// Every file below `dir` (recursively), as (scaffold path, absolute path).
fn collect(dir: &Path, to: &str, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let dest = format!("{to}/{name}");
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, &dest, files);
        } else {
            let absolute = std::fs::canonicalize(&path).expect("canonical path");
            files.push((dest, absolute));
        }
    }
}
