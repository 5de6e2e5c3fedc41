//! Loading: read the plugins directory, compile (or take from the cache),
//! type-check and `describe` each file, settle name claims, and build the
//! routing [`Table`] the host swaps in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::artifact_cache::{ArtifactCache, CacheOutcome};
use crate::bindings::{self, PluginPre};
use crate::error::LoadError;
use crate::limits::Limits;
use crate::policy::Policy;
use crate::sandbox::{CallContext, ConfigMap, Sandbox, StoreState};
use crate::stats::PluginStats;
use crate::table::{LoadReport, LoadedPlugin, PluginDescription, Table};

/// What loading needs.
pub(crate) struct Loader<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) linker: &'a Linker<StoreState>,
    pub(crate) cache: Option<&'a ArtifactCache>,
    pub(crate) limits: &'a Limits,
    pub(crate) stats: &'a dyn Fn(&str) -> Arc<PluginStats>,
    pub(crate) policy_file: &'a Path,
    /// The source each pulled file came from.
    pub(crate) origin: &'a std::collections::BTreeMap<PathBuf, String>,
}

/// The `*.wasm` files of a directory, sorted.
pub(crate) fn wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Several files describe the plugin name `name` (conversion.md §3.1: a
/// name identifies one file). The file that was serving the name keeps it
/// and every other claimant is refused, naming the refused file; with no
/// serving file (at start, or when the serving file is gone) every
/// claimant is refused, naming all of them: the host never guesses which
/// file an operator meant, and an operator resolves it by removing or
/// renaming one. Refused files are added to `refused`.
fn resolve_name_claim(
    name: &str,
    claimants: Vec<(PathBuf, Arc<LoadedPlugin>)>,
    previous: &Table,
    report: &mut LoadReport,
    refused: &mut Vec<PathBuf>,
) -> Option<(PathBuf, Arc<LoadedPlugin>)> {
    let serving = previous
        .by_name
        .get(name)
        .map(|p| p.description.file.clone())
        .filter(|f| claimants.iter().any(|(c, _)| c == f));
    let Some(serving) = serving else {
        let files: Vec<PathBuf> = claimants.into_iter().map(|(f, _)| f).collect();
        tracing::error!(plugin = name, files = ?files, "several files claim one plugin name; none is loaded");
        refused.extend(files.iter().cloned());
        report.errors.push(LoadError::NameClaimedTwice {
            name: name.to_owned(),
            files,
        });
        return None;
    };
    let mut winner = None;
    for (file, plugin) in claimants {
        if file == serving {
            winner = Some((file, plugin));
        } else {
            tracing::error!(plugin = name, refused = %file.display(), serving = %serving.display(), "a file claims a plugin name in use; refused");
            report.errors.push(LoadError::NameInUse {
                name: name.to_owned(),
                serving: serving.clone(),
                refused: file.clone(),
            });
            refused.push(file);
        }
    }
    winner
}

impl Loader<'_> {
    /// Load every file, keeping unchanged plugins from `previous` and, when a
    /// file fails, its previous good version.
    pub(crate) fn build(
        &self,
        files: &[PathBuf],
        policy: Policy,
        previous: &Table,
        report: &mut LoadReport,
    ) -> Table {
        let mut table = Table {
            policy,
            ..Table::default()
        };
        let mut claims: BTreeMap<String, Vec<(PathBuf, Arc<LoadedPlugin>)>> = BTreeMap::new();
        for file in files {
            let plugin = match self.load_file(file, previous, report) {
                Ok(p) => p,
                Err(e) => {
                    let kept = previous.by_file.get(file).cloned();
                    if let Some(old) = &kept {
                        tracing::warn!(file = %file.display(), error = %e, plugin = %old.name, "plugin failed to load; keeping the previous version");
                    } else {
                        tracing::warn!(file = %file.display(), error = %e, "plugin failed to load; skipped");
                    }
                    report.errors.push(e);
                    match kept {
                        Some(old) => old,
                        None => continue,
                    }
                }
            };
            claims
                .entry(plugin.description.name.clone())
                .or_default()
                .push((file.clone(), plugin));
        }
        let mut refused = Vec::new();
        for (name, mut claimants) in claims {
            let winner = if claimants.len() == 1 {
                claimants.pop()
            } else {
                resolve_name_claim(&name, claimants, previous, report, &mut refused)
            };
            if let Some((file, plugin)) = winner {
                table.by_name.insert(name, Arc::clone(&plugin));
                table.by_file.insert(file, plugin);
            }
        }
        // A refused new version keeps the file's working previous version
        // when that one's name is still free, like any other failed load.
        for file in refused {
            if let Some(old) = previous.by_file.get(&file)
                && !table.by_name.contains_key(&old.description.name)
                && !table.by_file.contains_key(&file)
            {
                tracing::warn!(file = %file.display(), plugin = %old.name, "new plugin version refused; keeping the previous version");
                table
                    .by_name
                    .insert(old.description.name.clone(), Arc::clone(old));
                table.by_file.insert(file, Arc::clone(old));
            }
        }
        // A plugin that starts serving a name gets a fresh quarantine state;
        // a refused file never touches the serving plugin's counters.
        for (name, plugin) in &table.by_name {
            if previous
                .by_name
                .get(name)
                .is_none_or(|old| !Arc::ptr_eq(old, plugin))
            {
                plugin.stats.reset_quarantine();
            }
        }
        table.resolve_routes(self.policy_file, previous, report);
        for message in crate::experiment::unknown_candidates(&table) {
            report.errors.push(LoadError::Policy {
                file: self.policy_file.to_owned(),
                message,
            });
        }
        report.loaded = table
            .by_name
            .values()
            .map(|p| p.description.clone())
            .collect();
        table
    }

    fn load_file(
        &self,
        file: &Path,
        previous: &Table,
        report: &mut LoadReport,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        crate::ownership::check(file).map_err(|message| LoadError::Untrusted {
            file: file.to_owned(),
            message,
        })?;
        let bytes = std::fs::read(file).map_err(|e| LoadError::Io {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(old) = previous.by_file.get(file)
            && old.description.sha256 == sha256
        {
            report.unchanged += 1;
            return Ok(Arc::clone(old));
        }
        let (component, outcome) = self.compile(file, &bytes, &sha256)?;
        match outcome {
            CacheOutcome::Hit => report.cache_hits += 1,
            CacheOutcome::Compiled | CacheOutcome::Uncached => report.compiled += 1,
        }
        let pre = self.type_check(file, &component)?;
        let info = self.describe(file, &pre)?;
        let stats = (self.stats)(&info.name);
        let description = PluginDescription {
            name: info.name,
            version: info.version,
            platforms: info.platforms,
            api_version: info.api_version.unwrap_or_else(|| pre.version().to_owned()),
            file: file.to_owned(),
            sha256,
            source: self.origin.get(file).cloned(),
        };
        tracing::info!(plugin = %description.name, version = %description.version, file = %file.display(), platforms = ?description.platforms, "plugin loaded");
        Ok(Arc::new(LoadedPlugin {
            name: Arc::from(description.name.as_str()),
            description,
            pre,
            stats,
        }))
    }

    pub(crate) fn compile(
        &self,
        file: &Path,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, CacheOutcome), LoadError> {
        let compiled = match self.cache {
            Some(cache) => cache.load(self.engine, bytes, sha256),
            None => Component::new(self.engine, bytes).map(|c| (c, CacheOutcome::Uncached)),
        };
        compiled.map_err(|e| LoadError::Compile {
            file: file.to_owned(),
            message: format!("{e:#}"),
        })
    }

    /// Refuse another `hermes:converter` version by name before linking (the
    /// linker's own error would only say an import is missing), then
    /// type-check against the world.
    /// Checks the component against the bindings of the ABI version it
    /// was built against, read from its own import and export names.
    pub(crate) fn type_check(
        &self,
        file: &Path,
        component: &Component,
    ) -> Result<PluginPre, LoadError> {
        let incompatible = |plugin_version: String| LoadError::Incompatible {
            file: file.to_owned(),
            plugin_version,
            host_version: bindings::implemented(),
        };
        let version = match bindings::version_of(self.engine, component) {
            Ok(Some(v)) => v,
            // Not a converter at all: the type check below says what is missing.
            Ok(None) => hermes_converter_abi::CURRENT_VERSION.to_owned(),
            Err(several) => return Err(incompatible(format!("several ({several})"))),
        };
        let Some(implemented) = hermes_converter_abi::implemented_version(&version) else {
            let shown = if version.is_empty() {
                "(unversioned)".to_owned()
            } else {
                version
            };
            return Err(incompatible(shown));
        };
        let type_err = |e: wasmtime::Error| LoadError::TypeCheck {
            file: file.to_owned(),
            message: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(component).map_err(type_err)?;
        PluginPre::new(implemented, pre).map_err(type_err)
    }

    fn describe(&self, file: &Path, pre: &PluginPre) -> Result<bindings::Info, LoadError> {
        let err = |message: String| LoadError::Describe {
            file: file.to_owned(),
            message,
        };
        let cx = CallContext {
            plugin: Arc::from(file.display().to_string()),
            stats: None,
            tenant: None,
            config: ConfigMap::default(),
        };
        // Loading is synchronous (a blocking thread or before the runtime):
        // the guest's calls are driven to completion right here.
        let info = crate::sandbox::block_on(async {
            let mut sandbox = Sandbox::new(self.engine, pre, self.limits, cx).await?;
            sandbox.describe().await
        })
        .map_err(|e| err(e.to_string()))?;
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !valid_name(&info.name) {
            return Err(err(format!(
                "invalid plugin name {:?} (1-64 of A-Z a-z 0-9 - _ .)",
                info.name
            )));
        }
        if info.platforms.is_empty() || !info.platforms.iter().all(|p| valid_name(p)) {
            return Err(err(format!("invalid platform list {:?}", info.platforms)));
        }
        let api_version = info.api_version.as_deref().unwrap_or_default();
        if info.version.len() > 64 || api_version.len() > 64 {
            return Err(err("version strings longer than 64 bytes".to_owned()));
        }
        // 0.1 also names its version in `describe`: it must agree with the
        // component's (it is informative only from 0.2 on, and absent).
        if pre.version() == "0.1.0" {
            check_api_version(file, api_version, pre.version())?;
        }
        Ok(info)
    }
}

/// The WIT version a 0.1 plugin's `describe()` reports must be the one its
/// import and export names carry (`built`), up to the patch level.
pub(crate) fn check_api_version(
    file: &Path,
    api_version: &str,
    built: &str,
) -> Result<(), LoadError> {
    if hermes_converter_abi::implemented_version(api_version) == Some(built) {
        return Ok(());
    }
    Err(LoadError::Incompatible {
        file: file.to_owned(),
        plugin_version: api_version.to_owned(),
        host_version: bindings::implemented(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_api_version_of_another_major_is_refused_naming_both() {
        let file = Path::new("plugins/x.wasm");
        assert!(check_api_version(file, "0.1.0", "0.1.0").is_ok());
        assert!(
            check_api_version(file, "0.1.3", "0.1.0").is_ok(),
            "patch levels"
        );
        let err = check_api_version(file, "1.0.0", "0.1.0").expect_err("another major");
        let text = err.to_string();
        assert!(matches!(err, LoadError::Incompatible { .. }), "{err:?}");
        assert!(
            text.contains("1.0.0") && text.contains(&bindings::implemented()),
            "{text}"
        );
        assert!(
            check_api_version(file, "0.2.0", "0.1.0").is_err(),
            "describe must agree with the component"
        );
    }
}
