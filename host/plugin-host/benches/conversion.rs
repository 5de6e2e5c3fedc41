//! What isolation costs per conversion: every case of both webhook corpora
//! through the real compiled converters, against the same converter logic
//! called natively.
//!
//! `cargo bench -p hermes-plugin-host --bench conversion` prints two tables.
//!
//! Per plugin (Discord, Twilio, Slack):
//!
//! - `compile`: cranelift compile of the component;
//! - `cached load`: load through the compiled-artifact cache (read, checksum,
//!   deserialize, type-check), what a restart costs;
//! - `instantiate`: fresh store + instance from the typed `Pre`, dropped.
//!
//! Per corpus case, medians of:
//!
//! - `native`: `Converter::convert` on the plain Rust crate (no sandbox);
//! - `warm`: `convert` on a kept instance (the spec's "warm" reference
//!   point: no `tenant-of`, no routing);
//! - `fresh`: the sandbox work of a per-request forward: fresh store,
//!   instantiate, `tenant-of`, `convert`, output checks, drop;
//! - `host`: `PluginHost::convert` end to end with the default per-request
//!   isolation (routing, input caps, admission, the fresh sandbox run inline
//!   on the calling task, output mapping);
//! - `tenant`: `PluginHost::convert` with `isolation = "per-tenant"` on
//!   every platform: `tenant-of` on the plugin's warm router instance, then
//!   `convert` on the tenant's warm instance (all cases share one tenant
//!   per platform, as one busy tenant would);
//!
//! and the ratios of each to `native`. Cases the host refuses before any guest runs (empty body, over 1 MiB) have no
//! guest columns.
//!
//! Each measurement runs for `HERMES_BENCH_MS` milliseconds (default 100;
//! compile gets 10×), which keeps the whole run near a minute on two cores.
//! Without `--bench` (as under `cargo test --benches`) every window is 2 ms:
//! a smoke test that every path still converts every case.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use hermes_converter_sdk::testing::{self, Case};
use hermes_converter_sdk::{Config, Converter, Outcome as NativeOutcome, Request};
use hermes_plugin_discord::DiscordInteractions;
use hermes_plugin_host::bench_support::{BenchOutcome, BenchPlugin};
use hermes_plugin_host::{Limits, Outcome, PluginHost, PluginHostConfig};
use hermes_plugin_slack::Slack;
use hermes_plugin_twilio::Twilio;
use hermes_protocol::forward::PassthroughForward;
use sha2::Digest;

/// Runs closures and reports per-iteration medians.
struct Bench {
    budget: Duration,
}

impl Bench {
    /// Time `f` repeatedly for about `budget` (at least 5 runs) and return
    /// the median of single runs.
    fn median<T>(&self, budget: Duration, mut f: impl FnMut() -> T) -> Duration {
        for _ in 0..3 {
            black_box(f());
        }
        let mut samples = Vec::new();
        let start = Instant::now();
        while samples.len() < 5 || (start.elapsed() < budget && samples.len() < 200_000) {
            let t = Instant::now();
            black_box(f());
            samples.push(t.elapsed());
        }
        samples.sort();
        samples[samples.len() / 2]
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

type NativeConvert = fn(&Request, &dyn Config) -> NativeOutcome;

/// A first-party converter: its component and its native entry point.
struct Converter3 {
    platform: &'static str,
    artifact: &'static str,
    native: NativeConvert,
}

const CONVERTERS: [Converter3; 3] = [
    Converter3 {
        platform: "discord",
        artifact: hermes_plugin_artifacts::DISCORD,
        native: DiscordInteractions::convert,
    },
    Converter3 {
        platform: "twilio",
        artifact: hermes_plugin_artifacts::TWILIO,
        native: Twilio::convert,
    },
    Converter3 {
        platform: "slack",
        artifact: hermes_plugin_artifacts::SLACK,
        native: Slack::convert,
    },
];

fn native_outcome(o: &NativeOutcome) -> &'static str {
    match o {
        NativeOutcome::Events(_) => "event",
        NativeOutcome::Ignored(_) => "ignored",
        NativeOutcome::Error(_) => "error",
    }
}

fn host_outcome(o: &Outcome) -> &'static str {
    match o {
        Outcome::Events(_) => "event",
        Outcome::Ignored(_) => "ignored",
        Outcome::Rejected { .. } => "error",
        Outcome::Failed(_) => "failed",
    }
}

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

fn corpora() -> Vec<Case> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    ["corpus", "corpus-outside"]
        .iter()
        .flat_map(|name| {
            testing::load_corpus(&data.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect()
}

/// One case's medians.
struct Row {
    name: String,
    platform: String,
    outcome: String,
    native: Duration,
    /// `None` when the host answers before any guest runs.
    warm: Option<Duration>,
    fresh: Option<Duration>,
    host: Duration,
    /// `PluginHost::convert` with `isolation = "per-tenant"`.
    tenant: Duration,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let window = std::env::var("HERMES_BENCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_millis(100), Duration::from_millis);
    let bench = Bench {
        budget: if full {
            window
        } else {
            Duration::from_millis(2)
        },
    };
    let started = Instant::now();
    let limits = Limits::default();
    let cases = corpora();

    // Per plugin: compile, cached load, instantiate.
    let mut plugins = BTreeMap::new();
    let cache = tempfile::tempdir().expect("cache dir");
    let plugins_dir = tempfile::tempdir().expect("plugins dir");
    // The same plugins, each platform with warm per-tenant instances.
    let tenant_dir = tempfile::tempdir().expect("plugins dir");
    let per_tenant: String = CONVERTERS
        .iter()
        .map(|c| format!("[platform.{}]\nisolation = \"per-tenant\"\n", c.platform))
        .collect();
    std::fs::write(tenant_dir.path().join("policy.toml"), per_tenant).expect("policy");
    println!("## Per plugin\n");
    println!(
        "{:<10} {:>10} {:>12} {:>12} {:>12}",
        "plugin", "wasm bytes", "compile", "cached load", "instantiate"
    );
    for c in &CONVERTERS {
        let wasm = std::fs::read(c.artifact).expect("component");
        for dir in [&plugins_dir, &tenant_dir] {
            std::fs::write(dir.path().join(format!("{}.wasm", c.platform)), &wasm)
                .expect("copy component");
        }
        let sha = hex::encode(sha2::Sha256::digest(&wasm));
        let size = wasm.len();
        let plugin = BenchPlugin::new(wasm, limits.clone()).expect("compile");
        let compile = bench.median(bench.budget * 10, || plugin.compile().expect("compile"));
        let dir = cache.path().join(c.platform);
        plugin.cached_load(&dir, &sha).expect("fill the cache");
        let cached = bench.median(bench.budget, || {
            plugin.cached_load(&dir, &sha).expect("cached load")
        });
        let instantiate = bench.median(bench.budget, || plugin.instantiate().expect("instantiate"));
        println!(
            "{:<10} {:>10} {:>12} {:>12} {:>12}",
            c.platform,
            size,
            fmt(compile),
            fmt(cached),
            fmt(instantiate)
        );
        plugins.insert(c.platform, (plugin, c.native));
    }
    if let Some((plugin, _)) = plugins.values().next() {
        println!("\nallocator: {}", plugin.allocator().as_str());
    }

    // The whole async path through one host holding the three plugins.
    let (host, report) = PluginHost::load(PluginHostConfig::new(plugins_dir.path())).expect("host");
    assert!(report.is_clean(), "{:?}", report.errors);
    let (tenant_host, report) =
        PluginHost::load(PluginHostConfig::new(tenant_dir.path())).expect("host");
    assert!(report.is_clean(), "{:?}", report.errors);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");

    let mut rows = Vec::new();
    for case in &cases {
        let name = case.name();
        let (plugin, native) = plugins
            .get(case.platform.as_str())
            .unwrap_or_else(|| panic!("{name}: no converter for {}", case.platform));
        let expected = case.expect()["outcome"].as_str().unwrap_or_default();
        let fwd = forward(case);
        let req = &case.request;

        // Every path must do the real work before it is timed.
        assert_eq!(
            native_outcome(&native(req, &())),
            expected,
            "{name}: native outcome"
        );
        let converted = rt.block_on(host.convert(&fwd));
        assert_eq!(
            host_outcome(&converted.outcome),
            expected,
            "{name}: host outcome {:?}",
            converted.outcome
        );
        let guest_runs = !fwd.body.is_empty() && fwd.body.len() <= limits.max_body_bytes;

        let native_t = bench.median(bench.budget, || native(req, &()));
        let (warm, fresh) = if guest_runs {
            let check = |o: Result<BenchOutcome, String>| {
                let o = o.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(o.as_str(), expected, "{name}: sandboxed outcome");
            };
            check(plugin.fresh_convert(&fwd));
            let mut instance = plugin.warm().expect("warm instance");
            check(instance.convert(&fwd));
            let warm = bench.median(bench.budget, || instance.convert(&fwd));
            let fresh = bench.median(bench.budget, || plugin.fresh_convert(&fwd));
            (Some(warm), Some(fresh))
        } else {
            (None, None)
        };
        let host_t = bench.median(bench.budget, || rt.block_on(host.convert(&fwd)));
        let per_tenant = rt.block_on(tenant_host.convert(&fwd));
        assert_eq!(
            host_outcome(&per_tenant.outcome),
            expected,
            "{name}: per-tenant"
        );
        let tenant_t = bench.median(bench.budget, || rt.block_on(tenant_host.convert(&fwd)));
        rows.push(Row {
            name,
            platform: case.platform.clone(),
            outcome: expected.to_owned(),
            native: native_t,
            warm,
            fresh,
            host: host_t,
            tenant: tenant_t,
        });
    }

    print_cases(&rows);
    print_summary(&rows);
    println!(
        "\n{} cases, {} window per measurement, {:.1} s in all",
        rows.len(),
        fmt(bench.budget),
        started.elapsed().as_secs_f64()
    );
}

fn print_cases(rows: &[Row]) {
    println!("\n## Per case (medians; ratios against native)\n");
    let w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4);
    println!(
        "{:<w$} {:<7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "case",
        "outcome",
        "native",
        "warm",
        "fresh",
        "host",
        "tenant",
        "warm/n",
        "fresh/n",
        "host/n",
        "tenant/n"
    );
    let dash = || "—".to_owned();
    for r in rows {
        println!(
            "{:<w$} {:<7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
            r.name,
            r.outcome,
            fmt(r.native),
            r.warm.map_or_else(dash, fmt),
            r.fresh.map_or_else(dash, fmt),
            fmt(r.host),
            fmt(r.tenant),
            r.warm
                .map_or_else(dash, |w| format!("{:.1}×", ratio(w, r.native))),
            r.fresh
                .map_or_else(dash, |f| format!("{:.1}×", ratio(f, r.native))),
            format!("{:.1}×", ratio(r.host, r.native)),
            format!("{:.1}×", ratio(r.tenant, r.native)),
        );
    }
}

/// The median of a list of durations (or ratios).
fn mid<T: PartialOrd + Copy>(mut v: Vec<T>) -> Option<T> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

fn print_summary(rows: &[Row]) {
    println!("\n## Summary: median over cases where the guest runs\n");
    println!(
        "{:<22} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "group",
        "cases",
        "native",
        "warm",
        "fresh",
        "host",
        "tenant",
        "warm/n",
        "fresh/n",
        "host/n",
        "tenant/n"
    );
    let mut groups: Vec<(String, Vec<&Row>)> = Vec::new();
    let guest: Vec<&Row> = rows.iter().filter(|r| r.fresh.is_some()).collect();
    for c in &CONVERTERS {
        groups.push((
            c.platform.to_owned(),
            guest
                .iter()
                .copied()
                .filter(|r| r.platform == c.platform)
                .collect(),
        ));
    }
    groups.push((
        "valid (event/ignored)".to_owned(),
        guest
            .iter()
            .copied()
            .filter(|r| r.outcome != "error")
            .collect(),
    ));
    groups.push(("all".to_owned(), guest));
    for (group, rows) in groups {
        let col =
            |f: &dyn Fn(&Row) -> Option<Duration>| mid(rows.iter().filter_map(|r| f(r)).collect());
        let rat = |f: &dyn Fn(&Row) -> Option<Duration>| {
            mid(rows
                .iter()
                .filter_map(|r| Some(ratio(f(r)?, r.native)))
                .collect())
        };
        let d = |v: Option<Duration>| v.map_or_else(|| "—".to_owned(), fmt);
        let x = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.1}×"));
        println!(
            "{:<22} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
            group,
            rows.len(),
            d(col(&|r| Some(r.native))),
            d(col(&|r| r.warm)),
            d(col(&|r| r.fresh)),
            d(col(&|r| Some(r.host))),
            d(col(&|r| Some(r.tenant))),
            x(rat(&|r| r.warm)),
            x(rat(&|r| r.fresh)),
            x(rat(&|r| Some(r.host))),
            x(rat(&|r| Some(r.tenant))),
        );
    }
}
