//! `plugin new NAME`: a converter crate that builds, passes its own test and
//! compiles to a component out of the box.
//!
//! The crate is its own workspace (so it builds wherever it is created) and
//! depends on the converter SDK by path. The SDK's location is fixed when
//! this binary is built (`env!("CARGO_MANIFEST_DIR")/../../plugins/sdk`);
//! that is right for anyone running the gateway from its source tree, which
//! is where plugin authors are today (the SDK is not published).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The SDK as seen from this crate's source directory.
const SDK_FROM_CLI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/sdk");

/// The toolchain pin of the repository, copied so the scaffold builds with
/// the same compiler as the SDK.
const TOOLCHAIN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../rust-toolchain.toml"
));

/// What `plugin new` created.
#[derive(Debug)]
pub struct Scaffold {
    /// The new crate's directory.
    pub dir: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<&'static str>,
    /// Where the manifest points for the SDK.
    pub sdk_path: PathBuf,
    /// Whether that path exists on this machine.
    pub sdk_found: bool,
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
    let sdk_path = fs::canonicalize(SDK_FROM_CLI).unwrap_or_else(|_| PathBuf::from(SDK_FROM_CLI));
    let sdk_found = sdk_path.join("Cargo.toml").is_file();
    let lib_name = name.replace('-', "_");
    let sdk = sdk_path
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");

    let files: Vec<(&'static str, String)> = vec![
        ("Cargo.toml", manifest(name, &sdk)),
        ("rust-toolchain.toml", TOOLCHAIN.to_owned()),
        (".gitignore", "/target\n".to_owned()),
        ("README.md", readme(name, &lib_name)),
        ("src/lib.rs", lib_rs(name)),
    ];

    fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::create_dir(dir.join("src"))
        .with_context(|| format!("cannot create {}/src", dir.display()))?;
    for (rel, content) in &files {
        let path = dir.join(rel);
        fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Scaffold {
        dir,
        files: files.iter().map(|(rel, _)| *rel).collect(),
        sdk_path,
        sdk_found,
    })
}

fn manifest(name: &str, sdk: &str) -> String {
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
hermes-converter-sdk = {{ path = "{sdk}" }}

[profile.release]
opt-level = "s"
lto = true
strip = true
"#
    )
}

fn readme(name: &str, lib_name: &str) -> String {
    format!(
        r#"# {name}

A hermes-gateway converter plugin: it turns one raw webhook request for the
`{name}` platform into chat messages for the agent.

    cargo test                                        # native unit tests
    cargo build --release --target wasm32-wasip2      # the component
    mkdir -p plugins && cp target/wasm32-wasip2/release/{lib_name}.wasm plugins/
    hermes-gateway plugins check plugins
    printf 'hello' > msg.txt
    hermes-gateway convert --plugins plugins --platform {name} \
        --header 'content-type: text/plain' --header 'x-chat-id: c1' --body-file msg.txt

The conversion logic is plain Rust in `src/lib.rs` (`Converter::convert`);
`export_converter!` makes it a component. Tenant configuration comes from the
gateway's policy file (or `convert --config key=value`) through `config.get`.
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
        assert!(s.sdk_found, "SDK expected at {}", s.sdk_path.display());
        let manifest = fs::read_to_string(s.dir.join("Cargo.toml")).expect("manifest");
        let parsed: toml::Table = toml::from_str(&manifest).expect("manifest is TOML");
        assert!(parsed.contains_key("workspace"));
        let lib = fs::read_to_string(s.dir.join("src/lib.rs")).expect("lib");
        assert!(lib.contains(r#"PluginInfo::new("my-conv""#));
        let err = create(tmp.path(), "my-conv").expect_err("exists");
        assert!(err.to_string().contains("already exists"), "{err}");
    }
}
