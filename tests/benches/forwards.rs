//! End-to-end webhook forwards: the real `hermes-gateway run` binary (echo
//! agent, the compiled first-party plugins) against a [`StubConnector`] in
//! this process.
//!
//! For each workload (Discord slash commands alone; Twilio SMS alone; the two
//! alternating) the bench:
//!
//! 1. **saturates**: keeps a bounded window of forwards outstanding and
//!    counts the replies (`follow_up` / `send` frames, which the stub answers
//!    with success) → forwards/s;
//! 2. **paces** an open-loop stream at half that rate and measures, per
//!    forward, the time from handing the frame to the stub to seeing its
//!    reply frame → p50/p90/p99/max.
//!
//! Every forward carries distinct channel and user ids (cycled over
//! [`VARIANTS`]) so sessions do not serialize on one key, and a `#<n>` marker
//! in its text that the echo agent sends back, which matches each reply to
//! its forward. The bench process and the gateway share the machine's cores.
//!
//! `cargo bench -p hermes-tests --bench forwards`; `HERMES_BENCH_SECS`
//! (default 5) sets the length of each phase, `HERMES_BENCH_WINDOW` (default
//! 256) the saturation window, `HERMES_BENCH_RATE` a fixed paced rate
//! instead of half the saturated one, `HERMES_BENCH_NO_TYPING=1` a descriptor
//! without the `typing` op, `HERMES_BENCH_ISOLATION=per-tenant` warm
//! per-tenant instances, `HERMES_GATEWAY_BIN` a prebuilt binary to run
//! instead of building one. `HERMES_BENCH_SHADOW=SAMPLE` adds a shadow
//! candidate to Discord's route at that sample rate. With
//! `HERMES_BENCH_BASELINE=SCRIPT` (set by
//! `scripts/bench-baseline`) the Python asyncio baseline runs first, on the
//! same stub and workload, and the two are compared.
//!
//! `HERMES_BENCH_SLOW_FLOOD=N` measures fairness instead (conversion.md
//! §3.1): a slow but legitimate third-party converter (the hostile test
//! guest's `spin` mode, `HERMES_BENCH_SLOW_SPIN` million iterations,
//! default 50 ≈ 50 ms) is loaded beside the first-party ones and flooded at
//! N forwards/s for the whole run, while only the Discord workload is
//! measured.

#[path = "../all/support.rs"]
#[allow(dead_code)] // the bench uses only the binary locator and ChildGuard
mod support;
use support::ChildGuard;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hermes_connector::{EventCursor, StubConfig, StubConnector, descriptor_value};
use hermes_protocol::action::Action;
use hermes_protocol::descriptor::Descriptor;
use hermes_protocol::forward::PassthroughForward;
use hermes_protocol::frame::{ConnectorFrame, GatewayFrame};
use serde_json::Value;
use tokio::sync::Notify;

/// Distinct channel/user ids per workload; a forward's variant is its
/// sequence number modulo this. Far more than the window, so two forwards in
/// flight at once practically never share a session.
const VARIANTS: usize = 4096;

/// A forward frame, encoded once, and the marker its reply carries.
struct Prepared {
    line: String,
}

/// What the reply watcher shares with the pushers.
struct Tally {
    /// Replies seen (follow_up and send frames).
    replied: AtomicU64,
    /// Typing indicators seen (informational).
    typing: AtomicU64,
    /// Replies whose marker did not parse or matched no pending push.
    unmatched: AtomicU64,
    /// Replies to the slow plugin's flood (`HERMES_BENCH_SLOW_FLOOD`).
    slow_replies: AtomicU64,
    /// Push time of the forward with each marker, in ns since `epoch` (0 = none).
    pushed_at: Vec<AtomicU64>,
    /// Latencies (ns) recorded while `recording` is set.
    latencies: Mutex<Vec<u64>>,
    recording: AtomicBool,
    changed: Notify,
    epoch: Instant,
}

impl Tally {
    fn new(markers: usize) -> Self {
        Self {
            replied: AtomicU64::new(0),
            typing: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            slow_replies: AtomicU64::new(0),
            pushed_at: (0..markers).map(|_| AtomicU64::new(0)).collect(),
            latencies: Mutex::new(Vec::new()),
            recording: AtomicBool::new(false),
            changed: Notify::new(),
            epoch: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn take_latencies(&self) -> Vec<u64> {
        std::mem::take(
            &mut *self
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// Follows the stub's record: counts replies and times them against their push.
async fn watch_replies(mut cursor: EventCursor, tally: Arc<Tally>) {
    loop {
        let (_, frame) = cursor
            .next_frame(|f| matches!(f, GatewayFrame::Outbound { .. }))
            .await;
        let GatewayFrame::Outbound { action, .. } = frame else {
            continue;
        };
        let content = match &action {
            // Replies to the slow flood are not measured.
            Action::Send { chat_id, .. } if chat_id == "hostile-chat" => {
                tally.slow_replies.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Action::FollowUp { content, .. } | Action::Send { content, .. } => content,
            Action::Typing { .. } => {
                tally.typing.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            _ => continue,
        };
        let now = tally.now_ns();
        let marker = content
            .rsplit_once('#')
            .and_then(|(_, n)| n.trim().parse::<usize>().ok());
        let sent = marker
            .and_then(|m| tally.pushed_at.get(m))
            .map_or(0, |slot| slot.swap(0, Ordering::AcqRel));
        if sent == 0 {
            tally.unmatched.fetch_add(1, Ordering::Relaxed);
        } else if tally.recording.load(Ordering::Acquire) {
            tally
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(now.saturating_sub(sent));
        }
        tally.replied.fetch_add(1, Ordering::Release);
        tally.changed.notify_one();
    }
}

/// The corpus case `file` from the in-repo manifest: its forward template and body.
fn corpus_case(file: &str) -> (Value, Vec<u8>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("corpus manifest"),
    )
    .expect("manifest JSON");
    let case = manifest["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["file"] == file)
        .unwrap_or_else(|| panic!("{file} is not in the corpus manifest"))
        .clone();
    let body = std::fs::read(dir.join(file)).expect("corpus body");
    (case["forward"].clone(), body)
}

/// A forward from a corpus template with `body`; `content-length` follows the body.
fn forward_from(template: &Value, body: Vec<u8>) -> PassthroughForward {
    let s = |k: &str| template[k].as_str().unwrap_or_default().to_owned();
    let headers = template["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| {
            let name = h[0].as_str().expect("header name").to_owned();
            let value = if name.eq_ignore_ascii_case("content-length") {
                body.len().to_string()
            } else {
                h[1].as_str().expect("header value").to_owned()
            };
            (name, value)
        })
        .collect();
    PassthroughForward {
        platform: s("platform"),
        bot_id: String::new(),
        method: s("method"),
        path: s("path"),
        headers,
        body,
        profile: None,
    }
}

fn encode(forward: PassthroughForward) -> String {
    ConnectorFrame::PassthroughForward {
        forward,
        buffer_id: None,
    }
    .encode()
}

/// Replaces the last `digits.len()` characters of `s` with `digits`.
fn suffixed(s: &str, digits: &str) -> String {
    let keep = s.len().saturating_sub(digits.len());
    format!("{}{digits}", &s[..keep])
}

/// `guild_slash_simple` with channel, user and interaction ids of `variant`
/// and `#marker` appended to the option text.
fn discord_line(template: &(Value, Vec<u8>), variant: usize, marker: usize) -> String {
    let mut body: Value = serde_json::from_slice(&template.1).expect("discord body is JSON");
    let digits = format!("{variant:05}");
    let channel = suffixed(body["channel_id"].as_str().expect("channel_id"), &digits);
    body["channel_id"] = Value::String(channel.clone());
    body["channel"]["id"] = Value::String(channel);
    let user = suffixed(
        body["member"]["user"]["id"].as_str().expect("user id"),
        &digits,
    );
    body["member"]["user"]["id"] = Value::String(user);
    let id = suffixed(
        body["id"].as_str().expect("interaction id"),
        &format!("{marker:07}"),
    );
    body["id"] = Value::String(id);
    let option = &mut body["data"]["options"][0]["value"];
    let text = format!("{} #{marker}", option.as_str().expect("option value"));
    *option = Value::String(text);
    encode(forward_from(
        &template.0,
        serde_json::to_vec(&body).expect("serialize body"),
    ))
}

/// `twilio/sms` with the sender's number and message sid of `variant` and
/// `#marker` appended to the text.
fn twilio_line(template: &(Value, Vec<u8>), variant: usize, marker: usize) -> String {
    let form = std::str::from_utf8(&template.1).expect("form is UTF-8");
    let digits = format!("{variant:04}");
    let fields: Vec<String> = form
        .trim_end()
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("From", v)) => format!("From={}", suffixed(v, &digits)),
            Some(("MessageSid" | "SmsSid" | "SmsMessageSid", v)) => {
                format!(
                    "{}={}",
                    pair.split_once('=').map_or("", |p| p.0),
                    suffixed(v, &format!("{marker:07}"))
                )
            }
            Some(("Body", v)) => format!("Body={v}+%23{marker}"),
            _ => pair.to_owned(),
        })
        .collect();
    encode(forward_from(&template.0, fields.join("&").into_bytes()))
}

/// The `hermes-gateway` binary of this profile, built as the end-to-end tests
/// build it; `HERMES_GATEWAY_BIN` names a prebuilt one instead (handy under a
/// profiler).
fn gateway_binary() -> PathBuf {
    match std::env::var_os("HERMES_GATEWAY_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => support::binary().to_path_buf(),
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS`), 0 where unavailable.
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `GET /metrics` on the admin endpoint.
fn metrics(addr: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// CPU time (user + system, all threads) of process `pid` so far, from
/// `/proc/<pid>/stat`; zero where that is unavailable.
fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line, in clock ticks.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime is field 14, i.e. index 11 after `state` (field 3) at index 0.
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / CLOCK_TICKS)
}

/// `sysconf(_SC_CLK_TCK)`, which is 100 on every Linux target we run on.
const CLOCK_TICKS: u64 = 100;

/// CPU used by the gateway and by this process across a phase.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    gateway: Duration,
    bench: Duration,
}

impl CpuMark {
    fn now(gateway_pid: &str) -> Self {
        Self {
            gateway: cpu_time(gateway_pid),
            bench: cpu_time("self"),
        }
    }

    /// (gateway µs, bench µs) per forward since `self`.
    fn per_forward(self, gateway_pid: &str, forwards: u64) -> (f64, f64) {
        let now = Self::now(gateway_pid);
        let per = |a: Duration, b: Duration| {
            (b.saturating_sub(a)).as_secs_f64() * 1e6 / forwards.max(1) as f64
        };
        (per(self.gateway, now.gateway), per(self.bench, now.bench))
    }
}

/// The 1/5/15-minute load averages: the machine is shared, so say how busy it was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One workload: the frames it cycles through.
struct Workload {
    name: &'static str,
    /// `lines[i]` is the frame of marker `i`.
    lines: Vec<Prepared>,
}

struct Figures {
    saturated_per_sec: f64,
    /// Gateway and bench CPU µs per forward while saturated.
    saturated_cpu: (f64, f64),
    saturated_latency: Vec<u64>,
    paced_rate: f64,
    paced_per_sec: f64,
    paced_latency: Vec<u64>,
}

/// Push forward `marker` of `workload`, stamping its push time.
async fn push(stub: &StubConnector, tally: &Tally, workload: &Workload, marker: usize) {
    let Some(prepared) = workload.lines.get(marker) else {
        return;
    };
    tally.pushed_at[marker].store(tally.now_ns().max(1), Ordering::Release);
    stub.push_text(prepared.line.clone())
        .await
        .expect("gateway connected");
}

/// Waits until every pushed forward is answered (or `limit` passes).
async fn settle(tally: &Tally, pushed: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while tally.replied.load(Ordering::Acquire) < pushed {
        if Instant::now() > deadline {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), tally.changed.notified()).await;
    }
    true
}

async fn run_workload(
    stub: &StubConnector,
    tally: &Tally,
    workload: &Workload,
    phase: Duration,
    window: u64,
    pid: &str,
) -> Figures {
    let (saturated_per_sec, saturated_cpu, saturated_latency) =
        saturate(stub, tally, workload, phase, window, pid).await;
    // Paced, open loop, at half the saturated rate.
    let fixed = env_or("HERMES_BENCH_RATE", 0);
    let rate = if fixed > 0 {
        fixed as f64
    } else {
        saturated_per_sec / 2.0
    };
    let (paced_per_sec, paced_latency) = pace(stub, tally, workload, phase, rate).await;
    Figures {
        saturated_per_sec,
        saturated_cpu,
        saturated_latency,
        paced_rate: rate,
        paced_per_sec,
        paced_latency,
    }
}

/// Keeps `window` forwards outstanding for `phase`: (forwards/s, CPU µs per
/// forward of `pid` and of the bench, latencies).
async fn saturate(
    stub: &StubConnector,
    tally: &Tally,
    workload: &Workload,
    phase: Duration,
    window: u64,
    pid: &str,
) -> (f64, (f64, f64), Vec<u64>) {
    let markers = workload.lines.len();
    let base = tally.replied.load(Ordering::Acquire);
    let mut pushed = 0_u64;
    tally.recording.store(true, Ordering::Release);
    let cpu = CpuMark::now(pid);
    let start = Instant::now();
    while start.elapsed() < phase {
        let outstanding = pushed - (tally.replied.load(Ordering::Acquire) - base);
        if outstanding < window {
            for _ in outstanding..window {
                let marker = usize::try_from(pushed).unwrap_or(0) % markers;
                push(stub, tally, workload, marker).await;
                pushed += 1;
            }
        } else {
            let _ = tokio::time::timeout(Duration::from_millis(10), tally.changed.notified()).await;
        }
    }
    let answered = tally.replied.load(Ordering::Acquire) - base;
    let elapsed = start.elapsed();
    let cpu = cpu.per_forward(pid, answered);
    tally.recording.store(false, Ordering::Release);
    let latencies = tally.take_latencies();
    assert!(
        settle(tally, base + pushed, Duration::from_secs(30)).await,
        "{}: replies missing after saturation",
        workload.name
    );
    (answered as f64 / elapsed.as_secs_f64(), cpu, latencies)
}

/// An open-loop stream at `rate` forwards/s for `phase`: (achieved rate,
/// latencies). Arrivals are spaced by a thread that sleeps until the next
/// one is due (the OS timer, at most every 200 µs), not pushed in bursts at
/// the async timer's 1 ms granularity: a burst of ten would queue its tenth
/// forward behind nine others and charge that to the gateway's tail.
async fn pace(
    stub: &StubConnector,
    tally: &Tally,
    workload: &Workload,
    phase: Duration,
    rate: f64,
) -> (f64, Vec<u64>) {
    let markers = workload.lines.len();
    let base = tally.replied.load(Ordering::Acquire);
    let (due_tx, mut due) = tokio::sync::mpsc::unbounded_channel::<u64>();
    tally.recording.store(true, Ordering::Release);
    let start = Instant::now();
    let clock = std::thread::spawn(move || {
        // Wakes at most every 200 µs and sends what is due by then: even
        // spacing without ten thousand thread wake-ups a second.
        let mut n = 0_u64;
        while start.elapsed() < phase {
            let at = start + Duration::from_secs_f64(n as f64 / rate.max(1.0));
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.max(Duration::from_micros(200)));
            }
            let now = start.elapsed().as_secs_f64();
            while (n as f64) / rate.max(1.0) <= now {
                if due_tx.send(n).is_err() {
                    return;
                }
                n += 1;
            }
        }
    });
    let mut paced = 0_u64;
    while let Some(n) = due.recv().await {
        push(
            stub,
            tally,
            workload,
            usize::try_from(n).unwrap_or(0) % markers,
        )
        .await;
        paced += 1;
    }
    let elapsed = start.elapsed();
    let _ = clock.join();
    assert!(
        settle(tally, base + paced, Duration::from_secs(30)).await,
        "{}: replies missing after pacing",
        workload.name
    );
    tally.recording.store(false, Ordering::Release);
    (paced as f64 / elapsed.as_secs_f64(), tally.take_latencies())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1e6
}

fn latency_cells(latencies: &mut [u64]) -> String {
    latencies.sort_unstable();
    format!(
        "{:>7.3} {:>7.3} {:>7.3} {:>7.3}",
        percentile(latencies, 50.0),
        percentile(latencies, 90.0),
        percentile(latencies, 99.0),
        percentile(latencies, 100.0)
    )
}

/// The p99 of `latencies`, in ms.
fn p99(latencies: &[u64]) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    percentile(&sorted, 99.0)
}

/// `hermes-gateway run` with the echo agent, the admin endpoint on `admin`
/// and `plugins`, dialling `stub`; stderr goes to `home/gateway.log`.
fn spawn_gateway(
    bin: &Path,
    home: &Path,
    plugins: &Path,
    stub: &StubConnector,
    admin: &str,
) -> std::process::Child {
    let log = std::fs::File::create(home.join("gateway.log")).expect("log file");
    Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .current_dir(home)
        .arg("run")
        .arg("--plugins")
        .arg(plugins)
        .args(["--agent", "echo", "--admin", admin])
        .env("GATEWAY_RELAY_URL", stub.url())
        .env("GATEWAY_RELAY_ID", "gw-bench")
        .env("GATEWAY_RELAY_SECRET", "bench-secret")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn hermes-gateway run")
}

/// The Python asyncio baseline (`tests/baseline/asyncio_gateway.py`) under
/// `HERMES_BENCH_PYTHON` (default `python3`), dialling `stub`.
fn spawn_baseline(script: &Path, stub: &StubConnector, home: &Path) -> std::process::Child {
    let python = std::env::var_os("HERMES_BENCH_PYTHON").unwrap_or_else(|| "python3".into());
    // Its stderr is the bench's: a baseline that cannot start says why.
    Command::new(python)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .arg(script)
        .env("GATEWAY_RELAY_URL", stub.url())
        .env("GATEWAY_RELAY_ID", "gw-bench")
        .env("GATEWAY_RELAY_SECRET", "bench-secret")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the Python baseline (scripts/bench-baseline sets it up)")
}

/// Waits for the next `hello` after `cursor`.
async fn wait_for_hello(mut cursor: EventCursor, who: &str) {
    tokio::time::timeout(
        Duration::from_secs(120),
        cursor.next_frame(|f| matches!(f, GatewayFrame::Hello { .. })),
    )
    .await
    .unwrap_or_else(|_| panic!("{who} dials the stub within 120 s"));
}

/// Waits for `who`'s hello, then for its answer to one Discord forward.
async fn await_hello(stub: &StubConnector, tally: &Tally, discord: &Workload, who: &str) {
    wait_for_hello(stub.cursor(), who).await;
    let base = tally.replied.load(Ordering::Acquire);
    push(stub, tally, discord, 0).await;
    assert!(
        settle(tally, base + 1, Duration::from_secs(60)).await,
        "{who} did not answer its warm-up forward"
    );
}

fn main() {
    let phase = Duration::from_secs(env_or("HERMES_BENCH_SECS", 5));
    let window = env_or("HERMES_BENCH_WINDOW", 256).max(1);
    let bin = gateway_binary();

    let discord = corpus_case("discord/guild_slash_simple.json");
    let twilio = corpus_case("twilio/sms.form");
    let discord_only = Workload {
        name: "discord slash",
        lines: (0..VARIANTS)
            .map(|v| Prepared {
                line: discord_line(&discord, v, v),
            })
            .collect(),
    };
    let twilio_only = Workload {
        name: "twilio sms",
        lines: (0..VARIANTS)
            .map(|v| Prepared {
                line: twilio_line(&twilio, v, v),
            })
            .collect(),
    };
    let mixed = Workload {
        name: "discord+twilio 1:1",
        lines: (0..VARIANTS)
            .map(|v| Prepared {
                line: if v % 2 == 0 {
                    discord_line(&discord, v, v)
                } else {
                    twilio_line(&twilio, v, v)
                },
            })
            .collect(),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut stub_config = StubConfig::with_secrets(["bench-secret"]);
    let no_typing = env_or("HERMES_BENCH_NO_TYPING", 0) != 0;
    if no_typing {
        // The placeholder descriptor without `typing`: turns send no indicator.
        let mut descriptor = Descriptor::placeholder("relay");
        descriptor.supported_ops.retain(|op| op != "typing");
        stub_config.descriptors = vec![descriptor_value(&descriptor)];
    }
    let stub = Arc::new(
        rt.block_on(StubConnector::start(stub_config))
            .expect("stub connector"),
    );
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = home.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir plugins");
    for c in [
        hermes_plugin_artifacts::DISCORD,
        hermes_plugin_artifacts::TWILIO,
        // Loaded but not driven: the idle RSS is that of the three plugins.
        hermes_plugin_artifacts::SLACK,
    ] {
        let src = Path::new(c);
        std::fs::copy(src, plugins.join(src.file_name().expect("file name")))
            .expect("copy component");
    }
    // `HERMES_BENCH_ISOLATION=per-tenant`: warm per-tenant instances for
    // both platforms (every forward of a workload shares one tenant, as one
    // busy customer's traffic would).
    let isolation = std::env::var("HERMES_BENCH_ISOLATION").unwrap_or_default();
    if !isolation.is_empty() {
        let policy = format!(
            "[platform.discord]\nisolation = \"{isolation}\"\n[platform.twilio]\nisolation = \"{isolation}\"\n"
        );
        std::fs::write(plugins.join("policy.toml"), policy).expect("policy");
    }
    // `HERMES_BENCH_SHADOW=SAMPLE` (0.0–1.0): Discord's forwards also go to
    // a shadow candidate, compared off the live path; the live latency is
    // what this measures.
    if let Ok(sample) = std::env::var("HERMES_BENCH_SHADOW") {
        std::fs::copy(
            hermes_plugin_artifacts::DISCORD_NEXT,
            plugins.join("discord-next.wasm"),
        )
        .expect("copy component");
        let policy = format!(
            "[platform.discord]\nplugin = \"discord-interactions\"\nshadow = \"discord-next\"\nshadow_sample = {sample}\n"
        );
        std::fs::write(plugins.join("policy.toml"), policy).expect("policy");
    }
    let slow_rate = env_or("HERMES_BENCH_SLOW_FLOOD", 0);
    if slow_rate > 0 {
        // The hostile guest also lists `discord`: pin Discord's default.
        std::fs::copy(
            hermes_plugin_artifacts::HOSTILE,
            plugins.join("hostile.wasm"),
        )
        .expect("copy component");
        std::fs::write(
            plugins.join("policy.toml"),
            "[platform.discord]\nplugin = \"discord-interactions\"\n",
        )
        .expect("policy");
    }
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").to_string()
    };
    let load_before = load_average();
    let tally = Arc::new(Tally::new(VARIANTS));
    rt.spawn(watch_replies(stub.cursor_at_end(), Arc::clone(&tally)));
    // The Python asyncio baseline first, on the same stub and generator.
    let baseline = std::env::var_os("HERMES_BENCH_BASELINE").map(|script| {
        let child = spawn_baseline(Path::new(&script), &stub, home.path());
        let pid = child.id().to_string();
        let _child = ChildGuard(child);
        rt.block_on(async {
            await_hello(&stub, &tally, &discord_only, "the baseline").await;
            run_workload(&stub, &tally, &discord_only, phase, window, &pid).await
        })
    });

    // Start to ready (its hello at the stub: plugins loaded, link up) with
    // a cold artifact cache, then again with the cache that start filled.
    let start_gateway = || {
        let hello = stub.cursor_at_end();
        let started = Instant::now();
        let child = ChildGuard(spawn_gateway(&bin, home.path(), &plugins, &stub, &admin));
        rt.block_on(wait_for_hello(hello, "the gateway"));
        (child, started.elapsed())
    };
    let (cold, cold_start) = start_gateway();
    drop(cold);
    let (_child, warm_start) = start_gateway();
    let gateway_pid = _child.0.id().to_string();
    let rss_idle = rss_kib(&gateway_pid);
    let mut rss_warm: Option<(u64, u64)> = None;
    let (results, at_baseline_rate) = rt.block_on(async {
        // The first answered forwards prove the link and both plugins are
        // ready: marker 0 is a Discord forward, marker 1 of the mix a Twilio one.
        let base = tally.replied.load(Ordering::Acquire);
        push(&stub, &tally, &discord_only, 0).await;
        push(&stub, &tally, &mixed, 1).await;
        assert!(
            settle(&tally, base + 2, Duration::from_secs(60)).await,
            "warm-up forwards were not answered"
        );

        let mut results = Vec::new();
        if slow_rate > 0 {
            // The baseline in the same run: Discord alone, no flood.
            results.push((
                "discord, no flood",
                run_workload(&stub, &tally, &discord_only, phase, window, &gateway_pid).await,
            ));
        }
        let flood_stop = Arc::new(AtomicBool::new(false));
        let flood = (slow_rate > 0).then(|| {
            let spin = env_or("HERMES_BENCH_SLOW_SPIN", 50);
            let line = encode(PassthroughForward {
                platform: "hostile".to_owned(),
                method: "POST".to_owned(),
                body: format!("spin {spin}").into_bytes(),
                ..PassthroughForward::default()
            });
            let (stub, stop) = (Arc::clone(&stub), Arc::clone(&flood_stop));
            tokio::spawn(async move {
                let start = Instant::now();
                let mut sent = 0_u64;
                while !stop.load(Ordering::Acquire) {
                    let due = (start.elapsed().as_secs_f64() * slow_rate as f64) as u64;
                    while sent < due {
                        let _ = stub.push_text(line.clone()).await;
                        sent += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                sent
            })
        });
        let workloads: Vec<(&str, &Workload)> = if flood.is_some() {
            vec![("discord + slow flood", &discord_only)]
        } else {
            vec![
                (discord_only.name, &discord_only),
                (twilio_only.name, &twilio_only),
                (mixed.name, &mixed),
            ]
        };
        for (name, workload) in workloads {
            results.push((
                name,
                run_workload(&stub, &tally, workload, phase, window, &gateway_pid).await,
            ));
            // Steady state: every session, cache and arena has been used.
            rss_warm.get_or_insert_with(|| {
                (rss_kib(&gateway_pid), tally.replied.load(Ordering::Acquire))
            });
        }
        flood_stop.store(true, Ordering::Release);
        if let Some(flood) = flood {
            let sent = flood.await.unwrap_or(0);
            println!(
                "slow plugin flood: {sent} forwards pushed at {slow_rate}/s, {} answered during the run",
                tally.slow_replies.load(Ordering::Relaxed)
            );
        }
        // The gateway at the baseline's own half-load rate.
        let at_baseline_rate = match &baseline {
            Some(b) => Some(pace(&stub, &tally, &discord_only, phase, b.paced_rate).await),
            None => None,
        };
        (results, at_baseline_rate)
    });

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!(
        "load average before: {load_before}, after: {}",
        load_average()
    );
    println!(
        "end-to-end forwards: hermes-gateway run (echo agent, wasm plugins) <-> stub connector; \
         {cpus} CPUs shared; {}s per phase, window {window}, typing {}",
        phase.as_secs(),
        if no_typing { "off" } else { "on" }
    );
    println!(
        "{:<20} {:>11} {:>8} {:>8} | {:>31} | {:>9} {:>9} | {:>31}",
        "workload",
        "saturated/s",
        "gw µs/fw",
        "bench µs",
        "sat. latency ms p50 p90 p99 max",
        "paced at",
        "achieved",
        "paced latency ms p50 p90 p99 max"
    );
    let gateway_discord = results
        .iter()
        .find(|(name, _)| *name == discord_only.name)
        .map(|(_, f)| (f.saturated_per_sec, p99(&f.paced_latency)));
    let mut rows: Vec<(&str, Figures)> = results;
    if let Some(b) = baseline {
        rows.push(("python baseline", b));
    }
    let baseline_figures = rows
        .iter()
        .find(|(name, _)| *name == "python baseline")
        .map(|(_, f)| (f.saturated_per_sec, p99(&f.paced_latency), f.paced_rate));
    for (name, mut f) in rows {
        println!(
            "{:<20} {:>11.0} {:>8.1} {:>8.1} | {} | {:>9.0} {:>9.0} | {}",
            name,
            f.saturated_per_sec,
            f.saturated_cpu.0,
            f.saturated_cpu.1,
            latency_cells(&mut f.saturated_latency),
            f.paced_rate,
            f.paced_per_sec,
            latency_cells(&mut f.paced_latency)
        );
    }
    println!(
        "gw µs/fw, bench µs: CPU time (user+sys, all threads) per answered forward while saturated; \
         {cpus} cores / gw µs/fw bounds the gateway alone on idle cores"
    );
    if let (Some((gw_max, gw_p99)), Some((py_max, py_p99, py_rate)), Some((_, mut at_rate))) =
        (gateway_discord, baseline_figures, at_baseline_rate)
    {
        at_rate.sort_unstable();
        println!();
        println!(
            "discord slash, hermes-gateway against the Python asyncio baseline (same generator, same run):"
        );
        println!(
            "  max forwards/s          gateway {gw_max:>8.0}   baseline {py_max:>8.0}   ratio {:.2}x (target >= 4x)",
            gw_max / py_max
        );
        println!(
            "  p99 at half own max     gateway {gw_p99:>8.3} ms baseline {py_p99:>8.3} ms (target: gateway <= 1 ms)"
        );
        println!(
            "  p99 at {py_rate:.0}/s (baseline's half load)  gateway {:>8.3} ms baseline {py_p99:>8.3} ms (target: gateway below)",
            percentile(&at_rate, 99.0)
        );
    }
    let rss_end = rss_kib(&gateway_pid);
    let replied = tally.replied.load(Ordering::Acquire);
    println!(
        "gateway start -> ready: {:.0} ms with a cold artifact cache, {:.0} ms warm; RSS idle (3 plugins) {:.1} MiB, at the end ({replied} forwards) {:.1} MiB",
        cold_start.as_secs_f64() * 1e3,
        warm_start.as_secs_f64() * 1e3,
        rss_idle as f64 / 1024.0,
        rss_end as f64 / 1024.0,
    );
    if let Some((warm, at)) = rss_warm {
        println!(
            "RSS steady state: {:.1} MiB after the first workload ({at} forwards), {:.1} MiB after {} more ({:+.1} %)",
            warm as f64 / 1024.0,
            rss_end as f64 / 1024.0,
            replied - at,
            (rss_end as f64 / warm.max(1) as f64 - 1.0) * 100.0
        );
    }
    println!(
        "replies {}, typing indicators {}, unmatched replies {}",
        tally.replied.load(Ordering::Acquire),
        tally.typing.load(Ordering::Relaxed),
        tally.unmatched.load(Ordering::Relaxed)
    );
    let text = metrics(&admin);
    for line in text.lines().filter(|l| {
        !l.starts_with('#')
            && (l.contains("forwards")
                || l.contains("turns_")
                || l.contains("replies")
                || l.contains("dropped")
                || l.contains("shadow"))
    }) {
        println!("  gateway: {line}");
    }
}
