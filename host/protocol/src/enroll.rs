//! The two HTTP calls a gateway makes to its connector (relay-contract §7.4),
//! as plain types: the request bodies of `POST /relay/enroll` and
//! `POST /relay/provision`, and the credentials their answer carries. The
//! transport sends them; this module only says what they look like.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The body of `POST /relay/enroll`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollRequest<'a> {
    /// The one-time enrollment token.
    pub enrollment_token: &'a str,
    /// The gateway id asked for.
    pub gateway_id: &'a str,
    /// Where the connector may wake this gateway, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_url: Option<&'a str>,
}

/// The body of `POST /relay/provision`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionRequest<'a> {
    /// The gateway id asked for.
    pub gateway_id: &'a str,
    /// The `hello` identity's platform.
    pub platform: &'a str,
    /// The `hello` identity's bot id.
    pub bot_id: &'a str,
    /// Always empty: this gateway has no inbound endpoint, it dials out.
    pub gateway_endpoint: &'static str,
    /// The route keys this gateway serves.
    pub route_keys: &'a [String],
    /// The instance id, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<&'a str>,
    /// Where the connector may wake this gateway, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_url: Option<&'a str>,
}

/// Credentials a connector issued. `Debug` never prints the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    /// The connector's `gatewayId`, else the one requested.
    pub gateway_id: String,
    /// `secret`, exactly as issued.
    pub secret: String,
    /// `deliveryKey`, when given.
    pub delivery_key: Option<String>,
    /// `tenant`, when given.
    pub tenant: Option<String>,
}

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("gateway_id", &self.gateway_id)
            .field("secret", &"<hidden>")
            .field(
                "delivery_key",
                &self.delivery_key.as_ref().map(|_| "<hidden>"),
            )
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl IssuedCredentials {
    /// Reads a successful answer's body. `None` when it is not JSON or has
    /// no usable `secret` (§7.4: no secret is a failure).
    ///
    /// Secrets are used exactly as issued: a blank one is refused, but one
    /// with surrounding whitespace is not altered (it would no longer
    /// verify). Ids and tenants are trimmed.
    pub fn parse(body: &str, requested_id: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(body).ok()?;
        let text = |k: &str| value.get(k).and_then(Value::as_str);
        let field = |k: &str| {
            text(k)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let secret = |k: &str| text(k).filter(|s| !s.trim().is_empty()).map(str::to_owned);
        Some(Self {
            gateway_id: field("gatewayId").unwrap_or_else(|| requested_id.to_owned()),
            secret: secret("secret")?,
            delivery_key: secret("deliveryKey"),
            tenant: field("tenant"),
        })
    }
}

/// A connector's error message: `error`, `message` or `detail` of a JSON
/// body, else the text itself; whitespace collapsed to one line, at most
/// 300 characters. `None` when empty.
pub fn server_error_text(body: &str) -> Option<String> {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        ["error", "message", "detail"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
    });
    let raw = from_json.as_deref().unwrap_or(body);
    let line: String = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect();
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_need_a_secret() {
        assert_eq!(IssuedCredentials::parse(r#"{"secret":" "}"#, "gw"), None);
        assert_eq!(IssuedCredentials::parse("not json", "gw"), None);
        let c = IssuedCredentials::parse(
            r#"{"secret":"s","deliveryKey":"d","tenant":" t "}"#,
            "gw-req",
        )
        .expect("parses");
        assert_eq!(c.gateway_id, "gw-req");
        assert_eq!(c.secret, "s");
        assert_eq!(c.delivery_key.as_deref(), Some("d"));
        assert_eq!(c.tenant.as_deref(), Some("t"));
        let c = IssuedCredentials::parse(r#"{"secret":" s p "}"#, "gw").expect("parses");
        assert_eq!(c.secret, " s p ", "a secret is never altered");
        assert!(!format!("{c:?}").contains("s p"), "Debug hides the secret");
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
    fn bodies_have_the_contract_shape() {
        let keys = ["k".to_owned()];
        let body = ProvisionRequest {
            gateway_id: "gw",
            platform: "discord",
            bot_id: "b",
            gateway_endpoint: "",
            route_keys: &keys,
            instance_id: Some("i"),
            wake_url: None,
        };
        assert_eq!(
            serde_json::to_value(&body).expect("serializes"),
            json!({"gatewayId":"gw","platform":"discord","botId":"b","gatewayEndpoint":"","routeKeys":["k"],"instanceId":"i"})
        );
        let body = EnrollRequest {
            enrollment_token: "t",
            gateway_id: "gw",
            wake_url: Some("https://w"),
        };
        assert_eq!(
            serde_json::to_value(&body).expect("serializes"),
            json!({"enrollmentToken":"t","gatewayId":"gw","wakeUrl":"https://w"})
        );
    }
}
