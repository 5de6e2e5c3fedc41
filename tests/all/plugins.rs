//! The plugin host against real compiled guests: the sandbox (timeouts,
//! memory, panics, output caps, capability probes, fresh state), loading
//! (incompatible WIT, conflicts, the artifact cache), routing with policy
//! and config, hot swap under load, and quarantine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hermes_plugin_host::{
    Conversion, Limits, LoadError, LoadReport, Outcome, PluginError, PluginHost, PluginHostConfig,
    QuarantinePolicy, RejectKind,
};
use hermes_protocol::forward::PassthroughForward;
use serde_json::Value;

/// Limits for tests: defaults, but quarantine far away unless a test wants it.
fn limits() -> Limits {
    Limits {
        quarantine: QuarantinePolicy {
            after_faults: 1000,
            ..QuarantinePolicy::default()
        },
        ..Limits::default()
    }
}

/// A temporary plugins directory holding copies of these artifacts.
fn plugins_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, artifact) in files {
        std::fs::copy(artifact, dir.path().join(name)).expect("copy artifact");
    }
    dir
}

fn load_with(dir: &Path, limits: Limits) -> (PluginHost, LoadReport) {
    let mut config = PluginHostConfig::new(dir);
    config.limits = limits;
    PluginHost::load(config).expect("plugin host loads")
}

fn hostile_host() -> (PluginHost, tempfile::TempDir) {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let (host, report) = load_with(dir.path(), limits());
    assert!(report.is_clean(), "load errors: {:?}", report.errors);
    (host, dir)
}

fn forward(platform: &str, body: impl Into<Vec<u8>>) -> PassthroughForward {
    PassthroughForward {
        platform: platform.to_owned(),
        method: "POST".to_owned(),
        body: body.into(),
        ..PassthroughForward::default()
    }
}

/// The text of a conversion's only event.
fn single_text(c: &Conversion) -> String {
    match &c.outcome {
        Outcome::Events(events) if events.len() == 1 => events[0].event.text.clone(),
        other => panic!("expected one event, got {other:?}"),
    }
}

fn failure(c: &Conversion) -> &PluginError {
    match &c.outcome {
        Outcome::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn hostile(host: &PluginHost, body: &str) -> Conversion {
    host.convert(&forward("hostile", body)).await
}

/// A corpus case: the forward (headers and body from the in-repo copy) and
/// its manifest entry.
fn corpus_case(file: &str) -> (PassthroughForward, Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    let case = manifest["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["file"] == file))
        .unwrap_or_else(|| panic!("{file} not in the corpus manifest"))
        .clone();
    let f = &case["forward"];
    let headers = f["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| Some((h[0].as_str()?.to_owned(), h[1].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let fwd = PassthroughForward {
        platform: f["platform"].as_str().unwrap_or_default().to_owned(),
        method: f["method"].as_str().unwrap_or_default().to_owned(),
        path: f["path"].as_str().unwrap_or_default().to_owned(),
        headers,
        body: std::fs::read(root.join(file)).expect("corpus body"),
        ..PassthroughForward::default()
    };
    (fwd, case)
}

#[tokio::test(flavor = "multi_thread")]
async fn well_behaved_conversion_and_fresh_instance_per_call() {
    let (host, _dir) = hostile_host();
    let c = hostile(&host, "ok").await;
    assert_eq!(c.plugin.as_deref(), Some("hostile"));
    assert_eq!(single_text(&c), "ok");
    // A global counter in the guest: 1 every time, because every call gets
    // a fresh instance.
    for _ in 0..3 {
        assert_eq!(single_text(&hostile(&host, "counter").await), "counter: 1");
    }
    assert_eq!(
        hostile(&host, "ignore").await.outcome,
        Outcome::Ignored("ping".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_times_out_within_the_deadline_and_the_next_call_works() {
    let (host, _dir) = hostile_host();
    let deadline = host.limits().epoch_deadline;
    let started = Instant::now();
    let c = hostile(&host, "loop").await;
    let took = started.elapsed();
    assert_eq!(failure(&c), &PluginError::Timeout { after: deadline });
    assert!(took >= deadline, "stopped before the deadline: {took:?}");
    // Well under the outer timeout (2 s): the epoch deadline stopped it.
    assert!(
        took < deadline + Duration::from_millis(900),
        "stopped too late: {took:?}"
    );
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
}

/// A conversion runs inline on the task that awaits it, and a guest that
/// spins until its deadline yields to the runtime between CPU slices: on a
/// runtime with ONE thread, another task (standing for the link's reader
/// and writer) runs many times while the guest is still spinning. Were the
/// guest not to yield, that task could run only after the conversion ended.
#[test]
fn a_spinning_guest_yields_so_other_tasks_run_on_its_thread() {
    let (host, _dir) = hostile_host();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let conversion = tokio::spawn(async move { hostile(&host, "loop").await });
        // Let the conversion start (it runs until its first yield).
        tokio::task::yield_now().await;
        let mut ran_while_spinning = 0;
        while !conversion.is_finished() {
            ran_while_spinning += 1;
            tokio::task::yield_now().await;
        }
        let c = conversion.await.expect("conversion task");
        assert!(matches!(failure(&c), PluginError::Timeout { .. }), "{c:?}");
        assert!(
            ran_while_spinning > 10,
            "the other task ran only {ran_while_spinning} times during the spin"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_hits_the_limit_and_the_host_carries_on() {
    let (host, _dir) = hostile_host();
    let c = hostile(&host, "alloc").await;
    assert_eq!(
        failure(&c),
        &PluginError::MemoryLimit {
            limit: host.limits().max_memory_bytes
        }
    );
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_carries_its_message() {
    let (host, _dir) = hostile_host();
    let c = hostile(&host, "panic the kiln is on fire").await;
    match failure(&c) {
        PluginError::Panic { message } => {
            assert!(
                message.contains("the kiln is on fire"),
                "panic message lost: {message}"
            )
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_output_is_refused() {
    let (host, _dir) = hostile_host();
    for body in ["big-output", "many-events", "huge-text", "many-media"] {
        let c = hostile(&host, body).await;
        assert!(
            matches!(failure(&c), PluginError::BadOutput(_)),
            "{body}: {c:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn floods_of_logs_and_stderr_are_bounded_not_fatal() {
    let (host, _dir) = hostile_host();
    assert_eq!(single_text(&hostile(&host, "log-flood").await), "ok");
    assert_eq!(single_text(&hostile(&host, "stderr-flood").await), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn capability_probes_fail_inside_the_guest() {
    let (host, _dir) = hostile_host();

    // A file the host can read, the guest cannot.
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), b"host secret").expect("write");
    let path = secret.path().display().to_string();
    let text = single_text(&hostile(&host, &format!("read-file {path}")).await);
    assert!(
        text.starts_with("read-file: error"),
        "guest read a host file: {text}"
    );

    // The test process has environment variables (PATH at least); the
    // guest must see none.
    assert!(std::env::vars().next().is_some());
    assert_eq!(
        single_text(&hostile(&host, "env").await),
        "env: vars=[] args=0"
    );

    // A listener the guest must not reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let text = single_text(&hostile(&host, &format!("socket {addr}")).await);
    // Refused by the sandbox's network policy, not merely unsupported.
    assert!(
        text.starts_with("socket: error") && text.contains("denied"),
        "guest socket probe: {text}"
    );
    assert!(listener.accept().is_err(), "the guest's connection arrived");
}

#[tokio::test(flavor = "multi_thread")]
async fn input_caps_and_missing_routes() {
    let (host, _dir) = hostile_host();
    let c = host.convert(&forward("hostile", Vec::new())).await;
    assert!(
        matches!(
            c.outcome,
            Outcome::Rejected {
                kind: RejectKind::EmptyBody,
                ..
            }
        ),
        "{c:?}"
    );
    let big = vec![b'o'; host.limits().max_body_bytes + 1];
    let c = host.convert(&forward("hostile", big)).await;
    assert!(
        matches!(
            c.outcome,
            Outcome::Rejected {
                kind: RejectKind::PayloadTooLarge,
                ..
            }
        ),
        "{c:?}"
    );
    let c = host.convert(&forward("telegram", "ok")).await;
    assert_eq!(
        failure(&c),
        &PluginError::NoRoute {
            platform: "telegram".to_owned()
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn incompatible_wit_is_refused_naming_both_versions() {
    let dir = plugins_dir(&[
        ("hostile.wasm", hermes_plugin_artifacts::HOSTILE),
        ("incompatible.wasm", hermes_plugin_artifacts::INCOMPATIBLE),
    ]);
    let (host, report) = load_with(dir.path(), limits());
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let error = &report.errors[0];
    // Built against a newer minor than this host implements: named, with
    // every version the host does implement.
    let implemented = hermes_converter_abi::VERSIONS.join(", ");
    assert!(
        matches!(error, LoadError::Incompatible { plugin_version, host_version, .. }
            if plugin_version == "0.3.0" && *host_version == implemented),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("hermes:converter@0.3.0") && message.contains(&implemented),
        "{message}"
    );
    // The good plugin still loads and works.
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_files_are_reported_and_skipped() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm not really").expect("write");
    let (host, report) = load_with(dir.path(), limits());
    assert!(
        matches!(report.errors.as_slice(), [LoadError::Compile { file, .. }] if file.ends_with("broken.wasm")),
        "{:?}",
        report.errors
    );
    assert_eq!(host.plugins().len(), 1);
}

/// Whoever can write a plugin file, the plugins directory or the policy
/// chooses the code that converts every tenant's traffic: a file or policy
/// writable by others is refused, and a directory like that is not used at
/// all (group write by another group too: host/plugin-host/src/ownership.rs).
#[tokio::test(flavor = "multi_thread")]
async fn files_others_can_write_are_not_loaded() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let dir = plugins_dir(&[
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
        ("twilio.wasm", hermes_plugin_artifacts::TWILIO),
    ]);
    mode(&dir.path().join("twilio.wasm"), 0o666);
    let (host, report) = load_with(dir.path(), limits());
    assert!(
        matches!(report.errors.as_slice(), [LoadError::Untrusted { file, message }]
            if file.ends_with("twilio.wasm") && message.contains("every user")),
        "{:?}",
        report.errors
    );
    assert_eq!(host.plugins().len(), 1, "the other file still loads");

    // A policy others can write is not read: the previous one stays.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[platform.discord]\nplugin = \"discord-interactions\"\n",
    )
    .expect("policy");
    mode(&policy, 0o646);
    let report = host.reload().await;
    assert!(
        report.errors.iter().any(
            |e| matches!(e, LoadError::Policy { message, .. } if message.contains("every user"))
        ),
        "{:?}",
        report.errors
    );

    // A directory others can write: nothing new is loaded from it on a
    // reload, and a fresh start refuses it.
    mode(&policy, 0o644);
    mode(&dir.path().join("twilio.wasm"), 0o644);
    mode(dir.path(), 0o777);
    let report = host.reload().await;
    assert!(
        matches!(report.errors.as_slice(), [LoadError::Untrusted { .. }]),
        "{:?}",
        report.errors
    );
    assert_eq!(host.plugins().len(), 1, "still serving what was loaded");
    let mut config = PluginHostConfig::new(dir.path());
    config.limits = limits();
    let refused = PluginHost::load(config).err().map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("not used") && e.contains("every user")),
        "{refused:?}"
    );
    mode(dir.path(), 0o755);
    let report = host.reload().await;
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(host.plugins().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_plugins_claiming_a_platform_without_policy_is_an_error_naming_both() {
    let dir = plugins_dir(&[
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
        ("hostile.wasm", hermes_plugin_artifacts::HOSTILE),
    ]);
    let (host, report) = load_with(dir.path(), limits());
    let conflict = report
        .errors
        .iter()
        .find(|e| matches!(e, LoadError::Conflict { .. }))
        .unwrap_or_else(|| panic!("no conflict reported: {:?}", report.errors));
    let message = conflict.to_string();
    assert!(
        message.contains("discord-interactions") && message.contains("hostile"),
        "{message}"
    );
    assert!(!host.routing_table().defaults.contains_key("discord"));

    // A pin in the policy settles it.
    std::fs::write(
        dir.path().join("policy.toml"),
        "[platform.discord]\nplugin = \"discord-interactions\"\n",
    )
    .expect("policy");
    let report = host.reload().await;
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(
        host.routing_table().defaults["discord"],
        "discord-interactions"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_by_platform_tenant_and_profile_with_config() {
    let (guild_slash, case) = corpus_case("discord/guild_slash_simple.json");
    let guild = case["expect"]["events"][0]["source"]["scope_id"]
        .as_str()
        .expect("scope id")
        .to_owned();
    let (dm_slash, _) = corpus_case("discord/dm_slash.json");

    let dir = plugins_dir(&[
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
        ("hostile.wasm", hermes_plugin_artifacts::HOSTILE),
    ]);
    let policy = format!(
        r#"
[platform.discord]
plugin = "discord-interactions"

[platform.hostile]
plugin = "hostile"
config = {{ label = "platform" }}

[[route]]
platform = "discord"
tenant = "{guild}"
plugin = "hostile"
config = {{ label = "tenant-route" }}

[[route]]
profile = "coder"
plugin = "hostile"
config = {{ label = "profile-route" }}
"#
    );
    std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
    let (host, report) = load_with(dir.path(), limits());
    assert!(report.is_clean(), "{:?}", report.errors);

    // Platform default: the pinned Discord converter (tenant = its tenant-of).
    let c = host.convert(&dm_slash).await;
    assert_eq!(c.plugin.as_deref(), Some("discord-interactions"), "{c:?}");
    assert!(matches!(c.outcome, Outcome::Events(_)), "{c:?}");

    // Tenant override: this guild goes to the hostile plugin with its config.
    let c = host.convert(&guild_slash).await;
    assert_eq!(c.plugin.as_deref(), Some("hostile"));
    assert_eq!(c.tenant.as_deref(), Some(guild.as_str()));
    assert_eq!(single_text(&c), "config: label=tenant-route");

    // Profile override, for any platform.
    let mut coder = forward("hostile", "config label");
    coder.profile = Some("coder".to_owned());
    assert_eq!(
        single_text(&host.convert(&coder).await),
        "config: label=profile-route"
    );

    // Platform config when no route matches.
    assert_eq!(
        single_text(&hostile(&host, "config label").await),
        "config: label=platform"
    );

    // `convert --config key=value`: config given by the caller instead.
    let config = [("label".to_owned(), "from-cli".to_owned())].into();
    let c = host
        .convert_with_config(&forward("hostile", "config label"), config)
        .await;
    assert_eq!(single_text(&c), "config: label=from-cli");

    // A tenant route exists for discord: its default plugin was asked.
    assert!(
        host.counters()["discord-interactions"].tenant_of_calls >= 2,
        "{:?}",
        host.counters()
    );
}

/// A hostile forward carrying a tenant key in `x-tenant`.
fn hostile_with_tenant(body: &str, tenant: &str) -> PassthroughForward {
    let mut f = forward("hostile", body);
    f.headers.push(("x-tenant".to_owned(), tenant.to_owned()));
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_of_is_called_only_when_a_tenant_route_could_use_it() {
    let (host, dir) = hostile_host();
    for _ in 0..3 {
        let c = host
            .convert(&hostile_with_tenant("config label", "t1"))
            .await;
        assert_eq!(single_text(&c), "config: label=<none>");
        assert_eq!(c.tenant, None, "no tenant route: no tenant key");
    }
    assert_eq!(host.counters()["hostile"].tenant_of_calls, 0);

    // A tenant route for another platform changes nothing for this one.
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[route]]\nplatform = \"discord\"\ntenant = \"t1\"\nplugin = \"hostile\"\n",
    )
    .expect("policy");
    let report = host.reload().await;
    assert!(report.is_clean(), "{:?}", report.errors);
    let c = host
        .convert(&hostile_with_tenant("config label", "t1"))
        .await;
    assert_eq!(
        (c.tenant, host.counters()["hostile"].tenant_of_calls),
        (None, 0)
    );

    // With a tenant route for the platform, the key is asked for and routes.
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[route]]\nplatform = \"hostile\"\ntenant = \"t1\"\nplugin = \"hostile\"\nconfig = { label = \"tenant\" }\n",
    )
    .expect("policy");
    let report = host.reload().await;
    assert!(report.is_clean(), "{:?}", report.errors);
    let c = host
        .convert(&hostile_with_tenant("config label", "t1"))
        .await;
    assert_eq!(c.tenant.as_deref(), Some("t1"));
    assert_eq!(single_text(&c), "config: label=tenant");
    assert_eq!(host.counters()["hostile"].tenant_of_calls, 1);
}

/// Load the hostile and Discord plugins under `policy`; the policy errors.
/// The hostile guest's `counter` mode answers how many times this
/// instance has counted: 1 in a fresh instance.
async fn counter(host: &PluginHost, tenant: &str) -> String {
    single_text(&host.convert(&hostile_with_tenant("counter", tenant)).await)
}

/// `isolation = "per-tenant"`: an instance serves the next forward of its
/// own tenant only; any failure, and any reload, retires it.
#[tokio::test(flavor = "multi_thread")]
async fn per_tenant_isolation_reuses_an_instance_only_within_its_tenant() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let policy = "[platform.hostile]\nisolation = \"per-tenant\"\n";
    std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
    let (host, report) = load_with(dir.path(), limits());
    assert!(report.is_clean(), "{:?}", report.errors);

    // Tenant A's second forward runs in A's warm instance.
    assert_eq!(counter(&host, "tenant-a").await, "counter: 1");
    assert_eq!(counter(&host, "tenant-a").await, "counter: 2");
    // Tenant B never gets A's instance.
    assert_eq!(counter(&host, "tenant-b").await, "counter: 1");
    assert_eq!(counter(&host, "tenant-a").await, "counter: 3");
    assert!(host.idle_instances() >= 2, "{}", host.idle_instances());

    // A trap retires the instance it happened in: A starts over.
    let c = host
        .convert(&hostile_with_tenant("panic boom", "tenant-a"))
        .await;
    assert!(matches!(failure(&c), PluginError::Panic { .. }), "{c:?}");
    assert_eq!(counter(&host, "tenant-a").await, "counter: 1");
    assert_eq!(counter(&host, "tenant-b").await, "counter: 2");

    // A reload retires every warm instance.
    let idle = host.idle_instances() as u64;
    let before = host.host_counters();
    assert!(before.instances_reused >= 4, "{before:?}");
    assert!(
        before.instances_retired >= 1,
        "the trapped instance: {before:?}"
    );
    let _ = host.reload().await;
    assert_eq!(host.idle_instances(), 0);
    let after = host.host_counters();
    assert_eq!(after.instances_retired, before.instances_retired + idle);
    assert_eq!(after.reloads_clean, 1);
    assert_eq!(counter(&host, "tenant-b").await, "counter: 1");
}

/// A tenant key is a plugin output like any other: one that is too long or
/// carries control characters is a fault, never a routing key, a cache key
/// or a log field.
#[tokio::test(flavor = "multi_thread")]
async fn tenant_keys_are_checked_before_they_are_used() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let policy = "[platform.hostile]\nisolation = \"per-tenant\"\n";
    std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
    let (host, report) = load_with(dir.path(), limits());
    assert!(report.is_clean(), "{:?}", report.errors);
    for bad in ["t".repeat(257), "tenant\nforged log line".to_owned()] {
        let c = host.convert(&hostile_with_tenant("ok", &bad)).await;
        assert!(matches!(failure(&c), PluginError::BadOutput(_)), "{c:?}");
        assert_eq!(c.tenant, None, "a refused key is never reported");
    }
    assert_eq!(counter(&host, &"t".repeat(256)).await, "counter: 1");
}

/// A reload reports (and logs) what it changed, by plugin name.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_reports_what_changed() {
    let dir = plugins_dir(&[
        ("hostile.wasm", hermes_plugin_artifacts::HOSTILE),
        ("slack.wasm", hermes_plugin_artifacts::SLACK),
    ]);
    let (host, report) = load_with(dir.path(), limits());
    assert!(report.is_clean(), "{:?}", report.errors);
    assert!(report.changes.is_empty(), "the first load changes nothing");
    assert!(host.reload().await.changes.is_empty());

    // New bytes under the same name: a trailing custom section (id 0,
    // name "x", no data) keeps the component valid and changes its digest.
    let mut rebuilt = std::fs::read(hermes_plugin_artifacts::HOSTILE).expect("hostile");
    rebuilt.extend_from_slice(&[0x00, 0x02, 0x01, b'x']);
    std::fs::write(dir.path().join("hostile.wasm"), rebuilt).expect("replace");
    std::fs::remove_file(dir.path().join("slack.wasm")).expect("remove");
    std::fs::copy(
        hermes_plugin_artifacts::TWILIO,
        dir.path().join("twilio.wasm"),
    )
    .expect("add");
    std::fs::write(
        dir.path().join("policy.toml"),
        "[platform.hostile]\nconfig = { a = \"b\" }\n",
    )
    .expect("policy");
    let report = host.reload().await;
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(
        report.changes,
        hermes_plugin_host::Changes {
            added: vec!["twilio".to_owned()],
            removed: vec!["slack".to_owned()],
            replaced: vec!["hostile".to_owned()],
            policy_changed: true,
        }
    );
}

/// The idle instances are bounded in bytes as well as in number: with room
/// for less than one instance's memory, none is kept and every forward of
/// a tenant starts fresh.
#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_are_bounded_in_bytes() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let policy = "[platform.hostile]\nisolation = \"per-tenant\"\n";
    std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
    let limits = Limits {
        max_idle_bytes: 64 << 10,
        ..limits()
    };
    let (host, report) = load_with(dir.path(), limits);
    assert!(report.is_clean(), "{:?}", report.errors);
    for _ in 0..3 {
        assert_eq!(counter(&host, "tenant-a").await, "counter: 1");
    }
    assert_eq!(host.idle_instances(), 0);
    assert!(host.host_counters().instances_retired >= 3);
}

/// Without the opt-in every forward gets a fresh instance, tenants or not.
#[tokio::test(flavor = "multi_thread")]
async fn per_request_isolation_is_the_default() {
    let (host, _dir) = hostile_host();
    for _ in 0..3 {
        assert_eq!(counter(&host, "tenant-a").await, "counter: 1");
    }
    assert_eq!(host.idle_instances(), 0);
}

fn load_policy(policy: &str) -> (PluginHost, Vec<String>, tempfile::TempDir) {
    let dir = plugins_dir(&[
        ("discord.wasm", hermes_plugin_artifacts::DISCORD),
        ("hostile.wasm", hermes_plugin_artifacts::HOSTILE),
    ]);
    std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
    let (host, report) = load_with(dir.path(), limits());
    let errors = report
        .errors
        .iter()
        .inspect(|e| assert!(matches!(e, LoadError::Policy { .. }), "{e:?}"))
        .map(ToString::to_string)
        .collect();
    (host, errors, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_to_a_plugin_that_does_not_list_the_platform_is_a_load_error() {
    let (host, errors, _dir) = load_policy(
        "[platform.discord]\nplugin = \"hostile\"\n\n[platform.hostile]\nplugin = \"discord-interactions\"\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("[platform.hostile]") && errors[0].contains("discord-interactions"),
        "names both: {}",
        errors[0]
    );
    // The platform keeps its sole claimant.
    assert_eq!(host.routing_table().defaults["hostile"], "hostile");
    assert_eq!(
        host.convert(&forward("hostile", "ok"))
            .await
            .plugin
            .as_deref(),
        Some("hostile")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_for_a_platform_its_plugin_does_not_list_is_a_load_error() {
    let (host, errors, _dir) = load_policy(
        "[platform.discord]\nplugin = \"hostile\"\n\n[[route]]\nplatform = \"hostile\"\nprofile = \"coder\"\nplugin = \"discord-interactions\"\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("`hostile`") && errors[0].contains("discord-interactions"),
        "names both: {}",
        errors[0]
    );
    assert!(host.routing_table().routes.is_empty());
    let mut coder = forward("hostile", "ok");
    coder.profile = Some("coder".to_owned());
    assert_eq!(
        host.convert(&coder).await.plugin.as_deref(),
        Some("hostile")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_only_route_applies_only_to_platforms_its_plugin_lists() {
    let (host, errors, _dir) = load_policy(
        "[platform.discord]\nplugin = \"hostile\"\n\n[[route]]\nprofile = \"coder\"\nplugin = \"discord-interactions\"\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    // discord-interactions does not list `hostile`: the profile route is
    // not for it.
    let mut coder = forward("hostile", "ok");
    coder.profile = Some("coder".to_owned());
    let c = host.convert(&coder).await;
    assert_eq!(
        (c.plugin.as_deref(), single_text(&c)),
        (Some("hostile"), "ok".to_owned())
    );
    // It does list `discord`: there the route beats the pin.
    let (mut dm_slash, _) = corpus_case("discord/dm_slash.json");
    dm_slash.profile = Some("coder".to_owned());
    let c = host.convert(&dm_slash).await;
    assert_eq!(c.plugin.as_deref(), Some("discord-interactions"), "{c:?}");
    assert!(matches!(c.outcome, Outcome::Events(_)), "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_are_capped_per_call_and_rate_limited_per_plugin() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    // No refill: the bucket holds 40 lines for the plugin's lifetime, the
    // per-call cap 32, and `log-flood` writes 10 000 lines per call.
    let (host, report) = load_with(
        dir.path(),
        Limits {
            max_log_lines: 32,
            log_lines_per_second: 0,
            log_burst: 40,
            ..limits()
        },
    );
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(single_text(&hostile(&host, "log-flood").await), "ok");
    let per_call_drops = 10_000 - 32;
    assert_eq!(host.counters()["hostile"].log_lines_dropped, per_call_drops);
    // Second call: 32 lines pass the per-call cap, only 8 tokens are left.
    assert_eq!(single_text(&hostile(&host, "log-flood").await), "ok");
    assert_eq!(
        host.counters()["hostile"].log_lines_dropped,
        2 * per_call_drops + (32 - 8)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_cache_entries_are_recompiled() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let cache = tempfile::tempdir().expect("cache dir");
    let load = || {
        let mut config = PluginHostConfig::new(dir.path());
        config.cache_dir = Some(cache.path().to_owned());
        config.limits = limits();
        PluginHost::load(config).expect("load")
    };
    let (_, first) = load();
    assert_eq!((first.compiled, first.cache_hits), (1, 0));
    let (_, second) = load();
    assert_eq!((second.compiled, second.cache_hits), (0, 1));

    let entries: Vec<PathBuf> = std::fs::read_dir(cache.path())
        .expect("read cache")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    // Flip bytes in the middle of the compiled code.
    let mut bytes = std::fs::read(&entries[0]).expect("entry");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&entries[0], &bytes).expect("corrupt");
    let (host, third) = load();
    assert!(third.is_clean(), "{:?}", third.errors);
    assert_eq!((third.compiled, third.cache_hits), (1, 0));
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");

    // Truncated entry: same.
    std::fs::write(&entries[0], &bytes[..10]).expect("truncate");
    let (_, fourth) = load();
    assert_eq!(
        (fourth.compiled, fourth.cache_hits, fourth.errors.len()),
        (1, 0, 0)
    );
}

/// The hostile component with a custom section appended: a different file
/// (new hash, recompiled) that behaves the same — a "new version".
fn new_version(bytes: &[u8], tag: u8) -> Vec<u8> {
    let mut v = bytes.to_vec();
    // custom section: id 0, size 7, name "hermv" (len 5), payload [tag]
    v.extend_from_slice(&[0, 7, 5, b'h', b'e', b'r', b'm', b'v', tag]);
    v
}

/// Replace a file the way a deploy does: write aside, then rename.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_swap_under_load_loses_no_conversion() {
    let (host, dir) = hostile_host();
    let file = dir.path().join("hostile.wasm");
    let original = std::fs::read(&file).expect("read");
    let sha_of = |host: &PluginHost| {
        host.plugins()
            .first()
            .map(|p| p.sha256.clone())
            .unwrap_or_default()
    };
    let sha0 = sha_of(&host);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (host, stop, ok) = (host.clone(), Arc::clone(&stop), Arc::clone(&ok));
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let c = host.convert(&forward("hostile", "counter")).await;
                match &c.outcome {
                    Outcome::Events(e) if e.len() == 1 && e[0].event.text == "counter: 1" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => failures.push(c),
                }
            }
            failures
        }));
    }

    // A new version, picked up by an on-demand reload.
    replace(&file, &new_version(&original, 1));
    let report = host.reload().await;
    assert!(report.is_clean(), "{:?}", report.errors);
    let sha1 = sha_of(&host);
    assert_ne!(sha1, sha0, "the new version was not swapped in");

    // Then another, picked up by the file watcher.
    let _watch = host.watch().expect("watch");
    replace(&file, &new_version(&original, 2));
    let deadline = Instant::now() + Duration::from_secs(20);
    while sha_of(&host) == sha1 {
        assert!(Instant::now() < deadline, "the watcher never reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sha2 = sha_of(&host);

    // Then a broken file: reported, and the working version stays.
    replace(&file, b"garbage, not a component");
    let report = host.reload().await;
    assert!(
        matches!(report.errors.as_slice(), [LoadError::Compile { .. }]),
        "{:?}",
        report.errors
    );
    assert_eq!(
        sha_of(&host),
        sha2,
        "a broken file replaced the working plugin"
    );

    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.expect("task"));
    }
    assert!(
        failures.is_empty(),
        "{} conversions failed during hot swap: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 0,
        "no conversion ran during the swap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_faults_quarantine_until_the_backoff_ends() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let policy = QuarantinePolicy {
        after_faults: 3,
        backoff: Duration::from_millis(300),
        max_backoff: Duration::from_secs(2),
        ..QuarantinePolicy::default()
    };
    let (host, _) = load_with(
        dir.path(),
        Limits {
            quarantine: policy,
            ..limits()
        },
    );
    for _ in 0..3 {
        assert!(matches!(
            failure(&hostile(&host, "panic again").await),
            PluginError::Panic { .. }
        ));
    }
    let c = hostile(&host, "ok").await;
    let remaining = match failure(&c) {
        PluginError::Quarantined { remaining } => *remaining,
        other => panic!("expected quarantine, got {other:?}"),
    };
    assert!(remaining <= policy.backoff);
    let counters = &host.counters()["hostile"];
    assert_eq!(counters.quarantines, 1);
    assert_eq!(counters.failures.get("panic"), Some(&3));

    // The quarantine is a point in time: wait it out.
    tokio::time::sleep(remaining + Duration::from_millis(20)).await;
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
    assert_eq!(host.counters()["hostile"].quarantined_for, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_rejections_never_quarantine() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let policy = QuarantinePolicy {
        after_faults: 2,
        ..QuarantinePolicy::default()
    };
    let (host, _) = load_with(
        dir.path(),
        Limits {
            quarantine: policy,
            ..limits()
        },
    );
    for _ in 0..20 {
        let c = hostile(&host, "reject").await;
        assert!(
            matches!(
                c.outcome,
                Outcome::Rejected {
                    kind: RejectKind::InvalidJson,
                    ..
                }
            ),
            "{c:?}"
        );
    }
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
    let counters = &host.counters()["hostile"];
    assert_eq!((counters.rejected, counters.quarantines), (20, 0));
}

/// A guest `std::thread::sleep` must not park a worker thread: the clocks'
/// timers are ready at once, so the call returns well within the deadline,
/// and after more sleeps than there are workers conversions still run.
#[tokio::test(flavor = "multi_thread")]
async fn sleeping_guests_cannot_block_the_workers() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let limits = Limits {
        workers: 2,
        outer_timeout: Duration::from_secs(5),
        ..limits()
    };
    let (host, report) = load_with(dir.path(), limits);
    assert!(report.is_clean(), "{:?}", report.errors);
    let sleeps: Vec<_> = (0..6)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let c = hostile(&host, "sleep").await;
                (started.elapsed(), c)
            })
        })
        .collect();
    for s in sleeps {
        let (elapsed, c) = s.await.expect("task");
        assert_eq!(single_text(&c), "slept", "{c:?}");
        assert!(elapsed < Duration::from_secs(2), "a sleep took {elapsed:?}");
    }
    let started = Instant::now();
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// `describe()` writing to stderr while the host loads inside an async
/// runtime (as every async caller does) must neither panic nor fail the
/// load; the hostile guest always does it.
#[tokio::test(flavor = "current_thread")]
async fn guest_stdio_during_load_inside_a_runtime_is_harmless() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let (host, report) = load_with(dir.path(), limits());
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
    let report = host.reload_blocking();
    assert!(report.is_clean(), "{:?}", report.errors);
}

/// 100 000 media urls: refused while wasmtime lifts the result (the store's
/// hostcall fuel), before the host allocates the list.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_bomb_is_refused_by_count() {
    let (host, _dir) = hostile_host();
    let c = hostile(&host, "many-media").await;
    match failure(&c) {
        PluginError::BadOutput(why) => assert!(why.contains("more than the host copies"), "{why}"),
        other => panic!("expected bad output, got {other:?}"),
    }
    assert_eq!(single_text(&hostile(&host, "ok").await), "ok");
}

/// The form body of the corpus SMS with its `Body` replaced.
fn twilio_sms_with_body(body: &str) -> PassthroughForward {
    let (mut fwd, _) = corpus_case("twilio/sms.form");
    let form = String::from_utf8(fwd.body.clone()).expect("form is text");
    let replaced: Vec<String> = form
        .split('&')
        .map(|pair| {
            if pair.starts_with("Body=") {
                format!("Body={body}")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    assert!(
        replaced.iter().any(|p| p.starts_with("Body=")),
        "the corpus SMS has a Body"
    );
    fwd.body = replaced.join("&").into_bytes();
    fwd
}

/// A valid SMS whose text is larger than the host's output cap is bad input
/// (a typed rejection from the SDK glue), not a plugin fault: many of them
/// never quarantine the first-party converter.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_valid_body_is_rejected_not_a_fault() {
    let dir = plugins_dir(&[("twilio.wasm", hermes_plugin_artifacts::TWILIO)]);
    let limits = Limits {
        quarantine: QuarantinePolicy {
            after_faults: 3,
            ..QuarantinePolicy::default()
        },
        ..Limits::default()
    };
    let (host, report) = load_with(dir.path(), limits);
    assert!(report.is_clean(), "{:?}", report.errors);
    let big = twilio_sms_with_body(&"a".repeat(100 << 10));
    for _ in 0..6 {
        let c = host.convert(&big).await;
        match &c.outcome {
            Outcome::Rejected { kind, message } => {
                assert_eq!(*kind, RejectKind::InvalidField, "{message}");
                assert!(message.contains("text exceeds"), "{message}");
            }
            other => panic!("expected an invalid_field rejection, got {other:?}"),
        }
    }
    let small = host.convert(&twilio_sms_with_body("hello")).await;
    assert_eq!(single_text(&small), "hello", "not quarantined");
    let counters = host.counters();
    assert_eq!(counters["twilio"].quarantines, 0, "{counters:?}");
}

/// The CLI loads plugins whose `describe()` writes to stderr (the hostile
/// guest does) in both `plugins check` and `convert`, and refuses a
/// `--policy` file that does not exist instead of using an empty policy.
#[test]
fn cli_check_and_convert_with_guest_stdio_and_a_missing_policy() {
    let dir = plugins_dir(&[("hostile.wasm", hermes_plugin_artifacts::HOSTILE)]);
    let home = tempfile::tempdir().expect("home");
    let plugins = dir.path().to_str().expect("utf-8 path");

    let check = crate::support::gateway(home.path())
        .args(["plugins", "check", plugins])
        .output()
        .expect("run plugins check");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "plugins check failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("hostile"));

    let body = dir.path().join("body");
    std::fs::write(&body, "ok").expect("body");
    let convert = crate::support::gateway(home.path())
        .args([
            "convert",
            "--plugins",
            plugins,
            "--platform",
            "hostile",
            "--body-file",
        ])
        .arg(&body)
        .output()
        .expect("run convert");
    let stderr = String::from_utf8_lossy(&convert.stderr);
    assert!(convert.status.success(), "convert failed: {stderr}");
    let out: Value = serde_json::from_slice(&convert.stdout).expect("convert prints JSON");
    assert_eq!(out["outcome"], "event", "{out}");
    assert_eq!(out["events"][0]["text"], "ok", "{out}");

    let missing = dir.path().join("no-such-policy.toml");
    for args in [
        vec!["plugins", "check", plugins, "--policy"],
        vec![
            "convert",
            "--plugins",
            plugins,
            "--platform",
            "hostile",
            "--body-file",
            body.to_str().expect("utf-8"),
            "--policy",
        ],
    ] {
        let out = crate::support::gateway(home.path())
            .args(&args)
            .arg(&missing)
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-policy.toml"));
    }
}
