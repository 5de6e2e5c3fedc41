//! The gateway's two HTTP calls to its connector (`relay-contract.md` §7.4):
//! `POST /relay/enroll` (the `enroll` command) and `POST /relay/provision`
//! (at the start of `run`). Both answer with credentials.

use std::time::Duration;

use serde_json::{Value, json};

use crate::settings::Secret;

/// Timeout of each call (§7.4: 15 s).
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The most of a response body that is read. Credentials and error texts are
/// tiny; a connector (or something posing as one) cannot make us buffer more.
pub const MAX_BODY: usize = 64 * 1024;

/// Credentials the connector issued.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The gateway id (the connector's `gatewayId`, else the one requested).
    pub gateway_id: String,
    /// `secret`
    pub secret: Secret,
    /// `deliveryKey`, when given.
    pub delivery_key: Option<Secret>,
    /// `tenant`, when given.
    pub tenant: Option<String>,
}

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

/// `POST <endpoint>` with the bearer and JSON body; returns the credentials.
pub async fn request_credentials(
    endpoint: &str,
    bearer: &Secret,
    body: &Value,
    requested_id: &str,
) -> Result<Credentials, ApiError> {
    let unreachable = |reason: String| ApiError::Unreachable {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| unreachable(describe_reqwest_error(&e)))?;
    let response = client
        .post(endpoint)
        .bearer_auth(bearer.expose())
        .json(body)
        .send()
        .await
        .map_err(|e| unreachable(describe_reqwest_error(&e)))?;
    let status = response.status().as_u16();
    let text = read_bounded(response)
        .await
        .map_err(|e| unreachable(describe_reqwest_error(&e)))?;
    match status {
        200..=299 => parse_credentials(&text, requested_id),
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

/// The enrollment body (§7.4).
pub fn enroll_body(enrollment_token: &Secret, gateway_id: &str, wake_url: Option<&str>) -> Value {
    let mut body = json!({
        "enrollmentToken": enrollment_token.expose(),
        "gatewayId": gateway_id,
    });
    if let (Some(url), Some(map)) = (wake_url, body.as_object_mut()) {
        map.insert("wakeUrl".into(), Value::from(url));
    }
    body
}

/// The provisioning body (§7.4).
pub fn provision_body(
    gateway_id: &str,
    platform: &str,
    bot_id: &str,
    route_keys: &[String],
    instance_id: Option<&str>,
    wake_url: Option<&str>,
) -> Value {
    let mut body = json!({
        "gatewayId": gateway_id,
        "platform": platform,
        "botId": bot_id,
        "gatewayEndpoint": "",
        "routeKeys": route_keys,
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(id) = instance_id {
            map.insert("instanceId".into(), Value::from(id));
        }
        if let Some(url) = wake_url {
            map.insert("wakeUrl".into(), Value::from(url));
        }
    }
    body
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

fn parse_credentials(text: &str, requested_id: &str) -> Result<Credentials, ApiError> {
    let value: Value = serde_json::from_str(text).map_err(|_| ApiError::NoSecret)?;
    let field = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // Secrets are used exactly as issued: a blank one is refused, but one
    // with surrounding whitespace is not altered (it would no longer verify).
    let secret_field = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(Secret::new)
    };
    let secret = secret_field("secret").ok_or(ApiError::NoSecret)?;
    Ok(Credentials {
        gateway_id: field("gatewayId").unwrap_or_else(|| requested_id.to_owned()),
        secret,
        delivery_key: secret_field("deliveryKey"),
        tenant: field("tenant"),
    })
}

/// The server's error message: `error` or `message` of a JSON body, else
/// the text itself; one line, at most 300 characters. `None` when empty.
fn server_error_text(text: &str) -> Option<String> {
    let from_json = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        ["error", "message", "detail"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
    });
    let raw = from_json.unwrap_or_else(|| text.to_owned());
    let line = crate::text::one_line(&raw);
    if line.is_empty() {
        return None;
    }
    Some(line.chars().take(300).collect())
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
    fn credentials_need_a_secret() {
        assert!(matches!(
            parse_credentials(r#"{"secret":" "}"#, "gw"),
            Err(ApiError::NoSecret)
        ));
        assert!(matches!(
            parse_credentials("not json", "gw"),
            Err(ApiError::NoSecret)
        ));
        let c = parse_credentials(r#"{"secret":"s","deliveryKey":"d","tenant":"t"}"#, "gw-req")
            .expect("parses");
        assert_eq!(c.gateway_id, "gw-req");
        assert_eq!(c.secret.expose(), "s");
        assert_eq!(c.delivery_key.as_ref().map(Secret::expose), Some("d"));
        assert_eq!(c.tenant.as_deref(), Some("t"));
        let c = parse_credentials(r#"{"secret":" s p "}"#, "gw").expect("parses");
        assert_eq!(c.secret.expose(), " s p ", "a secret is never altered");
    }

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

    #[test]
    fn server_error_text_prefers_json_error() {
        assert_eq!(
            server_error_text(r#"{"error":"token used"}"#).as_deref(),
            Some("token used")
        );
        assert_eq!(
            server_error_text("plain\ntext ").as_deref(),
            Some("plain text")
        );
        assert_eq!(server_error_text("  "), None);
    }

    #[test]
    fn provision_body_shape() {
        let body = provision_body("gw", "discord", "b", &["k".into()], Some("i"), None);
        assert_eq!(
            body,
            json!({"gatewayId":"gw","platform":"discord","botId":"b","gatewayEndpoint":"","routeKeys":["k"],"instanceId":"i"})
        );
    }
}
