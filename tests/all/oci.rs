//! Fleets: converters published to a real OCI registry (the CNCF
//! Distribution registry, Debian's `docker-registry`, on a free loopback
//! port with a temporary store) and pulled by digest by two gateways' plugin
//! hosts, each with its own cache, from one policy.
//!
//! A missing registry binary is a failure here, not a skip: `scripts/setup`
//! installs it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hermes_plugin_host::{LoadError, PluginHost, PluginHostConfig};

use crate::support::gateway;

/// A registry serving until dropped.
struct Registry {
    child: Child,
    addr: String,
    store: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start() -> Self {
        let binary = ["/usr/bin/docker-registry", "/usr/local/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect(
                "the OCI registry (Debian package docker-registry) is installed: run scripts/setup",
            );
        let store = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = store.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                store.path().join("data").display()
            ),
        )
        .expect("config");
        let mut child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the registry");
        // Ready once it says it listens (its log is the only event).
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let listening = lines
            .by_ref()
            .take(200)
            .any(|l| l.is_ok_and(|l| l.contains("listening on")));
        assert!(listening, "the registry did not start");
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr, store }
    }

    /// Pushes `file` as `REPO:TAG` with the real binary: the digest.
    fn push(&self, home: &Path, file: &str, target: &str) -> String {
        let o = gateway(home)
            .args(["plugins", "push", file, &format!("{}/{target}", self.addr)])
            .env("HERMES_REGISTRY_USERNAME", "ci-user")
            .env("HERMES_REGISTRY_PASSWORD", "never-printed-7f3a")
            .output()
            .expect("plugins push");
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "push failed: {stdout}{stderr}");
        assert!(
            !stdout.contains("never-printed") && !stderr.contains("never-printed"),
            "a credential was printed"
        );
        let digest = stdout.lines().next().unwrap_or_default().to_owned();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{stdout}"
        );
        let repo = target.split(':').next().unwrap_or_default();
        assert!(
            stdout.contains(&format!("pin: oci://{}/{repo}@{digest}", self.addr)),
            "{stdout}"
        );
        digest
    }

    fn pin(&self, repo: &str, digest: &str) -> String {
        format!("oci://{}/{repo}@{digest}", self.addr)
    }

    /// The file holding blob `digest` in the registry's store.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.store
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// One gateway's plugin host: its own (empty) plugins directory and cache,
/// the fleet's shared policy.
fn gateway_host(home: &Path, policy: &Path) -> (PluginHost, Vec<LoadError>) {
    let dir = home.join("plugins");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut config = PluginHostConfig::new(&dir);
    config.policy_file = Some(policy.to_owned());
    config.cache_dir = Some(home.join("cache"));
    let (host, report) = PluginHost::load(config).expect("the host starts");
    (host, report.errors)
}

/// `(source, sha256)` of every loaded plugin.
fn served(host: &PluginHost) -> Vec<(Option<String>, String)> {
    host.plugins()
        .into_iter()
        .map(|p| (p.source, p.sha256))
        .collect()
}

fn write_policy(path: &Path, pin: &str) {
    std::fs::write(path, format!("[[source]]\noci = \"{pin}\"\n")).expect("policy");
}

fn sha256_of(file: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(file).expect("component"),
    ))
}

#[test]
fn a_fleet_pulls_by_digest_rolls_forward_and_back_and_refuses_what_does_not_verify() {
    let registry = Registry::start();
    let home = tempfile::tempdir().expect("tempdir");
    let old_file = crate::abi::fixture("discord.wasm");
    let new_file = hermes_plugin_artifacts::DISCORD.to_owned();
    let old = registry.push(home.path(), &old_file, "hermes/discord:0.1");
    let new = registry.push(home.path(), &new_file, "hermes/discord:0.2");
    assert_ne!(old, new);

    // Two gateways, one policy pinning the old build.
    let fleet = tempfile::tempdir().expect("tempdir");
    let policy = fleet.path().join("policy.toml");
    write_policy(&policy, &registry.pin("hermes/discord", &old));
    let (a, errors_a) = gateway_host(&fleet.path().join("a"), &policy);
    let (b, errors_b) = gateway_host(&fleet.path().join("b"), &policy);
    assert!(
        errors_a.is_empty() && errors_b.is_empty(),
        "{errors_a:?} {errors_b:?}"
    );
    let expect_old = vec![(
        Some(registry.pin("hermes/discord", &old)),
        sha256_of(&old_file),
    )];
    assert_eq!(served(&a), expect_old, "the pinned bytes, verified");
    assert_eq!(served(&b), served(&a), "both gateways serve the same bytes");
    assert_eq!(a.host_counters().pulls_pulled, 1);

    // Roll forward: one edit of the policy, a reload on each (what the
    // file watch or SIGHUP does), no restart.
    write_policy(&policy, &registry.pin("hermes/discord", &new));
    for host in [&a, &b] {
        let report = host.reload_blocking();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
    let expect_new = vec![(
        Some(registry.pin("hermes/discord", &new)),
        sha256_of(&new_file),
    )];
    assert_eq!(served(&a), expect_new);
    assert_eq!(served(&b), expect_new);
    assert_eq!(a.plugins()[0].api_version, "0.2.0");

    // Roll back: the old digest is in each cache, so not even pulled again.
    write_policy(&policy, &registry.pin("hermes/discord", &old));
    let pulled_before = a.host_counters().pulls_pulled;
    a.reload_blocking();
    assert_eq!(served(&a), expect_old);
    assert_eq!(
        a.host_counters().pulls_pulled,
        pulled_before,
        "served from the cache"
    );
    assert!(a.host_counters().pulls_cached >= 1);

    // A digest the registry does not have: refused with the reference
    // named, and the working version keeps serving.
    let unknown = format!("sha256:{}", "0".repeat(64));
    write_policy(&policy, &registry.pin("hermes/discord", &unknown));
    let report = a.reload_blocking();
    let [LoadError::Pull { reference, message }] = report.errors.as_slice() else {
        panic!("one pull error: {:?}", report.errors);
    };
    assert!(reference.ends_with(&unknown), "{reference}");
    assert!(message.contains("registry"), "{message}");
    assert_eq!(served(&a), expect_old, "a failed pull replaces nothing");

    // A tag where a digest belongs: refused unless the entry opts in.
    write_policy(
        &policy,
        &format!("oci://{}/hermes/discord:0.2", registry.addr),
    );
    let report = a.reload_blocking();
    assert!(
        matches!(report.errors.as_slice(), [LoadError::Pull { message, .. }]
            if message.contains("names a tag, not a digest")),
        "{:?}",
        report.errors
    );
    assert_eq!(served(&a), expect_old);

    // A tampered blob in the registry: a fresh gateway refuses it.
    let layer = layer_digest(&new_file);
    let blob = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&blob).expect("the layer's blob");
    if let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    }
    std::fs::write(&blob, bytes).expect("tamper");
    write_policy(&policy, &registry.pin("hermes/discord", &new));
    let (fresh, errors) = gateway_host(&fleet.path().join("fresh"), &policy);
    assert!(fresh.plugins().is_empty(), "nothing unverified is loaded");
    assert!(
        matches!(errors.as_slice(), [LoadError::Pull { message, .. }]
            if message.contains("does not match its digest")),
        "{errors:?}"
    );

    // The registry down: a gateway whose cache holds the pinned digest
    // starts and serves it; the tampered copy never entered any cache.
    drop(registry);
    let (restarted, errors) = gateway_host(&fleet.path().join("b"), &policy);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(served(&restarted), expect_new);
}

/// `sha256:` of a component's bytes: the digest of its layer.
fn layer_digest(file: &str) -> String {
    format!("sha256:{}", sha256_of(file))
}

/// A `run` gateway with its own home (and so its own cache), its own stub
/// connector, and `--admin` on a free loopback port.
struct RunningGateway {
    child: crate::support::ChildGuard,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    admin: std::net::SocketAddr,
    _stub: hermes_connector::StubConnector,
}

impl RunningGateway {
    fn start(rt: &tokio::runtime::Runtime, home: &Path, policy: &Path) -> Self {
        use hermes_connector::{StubConfig, StubConnector};
        let stub = rt
            .block_on(StubConnector::start(StubConfig::with_secrets([
                "fleet-secret",
            ])))
            .expect("stub");
        let plugins = home.join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        let mut child = crate::support::ChildGuard(
            gateway(home)
                .arg("run")
                .arg("--plugins")
                .arg(&plugins)
                .arg("--policy")
                .arg(policy)
                .args(["--admin", "127.0.0.1:0", "--log-format", "json"])
                .env("GATEWAY_RELAY_URL", stub.url())
                .env("GATEWAY_RELAY_ID", "gw-fleet")
                .env("GATEWAY_RELAY_SECRET", "fleet-secret")
                .env("HERMES_REGISTRY_USERNAME", "ci-user")
                .env("HERMES_REGISTRY_PASSWORD", "never-printed-7f3a")
                .env("RUST_LOG", "info,hermes_oci=trace,hermes_plugin_host=debug")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn run"),
        );
        let stderr = child.0.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let listening = crate::support::wait_line(&lines, &mut seen, |l| {
            l.contains("admin endpoints listening")
        });
        let admin = serde_json::from_str::<serde_json::Value>(&listening)
            .ok()
            .and_then(|v| v["addr"].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {listening}"));
        Self {
            child,
            lines,
            seen,
            admin,
            _stub: stub,
        }
    }

    /// `(source, sha256)` of every plugin, as `GET /plugins` shows them.
    fn served(&self) -> Vec<(Option<String>, String)> {
        let (status, body) = crate::support::http_get(self.admin, "/plugins");
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("/plugins JSON");
        body["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .map(|p| {
                (
                    p["source"].as_str().map(str::to_owned),
                    p["sha256"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Waits for the file watch's reload (the policy was edited).
    fn reloaded(&mut self) {
        crate::support::wait_line(&self.lines, &mut self.seen, |l| {
            l.contains("plugins reloaded after a file change")
        });
    }

    /// Everything it logged so far.
    fn log(mut self) -> String {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        self.seen.extend(self.lines.iter());
        self.seen.join("\n")
    }
}

#[test]
fn two_running_gateways_serve_the_pinned_bytes_and_roll_forward_and_back_without_a_restart() {
    let registry = Registry::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let publisher = tempfile::tempdir().expect("tempdir");
    let old_file = crate::abi::fixture("discord.wasm");
    let new_file = hermes_plugin_artifacts::DISCORD.to_owned();
    let old = registry.push(publisher.path(), &old_file, "hermes/discord:0.1");
    let new = registry.push(publisher.path(), &new_file, "hermes/discord:0.2");

    let fleet = tempfile::tempdir().expect("tempdir");
    let policy = fleet.path().join("policy.toml");
    write_policy(&policy, &registry.pin("hermes/discord", &old));
    let mut gateways = [
        RunningGateway::start(&rt, &fleet.path().join("a"), &policy),
        RunningGateway::start(&rt, &fleet.path().join("b"), &policy),
    ];
    let expect =
        |pin: &str, file: &str| vec![(Some(registry.pin("hermes/discord", pin)), sha256_of(file))];
    for g in &gateways {
        assert_eq!(g.served(), expect(&old, &old_file), "the pinned bytes");
    }

    // Roll forward, then back: one edit of the shared policy each time; the
    // running processes pick it up from their file watch.
    for (pin, file) in [(&new, &new_file), (&old, &old_file)] {
        write_policy(&policy, &registry.pin("hermes/discord", pin));
        for g in &mut gateways {
            g.reloaded();
            assert_eq!(g.served(), expect(pin, file));
        }
    }

    for g in gateways {
        let log = g.log();
        assert!(
            !log.contains("never-printed-7f3a"),
            "a registry credential was logged"
        );
        assert!(!log.contains("fleet-secret"), "the relay secret was logged");
    }
}
