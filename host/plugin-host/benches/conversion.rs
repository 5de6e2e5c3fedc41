//! What isolation costs per conversion, through the real Discord component.
//!
//! `cargo bench -p hermes-plugin-host --bench conversion` prints the median
//! (and p90) of each step for a Discord slash command from the corpus:
//!
//! - `compile`: cranelift compile of the component;
//! - `cached load`: load through the compiled-artifact cache (read, checksum,
//!   deserialize, type-check);
//! - `instantiate`: fresh store + instance from the typed `Pre`, dropped;
//! - `fresh convert`: what the host does per forward (fresh store,
//!   instantiate, `tenant-of`, `convert`, output checks, drop);
//! - `warm convert`: `convert` on a kept instance (what the host does not do);
//! - `host convert`: `PluginHost::convert`, including the worker-pool hop.
//!
//! To compare with native code, add a `bench.run("native ...", ...)` line.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use hermes_plugin_host::bench_support::BenchPlugin;
use hermes_plugin_host::{Limits, PluginHost, PluginHostConfig};
use hermes_protocol::forward::PassthroughForward;
use sha2::Digest;

/// Runs closures and prints per-iteration medians.
struct Bench {
    budget: Duration,
}

impl Bench {
    /// Time `f` repeatedly for about `budget` (at least 5 runs) and print the
    /// median and p90 of single runs.
    fn run<T>(&self, name: &str, mut f: impl FnMut() -> T) {
        for _ in 0..3 {
            black_box(f());
        }
        let mut samples = Vec::new();
        let start = Instant::now();
        while samples.len() < 5 || (start.elapsed() < self.budget && samples.len() < 200_000) {
            let t = Instant::now();
            black_box(f());
            samples.push(t.elapsed());
        }
        samples.sort();
        let median = samples[samples.len() / 2];
        let p90 = samples[samples.len() * 9 / 10];
        println!("{name:<28} median {:>12} p90 {:>12}  ({} runs)", fmt(median), fmt(p90), samples.len());
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

fn slash_command() -> PassthroughForward {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/corpus/discord/guild_slash_simple.json");
    PassthroughForward {
        platform: "discord".to_owned(),
        method: "POST".to_owned(),
        path: "/hooks/discord/interactions".to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: std::fs::read(&corpus).expect("corpus file"),
        ..PassthroughForward::default()
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run
    // quickly then, as a smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    let bench = Bench {
        budget: if quick { Duration::from_millis(20) } else { Duration::from_secs(2) },
    };
    let forward = slash_command();
    let wasm = std::fs::read(hermes_plugin_artifacts::DISCORD).expect("discord component");
    let sha = hex::encode(sha2::Sha256::digest(&wasm));
    println!("discord component: {} bytes; request body: {} bytes", wasm.len(), forward.body.len());

    let plugin = BenchPlugin::new(wasm, Limits::default()).expect("compile");
    println!("allocator: {}", plugin.allocator().as_str());
    assert_eq!(plugin.fresh_convert(&forward), Ok(1), "the slash command converts to one event");

    bench.run("compile", || plugin.compile().expect("compile"));
    let cache = tempfile::tempdir().expect("cache dir");
    plugin.cached_load(cache.path(), &sha).expect("fill the cache");
    bench.run("cached load", || plugin.cached_load(cache.path(), &sha).expect("cached load"));
    bench.run("instantiate", || plugin.instantiate().expect("instantiate"));
    bench.run("fresh convert", || plugin.fresh_convert(&forward).expect("convert"));
    let mut warm = plugin.warm().expect("warm instance");
    bench.run("warm convert", || warm.convert(&forward).expect("convert"));

    // The whole async path: semaphore, worker hop, oneshot.
    let dir = tempfile::tempdir().expect("plugins dir");
    std::fs::copy(hermes_plugin_artifacts::DISCORD, dir.path().join("discord.wasm")).expect("copy");
    let (host, report) = PluginHost::load(PluginHostConfig::new(dir.path())).expect("host");
    assert!(report.is_clean(), "{:?}", report.errors);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    bench.run("host convert", || rt.block_on(host.convert(&forward)));
}
