//! What enters a session: an event and how to answer it. Its own module so
//! that the converter side (`egress`) and the session layer both use it
//! without depending on each other.

use std::time::Instant;

use hermes_protocol::action::Metadata;
use hermes_protocol::event::{MessageEvent, ReplyRoute};

/// One event on its way into a session, with how to answer it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The user's message.
    pub event: MessageEvent,
    /// `send` to the chat or `follow_up` on a vaulted capability.
    pub route: ReplyRoute,
    /// Metadata every reply carries (scope is re-attached on top, §5.6).
    pub metadata: Metadata,
    /// The session namespace of a forward (its `profile`); `None` uses the
    /// source's own `profile`.
    pub profile: Option<String>,
    /// For a converted forward: which plugin converted it, for which tenant
    /// (the turn's log span carries them).
    pub origin: Option<Origin>,
    /// When the frame that carried it arrived: the start of what the
    /// user waits for (the reply latency histogram).
    pub received: Instant,
}

/// Where a converted event came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The plugin that converted the forward.
    pub plugin: String,
    /// The tenant its `tenant-of` named, when asked.
    pub tenant: Option<String>,
}

impl Incoming {
    /// An event from an `inbound` frame: replies are `send`s, profile from its source.
    pub fn inbound(event: MessageEvent) -> Self {
        Self {
            event,
            route: ReplyRoute::Send,
            metadata: Metadata::new(),
            profile: None,
            origin: None,
            received: Instant::now(),
        }
    }
}
