//! Link configuration: where to dial, how to authenticate, and every timing
//! knob of relay-contract §6–§7 with its normative default.

use std::fmt;
use std::time::Duration;

/// One identity the gateway announces with a `hello` frame (relay-contract §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The platform this identity fronts (`relay` by default).
    pub platform: String,
    /// The bot id on that platform (`""` by default).
    pub bot_id: String,
}

impl Identity {
    /// An identity for `platform` / `bot_id`.
    pub fn new(platform: impl Into<String>, bot_id: impl Into<String>) -> Self {
        Self {
            platform: platform.into(),
            bot_id: bot_id.into(),
        }
    }
}

impl Default for Identity {
    /// The contract's default identity: platform `relay`, bot id `""`.
    fn default() -> Self {
        Self::new("relay", "")
    }
}

/// The reconnect ladder of relay-contract §7.2: `base`, ×2 per attempt, capped
/// at `max`, with jitter.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// First delay (1 s).
    pub base: Duration,
    /// Ceiling of the ladder (30 s).
    pub max: Duration,
    /// Fraction of each delay that is randomised away (0.0 = none, 1.0 = full
    /// jitter). Jitter only ever shortens a delay, so `max` stays a true cap.
    pub jitter: f64,
    /// A connection that lived at least this long after its handshake resets
    /// the ladder; one that died sooner keeps climbing, so a peer that accepts
    /// and immediately drops us cannot pin us in a 1 s loop.
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.2,
            stable_after: Duration::from_secs(10),
        }
    }
}

/// WebSocket keepalive (relay-contract §7.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// How often a ping is sent (30 s).
    pub ping_interval: Duration,
    /// No pong for this long means the connection is dead (60 s).
    pub dead_after: Duration,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            dead_after: Duration::from_secs(60),
        }
    }
}

/// A configuration the link refuses to start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The relay URL is empty or not a `ws`/`wss`/`http`/`https` URL.
    #[error("relay url {url:?} is not a ws://, wss://, http:// or https:// url")]
    InvalidUrl {
        /// The URL as given.
        url: String,
    },
    /// A gateway id was given but the secret is blank (relay-contract §6.1:
    /// a configuration error, never a silent unauthenticated dial).
    #[error("relay secret is blank for gateway id {gateway_id:?}; set GATEWAY_RELAY_SECRET")]
    BlankSecret {
        /// The configured gateway id.
        gateway_id: String,
    },
    /// A secret was given but the gateway id is blank.
    #[error("relay gateway id is blank; set GATEWAY_RELAY_ID")]
    BlankGatewayId,
    /// Neither id nor secret, and unauthenticated dialling was not allowed.
    #[error("relay credentials missing: set GATEWAY_RELAY_ID and GATEWAY_RELAY_SECRET")]
    MissingCredentials,
}

/// The link's only credential (relay-contract §6.1). `Debug` never prints the
/// secret.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) gateway_id: String,
    pub(crate) secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("gateway_id", &self.gateway_id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Everything [`RelayLink::spawn`](crate::RelayLink::spawn) needs.
///
/// Built with [`RelayConfig::new`], which validates the URL and credentials;
/// the public tuning fields can then be adjusted (tests shorten the timeouts
/// this way).
#[derive(Clone, Debug)]
pub struct RelayConfig {
    dial_url: String,
    credentials: Option<Credentials>,
    /// Identities announced with `hello` on every dial, in order.
    pub identities: Vec<Identity>,
    /// Upper bound on TCP connect + TLS + WebSocket upgrade (30 s).
    pub dial_timeout: Duration,
    /// Upper bound between the upgrade and the first descriptor (30 s).
    pub handshake_timeout: Duration,
    /// How long an outbound action waits for its result (30 s).
    pub outbound_timeout: Duration,
    /// WebSocket keepalive.
    pub keepalive: KeepaliveConfig,
    /// Bound on the decoder's partial-line buffer (16 MiB).
    pub max_partial_line: usize,
    /// Capacity of the inbound item channel handed to the layer above. When it
    /// is full the reader stops reading the socket (backpressure, not drops).
    pub inbound_capacity: usize,
    /// Capacity of the writer's queue of encoded frames.
    pub outbound_queue: usize,
    /// Reconnect ladder.
    pub backoff: BackoffConfig,
    /// Accept any TLS certificate. Local development only; never the default.
    pub accept_invalid_certs: bool,
}

impl RelayConfig {
    /// Validate and build a configuration.
    ///
    /// `url` is the connector base or dial URL (normalised with the protocol's
    /// `dial_url`). Credentials are required unless `allow_unauthenticated`
    /// (local development only) is set: a gateway id with a blank secret, or a
    /// secret with a blank id, is always an error.
    pub fn new(
        url: &str,
        gateway_id: Option<&str>,
        secret: Option<&str>,
        allow_unauthenticated: bool,
    ) -> Result<Self, ConfigError> {
        let dial_url = hermes_protocol::url::dial_url(url);
        let host = dial_url
            .strip_prefix("wss://")
            .or_else(|| dial_url.strip_prefix("ws://"))
            .and_then(|rest| rest.strip_suffix("/relay"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            return Err(ConfigError::InvalidUrl {
                url: url.to_owned(),
            });
        }
        let id = gateway_id.map(str::trim).filter(|s| !s.is_empty());
        let secret = secret.filter(|s| !s.trim().is_empty());
        let credentials = match (id, secret) {
            (Some(id), Some(secret)) => Some(Credentials {
                gateway_id: id.to_owned(),
                secret: secret.to_owned(),
            }),
            (Some(id), None) if !allow_unauthenticated => {
                return Err(ConfigError::BlankSecret {
                    gateway_id: id.to_owned(),
                });
            }
            (None, Some(_)) if !allow_unauthenticated => return Err(ConfigError::BlankGatewayId),
            (None, None) if !allow_unauthenticated => return Err(ConfigError::MissingCredentials),
            _ => None,
        };
        Ok(Self {
            dial_url,
            credentials,
            identities: vec![Identity::default()],
            dial_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(30),
            outbound_timeout: Duration::from_secs(30),
            keepalive: KeepaliveConfig::default(),
            max_partial_line: 16 * 1024 * 1024,
            inbound_capacity: 256,
            outbound_queue: 1024,
            backoff: BackoffConfig::default(),
            accept_invalid_certs: false,
        })
    }

    /// The normalised URL the link dials (`…/relay`).
    pub fn dial_url(&self) -> &str {
        &self.dial_url
    }

    /// The gateway id the upgrade token names, when authenticated.
    pub fn gateway_id(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.gateway_id.as_str())
    }

    pub(crate) fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The platform of the placeholder descriptor: the first identity's.
    pub(crate) fn default_platform(&self) -> &str {
        self.identities
            .first()
            .map_or("relay", |i| i.platform.as_str())
    }
}
