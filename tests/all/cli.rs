//! The `hermes-gateway` binary, run for real: flags, help, exit codes,
//! configuration errors, `enroll` against a local HTTP server, `plugin new`,
//! and `plugins check` / `convert` on the compiled first-party plugins,
//! compared with the corpus expectations. How the binary is found is in
//! [`crate::support`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ChildGuard, corpus_cases, corpus_dir, gateway, plugins_dir};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn hermes-gateway")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and that stderr is exactly one `error: …` line
/// containing `needle`.
fn assert_one_error_line(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "stderr {:?} should contain {needle:?}",
        lines[0]
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Help and usage

#[test]
fn run_help_explains_every_flag_and_env_var() {
    let home = tempfile::tempdir().expect("tempdir");
    let o = run(gateway(home.path()).args(["run", "--help"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let help = stdout(&o);
    // cli.md and relay-contract.md §8.
    for needle in [
        "--plugins",
        "--agent",
        "--model",
        "--policy",
        "--config",
        "--env-file",
        "--admin",
        "--relay-url",
        "--log-format",
        "GATEWAY_RELAY_URL",
        "GATEWAY_RELAY_ID",
        "GATEWAY_RELAY_SECRET",
        "GATEWAY_RELAY_DELIVERY_KEY",
        "GATEWAY_RELAY_PLATFORM",
        "GATEWAY_RELAY_BOT_ID",
        "GATEWAY_RELAY_ROUTE_KEYS",
        "GATEWAY_RELAY_WAKE_URL",
        "GATEWAY_RELAY_INSTANCE_ID",
        "HERMES_AGENT",
        "HERMES_IDENTITY_TOKEN",
        "OPENAI_API_KEY",
        "RUST_LOG",
        "echo",
        "exec:",
        "openai:",
    ] {
        assert!(
            help.contains(needle),
            "`run --help` does not mention {needle}:\n{help}"
        );
    }
    // The top-level shortcut documents the same flags.
    let top = stdout(&run(gateway(home.path()).arg("--help")));
    for needle in [
        "--plugins",
        "GATEWAY_RELAY_URL",
        "run",
        "enroll",
        "convert",
        "plugins",
        "plugin",
    ] {
        assert!(
            top.contains(needle),
            "`--help` does not mention {needle}:\n{top}"
        );
    }
}

#[test]
fn enroll_help_explains_every_flag_and_env_var() {
    let home = tempfile::tempdir().expect("tempdir");
    let o = run(gateway(home.path()).args(["enroll", "--help"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let help = stdout(&o);
    for needle in [
        "--token",
        "--connector-url",
        "--gateway-id",
        "--env-file",
        "--wake-url",
        "--identity-token",
        "GATEWAY_RELAY_ENROLL_TOKEN",
        "HERMES_IDENTITY_TOKEN",
        "HERMES_MANAGED",
        "GATEWAY_RELAY_URL",
        "<hidden>",
        "0600",
    ] {
        assert!(
            help.contains(needle),
            "`enroll --help` does not mention {needle}:\n{help}"
        );
    }
}

#[test]
fn every_subcommand_has_help() {
    let home = tempfile::tempdir().expect("tempdir");
    for args in [
        &["plugins", "check", "--help"][..],
        &["plugins", "test", "--help"],
        &["plugins", "push", "--help"],
        &["convert", "--help"],
        &["plugin", "new", "--help"],
        &["dev", "--help"],
    ] {
        let o = run(gateway(home.path()).args(args));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage:"), "{args:?}");
    }
    let convert = stdout(&run(gateway(home.path()).args(["convert", "--help"])));
    for needle in [
        "--platform",
        "--path",
        "--method",
        "--header",
        "--body-file",
        "--body-b64",
        "--profile",
        "--config",
    ] {
        assert!(convert.contains(needle), "`convert --help` lacks {needle}");
    }
    let test = stdout(&run(
        gateway(home.path()).args(["plugins", "test", "--help"])
    ));
    for needle in ["--corpus", "--policy", "text_named", "Exit codes"] {
        assert!(
            test.contains(needle),
            "`plugins test --help` lacks {needle}"
        );
    }
    let dev = stdout(&run(gateway(home.path()).args(["dev", "--help"])));
    for needle in ["--record", "--record-tenant", "--record-redact-header"] {
        assert!(dev.contains(needle), "`dev --help` lacks {needle}");
    }
}

#[test]
fn run_records_only_the_tenants_it_is_told() {
    let home = tempfile::tempdir().expect("tempdir");
    let o = run(gateway(home.path()).args(["run", "--plugins", "p", "--record", "rec"]));
    assert_one_error_line(&o, 1, "--record-tenant");
    assert!(!home.path().join("rec").exists(), "nothing was recorded");
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().expect("tempdir");
    for args in [
        &[][..],
        &["run"],
        &["--bogus"],
        &["convert", "--plugins", "d"],
        &[
            "convert",
            "--plugins",
            "d",
            "--platform",
            "x",
            "--header",
            "no-colon",
        ],
        &["enroll"],
        &["plugins", "check"],
    ] {
        let o = run(gateway(home.path()).args(args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

// ---------------------------------------------------------------------------
// Misconfiguration: one line, exit 1

#[test]
fn run_without_relay_url_is_one_clear_line() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = home.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let o = run(gateway(home.path())
        .arg("run")
        .arg("--plugins")
        .arg(&plugins));
    assert_one_error_line(&o, 1, "no relay URL");
}

#[test]
fn blank_secret_is_an_error_from_env_and_from_env_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = home.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    let o = run(gateway(home.path())
        .arg("--plugins")
        .arg(&plugins)
        .env("GATEWAY_RELAY_URL", "http://127.0.0.1:9")
        .env("GATEWAY_RELAY_ID", "gw-1")
        .env("GATEWAY_RELAY_SECRET", "  "));
    assert_one_error_line(&o, 1, "GATEWAY_RELAY_SECRET is blank");

    // The default env file (~/.hermes/.env) is read too.
    let dot = home.path().join(".hermes");
    std::fs::create_dir(&dot).expect("mkdir");
    std::fs::write(
        dot.join(".env"),
        "# relay\nexport GATEWAY_RELAY_URL=http://127.0.0.1:9\nGATEWAY_RELAY_ID=\"gw-1\"\nGATEWAY_RELAY_SECRET=\n",
    )
    .expect("write env file");
    let o = run(gateway(home.path())
        .arg("run")
        .arg("--plugins")
        .arg(&plugins));
    assert_one_error_line(&o, 1, "GATEWAY_RELAY_SECRET is blank");

    // A variable already in the process environment wins over the file:
    // with the id unset there, the file's id still applies; with the secret
    // set there, the error is gone and the next check (the plugins
    // directory) speaks instead.
    let o = run(gateway(home.path())
        .arg("run")
        .arg("--plugins")
        .arg(home.path().join("missing"))
        .env("GATEWAY_RELAY_SECRET", "s3cret"));
    assert_one_error_line(&o, 1, "cannot read plugins directory");
    assert!(!stderr(&o).contains("s3cret"));
}

#[test]
fn explicit_env_file_that_is_missing_is_an_error() {
    let home = tempfile::tempdir().expect("tempdir");
    let o = run(gateway(home.path())
        .args(["run", "--plugins", "."])
        .arg("--env-file")
        .arg(home.path().join("nope.env")));
    assert_one_error_line(&o, 1, "cannot read env file");
}

#[test]
fn bad_config_file_is_one_line() {
    let home = tempfile::tempdir().expect("tempdir");
    let config = home.path().join("gateway.toml");
    std::fs::write(&config, "[gateway]\nrelay_urll = \"http://x\"\n").expect("write");
    let o = run(gateway(home.path())
        .args(["run", "--plugins", "."])
        .arg("--config")
        .arg(&config));
    assert_one_error_line(&o, 1, "relay_urll");
}

// ---------------------------------------------------------------------------
// enroll

/// What the local connector stand-in received.
#[derive(Debug)]
struct Received {
    request_line: String,
    headers: HashMap<String, String>,
    body: Value,
}

/// A one-request HTTP server answering `status` with `body`.
fn one_shot_server(status: u16, body: &'static str) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        if let Some(received) = serve_one(stream, status, body) {
            let _ = tx.send(received);
        }
    });
    (url, rx)
}

fn serve_one(stream: TcpStream, status: u16, body: &str) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut buf = vec![0; len];
    reader.read_exact(&mut buf).ok()?;
    let mut stream = stream;
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).ok()?;
    Some(Received {
        request_line: request_line.trim_end().to_owned(),
        headers,
        body: serde_json::from_slice(&buf).unwrap_or(Value::Null),
    })
}

/// `enroll` with the token in a file (the form that keeps it out of `ps`).
fn enroll_cmd(home: &Path, url: &str, env_file: &Path) -> Command {
    let token_file = home.join("enroll-token");
    std::fs::write(&token_file, "ENROLL-TOKEN-1\n").expect("write token file");
    let mut cmd = gateway(home);
    cmd.args(["enroll", "--gateway-id", "gw-test", "--connector-url", url])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--env-file")
        .arg(env_file)
        .env("HERMES_IDENTITY_TOKEN", "IDENTITY-TOKEN-1");
    cmd
}

#[test]
fn enroll_writes_credentials_preserving_lines_and_hides_secrets() {
    let home = tempfile::tempdir().expect("tempdir");
    let (url, received) = one_shot_server(
        200,
        r#"{"secret":"SECRET-VALUE-9","deliveryKey":"DELIVERY-KEY-9","tenant":"acme","gatewayId":"gw-test"}"#,
    );
    let env_file = home.path().join("conf").join("gateway.env");
    std::fs::create_dir(home.path().join("conf")).expect("mkdir");
    std::fs::write(
        &env_file,
        "# my settings\nOTHER=keep me\nGATEWAY_RELAY_SECRET=old\nexport HERMES_AGENT=echo\n",
    )
    .expect("seed env file");
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let o = run(&mut enroll_cmd(home.path(), &format!("{url}/"), &env_file));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));

    let req = received
        .recv_timeout(Duration::from_secs(10))
        .expect("request received");
    assert_eq!(req.request_line, "POST /relay/enroll HTTP/1.1");
    assert_eq!(
        req.headers.get("authorization").map(String::as_str),
        Some("Bearer IDENTITY-TOKEN-1")
    );
    assert_eq!(
        req.body,
        json!({"enrollmentToken": "ENROLL-TOKEN-1", "gatewayId": "gw-test"})
    );

    let text = std::fs::read_to_string(&env_file).expect("env file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# my settings");
    assert!(
        lines.contains(&"OTHER=\"keep me\"") || lines.contains(&"OTHER=keep me"),
        "{text}"
    );
    assert!(lines.contains(&"export HERMES_AGENT=echo"), "{text}");
    assert!(lines.contains(&"GATEWAY_RELAY_ID=gw-test"), "{text}");
    assert!(
        lines.contains(&"GATEWAY_RELAY_SECRET=SECRET-VALUE-9"),
        "{text}"
    );
    assert!(
        lines.contains(&"GATEWAY_RELAY_DELIVERY_KEY=DELIVERY-KEY-9"),
        "{text}"
    );
    assert!(
        lines.contains(&format!("GATEWAY_RELAY_URL={url}").as_str()),
        "{text}"
    );
    assert_eq!(text.matches("GATEWAY_RELAY_SECRET=").count(), 1, "{text}");
    let mode = std::fs::metadata(&env_file)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let out = stdout(&o);
    assert!(out.contains("GATEWAY_RELAY_SECRET=<hidden>"), "{out}");
    assert!(out.contains("GATEWAY_RELAY_DELIVERY_KEY=<hidden>"), "{out}");
    for secret in [
        "SECRET-VALUE-9",
        "DELIVERY-KEY-9",
        "IDENTITY-TOKEN-1",
        "ENROLL-TOKEN-1",
    ] {
        assert!(
            !out.contains(secret) && !stderr(&o).contains(secret),
            "{secret} printed"
        );
    }
}

#[test]
fn enroll_401_names_the_identity_token_and_writes_nothing() {
    let home = tempfile::tempdir().expect("tempdir");
    let (url, _rx) = one_shot_server(401, r#"{"error":"bad identity"}"#);
    let env_file = home.path().join(".env");
    let o = run(&mut enroll_cmd(home.path(), &url, &env_file));
    assert_one_error_line(&o, 1, "identity token");
    assert!(!env_file.exists());
}

#[test]
fn enroll_403_shows_the_server_reason_or_the_usual_causes() {
    let home = tempfile::tempdir().expect("tempdir");
    let env_file = home.path().join(".env");
    let (url, _rx) = one_shot_server(403, r#"{"error":"enrollment token already used"}"#);
    let o = run(&mut enroll_cmd(home.path(), &url, &env_file));
    assert_one_error_line(&o, 1, "enrollment token already used");

    let (url, _rx) = one_shot_server(403, "");
    let o = run(&mut enroll_cmd(home.path(), &url, &env_file));
    assert_one_error_line(&o, 1, "invalid, expired, already used, or tenant mismatch");
    assert!(!env_file.exists());
}

#[test]
fn enroll_without_secret_in_answer_fails() {
    let home = tempfile::tempdir().expect("tempdir");
    let env_file = home.path().join(".env");
    let (url, _rx) = one_shot_server(200, r#"{"tenant":"acme"}"#);
    let o = run(&mut enroll_cmd(home.path(), &url, &env_file));
    assert_one_error_line(&o, 1, "no secret");
    assert!(!env_file.exists());
}

#[test]
fn enroll_unreachable_connector() {
    let home = tempfile::tempdir().expect("tempdir");
    // A port that was just free: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let o = run(&mut enroll_cmd(
        home.path(),
        &format!("http://127.0.0.1:{port}"),
        &home.path().join(".env"),
    ));
    assert_one_error_line(&o, 1, "could not reach the connector");
}

#[test]
fn enroll_takes_the_token_from_stdin_or_env_and_warns_when_it_is_on_argv() {
    let home = tempfile::tempdir().expect("tempdir");
    let env_file = home.path().join(".env");
    let answer = r#"{"secret":"SECRET-VALUE-9","gatewayId":"gw-test"}"#;
    let base = |url: &str| {
        let mut cmd = gateway(home.path());
        cmd.args(["enroll", "--gateway-id", "gw-test", "--connector-url", url])
            .arg("--env-file")
            .arg(&env_file)
            .env("HERMES_IDENTITY_TOKEN", "IDENTITY-TOKEN-1");
        cmd
    };
    let sent_token = |rx: mpsc::Receiver<Received>| {
        let req = rx.recv_timeout(Duration::from_secs(10)).expect("request");
        req.body["enrollmentToken"].as_str().map(str::to_owned)
    };

    // --token - reads one line from stdin: nothing on argv, no warning.
    let (url, rx) = one_shot_server(200, answer);
    let mut child = base(&url)
        .args(["--token", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn enroll");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"STDIN-TOKEN-2\n")
        .expect("write stdin");
    let o = child.wait_with_output().expect("enroll");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "no warning for stdin");
    assert_eq!(sent_token(rx).as_deref(), Some("STDIN-TOKEN-2"));

    // The environment variable: no warning.
    let (url, rx) = one_shot_server(200, answer);
    let o = run(base(&url).env("GATEWAY_RELAY_ENROLL_TOKEN", "ENV-TOKEN-3"));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "no warning for the environment");
    assert_eq!(sent_token(rx).as_deref(), Some("ENV-TOKEN-3"));

    // --token VALUE still works, with a warning that names the safe forms
    // and not the token.
    let (url, rx) = one_shot_server(200, answer);
    let o = run(base(&url).args(["--token", "ARGV-TOKEN-4"]));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("warning: ") && err.contains("visible") && err.contains("--token-file"),
        "{err}"
    );
    assert!(!err.contains("ARGV-TOKEN-4"), "{err}");
    assert_eq!(sent_token(rx).as_deref(), Some("ARGV-TOKEN-4"));

    // An empty token file is refused before anything is sent.
    let empty = home.path().join("empty-token");
    std::fs::write(&empty, "\n").expect("write");
    let o = run(base("http://127.0.0.1:9").arg("--token-file").arg(&empty));
    assert_one_error_line(&o, 1, "blank");
}

#[test]
fn enroll_refuses_gateway_ids_that_could_change_the_env_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let env_file = home.path().join(".env");
    let marker = home.path().join("pwned");

    // From the connector: refused, nothing written.
    let (url, _rx) = one_shot_server(200, r#"{"secret":"s","gatewayId":"gw-$(touch pwned)"}"#);
    let o = run(&mut enroll_cmd(home.path(), &url, &env_file));
    assert_one_error_line(&o, 1, "gatewayId");
    assert!(!env_file.exists(), "env file written");

    // On the command line: refused before anything is sent.
    let o = run(gateway(home.path())
        .args(["enroll", "--connector-url", "http://127.0.0.1:9"])
        .args(["--gateway-id", "gw'; touch pwned; '"])
        .arg("--env-file")
        .arg(&env_file)
        .env("GATEWAY_RELAY_ENROLL_TOKEN", "ENROLL-TOKEN-1")
        .env("HERMES_IDENTITY_TOKEN", "IDENTITY-TOKEN-1"));
    assert_one_error_line(&o, 1, "--gateway-id");
    assert!(!env_file.exists() && !marker.exists());
}

#[test]
fn enrolled_env_file_sources_literally_in_bash() {
    let home = tempfile::tempdir().expect("tempdir");
    let env_file = home.path().join(".env");
    let marker = home.path().join("pwned");
    let secret = format!("it's'$(touch {m})`touch {m}`\"$HOME", m = marker.display());
    let answer: &'static str = Box::leak(
        json!({"secret": secret, "deliveryKey": "k'$(id)", "gatewayId": "gw-test"})
            .to_string()
            .into_boxed_str(),
    );
    let (url, _rx) = one_shot_server(200, answer);
    let o = run(&mut enroll_cmd(home.path(), &url, &env_file));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = Command::new("bash")
        .args([
            "-c",
            "source \"$1\"; printf '%s\\n' \"$GATEWAY_RELAY_SECRET\" \"$GATEWAY_RELAY_DELIVERY_KEY\" \"$GATEWAY_RELAY_ID\"",
            "bash",
        ])
        .arg(&env_file)
        .output()
        .expect("bash");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{secret}\nk'$(id)\ngw-test\n")
    );
    assert!(!marker.exists(), "sourcing the env file ran a command");
}

#[test]
fn enroll_is_refused_in_a_managed_install() {
    let home = tempfile::tempdir().expect("tempdir");
    let o = run(
        enroll_cmd(home.path(), "http://127.0.0.1:9", &home.path().join(".env"))
            .env("HERMES_MANAGED", "1"),
    );
    assert_one_error_line(&o, 1, "managed");
}

// ---------------------------------------------------------------------------
// plugin new

#[test]
fn plugin_new_scaffolds_and_refuses_an_existing_dir() {
    let home = tempfile::tempdir().expect("tempdir");
    let o = run(gateway(home.path()).args(["plugin", "new", "my-conv"]));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let dir = home.path().join("my-conv");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        manifest.contains("name = \"my-conv\"") && manifest.contains("[workspace]"),
        "{manifest}"
    );
    let sdk = manifest
        .lines()
        .find_map(|l| l.strip_prefix("hermes-converter-sdk = { path = \""))
        .and_then(|rest| rest.strip_suffix("\" }"))
        .expect("SDK path dependency");
    assert!(
        dir.join(sdk).join("Cargo.toml").is_file(),
        "SDK path {sdk} is not in the scaffold"
    );
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).expect("lib.rs");
    assert!(lib.contains("export_converter!(Plugin)") && lib.contains("#[test]"));
    assert!(
        std::fs::read_to_string(dir.join("README.md"))
            .expect("README")
            .contains("wasm32-wasip2")
    );

    std::fs::write(dir.join("src/lib.rs"), "// mine").expect("edit");
    let o = run(gateway(home.path()).args(["plugin", "new", "my-conv"]));
    assert_one_error_line(&o, 1, "already exists");
    assert_eq!(
        std::fs::read_to_string(dir.join("src/lib.rs")).expect("lib.rs"),
        "// mine"
    );

    let o = run(gateway(home.path()).args(["plugin", "new", "Bad Name"]));
    assert_one_error_line(&o, 1, "invalid plugin name");
}

// ---------------------------------------------------------------------------
// plugins check and convert, on the compiled first-party plugins

const FIRST_PARTY: [&str; 3] = [
    hermes_plugin_artifacts::DISCORD,
    hermes_plugin_artifacts::TWILIO,
    hermes_plugin_artifacts::SLACK,
];

/// Every key of `expected` equals the same key of `actual` (recursively for
/// objects); keys only in `actual` are allowed.
fn assert_subset(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let sub = format!("{path}.{k}");
                let got = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{sub} missing in {actual}"));
                assert_subset(v, got, &sub);
            }
        }
        _ => assert_eq!(expected, actual, "at {path}"),
    }
}

fn convert_case(home: &Path, plugins: &Path, case: &Value) -> Output {
    let forward = &case["forward"];
    let mut cmd = gateway(home);
    cmd.arg("convert")
        .arg("--plugins")
        .arg(plugins)
        .args([
            "--platform",
            forward["platform"].as_str().expect("platform"),
        ])
        .args(["--method", forward["method"].as_str().expect("method")])
        .args(["--path", forward["path"].as_str().expect("path")])
        .arg("--body-file")
        .arg(corpus_dir().join(case["file"].as_str().expect("file")));
    for h in forward["headers"].as_array().expect("headers") {
        cmd.arg("--header").arg(format!(
            "{}: {}",
            h[0].as_str().expect("name"),
            h[1].as_str().expect("value")
        ));
    }
    if let Some(config) = case["config"].as_object() {
        for (k, v) in config {
            cmd.arg("--config")
                .arg(format!("{k}={}", v.as_str().expect("config value")));
        }
    }
    run(&mut cmd)
}

#[test]
fn convert_prints_the_corpus_outcome_for_each_kind() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = plugins_dir(home.path(), &FIRST_PARTY);
    let cases = corpus_cases();
    // Per platform: its first event, first ignored and first error case, and
    // every case that arrives with tenant config.
    let mut chosen: Vec<&Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for case in &cases {
        let key = (
            case["forward"]["platform"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            case["expect"]["outcome"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        if seen.insert(key) || case.get("config").is_some() {
            chosen.push(case);
        }
    }
    let outcomes: std::collections::HashSet<&str> = chosen
        .iter()
        .filter_map(|c| c["expect"]["outcome"].as_str())
        .collect();
    assert_eq!(
        outcomes.len(),
        3,
        "the corpus should have all three outcomes"
    );

    for case in chosen {
        let name = case["file"].as_str().unwrap_or_default();
        let o = convert_case(home.path(), &plugins, case);
        let out = stdout(&o);
        assert_eq!(
            out.lines().count(),
            1,
            "{name}: one JSON line expected, got {out}"
        );
        let got: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"));
        let expect = &case["expect"];
        let outcome = expect["outcome"].as_str().expect("outcome");
        assert_eq!(got["outcome"], expect["outcome"], "{name}: {out}");
        assert!(got["plugin"].is_string(), "{name}: plugin named: {out}");
        let named = case["config"]["options"] == "named";
        match outcome {
            "event" => {
                assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
                let want = expect["events"].as_array().expect("events");
                let have = got["events"].as_array().expect("events in output");
                assert_eq!(want.len(), have.len(), "{name}: event count");
                for (w, h) in want.iter().zip(have) {
                    let mut w = w.clone();
                    let map = w.as_object_mut().expect("event object");
                    let text_named = map.remove("text_named");
                    if let (true, Some(t)) = (named, text_named) {
                        map.insert("text".into(), t);
                    }
                    assert_subset(&w, h, name);
                    // Unset optional fields are written as null, not left out.
                    for key in [
                        "chat_name",
                        "user_id_alt",
                        "chat_id_alt",
                        "chat_topic",
                        "profile",
                    ] {
                        assert!(
                            h["source"].get(key).is_some(),
                            "{name}: source.{key} missing"
                        );
                    }
                }
            }
            "ignored" => {
                assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
                assert_eq!(got["reason"], expect["reason"], "{name}");
            }
            "error" => {
                assert_eq!(o.status.code(), Some(3), "{name}: {}", stderr(&o));
                assert_eq!(got["error_kind"], expect["error_kind"], "{name}");
                assert!(got["message"].is_string(), "{name}");
            }
            other => panic!("{name}: unknown outcome {other}"),
        }
    }
}

#[test]
fn convert_reports_plugin_faults_and_missing_routes_with_exit_1() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = plugins_dir(home.path(), &[hermes_plugin_artifacts::HOSTILE]);
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    let o = run(gateway(home.path())
        .arg("convert")
        .arg("--plugins")
        .arg(&plugins)
        .args(["--platform", "hostile", "--body-b64", &b64("panic boom")]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let got: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(got["outcome"], "error");
    assert_eq!(got["error_kind"], "plugin_fault");
    assert_eq!(got["fault"], "panic");
    assert!(
        got["message"].as_str().is_some_and(|m| m.contains("boom")),
        "{got}"
    );

    let o = run(gateway(home.path())
        .arg("convert")
        .arg("--plugins")
        .arg(&plugins)
        .args(["--platform", "no-such-platform", "--body-b64", &b64("x")]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let got: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(
        (got["error_kind"].as_str(), &got["plugin"]),
        (Some("no_route"), &Value::Null)
    );
}

#[test]
fn plugins_check_lists_plugins_and_routes_and_names_bad_files() {
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = plugins_dir(home.path(), &FIRST_PARTY);
    let o = run(gateway(home.path())
        .args(["plugins", "check"])
        .arg(&plugins));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let platforms: std::collections::BTreeSet<String> = corpus_cases()
        .iter()
        .filter_map(|c| c["forward"]["platform"].as_str().map(str::to_owned))
        .collect();
    for p in &platforms {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{p} -> "))),
            "no route for {p}:\n{out}"
        );
        assert!(
            out.contains(&format!("platforms: {p}")),
            "no plugin for {p}:\n{out}"
        );
    }
    assert!(out.contains("api 0.2.0"), "{out}");

    std::fs::write(plugins.join("garbage.wasm"), b"not wasm at all").expect("write");
    std::fs::copy(
        hermes_plugin_artifacts::INCOMPATIBLE,
        plugins.join("incompatible.wasm"),
    )
    .expect("copy");
    let o = run(gateway(home.path())
        .args(["plugins", "check"])
        .arg(&plugins));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("error: ") && l.contains("garbage.wasm")),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains("incompatible.wasm")
            && l.contains("0.3.0")
            && l.contains("0.1.0, 0.2.0")),
        "{err}"
    );
    // The good plugins are still listed.
    assert_eq!(
        stdout(&o).matches(" -> ").count(),
        out.matches(" -> ").count()
    );
}

// ---------------------------------------------------------------------------
// run, end to end against the stub connector

/// `GET path` on the admin endpoint: `(status, body)`, or `None` when
/// nothing answers yet.
fn admin_get(addr: &str, path: &str) -> Option<(u16, String)> {
    admin_request(addr, "GET", path, &[])
}

/// One request on the admin endpoint with extra header lines.
pub(crate) fn admin_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n"
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

#[test]
fn run_serves_the_relay_and_admin_and_drains_on_sigterm() {
    use hermes_connector::{StubConfig, StubConnector};
    use hermes_protocol::action::Action;
    use hermes_protocol::frame::GatewayFrame;

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stub = rt
        .block_on(StubConnector::start(StubConfig::with_secrets([
            "e2e-secret",
        ])))
        .expect("stub");
    let mut cursor = stub.cursor();
    let home = tempfile::tempdir().expect("tempdir");
    let plugins = plugins_dir(home.path(), &[hermes_plugin_artifacts::DISCORD]);
    let admin = {
        let l = TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").to_string()
    };

    let child = gateway(home.path())
        .arg("run")
        .arg("--plugins")
        .arg(&plugins)
        .args(["--admin", &admin, "--log-format", "json"])
        .env("GATEWAY_RELAY_URL", stub.url())
        .env("GATEWAY_RELAY_ID", "gw-e2e")
        .env("GATEWAY_RELAY_SECRET", "e2e-secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn run");
    let mut child = ChildGuard(child);

    let mut wait = |pred: fn(&GatewayFrame) -> bool| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), cursor.next_frame(pred)).await
        })
    };
    wait(|f| matches!(f, GatewayFrame::Hello { .. })).expect("hello within 30 s");
    assert_eq!(stub.tokens_seen().len(), 1, "one authenticated dial");

    // Ready once the descriptor is adopted: poll the endpoint (there is no
    // event to await from outside the process).
    let ready = (0..300).any(|_| {
        let ok = admin_get(&admin, "/readyz").is_some_and(|(s, _)| s == 200);
        if !ok {
            thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(ready, "/readyz never became 200");
    let (_, body) = admin_get(&admin, "/readyz").expect("readyz");
    let body: Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(body, json!({"ready": true, "state": "connected"}));
    assert_eq!(admin_get(&admin, "/healthz").map(|(s, _)| s), Some(200));

    rt.block_on(stub.push_text(
        "{\"type\":\"inbound\",\"event\":{\"text\":\"hello there\",\"message_id\":\"m-1\",\"source\":{\"platform\":\"relay\",\"chat_id\":\"c-1\",\"user_id\":\"u-1\"}}}\n",
    ))
    .expect("push inbound");
    let (_, frame) = wait(|f| {
        matches!(
            f,
            GatewayFrame::Outbound {
                action: Action::Send { .. },
                ..
            }
        )
    })
    .expect("echo reply within 30 s");
    let GatewayFrame::Outbound {
        action:
            Action::Send {
                chat_id,
                content,
                reply_to,
                ..
            },
        ..
    } = frame
    else {
        panic!("not a send: {frame:?}");
    };
    assert_eq!(
        (chat_id.as_str(), content.as_str(), reply_to.as_deref()),
        ("c-1", "hello there", Some("m-1"))
    );

    // The reply's round trip ends when its result reaches the gateway, just
    // after the stub recorded the frame: poll (nothing else is visible from
    // outside the process) until the reply is counted.
    let (mut status, mut metrics) = (0, String::new());
    for _ in 0..500 {
        (status, metrics) = admin_get(&admin, "/metrics").expect("metrics");
        if metrics.contains("hermes_gateway_replies_total{outcome=\"ok\"} 1") {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(status, 200);
    assert!(
        metrics.contains("hermes_gateway_events_in_total 1"),
        "{metrics}"
    );
    // The exposition parses, and the latency histograms moved with the
    // traffic: one turn (of the echo agent), its `send` round trip, and the
    // wait from the inbound frame to that reply.
    let m = crate::support::Metrics::parse(&metrics);
    assert_eq!(
        m.histogram_count(
            "hermes_gateway_turn_seconds",
            &[("agent", "echo"), ("outcome", "completed")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        m.histogram_count("hermes_relay_outbound_seconds", &[("op", "send")]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        m.histogram_count("hermes_gateway_reply_seconds", &[("platform", "relay")]),
        Some(1.0),
        "{metrics}"
    );
    // The link's traffic by frame type, and its state as an enum gauge.
    assert_eq!(
        m.value("hermes_relay_frames_in_total", ("type", "inbound")),
        Some(1.0)
    );
    assert_eq!(
        m.value("hermes_relay_frames_out_total", ("type", "hello")),
        Some(1.0)
    );
    assert_eq!(
        m.value("hermes_relay_frames_out_total", ("type", "outbound")),
        Some(1.0)
    );
    assert_eq!(
        m.value("hermes_relay_state", ("state", "connected")),
        Some(1.0)
    );
    assert_eq!(
        m.value("hermes_relay_state", ("state", "connecting")),
        Some(0.0)
    );
    assert!(metrics.contains("hermes_relay_connected 1"), "{metrics}");
    assert!(
        metrics.contains("hermes_plugin_conversions_total{plugin=\"discord-interactions\"} 0"),
        "{metrics}"
    );
    let (status, plugins_json) = admin_get(&admin, "/plugins").expect("plugins");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&plugins_json).expect("plugins JSON");
    assert_eq!(
        v["routing"]["defaults"]["discord"], "discord-interactions",
        "{v}"
    );

    // A dropped connection: /readyz turns 503 and says why until the
    // gateway has dialled again (polled: no event is visible from outside).
    rt.block_on(stub.drop_connection())
        .expect("drop the connection");
    let mut reason = None;
    for _ in 0..200 {
        if let Some((503, body)) = admin_get(&admin, "/readyz") {
            let body: Value = serde_json::from_str(&body).expect("readyz JSON");
            reason = body["reason"].as_str().map(str::to_owned);
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        matches!(reason.as_deref(), Some("connecting" | "backing off")),
        "{reason:?}"
    );
    wait(|f| matches!(f, GatewayFrame::Hello { .. })).expect("a new hello within 30 s");
    let (_, metrics) = admin_get(&admin, "/metrics").expect("metrics");
    let lost = crate::support::Metrics::parse(&metrics)
        .value("hermes_relay_disconnects_total", ("reason", "lost"));
    assert_eq!(
        lost,
        Some(1.0),
        "the dropped connection is counted: {metrics}"
    );

    // SIGTERM: going_idle, drain, exit 0. The connector holds its ack, so
    // the drain is observable: /readyz says so while the endpoints serve.
    stub.set_going_idle(hermes_connector::GoingIdle::Ignore);
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait(|f| matches!(f, GatewayFrame::GoingIdle)).expect("going_idle within 30 s");
    let (status, body) = admin_get(&admin, "/readyz").expect("readyz while draining");
    let body: Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(
        (status, body),
        (503, json!({"ready": false, "reason": "draining"}))
    );
    rt.block_on(stub.push_text("{\"type\":\"going_idle_ack\"}\n"))
        .expect("push going_idle_ack");
    let code = child.0.wait().expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(code.code(), Some(0), "stderr: {err}");
    assert!(!err.contains("e2e-secret"), "secret in logs");
    for line in err.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
}

// ---------------------------------------------------------------------------
// Hardening of `run`: admin endpoints and logs

/// A `run` against the stub connector, its stderr collected as it comes.
struct RunningGateway {
    rt: tokio::runtime::Runtime,
    stub: hermes_connector::StubConnector,
    child: ChildGuard,
    admin: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
    _home: tempfile::TempDir,
}

/// Options of [`RunningGateway::start`].
#[derive(Default)]
struct RunOptions<'a> {
    /// Plugin components to load (none: nothing to compile, fast start).
    plugins: &'a [&'a str],
    /// Extra flags after `run --plugins DIR --admin ADDR`.
    args: &'a [&'a str],
    /// Extra environment.
    env: &'a [(&'a str, &'a str)],
    /// `ulimit -n` for the process.
    max_files: Option<u32>,
}

impl RunningGateway {
    /// Starts the stub and `run --log-format json`, and waits until the
    /// admin endpoints answer.
    fn start(options: RunOptions<'_>) -> Self {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let stub = rt
            .block_on(hermes_connector::StubConnector::start(
                hermes_connector::StubConfig::with_secrets(["e2e-secret"]),
            ))
            .expect("stub");
        let home = tempfile::tempdir().expect("tempdir");
        let plugins = plugins_dir(home.path(), options.plugins);
        let admin = {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").to_string()
        };
        let mut cmd = match options.max_files {
            None => gateway(home.path()),
            Some(n) => {
                // `exec` keeps the pid, so the limit applies to the gateway.
                let mut cmd = Command::new("sh");
                cmd.env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("HOME", home.path())
                    .current_dir(home.path())
                    .args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                    .arg(crate::support::binary());
                cmd
            }
        };
        cmd.arg("run")
            .arg("--plugins")
            .arg(&plugins)
            .args(["--admin", &admin, "--log-format", "json"])
            .args(options.args)
            .env("GATEWAY_RELAY_URL", stub.url())
            .env("GATEWAY_RELAY_ID", "gw-e2e")
            .env("GATEWAY_RELAY_SECRET", "e2e-secret")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in options.env {
            cmd.env(k, v);
        }
        let mut child = ChildGuard(cmd.spawn().expect("spawn run"));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let pipe = child.0.stderr.take().expect("stderr");
            let sink = std::sync::Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut s = sink.lock().expect("stderr lock");
                    s.push_str(&line);
                    s.push('\n');
                }
            })
        };
        let up = (0..300).any(|_| {
            let ok = admin_get(&admin, "/healthz").is_some();
            if !ok {
                thread::sleep(Duration::from_millis(50));
            }
            ok
        });
        let mut running = Self {
            rt,
            stub,
            child,
            admin,
            stderr,
            reader: Some(reader),
            _home: home,
        };
        if !up {
            panic!("admin never answered; stderr: {}", running.stop());
        }
        running
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGTERM, wait for the exit, and return everything it logged.
    fn stop(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.child.0.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.0.kill();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.stderr.lock().expect("stderr lock").clone()
    }
}

#[test]
fn admin_refuses_a_non_loopback_address_without_the_opt_in() {
    let home = tempfile::tempdir().expect("tempdir");
    let o = run(gateway(home.path()).args(["run", "--plugins", ".", "--admin", "0.0.0.0:9464"]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "usage error; stderr: {err}");
    assert!(
        err.starts_with("error: ") && err.contains("--admin-allow-remote"),
        "{err}"
    );
}

#[test]
fn admin_token_guards_plugins_and_reload_but_not_probes() {
    let token_file = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token_file.path(), "admin-tok-123\n").expect("write token");
    let token_path = token_file.path().to_str().expect("utf-8 path");
    let mut gw = RunningGateway::start(RunOptions {
        args: &["--admin-token-file", token_path],
        ..RunOptions::default()
    });
    let admin = gw.admin.clone();
    let good = "authorization: Bearer admin-tok-123";
    for (method, path) in [("GET", "/plugins"), ("POST", "/reload")] {
        for headers in [
            &[][..],
            &["authorization: Bearer admin-tok-12"],
            &["authorization: admin-tok-123"],
        ] {
            let (status, _) = admin_request(&admin, method, path, headers).expect("answer");
            assert_eq!(status, 401, "{method} {path} with {headers:?}");
        }
        let (status, body) = admin_request(&admin, method, path, &[good]).expect("answer");
        assert_eq!(status, 200, "{method} {path} with the token: {body}");
    }
    for path in ["/healthz", "/metrics"] {
        assert_eq!(admin_get(&admin, path).map(|(s, _)| s), Some(200), "{path}");
    }
    let readyz = admin_get(&admin, "/readyz").map(|(s, _)| s);
    assert!(matches!(readyz, Some(200 | 503)), "{readyz:?}");
    let err = gw.stop();
    assert!(!err.contains("admin-tok-123"), "token in logs: {err}");
}

#[test]
fn admin_closes_half_sent_requests_and_caps_connections() {
    let mut gw = RunningGateway::start(RunOptions::default());
    let admin = gw.admin.clone();

    // 64 idle connections fill every slot; the next is closed at once.
    let held: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&admin).expect("connect"))
        .collect();
    let mut extra = TcpStream::connect(&admin).expect("connect extra");
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let closed =
        matches!(extra.read(&mut buf), Ok(0)) || started.elapsed() < Duration::from_secs(2);
    assert!(closed, "connection 65 stayed open: no connection cap");
    drop(held);
    let served = (0..100).any(|_| {
        let ok = admin_get(&admin, "/healthz").is_some_and(|(s, _)| s == 200);
        if !ok {
            thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(served, "slots were not released");

    // A request head that never ends is cut off (5 s), not kept forever.
    let mut slow = TcpStream::connect(&admin).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .expect("half a request");
    slow.set_read_timeout(Some(Duration::from_secs(12)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let outcome = slow.read_to_end(&mut rest);
    assert!(
        outcome.is_ok() || started.elapsed() < Duration::from_secs(11),
        "half-sent request still open after {:?}: {outcome:?}",
        started.elapsed()
    );
    gw.stop();
}

#[test]
fn admin_runs_one_reload_at_a_time() {
    let mut gw = RunningGateway::start(RunOptions {
        plugins: &[
            hermes_plugin_artifacts::DISCORD,
            hermes_plugin_artifacts::TWILIO,
            hermes_plugin_artifacts::SLACK,
        ],
        env: &[("HERMES_ADMIN_TOKEN", "env-tok")],
        ..RunOptions::default()
    });
    let admin = gw.admin.clone();
    let n = 16;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let statuses: Vec<Option<u16>> = (0..n)
        .map(|_| {
            let (admin, barrier) = (admin.clone(), std::sync::Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                admin_request(
                    &admin,
                    "POST",
                    "/reload",
                    &["authorization: Bearer env-tok"],
                )
                .map(|(s, _)| s)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let ok = statuses.iter().filter(|s| **s == Some(200)).count();
    let busy = statuses.iter().filter(|s| **s == Some(409)).count();
    assert_eq!(ok + busy, n, "every POST is 200 or 409: {statuses:?}");
    assert!(
        ok >= 1 && busy >= 1,
        "concurrent reloads were not refused: {statuses:?}"
    );
    // Once it is over, the next reload runs.
    let (status, _) = admin_request(
        &admin,
        "POST",
        "/reload",
        &["authorization: Bearer env-tok"],
    )
    .expect("answer");
    assert_eq!(status, 200);
    gw.stop();
}

#[test]
fn admin_accept_errors_back_off_instead_of_spinning() {
    let mut gw = RunningGateway::start(RunOptions {
        max_files: Some(64),
        ..RunOptions::default()
    });
    let admin = gw.admin.clone();
    let open = std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .expect("fd list")
        .count();
    // More connections than descriptors are left: accept() fails with
    // EMFILE for the rest until the idle ones time out (5 s).
    let spare = 64usize.saturating_sub(open);
    let held: Vec<TcpStream> = (0..spare + 16)
        .filter_map(|_| TcpStream::connect(&admin).ok())
        .collect();
    thread::sleep(Duration::from_secs(2));
    let failures = gw
        .stderr
        .lock()
        .expect("stderr lock")
        .lines()
        .filter(|l| l.contains("accept failed") && l.contains(r#""listener":"admin""#))
        .count();
    drop(held);
    let err = gw.stop();
    assert!(
        (1..=15).contains(&failures),
        "{failures} accept-failure lines in 2 s ({open} fds open at start); want a few, backing off: {}",
        err.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn trace_logs_never_show_the_relay_token_or_secret() {
    use hermes_protocol::frame::{ConnectorFrame, GatewayFrame};

    const DELIVERY_KEY: &str = "delivery-key-must-not-leak";
    const ADMIN_TOKEN: &str = "admin-token-must-not-leak";
    let mut gw = RunningGateway::start(RunOptions {
        plugins: &[hermes_plugin_artifacts::DISCORD],
        env: &[
            // Everything at trace but the compiler's internals (cranelift
            // logs every instruction it emits: minutes per plugin).
            (
                "RUST_LOG",
                "trace,tungstenite=trace,hyper=trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,wasmtime_cranelift=info,wasmtime::runtime::type_registry=info",
            ),
            ("GATEWAY_RELAY_DELIVERY_KEY", DELIVERY_KEY),
            ("HERMES_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
        ..RunOptions::default()
    });
    let mut cursor = gw.stub.cursor();
    let mut wait = |pred: fn(&GatewayFrame) -> bool| {
        gw.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(30), cursor.next_frame(pred)).await
            })
            .map(|(_, f)| f)
    };
    wait(|f| matches!(f, GatewayFrame::Hello { .. })).expect("hello within 30 s");

    // A Discord interaction whose body carries its interaction token: the
    // connector vaults it; it must not surface anywhere on our side.
    let case = corpus_cases()
        .into_iter()
        .find(|c| c["file"] == "discord/guild_slash_simple.json")
        .expect("guild_slash_simple");
    let forward = crate::support::corpus_forward(&case);
    let body: Value = serde_json::from_slice(&forward.body).expect("body JSON");
    let interaction_token = body["token"].as_str().expect("token").to_owned();
    let line = ConnectorFrame::PassthroughForward {
        forward,
        buffer_id: Some("b-secret-1".to_owned()),
    }
    .encode();
    gw.rt
        .block_on(gw.stub.push_text(line))
        .expect("push forward");
    wait(|f| matches!(f, GatewayFrame::Outbound { .. })).expect("the follow_up within 30 s");

    let auth = format!("authorization: Bearer {ADMIN_TOKEN}");
    let (_, metrics) = admin_get(&gw.admin, "/metrics").expect("metrics");
    // The forward's conversion was timed under its plugin and outcome.
    let converted = crate::support::Metrics::parse(&metrics).histogram_count(
        "hermes_gateway_conversion_seconds",
        &[("plugin", "discord-interactions"), ("outcome", "events")],
    );
    assert_eq!(converted, Some(1.0), "{metrics}");
    let (status, plugins) = admin_request(&gw.admin, "GET", "/plugins", &[&auth]).expect("plugins");
    assert_eq!(status, 200, "{plugins}");
    let tokens: Vec<String> = gw.stub.tokens_seen().into_iter().flatten().collect();
    assert!(!tokens.is_empty(), "the gateway dialled with a token");
    let err = gw.stop();
    assert!(
        err.contains("tungstenite"),
        "debug logs of the WebSocket library are still shown"
    );
    let mut secrets = vec![
        "e2e-secret".to_owned(),
        DELIVERY_KEY.to_owned(),
        ADMIN_TOKEN.to_owned(),
        interaction_token,
    ];
    secrets.extend(tokens);
    for secret in &secrets {
        for (place, text) in [
            ("logs", &err),
            ("/metrics", &metrics),
            ("/plugins", &plugins),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret in {place}: {secret}"
            );
        }
    }
}
