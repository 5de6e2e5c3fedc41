//! Relay URLs (relay-contract §7.1): the WebSocket dial URL and the HTTP
//! endpoints derived from the same configured value, and the host a URL
//! names, so a caller can refuse plaintext to anything but loopback.

use std::net::IpAddr;

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

/// `s` without its scheme prefix `scheme` (compared ASCII case-insensitively).
fn strip_scheme<'a>(s: &'a str, scheme: &str) -> Option<&'a str> {
    let prefix = s.get(..scheme.len())?;
    prefix
        .eq_ignore_ascii_case(scheme)
        .then(|| &s[scheme.len()..])
}

/// The host a relay URL (`ws`, `wss`, `http` or `https`) names: its
/// authority without userinfo and port, an IPv6 literal without brackets.
/// `None` for another scheme or an empty host.
pub fn host(url: &str) -> Option<&str> {
    let s = url.trim();
    let rest = ["wss://", "ws://", "https://", "http://"]
        .into_iter()
        .find_map(|scheme| strip_scheme(s, scheme))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Userinfo ends at the last `@` (`ws://localhost@evil.example` is evil).
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next().unwrap_or_default(),
    };
    (!host.is_empty()).then_some(host)
}

/// Whether `url` is plaintext: `ws://` or `http://` (any case).
pub fn is_plaintext(url: &str) -> bool {
    let s = url.trim();
    strip_scheme(s, "ws://").is_some() || strip_scheme(s, "http://").is_some()
}

/// Whether `host` (as [`host`] returns it) is this machine: `localhost`, an
/// IPv4 address in 127.0.0.0/8, or `::1`. Names that merely resolve to
/// loopback are not trusted: only the literal forms count.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_strips_scheme_userinfo_port_path_and_brackets() {
        for (url, want) in [
            ("ws://127.0.0.1:9/relay", Some("127.0.0.1")),
            ("https://Relay.Example", Some("Relay.Example")),
            ("WSS://a.example:443/x?y#z", Some("a.example")),
            ("http://[::1]:8080/", Some("::1")),
            ("ws://localhost@evil.example/relay", Some("evil.example")),
            ("ws://u:p@localhost:1", Some("localhost")),
            ("ws://evil.example#@127.0.0.1", Some("evil.example")),
            ("ws:///relay", None),
            ("ftp://a.example", None),
            ("a.example", None),
        ] {
            assert_eq!(host(url), want, "host of {url:?}");
        }
    }

    #[test]
    fn only_literal_loopback_hosts_are_loopback() {
        for yes in ["localhost", "LocalHost", "127.0.0.1", "127.255.0.9", "::1"] {
            assert!(is_loopback_host(yes), "{yes} is loopback");
        }
        for no in [
            "relay.example",
            "128.0.0.1",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "0.0.0.0",
            "::",
            "10.0.0.1",
        ] {
            assert!(!is_loopback_host(no), "{no} is not loopback");
        }
    }

    #[test]
    fn plaintext_schemes() {
        assert!(is_plaintext("ws://a") && is_plaintext(" HTTP://a"));
        assert!(!is_plaintext("wss://a") && !is_plaintext("https://a"));
    }

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
