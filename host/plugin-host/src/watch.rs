//! The debounced file watcher that triggers a reload when `*.wasm` files in
//! the plugins directory or the policy file change.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};

use crate::PluginHost;
use crate::error::HostError;

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

/// Whether an event can mean new content. Reading a file (which every
/// reload does) is reported as an access, and may touch its access time (a
/// metadata change): counting those made every reload trigger the next.
fn changes_content(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
    )
}

/// What the watched files look like: path, length and modification time of
/// every `*.wasm` file in the directory and of the policy file. A reload
/// runs only when this differs from what the last reload saw, so a burst of
/// events that changed nothing (or a plugin that stays broken) does not
/// reload — or report the same error — again.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, u64, Option<std::time::SystemTime>)>);

impl Fingerprint {
    fn of(dir: &Path, policy: &Path) -> Self {
        let mut paths: Vec<PathBuf> = crate::loader::wasm_files(dir).unwrap_or_default();
        paths.push(policy.to_owned());
        Self(
            paths
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p).ok();
                    let len = meta.as_ref().map_or(u64::MAX, std::fs::Metadata::len);
                    let modified = meta.and_then(|m| m.modified().ok());
                    (p, len, modified)
                })
                .collect(),
        )
    }
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
            && changes_content(&event.kind)
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
    let watched_dir = dir.to_owned();
    let mut seen = Fingerprint::of(&watched_dir, &policy_path);
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
                let now = Fingerprint::of(&watched_dir, &policy_path);
                if now == seen {
                    tracing::debug!("watched files unchanged; no reload");
                    continue;
                }
                seen = now;
                let report = host.reload_blocking();
                tracing::info!(
                    loaded = report.loaded.len(),
                    errors = report.errors.len(),
                    "plugins reloaded after a file change"
                );
                for error in &report.errors {
                    tracing::warn!(%error, "reload: not loaded");
                }
            }
        })
        .map_err(|e| HostError::Workers(e.to_string()))?;
    Ok(WatchHandle { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, RemoveKind};

    use super::*;

    #[test]
    fn reads_and_access_times_are_not_changes() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Any)));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(changes_content(&EventKind::Remove(RemoveKind::File)));
    }

    #[test]
    fn the_fingerprint_moves_only_with_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy.toml");
        let a = Fingerprint::of(dir.path(), &policy);
        std::fs::write(dir.path().join("x.wasm"), b"one").expect("write");
        let b = Fingerprint::of(dir.path(), &policy);
        assert_ne!(a, b, "a new plugin file");
        let _ = std::fs::read(dir.path().join("x.wasm")).expect("read");
        assert_eq!(
            b,
            Fingerprint::of(dir.path(), &policy),
            "reading changes nothing"
        );
        std::fs::write(&policy, "[platform]\n").expect("write");
        assert_ne!(b, Fingerprint::of(dir.path(), &policy), "a new policy");
    }
}
