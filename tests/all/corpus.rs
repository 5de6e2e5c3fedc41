//! Every case of both webhook corpora (`tests/data/corpus`,
//! `tests/data/corpus-outside`) through the **real compiled converters**,
//! via the plugin host, in positional mode (no tenant config) and in named
//! mode (`options = "named"`), compared field by field with the manifests'
//! expectations by the same [`testing::check_json`] the native tests use.
//!
//! The host's [`Conversion`] is mapped to the manifest's expectation shape
//! by [`conversion_to_json`]; the host answers `empty_body` and
//! `payload_too_large` itself, before any guest runs, and those cases are
//! held to the same expectations. Each result is also compared with the same
//! converter called natively, so the WIT boundary is shown to add and lose
//! nothing (metadata included, which the manifests do not describe).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::future::join_all;
use hermes_converter_sdk::testing::{self, Case, Mode};
use hermes_converter_sdk::{Config, Converter, Request};
use hermes_plugin_discord::DiscordInteractions;
use hermes_plugin_host::{Conversion, Outcome, PluginHost, PluginHostConfig, ReplyRoute};
use hermes_plugin_slack::Slack;
use hermes_plugin_twilio::Twilio;
use hermes_protocol::forward::PassthroughForward;
use serde_json::{Value, json};

/// The corpora, by directory name under `tests/data`.
pub(crate) const CORPORA: [&str; 2] = ["corpus", "corpus-outside"];

pub(crate) fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// How many cases a manifest lists, read straight from the file (not through
/// the loader under test), so a skipped case cannot go unnoticed.
fn listed_cases(dir: &Path) -> usize {
    let path = dir.join("manifest.json");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&path).expect("read manifest"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    manifest["cases"].as_array().map_or(0, Vec::len)
}

/// A plugins directory holding the three first-party components, and the
/// one host that serves every case from it.
fn first_party_host() -> (PluginHost, tempfile::TempDir) {
    host_of([
        (
            "discord-interactions.wasm",
            hermes_plugin_artifacts::DISCORD,
        ),
        ("twilio.wasm", hermes_plugin_artifacts::TWILIO),
        ("slack.wasm", hermes_plugin_artifacts::SLACK),
    ])
}

/// A host over a directory holding these components (file name, path).
pub(crate) fn host_of(artifacts: [(&str, &str); 3]) -> (PluginHost, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, artifact) in artifacts {
        std::fs::copy(artifact, dir.path().join(name)).expect("copy artifact");
    }
    let (host, report) =
        PluginHost::load(PluginHostConfig::new(dir.path())).expect("plugin host loads");
    assert!(report.is_clean(), "load errors: {:?}", report.errors);
    (host, dir)
}

/// The forward the connector would have sent for a case.
fn forward(case: &Case) -> PassthroughForward {
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

/// Convert a case through the host in `mode`: positional has no tenant
/// configuration at all; named has exactly `options = "named"`.
pub(crate) async fn convert(host: &PluginHost, case: &Case, mode: Mode) -> Conversion {
    let forward = forward(case);
    match mode {
        Mode::Positional => host.convert(&forward).await,
        Mode::Named => {
            let config: BTreeMap<String, String> = mode
                .pairs()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            host.convert_with_config(&forward, config).await
        }
    }
}

/// A host conversion in the shape [`testing::outcome_to_json`] gives a
/// native outcome (and [`testing::check_json`] reads). Events are the host's
/// own JSON form of a converted event, the one `hermes-gateway convert`
/// prints. A contained
/// plugin failure has no counterpart in the manifests: it becomes
/// `{"outcome": "failed", ...}`, which never matches an expectation.
pub(crate) fn conversion_to_json(conversion: &Conversion) -> Value {
    match &conversion.outcome {
        Outcome::Ignored(reason) => json!({"outcome": "ignored", "reason": reason}),
        Outcome::Rejected { kind, message } => {
            json!({"outcome": "error", "error_kind": kind.as_str(), "message": message})
        }
        Outcome::Failed(error) => {
            json!({"outcome": "failed", "failure_kind": error.kind().as_str(), "message": error.to_string()})
        }
        Outcome::Events(events) => json!({"outcome": "event", "events": events}),
    }
}

type NativeConvert = fn(&Request, &dyn Config) -> hermes_converter_sdk::Outcome;

/// The same converter as plain Rust.
fn native(platform: &str) -> Option<NativeConvert> {
    match platform {
        "discord" => Some(DiscordInteractions::convert),
        "twilio" => Some(Twilio::convert),
        "slack" => Some(Slack::convert),
        _ => None,
    }
}

/// Everything a case produced in one mode that is not what it should be,
/// as one-line messages naming the case, the mode and the field.
fn check(host: &PluginHost, case: &Case, mode: Mode, conversion: &Conversion) -> Vec<String> {
    let at = format!("{} [{}]", case.name(), mode.as_str());
    let mut problems = Vec::new();
    let plugin = conversion.plugin.as_deref();
    let routed_right = host
        .plugins()
        .iter()
        .any(|p| Some(p.name.as_str()) == plugin && p.platforms.contains(&case.platform));
    if !routed_right {
        problems.push(format!(
            "{at}: plugin: {plugin:?} does not convert platform {}",
            case.platform
        ));
    }
    let actual = conversion_to_json(conversion);
    if let Outcome::Failed(error) = &conversion.outcome {
        problems.push(format!(
            "{at}: outcome: expected {}, got plugin failure: {error}",
            case.expect()["outcome"]
        ));
        return problems;
    }
    if let Err(line) = testing::check_json(case, mode, &actual) {
        problems.push(line);
        return problems;
    }
    // The sandboxed component against the same logic natively: equal in
    // everything, except the message of a rejection the host made itself
    // before the guest ran.
    let Some(native) = native(&case.platform) else {
        problems.push(format!(
            "{at}: platform: no native converter for {}",
            case.platform
        ));
        return problems;
    };
    let mut want = testing::outcome_to_json(&native(&case.request, mode.config()));
    let mut got = actual;
    let host_cap = ["empty_body", "payload_too_large"]
        .contains(&got["error_kind"].as_str().unwrap_or_default());
    if host_cap {
        want["message"] = Value::Null;
        got["message"] = Value::Null;
    }
    if want != got {
        problems.push(format!(
            "{at}: native: sandboxed {got} differs from native {want}"
        ));
    }
    problems
}

#[tokio::test(flavor = "multi_thread")]
async fn every_corpus_case_through_the_compiled_converters_in_both_modes() {
    let (host, _dir) = first_party_host();
    let mut cases = Vec::new();
    let mut listed = 0;
    for name in CORPORA {
        let dir = corpus_dir(name);
        listed += listed_cases(&dir);
        cases.extend(testing::load_corpus(&dir).unwrap_or_else(|e| panic!("loading {name}: {e}")));
    }

    // All conversions at once: the host's semaphore queues them onto its
    // worker pool, so the run takes as long as the cores need.
    let runs = cases.iter().flat_map(|case| {
        let host = &host;
        Mode::ALL.map(move |mode| async move { (case, mode, convert(host, case, mode).await) })
    });
    let results = join_all(runs).await;

    let mut failures = Vec::new();
    // Passes per corpus, [positional, named].
    let mut passed: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
    for (case, mode, conversion) in &results {
        let problems = check(&host, case, *mode, conversion);
        if problems.is_empty() {
            let counts = passed.entry(case.corpus.as_str()).or_default();
            counts[usize::from(*mode == Mode::Named)] += 1;
        }
        failures.extend(problems);
    }
    for (corpus, [positional, named]) in &passed {
        println!("{corpus}: positional {positional} passed, named {named} passed");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(listed > 0, "the manifests list no cases");
    assert_eq!(
        cases.len(),
        listed,
        "ran {} of the {listed} listed cases",
        cases.len()
    );
    let total: usize = passed.values().map(|[p, n]| p + n).sum();
    assert_eq!(total, 2 * listed, "not every case passed in both modes");
    // Nothing the corpora contain is a plugin fault.
    for (name, counters) in host.counters() {
        assert!(
            counters.failures.is_empty(),
            "{name} recorded failures: {counters:?}"
        );
    }
}

/// Named mode the way an operator sets it: `options = "named"` in the
/// policy file's platform configuration, read by the guest through its
/// `config` import, with no per-call override.
#[tokio::test(flavor = "multi_thread")]
async fn named_mode_from_the_policy_file() {
    let (_, dir) = first_party_host();
    let mut policy = String::new();
    for (platform, plugin) in [
        ("discord", "discord-interactions"),
        ("twilio", "twilio"),
        ("slack", "slack"),
    ] {
        policy.push_str(&format!(
            "[platform.{platform}]\nplugin = \"{plugin}\"\nconfig = {{ options = \"named\" }}\n\n"
        ));
    }
    std::fs::write(dir.path().join("policy.toml"), policy).expect("write policy");
    let (host, report) =
        PluginHost::load(PluginHostConfig::new(dir.path())).expect("plugin host loads");
    assert!(report.is_clean(), "load errors: {:?}", report.errors);

    let mut cases = Vec::new();
    for name in CORPORA {
        cases.extend(testing::load_corpus(&corpus_dir(name)).expect("corpus loads"));
    }
    let runs = cases.iter().map(|case| {
        let host = &host;
        async move { (case, host.convert(&forward(case)).await) }
    });
    let failures: Vec<String> = join_all(runs)
        .await
        .iter()
        .flat_map(|(case, conversion)| check(&host, case, Mode::Named, conversion))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The mapping and the comparison must notice a wrong field in what the host
/// returned, or the test above could pass vacuously.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_field_in_a_host_conversion_is_caught() {
    let (host, _dir) = first_party_host();
    let cases = testing::load_corpus(&corpus_dir("corpus")).expect("corpus loads");
    // A prompt answer: reply route, prompt response and ids all set.
    let case = cases
        .iter()
        .find(|c| !c.expect()["events"][0]["prompt_response"].is_null())
        .expect("the corpus has a prompt answer");
    let right = convert(&host, case, Mode::Named).await;
    assert_eq!(
        check(&host, case, Mode::Named, &right),
        Vec::<String>::new()
    );

    let wrong = |field: &str, change: &dyn Fn(&mut hermes_plugin_host::ConvertedEvent)| {
        let mut c = right.clone();
        if let Outcome::Events(events) = &mut c.outcome {
            events.iter_mut().for_each(change);
        }
        let err = testing::check_json(case, Mode::Named, &conversion_to_json(&c))
            .expect_err("a changed field must fail");
        assert!(
            err.contains(field) && err.contains("[named]"),
            "{field}: {err}"
        );
    };
    wrong("reply_route", &|e| e.reply_route = ReplyRoute::Send);
    wrong("prompt_response", &|e| e.event.prompt_response = None);
    wrong("source.user_id", &|e| {
        e.event.source.user_id = Some("1".to_owned())
    });
    wrong("source.chat_type", &|e| {
        e.event.source.chat_type = "thread".to_owned()
    });
    wrong("media_urls", &|e| {
        e.event
            .media_urls
            .push("https://example.com/a.png".to_owned())
    });
    wrong("source.scope_id", &|e| e.event.source.scope_id = None);
    wrong("events[0].text", &|e| e.event.text.push('!'));

    // A positional conversion checked as named: the text differs.
    let positional = convert(&host, case, Mode::Positional).await;
    let named_case = cases
        .iter()
        .find(|c| {
            let event = &c.expect()["events"][0];
            event
                .get("text_named")
                .is_some_and(|named| *named != event["text"])
        })
        .expect("the corpus has a named-mode case");
    let positional_named_case = convert(&host, named_case, Mode::Positional).await;
    let err = testing::check_json(
        named_case,
        Mode::Named,
        &conversion_to_json(&positional_named_case),
    )
    .expect_err("positional text in named mode");
    assert!(err.contains("events[0].text"), "{err}");
    assert_eq!(
        check(&host, case, Mode::Positional, &positional),
        Vec::<String>::new()
    );
}
