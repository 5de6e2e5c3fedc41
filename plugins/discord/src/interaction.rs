//! The interaction envelope: checks in the spec's order, the outcome by
//! interaction type, and the event's source (user, channel, guild).

use hermes_converter_sdk::json::{self, Value};
use hermes_converter_sdk::{
    ChatType, ConvertError, ErrorKind, MessageEvent, MessageType, Outcome, PromptResponse,
    ReplyRoute, Request, Source,
};

use crate::text;

/// The capability the host answers interactions through.
pub const REPLY_KIND: &str = "discord.interaction_token";

/// Interaction types (Discord API).
const PING: i64 = 1;
const APPLICATION_COMMAND: i64 = 2;
const MESSAGE_COMPONENT: i64 = 3;
const AUTOCOMPLETE: i64 = 4;
const MODAL_SUBMIT: i64 = 5;

/// Channel types that are threads: announcement, public and private threads
/// (forum posts are public threads).
const THREAD_CHANNEL_TYPES: [i64; 3] = [10, 11, 12];
const DM_CHANNEL: i64 = 1;

/// What an interaction's data renders to, before the source is attached.
#[derive(Debug)]
pub struct Content {
    /// The message text.
    pub text: String,
    /// `command` or `text`.
    pub message_type: MessageType,
    /// The message a MESSAGE command targets.
    pub reply_to_message_id: Option<String>,
    /// Set when a button answers a gateway prompt.
    pub prompt_response: Option<PromptResponse>,
}

/// Convert one interaction request; `named` selects `name:value` rendering
/// of command options.
pub fn convert(req: &Request, named: bool) -> Result<Outcome, ConvertError> {
    let body = req.body_text("application/json")?;
    let root = json::parse(body)?;
    if root.as_object().is_none() {
        return Err(ConvertError::new(
            ErrorKind::InvalidField,
            "interaction is not a JSON object",
        ));
    }
    // `type` and `id` are required for every interaction type, PINGs included.
    let (kind, id) = match (type_field(&root, "type"), root.str_field("id")) {
        (Ok(kind), Ok(id)) => (kind, id),
        (kind, id) => return Err(earliest([kind.err(), id.err()])),
    };
    let Some(kind) = kind else {
        return Err(missing_type("type"));
    };
    match kind {
        PING => Ok(Outcome::ignored("ping")),
        // Focused values are raw user input: never type-check them.
        AUTOCOMPLETE => Ok(Outcome::ignored("autocomplete")),
        APPLICATION_COMMAND | MESSAGE_COMPONENT | MODAL_SUBMIT => event(&root, kind, id, named),
        other => Err(ConvertError::new(
            ErrorKind::UnsupportedType,
            format!("interaction type {other} is not converted"),
        )),
    }
}

/// An optional type-code member. An integer too large for `i64` is still
/// an integer, so a well-formed type no one converts (`unsupported_type`,
/// reported by the caller) rather than a value of the wrong type: it comes
/// back as `Err` of kind `UnsupportedType`, which every other fault outranks.
pub(crate) fn type_field(value: &Value<'_>, key: &str) -> Result<Option<i64>, ConvertError> {
    if let Some(n) = value.get_present(key).and_then(Value::as_number)
        && n.is_integer_literal()
        && n.as_i64().is_none()
    {
        return Err(ConvertError::new(
            ErrorKind::UnsupportedType,
            format!("`{key}` {} is not converted", n.as_str()),
        ));
    }
    value.opt_int_field(key)
}

fn missing_type(key: &str) -> ConvertError {
    ConvertError::new(ErrorKind::MissingField, format!("missing field `{key}`"))
}

/// The tenant key: the guild id, else (DMs) the channel id.
pub fn tenant_of(req: &Request) -> Option<String> {
    let body = std::str::from_utf8(&req.body).ok()?;
    let root = json::parse(body).ok()?;
    if let Ok(Some(guild)) = root.opt_str_field("guild_id") {
        return Some(guild.to_owned());
    }
    channel_id(&root).ok().map(str::to_owned)
}

fn event(root: &Value<'_>, kind: i64, id: &str, named: bool) -> Result<Outcome, ConvertError> {
    // Independent parts are all evaluated so that, when several are faulty,
    // the earliest error kind in the spec's order is the one reported.
    let user = user(root);
    let chat = chat(root);
    let guild = root.opt_str_field("guild_id");
    let content = root.object_field("data").and_then(|data| match kind {
        APPLICATION_COMMAND => text::command(data, named),
        MESSAGE_COMPONENT => text::component(data, root.get_present("message")),
        _ => text::modal(data),
    });
    let (user, chat, guild, content) = match (user, chat, guild, content) {
        (Ok(u), Ok(c), Ok(g), Ok(t)) => (u, c, g, t),
        (u, c, g, t) => return Err(earliest([u.err(), c.err(), g.err(), t.err()])),
    };

    let message_id = Some(id.to_owned());
    let source = Source {
        platform: "discord".to_owned(),
        chat_id: chat.id.to_owned(),
        chat_type: chat.chat_type,
        user_id: Some(user.id.to_owned()),
        user_name: user.name.map(str::to_owned),
        thread_id: chat.thread_id.map(str::to_owned),
        scope_id: guild.map(str::to_owned),
        parent_chat_id: chat.parent_id.map(str::to_owned),
        message_id: message_id.clone(),
        is_bot: user.is_bot,
        ..Source::default()
    };
    let mut event = MessageEvent::new(
        content.text,
        source,
        ReplyRoute::FollowUp(REPLY_KIND.to_owned()),
    );
    event.message_type = content.message_type;
    event.message_id = message_id;
    event.reply_to_message_id = content.reply_to_message_id;
    event.prompt_response = content.prompt_response;
    Ok(Outcome::event(event))
}

/// The invoking user.
struct User<'v> {
    id: &'v str,
    name: Option<&'v str>,
    is_bot: bool,
}

/// `member.user` in guilds, the top-level `user` elsewhere.
fn user<'v>(root: &'v Value<'_>) -> Result<User<'v>, ConvertError> {
    let member = root.opt_object_field("member")?;
    let user = match member {
        Some(member) => member.object_field("user")?,
        None => root.object_field("user")?,
    };
    let id = user.str_field("id")?;
    let nick = match member {
        Some(member) => member.opt_str_field("nick")?,
        None => None,
    };
    let global_name = user.opt_str_field("global_name")?;
    let username = user.opt_str_field("username")?;
    let name = [nick, global_name, username]
        .into_iter()
        .flatten()
        .find(|n| !n.is_empty());
    let is_bot = user.get("bot").and_then(Value::as_bool) == Some(true);
    Ok(User { id, name, is_bot })
}

/// Where the interaction happened.
struct Chat<'v> {
    id: &'v str,
    chat_type: ChatType,
    thread_id: Option<&'v str>,
    parent_id: Option<&'v str>,
}

/// The `channel` object's id when present, else `channel_id`.
fn channel_id<'v>(root: &'v Value<'_>) -> Result<&'v str, ConvertError> {
    match root
        .opt_object_field("channel")?
        .map(|c| c.opt_str_field("id"))
        .transpose()?
        .flatten()
    {
        Some(id) => Ok(id),
        None => root.str_field("channel_id"),
    }
}

fn chat<'v>(root: &'v Value<'_>) -> Result<Chat<'v>, ConvertError> {
    let id = channel_id(root)?;
    let channel = root.opt_object_field("channel")?;
    let channel_type = channel
        .map(|c| c.opt_int_field("type"))
        .transpose()?
        .flatten();
    let in_guild = root.get_present("guild_id").is_some();
    let chat = match channel_type {
        Some(t) if THREAD_CHANNEL_TYPES.contains(&t) => Chat {
            id,
            chat_type: ChatType::Thread,
            thread_id: Some(id),
            parent_id: channel
                .map(|c| c.opt_str_field("parent_id"))
                .transpose()?
                .flatten(),
        },
        Some(DM_CHANNEL) => Chat {
            id,
            chat_type: ChatType::Dm,
            thread_id: None,
            parent_id: None,
        },
        None if !in_guild => Chat {
            id,
            chat_type: ChatType::Dm,
            thread_id: None,
            parent_id: None,
        },
        // Group DMs (3) and every guild channel.
        _ => Chat {
            id,
            chat_type: ChatType::Group,
            thread_id: None,
            parent_id: None,
        },
    };
    Ok(chat)
}

/// The fault to report among several.
pub(crate) fn earliest<const N: usize>(faults: [Option<ConvertError>; N]) -> ConvertError {
    ConvertError::earliest(faults.into_iter().flatten())
        .unwrap_or_else(|| ConvertError::new(ErrorKind::InvalidField, "invalid interaction"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use hermes_converter_sdk::MAX_BODY_BYTES;

    fn request(body: &str) -> Request {
        Request {
            platform: "discord".into(),
            headers: vec![(
                "Content-Type".into(),
                "Application/JSON; charset=utf-8".into(),
            )],
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    const USER: &str = r#""user":{"id":"5","username":"u"}"#;

    fn source(fields: &str) -> Source {
        let body = format!(r#"{{"type":2,"id":"1",{fields},"data":{{"name":"c"}}}}"#);
        match convert(&request(&body), false).unwrap() {
            Outcome::Events(mut events) => events.remove(0).source,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn error_kind(body: &str) -> Option<ErrorKind> {
        convert(&request(body), false).err().map(|e| e.kind)
    }

    #[test]
    fn channel_shapes() {
        let dm = source(&format!(r#"{USER},"channel_id":"9""#));
        assert_eq!(
            (dm.chat_type, dm.chat_id.as_str(), dm.scope_id),
            (ChatType::Dm, "9", None)
        );
        let group_dm = source(&format!(r#"{USER},"channel":{{"id":"9","type":3}}"#));
        assert_eq!(group_dm.chat_type, ChatType::Group);
        let member = r#""member":{"nick":"","user":{"id":"5","global_name":"G","username":"u"}}"#;
        let guild = source(&format!(r#"{member},"guild_id":"7","channel_id":"9""#));
        assert_eq!(
            (guild.chat_type, guild.user_name.as_deref()),
            (ChatType::Group, Some("G"))
        );
        let thread = source(&format!(
            r#"{member},"guild_id":"7","channel_id":"3","channel":{{"id":"8","type":12,"parent_id":"3"}}"#
        ));
        assert_eq!(
            (
                thread.chat_type,
                thread.chat_id.as_str(),
                thread.thread_id.as_deref(),
                thread.parent_chat_id.as_deref()
            ),
            (ChatType::Thread, "8", Some("8"), Some("3"))
        );
    }

    #[test]
    fn faults_are_reported_in_spec_order() {
        // No user, and a command type we do not convert: missing wins.
        assert_eq!(
            error_kind(r#"{"type":2,"id":"1","channel_id":"9","data":{"name":"c","type":4}}"#),
            Some(ErrorKind::MissingField)
        );
        let with_user = format!(
            r#"{{"type":2,"id":"1",{USER},"channel_id":"9","data":{{"name":"c","type":4}}}}"#
        );
        assert_eq!(error_kind(&with_user), Some(ErrorKind::UnsupportedType));
        // An id as a number and a missing channel: missing wins.
        assert_eq!(
            error_kind(&format!(
                r#"{{"type":2,"id":"1","guild_id":7,{USER},"data":{{"name":"c"}}}}"#
            )),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(error_kind(r#"{"type":99}"#), Some(ErrorKind::MissingField));
        assert_eq!(
            error_kind(r#"{"type":99,"id":"1"}"#),
            Some(ErrorKind::UnsupportedType)
        );
        assert_eq!(
            error_kind(r#"{"type":"2","id":"1"}"#),
            Some(ErrorKind::InvalidField)
        );
        assert_eq!(error_kind("[]"), Some(ErrorKind::InvalidField));
    }

    #[test]
    fn a_type_beyond_i64_is_unsupported_not_invalid() {
        let huge = "99999999999999999999999";
        assert_eq!(
            error_kind(&format!(r#"{{"type":{huge},"id":"1"}}"#)),
            Some(ErrorKind::UnsupportedType)
        );
        assert_eq!(
            error_kind(&format!(r#"{{"type":-{huge},"id":"1"}}"#)),
            Some(ErrorKind::UnsupportedType)
        );
        // Still outranked by a missing field, and a fraction is invalid.
        assert_eq!(
            error_kind(&format!(r#"{{"type":{huge}}}"#)),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(
            error_kind(r#"{"type":2.5,"id":"1"}"#),
            Some(ErrorKind::InvalidField)
        );
        // A command `data.type` beyond i64 too.
        let body = format!(
            r#"{{"type":2,"id":"1",{USER},"channel_id":"9","data":{{"name":"c","type":{huge}}}}}"#
        );
        assert_eq!(error_kind(&body), Some(ErrorKind::UnsupportedType));
    }

    #[test]
    fn body_size_limit_is_inclusive() {
        let ping = r#"{"type":1,"id":"1"}"#;
        let exactly = format!("{ping}{}", " ".repeat(MAX_BODY_BYTES - ping.len()));
        assert_eq!(
            convert(&request(&exactly), false).unwrap(),
            Outcome::ignored("ping")
        );
        let over = format!("{exactly} ");
        assert_eq!(error_kind(&over), Some(ErrorKind::PayloadTooLarge));
    }

    #[test]
    fn tenant_is_the_guild_else_the_channel() {
        let guild = r#"{"type":2,"id":"1","guild_id":"7","channel":{"id":"9","guild_id":"x"}}"#;
        assert_eq!(tenant_of(&request(guild)), Some("7".into()));
        assert_eq!(
            tenant_of(&request(r#"{"channel_id":"9"}"#)),
            Some("9".into())
        );
        assert_eq!(tenant_of(&request("{")), None);
    }
}
