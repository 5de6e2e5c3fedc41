//! Session keys (relay-contract §5.3).
//!
//! The key decides which conversation an event belongs to. It must equal the
//! key the Python gateway computes, byte for byte, because the connector binds
//! `follow_up` capabilities and routes interrupts by it.

use std::fmt;

use crate::event::SessionSource;

/// The two settings that shape group and thread keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeySettings {
    /// In groups, each participant gets their own session (default true).
    pub group_sessions_per_user: bool,
    /// In threads, each participant gets their own session (default false:
    /// a thread is shared by everyone in it).
    pub thread_sessions_per_user: bool,
}

impl Default for SessionKeySettings {
    fn default() -> Self {
        Self {
            group_sessions_per_user: true,
            thread_sessions_per_user: false,
        }
    }
}

/// A session key such as `agent:main:discord:group:<chat>:<user>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(String);

impl SessionKey {
    /// Wrap a key received from the wire (e.g. `interrupt_inbound`).
    pub fn from_wire(key: String) -> Self {
        Self(key)
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SessionKey> for String {
    fn from(k: SessionKey) -> Self {
        k.0
    }
}

/// `Some(s)` when the option holds a non-empty string ("set", in the
/// Python gateway's truthiness sense).
fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// The namespace part: `agent:main`, `agent:<profile>`, or `agent:main~` for
/// a profile literally named `main` (so it cannot collide with the default).
fn namespace(profile: Option<&str>) -> String {
    match profile {
        None | Some("" | "default") => "agent:main".to_owned(),
        Some("main") => "agent:main~".to_owned(),
        Some(p) => format!("agent:{p}"),
    }
}

/// Compute the session key of `source`.
///
/// `profile` is the explicit target profile (e.g. from a passthrough
/// forward); when `None`, the source's own `profile` field is used.
pub fn session_key(
    source: &SessionSource,
    profile: Option<&str>,
    settings: &SessionKeySettings,
) -> SessionKey {
    let profile = profile.or(source.profile.as_deref());
    let mut key = namespace(profile);
    let platform = source.platform.as_str();
    let participant = set(&source.user_id_alt).or(set(&source.user_id));
    let thread = set(&source.thread_id);
    let mut push = |part: &str| {
        key.push(':');
        key.push_str(part);
    };

    if source.chat_type == "dm" {
        push(platform);
        push("dm");
        if !source.chat_id.is_empty() {
            push(&source.chat_id);
            if let Some(t) = thread {
                push(t);
            }
        } else if let Some(p) = participant {
            push(p);
            if let Some(t) = thread {
                push(t);
            }
        } else if let Some(t) = thread {
            push(t);
        }
        return SessionKey(key);
    }

    push(platform);
    push(&source.chat_type);
    if platform == "slack"
        && let Some(scope) = set(&source.scope_id)
    {
        push(scope);
    }
    if !source.chat_id.is_empty() {
        push(&source.chat_id);
    }
    if let Some(t) = thread {
        push(t);
    }
    // A thread is shared by everyone in it unless per-user thread sessions
    // are asked for.
    let per_user = if thread.is_some() {
        settings.group_sessions_per_user && settings.thread_sessions_per_user
    } else {
        settings.group_sessions_per_user
    };
    if per_user && let Some(p) = participant {
        push(p);
    }
    SessionKey(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(
        chat_type: &str,
        chat_id: &str,
        user: Option<&str>,
        thread: Option<&str>,
    ) -> SessionSource {
        SessionSource {
            platform: "discord".into(),
            chat_type: chat_type.into(),
            chat_id: chat_id.into(),
            user_id: user.map(Into::into),
            thread_id: thread.map(Into::into),
            ..SessionSource::default()
        }
    }

    #[test]
    fn explicit_profile_wins_over_source_profile() {
        let mut s = src("group", "c", Some("u"), None);
        s.profile = Some("coder".into());
        let k = session_key(&s, Some("writer"), &SessionKeySettings::default());
        assert_eq!(k.as_str(), "agent:writer:discord:group:c:u");
        let k = session_key(&s, None, &SessionKeySettings::default());
        assert_eq!(k.as_str(), "agent:coder:discord:group:c:u");
        let k = session_key(&s, Some(""), &SessionKeySettings::default());
        assert_eq!(k.as_str(), "agent:main:discord:group:c:u");
    }

    #[test]
    fn dm_with_participant_and_thread() {
        let k = session_key(
            &src("dm", "", Some("u"), Some("t")),
            None,
            &SessionKeySettings::default(),
        );
        assert_eq!(k.as_str(), "agent:main:discord:dm:u:t");
        let k = session_key(
            &src("dm", "c", Some("u"), Some("t")),
            None,
            &SessionKeySettings::default(),
        );
        assert_eq!(k.as_str(), "agent:main:discord:dm:c:t");
    }

    #[test]
    fn scope_is_only_part_of_slack_keys() {
        let mut s = src("group", "c", None, None);
        s.scope_id = Some("g".into());
        assert_eq!(
            session_key(&s, None, &SessionKeySettings::default()).as_str(),
            "agent:main:discord:group:c"
        );
        s.platform = "slack".into();
        assert_eq!(
            session_key(&s, None, &SessionKeySettings::default()).as_str(),
            "agent:main:slack:group:g:c"
        );
    }

    #[test]
    fn empty_thread_id_is_not_a_thread() {
        let k = session_key(
            &src("group", "c", Some("u"), Some("")),
            None,
            &SessionKeySettings::default(),
        );
        assert_eq!(k.as_str(), "agent:main:discord:group:c:u");
    }
}
