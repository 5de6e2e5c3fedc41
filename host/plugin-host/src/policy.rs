//! The routing policy file (`DIR/policy.toml` or `--policy FILE`).
//!
//! ```toml
//! # Pin the default converter of a platform (required when two loaded
//! # plugins claim it) and give it configuration.
//! [platform.discord]
//! plugin = "discord-interactions"
//! config = { options = "positional" }
//! isolation = "per-tenant"   # warm instances per tenant (default per-request)
//!
//! # Per tenant: forwards of `platform` whose `tenant-of` key is `tenant`.
//! [[route]]
//! platform = "discord"
//! tenant = "81384788765712384"
//! plugin = "discord-interactions"
//! config = { options = "named" }
//!
//! # Per profile (optionally only for one platform, optionally with a tenant).
//! [[route]]
//! profile = "coder"
//! plugin = "discord-interactions"
//!
//! # A plugin pulled from an OCI registry, pinned by digest (`sources.rs`),
//! # loaded beside the directory's `*.wasm` files.
//! [[source]]
//! oci = "oci://registry.example/hermes/discord@sha256:…"
//! ```
//!
//! A forward goes to the most specific matching `[[route]]` (a tenant match
//! beats a profile match, which beats a platform-only match; equal
//! specificity: first in the file), else to the platform's pinned plugin,
//! else to the one loaded plugin that lists the platform. A route or pin only
//! ever sends a platform to a plugin that lists it: a profile-only route
//! applies to its plugin's platforms, and a pin or platform route naming a
//! plugin that does not list the platform is a load error. The tenant key is
//! asked of the platform's default plugin, and only when a `[[route]]` names
//! a tenant for that platform. The configuration a plugin sees
//! through `config(key)` is the matched route's `config`, or the platform's
//! `config` when no route matched — never a merge, so what a tenant gets is
//! written in one place.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The parsed policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Per-platform pins and configuration, keyed by forward platform.
    #[serde(default)]
    pub platform: BTreeMap<String, PlatformPolicy>,
    /// Tenant and profile overrides, in file order.
    #[serde(default)]
    pub route: Vec<RouteRule>,
    /// Plugins pulled from an OCI registry (`sources.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<SourceRule>,
}

/// `[[source]]`: a plugin from an OCI registry, pinned by digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRule {
    /// `oci://HOST/REPO@sha256:…`.
    pub oci: String,
    /// Accept a tag (`oci://HOST/REPO:TAG`), resolved to a digest at each
    /// load and logged. Off by default: a tag can move under a fleet.
    #[serde(default)]
    pub allow_tag: bool,
}

/// `[platform.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformPolicy {
    /// The plugin (by `describe()` name) converting this platform.
    pub plugin: Option<String>,
    /// Configuration for forwards no `[[route]]` matched.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Source platforms events may claim besides the forward's own
    /// (conversion.md §3.1; see [`Grant`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant_platforms: Vec<String>,
    /// `follow-up` capability kinds replies may use besides the defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant_follow_up: Vec<String>,
    /// Whether an instance may serve more than one forward (see [`Isolation`]).
    #[serde(default, skip_serializing_if = "Isolation::is_default")]
    pub isolation: Isolation,
    /// A candidate converter tried on the same forwards, off the live path
    /// (`experiment.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// The share of forwards the shadow sees, 0.0 to 1.0 (default 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_sample: Option<Share>,
    /// A candidate serving a share of the conversations for real.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

impl Policy {
    /// Whether any route or platform has a shadow or canary candidate.
    pub(crate) fn has_experiments(&self) -> bool {
        self.platform
            .values()
            .any(|p| p.shadow.is_some() || p.canary.is_some())
            || self
                .route
                .iter()
                .any(|r| r.shadow.is_some() || r.canary.is_some())
    }
}

/// `canary = { plugin = "NAME", percent = N }`: N% of the conversations
/// (by a hash of their session key, so one conversation never flips) are
/// converted by the candidate. It is rolled back — taken out of the route
/// until the next reload — when its fault rate over the last `window` of
/// its conversions exceeds the active plugin's over its last `window` by
/// more than `margin`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The candidate (by `describe()` name).
    pub plugin: String,
    /// 0 to 100.
    pub percent: u8,
    /// Conversions each side is judged over (default 50).
    #[serde(default = "Canary::default_window")]
    pub window: usize,
    /// How much higher the candidate's fault rate may be (default 0.1).
    #[serde(default = "Canary::default_margin")]
    pub margin: f64,
}

impl Canary {
    fn default_window() -> usize {
        50
    }

    fn default_margin() -> f64 {
        0.1
    }
}

impl Eq for Canary {}

/// A share of the forwards, 0.0 to 1.0 (`shadow_sample`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Share(pub f64);

impl Eq for Share {}

/// How far apart a plugin's conversions are kept.
///
/// ```toml
/// [platform.discord]
/// isolation = "per-tenant"
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh store and instance for every forward (the default): nothing
    /// a guest does outlives the request.
    #[default]
    PerRequest,
    /// An instance may serve the next forward of the same plugin load,
    /// configuration, profile and tenant; it is retired on any failure,
    /// after a number of uses, and on every reload (`reuse.rs`). Faster
    /// (no start-up per forward), and a guest's state persists across one
    /// tenant's requests — never across tenants.
    PerTenant,
}

impl Isolation {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What an operator grants a converter beyond the defaults of
/// conversion.md §3.1 (a forward of platform `P` may only produce events
/// of `P` — `twilio`: `sms`, `whatsapp`, `voice` — and only the follow-up
/// kind of its own platform). Written in `[platform.P]` (for every forward
/// of `P`) or in a `[[route]]` (for the forwards it routes):
///
/// ```toml
/// [[route]]
/// platform = "acme"
/// tenant = "t-1"
/// plugin = "acme-bridge"
/// grant_platforms = ["acme-sms"]       # events may also claim this platform
/// grant_follow_up = ["acme.reply_url"] # and answer through this capability
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Source platforms events may claim besides the forward's own.
    pub platforms: Vec<String>,
    /// `follow-up` capability kinds replies may use besides the defaults.
    pub follow_up: Vec<String>,
}

impl Grant {
    /// This grant plus `platforms` and `follow_up`.
    pub(crate) fn with(mut self, platforms: &[String], follow_up: &[String]) -> Grant {
        self.platforms.extend(platforms.iter().cloned());
        self.follow_up.extend(follow_up.iter().cloned());
        self
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Forward platform this rule applies to (any when absent).
    pub platform: Option<String>,
    /// Tenant key (`tenant-of`) this rule applies to; needs `platform`.
    pub tenant: Option<String>,
    /// Profile this rule applies to.
    pub profile: Option<String>,
    /// The plugin to use (by `describe()` name).
    pub plugin: String,
    /// Configuration the plugin reads through `config(key)`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Source platforms events may claim besides the forward's own
    /// (conversion.md §3.1; see [`Grant`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant_platforms: Vec<String>,
    /// `follow-up` capability kinds replies may use besides the defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant_follow_up: Vec<String>,
    /// Overrides the platform's [`Isolation`] for the forwards this rule
    /// routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// A shadow candidate for the forwards this rule routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// The share of them the shadow sees (default 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_sample: Option<Share>,
    /// A canary candidate for the forwards this rule routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

impl RouteRule {
    /// Specificity for ranking: tenant, then profile, then platform.
    pub(crate) fn rank(&self) -> (bool, bool, bool) {
        (
            self.tenant.is_some(),
            self.profile.is_some(),
            self.platform.is_some(),
        )
    }

    pub(crate) fn matches(
        &self,
        platform: &str,
        profile: Option<&str>,
        tenant: Option<&str>,
    ) -> bool {
        self.platform.as_deref().is_none_or(|p| p == platform)
            && self.profile.as_deref().is_none_or(|p| Some(p) == profile)
            && self.tenant.as_deref().is_none_or(|t| Some(t) == tenant)
    }
}

impl Policy {
    /// Parse and check a policy document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let policy: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, r) in policy.route.iter().enumerate() {
            if r.tenant.is_none() && r.profile.is_none() {
                return Err(format!(
                    "route #{} (plugin `{}`) names neither a tenant nor a profile; pin a platform's plugin with [platform.NAME] instead",
                    i + 1,
                    r.plugin
                ));
            }
            if r.tenant.is_some() && r.platform.is_none() {
                return Err(format!(
                    "route #{} (plugin `{}`) has a tenant but no platform; tenant keys only mean something within a platform",
                    i + 1,
                    r.plugin
                ));
            }
        }
        Ok(policy)
    }

    /// Read the policy file; a missing file is the empty policy.
    pub fn load(path: &Path) -> Result<Self, String> {
        crate::ownership::check(path)?;
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
[platform.discord]
plugin = "discord-interactions"
config = { options = "positional" }

[[route]]
platform = "discord"
tenant = "81384788765712384"
plugin = "discord-interactions"
config = { options = "named" }

[[route]]
profile = "coder"
plugin = "discord-interactions"
"#;
        let p = Policy::parse(text).expect("valid policy");
        assert_eq!(
            p.platform["discord"].plugin.as_deref(),
            Some("discord-interactions")
        );
        assert_eq!(p.route.len(), 2);
        assert_eq!(p.route[0].config["options"], "named");
        assert!(p.route[1].matches("slack", Some("coder"), None));
        assert!(!p.route[0].matches("discord", None, Some("1")));
    }

    #[test]
    fn rejects_unknown_keys_and_meaningless_routes() {
        assert!(Policy::parse("[platform.discord]\nplugn = \"x\"\n").is_err());
        assert!(Policy::parse("[[route]]\nplugin = \"x\"\n").is_err());
        assert!(Policy::parse("[[route]]\ntenant = \"1\"\nplugin = \"x\"\n").is_err());
    }
}
