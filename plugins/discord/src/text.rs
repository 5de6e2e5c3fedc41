//! The text of commands, components and modals (`conversion.md` §4.1).

use std::fmt::Write as _;

use hermes_converter_sdk::json::Value;
use hermes_converter_sdk::{ConvertError, ErrorKind, MessageType, PromptResponse};

use crate::interaction::{Content, earliest, type_field};

/// The longest STRING option accepted, in Unicode scalar values.
pub const MAX_STRING_OPTION_CHARS: usize = 6000;

/// Application command types (`data.type`).
const CHAT_INPUT: i64 = 1;
const USER_COMMAND: i64 = 2;
const MESSAGE_COMMAND: i64 = 3;

/// Option types.
const SUB_COMMAND: i64 = 1;
const SUB_COMMAND_GROUP: i64 = 2;
const STRING: i64 = 3;
const INTEGER: i64 = 4;
const BOOLEAN: i64 = 5;
const USER: i64 = 6;
const CHANNEL: i64 = 7;
const ROLE: i64 = 8;
const MENTIONABLE: i64 = 9;
const NUMBER: i64 = 10;
const ATTACHMENT: i64 = 11;

/// Component types.
const ACTION_ROW: i64 = 1;
const TEXT_INPUT: i64 = 4;
const STRING_SELECT: i64 = 3;
const USER_SELECT: i64 = 5;
const ROLE_SELECT: i64 = 6;
const MENTIONABLE_SELECT: i64 = 7;
const CHANNEL_SELECT: i64 = 8;
const LABEL: i64 = 18;
const FILE_UPLOAD: i64 = 19;
const RADIO_GROUP: i64 = 21;
const CHECKBOX_GROUP: i64 = 22;
const CHECKBOX: i64 = 23;

fn invalid(message: impl Into<String>) -> ConvertError {
    ConvertError::new(ErrorKind::InvalidField, message)
}

/// The earliest fault seen so far, while a walk continues past faults so that
/// a later, earlier-ranked fault (a missing field after a wrong type) wins.
#[derive(Default)]
struct Faults(Option<ConvertError>);

impl Faults {
    fn add(&mut self, e: ConvertError) {
        if self.0.as_ref().is_none_or(|seen| e.kind < seen.kind) {
            self.0 = Some(e);
        }
    }

    fn into_result<T>(self, value: T) -> Result<T, ConvertError> {
        self.0.map_or(Ok(value), Err)
    }
}

/// APPLICATION_COMMAND data.
pub fn command(data: &Value<'_>, named: bool) -> Result<Content, ConvertError> {
    let name = data.str_field("name");
    let kind = type_field(data, "type").map(|t| t.unwrap_or(CHAT_INPUT));
    // What follows the name is evaluated even when the name is faulty, so
    // that a missing field there outranks an invalid name (spec order).
    let rest = kind
        .as_ref()
        .ok()
        .map(|&kind| command_rest(data, kind, named));
    let (name, (rest, reply_to_message_id)) = match (name, kind, rest) {
        (Ok(n), Ok(_), Some(Ok(r))) => (n, r),
        (n, k, r) => return Err(earliest([n.err(), k.err(), r.and_then(Result::err)])),
    };
    let mut text = String::with_capacity(1 + name.len() + rest.len());
    text.push('/');
    text.push_str(name);
    text.push_str(&rest);
    Ok(Content {
        text,
        message_type: MessageType::Command,
        reply_to_message_id,
        prompt_response: None,
    })
}

/// The text after `/name` (each part after one space), and the message a
/// MESSAGE command targets.
fn command_rest(
    data: &Value<'_>,
    kind: i64,
    named: bool,
) -> Result<(String, Option<String>), ConvertError> {
    let mut text = String::with_capacity(64);
    match kind {
        CHAT_INPUT => {
            let mut walk = OptionWalk {
                named,
                resolved: data.get_present("resolved"),
                text,
                faults: Faults::default(),
            };
            walk.options(data.get_present("options"), Level::Root);
            Ok((walk.faults.into_result(walk.text)?, None))
        }
        USER_COMMAND => {
            let target = data.str_field("target_id")?;
            text.push(' ');
            if named {
                text.push_str("target:");
            }
            push_mention(&mut text, "<@", target);
            Ok((text, None))
        }
        MESSAGE_COMMAND => {
            let target = data.str_field("target_id")?;
            text.push(' ');
            if named {
                text.push_str("target:");
            }
            text.push_str(target);
            let content = data
                .get_present("resolved")
                .and_then(|r| r.get_present("messages"))
                .and_then(|m| m.get_present(target))
                .map(|m| m.opt_str_field("content"))
                .transpose()?
                .flatten();
            if let Some(content) = content.filter(|c| !c.is_empty()) {
                text.push('\n');
                text.push_str(content);
            }
            Ok((text, Some(target.to_owned())))
        }
        other => Err(ConvertError::new(
            ErrorKind::UnsupportedType,
            format!("application command type {other} is not converted"),
        )),
    }
}

/// Where an option list sits: only group › sub-command › options is legal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Group,
    SubCommand,
}

struct OptionWalk<'v, 'a> {
    named: bool,
    resolved: Option<&'v Value<'a>>,
    text: String,
    faults: Faults,
}

impl<'v, 'a> OptionWalk<'v, 'a> {
    /// Render an `options` array. Recursion is bounded: a list recurses only
    /// into a level below it, and there are three levels.
    fn options(&mut self, options: Option<&'v Value<'a>>, level: Level) {
        let Some(options) = options else { return };
        let Some(list) = options.as_array() else {
            self.faults.add(invalid(format!(
                "`options` must be an array, not {}",
                options.type_name()
            )));
            return;
        };
        for option in list {
            if option.as_object().is_none() {
                self.faults.add(invalid("an option is not an object"));
                continue;
            }
            let (kind, name) = match (option.int_field("type"), option.str_field("name")) {
                (Ok(k), Ok(n)) => (k, n),
                (k, n) => {
                    self.faults.add(earliest([k.err(), n.err()]));
                    continue;
                }
            };
            match (kind, level) {
                (SUB_COMMAND_GROUP, Level::Root) | (SUB_COMMAND, Level::Root | Level::Group) => {
                    self.text.push(' ');
                    self.text.push_str(name);
                    let next = if kind == SUB_COMMAND {
                        Level::SubCommand
                    } else {
                        Level::Group
                    };
                    self.options(option.get_present("options"), next);
                }
                (SUB_COMMAND_GROUP | SUB_COMMAND, _) | (STRING..=ATTACHMENT, Level::Group) => {
                    self.faults.add(invalid(
                        "options nested deeper than group › sub-command › options",
                    ));
                }
                (STRING..=ATTACHMENT, _) => {
                    self.text.push(' ');
                    if self.named {
                        self.text.push_str(name);
                        self.text.push(':');
                    }
                    if let Err(e) = self.value(kind, option) {
                        self.faults.add(e);
                    }
                }
                (other, _) => self
                    .faults
                    .add(invalid(format!("unknown option type {other}"))),
            }
        }
    }

    /// Append one leaf option's value.
    fn value(&mut self, kind: i64, option: &Value<'_>) -> Result<(), ConvertError> {
        let value = option.get_present("value").ok_or_else(|| {
            ConvertError::new(
                ErrorKind::MissingField,
                "missing field `value` of an option",
            )
        })?;
        let text = &mut self.text;
        match kind {
            STRING => {
                let s = value.as_str().ok_or_else(|| wrong("STRING", value))?;
                // Bytes bound chars from above: only long strings need counting.
                if s.len() > MAX_STRING_OPTION_CHARS && s.chars().count() > MAX_STRING_OPTION_CHARS
                {
                    return Err(invalid(format!(
                        "STRING option over {MAX_STRING_OPTION_CHARS} characters"
                    )));
                }
                text.push_str(s);
            }
            INTEGER => {
                let n = value.as_number().ok_or_else(|| wrong("INTEGER", value))?;
                if n.is_integer_literal() {
                    text.push_str(n.as_str());
                } else {
                    let f = n.as_f64();
                    if f.fract() != 0.0 {
                        return Err(invalid("INTEGER option with a fraction"));
                    }
                    let _ = write!(text, "{f}");
                }
            }
            BOOLEAN => {
                let b = value.as_bool().ok_or_else(|| wrong("BOOLEAN", value))?;
                text.push_str(if b { "true" } else { "false" });
            }
            NUMBER => {
                let n = value.as_number().ok_or_else(|| wrong("NUMBER", value))?;
                // An integer literal beyond f64 (over 309 digits) would
                // render `inf`: not a number anyone sent. (A fraction or
                // exponent beyond f64 is already invalid JSON.)
                let f = n.as_f64();
                if !f.is_finite() {
                    return Err(invalid("NUMBER option out of range"));
                }
                // Display of f64 is the shortest decimal that round-trips,
                // never in exponent form (1e21 → 1000000000000000000000).
                let _ = write!(text, "{f}");
            }
            USER | CHANNEL | ROLE | MENTIONABLE | ATTACHMENT => {
                let id = value.as_str().ok_or_else(|| wrong("id", value))?;
                match kind {
                    USER => push_mention(text, "<@", id),
                    CHANNEL => push_mention(text, "<#", id),
                    ROLE => push_mention(text, "<@&", id),
                    MENTIONABLE => push_mentionable(text, self.resolved, id),
                    _ => text.push_str(attachment_url(self.resolved, id)),
                }
            }
            _ => return Err(invalid(format!("unknown option type {kind}"))),
        }
        Ok(())
    }
}

fn wrong(what: &str, value: &Value<'_>) -> ConvertError {
    invalid(format!(
        "{what} option value must not be {}",
        value.type_name()
    ))
}

fn push_mention(text: &mut String, open: &str, id: &str) {
    text.push_str(open);
    text.push_str(id);
    text.push('>');
}

/// A role mention if `resolved.roles` knows the id, else a user mention.
fn push_mentionable(text: &mut String, resolved: Option<&Value<'_>>, id: &str) {
    let is_role = resolved
        .and_then(|r| r.get_present("roles"))
        .and_then(|r| r.get_present(id))
        .is_some();
    push_mention(text, if is_role { "<@&" } else { "<@" }, id);
}

/// `resolved.attachments[id].url`, else the id.
fn attachment_url<'v>(resolved: Option<&'v Value<'_>>, id: &'v str) -> &'v str {
    resolved
        .and_then(|r| r.get_present("attachments"))
        .and_then(|a| a.get_present(id))
        .and_then(|a| a.get("url"))
        .and_then(Value::as_str)
        .unwrap_or(id)
}

/// Render a select's values comma-joined, each as its select type says.
fn push_select_values(
    text: &mut String,
    kind: i64,
    values: &[Value<'_>],
    resolved: Option<&Value<'_>>,
) -> Result<(), ConvertError> {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let v = value
            .as_str()
            .ok_or_else(|| invalid("select values must be strings"))?;
        match kind {
            USER_SELECT => push_mention(text, "<@", v),
            ROLE_SELECT => push_mention(text, "<@&", v),
            MENTIONABLE_SELECT => push_mentionable(text, resolved, v),
            CHANNEL_SELECT => push_mention(text, "<#", v),
            FILE_UPLOAD => text.push_str(attachment_url(resolved, v)),
            _ => text.push_str(v),
        }
    }
    Ok(())
}

/// MESSAGE_COMPONENT data; `message` is the message the component sits on.
pub fn component(data: &Value<'_>, message: Option<&Value<'_>>) -> Result<Content, ConvertError> {
    let (custom_id, kind) = match (
        data.str_field("custom_id"),
        data.int_field("component_type"),
    ) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(earliest([c.err(), k.err()])),
    };
    let source_message_id = message
        .map(|m| m.opt_str_field("id"))
        .transpose()?
        .flatten();
    if let Some((prompt_id, option_id)) = prompt_token(custom_id) {
        let mut text = String::with_capacity(option_id.len() + 1);
        text.push('/');
        text.push_str(option_id);
        return Ok(Content {
            text,
            message_type: MessageType::Command,
            reply_to_message_id: None,
            prompt_response: Some(PromptResponse {
                prompt_id: prompt_id.to_owned(),
                option_id: option_id.to_owned(),
                label: None,
                prompt_message_id: source_message_id.map(str::to_owned),
            }),
        });
    }

    let mut text = String::with_capacity(custom_id.len() + 32);
    text.push_str(custom_id);
    if matches!(
        kind,
        STRING_SELECT | USER_SELECT | ROLE_SELECT | MENTIONABLE_SELECT | CHANNEL_SELECT
    ) {
        text.push_str(" values:");
        let values = data.opt_array_field("values")?.unwrap_or_default();
        push_select_values(&mut text, kind, values, data.get_present("resolved"))?;
    }
    Ok(Content {
        text,
        message_type: MessageType::Text,
        reply_to_message_id: None,
        prompt_response: None,
    })
}

/// `hp1:<prompt_id>:<option_id>`, exactly three parts, both ids
/// `[A-Za-z0-9_.-]{1,32}`.
pub fn prompt_token(custom_id: &str) -> Option<(&str, &str)> {
    let rest = custom_id.strip_prefix("hp1:")?;
    let (prompt_id, option_id) = rest.split_once(':')?;
    let valid = |id: &str| {
        (1..=32).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    (valid(prompt_id) && valid(option_id)).then_some((prompt_id, option_id))
}

/// MODAL_SUBMIT data: the custom id, then ` field:value` per interactive field.
pub fn modal(data: &Value<'_>) -> Result<Content, ConvertError> {
    let (custom_id, components) = match (
        data.str_field("custom_id"),
        data.opt_array_field("components"),
    ) {
        (Ok(c), Ok(k)) => (c, k.unwrap_or_default()),
        (c, k) => return Err(earliest([c.err(), k.err()])),
    };
    let resolved = data.get_present("resolved");
    let mut text = String::with_capacity(custom_id.len() + 64);
    text.push_str(custom_id);
    let mut faults = Faults::default();
    for item in components {
        match kind_of(item) {
            Some(ACTION_ROW) => match item.opt_array_field("components") {
                Ok(children) => {
                    for child in children.unwrap_or_default() {
                        modal_field(&mut text, child, resolved, &mut faults);
                    }
                }
                Err(e) => faults.add(e),
            },
            Some(LABEL) => match item.opt_object_field("component") {
                Ok(Some(child)) => modal_field(&mut text, child, resolved, &mut faults),
                Ok(None) => {}
                Err(e) => faults.add(e),
            },
            // A field outside any wrapper, or a non-interactive entry.
            _ => modal_field(&mut text, item, resolved, &mut faults),
        }
    }
    let text = faults.into_result(text)?;
    Ok(Content {
        text,
        message_type: MessageType::Text,
        reply_to_message_id: None,
        prompt_response: None,
    })
}

/// A component's `type`, when it has an integer one (components identify
/// themselves by it; anything else is an unknown component).
fn kind_of(component: &Value<'_>) -> Option<i64> {
    component
        .get("type")
        .and_then(Value::as_number)
        .and_then(|n| n.as_i64())
}

/// Append ` {custom_id}:{value}` for an interactive field; skip text
/// displays and unknown types silently.
fn modal_field(
    text: &mut String,
    field: &Value<'_>,
    resolved: Option<&Value<'_>>,
    faults: &mut Faults,
) {
    let kind = match kind_of(field) {
        Some(
            k @ (TEXT_INPUT | STRING_SELECT | USER_SELECT | ROLE_SELECT | MENTIONABLE_SELECT
            | CHANNEL_SELECT | FILE_UPLOAD | RADIO_GROUP | CHECKBOX_GROUP | CHECKBOX),
        ) => k,
        _ => return,
    };
    let custom_id = match field.str_field("custom_id") {
        Ok(id) => id,
        Err(e) => return faults.add(e),
    };
    text.push(' ');
    text.push_str(custom_id);
    text.push(':');
    let rendered = match kind {
        TEXT_INPUT | RADIO_GROUP => field
            .opt_str_field("value")
            .map(|v| text.push_str(v.unwrap_or(""))),
        CHECKBOX => match field.get_present("value") {
            None => Ok(()),
            Some(v) => v
                .as_bool()
                .map(|b| text.push_str(if b { "true" } else { "false" }))
                .ok_or_else(|| invalid("checkbox value must be a boolean")),
        },
        _ => field.opt_array_field("values").and_then(|values| {
            push_select_values(text, kind, values.unwrap_or_default(), resolved)
        }),
    };
    if let Err(e) = rendered {
        faults.add(e);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use hermes_converter_sdk::json;

    fn render(options: &str, named: bool) -> Result<String, ErrorKind> {
        let body = format!(r#"{{"name":"c","type":1,"options":{options}}}"#);
        let data = json::parse(&body).unwrap();
        command(&data, named).map(|c| c.text).map_err(|e| e.kind)
    }

    #[test]
    fn numbers_render_shortest_without_exponent() {
        for (literal, want) in [
            ("2.5", "2.5"),
            ("0.1", "0.1"),
            ("-3.0", "-3"),
            ("1e21", "1000000000000000000000"),
            ("1e-7", "0.0000001"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("7", "7"),
        ] {
            let got = render(
                &format!(r#"[{{"name":"n","type":10,"value":{literal}}}]"#),
                false,
            )
            .unwrap();
            assert_eq!(got, format!("/c {want}"), "NUMBER {literal}");
        }
    }

    #[test]
    fn numbers_beyond_f64_are_invalid_not_inf() {
        let number = |literal: &str| {
            render(
                &format!(r#"[{{"name":"n","type":10,"value":{literal}}}]"#),
                false,
            )
        };
        // f64::MAX is about 1.8e308: 309 nines are past it.
        for digits in [309, 310, 400] {
            let nines = "9".repeat(digits);
            assert_eq!(
                number(&nines),
                Err(ErrorKind::InvalidField),
                "{digits} digits"
            );
            assert_eq!(
                number(&format!("-{nines}")),
                Err(ErrorKind::InvalidField),
                "-{digits} digits"
            );
        }
        let fits = number(&"9".repeat(308)).unwrap();
        assert!(fits.starts_with("/c 1") && !fits.contains("inf"), "{fits}");
    }

    #[test]
    fn a_missing_target_outranks_an_invalid_name() {
        let kind = |data: &str| {
            command(&json::parse(data).unwrap(), false)
                .err()
                .map(|e| e.kind)
        };
        assert_eq!(
            kind(r#"{"name":5,"type":2}"#),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(
            kind(r#"{"name":5,"type":3}"#),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(
            kind(r#"{"name":5,"type":2,"target_id":"1"}"#),
            Some(ErrorKind::InvalidField)
        );
        // Chat input: an option without a value, behind an invalid name.
        assert_eq!(
            kind(r#"{"name":5,"options":[{"name":"x","type":3}]}"#),
            Some(ErrorKind::MissingField)
        );
        // An invalid name outranks an unsupported command type.
        assert_eq!(
            kind(r#"{"name":5,"type":4}"#),
            Some(ErrorKind::InvalidField)
        );
    }

    #[test]
    fn integers_are_decimal_as_given() {
        let got = render(
            r#"[{"name":"n","type":4,"value":123456789012345678901234}]"#,
            true,
        )
        .unwrap();
        assert_eq!(got, "/c n:123456789012345678901234");
        assert_eq!(
            render(r#"[{"name":"n","type":4,"value":1.5}]"#, false),
            Err(ErrorKind::InvalidField)
        );
        assert_eq!(
            render(r#"[{"name":"n","type":4,"value":"1"}]"#, false),
            Err(ErrorKind::InvalidField)
        );
    }

    #[test]
    fn string_option_limit_counts_characters_not_bytes() {
        let at_limit = "é".repeat(MAX_STRING_OPTION_CHARS);
        let ok = render(
            &format!(r#"[{{"name":"s","type":3,"value":"{at_limit}"}}]"#),
            false,
        )
        .unwrap();
        assert_eq!(ok.chars().count(), MAX_STRING_OPTION_CHARS + 3);
        let over = "a".repeat(MAX_STRING_OPTION_CHARS + 1);
        assert_eq!(
            render(
                &format!(r#"[{{"name":"s","type":3,"value":"{over}"}}]"#),
                false
            ),
            Err(ErrorKind::InvalidField)
        );
    }

    #[test]
    fn empty_strings_keep_their_space() {
        let got = render(
            r#"[{"name":"a","type":3,"value":""},{"name":"b","type":3,"value":"x"}]"#,
            false,
        )
        .unwrap();
        assert_eq!(got, "/c  x");
    }

    #[test]
    fn nesting_rules() {
        let group_sub_leaf = r#"[{"name":"g","type":2,"options":[{"name":"s","type":1,"options":[{"name":"x","type":5,"value":true}]}]}]"#;
        assert_eq!(render(group_sub_leaf, true).unwrap(), "/c g s x:true");
        let sub_in_sub = r#"[{"name":"s","type":1,"options":[{"name":"t","type":1}]}]"#;
        assert_eq!(render(sub_in_sub, false), Err(ErrorKind::InvalidField));
        let leaf_in_group =
            r#"[{"name":"g","type":2,"options":[{"name":"x","type":5,"value":true}]}]"#;
        assert_eq!(render(leaf_in_group, false), Err(ErrorKind::InvalidField));
        // A missing field outranks a wrong type found earlier in the walk.
        let both = r#"[{"name":"a","type":3,"value":5},{"name":"b","value":"x"}]"#;
        assert_eq!(render(both, false), Err(ErrorKind::MissingField));
    }

    #[test]
    fn prompt_tokens() {
        assert_eq!(
            prompt_token("hp1:deploy_42:approve"),
            Some(("deploy_42", "approve"))
        );
        assert_eq!(prompt_token("hp1:a.b-c:D_9"), Some(("a.b-c", "D_9")));
        for near_miss in [
            "hp1:deploy_42:approve:now",
            "hp1::approve",
            "hp1:a:",
            "hp2:a:b",
            "hp1:a b:c",
            "hp1:a:b/",
            &format!("hp1:{}:b", "x".repeat(33)),
        ] {
            assert_eq!(prompt_token(near_miss), None, "{near_miss}");
        }
        assert!(prompt_token(&format!("hp1:{}:b", "x".repeat(32))).is_some());
    }
}
