//! # Writing a hermes-gateway converter
//!
//! A converter turns one raw webhook request (a *passthrough forward*) into
//! chat messages for the agent. It runs inside the gateway's WebAssembly
//! sandbox, but its logic is plain Rust: implement [`Converter`] against the
//! native types in this crate, unit-test it natively, and export it as a
//! component with [`export_converter!`]:
//!
//! ```ignore
//! use hermes_converter_sdk::*;
//!
//! pub struct Echo;
//!
//! impl Converter for Echo {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("echo", env!("CARGO_PKG_VERSION"), &["echo"])
//!     }
//!     fn tenant_of(_req: &Request) -> Option<String> {
//!         None
//!     }
//!     fn convert(req: &Request, _config: &dyn Config) -> Outcome {
//!         let text = match std::str::from_utf8(&req.body) {
//!             Ok(t) => t.to_owned(),
//!             Err(_) => return Outcome::error(ErrorKind::InvalidEncoding, "body is not UTF-8"),
//!         };
//!         let source = Source::new("echo", "chat-1", ChatType::Dm);
//!         Outcome::event(MessageEvent::new(text, source, ReplyRoute::Send))
//!     }
//! }
//!
//! export_converter!(Echo);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and drop the
//! `.wasm` into the gateway's `--plugins` directory.
//!
//! The types mirror `wit/0.2.0/converter.wit` one to one; see that file for the
//! meaning of every field.
//!
//! (Why one file of this length: it is the SDK's whole public surface, the
//! native mirror of `wit/0.2.0/converter.wit` in one place, and most of it is this
//! guide and the types' documentation.)

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

pub mod form;
#[cfg(any(test, feature = "testing"))]
pub mod fuzz;
pub mod json;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

/// The version of the WIT package (`hermes:converter`) this SDK builds against.
pub const API_VERSION: &str = hermes_converter_abi::CURRENT_VERSION;

/// The largest body the host hands to a converter (1 MiB); larger bodies are
/// refused with [`ErrorKind::PayloadTooLarge`] before the converter runs.
pub use hermes_converter_abi::MAX_BODY_BYTES;

mod caps;
pub use caps::{
    MAX_EVENT_TEXT_BYTES, MAX_EVENTS, MAX_MEDIA_URLS, MAX_OUTPUT_BYTES, OUTPUT_ELEMENT_OVERHEAD,
    OutputCaps, check_output_caps, check_output_caps_with, output_size,
};

/// One raw webhook request, as the connector forwarded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Forward platform: `discord`, `twilio`, `slack`, ...
    pub platform: String,
    /// Bot or app identity (may be empty).
    pub bot_id: String,
    /// HTTP method (may be empty).
    pub method: String,
    /// Path at the connector; informational, never route on it.
    pub path: String,
    /// Headers in arrival order.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// Target profile, when named.
    pub profile: Option<String>,
}

impl Request {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type of `content-type` without parameters, lowercased
    /// (`application/json; charset=utf-8` → `application/json`).
    pub fn media_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        let media = value.split(';').next().unwrap_or("").trim();
        Some(media.to_ascii_lowercase())
    }

    /// The checks every converter makes before parsing, in the spec's order:
    /// `empty_body`, `payload_too_large` (over [`MAX_BODY_BYTES`]),
    /// `unsupported_content_type` (the media type, parameters ignored, must
    /// be `media_type`), `invalid_encoding` (the body must be UTF-8). Returns
    /// the body as text.
    pub fn body_text(&self, media_type: &str) -> Result<&str, ConvertError> {
        if self.body.is_empty() {
            return Err(ConvertError::new(ErrorKind::EmptyBody, "empty body"));
        }
        if self.body.len() > MAX_BODY_BYTES {
            return Err(ConvertError::new(
                ErrorKind::PayloadTooLarge,
                "body over 1 MiB",
            ));
        }
        let actual = self
            .header("content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim());
        if !actual.is_some_and(|a| a.eq_ignore_ascii_case(media_type)) {
            return Err(ConvertError::new(
                ErrorKind::UnsupportedContentType,
                format!("content-type must be {media_type}"),
            ));
        }
        std::str::from_utf8(&self.body).map_err(|e| {
            ConvertError::new(
                ErrorKind::InvalidEncoding,
                format!("body is not UTF-8 (byte {})", e.valid_up_to()),
            )
        })
    }
}

/// What kind of message an event is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum MessageType {
    #[default]
    Text,
    Location,
    Photo,
    Video,
    Audio,
    Voice,
    Document,
    Sticker,
    Command,
}

impl MessageType {
    /// The wire spelling (`text`, `command`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Location => "location",
            Self::Photo => "photo",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Voice => "voice",
            Self::Document => "document",
            Self::Sticker => "sticker",
            Self::Command => "command",
        }
    }
}

/// The conversation shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ChatType {
    #[default]
    Dm,
    Group,
    Channel,
    Thread,
    Forum,
}

impl ChatType {
    /// The wire spelling (`dm`, `group`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dm => "dm",
            Self::Group => "group",
            Self::Channel => "channel",
            Self::Thread => "thread",
            Self::Forum => "forum",
        }
    }
}

/// Where a message came from (SessionSource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Source {
    pub platform: String,
    pub chat_id: String,
    pub chat_type: ChatType,
    pub chat_name: Option<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub thread_id: Option<String>,
    pub chat_topic: Option<String>,
    pub user_id_alt: Option<String>,
    pub chat_id_alt: Option<String>,
    /// Owning tenant scope (Discord guild, Slack team, Twilio number).
    pub scope_id: Option<String>,
    pub parent_chat_id: Option<String>,
    pub message_id: Option<String>,
    pub profile: Option<String>,
    pub is_bot: bool,
    pub message_is_edit: bool,
}

impl Source {
    /// A source with the three keys every source has; everything else unset.
    pub fn new(
        platform: impl Into<String>,
        chat_id: impl Into<String>,
        chat_type: ChatType,
    ) -> Self {
        Self {
            platform: platform.into(),
            chat_id: chat_id.into(),
            chat_type,
            ..Self::default()
        }
    }
}

/// A user's answer to a prompt the gateway sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PromptResponse {
    pub prompt_id: String,
    pub option_id: String,
    pub label: Option<String>,
    pub prompt_message_id: Option<String>,
}

/// How the host must answer an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyRoute {
    /// `send` to the event's chat.
    Send,
    /// `follow_up` through a vaulted capability of this kind.
    FollowUp(String),
}

/// One attached media item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Where it is.
    pub url: String,
    /// Its content type, when the platform says.
    pub content_type: Option<String>,
}

impl Media {
    /// An item with its URL only.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            content_type: None,
        }
    }
}

/// One chat message for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MessageEvent {
    pub text: String,
    pub message_type: MessageType,
    pub source: Source,
    pub message_id: Option<String>,
    pub reply_to_message_id: Option<String>,
    /// Attached media, in order (the wire event carries their URLs).
    pub media: Vec<Media>,
    pub prompt_response: Option<PromptResponse>,
    pub reply_route: ReplyRoute,
}

impl MessageEvent {
    /// A text event with everything optional unset.
    pub fn new(text: impl Into<String>, source: Source, reply_route: ReplyRoute) -> Self {
        Self {
            text: text.into(),
            message_type: MessageType::Text,
            source,
            message_id: None,
            reply_to_message_id: None,
            media: Vec::new(),
            prompt_response: None,
            reply_route,
        }
    }
}

/// Why a request was rejected, in the order the kinds are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum ErrorKind {
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

impl ErrorKind {
    /// The wire spelling (`empty_body`, `invalid_json`, ...).
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

/// A typed rejection of bad input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    /// What kind of fault.
    pub kind: ErrorKind,
    /// A short human explanation (never echoes secrets).
    pub message: String,
}

impl ConvertError {
    /// Build an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl ConvertError {
    /// Of several faults found in one request, the one the spec reports: the
    /// earliest kind in [`ErrorKind`]'s order (the first given among equals).
    /// `None` when there are none.
    pub fn earliest(errors: impl IntoIterator<Item = ConvertError>) -> Option<ConvertError> {
        errors
            .into_iter()
            .reduce(|a, b| if b.kind < a.kind { b } else { a })
    }
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for ConvertError {}

/// The result of one conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Zero or more events.
    Events(Vec<MessageEvent>),
    /// A valid request that carries no user message, with a short reason.
    Ignored(String),
    /// A typed rejection.
    Error(ConvertError),
}

impl Outcome {
    /// One event.
    pub fn event(event: MessageEvent) -> Self {
        Self::Events(vec![event])
    }

    /// Ignored, with a reason token such as `ping`.
    pub fn ignored(reason: impl Into<String>) -> Self {
        Self::Ignored(reason.into())
    }

    /// A typed rejection.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Error(ConvertError::new(kind, message))
    }
}

impl From<ConvertError> for Outcome {
    fn from(e: ConvertError) -> Self {
        Self::Error(e)
    }
}

impl From<Result<Outcome, ConvertError>> for Outcome {
    fn from(r: Result<Outcome, ConvertError>) -> Self {
        r.unwrap_or_else(Outcome::Error)
    }
}

/// Who a plugin is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Plugin name, e.g. `discord-interactions`.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Forward platforms it converts.
    pub platforms: Vec<String>,
}

impl PluginInfo {
    /// Info for a plugin (the WIT version it is built against, this SDK's
    /// [`API_VERSION`], is in the component itself).
    pub fn new(name: &str, version: &str, platforms: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The tenant's configuration, as the policy file gives it.
pub trait Config {
    /// The value for `key`, if the tenant's policy sets one.
    fn get(&self, key: &str) -> Option<String>;
}

/// No configuration at all.
impl Config for () {
    fn get(&self, _key: &str) -> Option<String> {
        None
    }
}

/// A fixed map, for native tests.
impl Config for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        std::collections::HashMap::get(self, key).cloned()
    }
}

/// A slice of pairs, for native tests.
impl Config for [(&str, &str)] {
    fn get(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// A converter. Implement it on a unit struct and export it with
/// [`export_converter!`].
pub trait Converter {
    /// Name, version, platforms and API version.
    fn describe() -> PluginInfo;
    /// The tenant key of a request, cheaply (no full parse if avoidable).
    fn tenant_of(req: &Request) -> Option<String>;
    /// Convert one request.
    fn convert(req: &Request, config: &dyn Config) -> Outcome;
    /// Whether the export glue turns over-cap output into an
    /// `invalid_field` rejection ([`check_output_caps`]). Leave it on: only
    /// the sandbox tests' hostile guest turns it off, to reach the host's
    /// own checks (where over-cap output is a fault).
    const CHECK_OUTPUT_CAPS: bool = true;
}

/// Log a line into the host's tracing (a no-op natively).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    guest::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Export a [`Converter`] as the component's `converter` interface:
///
/// ```ignore
/// hermes_converter_sdk::export_converter!(MyConverter);
/// ```
///
/// On native targets the macro expands to nothing (the glue lives in the
/// wasm32-only `guest` module), so the same crate builds
/// as a plain library for unit tests.
#[macro_export]
macro_rules! export_converter {
    ($converter:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __HermesConverterExport;

            impl $crate::guest::exports::hermes::converter::converter::Guest
                for __HermesConverterExport
            {
                fn describe() -> $crate::guest::hermes::converter::types::PluginInfo {
                    $crate::guest::describe::<$converter>()
                }
                fn tenant_of(
                    req: $crate::guest::hermes::converter::types::Request,
                ) -> ::core::option::Option<::std::string::String> {
                    $crate::guest::tenant_of::<$converter>(req)
                }
                fn convert(
                    req: $crate::guest::hermes::converter::types::Request,
                ) -> $crate::guest::hermes::converter::types::Outcome {
                    $crate::guest::convert::<$converter>(req)
                }
            }

            $crate::guest::__export_converter_plugin!(__HermesConverterExport with_types_in $crate::guest);
        };
    };
}
