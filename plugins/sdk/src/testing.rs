//! Test support: load a webhook corpus (`tests/data/corpus*`), run its cases
//! and compare outcomes with the manifest's expectations.
//!
//! Enabled by the `testing` feature. Both the converters' native tests and
//! the end-to-end tests (which run the compiled components) use it, so every
//! path is held to the same comparison:
//!
//! ```ignore
//! use hermes_converter_sdk::{testing, Converter};
//!
//! let cases = testing::load_corpus(dir)?;
//! for case in cases.iter().filter(|c| c.platform == "discord") {
//!     for mode in testing::Mode::ALL {
//!         let outcome = MyConverter::convert(&case.request, mode.config());
//!         testing::check_case(case, mode, &outcome)?;
//!     }
//! }
//! ```

use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Config, Outcome, ReplyRoute, Request};

/// One corpus case: its manifest entry and the request it describes.
#[derive(Debug, Clone)]
pub struct Case {
    /// The corpus directory's name (`corpus`, `corpus-outside`).
    pub corpus: String,
    /// The body file, relative to the corpus directory.
    pub file: String,
    /// `forward.platform`: the converter the case is for.
    pub platform: String,
    /// The request, built from `forward` and the body file.
    pub request: Request,
    /// The case's whole manifest entry (`expect`, `config`, ...).
    pub entry: Value,
}

impl Case {
    /// `corpus/file`, for messages.
    pub fn name(&self) -> String {
        format!("{}/{}", self.corpus, self.file)
    }

    /// The expected outcome (`expect`).
    pub fn expect(&self) -> &Value {
        &self.entry["expect"]
    }

    /// The tenant config the case arrives under when it is run only once.
    pub fn own_mode(&self) -> Mode {
        if self.entry["config"]["options"] == "named" {
            Mode::Named
        } else {
            Mode::Positional
        }
    }
}

/// The two ways every case is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No tenant config: compare `text`.
    Positional,
    /// Tenant config `options = "named"`: compare `text_named` where present.
    Named,
}

impl Mode {
    /// Both modes.
    pub const ALL: [Mode; 2] = [Mode::Positional, Mode::Named];

    /// The tenant configuration of this mode.
    pub fn config(self) -> &'static dyn Config {
        match self {
            Mode::Positional => &(),
            Mode::Named => &NamedOptions,
        }
    }

    /// The config as key/value pairs (for hosts that take a map).
    pub fn pairs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Mode::Positional => &[],
            Mode::Named => &[("options", "named")],
        }
    }

    /// `positional` / `named`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Positional => "positional",
            Mode::Named => "named",
        }
    }
}

/// `options = "named"` and nothing else.
struct NamedOptions;

impl Config for NamedOptions {
    fn get(&self, key: &str) -> Option<String> {
        (key == "options").then(|| "named".to_owned())
    }
}

/// Load every case of the corpus in `dir` (which holds `manifest.json`),
/// checking each body file against the manifest's `body_bytes` and
/// `body_sha256`.
pub fn load_corpus(dir: &Path) -> Result<Vec<Case>, String> {
    let corpus = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = read_manifest(dir)?;
    let entries = manifest["cases"]
        .as_array()
        .ok_or("manifest has no cases array")?;
    entries
        .iter()
        .map(|entry| load_case(dir, &corpus, entry))
        .collect()
}

/// How many cases the manifest in `dir` lists for `platform`, read straight
/// from the manifest (so a test can check that none were skipped).
pub fn manifest_count(dir: &Path, platform: &str) -> Result<usize, String> {
    let manifest = read_manifest(dir)?;
    let entries = manifest["cases"]
        .as_array()
        .ok_or("manifest has no cases array")?;
    Ok(entries
        .iter()
        .filter(|e| e["forward"]["platform"] == platform)
        .count())
}

fn read_manifest(dir: &Path) -> Result<Value, String> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn load_case(dir: &Path, corpus: &str, entry: &Value) -> Result<Case, String> {
    let file = entry["file"]
        .as_str()
        .ok_or("case without file")?
        .to_owned();
    let name = format!("{corpus}/{file}");
    let body = std::fs::read(dir.join(&file)).map_err(|e| format!("{name}: {e}"))?;
    if entry["body_bytes"].as_u64() != Some(body.len() as u64) {
        return Err(format!(
            "{name}: body is {} bytes, manifest says {}",
            body.len(),
            entry["body_bytes"]
        ));
    }
    let digest = hex::encode(Sha256::digest(&body));
    if entry["body_sha256"].as_str() != Some(digest.as_str()) {
        return Err(format!(
            "{name}: body sha256 {digest}, manifest says {}",
            entry["body_sha256"]
        ));
    }
    let forward = &entry["forward"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let headers = forward["headers"]
        .as_array()
        .ok_or_else(|| format!("{name}: forward.headers is not an array"))?
        .iter()
        .map(|h| (text(&h[0]), text(&h[1])))
        .collect();
    let request = Request {
        platform: text(&forward["platform"]),
        bot_id: text(&forward["bot_id"]),
        method: text(&forward["method"]),
        path: text(&forward["path"]),
        headers,
        body,
        // A recorded case keeps its forward's profile (it may pick a route).
        profile: forward["profile"].as_str().map(str::to_owned),
    };
    Ok(Case {
        corpus: corpus.to_owned(),
        file,
        platform: request.platform.clone(),
        request,
        entry: entry.clone(),
    })
}

/// An outcome in the manifest's expectation shape: `{"outcome":"event",
/// "events":[…]}`, `{"outcome":"ignored","reason":…}` or
/// `{"outcome":"error","error_kind":…,"message":…}`. Events carry every field
/// (unset ones as `null`), `source` every SessionSource key, `metadata` as
/// the empty object the host writes for a WIT 0.2 plugin, and
/// `media_types` when any media item has a content type.
pub fn outcome_to_json(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Ignored(reason) => json!({"outcome": "ignored", "reason": reason}),
        Outcome::Error(e) => {
            json!({"outcome": "error", "error_kind": e.kind.as_str(), "message": e.message})
        }
        Outcome::Events(events) => {
            let events: Vec<Value> = events
                .iter()
                .map(|e| {
                    let s = &e.source;
                    let prompt_response = e.prompt_response.as_ref().map(|p| {
                        let mut v = json!({
                            "prompt_id": p.prompt_id,
                            "option_id": p.option_id,
                            "prompt_message_id": p.prompt_message_id,
                        });
                        if let Some(label) = &p.label {
                            v["label"] = json!(label);
                        }
                        v
                    });
                    let reply_route = match &e.reply_route {
                        ReplyRoute::Send => json!({"op": "send"}),
                        ReplyRoute::FollowUp(kind) => json!({"op": "follow_up", "kind": kind}),
                    };
                    let mut event = json!({
                        "text": e.text,
                        "message_type": e.message_type.as_str(),
                        "message_id": e.message_id,
                        "reply_to_message_id": e.reply_to_message_id,
                        "media_urls": e.media.iter().map(|m| m.url.as_str()).collect::<Vec<_>>(),
                        "prompt_response": prompt_response,
                        "is_bot": s.is_bot,
                        "reply_route": reply_route,
                        "source": {
                            "platform": s.platform,
                            "chat_id": s.chat_id,
                            "chat_type": s.chat_type.as_str(),
                            "chat_name": s.chat_name,
                            "user_id": s.user_id,
                            "user_name": s.user_name,
                            "thread_id": s.thread_id,
                            "chat_topic": s.chat_topic,
                            "user_id_alt": s.user_id_alt,
                            "chat_id_alt": s.chat_id_alt,
                            "scope_id": s.scope_id,
                            "guild_id": s.scope_id,
                            "parent_chat_id": s.parent_chat_id,
                            "message_id": s.message_id,
                            "profile": s.profile,
                            "is_bot": s.is_bot,
                            "message_is_edit": s.message_is_edit,
                        },
                        "metadata": {},
                    });
                    // As the host writes it: only when a content type is known.
                    if e.media.iter().any(|m| m.content_type.is_some()) {
                        let types: Vec<Option<&str>> =
                            e.media.iter().map(|m| m.content_type.as_deref()).collect();
                        event["media_types"] = json!(types);
                    }
                    event
                })
                .collect();
            json!({"outcome": "event", "events": events})
        }
    }
}

/// Compare an outcome with the case's expectation in `mode`. Every key of
/// the expectation is compared (`text_named` replaces `text` in named mode;
/// `extras` is informational and skipped). The error is one line naming the
/// case, the mode and the field.
pub fn check_case(case: &Case, mode: Mode, outcome: &Outcome) -> Result<(), String> {
    check_json(case, mode, &outcome_to_json(outcome))
}

/// [`check_case`] for an outcome already in [`outcome_to_json`]'s shape (as
/// `hermes-gateway convert` prints it, for instance).
pub fn check_json(case: &Case, mode: Mode, actual: &Value) -> Result<(), String> {
    let expect = case.expect();
    let fail = |field: &str, want: &Value, got: &Value| {
        Err(format!(
            "{} [{}]: {field}: expected {want}, got {got}",
            case.name(),
            mode.as_str()
        ))
    };
    let null = Value::Null;
    let want_outcome = &expect["outcome"];
    if actual["outcome"] != *want_outcome {
        let got = json!(format!("{} {}", actual["outcome"], describe_other(actual)));
        return fail("outcome", want_outcome, &got);
    }
    match want_outcome.as_str() {
        Some("ignored") => {
            if actual["reason"] != expect["reason"] {
                return fail("reason", &expect["reason"], &actual["reason"]);
            }
        }
        Some("error") => {
            if actual["error_kind"] != expect["error_kind"] {
                let got = json!(format!("{} ({})", actual["error_kind"], actual["message"]));
                return fail("error_kind", &expect["error_kind"], &got);
            }
        }
        Some("event") => {
            let want_events = expect["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let got_events = actual["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if want_events.len() != got_events.len() {
                return fail(
                    "events.len",
                    &json!(want_events.len()),
                    &json!(got_events.len()),
                );
            }
            for (i, (want, got)) in want_events.iter().zip(got_events).enumerate() {
                let fields = want
                    .as_object()
                    .ok_or_else(|| format!("{}: event is not an object", case.name()))?;
                for (key, want_value) in fields {
                    match key.as_str() {
                        "text_named" | "extras" => continue,
                        "text" => {
                            let want_text = match (mode, want.get("text_named")) {
                                (Mode::Named, Some(named)) => named,
                                _ => want_value,
                            };
                            if got["text"] != *want_text {
                                return fail(&format!("events[{i}].text"), want_text, &got["text"]);
                            }
                        }
                        "source" => {
                            let source_fields = want_value.as_object().into_iter().flatten();
                            for (skey, swant) in source_fields {
                                let sgot = got["source"].get(skey).unwrap_or(&null);
                                if sgot != swant {
                                    return fail(
                                        &format!("events[{i}].source.{skey}"),
                                        swant,
                                        sgot,
                                    );
                                }
                            }
                        }
                        _ => {
                            let value = got.get(key).unwrap_or(&null);
                            if value != want_value {
                                return fail(&format!("events[{i}].{key}"), want_value, value);
                            }
                        }
                    }
                }
            }
        }
        _ => {
            return Err(format!(
                "{}: unknown expected outcome {want_outcome}",
                case.name()
            ));
        }
    }
    Ok(())
}

/// The detail of an unexpected outcome, for the one-line message.
fn describe_other(actual: &Value) -> String {
    match actual["outcome"].as_str() {
        Some("error") => format!("{} ({})", actual["error_kind"], actual["message"]),
        Some("ignored") => actual["reason"].to_string(),
        Some("event") => actual["events"][0]["text"].to_string(),
        _ => String::new(),
    }
}

/// What [`run_corpus`] found.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// How many cases of the platform ran (each in both modes).
    pub cases: usize,
    /// Cases that passed, per mode in [`Mode::ALL`] order.
    pub passed: [usize; 2],
    /// One line per failing case and mode.
    pub failures: Vec<String>,
}

/// Run every case of the corpus in `dir` whose forward is for `platform`
/// through `convert`, in both modes, checking each against its expectation.
/// Errors only if the corpus cannot be loaded.
pub fn run_corpus(
    dir: &Path,
    platform: &str,
    convert: impl Fn(&Request, &dyn Config) -> Outcome,
) -> Result<RunReport, String> {
    let mut report = RunReport::default();
    for case in load_corpus(dir)?.iter().filter(|c| c.platform == platform) {
        report.cases += 1;
        for (i, mode) in Mode::ALL.into_iter().enumerate() {
            let outcome = convert(&case.request, mode.config());
            match check_case(case, mode, &outcome) {
                Ok(()) => {
                    if let Some(passed) = report.passed.get_mut(i) {
                        *passed += 1;
                    }
                }
                Err(line) => report.failures.push(line),
            }
        }
    }
    Ok(report)
}

/// Asserts that every `platform` case of the corpus in `dir` passes through
/// `convert` in both modes, and that as many ran as the manifest lists (a
/// skipped case fails). This is the whole corpus test of a converter crate.
///
/// # Panics
///
/// On any failing case (one line each), an unreadable corpus, or a count
/// that differs from the manifest's.
pub fn assert_corpus_passes(
    dir: &Path,
    platform: &str,
    convert: impl Fn(&Request, &dyn Config) -> Outcome,
) {
    let name = dir.display();
    let report =
        run_corpus(dir, platform, convert).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let listed = manifest_count(dir, platform).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "{name}: {} {platform} cases, positional {} passed, named {} passed",
        report.cases, report.passed[0], report.passed[1]
    );
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    assert!(listed > 0, "{name} lists no {platform} cases");
    assert_eq!(
        report.cases, listed,
        "{name}: ran {} of the {listed} {platform} cases",
        report.cases
    );
    assert_eq!(
        report.passed,
        [listed, listed],
        "{name}: not every case passed in both modes"
    );
}

/// The in-repo copy of a corpus (`corpus` or `corpus-outside`) seen from a
/// crate two levels below the workspace root (`plugins/NAME`).
pub fn corpus_dir(manifest_dir: &str, name: &str) -> std::path::PathBuf {
    Path::new(manifest_dir).join("../../tests/data").join(name)
}

/// Fuzzes `convert` with mutants of the bodies of every `platform` case in
/// both corpora under `data_dir` (`tests/data`; see [`crate::fuzz`]), in both modes, for
/// [`fuzz::budget`](crate::fuzz::budget): no input may panic the
/// converter, and whatever it returns must pass the output caps check.
///
/// # Panics
///
/// When the converter panics (the input is saved; see [`crate::fuzz::run`])
/// or a corpus cannot be loaded.
pub fn fuzz_converter(
    data_dir: &Path,
    platform: &str,
    convert: impl Fn(&Request, &dyn Config) -> Outcome,
) -> crate::fuzz::Report {
    let mut cases = Vec::new();
    for corpus in ["corpus", "corpus-outside"] {
        let dir = data_dir.join(corpus);
        let loaded = load_corpus(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
        cases.extend(loaded.into_iter().filter(|c| c.platform == platform));
    }
    assert!(!cases.is_empty(), "no {platform} cases to start from");
    let seeds: Vec<Vec<u8>> = cases.iter().map(|c| c.request.body.clone()).collect();
    let mut request = cases[0].request.clone();
    let mut next = 0usize;
    crate::fuzz::run(
        &format!("converter-{platform}"),
        &seeds,
        crate::fuzz::budget(),
        |body| {
            // Headers (content type, signatures already stripped) rotate with
            // the cases, so each shape of request sees mutated bodies.
            let case = &cases[next % cases.len()];
            next += 1;
            request.headers.clone_from(&case.request.headers);
            request.body.clear();
            request.body.extend_from_slice(body);
            for mode in Mode::ALL {
                let outcome = convert(&request, mode.config());
                let _ = crate::check_output_caps(outcome);
            }
        },
    )
}
