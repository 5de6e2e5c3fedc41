//! Env files (`~/.hermes/.env`): `KEY=VALUE` lines read at start and
//! rewritten by `enroll`.
//!
//! Reading never touches the process environment (`set_var` is unsafe in
//! edition 2024 and this workspace forbids `unsafe`): the values become a
//! lower layer of [`crate::settings::EnvLayers`], under the real environment,
//! which is exactly "loaded without overriding variables already set".

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The default env file, `~/.hermes/.env`, when `HOME` is known.
pub fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".hermes").join(".env"))
}

/// Parses env-file text into `(key, value)` pairs in file order.
///
/// Accepts `KEY=VALUE`, an optional `export ` prefix, blank lines and `#`
/// comments. A quoted value is read the way a shell reads one word:
/// single-quoted runs are literal, `\'` outside quotes is a quote (so the
/// `'it'\''s'` form [`format_assignment`] writes reads back as `it's`), and
/// double-quoted runs take `\n`, `\t`, `\"`, `\\` escapes (the form older
/// versions wrote). A bare value runs to the end of the line (a ` #` starts
/// a comment). Lines that are not assignments to a valid name are skipped: an
/// env file is best-effort input, and one stray line must not stop the
/// gateway.
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line
        .strip_prefix("export ")
        .map(str::trim_start)
        .unwrap_or(line);
    let (key, raw) = line.split_once('=')?;
    let key = key.trim();
    if !is_valid_key(key) {
        return None;
    }
    Some((key.to_owned(), parse_value(raw.trim())))
}

/// A shell-style variable name: letters, digits and `_`, not starting with a digit.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(raw: &str) -> String {
    if raw.starts_with(['"', '\'']) {
        return parse_quoted(raw);
    }
    let value = match raw.find(" #") {
        Some(i) => raw.get(..i).unwrap_or(raw),
        None => raw,
    };
    value.trim().to_owned()
}

/// A quoted value: adjacent quoted runs and `\x` escapes concatenate, as in
/// a shell word; the first other character (a space before a comment) ends
/// it. An unterminated quote keeps what was there rather than guess.
fn parse_quoted(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '\'' => {
                chars.next();
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => out.push('\n'),
                            Some('t') => out.push('\t'),
                            Some('r') => out.push('\r'),
                            Some(other) => out.push(other),
                            None => out.push('\\'),
                        },
                        other => out.push(other),
                    }
                }
            }
            '\\' => {
                chars.next();
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
            }
            _ => break,
        }
    }
    out
}

/// Reads and parses an env file. A missing file is `Ok(None)`.
pub fn read(path: &Path) -> io::Result<Option<Vec<(String, String)>>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(parse(&text))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Formats one assignment, quoting the value only when a bare value would
/// not read back the same.
///
/// The file is meant to be `source`d by shells too, so a quoted value is
/// single-quoted (nothing is expanded inside: no `$(…)`, no backticks) with
/// each `'` written as `'\''`. A line break or other control character has
/// no single-line form a shell reads back, so it is refused.
pub fn format_assignment(key: &str, value: &str) -> io::Result<String> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the value of {key} contains the control character {c:?}; refusing to write it"
            ),
        ));
    }
    let bare_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/+=@,%~".contains(c));
    if bare_ok {
        return Ok(format!("{key}={value}"));
    }
    Ok(format!("{key}='{}'", value.replace('\'', "'\\''")))
}

/// Returns `text` with each of `updates` set: an existing assignment to the
/// key (with or without `export `) is replaced in place (later duplicates
/// are removed), new keys are appended; every other line is kept verbatim.
///
/// Fails, before anything is written, when a value cannot be written safely
/// (see [`format_assignment`]).
pub fn apply_updates(text: &str, updates: &[(&str, &str)]) -> io::Result<String> {
    let mut written = vec![false; updates.len()];
    let mut out = String::with_capacity(text.len() + 128);
    for line in text.lines() {
        let key = parse_line(line).map(|(k, _)| k);
        let hit = key
            .as_deref()
            .and_then(|k| updates.iter().position(|(u, _)| *u == k));
        match hit {
            Some(i) => {
                if let (Some(done), Some((k, v))) = (written.get_mut(i), updates.get(i))
                    && !*done
                {
                    out.push_str(&format_assignment(k, v)?);
                    out.push('\n');
                    *done = true;
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for ((k, v), done) in updates.iter().zip(&written) {
        if !done {
            out.push_str(&format_assignment(k, v)?);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Sets `updates` in the env file at `path`, preserving its other lines.
///
/// The new content goes to a temporary file in the same directory (mode
/// 0600 from creation, so a secret is never world-readable even briefly),
/// is synced, and is renamed over the old file: a crash leaves either the
/// old file or the new one, never half of one. The directory is created
/// (mode 0700) when missing.
pub fn update_file(path: &Path, updates: &[(&str, &str)]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
    }
    let old = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let new = apply_updates(&old, updates)?;

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".env".to_owned());
    let (tmp, mut f) = create_temp(&dir, &file_name)?;
    let result = (|| {
        f.write_all(new.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates a fresh temp file beside the target: an unpredictable name,
/// `O_CREAT|O_EXCL` (so an existing file or a planted symlink is never
/// opened, let alone followed) and mode 0600 from the moment it exists.
fn create_temp(dir: &Path, file_name: &str) -> io::Result<(PathBuf, fs::File)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(format!(".{file_name}.tmp-{:016x}", random_suffix()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temp file name")))
}

/// 64 random bits from std's per-process randomly keyed hasher, mixed with
/// the time and pid: enough that a name cannot be guessed ahead of time.
fn random_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_comments_quotes_and_export() {
        let text = "# comment\n\nexport A=1\nB = two \nC=\"quoted # not comment\\n\"\nD='lit\\eral'\nE=bare # comment\n9X=skipped\nnot an assignment\nF=\n";
        let got = parse(text);
        let want: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "two"),
            ("C", "quoted # not comment\n"),
            ("D", "lit\\eral"),
            ("E", "bare"),
            ("F", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn formatted_values_read_back_identically() {
        for value in [
            "plain",
            "with space",
            "q\"uote",
            "back\\slash",
            "hash #x",
            "",
            "a=b+c/d",
            "it's",
            "gw-$(touch pwned)",
            "'",
            "''\\'",
        ] {
            let line = format_assignment("K", value).expect("formattable");
            assert_eq!(
                parse(&line),
                vec![("K".to_owned(), value.to_owned())],
                "{line}"
            );
        }
    }

    #[test]
    fn shell_quoted_and_old_double_quoted_values_both_read() {
        let text = "A='it'\\''s $(x)'\nB=\"old \\\"form\\\" $(x)\"\nC='a' # comment\nD=''\n";
        let got = parse(text);
        let want: Vec<(String, String)> = [
            ("A", "it's $(x)"),
            ("B", "old \"form\" $(x)"),
            ("C", "a"),
            ("D", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    /// A shell that `source`s the file sees every value literally: nothing
    /// in a value (a connector's answer) is ever executed or expanded.
    #[test]
    fn sourcing_a_written_file_in_bash_expands_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(".env");
        let marker = tmp.path().join("pwned");
        let hostile = format!(
            "gw-$(touch {m})`touch {m}`'$(touch {m})'\"$HOME\"\\",
            m = marker.display()
        );
        for value in [hostile.as_str(), "it's", "a b", "'", ""] {
            update_file(&path, &[("VAR", value)]).expect("written");
            assert_eq!(
                read(&path).expect("read"),
                Some(vec![("VAR".to_owned(), value.to_owned())]),
                "our reader"
            );
            let out = std::process::Command::new("bash")
                .args(["-c", "source \"$1\"; printf %s \"$VAR\"", "bash"])
                .arg(&path)
                // Only what bash needs: no secret of the test process, and
                // no inherited VAR.
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .output()
                .expect("run bash");
            assert!(out.status.success(), "bash failed: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), value, "bash");
            assert!(!marker.exists(), "sourcing the env file ran a command");
        }
    }

    #[test]
    fn control_characters_are_refused_before_writing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(".env");
        for value in ["two\nlines", "cr\r", "nul\0"] {
            let err = update_file(&path, &[("A", "1"), ("B", value)]).expect_err(value);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains('B'), "{err}");
        }
        assert!(!path.exists(), "nothing is written");
    }

    #[test]
    fn updates_replace_in_place_and_append_new_keys() {
        let old = "# keep me\nexport GATEWAY_RELAY_ID=old\nOTHER=1\nGATEWAY_RELAY_ID=dup\n";
        let new = apply_updates(
            old,
            &[("GATEWAY_RELAY_ID", "gw-a"), ("GATEWAY_RELAY_SECRET", "s")],
        )
        .expect("formattable");
        assert_eq!(
            new,
            "# keep me\nGATEWAY_RELAY_ID=gw-a\nOTHER=1\nGATEWAY_RELAY_SECRET=s\n"
        );
    }

    #[test]
    fn update_file_creates_dir_and_sets_mode_0600() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("sub").join(".env");
        update_file(&path, &[("A", "1")]).expect("written");
        update_file(&path, &[("B", "2")]).expect("rewritten");
        assert_eq!(fs::read_to_string(&path).expect("read"), "A=1\nB=2\n");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != ".env")
            .collect();
        assert!(leftovers.is_empty(), "temp file left behind: {leftovers:?}");
    }

    #[test]
    fn update_file_never_writes_through_a_planted_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(".env");
        let victim = tmp.path().join("victim");
        fs::write(&victim, "untouched\n").expect("victim");
        // The name an older, predictable scheme would have used.
        let planted = tmp.path().join(format!(".env.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        update_file(&path, &[("SECRET", "s3")]).expect("written");
        assert_eq!(fs::read_to_string(&victim).expect("read"), "untouched\n");
        assert_eq!(fs::read_to_string(&path).expect("read"), "SECRET=s3\n");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
