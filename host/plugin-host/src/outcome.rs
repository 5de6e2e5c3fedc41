//! What a conversion comes to: the host's own model of a plugin's answer.

use hermes_protocol::event::MessageEvent;
use serde::Serialize;

use crate::error::PluginError;

pub use hermes_protocol::event::ReplyRoute;

/// One event a plugin produced. Serializes to the wire MessageEvent with
/// every optional key written, plus `is_bot`, `reply_route` and `metadata`
/// (the event form `hermes-gateway convert` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedEvent {
    /// The message for the session layer.
    pub event: MessageEvent,
    /// How replies to it must be sent.
    pub reply_route: ReplyRoute,
    /// The content type of each of `event.media_urls`, where the plugin
    /// gave one (WIT 0.2 media items; empty for a 0.1 plugin).
    pub media_types: Vec<Option<String>>,
    /// Informational extras from a WIT 0.1 plugin (0.2 has none). Never
    /// copied onto outbound actions.
    pub metadata: Vec<(String, String)>,
}

/// Why a request was rejected (conversion.md §5), in check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RejectKind {
    EmptyBody,
    PayloadTooLarge,
    UnsupportedContentType,
    InvalidEncoding,
    InvalidForm,
    InvalidJson,
    MissingField,
    InvalidField,
    UnsupportedType,
}

impl RejectKind {
    /// Every kind, in check order.
    pub const ALL: [RejectKind; 9] = [
        Self::EmptyBody,
        Self::PayloadTooLarge,
        Self::UnsupportedContentType,
        Self::InvalidEncoding,
        Self::InvalidForm,
        Self::InvalidJson,
        Self::MissingField,
        Self::InvalidField,
        Self::UnsupportedType,
    ];

    /// The kind spelled `s` (`empty_body`, …), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The wire spelling (`empty_body`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyBody => "empty_body",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedContentType => "unsupported_content_type",
            Self::InvalidEncoding => "invalid_encoding",
            Self::InvalidForm => "invalid_form",
            Self::InvalidJson => "invalid_json",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::UnsupportedType => "unsupported_type",
        }
    }
}

/// What came of one forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Zero or more events, in order.
    Events(Vec<ConvertedEvent>),
    /// A valid request without a user message, with the plugin's reason.
    Ignored(String),
    /// Typed bad input.
    Rejected {
        /// The kind.
        kind: RejectKind,
        /// A short explanation.
        message: String,
    },
    /// The plugin failed (contained).
    Failed(PluginError),
}

/// One conversion: which plugin handled it and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// The plugin that converted (or was chosen to convert) the forward.
    pub plugin: Option<String>,
    /// The tenant key the routing used, when the plugin gave one. It is
    /// only computed when a tenant route could use it: for a platform with
    /// no `[[route]]` naming a tenant, `tenant-of` is not called and this is
    /// `None`.
    pub tenant: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
}

impl Conversion {
    pub(crate) fn new(plugin: Option<&str>, tenant: Option<String>, outcome: Outcome) -> Self {
        Self {
            plugin: plugin.map(str::to_owned),
            tenant,
            outcome,
        }
    }
}
