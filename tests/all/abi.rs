//! The plugin ABI's compatibility promise, with real components: the
//! first-party converters as they were built against WIT 0.1.0 (checked-in
//! fixtures, `tests/data/abi-0.1`) and as they are built now against 0.2.0
//! load in one host, convert every corpus case to the same events, and serve
//! different tenants of one platform side by side.

use std::path::{Path, PathBuf};
use std::process::Command;

use hermes_converter_sdk::testing::{self, Mode};
use hermes_plugin_host::{Conversion, Outcome, PluginHost};
use serde_json::Value;

use crate::corpus::{CORPORA, conversion_to_json, convert, corpus_dir, host_of};
use crate::support::{corpus_case, corpus_forward, gateway};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/abi-0.1")
}

pub(crate) fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

#[test]
fn the_0_1_fixtures_are_the_recorded_bytes() {
    use sha2::Digest as _;
    let sums = std::fs::read_to_string(fixtures().join("SHA256SUMS")).expect("SHA256SUMS");
    let mut checked = 0;
    for line in sums.lines() {
        let (digest, file) = line.split_once("  ").expect("`<digest>  <file>`");
        let bytes = std::fs::read(fixtures().join(file)).expect("fixture");
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), digest, "{file}");
        checked += 1;
    }
    assert_eq!(checked, 3, "discord, twilio and slack");
}

/// What a conversion means on the wire: the events and their reply routes,
/// the ignore reason, or the rejection. (A 0.1 plugin's informational
/// metadata and a 0.2 plugin's media content types never reach the wire.)
fn wire(conversion: &Conversion) -> Value {
    match &conversion.outcome {
        Outcome::Events(events) => Value::Array(
            events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "event": serde_json::to_value(&e.event).expect("event JSON"),
                        "reply_route": format!("{:?}", e.reply_route),
                    })
                })
                .collect(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_corpus_converts_the_same_through_0_1_and_0_2_builds() {
    let (old, _old_dir) = host_of([
        ("discord.wasm", &fixture("discord.wasm")),
        ("twilio.wasm", &fixture("twilio.wasm")),
        ("slack.wasm", &fixture("slack.wasm")),
    ]);
    let (new, _new_dir) = host_of([
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
        ("twilio.wasm", hermes_plugin_artifacts::TWILIO),
        ("slack.wasm", hermes_plugin_artifacts::SLACK),
    ]);
    let versions = |host: &PluginHost| -> Vec<String> {
        host.plugins().into_iter().map(|p| p.api_version).collect()
    };
    assert_eq!(versions(&old), ["0.1.0"; 3], "the fixtures are 0.1 builds");
    assert_eq!(
        versions(&new),
        ["0.2.0"; 3],
        "the first-party converters are 0.2 builds"
    );

    let mut compared = 0;
    for name in CORPORA {
        let cases = testing::load_corpus(&corpus_dir(name)).expect("corpus loads");
        for case in &cases {
            for mode in Mode::ALL {
                let (a, b) = (
                    convert(&old, case, mode).await,
                    convert(&new, case, mode).await,
                );
                for (version, c) in [("0.1", &a), ("0.2", &b)] {
                    if let Err(line) = testing::check_json(case, mode, &conversion_to_json(c)) {
                        panic!("{version} build: {line}");
                    }
                }
                assert_eq!(
                    wire(&a),
                    wire(&b),
                    "{} [{}]: the 0.1 and 0.2 builds differ",
                    case.name(),
                    mode.as_str()
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 100, "{compared} comparisons");
}

/// `discord` forwards of one guild go to a 0.2 plugin by a tenant route;
/// every other guild stays on the 0.1 build of the Discord converter. Both
/// load in one host, routed by the 0.1 plugin's own `tenant-of`.
#[test]
fn a_0_1_and_a_0_2_plugin_serve_different_tenants_of_one_platform() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = home.path().join("plugins");
    std::fs::create_dir(&plugins).expect("dir");
    std::fs::copy(fixture("discord.wasm"), plugins.join("discord.wasm")).expect("copy");
    std::fs::copy(hermes_plugin_artifacts::HOSTILE, plugins.join("other.wasm")).expect("copy");

    let case = corpus_case("discord/guild_slash_simple.json");
    let forward = corpus_forward(&case);
    let body: Value = serde_json::from_slice(&forward.body).expect("JSON body");
    let guild = body["guild_id"].as_str().expect("a guild interaction");
    let policy = format!(
        "[platform.discord]\nplugin = \"discord-interactions\"\n\n[[route]]\nplatform = \"discord\"\ntenant = \"other-{guild}\"\nplugin = \"hostile\"\n"
    );
    std::fs::write(plugins.join("policy.toml"), &policy).expect("policy");

    let o = gateway(home.path())
        .args(["plugins", "check"])
        .arg(&plugins)
        .output()
        .expect("plugins check");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("discord-interactions") && l.contains("api 0.1.0")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("hostile") && l.contains("api 0.2.0")),
        "{out}"
    );

    let convert_for = |tenant_guild: &str| -> Value {
        let mut body = body.clone();
        body["guild_id"] = tenant_guild.into();
        let file = home.path().join("body.json");
        std::fs::write(&file, body.to_string()).expect("body");
        let mut cmd: Command = gateway(home.path());
        cmd.args(["convert", "--plugins"])
            .arg(&plugins)
            .args(["--platform", "discord", "--body-file"])
            .arg(&file);
        for (name, value) in &forward.headers {
            if name != "content-length" {
                cmd.args(["--header", &format!("{name}: {value}")]);
            }
        }
        let o = cmd.output().expect("convert");
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
    };
    let default_tenant = convert_for(guild);
    assert_eq!(
        default_tenant["plugin"], "discord-interactions",
        "{default_tenant}"
    );
    assert_eq!(
        default_tenant["events"][0]["text"], case["expect"]["events"][0]["text"],
        "the 0.1 build converts as the corpus says"
    );
    let routed = convert_for(&format!("other-{guild}"));
    assert_eq!(routed["plugin"], "hostile", "{routed}");
}

/// An operator who lowers an output cap: a 0.2 plugin reads the active caps
/// (`host.limits`) and answers over-cap output with a typed rejection; a 0.1
/// plugin only knows the defaults, so the same output is a plugin fault.
#[tokio::test(flavor = "multi_thread")]
async fn lowered_caps_are_a_rejection_for_0_2_and_a_fault_for_0_1() {
    use hermes_plugin_host::{Limits, PluginError, PluginHostConfig, RejectKind};
    let case = corpus_case("discord/guild_slash_simple.json");
    let forward = corpus_forward(&case);
    let limits = Limits {
        max_event_text_bytes: 8,
        ..Limits::default()
    };
    let mut outcomes = Vec::new();
    for artifact in [
        fixture("discord.wasm").as_str(),
        hermes_plugin_artifacts::DISCORD,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(artifact, dir.path().join("discord.wasm")).expect("copy");
        let mut config = PluginHostConfig::new(dir.path());
        config.limits = limits.clone();
        let (host, report) = PluginHost::load(config).expect("loads");
        assert!(report.is_clean(), "{:?}", report.errors);
        outcomes.push(host.convert(&forward).await.outcome);
    }
    assert!(
        matches!(&outcomes[0], Outcome::Failed(PluginError::BadOutput(_))),
        "0.1: {:?}",
        outcomes[0]
    );
    assert!(
        matches!(
            &outcomes[1],
            Outcome::Rejected {
                kind: RejectKind::InvalidField,
                ..
            }
        ),
        "0.2: {:?}",
        outcomes[1]
    );
}
