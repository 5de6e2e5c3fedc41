//! Slack slash commands and interactivity (`block_actions`,
//! `view_submission`).

use hermes_converter_sdk::form::{self, Form};
use hermes_converter_sdk::json::{self, Value};
use hermes_converter_sdk::{
    ChatType, ConvertError, ErrorKind, MessageEvent, MessageType, Outcome, ReplyRoute, Request,
    Source,
};

/// The media type Slack posts.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// The capability the host answers through.
pub const REPLY_KIND: &str = "slack.response_url";

/// Convert one request.
pub fn convert(req: &Request) -> Result<Outcome, ConvertError> {
    req.body_text(FORM)?;
    let form = form::parse(&req.body)?;
    // `payload` is checked before `ssl_check`: a request with both is
    // interactivity (and must then be valid interactivity).
    if let Some(payload) = form.get("payload") {
        return interactivity(payload);
    }
    if form.get("ssl_check") == Some("1") {
        return Ok(Outcome::ignored("ssl_check"));
    }
    slash_command(&form)
}

/// The tenant key: the team id.
pub fn tenant_of(req: &Request) -> Option<String> {
    let form = form::parse(&req.body).ok()?;
    if let Some(payload) = form.get("payload") {
        let root = json::parse(payload).ok()?;
        return team_of(&root).ok().flatten().map(str::to_owned);
    }
    form.get("team_id").map(str::to_owned)
}

fn missing(key: &str) -> ConvertError {
    ConvertError::new(ErrorKind::MissingField, format!("missing field `{key}`"))
}

fn earliest<const N: usize>(faults: [Option<ConvertError>; N]) -> ConvertError {
    ConvertError::earliest(faults.into_iter().flatten())
        .unwrap_or_else(|| ConvertError::new(ErrorKind::InvalidField, "invalid request"))
}

/// `D…` is a DM, `C…` and `G…` a channel or private group; nothing else is a
/// Slack conversation id.
fn chat_type_of(channel_id: &str) -> Result<ChatType, ConvertError> {
    match channel_id.as_bytes().first() {
        Some(b'D') => Ok(ChatType::Dm),
        Some(b'C' | b'G') => Ok(ChatType::Group),
        _ => Err(ConvertError::new(
            ErrorKind::InvalidField,
            "channel id must start with C, D or G",
        )),
    }
}

fn event(text: String, message_type: MessageType, source: Source) -> Outcome {
    let mut event = MessageEvent::new(text, source, ReplyRoute::FollowUp(REPLY_KIND.to_owned()));
    event.message_type = message_type;
    event.message_id = event.source.message_id.clone();
    Outcome::event(event)
}

fn slash_command(form: &Form<'_>) -> Result<Outcome, ConvertError> {
    let required = |key: &str| form.get(key).ok_or_else(|| missing(key));
    let (command, channel_id, user_id) = match (
        required("command"),
        required("channel_id"),
        required("user_id"),
    ) {
        (Ok(c), Ok(ch), Ok(u)) => (c, ch, u),
        (c, ch, u) => return Err(earliest([c.err(), ch.err(), u.err()])),
    };
    let chat_type = chat_type_of(channel_id)?;
    let mut text = String::with_capacity(command.len() + 1 + form.get("text").map_or(0, str::len));
    text.push_str(command);
    if let Some(args) = form.get("text").filter(|t| !t.is_empty()) {
        text.push(' ');
        text.push_str(args);
    }
    let source = Source {
        platform: "slack".to_owned(),
        chat_id: channel_id.to_owned(),
        chat_type,
        user_id: Some(user_id.to_owned()),
        user_name: form.get("user_name").map(str::to_owned),
        scope_id: form.get("team_id").map(str::to_owned),
        message_id: form.get("trigger_id").map(str::to_owned),
        ..Source::default()
    };
    // `response_url` is a capability: the connector vaults it and answers a
    // `follow_up` of kind `slack.response_url`. It never travels further.
    Ok(event(text, MessageType::Command, source))
}

/// `team_id`, `team.id`, else `user.team_id`.
fn team_of<'v>(root: &'v Value<'_>) -> Result<Option<&'v str>, ConvertError> {
    if let Some(team) = root.opt_str_field("team_id")? {
        return Ok(Some(team));
    }
    if let Some(team) = root
        .opt_object_field("team")?
        .map(|t| t.opt_str_field("id"))
        .transpose()?
        .flatten()
    {
        return Ok(Some(team));
    }
    Ok(root
        .opt_object_field("user")?
        .map(|u| u.opt_str_field("team_id"))
        .transpose()?
        .flatten())
}

/// The acting user: id, and `username` else `name`.
fn user_of<'v>(root: &'v Value<'_>) -> Result<(&'v str, Option<&'v str>), ConvertError> {
    let user = root.object_field("user")?;
    let id = user.str_field("id")?;
    let name = match user.opt_str_field("username")? {
        Some(name) => Some(name),
        None => user.opt_str_field("name")?,
    };
    Ok((id, name))
}

fn interactivity(payload: &str) -> Result<Outcome, ConvertError> {
    let root = json::parse(payload)?;
    if root.as_object().is_none() {
        return Err(ConvertError::new(
            ErrorKind::InvalidField,
            "payload is not a JSON object",
        ));
    }
    let kind = root.str_field("type");
    // The type's own part is evaluated even when a common field is faulty,
    // so that a missing field there is not hidden behind an invalid one
    // here (the spec's order: missing_field before invalid_field).
    let part = match kind.as_deref() {
        Ok("block_actions") => block_actions(&root),
        Ok("view_submission") => view_submission(&root),
        Ok(other) => Err(ConvertError::new(
            ErrorKind::UnsupportedType,
            format!("interactivity type {other:?} is not converted"),
        )),
        // Reported through `kind` below.
        Err(_) => Err(ConvertError::new(ErrorKind::UnsupportedType, "no type")),
    };
    let (user, team, trigger, part) = match (
        kind,
        user_of(&root),
        team_of(&root),
        root.opt_str_field("trigger_id"),
        part,
    ) {
        (Ok(_), Ok(u), Ok(t), Ok(tr), Ok(p)) => (u, t, tr, p),
        (k, u, t, tr, p) => {
            return Err(earliest([k.err(), u.err(), t.err(), tr.err(), p.err()]));
        }
    };
    let (user_id, user_name) = user;
    let mut source = Source {
        platform: "slack".to_owned(),
        user_id: Some(user_id.to_owned()),
        user_name: user_name.map(str::to_owned),
        scope_id: team.map(str::to_owned),
        message_id: trigger.map(str::to_owned),
        ..Source::default()
    };
    match part.chat {
        Some(chat) => {
            source.chat_id = chat.id.to_owned();
            source.chat_type = chat.chat_type;
            source.thread_id = chat.thread_ts.map(str::to_owned);
        }
        // A modal (and an action inside one) has no channel: the
        // conversation is with the user.
        None => {
            source.chat_id = user_id.to_owned();
            source.chat_type = ChatType::Dm;
        }
    }
    // `response_url` is a capability the connector vaults (reply route
    // `slack.response_url`); it never reaches the event.
    Ok(event(part.text, MessageType::Text, source))
}

/// What an interactivity type renders to, before the user is attached.
struct Part<'v> {
    text: String,
    /// The channel, when the payload has one.
    chat: Option<Chat<'v>>,
}

struct Chat<'v> {
    id: &'v str,
    chat_type: ChatType,
    thread_ts: Option<&'v str>,
}

fn block_actions<'v>(root: &'v Value<'_>) -> Result<Part<'v>, ConvertError> {
    // Independent parts, all evaluated; the earliest fault wins.
    let action = root
        .opt_array_field("actions")
        .and_then(|a| a.and_then(<[_]>::first).ok_or_else(|| missing("actions")))
        .and_then(action_text);
    let channel = channel_of(root);
    let thread_ts = root
        .opt_object_field("message")
        .and_then(|m| m.map(|m| m.opt_str_field("thread_ts")).transpose())
        .map(Option::flatten);
    let (text, channel, thread_ts) = match (action, channel, thread_ts) {
        (Ok(a), Ok(c), Ok(t)) => (a, c, t),
        (a, c, t) => return Err(earliest([a.err(), c.err(), t.err()])),
    };
    let chat = channel.map(|(id, chat_type)| match thread_ts {
        Some(ts) => Chat {
            id,
            chat_type: ChatType::Thread,
            thread_ts: Some(ts),
        },
        None => Chat {
            id,
            chat_type,
            thread_ts: None,
        },
    });
    Ok(Part { text, chat })
}

/// `channel.id`, else `container.channel_id`, with its chat type.
fn channel_of<'v>(root: &'v Value<'_>) -> Result<Option<(&'v str, ChatType)>, ConvertError> {
    let id = match root
        .opt_object_field("channel")?
        .map(|c| c.opt_str_field("id"))
        .transpose()?
        .flatten()
    {
        Some(id) => Some(id),
        None => root
            .opt_object_field("container")?
            .map(|c| c.opt_str_field("channel_id"))
            .transpose()?
            .flatten(),
    };
    id.map(|id| chat_type_of(id).map(|t| (id, t))).transpose()
}

/// The first action's text. (`block_id` is read for its type check only.)
fn action_text(action: &Value<'_>) -> Result<String, ConvertError> {
    let (action_id, _block_id, kind) = match (
        action.str_field("action_id"),
        action.opt_str_field("block_id"),
        action.opt_str_field("type"),
    ) {
        (Ok(a), Ok(b), Ok(k)) => (a, b, k),
        (a, b, k) => return Err(earliest([a.err(), b.err(), k.err()])),
    };
    let mut text = String::with_capacity(action_id.len() + 32);
    text.push_str(action_id);
    if kind == Some("button") {
        text.push_str(" value:");
        text.push_str(action.opt_str_field("value")?.unwrap_or(""));
    } else {
        text.push_str(" values:");
        push_selection(&mut text, action)?;
    }
    Ok(text)
}

fn view_submission<'v>(root: &'v Value<'_>) -> Result<Part<'v>, ConvertError> {
    let view = root.object_field("view")?;
    // `view.id` is read for its type check only.
    let (callback_id, _view_id, values) = match (
        view.str_field("callback_id"),
        view.opt_str_field("id"),
        view.opt_object_field("state")
            .and_then(|s| s.map(|s| s.opt_object_field("values")).transpose())
            .map(Option::flatten),
    ) {
        (Ok(c), Ok(i), Ok(v)) => (c, i, v),
        (c, i, v) => return Err(earliest([c.err(), i.err(), v.err()])),
    };
    // JSON object order means nothing: sort by (block_id, action_id).
    let mut entries: Vec<(&str, &str, &Value<'_>)> = Vec::new();
    for (block_id, block) in values
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|o| o.iter())
    {
        let block = block.as_object().ok_or_else(|| {
            ConvertError::new(
                ErrorKind::InvalidField,
                "view.state.values entries must be objects",
            )
        })?;
        entries.extend(
            block
                .iter()
                .map(|(action_id, state)| (block_id, action_id, state)),
        );
    }
    entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut text = String::with_capacity(callback_id.len() + 64);
    text.push_str(callback_id);
    for (_, action_id, state) in entries {
        text.push(' ');
        text.push_str(action_id);
        text.push(':');
        push_selection(&mut text, state)?;
    }
    Ok(Part { text, chat: None })
}

/// An option object's `value`.
fn option_value<'v>(option: &'v Value<'_>) -> Result<&'v str, ConvertError> {
    option.opt_str_field("value").map(Option::unwrap_or_default)
}

/// The value(s) an input or select holds, comma-joined; nothing when unset.
fn push_selection(text: &mut String, state: &Value<'_>) -> Result<(), ConvertError> {
    if state.as_object().is_none() {
        return Err(ConvertError::new(
            ErrorKind::InvalidField,
            "action state must be an object",
        ));
    }
    if let Some(option) = state.opt_object_field("selected_option")? {
        text.push_str(option_value(option)?);
        return Ok(());
    }
    if let Some(options) = state.opt_array_field("selected_options")? {
        for (i, option) in options.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(option_value(option)?);
        }
        return Ok(());
    }
    for key in [
        "selected_users",
        "selected_conversations",
        "selected_channels",
    ] {
        if let Some(ids) = state.opt_array_field(key)? {
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(id.as_str().ok_or_else(|| {
                    ConvertError::new(
                        ErrorKind::InvalidField,
                        format!("`{key}` must hold strings"),
                    )
                })?);
            }
            return Ok(());
        }
    }
    for key in [
        "value",
        "selected_user",
        "selected_conversation",
        "selected_channel",
        "selected_date",
        "selected_time",
    ] {
        if let Some(value) = state.opt_str_field(key)? {
            text.push_str(value);
            return Ok(());
        }
    }
    if let Some(n) = state
        .get_present("selected_date_time")
        .and_then(Value::as_number)
    {
        text.push_str(n.as_str());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    fn request(body: &str) -> Request {
        Request {
            platform: "slack".into(),
            headers: vec![("content-type".into(), FORM.into())],
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    fn interactive(payload: &str) -> Result<Outcome, ConvertError> {
        let encoded: String = payload
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        convert(&request(&format!("payload={encoded}")))
    }

    fn text_of(outcome: Result<Outcome, ConvertError>) -> String {
        match outcome.unwrap() {
            Outcome::Events(events) => events[0].text.clone(),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    const USER: &str = r#""user":{"id":"U1","name":"n"},"team":{"id":"T1"}"#;

    #[test]
    fn multi_select_values_in_payload_order() {
        let payload = format!(
            r#"{{"type":"block_actions",{USER},"channel":{{"id":"G1"}},"actions":[{{"type":"multi_static_select","action_id":"m","selected_options":[{{"value":"b"}},{{"value":"a"}}]}}]}}"#
        );
        assert_eq!(text_of(interactive(&payload)), "m values:b,a");
    }

    #[test]
    fn action_in_a_modal_is_a_dm_with_the_user() {
        let payload = format!(
            r#"{{"type":"block_actions",{USER},"container":{{"type":"view"}},"actions":[{{"type":"button","action_id":"b"}}]}}"#
        );
        match interactive(&payload).unwrap() {
            Outcome::Events(events) => {
                assert_eq!(events[0].text, "b value:");
                assert_eq!(
                    (
                        events[0].source.chat_id.as_str(),
                        events[0].source.chat_type
                    ),
                    ("U1", ChatType::Dm)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn view_submission_sorts_by_block_then_action() {
        let payload = format!(
            r#"{{"type":"view_submission",{USER},"view":{{"callback_id":"cb","state":{{"values":{{"b2":{{"z":{{"value":"1"}},"a":{{"selected_users":["U2","U3"]}}}},"b1":{{"y":{{"value":null}}}}}}}}}}}}"#
        );
        assert_eq!(text_of(interactive(&payload)), "cb y: a:U2,U3 z:1");
    }

    #[test]
    fn faults_in_spec_order() {
        let kind = |payload: &str| interactive(payload).err().map(|e| e.kind);
        assert_eq!(
            kind(r#"{"type":"shortcut","user":{"id":"U1"}}"#),
            Some(ErrorKind::UnsupportedType)
        );
        assert_eq!(
            kind(r#"{"type":"shortcut"}"#),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(
            kind(r#"{"type":5,"user":{}}"#),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(
            kind(r#"{"type":"block_actions","user":{"id":"U1"}}"#),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(kind(r#"[1]"#), Some(ErrorKind::InvalidField));
        assert_eq!(
            kind(r#"{"type":"x","type":"y"}"#),
            Some(ErrorKind::InvalidJson)
        );
    }

    #[test]
    fn a_missing_field_is_not_hidden_behind_an_earlier_invalid_one() {
        let kind = |payload: &str| interactive(payload).err().map(|e| e.kind);
        // A common field of the wrong type, and the type's own part missing.
        assert_eq!(
            kind(r#"{"type":"block_actions","user":{"id":"U1"},"team_id":5}"#),
            Some(ErrorKind::MissingField),
            "no actions"
        );
        assert_eq!(
            kind(r#"{"type":"view_submission","user":{"id":"U1"},"trigger_id":5}"#),
            Some(ErrorKind::MissingField),
            "no view"
        );
        // Within block_actions: a bad channel and an action without its id.
        assert_eq!(
            kind(
                r#"{"type":"block_actions","user":{"id":"U1"},"channel":{"id":"X1"},"actions":[{"type":"button"}]}"#
            ),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(
            kind(
                r#"{"type":"block_actions","user":{"id":"U1"},"actions":[{"block_id":5,"type":"button"}]}"#
            ),
            Some(ErrorKind::MissingField),
            "block_id invalid, action_id missing"
        );
        // Within view_submission: a bad view id and no callback id.
        assert_eq!(
            kind(r#"{"type":"view_submission","user":{"id":"U1"},"view":{"id":5}}"#),
            Some(ErrorKind::MissingField)
        );
        // Only invalid fields: invalid.
        assert_eq!(
            kind(
                r#"{"type":"block_actions","user":{"id":"U1"},"team_id":5,"actions":[{"action_id":"a"}]}"#
            ),
            Some(ErrorKind::InvalidField)
        );
    }

    #[test]
    fn slash_command_without_text() {
        let body = "command=%2Fping&channel_id=D1&user_id=U1&text=&team_id=T9";
        assert_eq!(text_of(convert(&request(body))), "/ping");
        assert_eq!(tenant_of(&request(body)), Some("T9".into()));
        let bad_channel = "command=%2Fping&channel_id=X1&user_id=U1";
        assert_eq!(
            convert(&request(bad_channel)).err().map(|e| e.kind),
            Some(ErrorKind::InvalidField)
        );
    }
}
