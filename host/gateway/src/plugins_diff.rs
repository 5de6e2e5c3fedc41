//! `plugins diff --plugins DIR --old NAME --new NAME --corpus CORPUS_DIR`:
//! the candidate against the plugin serving now, on every case of a corpus
//! (a hand-written one, or one `--record` kept of live traffic), before the
//! candidate sees a single live forward.
//!
//! stdout: `DIFF <case> [<mode>]: <field>: <old> → <new>` per differing
//! field (the outcome kind, the error kind, every event field), then one
//! summary line. Exit 0 when no case differs, 1 when one does.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use hermes_converter_sdk::testing;

use crate::args::DiffArgs;
use crate::plugins_test::{forward_of, runs};

/// Runs `plugins diff`.
pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(
        crate::args::LogFormat::Human,
        "warn,hermes_plugin_host::table=error",
    );
    let cases = testing::load_corpus(&args.corpus)
        .map_err(|e| anyhow!("cannot read the corpus in {}: {e}", args.corpus.display()))?;
    let (host, _) = crate::serving::load_plugins_blocking(&args.plugins, args.policy.as_deref())?;
    let loaded: Vec<String> = host.plugins().into_iter().map(|p| p.name).collect();
    for name in [&args.old, &args.new] {
        if !loaded.contains(name) {
            bail!(
                "no plugin named `{name}` in {} (loaded: {})",
                args.plugins.display(),
                loaded.join(", ")
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut out = std::io::stdout().lock();
    let (mut runs_total, mut differing) = (0usize, 0usize);
    for case in &cases {
        let forward = forward_of(case);
        for (mode, config) in runs(case) {
            runs_total += 1;
            let (old, new) = runtime.block_on(async {
                (
                    host.convert_as(&args.old, &forward, config.clone()).await,
                    host.convert_as(&args.new, &forward, config).await,
                )
            });
            let lines = hermes_plugin_host::differences(
                &hermes_plugin_host::comparable(&old),
                &hermes_plugin_host::comparable(&new),
            );
            if !lines.is_empty() {
                differing += 1;
            }
            for line in lines {
                let _ = writeln!(out, "DIFF {} [{}]: {line}", case.name(), mode.as_str());
            }
        }
    }
    let _ = writeln!(
        out,
        "{} cases, {runs_total} runs: {differing} differ ({} → {})",
        cases.len(),
        args.old,
        args.new
    );
    Ok(if differing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_FAILURE)
    })
}
