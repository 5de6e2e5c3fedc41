//! Builds every guest component for `wasm32-wasip2` and writes their paths
//! into `$OUT_DIR/artifacts.rs` as constants, so `cargo test` on a fresh
//! clone needs no manual step.
//!
//! The nested `cargo build` uses its own target directory under `OUT_DIR`:
//! the outer cargo holds the lock on the workspace's `target/` while build
//! scripts run, and sharing it would deadlock. The environment cargo gives a
//! build script (flags, wrappers, package metadata) is removed first so it
//! does not leak into the guests' build, as wasmtime's
//! `crates/test-programs/artifacts/build.rs` does.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `(constant name, package, wasm file stem)` for every guest.
const GUESTS: &[(&str, &str, &str)] = &[
    ("DISCORD", "hermes-plugin-discord", "hermes_plugin_discord"),
    ("TWILIO", "hermes-plugin-twilio", "hermes_plugin_twilio"),
    ("SLACK", "hermes-plugin-slack", "hermes_plugin_slack"),
    (
        "HOSTILE",
        "hermes-test-guest-hostile",
        "hermes_test_guest_hostile",
    ),
    (
        "SQUATTER",
        "hermes-test-guest-squatter",
        "hermes_test_guest_squatter",
    ),
    (
        "INCOMPATIBLE",
        "hermes-test-guest-incompatible",
        "hermes_test_guest_incompatible",
    ),
    (
        "DISCORD_NEXT",
        "hermes-test-guest-discord-next",
        "hermes_test_guest_discord_next",
    ),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("plugins/artifacts lives two levels below the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("guests");

    for watched in ["plugins", "wit", "Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET);
    for (_, package, _) in GUESTS {
        cmd.arg("-p").arg(package);
    }
    scrub_env(&mut cmd);
    cmd.env("CARGO_TARGET_DIR", &target_dir)
        // Small, fast-to-compile components: no DWARF (the name section stays,
        // so traps still name functions).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");

    eprintln!("running: {cmd:?}");
    let status = match cmd.status() {
        Ok(status) => status,
        Err(e) => panic!("hermes-plugin-artifacts: could not run cargo to build the guests: {e}"),
    };
    if !status.success() {
        if !target_installed() {
            panic!(
                "hermes-plugin-artifacts: the {TARGET} target is not installed; \
                 run `rustup target add {TARGET}` and build again"
            );
        }
        panic!(
            "hermes-plugin-artifacts: building the guest components for {TARGET} failed (see the cargo output above)"
        );
    }

    let mut code = String::new();
    for (name, package, stem) in GUESTS {
        let path = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{stem}.wasm"));
        assert!(
            path.exists(),
            "hermes-plugin-artifacts: {} was not produced",
            path.display()
        );
        let _ = writeln!(code, "/// The `{package}` component.");
        let _ = writeln!(
            code,
            "pub const {name}: &str = {:?};",
            path.display().to_string()
        );
    }
    let _ = writeln!(
        code,
        "/// Every guest component, as `(constant name, path)`."
    );
    let _ = writeln!(code, "pub const ALL: &[(&str, &str)] = &[");
    for (name, _, _) in GUESTS {
        let _ = writeln!(code, "    ({name:?}, {name}),");
    }
    let _ = writeln!(code, "];");
    std::fs::write(out_dir.join("artifacts.rs"), code).expect("write artifacts.rs");
}

/// Remove what cargo sets for this build script and must not reach the
/// nested build: flags for the host target, rustc wrappers (clippy-driver
/// under `cargo clippy`), and per-package metadata. The jobserver
/// (`CARGO_MAKEFLAGS`) is kept so the nested build shares the outer job slots.
fn scrub_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leak = key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
            || key == "RUSTC_WRAPPER"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "CLIPPY_ARGS"
            || key == "TARGET"
            || key == "HOST"
            || key == "PROFILE"
            || key == "OPT_LEVEL"
            || key == "DEBUG"
            || key == "NUM_JOBS"
            || key == "OUT_DIR"
            || key.starts_with("__CARGO")
            || (key.starts_with("CARGO_")
                && key != "CARGO_HOME"
                && key != "CARGO_MAKEFLAGS"
                && !key.starts_with("CARGO_NET_")
                && !key.starts_with("CARGO_HTTP_")
                && !key.starts_with("CARGO_REGISTRIES_"));
        if leak {
            cmd.env_remove(key);
        }
    }
}

fn target_installed() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: we cannot tell; let the cargo error speak.
        return true;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
}
