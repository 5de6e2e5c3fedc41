//! What the host and its converter plugins must agree on, written once:
//! the WIT versions, the output caps and how output is measured against
//! them, and the values of the interface's open string fields. The plugin
//! host and the converter SDK both depend on this crate (it has no
//! dependencies of its own), so neither keeps a copy the other could drift
//! from.

#![forbid(unsafe_code)]

/// The WIT package every converter is built against.
pub const PACKAGE: &str = "hermes:converter";

/// Every version of [`PACKAGE`] this release implements, oldest first. A
/// host loads a plugin built against any of them; each has its folder in
/// `wit/` (frozen once released) and its bindings in the host.
pub const VERSIONS: [&str; 2] = ["0.1.0", "0.2.0"];

/// The version the SDK builds new plugins against (the newest).
pub const CURRENT_VERSION: &str = VERSIONS[VERSIONS.len() - 1];

/// The implemented version that serves a plugin built against `plugin`:
/// the same major and minor (0.x minors are separate packages to the
/// component model, so a 0.1 plugin runs on the 0.1 bindings, a 0.2 plugin
/// on the 0.2 ones); the patch level never matters. `None` when no
/// implemented version does (a newer minor, another major, a malformed
/// version).
pub fn implemented_version(plugin: &str) -> Option<&'static str> {
    let wanted = major_minor(plugin)?;
    VERSIONS
        .into_iter()
        .find(|v| major_minor(v) == Some(wanted))
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let _patch: u64 = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((major, minor))
}

/// The largest request body handed to a converter (1 MiB); larger bodies
/// are refused by the host before the guest runs (`payload_too_large`).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The host's default output caps. An operator may lower them; from WIT
/// 0.2 on a plugin reads the active ones through `host.limits`.
pub mod caps {
    /// Events per conversion.
    pub const MAX_EVENTS: usize = 16;
    /// Bytes of `text` per event.
    pub const MAX_EVENT_TEXT_BYTES: usize = 64 << 10;
    /// Bytes of all events together, measured by [`super::output_size`]'s rule.
    pub const MAX_OUTPUT_BYTES: usize = 256 << 10;
    /// Media items (urls) per event.
    pub const MAX_MEDIA: usize = 64;
    /// Metadata pairs per event (WIT 0.1 only; 0.2 has no metadata).
    pub const MAX_METADATA_PAIRS: usize = 64;
    /// Bytes charged per string, per list element and per event on top of
    /// the string bytes, so that many tiny items count too.
    pub const ELEMENT_OVERHEAD: usize = 16;
}

/// How output is measured against `max_output_bytes`: each string costs its
/// bytes plus [`caps::ELEMENT_OVERHEAD`]; each event, media item and
/// metadata pair costs [`caps::ELEMENT_OVERHEAD`] more. Host and SDK feed
/// their own types' strings through one [`OutputSize`], so both measure
/// alike.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputSize(pub usize);

impl OutputSize {
    /// A string (required or present).
    pub fn string(&mut self, s: &str) {
        self.0 = self.0.saturating_add(s.len() + caps::ELEMENT_OVERHEAD);
    }

    /// An optional string: nothing when absent.
    pub fn optional(&mut self, s: Option<&str>) {
        if let Some(s) = s {
            self.string(s);
        }
    }

    /// An event, a media item or a metadata pair, on top of its strings.
    pub fn element(&mut self) {
        self.0 = self.0.saturating_add(caps::ELEMENT_OVERHEAD);
    }
}

/// The kinds of a typed rejection, in the order they are checked
/// (conversion spec §5): the first that applies is the answer. A WIT 0.2
/// plugin names its kind as a string; the host accepts these.
pub const ERROR_KINDS: [&str; 9] = [
    "empty_body",
    "payload_too_large",
    "unsupported_content_type",
    "invalid_encoding",
    "invalid_form",
    "invalid_json",
    "missing_field",
    "invalid_field",
    "unsupported_type",
];

/// The message types of the relay contract (§5.1); a WIT 0.2 plugin names
/// one as a string.
pub const MESSAGE_TYPES: [&str; 9] = [
    "text", "location", "photo", "video", "audio", "voice", "document", "sticker", "command",
];

/// The chat types the first-party converters use. The relay contract
/// keeps `chat_type` a string, so a WIT 0.2 plugin may name another (a
/// short lowercase token); these are the ones every consumer knows.
pub const CHAT_TYPES: [&str; 5] = ["dm", "group", "channel", "thread", "forum"];

/// Whether `token` may be an open string value (a chat type, say): 1 to 32
/// bytes of lowercase ASCII letters, digits and `_`.
pub fn is_token(token: &str) -> bool {
    (1..=32).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_served_by_their_own_minor() {
        assert_eq!(implemented_version("0.1.0"), Some("0.1.0"));
        assert_eq!(
            implemented_version("0.1.7"),
            Some("0.1.0"),
            "patch levels do not matter"
        );
        assert_eq!(implemented_version("0.2.0"), Some("0.2.0"));
        assert_eq!(implemented_version("0.3.0"), None, "a newer minor");
        assert_eq!(implemented_version("1.0.0"), None, "another major");
        for bad in ["garbage", "0.1", "0.1.0.0", ""] {
            assert_eq!(implemented_version(bad), None, "{bad}");
        }
        assert_eq!(CURRENT_VERSION, "0.2.0");
    }

    #[test]
    fn output_is_measured_per_string_and_element() {
        let mut size = OutputSize::default();
        size.element();
        size.string("abc");
        size.optional(None);
        size.optional(Some(""));
        assert_eq!(size.0, 16 + (3 + 16) + 16);
    }

    #[test]
    fn tokens() {
        for ok in CHAT_TYPES.iter().chain(&MESSAGE_TYPES).chain(&ERROR_KINDS) {
            assert!(is_token(ok), "{ok}");
        }
        for bad in ["", "DM", "a b", "x".repeat(33).as_str(), "dm\n"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
