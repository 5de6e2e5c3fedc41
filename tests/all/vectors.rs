//! The shared test vectors (`tests/data/vectors/`, a byte-for-byte copy of
//! `../shared/vectors/`), every file and every case.
//!
//! The test fails when a vector file is not handled here or when a case array
//! is empty, so a new vector file cannot be silently skipped.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use hermes_protocol::{
    ConnectorFrame, DecodeError, Endpoint, ForwardError, LenUnit, PassthroughForward,
    SessionKeySettings, SessionSource, WireFrame, dial_url, http_endpoint, make_token_with_exp,
    session_key, sign, sign_delivery, verify_delivery, verify_token,
};
use serde_json::{Value, json};

/// Every vector file this test knows how to check.
const HANDLED: &[&str] = &[
    "auth_tokens.json",
    "delivery_signatures.json",
    "dial_urls.json",
    "len_units.json",
    "passthrough.json",
    "session_keys.json",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vectors_dir() -> PathBuf {
    workspace_root().join("tests/data/vectors")
}

fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The case arrays of a vector document, checked against the sections this
/// test visits: an unknown section or an empty one fails.
fn sections<'a>(file: &str, doc: &'a Value, expected: &[&str]) -> Vec<&'a [Value]> {
    let obj = doc
        .as_object()
        .unwrap_or_else(|| panic!("{file}: top level is not an object"));
    let present: BTreeSet<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "about")
        .collect();
    let wanted: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(
        present, wanted,
        "{file}: sections differ from the ones this test checks"
    );
    expected
        .iter()
        .map(|key| {
            let cases = obj
                .get(*key)
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{file}: `{key}` is not an array"));
            assert!(!cases.is_empty(), "{file}: `{key}` has no cases");
            cases.as_slice()
        })
        .collect()
}

fn str_field<'a>(case: &'a Value, key: &str) -> &'a str {
    case.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("case lacks string `{key}`: {case}"))
}

fn int_field(case: &Value, key: &str) -> i64 {
    case.get(key)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("case lacks integer `{key}`: {case}"))
}

fn bool_field(case: &Value, key: &str) -> bool {
    case.get(key)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("case lacks boolean `{key}`: {case}"))
}

fn str_list<'a>(case: &'a Value, key: &str) -> Vec<&'a str> {
    case.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("case lacks array `{key}`: {case}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("`{key}` holds a non-string: {case}"))
        })
        .collect()
}

#[test]
fn every_vector_file_is_handled() {
    let dir = vectors_dir();
    let on_disk: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                .file_name()
        })
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    let handled: BTreeSet<String> = HANDLED.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        on_disk, handled,
        "vector files on disk vs. files this test checks"
    );
}

#[test]
fn auth_tokens() {
    let doc = load("auth_tokens.json");
    let [make, verify] = sections("auth_tokens.json", &doc, &["make", "verify"])[..] else {
        unreachable!("two sections requested")
    };
    for case in make {
        let (payload, secret) = (str_field(case, "payload"), str_field(case, "secret"));
        let exp = u64::try_from(int_field(case, "exp")).unwrap_or_else(|e| panic!("exp: {e}"));
        assert_eq!(
            format!("{payload}:{exp}"),
            str_field(case, "signed"),
            "signed text of {case}"
        );
        assert_eq!(
            sign(str_field(case, "signed"), secret),
            str_field(case, "hmac_hex"),
            "hmac of {case}"
        );
        let token =
            make_token_with_exp(payload, secret, exp).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(token, str_field(case, "token"), "token of {case}");
        assert_eq!(format!("Bearer {token}"), str_field(case, "authorization"));
        // A token we mint verifies with its own secret, payload intact.
        let verified =
            verify_token(&token, &[secret], exp).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!((verified.payload.as_str(), verified.exp), (payload, exp));
    }
    for case in verify {
        let now = u64::try_from(int_field(case, "now")).unwrap_or_else(|e| panic!("now: {e}"));
        let verdict = verify_token(str_field(case, "token"), &str_list(case, "secrets"), now);
        assert_eq!(
            verdict.is_ok(),
            bool_field(case, "valid"),
            "{}: got {verdict:?}",
            str_field(case, "why")
        );
    }
}

#[test]
fn delivery_signatures() {
    let doc = load("delivery_signatures.json");
    let [signs, verifies] = sections("delivery_signatures.json", &doc, &["sign", "verify"])[..]
    else {
        unreachable!("two sections requested")
    };
    for case in signs {
        let ts: i64 = str_field(case, "timestamp")
            .parse()
            .unwrap_or_else(|e| panic!("timestamp: {e}"));
        let sig = sign_delivery(
            ts,
            str_field(case, "body").as_bytes(),
            str_field(case, "key"),
        );
        assert_eq!(sig.as_deref(), Ok(str_field(case, "signature")), "{case}");
    }
    for case in verifies {
        let verdict = verify_delivery(
            str_field(case, "timestamp"),
            str_field(case, "body").as_bytes(),
            str_field(case, "signature"),
            &str_list(case, "keys"),
            int_field(case, "now"),
        );
        assert_eq!(
            verdict.is_ok(),
            bool_field(case, "valid"),
            "{}: got {verdict:?}",
            str_field(case, "why")
        );
    }
}

#[test]
fn dial_urls() {
    let doc = load("dial_urls.json");
    let [cases] = sections("dial_urls.json", &doc, &["cases"])[..] else {
        unreachable!("one section requested")
    };
    for case in cases {
        let configured = str_field(case, "configured");
        let dial = str_field(case, "dial");
        assert_eq!(dial_url(configured), dial, "dial of {configured:?}");
        assert_eq!(dial_url(dial), dial, "dial is not idempotent for {dial:?}");
        for (endpoint, key) in [
            (Endpoint::Provision, "provision"),
            (Endpoint::Enroll, "enroll"),
            (Endpoint::Policy, "policy"),
        ] {
            let want = str_field(case, key);
            assert_eq!(
                http_endpoint(configured, endpoint),
                want,
                "{key} of {configured:?}"
            );
            assert_eq!(
                http_endpoint(dial, endpoint),
                want,
                "{key} of the dial form {dial:?}"
            );
        }
    }
}

#[test]
fn len_units() {
    let doc = load("len_units.json");
    let [cases] = sections("len_units.json", &doc, &["cases"])[..] else {
        unreachable!("one section requested")
    };
    for case in cases {
        let text = str_field(case, "text");
        for unit in [LenUnit::Chars, LenUnit::Utf16] {
            let want =
                usize::try_from(int_field(case, unit.as_str())).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(unit.measure(text), want, "{} of {text:?}", unit.as_str());
            assert_eq!(LenUnit::parse(unit.as_str()), unit);
        }
    }
}

#[test]
fn passthrough() {
    let doc = load("passthrough.json");
    let [cases] = sections("passthrough.json", &doc, &["cases"])[..] else {
        unreachable!("one section requested")
    };
    for case in cases {
        let forward = case
            .get("forward")
            .cloned()
            .unwrap_or_else(|| panic!("case lacks forward: {case}"));
        let direct = PassthroughForward::from_value(forward.clone());
        // The same forward inside a buffered frame, through the decoder path.
        let line = json!({"type": "passthrough_forward", "bufferId": "buf-1", "forward": forward})
            .to_string();
        let framed = ConnectorFrame::decode_line(line.as_bytes());
        if bool_field(case, "ok") {
            let f = direct.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(
                hex::encode(&f.body),
                str_field(case, "body_hex"),
                "body of {case}"
            );
            let want_headers: Vec<(String, String)> = case
                .get("headers")
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("case lacks headers: {case}"))
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(n), Value::String(v)]) => (n.clone(), v.clone()),
                    _ => panic!("bad expected header {pair}"),
                })
                .collect();
            assert_eq!(f.headers, want_headers, "headers of {case}");
            let field = |k: &str| forward.get(k).and_then(Value::as_str).unwrap_or("");
            assert_eq!(
                (
                    f.platform.as_str(),
                    f.bot_id.as_str(),
                    f.method.as_str(),
                    f.path.as_str()
                ),
                (
                    field("platform"),
                    field("botId"),
                    field("method"),
                    field("path")
                ),
                "envelope of {case}"
            );
            assert_eq!(
                framed,
                Ok(ConnectorFrame::PassthroughForward {
                    forward: f.clone(),
                    buffer_id: Some("buf-1".into())
                })
            );
            // Encoding and decoding again yields the same forward.
            let again = ConnectorFrame::PassthroughForward {
                forward: f,
                buffer_id: None,
            };
            assert_eq!(
                ConnectorFrame::decode_line(again.encode().as_bytes()).as_ref(),
                Ok(&again)
            );
        } else {
            let want = str_field(case, "error");
            assert_eq!(direct, Err(ForwardError::InvalidBodyEncoding), "{case}");
            assert_eq!(direct.err().map(|e| e.to_string()).as_deref(), Some(want));
            assert_eq!(
                framed,
                Err(DecodeError::InvalidBodyEncoding {
                    buffer_id: Some("buf-1".into())
                })
            );
            assert_eq!(framed.err().map(|e| e.kind()), Some(want));
        }
    }
}

#[test]
fn session_keys() {
    let doc = load("session_keys.json");
    let [cases] = sections("session_keys.json", &doc, &["cases"])[..] else {
        unreachable!("one section requested")
    };
    for case in cases {
        let source_json = case
            .get("source")
            .cloned()
            .unwrap_or_else(|| panic!("case lacks source: {case}"));
        let source =
            SessionSource::from_value(source_json).unwrap_or_else(|e| panic!("{case}: {e}"));
        let settings = case
            .get("settings")
            .unwrap_or_else(|| panic!("case lacks settings: {case}"));
        let settings = SessionKeySettings {
            group_sessions_per_user: bool_field(settings, "group_sessions_per_user"),
            thread_sessions_per_user: bool_field(settings, "thread_sessions_per_user"),
        };
        let want = str_field(case, "key");
        assert_eq!(
            session_key(&source, None, &settings).as_str(),
            want,
            "key of {case}"
        );
        // The gateway's own serialization of the source keys identically.
        let reencoded = serde_json::to_value(&source).unwrap_or_else(|e| panic!("{e}"));
        let reparsed = SessionSource::from_value(reencoded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reparsed, source, "source round trip of {case}");
        assert_eq!(session_key(&reparsed, None, &settings).as_str(), want);
    }
}

/// Relative paths of every file under `root`, recursively.
fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.insert(rel.to_path_buf());
            }
        }
    }
    out
}

#[test]
fn in_repo_copies_match_shared_originals() {
    let root = workspace_root();
    let Some(shared) = root
        .canonicalize()
        .ok()
        .and_then(|r| r.parent().map(|p| p.join("shared")))
    else {
        println!("note: cannot resolve the workspace parent; shared-copy check skipped");
        return;
    };
    for sub in ["vectors", "corpus", "corpus-outside"] {
        let original = shared.join(sub);
        if !original.is_dir() {
            println!(
                "note: {} does not exist; copy check for {sub} skipped",
                original.display()
            );
            continue;
        }
        let copy = root.join("tests/data").join(sub);
        let (want, have) = (files_under(&original), files_under(&copy));
        assert_eq!(
            have,
            want,
            "files of tests/data/{sub} vs {}",
            original.display()
        );
        for rel in &want {
            let a =
                fs::read(original.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
            let b = fs::read(copy.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
            assert!(
                a == b,
                "tests/data/{sub}/{} differs from the shared original",
                rel.display()
            );
        }
    }
}
