//! `plugins test DIR --corpus CORPUS_DIR`: a corpus of recorded or
//! hand-written webhook requests through the routed plugins, each outcome
//! compared with its case's expectation by the same comparison the
//! first-party converters' own tests use (`hermes_converter_sdk::testing`).
//!
//! stdout: `FAIL <case> [<mode>]: <field>: expected <want>, got <got>` per
//! failing run, then one summary line. Exit 0 when every run passed, 1
//! otherwise (an empty corpus included: it proves nothing).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use hermes_converter_sdk::testing::{self, Case, Mode};
use hermes_plugin_host::PluginHost;
use hermes_protocol::forward::PassthroughForward;
use serde_json::Value;

use crate::args::TestArgs;

/// Runs `plugins test`.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(
        crate::args::LogFormat::Human,
        "warn,hermes_plugin_host::table=error",
    );
    let cases = testing::load_corpus(&args.corpus)
        .map_err(|e| anyhow!("cannot read the corpus in {}: {e}", args.corpus.display()))?;
    let (host, report) = crate::serving::load_plugins_blocking(&args.dir, args.policy.as_deref())?;
    for e in &report.errors {
        let line = crate::text::one_line(&e.to_string());
        eprintln!("warning: plugin file skipped: {line}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    let mut out = std::io::stdout().lock();
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &cases {
        for (mode, config) in runs(case) {
            let actual = runtime.block_on(outcome(&host, case, config));
            match testing::check_json(case, mode, &actual) {
                Ok(()) => passed += 1,
                Err(line) => {
                    failed += 1;
                    let _ = writeln!(out, "FAIL {line}");
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} cases, {} runs: {passed} passed, {failed} failed",
        cases.len(),
        passed + failed
    );
    if cases.is_empty() {
        let _ = writeln!(out, "the corpus has no cases: nothing was tested");
    }
    let ok = failed == 0 && !cases.is_empty();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_FAILURE)
    })
}

/// How a case runs: once under its own `config`, or in both modes.
pub(crate) fn runs(case: &Case) -> Vec<(Mode, BTreeMap<String, String>)> {
    if let Some(config) = case.entry.get("config").and_then(Value::as_object) {
        let pairs = config
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        return vec![(case.own_mode(), pairs)];
    }
    Mode::ALL
        .into_iter()
        .map(|mode| {
            let pairs = mode
                .pairs()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            (mode, pairs)
        })
        .collect()
}

/// The case's forward converted through routing, in the shape `convert`
/// prints (and [`testing::check_json`] reads). A plugin fault or a missing
/// route is an `error` outcome with its own kind, which an expectation of
/// an event or an ignore never matches.
async fn outcome(host: &PluginHost, case: &Case, config: BTreeMap<String, String>) -> Value {
    let forward = forward_of(case);
    let conversion = host.convert_with_config(&forward, config).await;
    let (line, _) = crate::convert::render(conversion.plugin.as_deref(), &conversion.outcome);
    serde_json::from_str(&line).unwrap_or(Value::Null)
}

/// The forward a corpus case describes.
pub(crate) fn forward_of(case: &Case) -> PassthroughForward {
    let r = &case.request;
    PassthroughForward {
        platform: r.platform.clone(),
        bot_id: r.bot_id.clone(),
        method: r.method.clone(),
        path: r.path.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
        profile: r.profile.clone(),
    }
}
