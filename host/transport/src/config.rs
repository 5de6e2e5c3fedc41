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
    /// A plaintext (`ws://`, `http://`) URL to a host that is not loopback:
    /// the upgrade token and all traffic would cross the network in clear.
    #[error(
        "relay URL is plaintext (ws:// or http://) to {host:?}, which is not loopback: the relay secret and every message would cross the network unencrypted; use wss:// or https://, or pass --allow-plaintext (GATEWAY_RELAY_ALLOW_PLAINTEXT=1)"
    )]
    Plaintext {
        /// The host the URL names.
        host: String,
    },
    /// A gateway id was given but the secret is blank (relay-contract §6.1:
    /// a configuration error, never a silent unauthenticated dial).
    #[error(
        "GATEWAY_RELAY_SECRET is blank while GATEWAY_RELAY_ID is set ({gateway_id:?}): set the secret (`hermes-gateway enroll` writes it) or HERMES_IDENTITY_TOKEN to provision one; --allow-unauthenticated dials without credentials (local development only)"
    )]
    BlankSecret {
        /// The configured gateway id.
        gateway_id: String,
    },
    /// A secret was given but the gateway id is blank.
    #[error(
        "GATEWAY_RELAY_ID is blank while GATEWAY_RELAY_SECRET is set: set the id (`hermes-gateway enroll` writes both)"
    )]
    BlankGatewayId,
    /// Neither id nor secret, and unauthenticated dialling was not allowed.
    #[error(
        "no relay credentials: set GATEWAY_RELAY_ID and GATEWAY_RELAY_SECRET (`hermes-gateway enroll` writes them) or HERMES_IDENTITY_TOKEN to provision them; --allow-unauthenticated dials without credentials (local development only)"
    )]
    MissingCredentials,
}

/// The link's only credential (relay-contract §6.1), checked by
/// [`RelayConfig::check_credentials`]. `Debug` never prints the secret.
#[derive(Clone)]
pub struct Credentials {
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

/// What a local-development setup may relax. Both are refused by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevAllowances {
    /// Dial without credentials when none are configured.
    pub unauthenticated: bool,
    /// Dial a host that is not loopback over plaintext `ws://` / `http://`.
    /// Loopback (`localhost`, 127.0.0.0/8, `::1`) is always allowed.
    pub plaintext: bool,
}

/// Default bound of inbound items waiting for the layer above, in bytes of
/// the lines they came from (64 MiB).
pub const DEFAULT_INBOUND_BYTE_BUDGET: usize = 64 * 1024 * 1024;

/// Default bound of encoded frames waiting for the writer, in bytes (16 MiB).
pub const DEFAULT_OUTBOUND_BYTE_BUDGET: usize = 16 * 1024 * 1024;

/// Default bound of a frame's line and of one WebSocket message's unfinished
/// tail (16 MiB; relay-contract §2).
pub const DEFAULT_MAX_PARTIAL_LINE: usize = 16 * 1024 * 1024;

/// Everything [`RelayLink::spawn`](crate::RelayLink::spawn) needs.
///
/// Built with [`RelayConfig::new`], which validates the URL and credentials;
/// the public tuning fields can then be adjusted (tests shorten the timeouts
/// this way).
#[derive(Clone, Debug)]
pub struct RelayConfig {
    dial_url: String,
    credentials: Option<Credentials>,
    allow_plaintext: bool,
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
    /// Bound on the decoder's partial-line buffer (16 MiB). A WebSocket
    /// message or frame may be at most this plus 64 KiB (tungstenite's
    /// `max_message_size` / `max_frame_size`), so one message never holds
    /// more than one bounded line and the complete lines before it.
    pub max_partial_line: usize,
    /// Largest decoded `passthrough_forward` body (1 MiB, the plugin host's
    /// default `max_body_bytes`). A larger one is refused as
    /// `payload_too_large` before its base64 is decoded and surfaces as
    /// [`InboundItem::Dropped`](crate::InboundItem::Dropped).
    pub max_forward_body: usize,
    /// Capacity of the inbound item channel handed to the layer above, in
    /// items. When it is full the reader stops reading the socket
    /// (backpressure, not drops).
    pub inbound_capacity: usize,
    /// The same channel's bound in bytes (64 MiB), counted as the length of
    /// the line each item came from. When the items the layer above has not
    /// taken yet reach it, the reader stops reading the socket until one is
    /// taken. A single item larger than the whole budget still passes when
    /// nothing else waits, so nothing is ever stuck.
    pub inbound_byte_budget: usize,
    /// Capacity of the writer's queue of encoded frames, in frames.
    pub outbound_queue: usize,
    /// The writer's queue bound in bytes of encoded frames (16 MiB): callers
    /// wait for room (an outbound action within its timeout).
    pub outbound_byte_budget: usize,
    /// Reconnect ladder.
    pub backoff: BackoffConfig,
    /// Accept any TLS certificate. Local development only; never the default.
    pub accept_invalid_certs: bool,
}

impl RelayConfig {
    /// Validate and build a configuration that refuses plaintext to a host
    /// that is not loopback.
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
        let allow = DevAllowances {
            unauthenticated: allow_unauthenticated,
            plaintext: false,
        };
        Self::with_allowances(url, gateway_id, secret, allow)
    }

    /// [`new`](Self::new) with everything local development may relax.
    pub fn with_allowances(
        url: &str,
        gateway_id: Option<&str>,
        secret: Option<&str>,
        allow: DevAllowances,
    ) -> Result<Self, ConfigError> {
        let dial_url = Self::validate_url(url, allow.plaintext)?;
        let credentials = Self::check_credentials(gateway_id, secret, allow.unauthenticated)?;
        Ok(Self {
            dial_url,
            credentials,
            allow_plaintext: allow.plaintext,
            identities: vec![Identity::default()],
            dial_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(30),
            outbound_timeout: Duration::from_secs(30),
            keepalive: KeepaliveConfig::default(),
            max_partial_line: DEFAULT_MAX_PARTIAL_LINE,
            max_forward_body: hermes_protocol::forward::DEFAULT_MAX_BODY_BYTES,
            inbound_capacity: 256,
            inbound_byte_budget: DEFAULT_INBOUND_BYTE_BUDGET,
            outbound_queue: 1024,
            outbound_byte_budget: DEFAULT_OUTBOUND_BYTE_BUDGET,
            backoff: BackoffConfig::default(),
            accept_invalid_certs: false,
        })
    }

    /// Check a relay URL the way [`new`](Self::new) does and return the
    /// URL to dial. This is the one place the rule lives: callers that want
    /// the error early (before provisioning over the same URL) call it too.
    ///
    /// The URL must be `ws`, `wss`, `http` or `https` with a host. A plaintext
    /// one (`ws://`, `http://`) is refused unless its host is loopback
    /// (`localhost`, 127.0.0.0/8, `::1`) or `allow_plaintext` is set: the
    /// upgrade token and every frame would otherwise cross the network in
    /// clear.
    pub fn validate_url(url: &str, allow_plaintext: bool) -> Result<String, ConfigError> {
        use hermes_protocol::url;
        let dial_url = url::dial_url(url);
        let invalid = || ConfigError::InvalidUrl {
            url: url.to_owned(),
        };
        if !(dial_url.starts_with("wss://") || dial_url.starts_with("ws://")) {
            return Err(invalid());
        }
        let host = url::host(&dial_url).ok_or_else(invalid)?;
        if url::is_plaintext(&dial_url) && !allow_plaintext && !url::is_loopback_host(host) {
            return Err(ConfigError::Plaintext {
                host: host.to_owned(),
            });
        }
        Ok(dial_url)
    }

    /// The one rule for the upgrade credentials (relay-contract §6.1): an id
    /// and a non-blank secret, or, only when `allow_unauthenticated`, none
    /// (`Ok(None)`). An id with a blank secret or a secret without an id is
    /// a configuration error, never a silent unauthenticated dial. Callers
    /// that resolve settings before building the link call it too.
    pub fn check_credentials(
        gateway_id: Option<&str>,
        secret: Option<&str>,
        allow_unauthenticated: bool,
    ) -> Result<Option<Credentials>, ConfigError> {
        let id = gateway_id.map(str::trim).filter(|s| !s.is_empty());
        let secret = secret.filter(|s| !s.trim().is_empty());
        match (id, secret) {
            (Some(id), Some(secret)) => Ok(Some(Credentials {
                gateway_id: id.to_owned(),
                secret: secret.to_owned(),
            })),
            _ if allow_unauthenticated => Ok(None),
            (Some(id), None) => Err(ConfigError::BlankSecret {
                gateway_id: id.to_owned(),
            }),
            (None, Some(_)) => Err(ConfigError::BlankGatewayId),
            (None, None) => Err(ConfigError::MissingCredentials),
        }
    }

    /// Whether plaintext to a host that is not loopback was allowed.
    pub fn allows_plaintext(&self) -> bool {
        self.allow_plaintext
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
