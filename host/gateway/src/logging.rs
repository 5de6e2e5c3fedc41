//! Logging: human-readable lines or JSON, level from `RUST_LOG` (default
//! `info`), always on stderr so stdout stays for command output.
//!
//! The HTTP, TLS and WebSocket libraries are capped at `debug` whatever
//! `RUST_LOG` says: at `trace` they dump whole requests, and the relay
//! upgrade request carries `authorization: Bearer …` (tungstenite logs it
//! verbatim). The cap is a separate filter layer, so no directive in
//! `RUST_LOG` (a more specific target, a span filter) can lift it.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::args::LogFormat;

/// Targets (and their submodules) that log request heads, headers or key
/// material at `trace`.
const WIRE_TARGETS: [&str; 7] = [
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "rustls",
    "h2",
    "reqwest",
];

/// The most a [`WIRE_TARGETS`] target may log.
const WIRE_CAP: LevelFilter = LevelFilter::DEBUG;

/// Everything up to `max` passes except [`WIRE_TARGETS`] above
/// [`WIRE_CAP`]. `max` is the filter's own ceiling: with `TRACE` here the
/// subscriber's level hint became `TRACE`, so every `log::trace!` of the
/// WebSocket library (one per frame) was built and offered to the
/// subscriber only to be dropped — 3 % of the gateway's CPU at saturation.
fn wire_cap(max: LevelFilter) -> Targets {
    WIRE_TARGETS
        .iter()
        .fold(Targets::new().with_default(max), |t, name| {
            t.with_target(*name, WIRE_CAP.min(max))
        })
}

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
    let max = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: a second init (tests) is not an error worth failing for.
    let _ = match format {
        LogFormat::Human => builder.finish().with(wire_cap(max)).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The innermost span's fields (a forward's platform and buffer
            // id, a turn's session key, platform, plugin and tenant) under
            // "span": one conversation can be followed with a JSON query.
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(wire_cap(max))
            .try_init(),
    };
    if let Some(msg) = bad {
        tracing::warn!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn wire_targets_are_capped_at_debug_and_others_pass() {
        let cap = wire_cap(LevelFilter::TRACE);
        for target in ["tungstenite::handshake::client", "hyper", "rustls::conn"] {
            assert!(!cap.would_enable(target, &Level::TRACE), "{target}");
            assert!(cap.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(cap.would_enable("hermes_transport::link", &Level::TRACE));
        // Nothing above the filter's own ceiling, wire or not.
        let cap = wire_cap(LevelFilter::INFO);
        assert!(!cap.would_enable("tungstenite::protocol", &Level::DEBUG));
        assert!(!cap.would_enable("hermes_transport::link", &Level::DEBUG));
        assert!(cap.would_enable("hermes_transport::link", &Level::INFO));
    }
}
