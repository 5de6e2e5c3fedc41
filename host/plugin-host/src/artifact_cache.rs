//! The on-disk compiled-artifact cache, the only module allowed `unsafe`.
//!
//! Compiling a component with cranelift takes tens of milliseconds per
//! plugin; loading a precompiled artifact takes tens of microseconds. Entries
//! are keyed by `sha256(component bytes)` and a digest of the engine's
//! [`Engine::precompile_compatibility_hash`], so a different wasmtime or a
//! different configuration never even looks at an old entry. Each entry is
//! `sha256(payload) ++ payload`: a truncated or corrupt file fails the
//! checksum and is recompiled. A stale or corrupt entry is never an error,
//! only a recompile.

#![allow(unsafe_code)]

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled artifacts live, for one engine configuration.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

/// How a component was obtained (for the load report and the bench).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a cache entry.
    Hit,
    /// Compiled (no entry, or an unusable one) and stored.
    Compiled,
    /// Compiled; no cache directory is configured.
    Uncached,
}

/// A `Hasher` that feeds SHA-256, so the engine's compatibility hash becomes
/// a stable digest rather than a 64-bit `DefaultHasher` value.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        // Unused: the digest is taken from the inner state.
        0
    }
}

/// Hex digest of the engine's compatibility hash.
pub(crate) fn engine_key(engine: &Engine) -> String {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..16])
}

impl ArtifactCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Self {
        Self {
            dir,
            engine_key: engine_key(engine),
        }
    }

    fn entry_path(&self, content_sha256: &str) -> PathBuf {
        self.dir.join(format!("{content_sha256}-{}.cwasm", self.engine_key))
    }

    /// The component for `bytes` (whose digest is `content_sha256`), from the
    /// cache when a valid entry exists, else compiled and stored.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content_sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(content_sha256);
        if let Some(component) = read_entry(engine, &path) {
            return Ok((component, CacheOutcome::Hit));
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = write_entry(&self.dir, &path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled-artifact cache entry");
        }
        Ok((component, CacheOutcome::Compiled))
    }
}

fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let (sum, payload) = data.split_at_checked(32)?;
    if Sha256::digest(payload).as_slice() != sum {
        tracing::warn!(path = %path.display(), "corrupt compiled-artifact cache entry; recompiling");
        return None;
    }
    // SAFETY: `Component::deserialize` requires bytes produced by
    // `Component::serialize` from a trusted source, because it maps them as
    // executable code without validating it. These bytes are exactly what
    // `write_entry` below wrote (the SHA-256 prefix matched, so the file is
    // neither truncated nor altered by accident) into a directory only this
    // process's operator controls, under a name that includes the engine's
    // compatibility hash; wasmtime additionally checks its own header and
    // engine settings and returns an error (handled as a recompile) on any
    // mismatch.
    match unsafe { Component::deserialize(engine, payload) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "stale compiled-artifact cache entry; recompiling");
            None
        }
    }
}

fn write_entry(dir: &Path, path: &Path, component: &Component) -> std::io::Result<()> {
    let payload = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    std::fs::create_dir_all(dir)?;
    let mut data = Vec::with_capacity(32 + payload.len());
    data.extend_from_slice(&Sha256::digest(&payload));
    data.extend_from_slice(&payload);
    // Write then rename, so a concurrent reader never sees half an entry.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)
}
