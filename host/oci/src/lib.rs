//! Converter components as OCI artifacts, in the CNCF Wasm OCI layout: one
//! `application/wasm` layer (the component's bytes), a config blob of media
//! type `application/vnd.wasm.config.v0+json`, and annotations naming the
//! plugin (name, version, platforms, the WIT version it was built against).
//!
//! - [`push`] publishes a component and answers the manifest digest, the
//!   pin (`oci://HOST/REPO@sha256:…`) an operator writes into the policy;
//! - [`fetch`] brings a pinned component into a content-addressed cache,
//!   verifying the manifest against the pinned digest and the layer
//!   against the digest the manifest names: a blob that does not hash to
//!   its digest is refused, never stored. A pinned digest never changes,
//!   so a cached copy is used without asking the registry (and serves when
//!   the registry is down).
//!
//! Registry HTTP is `oci-client`'s. Plain `http://` is used only for a
//! registry on loopback; credentials come from the environment or the
//! Docker config file and are never logged.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

/// The layer's media type: the component itself.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The config blob's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The scheme of a reference in the policy.
pub const SCHEME: &str = "oci://";
/// Most bytes a manifest may have (a real one is well under 4 KiB).
const MAX_MANIFEST_BYTES: usize = 64 << 10;
/// Most bytes a component may have.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Why a push or a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Not `oci://HOST/REPO@sha256:…` (or `:TAG`).
    #[error("invalid OCI reference {reference:?}: {why}")]
    Reference {
        /// What was given.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// A tag where only a digest is accepted.
    #[error(
        "{0} names a tag, not a digest: pin it as @sha256:… (or opt in to tags, which are resolved and logged)"
    )]
    TagNotAllowed(String),
    /// The registry answered with an error, or could not be reached.
    #[error("registry: {0}")]
    Registry(String),
    /// Content that does not hash to its digest.
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    Tampered {
        /// The manifest or the layer.
        what: &'static str,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// A manifest that is not a Wasm component artifact.
    #[error("not a Wasm component artifact: {0}")]
    NotAComponent(String),
    /// The cache could not be written or read.
    #[error("cache {path}: {message}")]
    Cache {
        /// Where.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

/// A parsed `oci://HOST/REPO@sha256:…` (or `oci://HOST/REPO:TAG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    reference: Reference,
}

impl OciRef {
    /// Parses a policy reference.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = |why: &str| OciError::Reference {
            reference: text.to_owned(),
            why: why.to_owned(),
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it must start with oci://"))?;
        if !rest.contains('/') {
            return Err(bad("expected HOST/REPOSITORY"));
        }
        let reference: Reference = rest.parse().map_err(|e| bad(&format!("{e}")))?;
        if let Some(digest) = reference.digest()
            && !is_sha256(digest)
        {
            return Err(bad("the digest must be sha256: and 64 hex digits"));
        }
        Ok(Self { reference })
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// `HOST/REPO`, what two pins of one plugin have in common.
    pub fn repository(&self) -> String {
        format!(
            "{}/{}",
            self.reference.registry(),
            self.reference.repository()
        )
    }

    /// The same repository pinned at `digest`.
    pub fn at(&self, digest: &str) -> Self {
        Self {
            reference: Reference::with_digest(
                self.reference.registry().to_owned(),
                self.reference.repository().to_owned(),
                digest.to_owned(),
            ),
        }
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}", self.reference.whole())
    }
}

fn is_sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `Ok` when `bytes` are what `expected` (`sha256:…`) names; else what
/// arrived was not what was asked for.
fn verify(what: &'static str, bytes: &[u8], expected: &str) -> Result<(), OciError> {
    let actual = sha256_digest(bytes);
    if actual == expected {
        return Ok(());
    }
    Err(OciError::Tampered {
        what,
        expected: expected.to_owned(),
        actual,
    })
}

/// A client for the registry of `reference`: plain HTTP only on loopback.
fn client(reference: &Reference) -> Client {
    let host = reference.resolve_registry();
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let loopback =
        matches!(name, "localhost" | "127.0.0.1" | "[::1]" | "::1") || name.starts_with("127.");
    let protocol = if loopback {
        ClientProtocol::HttpsExcept(vec![host.to_owned()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    })
}

/// The credentials for `registry`: `HERMES_REGISTRY_USERNAME` and
/// `HERMES_REGISTRY_PASSWORD`, else the `auths` entry of the Docker config
/// file (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`), else none.
pub fn credentials(registry: &str) -> RegistryAuth {
    credentials_from(&|k| std::env::var(k).ok(), registry)
}

/// [`credentials`] with the environment read through `env`.
fn credentials_from(env: &dyn Fn(&str) -> Option<String>, registry: &str) -> RegistryAuth {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    if let (Some(user), Some(password)) = (
        env("HERMES_REGISTRY_USERNAME"),
        env("HERMES_REGISTRY_PASSWORD"),
    ) {
        return RegistryAuth::Basic(user, password);
    }
    let file = env("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".docker")))
        .map(|dir| dir.join("config.json"));
    let auth = file
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|config| {
            config["auths"][registry]["auth"]
                .as_str()
                .map(str::to_owned)
        })
        .and_then(|b64| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok());
    match auth.as_deref().and_then(|a| a.split_once(':')) {
        Some((user, password)) => RegistryAuth::Basic(user.to_owned(), password.to_owned()),
        None => RegistryAuth::Anonymous,
    }
}

/// What a pushed artifact says of its component.
#[derive(Debug, Clone)]
pub struct Describe {
    /// `describe().name`.
    pub name: String,
    /// `describe().version`.
    pub version: String,
    /// `describe().platforms`.
    pub platforms: Vec<String>,
    /// The WIT version the component was built against.
    pub wit_version: String,
}

/// Publishes `component` at `target` (`HOST/REPO:TAG`, with or without
/// `oci://`) and answers the manifest's digest.
pub async fn push(component: Vec<u8>, target: &str, info: &Describe) -> Result<String, OciError> {
    let text = if target.starts_with(SCHEME) {
        target.to_owned()
    } else {
        format!("{SCHEME}{target}")
    };
    let reference = OciRef::parse(&text)?.reference;
    let registry = |e: oci_client::errors::OciDistributionError| OciError::Registry(e.to_string());
    let client = client(&reference);
    let auth = credentials(reference.resolve_registry());
    let annotations: BTreeMap<String, String> = [
        ("org.opencontainers.image.title", info.name.clone()),
        ("org.opencontainers.image.version", info.version.clone()),
        ("io.hermes.converter.platforms", info.platforms.join(",")),
        (
            "io.hermes.converter.wit",
            format!("hermes:converter@{}", info.wit_version),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = serde_json::json!({
        "created": null,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [sha256_digest(&component)],
        "component": {"name": info.name, "version": info.version},
    });
    let config = Config::new(
        serde_json::to_vec(&config).map_err(|e| OciError::Registry(e.to_string()))?,
        CONFIG_MEDIA_TYPE.to_owned(),
        None,
    );
    let layers = [ImageLayer::new(
        component,
        LAYER_MEDIA_TYPE.to_owned(),
        None,
    )];
    let manifest = OciImageManifest::build(&layers, &config, Some(annotations));
    client
        .push(&reference, &layers, config, &auth, Some(manifest))
        .await
        .map_err(registry)?;
    // The digest the registry stored, checked against the bytes it serves.
    let (raw, digest) = client
        .pull_manifest_raw(&reference, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(registry)?;
    verify("the manifest", &raw, &digest)?;
    Ok(digest)
}

/// Resolves a tag to the digest it points at now (opt-in only: the caller
/// logs the result, and pins it for this load).
pub async fn resolve_tag(reference: &OciRef) -> Result<OciRef, OciError> {
    let r = &reference.reference;
    let (raw, digest) = client(r)
        .pull_manifest_raw(
            r,
            &credentials(r.resolve_registry()),
            &[OCI_IMAGE_MEDIA_TYPE],
        )
        .await
        .map_err(|e| OciError::Registry(e.to_string()))?;
    verify("the manifest", &raw, &digest)?;
    Ok(reference.at(&digest))
}

/// A component brought into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The component's file in the cache.
    pub path: PathBuf,
    /// The manifest digest it was pinned by.
    pub digest: String,
    /// Whether the registry was asked (false: served from the cache).
    pub pulled: bool,
}

/// The cached copy of `digest`, if a complete and intact one is there.
fn cached(cache: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    let blob = std::fs::read_to_string(cache.join("manifests").join(hex)).ok()?;
    let blob = blob.trim().strip_prefix("sha256:")?.to_owned();
    let path = cache.join("blobs").join(format!("{blob}.wasm"));
    let bytes = std::fs::read(&path).ok()?;
    // Checked on every use: a cache edited behind our back is not trusted.
    (hex::encode(Sha256::digest(&bytes)) == blob).then_some(path)
}

/// Brings the component pinned by `reference` (a digest) into `cache`: from
/// the cache when an intact copy is there, else from the registry, every
/// byte checked against its digest before it is stored.
pub async fn fetch(reference: &OciRef, cache: &Path) -> Result<Fetched, OciError> {
    let digest = reference
        .digest()
        .ok_or_else(|| OciError::TagNotAllowed(reference.to_string()))?
        .to_owned();
    if let Some(path) = cached(cache, &digest) {
        return Ok(Fetched {
            path,
            digest,
            pulled: false,
        });
    }
    let r = &reference.reference;
    let client = client(r);
    let auth = credentials(r.resolve_registry());
    let registry = |e: oci_client::errors::OciDistributionError| OciError::Registry(e.to_string());
    let (raw, _) = client
        .pull_manifest_raw(r, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(registry)?;
    if raw.len() > MAX_MANIFEST_BYTES {
        return Err(OciError::NotAComponent(
            "the manifest is too large".to_owned(),
        ));
    }
    verify("the manifest", &raw, &digest)?;
    let manifest: OciImageManifest = serde_json::from_slice(&raw)
        .map_err(|e| OciError::NotAComponent(format!("unreadable manifest: {e}")))?;
    let layer = match manifest.layers.as_slice() {
        [layer] if layer.media_type == LAYER_MEDIA_TYPE => layer.clone(),
        _ => {
            return Err(OciError::NotAComponent(format!(
                "expected exactly one {LAYER_MEDIA_TYPE} layer"
            )));
        }
    };
    if !is_sha256(&layer.digest)
        || usize::try_from(layer.size).map_or(true, |s| s > MAX_COMPONENT_BYTES)
    {
        return Err(OciError::NotAComponent(
            "the layer's digest or size is out of bounds".to_owned(),
        ));
    }
    let mut bytes = Vec::new();
    // The client checks the digest as it reads; a mismatch is tampering,
    // reported as such (and checked again below, whatever the client did).
    client
        .pull_blob(r, &layer, &mut bytes)
        .await
        .map_err(|e| match e {
            oci_client::errors::OciDistributionError::DigestError(d) => OciError::Tampered {
                what: "the component layer",
                expected: layer.digest.clone(),
                actual: d.to_string(),
            },
            other => registry(other),
        })?;
    verify("the component layer", &bytes, &layer.digest)?;
    let path = store(cache, &digest, &layer.digest, &bytes)?;
    Ok(Fetched {
        path,
        digest,
        pulled: true,
    })
}

/// Writes the blob, then the manifest's pointer to it (so a pointer always
/// names a complete blob), each atomically, private to the user.
fn store(cache: &Path, digest: &str, blob: &str, bytes: &[u8]) -> Result<PathBuf, OciError> {
    let io = |path: &Path, e: std::io::Error| OciError::Cache {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let blob_hex = blob.trim_start_matches("sha256:");
    let manifest_hex = digest.trim_start_matches("sha256:");
    for dir in ["blobs", "manifests"] {
        let d = cache.join(dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| io(&d, e))?;
    }
    let path = cache.join("blobs").join(format!("{blob_hex}.wasm"));
    write_atomic(&path, bytes).map_err(|e| io(&path, e))?;
    let pointer = cache.join("manifests").join(manifest_hex);
    write_atomic(&pointer, blob.as_bytes()).map_err(|e| io(&pointer, e))?;
    Ok(path)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_parsed_strictly() {
        let r =
            OciRef::parse(&format!("oci://127.0.0.1:5000/hermes/discord@{DIGEST}")).expect("a pin");
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.repository(), "127.0.0.1:5000/hermes/discord");
        assert_eq!(
            r.to_string(),
            format!("oci://127.0.0.1:5000/hermes/discord@{DIGEST}")
        );
        let tag = OciRef::parse("oci://127.0.0.1:5000/hermes/discord:1.2").expect("a tag");
        assert_eq!(tag.digest(), None);
        for bad in [
            "127.0.0.1:5000/hermes/discord@sha256:00",
            "oci://discord",
            "oci://127.0.0.1:5000/hermes/discord@sha256:xyz",
            "oci://127.0.0.1:5000/hermes/discord@md5:0123",
        ] {
            assert!(OciRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cache_is_checked_on_every_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = b"\0asm component".to_vec();
        let blob = sha256_digest(&bytes);
        let path = store(dir.path(), DIGEST, &blob, &bytes).expect("stored");
        assert_eq!(cached(dir.path(), DIGEST), Some(path.clone()));
        std::fs::write(&path, b"\0asm tampered").expect("tamper");
        assert_eq!(
            cached(dir.path(), DIGEST),
            None,
            "a changed blob is not used"
        );
        assert_eq!(cached(dir.path(), &DIGEST.replace('0', "f")), None);
    }

    #[test]
    fn docker_config_credentials_are_read_for_their_registry_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        // user:s3cret
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"reg.example:5000":{"auth":"dXNlcjpzM2NyZXQ="}}}"#,
        )
        .expect("write");
        let docker = dir.path().to_str().expect("utf8").to_owned();
        let env = move |k: &str| (k == "DOCKER_CONFIG").then(|| docker.clone());
        assert_eq!(
            credentials_from(&env, "reg.example:5000"),
            RegistryAuth::Basic("user".to_owned(), "s3cret".to_owned())
        );
        assert_eq!(
            credentials_from(&env, "other:5000"),
            RegistryAuth::Anonymous
        );
        let named = |k: &str| match k {
            "HERMES_REGISTRY_USERNAME" => Some("ci".to_owned()),
            "HERMES_REGISTRY_PASSWORD" => Some("pw".to_owned()),
            _ => None,
        };
        assert_eq!(
            credentials_from(&named, "reg.example:5000"),
            RegistryAuth::Basic("ci".to_owned(), "pw".to_owned()),
            "the environment wins"
        );
    }
}
