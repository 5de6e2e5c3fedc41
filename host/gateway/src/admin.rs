//! The admin HTTP endpoints of `run --admin ADDR` (HTTP/1, hyper):
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok`; 503 once the relay revoked this gateway |
//! | `GET /readyz` | 200 only while connected with a descriptor and not draining, else 503 with a JSON reason |
//! | `GET /metrics` | Prometheus text: gateway, plugin and transport counters |
//! | `GET /plugins` | JSON: loaded plugins, routing table, per-plugin counters (token) |
//! | `POST /reload` | reload plugins and policy; JSON load report (422 if any file failed; 409 while another reload runs) (token) |
//!
//! The server is built to survive whoever can reach it: it binds loopback
//! unless told otherwise, `/plugins` and `/reload` need the bearer token when
//! one is configured, a client gets [`HEADER_READ_TIMEOUT`] to send each
//! request head and [`CONNECTION_TIMEOUT`] in all, at most
//! [`MAX_CONNECTIONS`] are served at once, accept errors back off, and one
//! reload runs at a time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, bail};
use bytes::Bytes;
use hermes_gateway_core::Metrics;
use hermes_http::Body;
use hermes_plugin_host::PluginHost;
use hermes_transport::{LinkState, RelayHandle};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::Secret;

/// The environment variable (or env-file line) holding the admin token.
pub const TOKEN_ENV: &str = "HERMES_ADMIN_TOKEN";

/// What the endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Gateway counters.
    pub metrics: Arc<Metrics>,
    /// The plugin host.
    pub plugins: PluginHost,
    /// The relay link, once it exists (provisioning may come first).
    pub relay: Arc<OnceLock<RelayHandle>>,
    /// Cancelled when the gateway starts its drain: `/readyz` says so
    /// while the endpoints keep serving until the drain ends.
    pub draining: CancellationToken,
}

/// Where the admin endpoints listen and who may use the guarded ones.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// The address to bind.
    pub addr: SocketAddr,
    /// The bearer token `/plugins` and `/reload` require, when configured.
    pub token: Option<Secret>,
}

impl AdminOptions {
    /// Reads `--admin ADDR`, `--admin-allow-remote` and the token:
    /// `--admin-token-file FILE` (surrounding whitespace ignored), else
    /// `env_token` ([`TOKEN_ENV`]). A token is never taken from argv, where
    /// every user of the machine could read it.
    pub fn resolve(
        addr: &str,
        allow_remote: bool,
        token_file: Option<&Path>,
        env_token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let addr: SocketAddr = addr.parse().map_err(|e| {
            anyhow::anyhow!("--admin {addr:?} is not an address like 127.0.0.1:9464: {e}")
        })?;
        if !is_loopback(addr) && !allow_remote {
            bail!(
                "--admin {addr} is not a loopback address; pass --admin-allow-remote to serve there"
            );
        }
        let token = match token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read --admin-token-file {}", path.display())
                })?;
                let token = Secret::new(text.trim());
                if token.is_blank() {
                    bail!("--admin-token-file {} is empty", path.display());
                }
                Some(token)
            }
            None => env_token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        };
        Ok(Self { addr, token })
    }
}

/// Loopback, including an IPv4-mapped IPv6 loopback address.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Binds the admin address now, so a bad one fails the start.
async fn bind(options: &AdminOptions) -> anyhow::Result<TcpListener> {
    TcpListener::bind(options.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --admin {}: {e}", options.addr))
}

/// The running admin endpoints: they serve until this is dropped (through
/// the drain, which `/readyz` reports).
pub struct Running {
    /// The bound address (port 0 resolved).
    pub addr: Option<SocketAddr>,
    _stop: tokio_util::sync::DropGuard,
}

/// Binds `options.addr` (a bad address fails the start) and serves the
/// endpoints over `state` until the returned [`Running`] is dropped.
pub async fn start(options: AdminOptions, state: AdminState) -> anyhow::Result<Running> {
    let listener = bind(&options).await?;
    let addr = listener.local_addr().ok();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, options, state, stop.child_token()));
    Ok(Running {
        addr,
        _stop: stop.drop_guard(),
    })
}

/// What every connection shares.
struct Server {
    state: AdminState,
    /// The `/metrics` registry, over the same state.
    exposition: crate::exposition::Exposition,
    token: Option<Secret>,
    /// Held for the whole of a reload: one at a time.
    reload: Arc<Mutex<()>>,
}

/// Serves the admin endpoints on `listener` until `shutdown`.
async fn serve(
    listener: TcpListener,
    options: AdminOptions,
    state: AdminState,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, token = options.token.is_some(), "admin endpoints listening");
        if !is_loopback(addr) && options.token.is_none() {
            warn!(
                %addr,
                "admin endpoints reachable beyond loopback without a token: anyone who can connect may read /plugins and POST /reload (set --admin-token-file or {TOKEN_ENV})"
            );
        }
    }
    let exposition = crate::exposition::Exposition::new(
        Arc::clone(&state.metrics),
        state.plugins.clone(),
        Arc::clone(&state.relay),
    );
    let server = Arc::new(Server {
        state,
        exposition,
        token: options.token,
        reload: Arc::new(Mutex::new(())),
    });
    // `hermes_http`'s defaults are the admin server's limits: 64
    // connections (more are closed on accept), 5 s per request head, 60 s
    // per connection, a failing accept backs off instead of spinning.
    let options = hermes_http::ServeOptions::new("admin");
    hermes_http::serve(listener, options, shutdown, move |req| {
        let server = Arc::clone(&server);
        async move { route(&server, req).await }
    })
    .await;
}

/// Whether `headers` carry `Authorization: Bearer <expected>`; always true
/// when no token is configured. The comparison takes the same time
/// wherever the first wrong byte is.
fn authorized(expected: Option<&Secret>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    given.is_some_and(|g| g.as_bytes().ct_eq(expected.expose().as_bytes()).into())
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = value.to_string();
    body.push('\n');
    text(status, body, "application/json")
}

async fn route(server: &Server, req: Request<Incoming>) -> Response<Body> {
    let state = &server.state;
    let path = req.uri().path();
    if matches!(path, "/plugins" | "/reload") && !authorized(server.token.as_ref(), req.headers()) {
        let mut resp = text(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required\n",
            "text/plain",
        );
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hermes-admin\""),
        );
        return resp;
    }
    match (req.method(), path) {
        (&Method::GET, "/healthz") => {
            if link_state(state).is_some_and(|s| matches!(s, LinkState::Revoked)) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "relay access revoked\n",
                    "text/plain",
                )
            } else {
                text(StatusCode::OK, "ok\n", "text/plain")
            }
        }
        (&Method::GET, "/readyz") => {
            let (status, body) = readiness(state);
            json(status, &body)
        }
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            server.exposition.render(),
            crate::exposition::CONTENT_TYPE,
        ),
        (&Method::GET, "/plugins") => json(StatusCode::OK, &plugins_json(&state.plugins)),
        (&Method::POST, "/reload") => reload(server).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/plugins" | "/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
            "text/plain",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

/// `POST /reload`: one reload at a time; a request while one runs gets 409
/// at once rather than a second reload (each compiles every plugin on a
/// blocking thread). The reload runs in its own task holding the lock, so a
/// client that hangs up cannot end it early and let another one start.
async fn reload(server: &Server) -> Response<Body> {
    let Ok(running) = Arc::clone(&server.reload).try_lock_owned() else {
        return json(
            StatusCode::CONFLICT,
            &serde_json::json!({"error": "a reload is already running; retry when it has finished"}),
        );
    };
    let plugins = server.state.plugins.clone();
    let task = tokio::spawn(async move {
        let _running = running;
        plugins.reload().await
    });
    match task.await {
        Ok(report) => {
            crate::serving::log_report(&report);
            let status = if report.is_clean() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json(status, &serde_json::to_value(&report).unwrap_or_default())
        }
        Err(e) => {
            warn!(error = %e, "reload task failed");
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "the reload failed; see the log"}),
            )
        }
    }
}

fn link_state(state: &AdminState) -> Option<LinkState> {
    state.relay.get().map(|h| h.state().borrow().clone())
}

/// `/readyz`: 200 `{"ready":true,"state":"connected"}` only while the link
/// is up with a descriptor and no drain has started; otherwise 503 with the
/// reason a probe or an operator can act on.
fn readiness(state: &AdminState) -> (StatusCode, serde_json::Value) {
    readiness_of(link_state(state), state.draining.is_cancelled())
}

/// [`readiness`] of a link state and whether the drain has started. A
/// revocation outranks the drain it causes: the operator must act on it.
fn readiness_of(link: Option<LinkState>, draining: bool) -> (StatusCode, serde_json::Value) {
    use serde_json::json;
    if draining && !matches!(link, Some(LinkState::Revoked)) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reason": "draining"}),
        );
    }
    let not_ready = |body| (StatusCode::SERVICE_UNAVAILABLE, body);
    match link {
        Some(LinkState::Connected { .. }) => {
            (StatusCode::OK, json!({"ready": true, "state": "connected"}))
        }
        None => not_ready(json!({"ready": false, "reason": "provisioning"})),
        Some(LinkState::Connecting) => not_ready(json!({"ready": false, "reason": "connecting"})),
        Some(LinkState::BackingOff { attempt, delay }) => not_ready(json!({
            "ready": false,
            "reason": "backing off",
            "attempt": attempt,
            "retry_in_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        })),
        Some(LinkState::Revoked) => not_ready(json!({"ready": false, "reason": "revoked"})),
        Some(LinkState::Closed) => not_ready(json!({"ready": false, "reason": "closed"})),
    }
}

/// `GET /plugins` and `plugins check --json`-like output.
pub fn plugins_json(host: &PluginHost) -> serde_json::Value {
    serde_json::json!({
        "plugins": host.plugins(),
        "routing": host.routing_table(),
        "counters": host.counters(),
        "experiments": host.experiments(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_says_why_in_every_state() {
        use serde_json::json;
        let backing_off = LinkState::BackingOff {
            attempt: 3,
            delay: std::time::Duration::from_millis(1500),
        };
        let cases = [
            (
                None,
                false,
                json!({"ready": false, "reason": "provisioning"}),
            ),
            (
                Some(LinkState::Connecting),
                false,
                json!({"ready": false, "reason": "connecting"}),
            ),
            (
                Some(backing_off),
                false,
                json!({"ready": false, "reason": "backing off", "attempt": 3, "retry_in_ms": 1500}),
            ),
            (
                Some(LinkState::Revoked),
                false,
                json!({"ready": false, "reason": "revoked"}),
            ),
            (
                Some(LinkState::Revoked),
                true,
                json!({"ready": false, "reason": "revoked"}),
            ),
            (
                Some(LinkState::Closed),
                false,
                json!({"ready": false, "reason": "closed"}),
            ),
            (
                Some(LinkState::Connecting),
                true,
                json!({"ready": false, "reason": "draining"}),
            ),
        ];
        for (link, draining, body) in cases {
            let seen = readiness_of(link.clone(), draining);
            assert_eq!(seen, (StatusCode::SERVICE_UNAVAILABLE, body), "{link:?}");
        }
    }

    #[test]
    fn bearer_token_is_checked_when_configured() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
            h
        };
        let token = Secret::new("s3cret-token");
        assert!(authorized(None, &HeaderMap::new()), "no token configured");
        assert!(authorized(Some(&token), &with("Bearer s3cret-token")));
        assert!(authorized(Some(&token), &with("bearer  s3cret-token ")));
        for bad in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret",
            "Basic s3cret-token",
            "s3cret-token",
            "Bearer ",
        ] {
            assert!(!authorized(Some(&token), &with(bad)), "{bad:?}");
        }
        assert!(!authorized(Some(&token), &HeaderMap::new()));
    }

    #[test]
    fn remote_addresses_need_the_opt_in_and_tokens_come_from_file_or_env() {
        for local in ["127.0.0.1:0", "[::1]:0", "[::ffff:127.0.0.1]:0"] {
            assert!(
                AdminOptions::resolve(local, false, None, None).is_ok(),
                "{local}"
            );
        }
        let err = AdminOptions::resolve("0.0.0.0:9464", false, None, None).expect_err("remote");
        assert!(err.to_string().contains("--admin-allow-remote"), "{err}");
        assert!(AdminOptions::resolve("0.0.0.0:9464", true, None, None).is_ok());

        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let o = AdminOptions::resolve("127.0.0.1:0", false, Some(&file), Some("from-env"))
            .expect("resolved");
        assert_eq!(o.token.as_ref().map(Secret::expose), Some("from-file"));
        let o = AdminOptions::resolve("127.0.0.1:0", false, None, Some(" from-env ")).expect("env");
        assert_eq!(o.token.as_ref().map(Secret::expose), Some("from-env"));
        let o = AdminOptions::resolve("127.0.0.1:0", false, None, Some("  ")).expect("blank");
        assert!(o.token.is_none());
        std::fs::write(&file, " \n").expect("write");
        assert!(AdminOptions::resolve("127.0.0.1:0", false, Some(&file), None).is_err());
    }
}
