//! Paths of the guest components, built for `wasm32-wasip2` by this crate's
//! build script (first-party converters and the sandbox test guests).
//!
//! ```ignore
//! let bytes = std::fs::read(hermes_plugin_artifacts::DISCORD)?;
//! ```

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
