//! Logging: human-readable lines or JSON, level from `RUST_LOG` (default
//! `info`), always on stderr so stdout stays for command output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// Installs the global subscriber. A bad `RUST_LOG` falls back to `info`
/// with a warning rather than failing the start.
pub fn init(format: LogFormat, default_level: &str) {
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(default_level),
                Some(format!("ignoring RUST_LOG={spec:?}: {e}")),
            ),
        },
        _ => (EnvFilter::new(default_level), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: a second init (tests) is not an error worth failing for.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Some(msg) = bad {
        tracing::warn!("{msg}");
    }
}
