//! The converter trust boundary (conversion.md §3.1) against hostile guests
//! of our own: what a converter's output may claim, plugin names, log
//! forging, fairness between plugins, quarantine isolation and the file
//! watcher.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hermes_plugin_host::{
    Conversion, Limits, LoadError, LoadReport, Outcome, PluginError, PluginHost, PluginHostConfig,
    QuarantinePolicy,
};
use hermes_protocol::forward::PassthroughForward;
use serde_json::Value;

fn limits() -> Limits {
    Limits {
        quarantine: QuarantinePolicy {
            after_faults: 1000,
            ..QuarantinePolicy::default()
        },
        ..Limits::default()
    }
}

fn plugins_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, artifact) in files {
        std::fs::copy(artifact, dir.path().join(name)).expect("copy artifact");
    }
    dir
}

fn load(dir: &Path, limits: Limits) -> (PluginHost, LoadReport) {
    let mut config = PluginHostConfig::new(dir);
    config.limits = limits;
    PluginHost::load(config).expect("plugin host loads")
}

fn forward(platform: &str, body: &str) -> PassthroughForward {
    PassthroughForward {
        platform: platform.to_owned(),
        method: "POST".to_owned(),
        body: body.as_bytes().to_vec(),
        ..PassthroughForward::default()
    }
}

fn overreach(c: &Conversion) -> &str {
    match &c.outcome {
        Outcome::Failed(PluginError::Overreach(why)) => why,
        other => panic!("expected an overreach fault, got {other:?}"),
    }
}

fn events(c: &Conversion) -> usize {
    match &c.outcome {
        Outcome::Events(e) => e.len(),
        other => panic!("expected events, got {other:?}"),
    }
}

/// A corpus case from the in-repo copy: the forward and its expected first
/// event's source.
fn discord_case(file: &str) -> (PassthroughForward, Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    let case = manifest["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["file"] == file))
        .unwrap_or_else(|| panic!("{file} not in the corpus manifest"))
        .clone();
    let headers = case["forward"]["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| Some((h[0].as_str()?.to_owned(), h[1].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let fwd = PassthroughForward {
        platform: "discord".to_owned(),
        method: "POST".to_owned(),
        headers,
        body: std::fs::read(root.join(file)).expect("corpus body"),
        ..PassthroughForward::default()
    };
    (fwd, case["expect"]["events"][0]["source"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn events_claiming_another_platform_profile_or_capability_are_faults() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let (host, report) = load(dir.path(), limits());
    assert!(report.is_clean(), "{:?}", report.errors);
    // Its own platform, answered by `send`: fine.
    assert_eq!(
        events(&host.convert(&forward("hostile", "claim hostile")).await),
        1
    );
    // A Discord chat (and its guild) from a `hostile` forward.
    let c = host.convert(&forward("hostile", "claim discord")).await;
    assert!(overreach(&c).contains("\"discord\""), "{c:?}");
    // Another platform's capability, even for its own platform's chat.
    let c = host
        .convert(&forward(
            "hostile",
            "claim hostile discord.interaction_token",
        ))
        .await;
    assert!(overreach(&c).contains("discord.interaction_token"), "{c:?}");
    // A Twilio number from a `hostile` forward (an SMS to a victim).
    overreach(&host.convert(&forward("hostile", "claim sms")).await);
    // Another profile's sessions.
    overreach(
        &host
            .convert(&forward("hostile", "claim-profile coder"))
            .await,
    );
    // Faults, counted per plugin under their own kind.
    let counters = &host.counters()["hostile"];
    assert_eq!(counters.failures.get("overreach"), Some(&4), "{counters:?}");
    assert_eq!(counters.events, 1, "nothing of an overreach is delivered");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_grants_more_only_where_it_says_so() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    std::fs::write(
        dir.path().join("policy.toml"),
        r#"
[platform.hostile]
plugin = "hostile"
grant_platforms = ["discord"]

[[route]]
platform = "hostile"
tenant = "bridge"
plugin = "hostile"
grant_follow_up = ["discord.interaction_token"]
"#,
    )
    .expect("policy");
    let (host, report) = load(dir.path(), limits());
    assert!(report.is_clean(), "{:?}", report.errors);
    let tenant = |body: &str, t: &str| {
        let mut f = forward("hostile", body);
        f.headers.push(("x-tenant".to_owned(), t.to_owned()));
        f
    };
    // The platform grant: every `hostile` forward may produce `discord`.
    assert_eq!(
        events(&host.convert(&tenant("claim discord", "x")).await),
        1
    );
    // The follow-up kind only on the route that grants it.
    let claim = "claim discord discord.interaction_token";
    overreach(&host.convert(&tenant(claim, "x")).await);
    assert_eq!(events(&host.convert(&tenant(claim, "bridge")).await), 1);
    // Nothing granted reaches past what is named.
    overreach(
        &host
            .convert(&tenant("claim slack slack.response_url", "bridge"))
            .await,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_identifies_one_file_and_the_serving_file_keeps_it() {
    // At start nobody serves the name: both files are refused, both named.
    let dir = plugins_dir(&[
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
        ("aaa-squat.wasm", hermes_plugin_artifacts::SQUATTER),
    ]);
    let (host, report) = load(dir.path(), limits());
    let claimed: Vec<&LoadError> = report
        .errors
        .iter()
        .filter(|e| matches!(e, LoadError::NameClaimedTwice { .. }))
        .collect();
    assert_eq!(claimed.len(), 1, "{:?}", report.errors);
    let text = claimed[0].to_string();
    assert!(
        text.contains("discord.wasm") && text.contains("aaa-squat.wasm"),
        "{text}"
    );
    assert!(host.plugins().is_empty(), "neither file serves the name");
    drop(host);

    // Dropped in beside a serving plugin: refused, naming the refused file.
    let dir = plugins_dir(&[("discord.wasm", hermes_plugin_artifacts::DISCORD)]);
    let (host, report) = load(dir.path(), limits());
    assert!(report.is_clean(), "{:?}", report.errors);
    let (slash, _) = discord_case("discord/guild_slash_simple.json");
    assert_eq!(events(&host.convert(&slash).await), 1);
    std::fs::copy(
        hermes_plugin_artifacts::SQUATTER,
        dir.path().join("aaa-squat.wasm"),
    )
    .expect("copy");
    let report = host.reload_blocking();
    let refused = dir.path().join("aaa-squat.wasm");
    let serving = dir.path().join("discord.wasm");
    assert!(
        report.errors.iter().any(|e| matches!(e,
            LoadError::NameInUse { refused: r, serving: s, .. } if *r == refused && *s == serving)),
        "{:?}",
        report.errors
    );
    assert!(
        report.errors[0]
            .to_string()
            .starts_with(&refused.display().to_string()),
        "the error names the refused file first: {}",
        report.errors[0]
    );
    let plugins = host.plugins();
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0].file, serving);
    assert_eq!(
        events(&host.convert(&slash).await),
        1,
        "Discord still converts"
    );
    assert!(matches!(
        host.convert(&forward("acme", "x")).await.outcome,
        Outcome::Failed(PluginError::NoRoute { .. })
    ));
}

#[test]
fn plugin_logs_and_panics_cannot_forge_log_records() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let home = tempfile::tempdir().expect("home");
    let run = |body: &str| {
        let file = dir.path().join("body");
        std::fs::write(&file, body).expect("body");
        let out = crate::support::gateway(home.path())
            .env("RUST_LOG", "info")
            .args(["convert", "--plugins"])
            .arg(dir.path())
            .args(["--platform", "hostile", "--body-file"])
            .arg(&file)
            .output()
            .expect("run convert");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run("log-forge");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        !lines
            .iter()
            .any(|l| l.trim_start().starts_with("ERROR hermes_gateway")),
        "a forged record starts a line: {stderr}"
    );
    let logged: Vec<&&str> = lines.iter().filter(|l| l.contains("real line")).collect();
    assert_eq!(logged.len(), 1, "one line per log call: {stderr}");
    assert!(
        logged[0].contains("\\n") && logged[0].contains("\\u{1b}"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no raw terminal escape reaches the log"
    );

    let stderr = run("panic-long");
    let forged = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("ERROR record"))
        .count();
    assert_eq!(forged, 0, "the panic message is escaped: {stderr}");
    let mentions = stderr.matches("forged").count();
    assert!(
        mentions > 0 && stderr.lines().filter(|l| l.contains("forged")).count() == 1,
        "the panic is logged once, on one line: {stderr}"
    );
    assert!(
        stderr.len() < 8 << 10,
        "the 16 KiB panic message is capped: {} bytes logged",
        stderr.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_plugin_cannot_hold_back_other_plugins() {
    let dir = plugins_dir(&[
        ("hostile.wasm", hermes_plugin_artifacts::HOSTILE),
        ("twilio.wasm", hermes_plugin_artifacts::TWILIO),
    ]);
    let limits = Limits {
        workers: 2,
        per_plugin_workers: 1,
        ..limits()
    };
    let (host, report) = load(dir.path(), limits);
    assert!(report.is_clean(), "{:?}", report.errors);
    // A flood of slow (but legitimate) conversions of one plugin...
    let done = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let (host, done) = (host.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let c = host.convert(&forward("hostile", "spin 15")).await;
                done.fetch_add(1, Ordering::SeqCst);
                c
            })
        })
        .collect();
    while host.counters()["hostile"].waiting < 10 {
        tokio::task::yield_now().await;
    }
    // ...leaves a worker for another plugin: an SMS converts while most of
    // the flood is still waiting for its own plugin.
    let sms = PassthroughForward {
        platform: "twilio".to_owned(),
        method: "POST".to_owned(),
        headers: vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )],
        body: b"From=%2B15550001&To=%2B15550002&Body=hi&MessageSid=SM1&AccountSid=AC1".to_vec(),
        ..PassthroughForward::default()
    };
    let started = Instant::now();
    let c = host.convert(&sms).await;
    let waited = started.elapsed();
    let finished = done.load(Ordering::SeqCst);
    assert_eq!(events(&c), 1, "{c:?}");
    assert!(
        finished < 8,
        "the SMS waited for {finished} of 16 slow conversions ({waited:?})"
    );
    println!(
        "SMS converted in {waited:?} while the slow plugin had {} waiting",
        16 - finished
    );
    for f in flood {
        let c = f.await.expect("joins");
        assert_eq!(events(&c), 1, "slow is not faulty: {c:?}");
    }
    assert!(
        host.counters()["hostile"].failures.is_empty(),
        "no slow conversion was timed out or quarantined"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugins_full_line_sheds_its_own_forwards_only() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let limits = Limits {
        workers: 2,
        per_plugin_workers: 1,
        per_plugin_queue: 2,
        ..limits()
    };
    let (host, _) = load(dir.path(), limits);
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.convert(&forward("hostile", "spin 20")).await })
        })
        .collect();
    let mut overloaded = 0;
    for f in flood {
        match f.await.expect("joins").outcome {
            Outcome::Failed(PluginError::Overloaded { waiting }) => {
                assert!(waiting >= 2);
                overloaded += 1;
            }
            Outcome::Events(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(overloaded >= 1, "8 at once overflow a line of 2");
    assert_eq!(
        host.counters()["hostile"].quarantines,
        0,
        "shedding is not a fault"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quarantined_default_leaves_tenants_routed_elsewhere_alone() {
    let (mut slash, source) = discord_case("discord/guild_slash_simple.json");
    let guild = source["scope_id"].as_str().expect("the case has a guild");
    slash
        .headers
        .push(("x-tenant".to_owned(), guild.to_owned()));
    let dir = plugins_dir(&[
        ("hostile.wasm", hermes_plugin_artifacts::HOSTILE),
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
    ]);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "[platform.discord]\nplugin = \"hostile\"\n\n[[route]]\nplatform = \"discord\"\ntenant = \"{guild}\"\nplugin = \"discord-interactions\"\n"
        ),
    )
    .expect("policy");
    let limits = Limits {
        quarantine: QuarantinePolicy {
            after_faults: 2,
            backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(300),
            ..QuarantinePolicy::default()
        },
        ..Limits::default()
    };
    let (host, report) = load(dir.path(), limits);
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(events(&host.convert(&slash).await), 1, "routed by tenant");
    // The default faults into quarantine on another tenant's forwards.
    let mut bad = forward("discord", "panic boom");
    bad.headers
        .push(("x-tenant".to_owned(), "someone-else".to_owned()));
    for _ in 0..2 {
        assert!(matches!(
            host.convert(&bad).await.outcome,
            Outcome::Failed(PluginError::Panic { .. })
        ));
    }
    assert!(host.counters()["hostile"].quarantined_for.is_some());
    // The tenant routed to discord-interactions still converts.
    let c = host.convert(&slash).await;
    assert_eq!(c.plugin.as_deref(), Some("discord-interactions"), "{c:?}");
    assert_eq!(c.tenant.as_deref(), Some(guild));
    assert_eq!(events(&c), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_reloads_once_per_change_and_reports_a_broken_file_once() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let limits = Limits {
        reload_debounce: Duration::from_millis(50),
        ..limits()
    };
    let (host, _) = load(dir.path(), limits);
    let _watch = host.watch().expect("watch");
    let wait_for = |n: u64| {
        let host = host.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while host.tables_built() < n {
                assert!(Instant::now() < deadline, "no reload seen");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(host.tables_built(), 1, "the load at start");
    std::fs::copy(
        hermes_plugin_artifacts::TWILIO,
        dir.path().join("twilio.wasm"),
    )
    .expect("copy");
    wait_for(2).await;
    std::fs::write(dir.path().join("broken.wasm"), b"not wasm").expect("write");
    wait_for(3).await;
    // The reloads read every file (and touch access times): none of that
    // is a change. Twenty debounce periods of quiet later, still 3.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        host.tables_built(),
        3,
        "a reload's own reads triggered another"
    );
    assert_eq!(host.plugins().len(), 2);
}

/// A poison input that makes a converter fault (here: spin past its CPU
/// budget) quarantines it, but a flood of them cannot keep it out of
/// service: one forward per probe interval still goes through, and a probe
/// that converts ends the quarantine.
#[tokio::test(flavor = "multi_thread")]
async fn a_poison_flood_cannot_keep_a_working_converter_quarantined() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let probe_every = Duration::from_millis(50);
    let limits = Limits {
        quarantine: QuarantinePolicy {
            after_faults: 2,
            backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(300),
            probe_every,
        },
        ..Limits::default()
    };
    let (host, _) = load(dir.path(), limits);
    for _ in 0..2 {
        assert!(matches!(
            host.convert(&forward("hostile", "loop")).await.outcome,
            Outcome::Failed(PluginError::Timeout { .. })
        ));
    }
    assert!(matches!(
        host.convert(&forward("hostile", "ok")).await.outcome,
        Outcome::Failed(PluginError::Quarantined { .. })
    ));
    // More poison while quarantined: neither extends nor escalates it.
    tokio::time::sleep(probe_every).await;
    let _ = host.convert(&forward("hostile", "loop")).await;
    assert_eq!(host.counters()["hostile"].quarantines, 1);
    // The next probe is a good request: the converter is back.
    tokio::time::sleep(probe_every).await;
    assert_eq!(events(&host.convert(&forward("hostile", "ok")).await), 1);
    assert_eq!(host.counters()["hostile"].quarantined_for, None);
    assert_eq!(events(&host.convert(&forward("hostile", "ok")).await), 1);
}
