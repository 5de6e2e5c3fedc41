//! The third-party author's loop, end to end with the real binary and a
//! real scaffolded plugin: `plugin new` builds from the binary alone,
//! `plugins test` replays a corpus and names what differs, `dev` reloads
//! and serves the new platform, `--record` keeps what it converted.
//!
//! The scaffold is built once per test run (about 30 s cold; its
//! dependencies are cached under the target directory), offline, in a
//! temporary directory outside this repository.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;

use serde_json::Value;

use crate::support::{
    ChildGuard, LINE_TIMEOUT, corpus_dir, gateway, http_post, plugins_dir, wait_line,
};

/// The platform (and crate) name of the scaffolded plugin.
const NAME: &str = "acme-hooks";

/// A scaffolded, built plugin, shared by the tests of this module.
struct Scaffolded {
    /// Holds the temporary directory for the whole test run.
    _home: tempfile::TempDir,
    /// The crate `plugin new` wrote.
    crate_dir: PathBuf,
    /// Its component.
    wasm: PathBuf,
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the command runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `plugin new acme-hooks` in a temporary directory, built for
/// `wasm32-wasip2` offline: everything it needs came from the binary (the
/// SDK, the WIT, the lockfile) or is in cargo's cache already.
fn scaffolded() -> &'static Scaffolded {
    static SCAFFOLD: OnceLock<Scaffolded> = OnceLock::new();
    SCAFFOLD.get_or_init(|| {
        let home = tempfile::tempdir().expect("tempdir");
        let o = run(gateway(home.path()).args(["plugin", "new", NAME]));
        assert!(o.status.success(), "plugin new: {}", text(&o.stderr));
        let crate_dir = home.path().join(NAME);

        // Nothing it builds from lies outside the crate: every package
        // that is not from the registry is inside it.
        let o = run(cargo()
            .args(["metadata", "--format-version", "1", "--offline"])
            .current_dir(&crate_dir));
        assert!(o.status.success(), "cargo metadata: {}", text(&o.stderr));
        let metadata: Value = serde_json::from_slice(&o.stdout).expect("metadata JSON");
        let local: Vec<&str> = metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .filter(|p| p["source"].is_null())
            .filter_map(|p| p["manifest_path"].as_str())
            .collect();
        assert_eq!(
            local.len(),
            3,
            "the plugin, the SDK and its ABI crate: {local:?}"
        );
        for manifest in local {
            let inside = Path::new(manifest).starts_with(crate_dir.canonicalize().expect("dir"))
                || Path::new(manifest).starts_with(&crate_dir);
            assert!(inside, "{manifest} is outside the scaffold");
        }

        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
        let o = run(cargo()
            .args(["build", "--offline", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&crate_dir));
        assert!(o.status.success(), "cargo build: {}", text(&o.stderr));
        let wasm = target.join("wasm32-wasip2/debug/acme_hooks.wasm");
        assert!(wasm.is_file(), "{} was not built", wasm.display());
        Scaffolded {
            _home: home,
            crate_dir,
            wasm,
        }
    })
}

/// A plugins directory holding the scaffolded component.
fn with_scaffold(parent: &Path) -> PathBuf {
    let dir = parent.join("acme-plugins");
    std::fs::create_dir(&dir).expect("plugins dir");
    std::fs::copy(&scaffolded().wasm, dir.join("acme_hooks.wasm")).expect("copy");
    dir
}

#[test]
fn plugin_new_builds_from_the_binary_alone_and_converts() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = with_scaffold(home.path());

    let o = run(gateway(home.path())
        .arg("plugins")
        .arg("check")
        .arg(&plugins));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("platforms: {NAME}")),
        "{}",
        text(&o.stdout)
    );

    std::fs::write(home.path().join("msg.txt"), "hello").expect("body");
    let o = run(gateway(home.path())
        .args(["convert", "--plugins"])
        .arg(&plugins)
        .args(["--platform", NAME, "--body-file", "msg.txt"])
        .args([
            "--header",
            "content-type: text/plain",
            "--header",
            "x-chat-id: c1",
        ]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(out["outcome"], "event", "{out}");
    assert_eq!(out["events"][0]["text"], "hello");
    assert_eq!(out["events"][0]["source"]["platform"], NAME);
    assert_eq!(out["events"][0]["source"]["chat_id"], "c1");

    // The corpus the scaffold came with passes through the built plugin.
    let corpus = scaffolded().crate_dir.join("corpus");
    let o = run(gateway(home.path())
        .args(["plugins", "test"])
        .arg(&plugins)
        .arg("--corpus")
        .arg(&corpus));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert_eq!(
        text(&o.stdout).lines().last(),
        Some("3 cases, 6 runs: 6 passed, 0 failed")
    );
}

#[test]
fn plugins_test_names_the_first_differing_field_of_each_failing_case() {
    let home = tempfile::tempdir().expect("tempdir");

    // The first-party converters pass their own corpus through routing.
    let first_party = plugins_dir(
        home.path(),
        &[
            hermes_plugin_artifacts::DISCORD,
            hermes_plugin_artifacts::TWILIO,
            hermes_plugin_artifacts::SLACK,
        ],
    );
    let o = run(gateway(home.path())
        .args(["plugins", "test"])
        .arg(&first_party)
        .arg("--corpus")
        .arg(corpus_dir()));
    let listed = crate::support::corpus_cases().len();
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("{listed} cases, ")),
        "{summary}"
    );
    assert!(summary.ends_with(" 0 failed"), "{summary}");

    // The scaffold's corpus with two expectations changed.
    let plugins = with_scaffold(home.path());
    let edited = home.path().join("edited");
    std::fs::create_dir(&edited).expect("dir");
    let original = scaffolded().crate_dir.join("corpus");
    for entry in std::fs::read_dir(&original).expect("corpus") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, edited.join(path.file_name().expect("name"))).expect("copy");
    }
    let manifest_path = edited.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("read"))
            .expect("JSON");
    for case in manifest["cases"].as_array_mut().expect("cases") {
        match case["file"].as_str() {
            Some("hello.txt") => case["expect"]["events"][0]["text"] = "hullo".into(),
            Some("ping.txt") => case["expect"]["reason"] = "pong".into(),
            _ => {}
        }
    }
    std::fs::write(&manifest_path, manifest.to_string()).expect("write");
    let o = run(gateway(home.path())
        .args(["plugins", "test"])
        .arg(&plugins)
        .arg("--corpus")
        .arg(&edited));
    assert_eq!(o.status.code(), Some(1));
    let stdout = text(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        r#"FAIL edited/hello.txt [positional]: events[0].text: expected "hullo", got "hello""#,
        r#"FAIL edited/hello.txt [named]: events[0].text: expected "hullo", got "hello""#,
        r#"FAIL edited/ping.txt [positional]: reason: expected "pong", got "ping""#,
        r#"FAIL edited/ping.txt [named]: reason: expected "pong", got "ping""#,
        "3 cases, 6 runs: 2 passed, 4 failed",
    ];
    assert_eq!(lines, expected, "{stdout}");
}

/// `dev` running on `plugins`: its stdout lines, the ingress address, and
/// the process.
struct Dev {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    ingress: SocketAddr,
}

impl Dev {
    fn start(home: &Path, plugins: &Path, record: &Path) -> Self {
        let child = gateway(home)
            .args(["dev", "--listen", "127.0.0.1:0", "--plugins"])
            .arg(plugins)
            .arg("--record")
            .arg(record)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dev");
        let mut child = ChildGuard(child);
        let stdout = child.0.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let banner = wait_line(&lines, &mut seen, |l| {
            l.trim_start().starts_with("ingress ")
        });
        let ingress = banner
            .split_whitespace()
            .find_map(|t| t.strip_prefix("http://"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no ingress address in {banner:?}"));
        Self {
            child,
            lines,
            seen,
            ingress,
        }
    }

    fn wait(&mut self, predicate: impl Fn(&str) -> bool) -> String {
        wait_line(&self.lines, &mut self.seen, predicate)
    }

    /// POSTs `body` as the scaffold's converter expects it, from `tenant`
    /// (its `x-tenant` header) when given.
    fn post(&self, body: &str, tenant: Option<&str>) -> (u16, String) {
        let mut headers: Vec<(String, String)> = [
            ("content-type", "text/plain"),
            ("x-chat-id", "c1"),
            ("x-user-id", "u1"),
            ("x-acme-token", "sekrit-42"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        if let Some(tenant) = tenant {
            headers.push(("x-tenant".to_owned(), tenant.to_owned()));
        }
        let path = format!("/hooks/{NAME}/messages");
        http_post(self.ingress, &path, &headers, body.as_bytes())
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }
}

#[test]
fn dev_reloads_serves_a_new_platform_and_records_a_replayable_corpus() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = home.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    let record = home.path().join("rec");
    let mut dev = Dev::start(home.path(), &plugins, &record);
    let hooks = dev.wait(|l| l.trim_start().starts_with("hooks "));
    assert!(!hooks.contains(NAME), "{hooks}");
    assert_eq!(
        dev.post("hello", None).0,
        404,
        "no plugin claims {NAME} yet"
    );

    // A new component appears (renamed into place, as a build script
    // would): dev reloads on its own and says what changed.
    let partial = plugins.join("acme_hooks.wasm.partial");
    std::fs::copy(&scaffolded().wasm, &partial).expect("copy");
    std::fs::rename(&partial, plugins.join("acme_hooks.wasm")).expect("rename");
    let reloaded = dev.wait(|l| l.starts_with("⟳ plugins reloaded:"));
    assert_eq!(reloaded, format!("⟳ plugins reloaded: added {NAME}"));
    let shop = Some("shop-42");
    assert_eq!(dev.post("hello", shop), (200, String::new()), "a plain 200");
    dev.wait(|l| l == r#"→ send c1 "hello""#);

    // A route for one tenant, with its own config, serves that tenant at
    // once; everyone else keeps the default.
    let policy = format!(
        "[[route]]\nplatform = \"{NAME}\"\ntenant = \"shop-42\"\nplugin = \"{NAME}\"\nconfig = {{ prefix = \"> \" }}\n"
    );
    std::fs::write(plugins.join("policy.toml"), policy).expect("policy");
    let reloaded = dev.wait(|l| l.starts_with("⟳ plugins reloaded:"));
    assert_eq!(reloaded, "⟳ plugins reloaded: policy changed");
    assert_eq!(dev.post("hello", shop).0, 200);
    dev.wait(|l| l == r#"→ send c1 "> hello""#);
    assert_eq!(dev.post("hello", None).0, 200);
    dev.wait(|l| l == r#"→ send c1 "hello""#);

    // SIGHUP reloads too, and dev keeps serving.
    dev.signal("HUP");
    let reloaded = dev.wait(|l| l.starts_with("⟳ plugins reloaded:"));
    assert_eq!(reloaded, "⟳ plugins reloaded: nothing changed");
    assert_eq!(dev.post("ping", shop).0, 200);

    dev.signal("INT");
    let (done_tx, done) = mpsc::channel();
    let mut child = dev.child;
    thread::spawn(move || {
        let _ = done_tx.send(child.0.wait().map(|s| s.code()));
    });
    let exit = done
        .recv_timeout(LINE_TIMEOUT)
        .expect("dev exits after SIGINT");
    assert_eq!(exit.expect("wait"), Some(0));

    // The recording: four forwards, the credential-like header (the
    // ingress strips `authorization` itself) redacted, the
    // files private; replayed against the plugins as they are now (the
    // tenant's prefix), the tenant's case recorded before the route differs.
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(record.join("manifest.json")).expect("manifest written"),
    )
    .expect("JSON");
    let cases = manifest["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4, "{manifest}");
    let authorization = cases[0]["forward"]["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .find(|h| h[0] == "x-acme-token")
        .map(|h| h[1].clone());
    assert_eq!(authorization, Some("[redacted]".into()));
    assert!(!manifest.to_string().contains("sekrit-42"));
    use std::os::unix::fs::PermissionsExt as _;
    for file in ["manifest.json", "acme-hooks/recorded-000001.body"] {
        let mode = std::fs::metadata(record.join(file))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let o = run(gateway(home.path())
        .args(["plugins", "test"])
        .arg(&plugins)
        .arg("--corpus")
        .arg(&record));
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            r#"FAIL rec/acme-hooks/recorded-000001.body [positional]: events[0].text: expected "hello", got "> hello""#,
            "4 cases, 4 runs: 3 passed, 1 failed",
        ],
        "{stdout}"
    );
}
