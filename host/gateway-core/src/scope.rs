//! Scope capture and re-attachment (relay-contract §5.6).
//!
//! The connector decides which tenant owns a reply from the outbound action's
//! metadata. A **reply to an event** carries that event's own scope
//! (`scope_id`, legacy `guild_id`) and author, captured when the event was
//! accepted ([`ChatScope::of`], [`ChatScope::attach`]): two tenants can share
//! a `chat_id` (one phone number texting two tenants' numbers), and a
//! per-chat memory would send one tenant's reply under the other's scope.
//!
//! The per-chat memory ([`ScopeCache`]) serves only actions with no
//! originating event (clearing a typing indicator after an interrupt). It is
//! keyed by platform **and** `chat_id`, so an event of one platform never
//! changes what is remembered for another's chat, and it is a bounded LRU so
//! a flood of distinct chats cannot grow it.

use std::num::NonZeroUsize;

use lru::LruCache;

use serde_json::{Map, Value};

/// The scope and author of an event (or what is known about a chat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatScope {
    /// The scope (`scope_id`, or `guild_id` when only that was sent).
    pub scope_id: Option<String>,
    /// The author.
    pub user_id: Option<String>,
}

impl ChatScope {
    /// An event's own scope and author (empty strings count as absent).
    pub fn of(source: &hermes_protocol::event::SessionSource) -> Self {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Self {
            scope_id: set(&source.scope_id),
            user_id: set(&source.user_id),
        }
    }

    /// Adds this scope and author to `metadata`: both `scope_id` and
    /// `guild_id` when the caller set neither, `user_id` when the caller did
    /// not set it. Never overwrites a key the caller set (even to null).
    pub fn attach(&self, metadata: &mut Map<String, Value>) {
        if let Some(scope) = &self.scope_id
            && !metadata.contains_key("scope_id")
            && !metadata.contains_key("guild_id")
        {
            metadata.insert("scope_id".to_owned(), Value::String(scope.clone()));
            metadata.insert("guild_id".to_owned(), Value::String(scope.clone()));
        }
        if let Some(user) = &self.user_id
            && !metadata.contains_key("user_id")
        {
            metadata.insert("user_id".to_owned(), Value::String(user.clone()));
        }
    }
}

/// A chat, as the per-chat memory knows it: platform and `chat_id`.
type ChatKey = (String, String);

/// Bounded LRU of [`ChatScope`] by platform and `chat_id`.
#[derive(Debug)]
pub struct ScopeCache {
    entries: LruCache<ChatKey, ChatScope>,
}

impl ScopeCache {
    /// An empty cache remembering at most `capacity` chats (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Records what an inbound event of `platform` says about its chat. The
    /// latest value of each field wins; a field the event does not carry
    /// keeps what was known. Events without a chat id, or carrying neither
    /// field, record nothing.
    pub fn capture(
        &mut self,
        platform: &str,
        chat_id: &str,
        scope_id: Option<&str>,
        user_id: Option<&str>,
    ) {
        let scope_id = scope_id.filter(|s| !s.is_empty());
        let user_id = user_id.filter(|s| !s.is_empty());
        if chat_id.is_empty() || (scope_id.is_none() && user_id.is_none()) {
            return;
        }
        let entry = self.entries.get_or_insert_mut(
            (platform.to_owned(), chat_id.to_owned()),
            ChatScope::default,
        );
        if let Some(s) = scope_id {
            entry.scope_id = Some(s.to_owned());
        }
        if let Some(u) = user_id {
            entry.user_id = Some(u.to_owned());
        }
    }

    /// What is known about `chat_id` of `platform`, if it was seen inbound.
    pub fn get(&mut self, platform: &str, chat_id: &str) -> Option<ChatScope> {
        self.entries
            .get(&(platform.to_owned(), chat_id.to_owned()))
            .cloned()
    }

    /// Adds the remembered scope and author of `chat_id` of `platform` to
    /// `metadata` ([`ChatScope::attach`]); adds nothing for a chat never
    /// seen inbound. Only for actions with no originating event.
    pub fn reattach(&mut self, platform: &str, chat_id: &str, metadata: &mut Map<String, Value>) {
        if let Some(known) = self.get(platform, chat_id) {
            known.attach(metadata);
        }
    }

    /// How many chats are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no chat is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("test metadata must be an object, got {other}"),
        }
    }

    #[test]
    fn reattaches_both_scope_keys_and_author() {
        let mut c = ScopeCache::new(8);
        c.capture("p", "c1", Some("g1"), Some("u1"));
        let mut md = Map::new();
        c.reattach("p", "c1", &mut md);
        assert_eq!(
            Value::Object(md),
            json!({"scope_id": "g1", "guild_id": "g1", "user_id": "u1"})
        );
    }

    #[test]
    fn never_overwrites_caller_keys() {
        let mut c = ScopeCache::new(8);
        c.capture("p", "c1", Some("g1"), Some("u1"));
        let mut md = map(json!({"guild_id": "mine", "user_id": null}));
        c.reattach("p", "c1", &mut md);
        assert_eq!(
            Value::Object(md),
            json!({"guild_id": "mine", "user_id": null}),
            "caller keys are left alone"
        );
    }

    #[test]
    fn never_invents_for_unseen_chat() {
        let mut c = ScopeCache::new(8);
        c.capture("p", "c1", Some("g1"), Some("u1"));
        let mut md = map(json!({"x": 1}));
        c.reattach("p", "other", &mut md);
        assert_eq!(Value::Object(md), json!({"x": 1}));
    }

    #[test]
    fn one_platform_never_changes_another_platforms_chat() {
        let mut c = ScopeCache::new(8);
        c.capture("discord", "42", Some("victim-guild"), Some("victim"));
        // An event of another platform naming the same chat id.
        c.capture("acme", "42", Some("attacker-guild"), Some("attacker"));
        let mut md = Map::new();
        c.reattach("discord", "42", &mut md);
        assert_eq!(
            Value::Object(md),
            json!({"scope_id": "victim-guild", "guild_id": "victim-guild", "user_id": "victim"})
        );
    }

    #[test]
    fn latest_wins_per_field_and_lru_evicts_least_recent() {
        let mut c = ScopeCache::new(2);
        c.capture("p", "a", Some("g1"), Some("u1"));
        c.capture("p", "a", None, Some("u2"));
        assert_eq!(
            c.get("p", "a"),
            Some(ChatScope {
                scope_id: Some("g1".into()),
                user_id: Some("u2".into())
            })
        );
        c.capture("p", "b", Some("g2"), None);
        // `a` was used more recently than `b` (the get above, then b's insert; now touch a).
        assert!(c.get("p", "a").is_some());
        c.capture("p", "c", Some("g3"), None);
        assert!(
            c.get("p", "b").is_none(),
            "least recently used chat evicted"
        );
        assert!(c.get("p", "a").is_some() && c.get("p", "c").is_some());
        assert_eq!(c.len(), 2);
    }
}
