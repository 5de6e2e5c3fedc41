//! The gateway's two HTTP calls to its connector (relay-contract §7.4):
//! `POST /relay/enroll` and `POST /relay/provision`. The bodies and the
//! answer's shape live in `hermes_protocol::enroll`; this module sends them,
//! reads a bounded answer, and turns HTTP statuses into errors that say what
//! to do. Provisioning retries on the link's own reconnect ladder
//! ([`BackoffConfig`]), so the process has one backoff.

use std::time::Duration;

use hermes_protocol::enroll::{IssuedCredentials, ProvisionRequest, server_error_text};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::BackoffConfig;

/// Timeout of each call (§7.4: 15 s).
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The most of a response body that is read. Credentials and error texts are
/// tiny; a connector (or something posing as one) cannot make us buffer more.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a call failed. Each message is one line and names what to do.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// HTTP 401.
    #[error(
        "the connector rejected the identity token (HTTP 401): check --identity-token / HERMES_IDENTITY_TOKEN"
    )]
    Unauthorized,
    /// HTTP 403, with the server's reason or the usual causes.
    #[error("the connector refused the {credential} (HTTP 403): {reason}")]
    Forbidden {
        /// What was refused: the enrollment token (`enroll`) or the identity
        /// token (provisioning).
        credential: &'static str,
        /// The server's reason, or the usual causes for this call.
        reason: String,
    },
    /// No connection, DNS failure, TLS failure, timeout.
    #[error("could not reach the connector at {endpoint}: {reason}")]
    Unreachable {
        /// The URL called.
        endpoint: String,
        /// Why, in a few words.
        reason: String,
    },
    /// Another HTTP status.
    #[error("the connector answered HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body, one line.
        body: String,
    },
    /// A success without a usable `secret`.
    #[error("the connector's answer has no secret; nothing was written")]
    NoSecret,
}

/// `POST <endpoint>` with the bearer and JSON `body`; returns the issued
/// credentials (`requested_id` when the answer names no gateway id).
pub async fn request_credentials(
    endpoint: &str,
    bearer: &str,
    body: &impl Serialize,
    requested_id: &str,
) -> Result<IssuedCredentials, ApiError> {
    let unreachable = |e: reqwest::Error| ApiError::Unreachable {
        endpoint: endpoint.to_owned(),
        reason: describe_reqwest_error(&e),
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(unreachable)?;
    let response = client
        .post(endpoint)
        .bearer_auth(bearer)
        .json(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = read_bounded(response).await.map_err(unreachable)?;
    match status {
        200..=299 => IssuedCredentials::parse(&text, requested_id).ok_or(ApiError::NoSecret),
        401 => Err(ApiError::Unauthorized),
        403 => {
            let (credential, usual) = forbidden_wording(endpoint);
            Err(ApiError::Forbidden {
                credential,
                reason: server_error_text(&text).unwrap_or_else(|| usual.to_owned()),
            })
        }
        _ => Err(ApiError::Status {
            status,
            body: server_error_text(&text).unwrap_or_default(),
        }),
    }
}

/// Provisioning at start (§7.4): retried on the reconnect ladder until it
/// works, or `None` once `shutdown` is cancelled. Never fatal; each failure
/// is one log line with the delay before the next attempt.
pub async fn provision(
    endpoint: &str,
    identity_token: &str,
    request: &ProvisionRequest<'_>,
    backoff: BackoffConfig,
    shutdown: &CancellationToken,
) -> Option<IssuedCredentials> {
    let mut ladder = Backoff::new(backoff);
    loop {
        info!(%endpoint, gateway_id = request.gateway_id, "provisioning relay credentials");
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return None,
            r = request_credentials(endpoint, identity_token, request, request.gateway_id) => r,
        };
        let error = match attempt {
            Ok(creds) => {
                info!(gateway_id = %creds.gateway_id, "provisioned (credentials held in memory only)");
                return Some(creds);
            }
            Err(e) => e,
        };
        let (attempt, delay) = ladder.next_delay(rand::random::<f64>());
        warn!(
            attempt,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "provisioning failed: {error}"
        );
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// What a 403 refused and its usual causes, by call: `enroll` presents an
/// enrollment token, provisioning the identity token.
fn forbidden_wording(endpoint: &str) -> (&'static str, &'static str) {
    if endpoint.trim_end_matches('/').ends_with("/provision") {
        (
            "identity token",
            "this identity may not provision a gateway here (tenant mismatch or not allowed)",
        )
    } else {
        (
            "enrollment token",
            "invalid, expired, already used, or tenant mismatch",
        )
    }
}

/// The body as text, reading at most [`MAX_BODY`] bytes of it.
async fn read_bounded(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A reqwest error in a few words, without repeating the URL.
fn describe_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", TIMEOUT.as_secs());
    }
    // The innermost cause is the informative one ("Connection refused").
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if e.is_connect() && !text.to_ascii_lowercase().contains("connect") {
        format!("connection failed: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_403_names_the_credential_of_the_call() {
        assert_eq!(
            forbidden_wording("https://c.example/relay/enroll").0,
            "enrollment token"
        );
        assert_eq!(
            forbidden_wording("https://c.example/relay/provision").0,
            "identity token"
        );
    }
}
