//! `plugins push FILE REF`: a converter component published to an OCI
//! registry. The component is loaded first, as `run` would load it (so a
//! file that would not load is never published), and its `describe()`
//! names the artifact's annotations.

use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use hermes_plugin_host::{PluginHost, PluginHostConfig};

use crate::args::PushArgs;

/// Runs `plugins push`.
pub fn run(args: PushArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(crate::args::LogFormat::Human, "warn");
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    // Load it alone, from a private copy, exactly as a gateway would.
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let name = args
        .file
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file", args.file.display()))?;
    std::fs::write(dir.path().join(name), &bytes).context("cannot stage the component")?;
    let (host, report) = PluginHost::load(PluginHostConfig::new(dir.path()))?;
    if let Some(e) = report.errors.first() {
        bail!(
            "{} does not load, so it is not published: {e}",
            args.file.display()
        );
    }
    let plugin = host
        .plugins()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{} is not a converter component", args.file.display()))?;
    let describe = hermes_oci::Describe {
        name: plugin.name,
        version: plugin.version,
        platforms: plugin.platforms,
        wit_version: plugin.api_version,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let digest = runtime
        .block_on(hermes_oci::push(bytes, &args.reference, &describe))
        .map_err(|e| anyhow!("push to {}: {e}", args.reference))?;
    let target = args
        .reference
        .strip_prefix(hermes_oci::SCHEME)
        .unwrap_or(&args.reference);
    let repository = target.rsplit_once(':').map_or(target, |(repo, tag)| {
        // `HOST:PORT/REPO` without a tag has its colon before the slash.
        if tag.contains('/') { target } else { repo }
    });
    println!("{digest}");
    println!("pin: {}{repository}@{digest}", hermes_oci::SCHEME);
    Ok(ExitCode::SUCCESS)
}
