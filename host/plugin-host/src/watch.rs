//! The debounced file watcher that triggers a reload when `*.wasm` files in
//! the plugins directory or the policy file change.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::{HostError, PluginHost};

/// Keeps the watch alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchHandle")
    }
}

fn relevant(path: &Path, policy: &Path) -> bool {
    path.extension().is_some_and(|x| x == "wasm")
        || path == policy
        || path.file_name() == policy.file_name()
}

pub(crate) fn start(
    host: &PluginHost,
    dir: &Path,
    policy: &Path,
    debounce: Duration,
) -> Result<WatchHandle, HostError> {
    let (tx, rx) = channel::<()>();
    let policy_path: PathBuf = policy.to_owned();
    let filter_policy = policy_path.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| relevant(p, &filter_policy))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| HostError::Watch {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| HostError::Watch {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
    // The policy may live elsewhere; watch its directory (editors replace
    // files by rename, which a watch on the file itself would lose).
    if let Some(parent) = policy_path.parent()
        && parent != dir
        && parent.is_dir()
    {
        watcher
            .watch(parent, RecursiveMode::NonRecursive)
            .map_err(|e| HostError::Watch {
                path: parent.to_owned(),
                message: e.to_string(),
            })?;
    }
    let host = host.clone();
    std::thread::Builder::new()
        .name("hermes-plugin-watch".to_owned())
        .spawn(move || {
            // Wait for a change, then for `debounce` of quiet, then reload.
            // Ends when the watcher (and with it `tx`) is dropped.
            while rx.recv().is_ok() {
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                let report = host.reload_blocking();
                tracing::info!(
                    loaded = report.loaded.len(),
                    errors = report.errors.len(),
                    "plugins reloaded after a file change"
                );
            }
        })
        .map_err(|e| HostError::Workers(e.to_string()))?;
    Ok(WatchHandle { _watcher: watcher })
}
