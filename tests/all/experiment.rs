//! Safe converter swaps with real compiled plugins: the first-party Discord
//! converter serving, `discord-next` (a test guest that renders commands
//! its own way and traps on `/boom`) as the candidate — in shadow, as a
//! canary, and offline with `plugins diff`.

use std::path::Path;
use std::time::{Duration, Instant};

use hermes_plugin_host::{ExperimentReport, Outcome, PluginHost, PluginHostConfig};
use hermes_protocol::forward::PassthroughForward;
use serde_json::Value;

use crate::support::{corpus_case, corpus_dir, corpus_forward, gateway};

/// A host over the Discord converter and the candidate, with `policy`.
fn host(dir: &Path, policy: &str) -> PluginHost {
    for (name, artifact) in [
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
        ("next.wasm", hermes_plugin_artifacts::DISCORD_NEXT),
    ] {
        std::fs::copy(artifact, dir.join(name)).expect("copy");
    }
    std::fs::write(dir.join("policy.toml"), policy).expect("policy");
    let (host, report) = PluginHost::load(PluginHostConfig::new(dir)).expect("loads");
    assert!(report.is_clean(), "{:?}", report.errors);
    host
}

/// The corpus's simple guild slash command, with its command name and
/// author changed as given (one author, one conversation: the session key
/// of a guild channel is per user).
fn slash(name: &str, user: &str) -> PassthroughForward {
    let mut forward = corpus_forward(&corpus_case("discord/guild_slash_simple.json"));
    let mut body: Value = serde_json::from_slice(&forward.body).expect("JSON");
    body["data"]["name"] = name.into();
    body["member"]["user"]["id"] = user.into();
    forward.body = body.to_string().into_bytes();
    forward
}

/// The one experiment, once `done` says it has what the test waits for.
/// The shadow runs on a thread of its own and says nothing when it is done,
/// so this polls its counters, for at most 30 s.
fn experiment(host: &PluginHost, done: impl Fn(&ExperimentReport) -> bool) -> ExperimentReport {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = host.experiments().into_iter().next().filter(|r| done(r)) {
            return r;
        }
        assert!(Instant::now() < deadline, "{:?}", host.experiments());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_candidate_shows_its_differences_and_changes_nothing_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(
        dir.path(),
        "[platform.discord]\nplugin = \"discord-interactions\"\nshadow = \"discord-next\"\nshadow_sample = 1.0\n",
    );
    let log = dir.path().join("shadow.jsonl");
    host.set_shadow_log(log.clone(), false).expect("log");
    let case = corpus_case("discord/guild_slash_simple.json");
    let live = host.convert(&corpus_forward(&case)).await;
    assert_eq!(live.plugin.as_deref(), Some("discord-interactions"));
    let Outcome::Events(events) = &live.outcome else {
        panic!("{live:?}");
    };
    assert_eq!(
        Some(events[0].event.text.as_str()),
        case["expect"]["events"][0]["text"].as_str(),
        "the live reply is the active plugin's"
    );

    let report = experiment(&host, |r| r.compared == 1);
    assert_eq!(
        (
            report.route.as_str(),
            report.candidate.as_str(),
            report.kind
        ),
        ("platform discord", "discord-next", "shadow")
    );
    assert_eq!((report.agreed, report.differed, report.dropped), (0, 1, 0));
    let latest = report.latest.back().expect("the difference");
    assert!(
        latest
            .iter()
            .any(|l| l.starts_with("events[0].text: ") && l.ends_with("(next)\"")),
        "{latest:?}"
    );
    let line = std::fs::read_to_string(&log).expect("log written");
    let entry: Value = serde_json::from_str(line.lines().next().expect("a line")).expect("JSON");
    assert_eq!(entry["active"]["plugin"], "discord-interactions");
    assert_eq!(entry["candidate"]["plugin"], "discord-next");
    assert!(
        entry.get("body_b64").is_none(),
        "bodies only when asked for"
    );
    assert!(
        !line.contains("Discord-Interactions/1.0"),
        "no header value is logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_canary_is_contained_and_rolled_back_until_the_next_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(
        dir.path(),
        "[platform.discord]\nplugin = \"discord-interactions\"\ncanary = { plugin = \"discord-next\", percent = 100, window = 10 }\n",
    );
    for _ in 0..12 {
        let c = host.convert(&slash("boom", "100000000000000004")).await;
        // Contained: whatever the candidate did, the user gets an answer.
        assert_eq!(c.plugin.as_deref(), Some("discord-interactions"), "{c:?}");
        assert!(matches!(c.outcome, Outcome::Events(_)), "{c:?}");
    }
    let report = experiment(&host, |r| r.rolled_back.is_some());
    assert_eq!(report.served, 0);
    assert!(report.candidate_faulted >= 10, "{report:?}");
    assert!(
        report
            .rolled_back
            .as_deref()
            .is_some_and(|r| r.starts_with("fault rate 100%")),
        "{report:?}"
    );
    assert_eq!(host.host_counters().canary_rollbacks, 1);
    let faulted = report.candidate_faulted;
    host.convert(&slash("boom", "100000000000000004")).await;
    assert_eq!(
        experiment(&host, |_| true).candidate_faulted,
        faulted,
        "rolled back: the candidate is not asked any more"
    );
    host.reload_blocking();
    assert_eq!(
        experiment(&host, |_| true).rolled_back,
        None,
        "a reload puts it back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_keeps_each_conversation_on_one_converter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(
        dir.path(),
        "[platform.discord]\nplugin = \"discord-interactions\"\ncanary = { plugin = \"discord-next\", percent = 50 }\n",
    );
    let mut by_plugin = std::collections::BTreeMap::<String, usize>::new();
    for n in 0..24 {
        let user = format!("1000000000000{n:05}");
        let first = host.convert(&slash("kiln", &user)).await.plugin;
        for _ in 0..3 {
            let again = host.convert(&slash("kiln", &user)).await.plugin;
            assert_eq!(again, first, "conversation of {user} flipped");
        }
        *by_plugin.entry(first.unwrap_or_default()).or_default() += 1;
    }
    assert_eq!(
        by_plugin.len(),
        2,
        "both serve some conversations: {by_plugin:?} {:?}",
        host.experiments()
    );
}

#[test]
fn plugins_diff_runs_a_corpus_through_both_and_names_each_difference() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = home.path().join("plugins");
    std::fs::create_dir(&plugins).expect("dir");
    for (name, artifact) in [
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
        ("next.wasm", hermes_plugin_artifacts::DISCORD_NEXT),
    ] {
        std::fs::copy(artifact, plugins.join(name)).expect("copy");
    }
    // Two plugins claim discord: the policy says which serves.
    std::fs::write(
        plugins.join("policy.toml"),
        "[platform.discord]\nplugin = \"discord-interactions\"\n",
    )
    .expect("policy");
    let diff = |old: &str, new: &str| {
        gateway(home.path())
            .args(["plugins", "diff", "--plugins"])
            .arg(&plugins)
            .args(["--old", old, "--new", new, "--corpus"])
            .arg(corpus_dir())
            .output()
            .expect("plugins diff")
    };
    let o = diff("discord-interactions", "discord-next");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with(
            "DIFF corpus/discord/guild_slash_simple.json [positional]: events[0].text: "
        )),
        "{stdout}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.ends_with("differ (discord-interactions → discord-next)"),
        "{summary}"
    );

    let o = diff("discord-interactions", "discord-interactions");
    assert_eq!(
        o.status.code(),
        Some(0),
        "a plugin does not differ from itself"
    );
}

/// A route reached by the tenant the plugin names (not a platform pin)
/// gets its experiment too, and only that tenant's forwards do.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_route_gets_its_canary_and_other_tenants_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(
        dir.path(),
        "[platform.discord]\nplugin = \"discord-interactions\"\n\n[[route]]\nplatform = \"discord\"\ntenant = \"111\"\nplugin = \"discord-interactions\"\ncanary = { plugin = \"discord-next\", percent = 100 }\n",
    );
    let in_guild = |guild: &str| {
        let mut forward = slash("ping", "100000000000000004");
        let mut body: Value = serde_json::from_slice(&forward.body).expect("JSON");
        body["guild_id"] = guild.into();
        forward.body = body.to_string().into_bytes();
        forward
    };
    let text = |c: &hermes_plugin_host::Conversion| match &c.outcome {
        Outcome::Events(events) => events[0].event.text.clone(),
        other => panic!("{other:?}"),
    };
    let canaried = host.convert(&in_guild("111")).await;
    assert_eq!(canaried.plugin.as_deref(), Some("discord-next"));
    assert!(text(&canaried).ends_with("(next)"), "{canaried:?}");
    let other = host.convert(&in_guild("222")).await;
    assert_eq!(other.plugin.as_deref(), Some("discord-interactions"));
    assert!(!text(&other).ends_with("(next)"), "{other:?}");
    let report = experiment(&host, |r| r.served == 1);
    assert_eq!(
        (report.route.as_str(), report.kind),
        ("route discord tenant=111", "canary")
    );
}
