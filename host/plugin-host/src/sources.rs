//! Plugins the policy names by OCI reference, besides the `*.wasm` files of
//! the plugins directory:
//!
//! ```toml
//! [[source]]
//! oci = "oci://registry.example/hermes/discord@sha256:…"
//! ```
//!
//! Each is brought into `<cache dir>/oci` (content-addressed, every blob
//! checked against its digest; `hermes-oci`) and then loaded like a local
//! file. A tag instead of a digest is refused unless the entry opts in with
//! `allow_tag = true`; it is then resolved to the digest it names now,
//! logged, and pinned for this load. A pull that fails never replaces the
//! working version: the plugin the same repository served before keeps
//! serving (and a pinned digest already in the cache serves without asking
//! the registry at all).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hermes_oci::OciRef;

use crate::HostCounts;
use crate::error::LoadError;
use crate::policy::Policy;
use crate::table::Table;

/// The files the sources brought, and which source each came from.
#[derive(Debug, Default)]
pub(crate) struct Pulled {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) origin: BTreeMap<PathBuf, String>,
}

/// Brings every `[[source]]` of `policy` into the cache under `cache_dir`.
pub(crate) fn pull(
    policy: &Policy,
    cache_dir: Option<&Path>,
    previous: &Table,
    errors: &mut Vec<LoadError>,
    counts: &HostCounts,
) -> Pulled {
    let mut pulled = Pulled::default();
    if policy.source.is_empty() {
        return pulled;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errors.push(LoadError::Pull {
                reference: "[[source]]".to_owned(),
                message: format!("cannot start the pull runtime: {e}"),
            });
            return pulled;
        }
    };
    for rule in &policy.source {
        let outcome = match cache_dir {
            None => Err(
                "OCI sources need the plugin cache directory (~/.hermes/cache/plugins)".to_owned(),
            ),
            Some(dir) => runtime.block_on(fetch(&rule.oci, rule.allow_tag, &dir.join("oci"))),
        };
        match outcome {
            Ok((fetched, source)) => {
                let counter = if fetched.pulled {
                    &counts.pulls_pulled
                } else {
                    &counts.pulls_cached
                };
                HostCounts::bump(counter);
                pulled.origin.insert(fetched.path.clone(), source);
                pulled.files.push(fetched.path);
            }
            Err(message) => {
                HostCounts::bump(&counts.pulls_failed);
                errors.push(LoadError::Pull {
                    reference: rule.oci.clone(),
                    message: message.clone(),
                });
                // The version the same repository served keeps serving.
                let repository = OciRef::parse(&rule.oci).ok().map(|r| r.repository());
                let serving = previous.by_name.values().find(|p| {
                    let theirs = p
                        .description
                        .source
                        .as_deref()
                        .and_then(|s| OciRef::parse(s).ok());
                    theirs.map(|r| r.repository()) == repository && repository.is_some()
                });
                if let Some(plugin) = serving {
                    let file = plugin.description.file.clone();
                    tracing::warn!(source = %rule.oci, kept = ?plugin.description.source, "pull failed; the previous version keeps serving: {message}");
                    if let Some(source) = &plugin.description.source {
                        pulled.origin.insert(file.clone(), source.clone());
                    }
                    pulled.files.push(file);
                }
            }
        }
    }
    pulled
}

/// One source into the cache: its file and the pinned reference it was
/// loaded by.
async fn fetch(
    text: &str,
    allow_tag: bool,
    cache: &Path,
) -> Result<(hermes_oci::Fetched, String), String> {
    let reference = OciRef::parse(text).map_err(|e| e.to_string())?;
    let pinned = if reference.digest().is_some() {
        reference
    } else if allow_tag {
        let pinned = hermes_oci::resolve_tag(&reference)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(source = %text, pinned = %pinned, "tag resolved to a digest for this load");
        pinned
    } else {
        return Err(hermes_oci::OciError::TagNotAllowed(text.to_owned()).to_string());
    };
    private_dir(cache)?;
    let fetched = hermes_oci::fetch(&pinned, cache)
        .await
        .map_err(|e| e.to_string())?;
    Ok((fetched, pinned.to_string()))
}

/// The cache follows the compiled-artifact cache's rules: a directory of
/// this user's, writable by no one else (the host trusts what it loads
/// from it).
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    crate::ownership::check(dir)
}
