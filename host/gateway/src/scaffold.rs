//! `plugin new NAME`: a converter crate that builds, passes its own test and
//! its own corpus, and compiles to a component out of the box, from this
//! binary alone.
//!
//! The crate is its own workspace (so it builds wherever it is created). The
//! converter SDK and the WIT interface it is built against are embedded in
//! this binary (`build.rs`) and written beside the crate
//! (`vendor/hermes-converter-sdk`, `wit/`), with the `Cargo.lock` this
//! gateway was built and tested with, so the crate needs a Rust toolchain
//! with the `wasm32-wasip2` target and nothing from this repository.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The toolchain pin of the repository, copied so the scaffold builds with
/// the same compiler as the SDK.
const TOOLCHAIN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../rust-toolchain.toml"
));

/// The lockfile the gateway was built with: the scaffold resolves the
/// SDK's dependencies to the same versions (cargo drops what it does not
/// use).
const LOCKFILE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"));

/// Where the SDK goes in a scaffold, relative to the crate.
const SDK_DIR: &str = "vendor/hermes-converter-sdk";

/// Where the crate of what host and SDK agree on goes.
const ABI_DIR: &str = "vendor/hermes-converter-abi";

/// Its manifest outside the gateway's workspace (it has no dependencies).
const ABI_MANIFEST: &str = r#"[package]
name = "hermes-converter-abi"
description = "What the hermes-gateway host and its converter plugins agree on"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
publish = false
"#;

/// What `plugin new` created.
#[derive(Debug)]
pub struct Scaffold {
    /// The new crate's directory.
    pub dir: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<String>,
}

/// Checks a crate name: lowercase ASCII letters, digits, `-` and `_`,
/// starting with a letter, at most 64 characters.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !ok {
        bail!(
            "invalid plugin name {name:?}: use lowercase letters, digits, '-' and '_', starting with a letter"
        );
    }
    Ok(())
}

/// Writes the scaffold for `name` into `parent/name`. Refuses an existing path.
pub fn create(parent: &Path, name: &str) -> anyhow::Result<Scaffold> {
    validate_name(name)?;
    let dir = parent.join(name);
    if dir.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; refusing to overwrite it (choose another name or remove it)",
            dir.display()
        );
    }
    let lib_name = name.replace('-', "_");
    let mut files: Vec<(String, String)> = vec![
        ("Cargo.toml".into(), manifest(name)),
        ("Cargo.lock".into(), LOCKFILE.to_owned()),
        ("rust-toolchain.toml".into(), TOOLCHAIN.to_owned()),
        (".gitignore".into(), "/target\n/plugins\n".to_owned()),
        ("README.md".into(), readme(name, &lib_name)),
        ("src/lib.rs".into(), lib_rs(name)),
        (format!("{SDK_DIR}/Cargo.toml"), SDK_MANIFEST.to_owned()),
        (format!("{ABI_DIR}/Cargo.toml"), ABI_MANIFEST.to_owned()),
    ];
    files.extend(corpus(name));
    files.extend(
        EMBEDDED
            .iter()
            .map(|(path, text)| ((*path).to_owned(), (*text).to_owned())),
    );

    fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (rel, content) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Scaffold {
        dir,
        files: files.into_iter().map(|(rel, _)| rel).collect(),
    })
}

fn manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A workspace of its own: the crate builds wherever it lives.
[workspace]

[lib]
# cdylib: the WebAssembly component; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
# The converter SDK, written beside this crate by `hermes-gateway plugin new`
# (the version of the gateway that created it).
hermes-converter-sdk = {{ path = "{SDK_DIR}" }}

[profile.release]
opt-level = "s"
lto = true
strip = true
"#
    )
}

/// The SDK's manifest outside the gateway's workspace: the workspace's
/// inherited keys and dependency versions written out (a test keeps them
/// equal to `plugins/sdk/Cargo.toml` and the workspace's).
const SDK_MANIFEST: &str = r#"[package]
name = "hermes-converter-sdk"
description = "Write a hermes-gateway converter plugin in a few lines of Rust"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
publish = false

[features]
testing = ["dep:sha2", "dep:hex"]

[dependencies]
hermes-converter-abi = { path = "../hermes-converter-abi" }
serde_json = "1"
thiserror = "2"
sha2 = { version = "0.10", optional = true }
hex = { version = "0.4", optional = true }

[target.'cfg(target_arch = "wasm32")'.dependencies]
wit-bindgen = { version = "0.46", default-features = false, features = ["macros", "realloc"] }
"#;

/// A tiny corpus for `plugins test`: one message, one ping, one refusal.
fn corpus(name: &str) -> Vec<(String, String)> {
    let cases = [
        (
            "hello.txt",
            "text/plain",
            "hello",
            r#"{"outcome": "event", "events": [{"text": "hello", "source": {"platform": "NAME", "chat_id": "c1", "chat_type": "dm", "user_id": "u1"}, "reply_route": {"op": "send"}}]}"#,
        ),
        (
            "ping.txt",
            "text/plain",
            "ping",
            r#"{"outcome": "ignored", "reason": "ping"}"#,
        ),
        (
            "json.json",
            "application/json",
            "{}",
            r#"{"outcome": "error", "error_kind": "unsupported_content_type"}"#,
        ),
    ];
    let mut files = Vec::new();
    let mut entries = Vec::new();
    for (file, content_type, body, expect) in cases {
        let expect: serde_json::Value =
            serde_json::from_str(&expect.replace("NAME", name)).unwrap_or_default();
        entries.push(serde_json::json!({
            "file": file,
            "forward": {
                "platform": name,
                "method": "POST",
                "path": format!("/hooks/{name}/messages"),
                "headers": [["content-type", content_type], ["x-chat-id", "c1"], ["x-user-id", "u1"]],
            },
            "body_bytes": body.len(),
            "body_sha256": sha256_hex(body.as_bytes()),
            "expect": expect,
        }));
        files.push((format!("corpus/{file}"), body.to_owned()));
    }
    let manifest = serde_json::json!({
        "version": 2,
        "note": "Requests and the outcome the converter must give. `hermes-gateway plugins test plugins --corpus corpus` runs them; add a case per behaviour (or record real ones with `dev --record`).",
        "cases": entries,
    });
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    files.push(("corpus/manifest.json".to_owned(), text + "\n"));
    files
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn readme(name: &str, lib_name: &str) -> String {
    format!(
        r#"# {name}

A hermes-gateway converter plugin: it turns one raw webhook request for the
`{name}` platform into chat messages for the agent. It needs a Rust toolchain
and nothing else: the converter SDK (`vendor/hermes-converter-sdk`) and the
WIT interface (`wit/`) came with `hermes-gateway plugin new`.

    rustup target add wasm32-wasip2                   # once per machine
    cargo test                                        # native unit tests
    cargo build --release --target wasm32-wasip2      # the component
    mkdir -p plugins && cp target/wasm32-wasip2/release/{lib_name}.wasm plugins/
    hermes-gateway plugins check plugins
    hermes-gateway plugins test plugins --corpus corpus

Then serve it, with hot reload: rebuild and copy the `.wasm` again, or edit
`plugins/policy.toml`, and `dev` picks it up.

    hermes-gateway dev --plugins plugins
    curl -sS -H 'content-type: text/plain' -H 'x-chat-id: c1' \
        --data-binary 'hello' http://127.0.0.1:8787/hooks/{name}/messages

`dev --record rec` keeps every request it converts, with the outcome, as a
corpus in `rec/`; `plugins test plugins --corpus rec` replays it against
the next build. The conversion logic is plain Rust in `src/lib.rs`
(`Converter::convert`); `export_converter!` makes it a component. Tenant
configuration comes from the gateway's policy file (or `convert --config
key=value`) through `config.get`.
"#
    )
}

fn lib_rs(name: &str) -> String {
    TEMPLATE_LIB.replace("{{NAME}}", name)
}

const TEMPLATE_LIB: &str = r#"//! The `{{NAME}}` converter: a `text/plain` body becomes one message.
//!
//! Headers `x-chat-id` and `x-user-id` name the chat and the author; a body
//! of `ping` is ignored; tenant config `prefix` is prepended to the text.

use hermes_converter_sdk::{
    ChatType, Config, Converter, ErrorKind, MessageEvent, Outcome, PluginInfo, ReplyRoute,
    Request, Source, export_converter,
};

/// The converter.
pub struct Plugin;

impl Converter for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new("{{NAME}}", env!("CARGO_PKG_VERSION"), &["{{NAME}}"])
    }

    fn tenant_of(req: &Request) -> Option<String> {
        req.header("x-tenant").map(str::to_owned)
    }

    fn convert(req: &Request, config: &dyn Config) -> Outcome {
        if req.body.is_empty() {
            return Outcome::error(ErrorKind::EmptyBody, "empty body");
        }
        if req.media_type().as_deref() != Some("text/plain") {
            return Outcome::error(ErrorKind::UnsupportedContentType, "expected text/plain");
        }
        let Ok(text) = std::str::from_utf8(&req.body) else {
            return Outcome::error(ErrorKind::InvalidEncoding, "body is not UTF-8");
        };
        if text.trim() == "ping" {
            return Outcome::ignored("ping");
        }
        let chat_id = req.header("x-chat-id").unwrap_or("default");
        let mut source = Source::new("{{NAME}}", chat_id, ChatType::Dm);
        source.user_id = req.header("x-user-id").map(str::to_owned);
        let prefix = config.get("prefix").unwrap_or_default();
        Outcome::event(MessageEvent::new(
            format!("{prefix}{text}"),
            source,
            ReplyRoute::Send,
        ))
    }
}

export_converter!(Plugin);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn request(content_type: &str, body: &str) -> Request {
        Request {
            platform: "{{NAME}}".into(),
            headers: vec![
                ("Content-Type".into(), content_type.into()),
                ("x-chat-id".into(), "c1".into()),
            ],
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    #[test]
    fn text_becomes_one_event() {
        let config = HashMap::from([("prefix".to_owned(), "> ".to_owned())]);
        let Outcome::Events(events) = Plugin::convert(&request("text/plain", "hi"), &config) else {
            panic!("expected an event");
        };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].text, "> hi");
        assert_eq!(events[0].source.chat_id, "c1");
        assert_eq!(events[0].reply_route, ReplyRoute::Send);
    }

    #[test]
    fn ping_is_ignored_and_json_is_rejected() {
        assert_eq!(
            Plugin::convert(&request("text/plain; charset=utf-8", "ping"), &()),
            Outcome::ignored("ping")
        );
        let Outcome::Error(e) = Plugin::convert(&request("application/json", "{}"), &()) else {
            panic!("expected a rejection");
        };
        assert_eq!(e.kind, ErrorKind::UnsupportedContentType);
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["echo", "my-plugin", "a1_b"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "Abc", "a b", "../x", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_files_and_refuses_existing_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = create(tmp.path(), "my-conv").expect("created");
        let manifest = fs::read_to_string(s.dir.join("Cargo.toml")).expect("manifest");
        let parsed: toml::Table = toml::from_str(&manifest).expect("manifest is TOML");
        assert!(parsed.contains_key("workspace"));
        let sdk = &parsed["dependencies"]["hermes-converter-sdk"]["path"];
        assert_eq!(sdk.as_str(), Some(SDK_DIR), "the SDK is beside the crate");
        for embedded in ["src/lib.rs", "src/guest.rs", "Cargo.toml"] {
            let path = s.dir.join(SDK_DIR).join(embedded);
            assert!(path.is_file(), "{} missing", path.display());
        }
        assert!(s.dir.join(ABI_DIR).join("src/lib.rs").is_file());
        let wit = format!(
            "wit/{}/converter.wit",
            hermes_converter_abi::CURRENT_VERSION
        );
        assert!(s.dir.join(wit).is_file());
        assert!(s.dir.join("corpus/manifest.json").is_file());
        let lib = fs::read_to_string(s.dir.join("src/lib.rs")).expect("lib");
        assert!(lib.contains(r#"PluginInfo::new("my-conv""#));
        let err = create(tmp.path(), "my-conv").expect_err("exists");
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    /// The SDK manifest written into a scaffold lists the SDK's own
    /// dependencies and features, at the workspace's versions.
    #[test]
    fn the_sdk_manifest_matches_the_sdk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let read = |p: &str| -> toml::Table {
            toml::from_str(&fs::read_to_string(root.join(p)).expect("read")).expect("TOML")
        };
        let workspace = read("Cargo.toml");
        let versions = &workspace["workspace"]["dependencies"];
        let sdk = read("plugins/sdk/Cargo.toml");
        let ours: toml::Table = toml::from_str(SDK_MANIFEST).expect("TOML");
        assert_eq!(sdk["features"], ours["features"], "features");
        let deps = |t: &toml::Table| -> Vec<(String, Option<toml::Value>)> {
            let mut v = Vec::new();
            let tables = [
                t.get("dependencies"),
                t.get("target")
                    .and_then(|t| t.get("cfg(target_arch = \"wasm32\")"))
                    .and_then(|t| t.get("dependencies")),
            ];
            for table in tables.into_iter().flatten() {
                for (name, spec) in table.as_table().into_iter().flatten() {
                    v.push((name.clone(), spec.get("optional").cloned()));
                }
            }
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(deps(&sdk), deps(&ours), "the same dependencies");
        let version = |spec: &toml::Value| -> Option<String> {
            spec.as_str()
                .map(str::to_owned)
                .or_else(|| spec.get("version")?.as_str().map(str::to_owned))
        };
        for (name, _) in deps(&ours) {
            let spec = ours["dependencies"]
                .get(&name)
                .or_else(|| {
                    ours["target"]["cfg(target_arch = \"wasm32\")"]["dependencies"].get(&name)
                })
                .expect("listed");
            assert_eq!(
                version(spec),
                version(&versions[&name]),
                "{name}: the workspace's version"
            );
        }
        let features = |spec: &toml::Value| spec.get("features").cloned();
        let wit = "wit-bindgen";
        assert_eq!(
            features(&ours["target"]["cfg(target_arch = \"wasm32\")"]["dependencies"][wit]),
            features(&versions[wit])
        );
    }

    /// The scaffold's corpus is in the format `plugins test` reads, with
    /// bodies that match their digests.
    #[test]
    fn the_corpus_loads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = create(tmp.path(), "acme-hooks").expect("created");
        let cases = hermes_converter_sdk::testing::load_corpus(&s.dir.join("corpus"))
            .expect("the corpus loads");
        assert_eq!(cases.len(), 3);
        assert!(cases.iter().all(|c| c.platform == "acme-hooks"));
    }
}
