//! `plugins check DIR`: load the directory exactly as `run` would and print
//! what would be routed where. Exit 1 when any file failed to load.

use std::io::Write;
use std::process::ExitCode;

use hermes_plugin_host::{LoadReport, RoutingTable};

use crate::args::CheckArgs;

/// Runs `plugins check`.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    // The listing below reports every bad file; the host's own warnings
    // would say it twice (RUST_LOG still turns them on).
    crate::logging::init(crate::args::LogFormat::Human, "error");
    // Loading compiles and runs `describe()` on the calling thread, outside
    // any async runtime: nothing here converts.
    let (host, report) = crate::serving::load_plugins_blocking(&args.dir, args.policy.as_deref())?;

    let text = render(&report, &host.routing_table());
    // A closed stdout (piped into `head`) is not a plugin problem.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());

    if report.errors.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut err = std::io::stderr().lock();
    for e in &report.errors {
        // One line per file, whatever the underlying message looks like.
        let line = crate::text::one_line(&e.to_string());
        let _ = writeln!(err, "error: {line}");
    }
    let _ = writeln!(
        err,
        "error: {} of the plugin files or policy entries failed to load",
        report.errors.len()
    );
    Ok(ExitCode::from(crate::EXIT_FAILURE))
}

/// The human listing: plugins, then the routing table.
pub fn render(report: &LoadReport, table: &RoutingTable) -> String {
    let mut out = String::new();
    out.push_str(&format!("plugins ({}):\n", report.loaded.len()));
    for p in &report.loaded {
        // Where it came from: its registry pin, or its file.
        let from = p.source.clone().unwrap_or_else(|| {
            p.file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.file.display().to_string())
        });
        out.push_str(&format!(
            "  {} {}  api {}  platforms: {}  ({from})\n",
            p.name,
            p.version,
            p.api_version,
            p.platforms.join(", ")
        ));
        // The bytes' digest: equal on two gateways means the same converter.
        out.push_str(&format!("    sha256:{}\n", p.sha256));
    }
    out.push_str("routing:\n");
    if table.defaults.is_empty() && table.routes.is_empty() {
        out.push_str("  (nothing routes)\n");
    }
    for (platform, plugin) in &table.defaults {
        out.push_str(&format!("  {platform} -> {plugin}\n"));
    }
    for r in &table.routes {
        let mut when = Vec::new();
        if let Some(p) = &r.platform {
            when.push(format!("platform={p}"));
        }
        if let Some(t) = &r.tenant {
            when.push(format!("tenant={t}"));
        }
        if let Some(p) = &r.profile {
            when.push(format!("profile={p}"));
        }
        let config = if r.config.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = r.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("  config: {}", pairs.join(", "))
        };
        out.push_str(&format!("  {} -> {}{config}\n", when.join(" "), r.plugin));
    }
    out
}
