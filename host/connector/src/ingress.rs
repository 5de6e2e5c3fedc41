//! The HTTP webhook ingress of the `dev` command: raw platform webhooks in,
//! `passthrough_forward` frames out (relay-contract §5.2).
//!
//! A production connector receives a provider's webhook, verifies its
//! signature, answers the provider at once (Discord needs its deferred ACK
//! within 3 s), strips credentials and forwards the sanitized request to the
//! gateway over the relay WebSocket. [`Ingress`] does the same on loopback
//! for local development, with one deliberate difference: **it verifies no
//! platform signature** (there is no platform secret on a developer's
//! machine). That is why it binds loopback by default and refuses any other
//! address unless [`IngressConfig::allow_non_loopback`] is set.
//!
//! | route (`POST`) | platform | answer to the HTTP client |
//! | --- | --- | --- |
//! | `/hooks/discord/interactions` | `discord` | `{"type":5}` (deferred ACK); `{"type":1}` for a PING |
//! | `/hooks/twilio/messaging`, `/hooks/twilio/voice` | `twilio` | empty TwiML `<Response/>`, `text/xml` |
//! | `/hooks/slack/commands`, `/hooks/slack/interactivity` | `slack` | 200, empty body |
//!
//! | `/hooks/<platform>/<anything>`, for a platform [`IngressConfig::claims`] accepts | `<platform>` | as above for those three; 200 with an empty body for any other |
//!
//! Anything else is 404; another method on a known route is 405; a request
//! from a browser page is 403 (see [`browser_refusal`]); a body over
//! [`IngressConfig::max_body`] is 413; no connected gateway is 503.

use std::net::SocketAddr;
use std::sync::Arc;

use hermes_http::{Body, BodyError};
use hermes_protocol::forward::PassthroughForward;
use hermes_protocol::frame::ConnectorFrame;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::stub::StubConnector;

/// Default body limit: the plugin host refuses bodies over 1 MiB itself
/// (`payload_too_large`), so the ingress lets a little more through to keep
/// that path reachable and stops only clearly oversized uploads.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024 + 64 * 1024;

/// Headers that describe one HTTP hop, not the request: a connector does not
/// forward them (RFC 9110 §7.6.1, plus `expect` and `host`, which only
/// concern the connection to the ingress itself).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
];

/// Platform signatures and credentials: the real connector verifies the
/// signatures at its edge and never lets a credential reach the gateway
/// (relay-contract §1), so neither does the ingress.
const CREDENTIALS: &[&str] = &[
    "x-signature-ed25519",
    "x-signature-timestamp",
    "x-twilio-signature",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "authorization",
    "cookie",
];

/// How a route's provider expects to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderAnswer {
    /// Discord interactions: a deferred ACK (`{"type":5}`), or a PONG
    /// (`{"type":1}`) to an endpoint-verification PING.
    DiscordInteraction,
    /// Twilio: empty TwiML (no immediate reply; the agent answers later).
    TwilioTwiml,
    /// Slack: 200 with an empty body (the agent answers through `response_url`).
    SlackEmpty,
    /// A platform with no known provider answer (a third-party plugin's):
    /// 200 with an empty body.
    Plain,
}

impl ProviderAnswer {
    /// The answer a provider expects on `platform`'s webhooks.
    pub fn of_platform(platform: &str) -> Self {
        match platform {
            "discord" => ProviderAnswer::DiscordInteraction,
            "twilio" => ProviderAnswer::TwilioTwiml,
            "slack" => ProviderAnswer::SlackEmpty,
            _ => ProviderAnswer::Plain,
        }
    }
}

/// A webhook route the ingress accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The forward's `platform`.
    pub platform: String,
    /// How the HTTP client is answered.
    pub answer: ProviderAnswer,
}

/// Which platforms the ingress serves beyond its fixed paths: asked per
/// request, so a plugin loaded by a reload is served at once.
#[derive(Clone)]
pub struct PlatformClaims(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl PlatformClaims {
    /// Claims decided by `claims`.
    pub fn new(claims: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(claims))
    }

    /// Whether `platform` is claimed.
    pub fn claims(&self, platform: &str) -> bool {
        (self.0)(platform)
    }
}

impl std::fmt::Debug for PlatformClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformClaims")
    }
}

/// The hook served at `path`, if any: one of [`HOOK_PATHS`], or
/// `/hooks/<platform>/<anything>` for a platform `claims` accepts (a
/// platform name of ASCII letters, digits, `-` and `_`).
pub fn hook_for(path: &str, claims: Option<&PlatformClaims>) -> Option<Hook> {
    let fixed = match path {
        "/hooks/discord/interactions" => Some("discord"),
        "/hooks/twilio/messaging" | "/hooks/twilio/voice" => Some("twilio"),
        "/hooks/slack/commands" | "/hooks/slack/interactivity" => Some("slack"),
        _ => None,
    };
    let platform = match fixed {
        Some(platform) => platform,
        None => {
            let (platform, rest) = path.strip_prefix("/hooks/")?.split_once('/')?;
            let named = !platform.is_empty()
                && platform
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !named || rest.is_empty() || !claims?.claims(platform) {
                return None;
            }
            platform
        }
    };
    Some(Hook {
        platform: platform.to_owned(),
        answer: ProviderAnswer::of_platform(platform),
    })
}

/// The fixed paths [`hook_for`] always accepts, for banners and docs.
pub const HOOK_PATHS: [&str; 5] = [
    "/hooks/discord/interactions",
    "/hooks/twilio/messaging",
    "/hooks/twilio/voice",
    "/hooks/slack/commands",
    "/hooks/slack/interactivity",
];

/// The headers a connector forwards: all of them in arrival order, as
/// `[name, value]` pairs with lowercase names, minus hop-by-hop headers and
/// signatures/credentials. A value that is not valid UTF-8 is dropped (the
/// wire form carries strings).
pub fn forwarded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !HOP_BY_HOP.contains(&name) && !CREDENTIALS.contains(&name)
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Why a request that a browser sent on behalf of some web page is refused,
/// or `None` for a request that did not come from one.
///
/// Loopback is no protection against the developer's own browser: any page
/// they visit can `POST` a form (a CORS "simple request", sent without a
/// preflight) to `http://127.0.0.1:8787/hooks/…` and talk to their agent.
/// Webhook senders and `curl` send neither header, and the ingress serves
/// no page of its own, so any `Origin` (including `null`, and the
/// same-origin one a DNS-rebinding page would carry) and a `Sec-Fetch-Site`
/// other than `none` mark a request to refuse.
pub fn browser_refusal(headers: &HeaderMap) -> Option<&'static str> {
    if headers.contains_key(ORIGIN) {
        return Some("requests from web pages (an Origin header) are refused");
    }
    let fetch_site = headers.get("sec-fetch-site")?;
    if fetch_site.as_bytes().eq_ignore_ascii_case(b"none") {
        None
    } else {
        Some("requests from web pages (Sec-Fetch-Site) are refused")
    }
}

/// The status, content type and body the provider gets for `body`.
pub fn provider_answer(
    answer: ProviderAnswer,
    body: &[u8],
) -> (StatusCode, Option<&'static str>, &'static str) {
    match answer {
        ProviderAnswer::DiscordInteraction => {
            let is_ping = serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|v| v.get("type").and_then(serde_json::Value::as_u64) == Some(1));
            let json = if is_ping {
                r#"{"type":1}"#
            } else {
                r#"{"type":5}"#
            };
            (StatusCode::OK, Some("application/json"), json)
        }
        ProviderAnswer::TwilioTwiml => (StatusCode::OK, Some("text/xml"), "<Response/>"),
        ProviderAnswer::SlackEmpty | ProviderAnswer::Plain => (StatusCode::OK, None, ""),
    }
}

/// Settings of an [`Ingress`].
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Address to bind (port 0 picks a free one).
    pub addr: SocketAddr,
    /// Bind an address that is not loopback. The ingress verifies no
    /// platform signature, so anyone who can reach it can inject messages:
    /// only for a trusted network.
    pub allow_non_loopback: bool,
    /// Largest body accepted; larger gets 413.
    pub max_body: usize,
    /// Platforms served at `/hooks/<platform>/<anything>` besides the fixed
    /// paths (`dev`: every platform a loaded plugin claims).
    pub claims: Option<PlatformClaims>,
}

impl IngressConfig {
    /// Loopback-only settings for `addr` with the default body limit.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            allow_non_loopback: false,
            max_body: DEFAULT_MAX_BODY,
            claims: None,
        }
    }
}

/// Why the ingress could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// A non-loopback address without the explicit opt-in.
    #[error(
        "refusing to listen on {0}: the dev ingress verifies no platform signature, so it binds loopback only (opt in explicitly to listen elsewhere)"
    )]
    NotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What happened to one HTTP request, for a live view of the ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressEvent {
    /// The request was forwarded to the gateway and answered.
    Forwarded {
        /// The forward's platform.
        platform: String,
        /// Request path.
        path: String,
        /// Body size in bytes.
        bytes: usize,
        /// The body answered to the HTTP client.
        answer: &'static str,
    },
    /// The request was refused with `status`.
    Refused {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// Status answered.
        status: u16,
        /// Why, in a few words.
        reason: &'static str,
    },
}

/// A running webhook ingress. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct Ingress {
    addr: SocketAddr,
    events: broadcast::Sender<IngressEvent>,
    server: JoinHandle<()>,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Shared {
    connector: Arc<StubConnector>,
    max_body: usize,
    claims: Option<PlatformClaims>,
    events: broadcast::Sender<IngressEvent>,
}

impl Ingress {
    /// Bind `config.addr` and forward every accepted webhook to the gateway
    /// connected to `connector`.
    pub async fn start(
        config: IngressConfig,
        connector: Arc<StubConnector>,
    ) -> Result<Self, IngressError> {
        if !config.addr.ip().is_loopback() && !config.allow_non_loopback {
            return Err(IngressError::NotLoopback(config.addr));
        }
        let bind_error = |source| IngressError::Bind {
            addr: config.addr,
            source,
        };
        let listener = TcpListener::bind(config.addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            connector,
            max_body: config.max_body,
            claims: config.claims,
            events: events.clone(),
        });
        // A webhook client is a developer's curl or a test: the shared
        // loop's limits (64 connections, 5 s per request head, 60 s per
        // connection) are generous for it.
        let options = hermes_http::ServeOptions::new("dev ingress");
        let serving = hermes_http::serve(listener, options, Default::default(), move |req| {
            handle(Arc::clone(&shared), req)
        });
        let server = tokio::spawn(serving);
        Ok(Self {
            addr,
            events,
            server,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base the hook paths are appended to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Events for every request from now on. A slow receiver loses the
    /// oldest events (it is a view, not a record).
    pub fn subscribe(&self) -> broadcast::Receiver<IngressEvent> {
        self.events.subscribe()
    }
}

fn respond(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: &'static str,
) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let refuse = |status: StatusCode, reason: &'static str| {
        let _ = shared.events.send(IngressEvent::Refused {
            method: method.to_string(),
            path: path.clone(),
            status: status.as_u16(),
            reason,
        });
        respond(status, Some("text/plain"), reason)
    };
    let Some(hook) = hook_for(&path, shared.claims.as_ref()) else {
        return refuse(StatusCode::NOT_FOUND, "no such hook");
    };
    if method != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "hooks accept POST only");
    }
    if let Some(reason) = browser_refusal(req.headers()) {
        return refuse(StatusCode::FORBIDDEN, reason);
    }
    let headers = forwarded_headers(req.headers());
    let body = match hermes_http::read_body(req, shared.max_body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
        Err(BodyError::Unreadable) => {
            return refuse(StatusCode::BAD_REQUEST, "body could not be read");
        }
    };

    let (status, content_type, answer) = provider_answer(hook.answer, &body);
    let bytes = body.len();
    let frame = ConnectorFrame::PassthroughForward {
        forward: PassthroughForward {
            platform: hook.platform.clone(),
            bot_id: String::new(),
            method: method.to_string(),
            path: path.clone(),
            headers,
            body: body.to_vec(),
            profile: None,
        },
        buffer_id: None,
    };
    // A real connector would buffer for an absent gateway; the dev ingress
    // says so instead, which is more useful on a developer's machine.
    if shared.connector.push_frame(&frame).await.is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "no gateway connected");
    }
    let _ = shared.events.send(IngressEvent::Forwarded {
        platform: hook.platform,
        path,
        bytes,
        answer,
    });
    respond(status, content_type, answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stub::StubConfig;
    use futures_util::StreamExt;
    use hermes_protocol::auth::make_token;
    use hermes_protocol::decoder::FrameDecoder;
    use hermes_protocol::frame::GatewayFrame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    #[test]
    fn routes_map_to_platforms() {
        let platforms: Vec<_> = HOOK_PATHS
            .iter()
            .map(|p| hook_for(p, None).map(|h| h.platform))
            .collect();
        let expected = ["discord", "twilio", "twilio", "slack", "slack"];
        assert_eq!(platforms, expected.map(|p| Some(p.to_owned())));
        for unknown in [
            "/",
            "/relay",
            "/hooks/discord",
            "/hooks/discord/interactions/",
            "/hooks/telegram/updates",
        ] {
            assert_eq!(hook_for(unknown, None), None, "{unknown}");
        }
    }

    #[test]
    fn claimed_platforms_are_served_under_any_subpath() {
        let claims = PlatformClaims::new(|p| p == "acme-hooks" || p == "discord");
        let hook = |path| hook_for(path, Some(&claims));
        assert_eq!(
            hook("/hooks/acme-hooks/orders/created"),
            Some(Hook {
                platform: "acme-hooks".to_owned(),
                answer: ProviderAnswer::Plain
            })
        );
        assert_eq!(
            hook("/hooks/discord/other").map(|h| h.answer),
            Some(ProviderAnswer::DiscordInteraction),
            "a known platform keeps its provider's answer"
        );
        assert_eq!(
            hook("/hooks/twilio/messaging").map(|h| h.platform),
            Some("twilio".to_owned()),
            "the fixed paths stay"
        );
        for refused in [
            "/hooks/telegram/updates",
            "/hooks/acme-hooks",
            "/hooks/acme-hooks/",
            "/hooks/acme%2Dhooks/x",
            "/hooks//x",
        ] {
            assert_eq!(hook(refused), None, "{refused}");
        }
    }

    #[test]
    fn credentials_and_hop_headers_are_stripped_in_order() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("x-signature-ed25519", "abcd"),
            ("x-signature-timestamp", "1700000000"),
            ("user-agent", "Discord-Interactions/1.0"),
            ("authorization", "Bearer nope"),
            ("connection", "keep-alive"),
            ("x-twilio-signature", "sig"),
            ("cookie", "a=b"),
            ("x-slack-signature", "v0=1"),
            ("x-slack-request-timestamp", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "127.0.0.1:8787"),
            ("i-twilio-idempotency-token", "t-1"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let pairs: Vec<(String, String)> = forwarded_headers(&headers);
        let expected = [
            ("content-type", "application/json"),
            ("user-agent", "Discord-Interactions/1.0"),
            ("i-twilio-idempotency-token", "t-1"),
        ];
        assert_eq!(
            pairs,
            expected.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec()
        );
    }

    #[test]
    fn providers_get_their_own_answers() {
        let discord = ProviderAnswer::DiscordInteraction;
        assert_eq!(
            provider_answer(discord, br#"{"type":2,"id":"1"}"#).2,
            r#"{"type":5}"#
        );
        assert_eq!(
            provider_answer(discord, br#"{"type":1}"#).2,
            r#"{"type":1}"#
        );
        // Not JSON: deferred, and the converter gets to reject it.
        assert_eq!(provider_answer(discord, b"not json").2, r#"{"type":5}"#);
        assert_eq!(
            provider_answer(ProviderAnswer::TwilioTwiml, b"Body=hi"),
            (StatusCode::OK, Some("text/xml"), "<Response/>")
        );
        assert_eq!(
            provider_answer(ProviderAnswer::SlackEmpty, b"x=y"),
            (StatusCode::OK, None, "")
        );
    }

    #[tokio::test]
    async fn non_loopback_needs_an_explicit_opt_in() {
        let stub = Arc::new(
            StubConnector::start(StubConfig::with_secrets(["s"]))
                .await
                .expect("stub"),
        );
        let addr: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        let err = Ingress::start(IngressConfig::new(addr), Arc::clone(&stub))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, IngressError::NotLoopback(a) if a == addr),
            "{err}"
        );
        let mut config = IngressConfig::new(addr);
        config.allow_non_loopback = true;
        Ingress::start(config, stub)
            .await
            .expect("explicitly allowed");
    }

    /// One raw HTTP/1.1 request; returns (status, head, body).
    async fn post(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        exchange(addr, method, path, headers, body.len(), body).await
    }

    /// Like [`post`] with a declared length that may differ from the body.
    async fn exchange(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        declared: usize,
        body: &[u8],
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect ingress");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {declared}\r\n"
        );
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read response");
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    /// A page in the developer's browser cannot post to the ingress: a
    /// cross-site form POST is refused before the body is read, and a
    /// refusal never becomes a forward.
    #[tokio::test]
    async fn browser_requests_are_refused_with_403() {
        let stub = Arc::new(
            StubConnector::start(StubConfig::with_secrets(["s"]))
                .await
                .expect("stub"),
        );
        let ingress = Ingress::start(
            IngressConfig::new("127.0.0.1:0".parse().expect("addr")),
            Arc::clone(&stub),
        )
        .await
        .expect("ingress");
        let own_origin = ingress.url();
        let mut events = ingress.subscribe();
        let form = [("content-type", "application/x-www-form-urlencoded")];
        for extra in [
            ("origin", "https://evil.example"),
            ("origin", "null"),
            ("origin", own_origin.as_str()),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let headers = [form[0], extra];
            let (status, _, body) = post(
                ingress.addr(),
                "POST",
                "/hooks/slack/commands",
                &headers,
                b"command=%2Fask&text=rm",
            )
            .await;
            assert_eq!(status, 403, "{extra:?}: {body}");
            assert!(
                matches!(
                    events.recv().await,
                    Ok(IngressEvent::Refused { status: 403, .. })
                ),
                "{extra:?}"
            );
        }
        // Without those headers (curl, a webhook sender) the request goes on
        // (to 503 here: no gateway is connected), as does a user-typed one.
        for headers in [&form[..], &[form[0], ("sec-fetch-site", "none")]] {
            let (status, _, _) = post(
                ingress.addr(),
                "POST",
                "/hooks/slack/commands",
                headers,
                b"command=%2Fask",
            )
            .await;
            assert_eq!(status, 503, "{headers:?}");
        }
    }

    #[tokio::test]
    async fn webhooks_become_passthrough_forwards() {
        let stub = Arc::new(
            StubConnector::start(StubConfig::with_secrets(["dev-secret"]))
                .await
                .expect("stub"),
        );
        let ingress = Ingress::start(
            IngressConfig::new("127.0.0.1:0".parse().expect("addr")),
            Arc::clone(&stub),
        )
        .await
        .expect("ingress");

        // Nobody connected yet: said plainly rather than silently dropped.
        let (status, _, _) =
            post(ingress.addr(), "POST", "/hooks/slack/commands", &[], b"a=b").await;
        assert_eq!(status, 503);

        // A gateway dials with a real token and says hello.
        let mut request = format!("{}/relay", stub.url())
            .into_client_request()
            .expect("request");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = make_token("gw-test", "dev-secret", 300, now).expect("token");
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("dial stub");
        let hello = GatewayFrame::Hello {
            platform: "relay".into(),
            bot_id: String::new(),
            command_manifest: None,
        };
        futures_util::SinkExt::send(&mut ws, Message::text(hello.encode()))
            .await
            .expect("hello");
        let mut decoder = FrameDecoder::<ConnectorFrame>::new();
        let mut next_frame = async || loop {
            if let Some(frame) = decoder.next_frame() {
                return frame.expect("valid frame");
            }
            match ws.next().await {
                Some(Ok(Message::Text(t))) => decoder.push(t.as_bytes()).expect("push"),
                other => panic!("connection ended: {other:?}"),
            }
        };
        assert!(matches!(next_frame().await, ConnectorFrame::Descriptor(_)));

        let body = br#"{"type":2,"id":"100","data":{"name":"ask"}}"#;
        let (status, head, answer) = post(
            ingress.addr(),
            "POST",
            "/hooks/discord/interactions",
            &[
                ("content-type", "application/json"),
                ("x-signature-ed25519", "ff"),
                ("user-agent", "ua"),
            ],
            body,
        )
        .await;
        assert_eq!((status, answer.as_str()), (200, r#"{"type":5}"#));
        assert!(head.contains("content-type: application/json"), "{head}");
        let ConnectorFrame::PassthroughForward { forward, buffer_id } = next_frame().await else {
            panic!("expected a passthrough_forward");
        };
        assert_eq!(buffer_id, None);
        assert_eq!(
            (forward.platform.as_str(), forward.bot_id.as_str()),
            ("discord", "")
        );
        assert_eq!(
            (forward.method.as_str(), forward.path.as_str()),
            ("POST", "/hooks/discord/interactions")
        );
        assert_eq!(forward.body, body.to_vec());
        let names: Vec<&str> = forward.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-length", "content-type", "user-agent"]);

        let (status, head, answer) = post(
            ingress.addr(),
            "POST",
            "/hooks/twilio/voice",
            &[],
            b"CallSid=CA1",
        )
        .await;
        assert_eq!((status, answer.as_str()), (200, "<Response/>"));
        assert!(head.contains("content-type: text/xml"), "{head}");
        let ConnectorFrame::PassthroughForward { forward, .. } = next_frame().await else {
            panic!("expected a passthrough_forward");
        };
        assert_eq!(
            (forward.platform.as_str(), forward.path.as_str()),
            ("twilio", "/hooks/twilio/voice")
        );

        assert_eq!(
            post(ingress.addr(), "POST", "/hooks/nope", &[], b"")
                .await
                .0,
            404
        );
        assert_eq!(
            post(ingress.addr(), "GET", "/hooks/slack/commands", &[], b"")
                .await
                .0,
            405
        );
        // Refused on the declared length, before any of the body is read.
        let declared = DEFAULT_MAX_BODY + 1;
        assert_eq!(
            exchange(
                ingress.addr(),
                "POST",
                "/hooks/slack/commands",
                &[],
                declared,
                b""
            )
            .await
            .0,
            413
        );

        // Refusals never reach the gateway: the next frame is this Slack one.
        let (status, _, answer) = post(
            ingress.addr(),
            "POST",
            "/hooks/slack/commands",
            &[],
            b"command=%2Fask",
        )
        .await;
        assert_eq!((status, answer.as_str()), (200, ""));
        let ConnectorFrame::PassthroughForward { forward, .. } = next_frame().await else {
            panic!("expected a passthrough_forward");
        };
        assert_eq!(
            (forward.platform.as_str(), forward.body.as_slice()),
            ("slack", &b"command=%2Fask"[..])
        );
    }
}
