//! Scope capture and re-attachment (relay-contract §5.6).
//!
//! The connector decides which tenant owns a reply from the outbound action's
//! metadata. The gateway therefore remembers, per `chat_id`, the scope
//! (`scope_id`, legacy `guild_id`) and the author `user_id` of the latest
//! inbound event, and puts them back on replies that do not carry them. The
//! memory is a bounded LRU so a flood of distinct chats cannot grow it.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

/// What is known about one chat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatScope {
    /// The chat's scope (`scope_id`, or `guild_id` when only that was sent).
    pub scope_id: Option<String>,
    /// The author of the latest event in the chat.
    pub user_id: Option<String>,
}

/// Bounded LRU of [`ChatScope`] by `chat_id`.
#[derive(Debug)]
pub struct ScopeCache {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (ChatScope, u64)>,
    // Recency index: tick of last use → chat id. The smallest tick is evicted.
    by_use: BTreeMap<u64, String>,
}

impl ScopeCache {
    /// An empty cache remembering at most `capacity` chats (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    fn touch(&mut self, chat_id: &str) -> Option<&mut ChatScope> {
        self.tick += 1;
        let tick = self.tick;
        let (scope, used) = self.entries.get_mut(chat_id)?;
        self.by_use.remove(used);
        *used = tick;
        self.by_use.insert(tick, chat_id.to_owned());
        Some(scope)
    }

    /// Records what an inbound event says about its chat. The latest value of
    /// each field wins; a field the event does not carry keeps what was known.
    /// Events without a chat id, or carrying neither field, record nothing.
    pub fn capture(&mut self, chat_id: &str, scope_id: Option<&str>, user_id: Option<&str>) {
        let scope_id = scope_id.filter(|s| !s.is_empty());
        let user_id = user_id.filter(|s| !s.is_empty());
        if chat_id.is_empty() || (scope_id.is_none() && user_id.is_none()) {
            return;
        }
        if self.touch(chat_id).is_none() {
            if self.entries.len() >= self.capacity
                && let Some((_, oldest)) = self.by_use.pop_first()
            {
                self.entries.remove(&oldest);
            }
            self.entries
                .insert(chat_id.to_owned(), (ChatScope::default(), self.tick));
            self.by_use.insert(self.tick, chat_id.to_owned());
        }
        if let Some((entry, _)) = self.entries.get_mut(chat_id) {
            if let Some(s) = scope_id {
                entry.scope_id = Some(s.to_owned());
            }
            if let Some(u) = user_id {
                entry.user_id = Some(u.to_owned());
            }
        }
    }

    /// What is known about `chat_id`, if it was seen inbound.
    pub fn get(&mut self, chat_id: &str) -> Option<ChatScope> {
        self.touch(chat_id).cloned()
    }

    /// Adds the remembered scope and author of `chat_id` to `metadata`:
    /// both `scope_id` and `guild_id` when the caller set neither, `user_id`
    /// when the caller did not set it. Never overwrites a key the caller set
    /// (even to null) and adds nothing for a chat never seen inbound.
    pub fn reattach(&mut self, chat_id: &str, metadata: &mut Map<String, Value>) {
        let Some(known) = self.get(chat_id) else {
            return;
        };
        if let Some(scope) = known.scope_id
            && !metadata.contains_key("scope_id")
            && !metadata.contains_key("guild_id")
        {
            metadata.insert("scope_id".to_owned(), Value::String(scope.clone()));
            metadata.insert("guild_id".to_owned(), Value::String(scope));
        }
        if let Some(user) = known.user_id
            && !metadata.contains_key("user_id")
        {
            metadata.insert("user_id".to_owned(), Value::String(user));
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
        c.capture("c1", Some("g1"), Some("u1"));
        let mut md = Map::new();
        c.reattach("c1", &mut md);
        assert_eq!(
            Value::Object(md),
            json!({"scope_id": "g1", "guild_id": "g1", "user_id": "u1"})
        );
    }

    #[test]
    fn never_overwrites_caller_keys() {
        let mut c = ScopeCache::new(8);
        c.capture("c1", Some("g1"), Some("u1"));
        let mut md = map(json!({"guild_id": "mine", "user_id": null}));
        c.reattach("c1", &mut md);
        assert_eq!(
            Value::Object(md),
            json!({"guild_id": "mine", "user_id": null}),
            "caller keys are left alone"
        );
    }

    #[test]
    fn never_invents_for_unseen_chat() {
        let mut c = ScopeCache::new(8);
        c.capture("c1", Some("g1"), Some("u1"));
        let mut md = map(json!({"x": 1}));
        c.reattach("other", &mut md);
        assert_eq!(Value::Object(md), json!({"x": 1}));
    }

    #[test]
    fn latest_wins_per_field_and_lru_evicts_least_recent() {
        let mut c = ScopeCache::new(2);
        c.capture("a", Some("g1"), Some("u1"));
        c.capture("a", None, Some("u2"));
        assert_eq!(
            c.get("a"),
            Some(ChatScope {
                scope_id: Some("g1".into()),
                user_id: Some("u2".into())
            })
        );
        c.capture("b", Some("g2"), None);
        // `a` was used more recently than `b` (the get above, then b's insert; now touch a).
        assert!(c.get("a").is_some());
        c.capture("c", Some("g3"), None);
        assert!(c.get("b").is_none(), "least recently used chat evicted");
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert_eq!(c.len(), 2);
    }
}
