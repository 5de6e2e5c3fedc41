//! Relay URLs (relay-contract §7.1): the WebSocket dial URL and the HTTP
//! endpoints derived from the same configured value.

/// An HTTP endpoint of the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /relay/provision`.
    Provision,
    /// `POST /relay/enroll`.
    Enroll,
    /// `POST /relay/policy`.
    Policy,
}

impl Endpoint {
    /// Path suffix after the base.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Provision => "/relay/provision",
            Endpoint::Enroll => "/relay/enroll",
            Endpoint::Policy => "/relay/policy",
        }
    }
}

fn replace_prefix(s: &str, from: &str, to: &str) -> Option<String> {
    s.strip_prefix(from).map(|rest| format!("{to}{rest}"))
}

/// The WebSocket URL to dial: trimmed, `https://`→`wss://`,
/// `http://`→`ws://`, trailing `/` stripped, `/relay` appended unless
/// already there. Idempotent.
pub fn dial_url(configured: &str) -> String {
    let s = configured.trim();
    let s = replace_prefix(s, "https://", "wss://")
        .or_else(|| replace_prefix(s, "http://", "ws://"))
        .unwrap_or_else(|| s.to_owned());
    let s = s.trim_end_matches('/');
    if s.ends_with("/relay") {
        s.to_owned()
    } else {
        format!("{s}/relay")
    }
}

/// The HTTP URL of `endpoint`, from either a base or a dial URL: trailing
/// `/` stripped, `ws://`→`http://`, `wss://`→`https://`, one trailing
/// `/relay` dropped, then the endpoint path appended.
pub fn http_endpoint(configured: &str, endpoint: Endpoint) -> String {
    let s = configured.trim().trim_end_matches('/');
    let s = replace_prefix(s, "wss://", "https://")
        .or_else(|| replace_prefix(s, "ws://", "http://"))
        .unwrap_or_else(|| s.to_owned());
    let base = s.strip_suffix("/relay").unwrap_or(&s);
    format!("{base}{}", endpoint.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_is_idempotent_on_odd_inputs() {
        for s in [
            "",
            "x",
            "https://a/relay/relay",
            "ws://a//",
            "http://a/relayx",
        ] {
            let once = dial_url(s);
            assert_eq!(dial_url(&once), once, "input {s:?}");
        }
    }

    #[test]
    fn only_one_trailing_relay_is_dropped_for_http() {
        assert_eq!(
            http_endpoint("wss://a/relay/relay", Endpoint::Policy),
            "https://a/relay/relay/policy"
        );
    }
}
