//! `convert`: one passthrough forward through routing and its converter,
//! under the same sandbox as `run`, printed as one JSON object.
//!
//! | outcome | stdout | exit |
//! | --- | --- | --- |
//! | events | `{"outcome":"event","plugin":…,"events":[E…]}` | 0 |
//! | ignored | `{"outcome":"ignored","plugin":…,"reason":…}` | 0 |
//! | typed rejection | `{"outcome":"error","plugin":…,"error_kind":…,"message":…}` | 3 |
//! | plugin fault (trap, timeout, memory, bad output, panic, quarantine, …) | `{"outcome":"error","plugin":…,"error_kind":"plugin_fault","fault":…,"message":…}` | 1 |
//! | no plugin for the platform | `{"outcome":"error","plugin":null,"error_kind":"no_route","message":…}` | 1 |
//!
//! Each `E` is the wire MessageEvent (relay-contract §5.1) with every
//! optional field written (null when unset), the scope under both `scope_id`
//! and `guild_id`, plus `reply_route`, `is_bot` (mirroring `source.is_bot`,
//! as the corpus lists it) and the plugin's informational `metadata`.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use hermes_plugin_host::{ConvertedEvent, Outcome, PluginError};
use hermes_protocol::forward::PassthroughForward;
use serde::Serialize;

use crate::args::ConvertArgs;

/// Runs `convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    // Plugin log lines at warn and above reach stderr; stdout is the JSON.
    // Skipped files are reported once, below, not also by the host's log.
    crate::logging::init(
        crate::args::LogFormat::Human,
        "warn,hermes_plugin_host::table=error",
    );
    let body = read_body(&args)?;
    let forward = PassthroughForward {
        platform: args.platform.clone(),
        bot_id: args.bot_id.clone(),
        method: args.method.clone(),
        path: args.path.clone(),
        headers: args.headers.clone(),
        body,
        profile: args.profile.clone(),
    };

    // `--config` pairs go on top of the configuration the policy gives the
    // routed plugin (PluginHost::convert_with_config).
    // Loaded outside any async runtime (see `load_plugins_blocking`).
    let (host, report) =
        crate::serving::load_plugins_blocking(&args.plugins, args.policy.as_deref())?;
    for e in &report.errors {
        let line = crate::text::one_line(&e.to_string());
        eprintln!("warning: plugin file skipped: {line}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let conversion = if args.config.is_empty() {
        runtime.block_on(host.convert(&forward))
    } else {
        let extra = args.config.iter().cloned().collect();
        runtime.block_on(host.convert_with_config(&forward, extra))
    };

    let (line, code) = render(conversion.plugin.as_deref(), &conversion.outcome);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    Ok(ExitCode::from(code))
}

fn read_body(args: &ConvertArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(body) = &args.body_b64 {
        return Ok(body.0.clone());
    }
    match &args.body_file {
        None => Ok(Vec::new()),
        Some(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the body from stdin")?;
            Ok(buf)
        }
        Some(p) => {
            std::fs::read(p).with_context(|| format!("cannot read body file {}", p.display()))
        }
    }
}

/// The JSON line and exit code for an outcome. Output structs (not
/// `json!`) keep the keys in the order `cli.md` writes them.
pub fn render(plugin: Option<&str>, outcome: &Outcome) -> (String, u8) {
    let (out, code) = match outcome {
        Outcome::Events(events) => (Output::Event { plugin, events }, 0),
        Outcome::Ignored(reason) => (Output::Ignored { plugin, reason }, 0),
        Outcome::Rejected { kind, message } => (
            Output::Error {
                plugin,
                error_kind: kind.as_str(),
                fault: None,
                message: message.clone(),
            },
            crate::EXIT_REJECTED,
        ),
        Outcome::Failed(PluginError::NoRoute { platform }) => (
            Output::Error {
                plugin,
                error_kind: "no_route",
                fault: None,
                message: format!("no loaded plugin converts platform `{platform}`"),
            },
            crate::EXIT_FAILURE,
        ),
        Outcome::Failed(e) => (
            Output::Error {
                plugin,
                error_kind: "plugin_fault",
                fault: Some(e.kind().as_str()),
                message: e.to_string(),
            },
            crate::EXIT_FAILURE,
        ),
    };
    // Serializing these plain structs cannot fail; the fallback is still JSON.
    let text = serde_json::to_string(&out).unwrap_or_else(|e| {
        format!(
            "{{\"outcome\":\"error\",\"error_kind\":\"internal\",\"message\":{:?}}}",
            e.to_string()
        )
    });
    (text, code)
}

#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Output<'a> {
    Event {
        plugin: Option<&'a str>,
        events: &'a [ConvertedEvent],
    },
    Ignored {
        plugin: Option<&'a str>,
        reason: &'a str,
    },
    Error {
        plugin: Option<&'a str>,
        error_kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        fault: Option<&'a str>,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_plugin_host::RejectKind;

    #[test]
    fn outcomes_map_to_exit_codes() {
        let parse = |s: String| serde_json::from_str::<serde_json::Value>(&s).expect("JSON");
        let (v, code) = render(
            Some("p"),
            &Outcome::Rejected {
                kind: RejectKind::InvalidJson,
                message: "bad".into(),
            },
        );
        assert_eq!(code, 3);
        assert!(v.starts_with(r#"{"outcome":"error","plugin":"p","#), "{v}");
        assert_eq!(
            parse(v),
            serde_json::json!({"outcome":"error","plugin":"p","error_kind":"invalid_json","message":"bad"})
        );
        let (v, code) = render(
            None,
            &Outcome::Failed(PluginError::NoRoute {
                platform: "x".into(),
            }),
        );
        assert_eq!(
            (parse(v)["error_kind"].as_str(), code),
            (Some("no_route"), 1)
        );
        let (v, code) = render(Some("p"), &Outcome::Ignored("ping".into()));
        assert_eq!(
            (v.as_str(), code),
            (r#"{"outcome":"ignored","plugin":"p","reason":"ping"}"#, 0)
        );
    }
}
