//! Helpers shared by the modules that run the real `hermes-gateway` binary.
//!
//! `CARGO_BIN_EXE_*` exists only for tests of the binary's own package, and
//! a binary-only package cannot be a dependency (artifact dependencies are
//! unstable), so the binary comes from a pre-step: `scripts/test` builds it
//! before the tests and names it in `HERMES_GATEWAY_BIN`. A bare
//! `cargo test` has no pre-step; then, and only then, the binary is built
//! once per run with `cargo build -p hermes-gateway` (a no-op when fresh),
//! so a developer never tests a stale binary.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{OnceLock, mpsc};
use std::time::Instant;

use serde_json::Value;

/// The binary: `HERMES_GATEWAY_BIN`, else built on first use.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("HERMES_GATEWAY_BIN").filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "HERMES_GATEWAY_BIN={} is not a file",
                bin.display()
            );
            return bin;
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/all-<hash> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "hermes-gateway",
            "--bin",
            "hermes-gateway",
            "--manifest-path",
        ])
        .arg(&manifest);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = cmd.status().expect("run cargo build -p hermes-gateway");
        assert!(
            status.success(),
            "cargo build -p hermes-gateway failed: {status}"
        );
        let bin = profile_dir.join("hermes-gateway");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// A command with a clean environment: only PATH and a private HOME, so
/// nothing from the developer's `~/.hermes/.env` or shell leaks in.
pub fn gateway(home: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .current_dir(home);
    cmd
}

/// The in-repo copy of the conversion corpus.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus")
}

/// The `cases` of the corpus manifest.
pub fn corpus_cases() -> Vec<Value> {
    let text =
        std::fs::read_to_string(corpus_dir().join("manifest.json")).expect("corpus manifest");
    let manifest: Value = serde_json::from_str(&text).expect("manifest JSON");
    manifest["cases"].as_array().expect("cases").clone()
}

/// The manifest case for `file` (e.g. `discord/guild_slash_simple.json`).
pub fn corpus_case(file: &str) -> Value {
    corpus_cases()
        .into_iter()
        .find(|c| c["file"] == file)
        .unwrap_or_else(|| panic!("{file} is not in the corpus manifest"))
}

/// The `passthrough_forward` a corpus case describes: its `forward` fields
/// (platform, method, path, headers) and its body file's exact bytes.
pub fn corpus_forward(case: &Value) -> hermes_protocol::forward::PassthroughForward {
    let body = std::fs::read(corpus_dir().join(case["file"].as_str().expect("file")))
        .expect("corpus body");
    let f = &case["forward"];
    let text = |k: &str| f[k].as_str().expect("forward field").to_owned();
    let headers = f["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h[0].as_str().expect("name").to_owned(),
                h[1].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    hermes_protocol::forward::PassthroughForward {
        platform: text("platform"),
        method: text("method"),
        path: text("path"),
        headers,
        body,
        ..Default::default()
    }
}

/// A plugins directory holding copies of the given components.
pub fn plugins_dir(parent: &Path, components: &[&str]) -> PathBuf {
    let dir = parent.join("plugins");
    std::fs::create_dir_all(&dir).expect("mkdir plugins");
    for c in components {
        let src = Path::new(c);
        std::fs::copy(src, dir.join(src.file_name().expect("file name"))).expect("copy component");
    }
    dir
}

/// Kills the child if a test fails before it exits on its own.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A parsed `/metrics` page (OpenMetrics text), checked for the format's
/// shape before any value is read: it ends with `# EOF`, and every sample
/// belongs to a family declared by a `# TYPE` line (a counter family `X`
/// declares the samples `X_total`, a histogram `X` its `X_bucket`, `X_sum`
/// and `X_count`).
pub struct Metrics {
    pub scrape: prometheus_parse::Scrape,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        assert!(text.ends_with("# EOF\n"), "no `# EOF` at the end:\n{text}");
        let declared: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let ok = declared.iter().any(|(family, kind)| match *kind {
                "counter" => name.strip_suffix("_total") == Some(family),
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family)),
                _ => name == *family,
            });
            assert!(ok, "sample `{line}` has no matching # TYPE:\n{text}");
        }
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("the exposition parses");
        Self { scrape }
    }

    /// The value of the counter or gauge sample `name` with `label`.
    pub fn value(&self, name: &str, label: (&str, &str)) -> Option<f64> {
        self.samples(name, label).find_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
    }

    /// The observation count of the histogram `name` with `labels`.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .find_map(|s| match &s.value {
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map(|b| b.count),
                _ => None,
            })
    }

    fn samples<'a>(
        &'a self,
        name: &'a str,
        label: (&'a str, &'a str),
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> {
        self.scrape
            .samples
            .iter()
            .filter(move |s| s.metric == name && s.labels.get(label.0) == Some(label.1))
    }
}

/// How long a test waits for the binary's next expected line.
pub const LINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The next line from `lines` that satisfies `predicate`, within the timeout.
pub fn wait_line(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    predicate: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + LINE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if predicate(&line) {
                    return line;
                }
            }
            Err(e) => panic!(
                "expected line not printed ({e}); output so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// One HTTP/1.1 POST; returns (status, body).
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the ingress");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    read_response(stream)
}

/// Status and body of the response on `stream` (read to the end).
pub fn read_response(mut stream: TcpStream) -> (u16, String) {
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// `GET path` on `addr`: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin endpoint");
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    read_response(stream)
}
