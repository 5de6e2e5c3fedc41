//! A bounded memory of recently seen `bufferId`s.
//!
//! After a reconnect the connector replays what it has not seen acked; an id
//! we already queued must not become a second turn. Only the most recent
//! `capacity` ids are remembered (a ring), which bounds memory whatever the
//! peer sends.

use std::collections::{HashSet, VecDeque};

/// The last `capacity` distinct ids, oldest evicted first.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    members: HashSet<String>,
}

impl RecentIds {
    /// An empty memory holding at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            order: VecDeque::with_capacity(capacity),
            members: HashSet::with_capacity(capacity),
        }
    }

    /// Whether `id` was inserted and not yet evicted.
    pub fn contains(&self, id: &str) -> bool {
        self.members.contains(id)
    }

    /// Remembers `id`; returns false when it was already remembered.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.members.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.members.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.members.insert(id.to_owned());
        true
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_beyond_capacity() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(
            !r.insert("a"),
            "second insert of the same id is a duplicate"
        );
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        assert!(!r.contains("a"), "oldest id evicted");
        assert!(r.contains("b") && r.contains("c"));
        assert_eq!(r.len(), 2);
    }
}
