//! The on-disk compiled-artifact cache, the only module allowed `unsafe`.
//!
//! Compiling a component with cranelift takes tens of milliseconds per
//! plugin; loading a precompiled artifact takes tens of microseconds. But a
//! cache entry is native code that is mapped executable without validation,
//! so whoever can write the cache can run code in the host. Hence:
//!
//! - the directory is created `0700` and used only while it is owned by the
//!   effective uid and not writable by group or others; otherwise every load
//!   compiles (with a warning);
//! - each entry is bound to its component: its name and its header carry
//!   `sha256(component bytes)` and a digest of the engine's
//!   [`Engine::precompile_compatibility_hash`], and the header is checked
//!   against the bytes being loaded;
//! - header and payload are authenticated with HMAC-SHA-256 under a random
//!   per-install key kept `0600` in the directory (created with
//!   `create_new`), so a planted or altered entry — even with a matching
//!   plain checksum — fails and is recompiled;
//! - entries are written to a `create_new` temporary file with a random
//!   suffix and renamed into place.
//!
//! A stale, corrupt or forged entry is never an error, only a recompile.

#![allow(unsafe_code)]

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled artifacts live, for one engine configuration.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
    mac_key: [u8; 32],
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

/// The per-install MAC key's file name.
const KEY_FILE: &str = "cache-key";

/// The first bytes of every entry (format version 2: header + MAC).
const MAGIC: &[u8; 8] = b"HRMSCW02";

/// Why the cache directory cannot be trusted.
fn untrusted(dir: &Path, why: &str) -> Option<ArtifactCache> {
    tracing::warn!(dir = %dir.display(), "compiled-artifact cache not used ({why}); plugins are compiled on every load");
    None
}

/// The effective uid.
fn effective_uid() -> Option<u32> {
    Some(rustix::process::geteuid().as_raw())
}

/// The largest cache entry read (a compiled converter is a few MiB): a
/// planted huge file is not read into memory.
const MAX_ENTRY_BYTES: u64 = 256 << 20;

/// Reads a cache entry: never through a symlink (`O_NOFOLLOW`), only a
/// regular file, at most [`MAX_ENTRY_BYTES`].
fn read_entry_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_ENTRY_BYTES {
        return Err(std::io::Error::other("not a regular file of a sane size"));
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_ENTRY_BYTES).read_to_end(&mut data)?;
    Ok(data)
}

/// Owned by us and not writable by group or others.
fn private(meta: &std::fs::Metadata, euid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.uid() == euid && meta.mode() & 0o022 == 0
}

fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty())
        .map_err(std::io::Error::from)?;
    Ok(buf)
}

/// Create `path` (which must not exist) with mode 0600 and `data`.
fn create_new_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The install's MAC key: read it, or create it when absent.
fn mac_key(dir: &Path, euid: u32) -> Result<[u8; 32], String> {
    let path = dir.join(KEY_FILE);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => {
            if !meta.is_file() || !private(&meta, euid) || {
                use std::os::unix::fs::MetadataExt;
                meta.mode() & 0o077 != 0
            } {
                return Err(format!("{KEY_FILE} is not a private file of this user"));
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{KEY_FILE}: {e}"))?;
            bytes
                .try_into()
                .map_err(|_| format!("{KEY_FILE} is not 32 bytes"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes::<32>().map_err(|e| format!("no randomness: {e}"))?;
            match create_new_private(&path, &key) {
                Ok(()) => Ok(key),
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => mac_key(dir, euid),
                Err(e) => Err(format!("cannot create {KEY_FILE}: {e}")),
            }
        }
        Err(e) => Err(format!("{KEY_FILE}: {e}")),
    }
}

/// HMAC-SHA-256 over the concatenation of `parts`, ready to finish or verify.
fn mac_of(key: &[u8; 32], parts: &[&[u8]]) -> Hmac<Sha256> {
    // A 32-byte key is always accepted (HMAC takes any length).
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for p in parts {
        mac.update(p);
    }
    mac
}

/// HMAC-SHA-256 (RFC 2104) over the concatenation of `parts`.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    mac_of(key, parts).finalize().into_bytes().into()
}

impl ArtifactCache {
    /// The cache in `dir` (created `0700` if absent), or `None`, with a
    /// warning, when the directory or its key cannot be trusted.
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Option<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let Some(euid) = effective_uid() else {
            return untrusted(&dir, "the effective uid is unknown");
        };
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            return untrusted(&dir, &format!("cannot create it: {e}"));
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() && private(&meta, euid) => {}
            Ok(_) => {
                return untrusted(
                    &dir,
                    "not a directory owned by this user and writable only by it",
                );
            }
            Err(e) => return untrusted(&dir, &e.to_string()),
        }
        match mac_key(&dir, euid) {
            Ok(mac_key) => Some(Self {
                dir,
                engine_key: engine_key(engine),
                mac_key,
            }),
            Err(why) => untrusted(&dir, &why),
        }
    }

    fn entry_key(&self, content_sha256: &str) -> String {
        format!("{content_sha256}-{}", self.engine_key)
    }

    fn entry_path(&self, content_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", self.entry_key(content_sha256)))
    }

    /// The component for `bytes` (whose digest is `content_sha256`), from the
    /// cache when a valid entry exists, else compiled and stored.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content_sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        // The digest is recomputed here rather than trusted from the caller:
        // it is what binds the entry to these bytes.
        let actual = hex::encode(Sha256::digest(bytes));
        let content_sha256 = if actual == content_sha256 {
            content_sha256
        } else {
            &actual
        };
        let key = self.entry_key(content_sha256);
        let path = self.entry_path(content_sha256);
        if let Some(component) = self.read_entry(engine, &path, &key) {
            return Ok((component, CacheOutcome::Hit));
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.write_entry(&path, &key, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled-artifact cache entry");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    /// `MAGIC ++ u16 key length ++ key`.
    fn header(key: &str) -> Vec<u8> {
        let mut h = Vec::with_capacity(MAGIC.len() + 2 + key.len());
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes());
        h.extend_from_slice(key.as_bytes());
        h
    }

    fn read_entry(&self, engine: &Engine, path: &Path, key: &str) -> Option<Component> {
        let data = match read_entry_file(path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compiled-artifact cache entry not read; recompiling");
                return None;
            }
        };
        let header = Self::header(key);
        let Some(rest) = data.strip_prefix(header.as_slice()) else {
            tracing::warn!(path = %path.display(), "compiled-artifact cache entry for other bytes or of an old format; recompiling");
            return None;
        };
        let (mac, payload) = rest.split_at_checked(32)?;
        // verify_slice compares in constant time: timing reveals no prefix.
        if mac_of(&self.mac_key, &[&header, payload])
            .verify_slice(mac)
            .is_err()
        {
            tracing::warn!(path = %path.display(), "compiled-artifact cache entry fails authentication; recompiling");
            return None;
        }
        // SAFETY: `Component::deserialize` requires bytes produced by
        // `Component::serialize` from a trusted source, because it maps them
        // as executable code without validating it. These bytes carry a
        // valid HMAC under this install's secret key (readable only by this
        // user, in a directory only this user can write), over a header
        // naming the SHA-256 of exactly the component being loaded and the
        // engine's compatibility hash: only `write_entry` below, for this
        // component, can have produced them. wasmtime additionally checks
        // its own header and engine settings and returns an error (handled
        // as a recompile) on any mismatch.
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "stale compiled-artifact cache entry; recompiling");
                None
            }
        }
    }

    fn write_entry(&self, path: &Path, key: &str, component: &Component) -> std::io::Result<()> {
        let payload = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let header = Self::header(key);
        let mac = hmac(&self.mac_key, &[&header, &payload]);
        let mut data = Vec::with_capacity(header.len() + 32 + payload.len());
        data.extend_from_slice(&header);
        data.extend_from_slice(&mac);
        data.extend_from_slice(&payload);
        // A fresh, unguessable temporary name created exclusively, then an
        // atomic rename: a concurrent reader never sees half an entry and
        // nobody can pre-create the temporary file.
        let suffix = hex::encode(random_bytes::<8>()?);
        let tmp = self.dir.join(format!(".{key}.{suffix}.tmp"));
        if let Err(e) = create_new_private(&tmp, &data) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("engine")
    }

    fn component_bytes() -> Vec<u8> {
        std::fs::read(hermes_plugin_artifacts::HOSTILE).expect("hostile component")
    }

    #[test]
    fn hmac_matches_rfc_4231_shape() {
        // RFC 4231 test case 2 uses a 4-byte key; ours are always 32 bytes,
        // so check against the definition with a zero-padded key instead.
        let key = [7u8; 32];
        let a = hmac(&key, &[b"hello ", b"world"]);
        let b = hmac(&key, &[b"hello world"]);
        assert_eq!(a, b, "parts are concatenated");
        assert_ne!(a, hmac(&[8u8; 32], &[b"hello world"]), "the key matters");
    }

    #[test]
    fn a_planted_entry_with_a_valid_checksum_but_no_valid_mac_is_recompiled() {
        let engine = engine();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache =
            ArtifactCache::new(dir.path().join("cache"), &engine).expect("private dir is used");
        let bytes = component_bytes();
        let sha = hex::encode(Sha256::digest(&bytes));
        let (_, first) = cache.load(&engine, &bytes, &sha).expect("compile");
        assert_eq!(first, CacheOutcome::Compiled);
        let (_, second) = cache.load(&engine, &bytes, &sha).expect("hit");
        assert_eq!(second, CacheOutcome::Hit);

        // An attacker who can write the entry but not read the key: the
        // header is right and the payload is a real artifact (a plain
        // checksum would accept it), but the MAC is forged.
        let path = cache.entry_path(&sha);
        let mut data = std::fs::read(&path).expect("entry");
        let header_len = ArtifactCache::header(&cache.entry_key(&sha)).len();
        for b in &mut data[header_len..header_len + 32] {
            *b = 0;
        }
        std::fs::write(&path, &data).expect("plant");
        let (_, third) = cache.load(&engine, &bytes, &sha).expect("recompile");
        assert_eq!(
            third,
            CacheOutcome::Compiled,
            "a forged entry is never loaded"
        );

        // An entry for other bytes copied under this component's name.
        let other_key = cache.entry_key(&"0".repeat(64));
        let mut foreign = ArtifactCache::header(&other_key);
        foreign.extend_from_slice(&data[header_len..]);
        std::fs::write(&path, &foreign).expect("plant");
        let (_, fourth) = cache.load(&engine, &bytes, &sha).expect("recompile");
        assert_eq!(fourth, CacheOutcome::Compiled);
    }

    #[test]
    fn an_entry_is_never_read_through_a_symlink() {
        let engine = engine();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache =
            ArtifactCache::new(dir.path().join("cache"), &engine).expect("private dir is used");
        let bytes = component_bytes();
        let sha = hex::encode(Sha256::digest(&bytes));
        let (_, first) = cache.load(&engine, &bytes, &sha).expect("compile");
        assert_eq!(first, CacheOutcome::Compiled);
        // A valid entry moved out and linked back: read through the link it
        // would be a hit; the cache refuses the link and recompiles.
        let path = cache.entry_path(&sha);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::rename(&path, &elsewhere).expect("move");
        std::os::unix::fs::symlink(&elsewhere, &path).expect("symlink");
        let (_, second) = cache.load(&engine, &bytes, &sha).expect("recompile");
        assert_eq!(second, CacheOutcome::Compiled, "the link is not followed");
        assert!(
            !std::fs::symlink_metadata(&path)
                .expect("entry")
                .file_type()
                .is_symlink(),
            "the recompiled entry replaced the link"
        );
        let (_, third) = cache.load(&engine, &bytes, &sha).expect("hit");
        assert_eq!(third, CacheOutcome::Hit);
    }

    #[test]
    fn a_group_writable_cache_dir_is_not_used() {
        let engine = engine();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_dir = dir.path().join("cache");
        std::fs::create_dir(&cache_dir).expect("mkdir");
        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o770))
            .expect("chmod");
        assert!(
            ArtifactCache::new(cache_dir.clone(), &engine).is_none(),
            "group-writable"
        );
        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        assert!(
            ArtifactCache::new(cache_dir.clone(), &engine).is_some(),
            "private"
        );
        let key = cache_dir.join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            ArtifactCache::new(cache_dir, &engine).is_none(),
            "a readable key is no secret"
        );
    }

    #[test]
    fn a_new_cache_dir_is_created_private() {
        use std::os::unix::fs::MetadataExt;
        let engine = engine();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_dir = dir.path().join("a/b");
        assert!(ArtifactCache::new(cache_dir.clone(), &engine).is_some());
        let mode = std::fs::metadata(&cache_dir).expect("meta").mode();
        assert_eq!(mode & 0o777, 0o700);
        let key_mode = std::fs::metadata(cache_dir.join(KEY_FILE))
            .expect("key")
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
    }
}
