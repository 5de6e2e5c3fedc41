//! Outbound request/response round trips per second against the stub
//! connector (1, 64 and 1024 in flight), and process memory with 10,000
//! pending requests.
//!
//! The stub runs in a child process (this binary re-executed with
//! `HERMES_BENCH_STUB=1`), so the round trips cross a real loopback socket
//! between processes and the measured RSS is the gateway side's alone.
//!
//! Run: `cargo bench -p hermes-transport --bench roundtrip`

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hermes_connector::{Answer, StubConfig, StubConnector};
use hermes_transport::{LinkState, RelayConfig, RelayHandle, RelayLink};

const SECRET: &str = "bench-secret";
const CHILD_ENV: &str = "HERMES_BENCH_STUB";
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);
const PENDING: usize = 10_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::var_os(CHILD_ENV).is_some() {
        runtime.block_on(stub_process());
    } else {
        runtime.block_on(bench());
    }
}

/// Child: serve a stub connector, print its URL, obey `never` on stdin, exit
/// when stdin closes.
async fn stub_process() {
    let stub = StubConnector::start(StubConfig::with_secrets([SECRET]))
        .await
        .expect("bind stub");
    println!("{}", stub.url());
    let _ = std::io::stdout().flush();
    let lines = tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("never") => stub.set_default_answer(Answer::Never),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let _ = lines.await;
}

fn spawn_stub() -> (Child, String) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn stub process");
    let stdout = child.stdout.take().expect("child stdout");
    let mut url = String::new();
    BufReader::new(stdout)
        .read_line(&mut url)
        .expect("stub url");
    (child, url.trim().to_owned())
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn connect(url: &str, outbound_timeout: Duration) -> RelayHandle {
    let mut config = RelayConfig::new(url, Some("gw-bench"), Some(SECRET), false).expect("config");
    config.outbound_timeout = outbound_timeout;
    config.outbound_queue = 4096;
    let (relay, inbound) = RelayLink::spawn(config);
    // Nothing inbound in this bench; keep the receiver alive.
    std::mem::forget(inbound);
    let mut state = relay.state();
    state
        .wait_for(LinkState::is_connected)
        .await
        .expect("connected");
    relay
}

/// Keep `in_flight` sends outstanding for `duration`; returns completed
/// round trips.
async fn run_for(relay: &RelayHandle, in_flight: usize, duration: Duration) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..in_flight)
        .map(|i| {
            let relay = relay.clone();
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let chat = format!("chat-{i}");
                while Instant::now() < deadline {
                    let result = relay
                        .send(chat.as_str(), "ping", None, Default::default())
                        .await;
                    assert!(result.success, "round trip failed: {result:?}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    done.load(Ordering::Relaxed)
}

async fn bench() {
    let (mut child, url) = spawn_stub();
    let relay = connect(&url, Duration::from_secs(30)).await;
    println!("relay round trips (gateway ↔ stub connector in another process, loopback)");
    for in_flight in [1usize, 64, 1024] {
        run_for(&relay, in_flight, WARMUP).await;
        let started = Instant::now();
        let n = run_for(&relay, in_flight, MEASURE).await;
        let secs = started.elapsed().as_secs_f64();
        let rate = n as f64 / secs;
        let mean_latency_us = secs * 1e6 * in_flight as f64 / n.max(1) as f64;
        println!(
            "  in flight {in_flight:>5}: {rate:>10.0} round trips/s  (mean latency {mean_latency_us:.0} µs, {n} in {secs:.2} s)"
        );
    }
    relay.close().await;

    // Memory with 10,000 requests pending (connector never answers).
    let relay = connect(&url, Duration::from_secs(600)).await;
    if let Some(stdin) = child.stdin.as_mut() {
        writeln!(stdin, "never").expect("tell stub");
        stdin.flush().expect("flush");
    }
    // A round trip after the command cannot prove the stub read it, so wait
    // for a request that stays pending.
    let probe = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.send("probe", "x", None, Default::default()).await })
    };
    while relay.pending_len() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = vm_rss_kib();
    let callers: Vec<_> = (0..PENDING - 1)
        .map(|i| {
            let relay = relay.clone();
            tokio::spawn(async move {
                relay
                    .send(format!("chat-{i}"), "hello", None, Default::default())
                    .await
            })
        })
        .collect();
    while relay.pending_len() < PENDING {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = vm_rss_kib();
    println!(
        "memory: VmRSS {before} KiB connected → {after} KiB with {PENDING} pending (+{} KiB, ≈{} bytes per pending request incl. its caller task)",
        after.saturating_sub(before),
        after.saturating_sub(before) * 1024 / PENDING as u64
    );
    let settle = Instant::now();
    relay.close().await;
    let mut lost = 0;
    for caller in callers {
        if caller.await.expect("caller").ambiguous {
            lost += 1;
        }
    }
    let _ = probe.await;
    println!(
        "close: {lost} pending callers settled as connection-lost in {:?}; pending map now {}",
        settle.elapsed(),
        relay.pending_len()
    );
    drop(child.stdin.take());
    let _ = child.wait();
}
