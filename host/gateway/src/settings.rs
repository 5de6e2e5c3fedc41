//! Settings for `run`: environment, env file, config file and flags, merged
//! in the order of `relay-contract.md` §8 — flag > environment > env file >
//! config file > default (`--relay-url` overrides everything).
//!
//! Resolution is a pure function of its inputs ([`Settings::resolve`]), so it
//! is tested without touching the process environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hermes_transport::{ConfigError, RelayConfig};
use serde::Deserialize;

use crate::env_file;

mod secret;
mod streaming;
pub use secret::Secret;
pub use streaming::StreamingFile;

/// A misconfiguration, reported as one line and exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// No relay URL anywhere.
    #[error(
        "no relay URL: set GATEWAY_RELAY_URL (environment or env file), gateway.relay_url in the config file, or pass --relay-url"
    )]
    MissingUrl,
    /// The relay URL has a scheme the gateway cannot dial.
    #[error("relay URL {0:?} must start with http://, https://, ws:// or wss://")]
    BadUrl(String),
    /// `HERMES_AGENT_ENV` names one of the gateway's own credentials.
    #[error(
        "HERMES_AGENT_ENV names {0}, one of the gateway's own credentials: it is never passed to an agent command"
    )]
    AgentEnvCredential(String),
    /// The relay URL or credentials break the link's rules (plaintext to a
    /// remote host, an id without a secret, …): the transport's one check.
    #[error(transparent)]
    Relay(#[from] hermes_transport::ConfigError),
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file (`config file`, `env file`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for our schema.
    #[error("invalid config file {path}: {message}")]
    ConfigParse {
        /// Its path.
        path: PathBuf,
        /// The parser's message, flattened to one line.
        message: String,
    },
    /// `HERMES_RUNTIME_THREADS` is not a number from 1 to 256.
    #[error("HERMES_RUNTIME_THREADS={0:?} is not a number of threads from 1 to 256")]
    BadThreads(String),
    /// A boolean variable with a value that is not a boolean.
    #[error("{name}={value:?} is not a boolean (use 1/0, true/false, yes/no, on/off)")]
    BadBool {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

/// Environment lookup in two layers: the real process environment over the
/// env file. Equivalent to loading the env file "without overriding
/// variables already set", without mutating the process environment.
#[derive(Debug, Default, Clone)]
pub struct EnvLayers {
    process: HashMap<String, String>,
    file: HashMap<String, String>,
}

impl EnvLayers {
    /// Builds the layers from explicit maps (tests).
    #[cfg(test)]
    pub fn from_maps(process: HashMap<String, String>, file: HashMap<String, String>) -> Self {
        Self { process, file }
    }

    /// The process environment over the env file at `explicit` (an error
    /// when unreadable or missing) or at the default path (skipped when
    /// missing).
    pub fn load(explicit: Option<&Path>) -> Result<Self, SettingsError> {
        let (path, must_exist) = match explicit {
            Some(p) => (Some(p.to_path_buf()), true),
            None => (env_file::default_path(), false),
        };
        let mut file = HashMap::new();
        if let Some(path) = path {
            let read = env_file::read(&path).map_err(|source| SettingsError::Read {
                what: "env file",
                path: path.clone(),
                source,
            })?;
            match read {
                Some(pairs) => file.extend(pairs),
                None if must_exist => {
                    return Err(SettingsError::Read {
                        what: "env file",
                        path,
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    });
                }
                None => {}
            }
        }
        Ok(Self::over_file(file))
    }

    /// The process environment over the pairs of an env file already read
    /// (`enroll` reads the file it is about to rewrite).
    pub fn over_file(file: impl IntoIterator<Item = (String, String)>) -> Self {
        let process = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self {
            process,
            file: file.into_iter().collect(),
        }
    }

    /// The value of `key`: the process environment first, then the env file.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.process
            .get(key)
            .or_else(|| self.file.get(key))
            .map(String::as_str)
    }

    /// The value of `key` from the highest layer where it is set and not
    /// blank (untrimmed): a blank variable counts as unset and hides nothing
    /// below it.
    pub fn get_set(&self, key: &str) -> Option<&str> {
        let set = |v: &&String| !v.trim().is_empty();
        self.process
            .get(key)
            .filter(set)
            .or_else(|| self.file.get(key).filter(set))
            .map(String::as_str)
    }

    /// The value of `key` when set and not blank, trimmed.
    pub fn get_nonblank(&self, key: &str) -> Option<&str> {
        self.get(key).map(str::trim).filter(|v| !v.is_empty())
    }

    fn get_bool(&self, name: &'static str) -> Result<Option<bool>, SettingsError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "" | "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(SettingsError::BadBool {
                name,
                value: raw.to_owned(),
            }),
        }
    }
}

/// Route keys in the config file: a TOML array or one comma-separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteKeys {
    /// `["a", "b"]`
    List(Vec<String>),
    /// `"a,b"`
    Csv(String),
}

impl RouteKeys {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::List(v) => v
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            Self::Csv(s) => split_csv(&s),
        }
    }
}

fn split_csv(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The config file (`--config FILE`, TOML). Unknown keys are errors: a
/// misspelt `relay_secret` must not silently become "no secret".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[gateway]`
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// `[agent]`
    #[serde(default)]
    pub agent: AgentConfig,
    /// `[streaming]`
    #[serde(default)]
    pub streaming: StreamingFile,
}

/// `[gateway]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `relay_url`
    pub relay_url: Option<String>,
    /// `relay_id`
    pub relay_id: Option<String>,
    /// `relay_secret`
    pub relay_secret: Option<String>,
    /// `relay_delivery_key`
    pub relay_delivery_key: Option<String>,
    /// `relay_route_keys`
    pub relay_route_keys: Option<RouteKeys>,
    /// `group_sessions_per_user` (default true)
    pub group_sessions_per_user: Option<bool>,
    /// `thread_sessions_per_user` (default false)
    pub thread_sessions_per_user: Option<bool>,
}

/// `[agent]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `spec`: `echo`, `exec:COMMAND` or `openai:BASE_URL`.
    pub spec: Option<String>,
    /// `model` for `openai:` agents.
    pub model: Option<String>,
}

impl ConfigFile {
    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        toml::from_str(text).map_err(|e| SettingsError::ConfigParse {
            path: path.to_path_buf(),
            message: crate::text::one_line(&e.to_string()),
        })
    }

    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            what: "config file",
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

/// How the gateway authenticates its dial (`relay-contract.md` §6.1, §7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAuth {
    /// Id and secret are configured.
    Pinned {
        /// `GATEWAY_RELAY_ID`
        id: String,
        /// `GATEWAY_RELAY_SECRET`
        secret: Secret,
    },
    /// Obtain id and secret by provisioning at start.
    Provision {
        /// The gateway id to provision (`GATEWAY_RELAY_ID` or `gw-<hostname>`).
        gateway_id: String,
        /// `HERMES_IDENTITY_TOKEN`
        identity_token: Secret,
    },
    /// Dial without a token (explicitly allowed for local development).
    Unauthenticated,
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The configured URL, trimmed, trailing `/` removed.
    pub url: String,
    /// How to authenticate.
    pub auth: RelayAuth,
    /// `GATEWAY_RELAY_DELIVERY_KEY`
    pub delivery_key: Option<Secret>,
    /// Hello identity platform (default `relay`).
    pub platform: String,
    /// Hello identity bot id (default empty).
    pub bot_id: String,
    /// Route keys for provisioning.
    pub route_keys: Vec<String>,
    /// Provisioning extra.
    pub wake_url: Option<String>,
    /// Provisioning extra.
    pub instance_id: Option<String>,
    /// Plaintext to a host that is not loopback was allowed
    /// (`--allow-plaintext`, `GATEWAY_RELAY_ALLOW_PLAINTEXT`).
    pub allow_plaintext: bool,
}

/// Session-key settings (`relay-contract.md` §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Default true.
    pub group_sessions_per_user: bool,
    /// Default false.
    pub thread_sessions_per_user: bool,
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The agent spec (default `echo`).
    pub spec: String,
    /// Model for `openai:` agents.
    pub model: Option<String>,
    /// `OPENAI_API_KEY`
    pub openai_api_key: Option<Secret>,
    /// Variables passed to an `exec:` agent on top of its base environment:
    /// those `HERMES_AGENT_ENV` names (comma-separated) that are set, from
    /// the process environment or the env file.
    pub exec_env: Vec<(String, Secret)>,
}

impl AgentSettings {
    /// The agent `spec` with `model`, and its key and `exec:` environment
    /// from `env` (`run` and `dev` read them the same way).
    pub fn from_env(
        spec: String,
        model: Option<String>,
        env: &EnvLayers,
    ) -> Result<Self, SettingsError> {
        Ok(Self {
            spec,
            model,
            openai_api_key: env.get_nonblank("OPENAI_API_KEY").map(Secret::new),
            exec_env: agent_env(env)?,
        })
    }
}

/// Everything `run` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The relay link.
    pub relay: RelaySettings,
    /// Session keys.
    pub sessions: SessionSettings,
    /// The agent.
    pub agent: AgentSettings,
    /// Streamed replies (`[streaming]`).
    pub streaming: hermes_gateway_core::StreamingConfig,
    /// Threads serving the link, the conversions and the turns
    /// (`HERMES_RUNTIME_THREADS`, default 1; see `serving::runtime`).
    pub runtime_threads: usize,
}

/// Values given on the command line (they win over everything).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--relay-url`
    pub relay_url: Option<String>,
    /// `--agent` (clap also fills it from the process's `HERMES_AGENT`).
    pub agent: Option<String>,
    /// `--model`
    pub model: Option<String>,
    /// `--allow-unauthenticated`
    pub allow_unauthenticated: bool,
    /// `--allow-plaintext`
    pub allow_plaintext: bool,
}

fn nonblank(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Normalizes a configured relay URL (§7.1: trimmed, trailing `/` removed)
/// and checks its scheme. The scheme is lowercased (schemes are
/// case-insensitive, but the dial-URL rules match them literally), so
/// `HTTPS://relay.example` dials `wss://relay.example/relay`.
pub fn normalize_relay_url(raw: &str) -> Result<String, SettingsError> {
    let url = raw.trim().trim_end_matches('/');
    let scheme = ["http://", "https://", "ws://", "wss://"]
        .into_iter()
        .find(|s| {
            url.get(..s.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(s))
        });
    match scheme {
        Some(scheme) => Ok(format!("{scheme}{}", &url[scheme.len()..])),
        None => Err(SettingsError::BadUrl(url.to_owned())),
    }
}

/// This machine's host name, from the kernel (no libc call needed).
pub fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| nonblank(std::env::var("HOSTNAME").ok().as_deref()))
}

/// The default gateway id, `gw-<hostname>`.
pub fn default_gateway_id() -> String {
    format!(
        "gw-{}",
        hostname().unwrap_or_else(|| "localhost".to_owned())
    )
}

/// `HERMES_RUNTIME_THREADS`: 1 (the default) to at most 256.
fn runtime_threads(env: &EnvLayers) -> Result<usize, SettingsError> {
    let Some(raw) = env.get_nonblank(RUNTIME_THREADS) else {
        return Ok(1);
    };
    match raw.parse::<usize>() {
        Ok(n @ 1..=256) => Ok(n),
        _ => Err(SettingsError::BadThreads(raw.to_owned())),
    }
}

/// The variable that sets [`Settings::runtime_threads`].
pub const RUNTIME_THREADS: &str = "HERMES_RUNTIME_THREADS";

/// The variables `HERMES_AGENT_ENV` names, with their values where set.
fn agent_env(env: &EnvLayers) -> Result<Vec<(String, Secret)>, SettingsError> {
    let Some(names) = env.get("HERMES_AGENT_ENV") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in split_csv(names) {
        if hermes_gateway_core::agent::NEVER_PASSED.contains(&name.as_str()) {
            return Err(SettingsError::AgentEnvCredential(name));
        }
        if let Some(value) = env.get(&name) {
            out.push((name.clone(), Secret::new(value)));
        }
    }
    Ok(out)
}

impl Settings {
    /// Resolves settings from flags, the layered environment and the config
    /// file. `default_gateway_id` is used only when provisioning without a
    /// configured id.
    pub fn resolve(
        overrides: &Overrides,
        env: &EnvLayers,
        config: &ConfigFile,
        default_gateway_id: &str,
    ) -> Result<Self, SettingsError> {
        let g = &config.gateway;
        // Flag > environment (process, then env file) > config file. A blank
        // variable (`GATEWAY_RELAY_URL=`) counts as unset, so it cannot hide
        // the config file's value.
        let pick = |env_key: &str, cfg: &Option<String>| -> Option<String> {
            env.get_set(env_key)
                .map(str::to_owned)
                .or_else(|| cfg.clone())
        };

        let url = nonblank(overrides.relay_url.as_deref())
            .or_else(|| nonblank(pick("GATEWAY_RELAY_URL", &g.relay_url).as_deref()))
            .ok_or(SettingsError::MissingUrl)?;
        let url = normalize_relay_url(&url)?;
        let allow_plaintext = overrides.allow_plaintext
            || env
                .get_bool("GATEWAY_RELAY_ALLOW_PLAINTEXT")?
                .unwrap_or(false);
        // Checked here, before anything (provisioning, enrollment) sends a
        // token over the same URL.
        match RelayConfig::validate_url(&url, allow_plaintext) {
            Err(ConfigError::InvalidUrl { .. }) => return Err(SettingsError::BadUrl(url)),
            other => other?,
        };

        let allow_unauth = overrides.allow_unauthenticated
            || env
                .get_bool("GATEWAY_RELAY_ALLOW_UNAUTHENTICATED")?
                .unwrap_or(false);
        let id = pick("GATEWAY_RELAY_ID", &g.relay_id);
        let secret = pick("GATEWAY_RELAY_SECRET", &g.relay_secret).map(Secret::new);
        let identity = env.get_nonblank("HERMES_IDENTITY_TOKEN").map(Secret::new);
        let id_ok = nonblank(id.as_deref());
        let secret_ok = secret.filter(|s| !s.is_blank());

        let auth = match (id_ok, secret_ok, identity) {
            (Some(id), Some(secret), _) => RelayAuth::Pinned { id, secret },
            (id, _, Some(identity_token)) => RelayAuth::Provision {
                gateway_id: id.unwrap_or_else(|| default_gateway_id.to_owned()),
                identity_token,
            },
            (id, secret, None) => {
                // Without a way to provision, the link's own rule decides.
                let secret = secret.as_ref().map(Secret::expose);
                RelayConfig::check_credentials(id.as_deref(), secret, allow_unauth)?;
                RelayAuth::Unauthenticated
            }
        };

        let route_keys = match env.get("GATEWAY_RELAY_ROUTE_KEYS") {
            Some(csv) => split_csv(csv),
            None => g
                .relay_route_keys
                .clone()
                .map(RouteKeys::into_vec)
                .unwrap_or_default(),
        };

        let relay = RelaySettings {
            url,
            auth,
            delivery_key: nonblank(
                pick("GATEWAY_RELAY_DELIVERY_KEY", &g.relay_delivery_key).as_deref(),
            )
            .map(Secret::new),
            platform: nonblank(env.get("GATEWAY_RELAY_PLATFORM"))
                .unwrap_or_else(|| "relay".to_owned()),
            bot_id: env
                .get("GATEWAY_RELAY_BOT_ID")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            route_keys,
            wake_url: nonblank(env.get("GATEWAY_RELAY_WAKE_URL")),
            instance_id: nonblank(env.get("GATEWAY_RELAY_INSTANCE_ID")),
            allow_plaintext,
        };

        let sessions = SessionSettings {
            group_sessions_per_user: g.group_sessions_per_user.unwrap_or(true),
            thread_sessions_per_user: g.thread_sessions_per_user.unwrap_or(false),
        };

        let agent = AgentSettings::from_env(
            nonblank(overrides.agent.as_deref())
                .or_else(|| nonblank(env.get("HERMES_AGENT")))
                .or_else(|| nonblank(config.agent.spec.as_deref()))
                .unwrap_or_else(|| "echo".to_owned()),
            nonblank(overrides.model.as_deref())
                .or_else(|| nonblank(config.agent.model.as_deref())),
            env,
        )?;

        Ok(Self {
            runtime_threads: runtime_threads(env)?,
            relay,
            sessions,
            agent,
            streaming: config.streaming.resolve(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve(
        process: &[(&str, &str)],
        file: &[(&str, &str)],
        config: &str,
        overrides: Overrides,
    ) -> Result<Settings, SettingsError> {
        let env = EnvLayers::from_maps(map(process), map(file));
        let config = ConfigFile::parse(config, Path::new("test.toml")).expect("config parses");
        Settings::resolve(&overrides, &env, &config, "gw-test")
    }

    const PINNED: &[(&str, &str)] = &[
        ("GATEWAY_RELAY_URL", " https://c.example/ "),
        ("GATEWAY_RELAY_ID", "gw-1"),
        ("GATEWAY_RELAY_SECRET", "s3cret"),
    ];

    #[test]
    fn secret_never_prints() {
        let s = resolve(PINNED, &[], "", Overrides::default()).expect("resolves");
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<hidden>"));
        assert_eq!(Secret::new("x").to_string(), "<hidden>");
    }

    #[test]
    fn pinned_credentials_and_url_normalized() {
        let s = resolve(PINNED, &[], "", Overrides::default()).expect("resolves");
        assert_eq!(s.relay.url, "https://c.example");
        assert_eq!(
            s.relay.auth,
            RelayAuth::Pinned {
                id: "gw-1".into(),
                secret: Secret::new("s3cret")
            }
        );
        assert_eq!(s.relay.platform, "relay");
        assert_eq!(s.relay.bot_id, "");
        assert_eq!(s.agent.spec, "echo");
        assert_eq!(
            s.sessions,
            SessionSettings {
                group_sessions_per_user: true,
                thread_sessions_per_user: false
            }
        );
    }

    #[test]
    fn precedence_env_over_file_over_config_and_flag_over_all() {
        let config = r#"
            [gateway]
            relay_url = "https://config.example"
            relay_id = "cfg-id"
            relay_secret = "cfg-secret"
            relay_route_keys = ["a", " b "]
            thread_sessions_per_user = true
            [agent]
            spec = "exec:cat"
            model = "m1"
        "#;
        let s = resolve(&[], &[], config, Overrides::default()).expect("config only");
        assert_eq!(s.relay.url, "https://config.example");
        assert_eq!(s.relay.route_keys, vec!["a", "b"]);
        assert!(s.sessions.thread_sessions_per_user);
        assert_eq!(s.agent.spec, "exec:cat");
        assert_eq!(s.agent.model.as_deref(), Some("m1"));

        let s = resolve(
            &[("GATEWAY_RELAY_ID", "proc-id")],
            &[
                ("GATEWAY_RELAY_ID", "file-id"),
                ("GATEWAY_RELAY_URL", "wss://file.example/relay"),
                ("GATEWAY_RELAY_ROUTE_KEYS", "x, y,,"),
            ],
            config,
            Overrides::default(),
        )
        .expect("layers");
        assert_eq!(s.relay.url, "wss://file.example/relay");
        assert_eq!(s.relay.route_keys, vec!["x", "y"]);
        assert!(matches!(&s.relay.auth, RelayAuth::Pinned { id, .. } if id == "proc-id"));

        let s = resolve(
            PINNED,
            &[],
            config,
            Overrides {
                relay_url: Some("https://flag.example/".into()),
                agent: Some("openai:http://x".into()),
                ..Overrides::default()
            },
        )
        .expect("flag");
        assert_eq!(s.relay.url, "https://flag.example");
        assert_eq!(s.agent.spec, "openai:http://x");
    }

    #[test]
    fn agent_env_names_pass_their_values_but_never_a_credential() {
        let mut env = PINNED.to_vec();
        env.push(("HERMES_AGENT_ENV", "DB_URL, UNSET_ONE,,FROM_FILE"));
        env.push(("DB_URL", "postgres://x"));
        let s = resolve(&env, &[("FROM_FILE", "f")], "", Overrides::default()).expect("ok");
        let got: Vec<(&str, &str)> = s
            .agent
            .exec_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(got, [("DB_URL", "postgres://x"), ("FROM_FILE", "f")]);
        assert!(
            !format!("{s:?}").contains("postgres://x"),
            "values print hidden"
        );
        for credential in ["GATEWAY_RELAY_SECRET", "HERMES_IDENTITY_TOKEN"] {
            let mut env = PINNED.to_vec();
            let names = format!("DB_URL,{credential}");
            env.push(("HERMES_AGENT_ENV", &names));
            let e = resolve(&env, &[], "", Overrides::default());
            assert!(
                matches!(&e, Err(SettingsError::AgentEnvCredential(n)) if n == credential),
                "{e:?}"
            );
        }
    }

    #[test]
    fn plaintext_to_a_remote_relay_needs_the_opt_in() {
        let flag = |url: &str, allow_plaintext: bool| Overrides {
            relay_url: Some(url.into()),
            allow_plaintext,
            ..Overrides::default()
        };
        for remote in [
            "http://relay.example",
            "ws://10.0.0.7:8080",
            "ws://localhost@evil.example",
        ] {
            let e = resolve(PINNED, &[], "", flag(remote, false));
            assert!(
                matches!(&e, Err(SettingsError::Relay(ConfigError::Plaintext { .. }))),
                "{remote}: {e:?}"
            );
            let s = resolve(PINNED, &[], "", flag(remote, true)).expect("--allow-plaintext");
            assert!(s.relay.allow_plaintext);
            let mut env = PINNED.to_vec();
            env.push(("GATEWAY_RELAY_ALLOW_PLAINTEXT", "1"));
            assert!(
                resolve(&env, &[], "", flag(remote, false)).is_ok(),
                "{remote} with env"
            );
        }
        for fine in [
            "http://127.0.0.1:9",
            "ws://localhost",
            "ws://[::1]:1",
            "https://relay.example",
        ] {
            let s = resolve(PINNED, &[], "", flag(fine, false));
            assert!(s.is_ok_and(|s| !s.relay.allow_plaintext), "{fine}");
        }
    }

    #[test]
    fn a_blank_variable_does_not_hide_a_lower_layer() {
        let config = r#"
            [gateway]
            relay_url = "https://config.example"
        "#;
        let s = resolve(
            &[
                ("GATEWAY_RELAY_URL", ""),
                ("GATEWAY_RELAY_ID", " "),
                ("GATEWAY_RELAY_SECRET", "s3cret"),
            ],
            &[("GATEWAY_RELAY_ID", "file-id")],
            config,
            Overrides::default(),
        )
        .expect("resolves");
        assert_eq!(s.relay.url, "https://config.example");
        assert!(matches!(&s.relay.auth, RelayAuth::Pinned { id, .. } if id == "file-id"));
    }

    #[test]
    fn an_upper_case_scheme_is_lowercased_so_it_dials_the_right_url() {
        let url = normalize_relay_url(" HTTPS://Relay.Example/ ").expect("valid");
        assert_eq!(url, "https://Relay.Example");
        let dial = hermes_transport::RelayConfig::new(&url, Some("gw"), Some("s"), false)
            .expect("transport accepts it");
        assert_eq!(dial.dial_url(), "wss://Relay.Example/relay");
        assert_eq!(normalize_relay_url("Ws://h").expect("valid"), "ws://h");
    }

    #[test]
    fn missing_or_bad_url_is_an_error() {
        let e = resolve(
            &[("GATEWAY_RELAY_URL", "  ")],
            &[],
            "",
            Overrides::default(),
        );
        assert!(matches!(e, Err(SettingsError::MissingUrl)), "{e:?}");
        let e = resolve(
            &[("GATEWAY_RELAY_URL", "ftp://x")],
            &[],
            "",
            Overrides::default(),
        );
        assert!(matches!(e, Err(SettingsError::BadUrl(_))), "{e:?}");
    }

    #[test]
    fn blank_secret_with_id_is_an_error_unless_allowed() {
        let env = [
            ("GATEWAY_RELAY_URL", "https://c.example"),
            ("GATEWAY_RELAY_ID", "gw-1"),
            ("GATEWAY_RELAY_SECRET", "   "),
        ];
        let e = resolve(&env, &[], "", Overrides::default());
        assert!(
            matches!(
                &e,
                Err(SettingsError::Relay(ConfigError::BlankSecret { .. }))
            ),
            "{e:?}"
        );
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with("GATEWAY_RELAY_SECRET is blank"), "{msg}");
        assert!(!msg.contains('\n'));

        let s = resolve(
            &env,
            &[],
            "",
            Overrides {
                allow_unauthenticated: true,
                ..Overrides::default()
            },
        )
        .expect("allowed");
        assert_eq!(s.relay.auth, RelayAuth::Unauthenticated);

        let mut with_env_flag = env.to_vec();
        with_env_flag.push(("GATEWAY_RELAY_ALLOW_UNAUTHENTICATED", "yes"));
        let s = resolve(&with_env_flag, &[], "", Overrides::default()).expect("allowed by env");
        assert_eq!(s.relay.auth, RelayAuth::Unauthenticated);

        with_env_flag.push(("GATEWAY_RELAY_ALLOW_UNAUTHENTICATED", "maybe"));
        let _ = with_env_flag.remove(3);
        let e = resolve(&with_env_flag, &[], "", Overrides::default());
        assert!(matches!(e, Err(SettingsError::BadBool { .. })), "{e:?}");
    }

    #[test]
    fn no_credentials_and_blank_id() {
        let url = ("GATEWAY_RELAY_URL", "https://c.example");
        let e = resolve(&[url], &[], "", Overrides::default());
        assert!(
            matches!(
                e,
                Err(SettingsError::Relay(ConfigError::MissingCredentials))
            ),
            "{e:?}"
        );
        let e = resolve(
            &[url, ("GATEWAY_RELAY_SECRET", "s")],
            &[],
            "",
            Overrides::default(),
        );
        assert!(
            matches!(e, Err(SettingsError::Relay(ConfigError::BlankGatewayId))),
            "{e:?}"
        );
    }

    #[test]
    fn runtime_threads_default_to_one_and_refuse_nonsense() {
        let threads = |v: Option<&str>| {
            let mut env = PINNED.to_vec();
            if let Some(v) = v {
                env.push((RUNTIME_THREADS, v));
            }
            resolve(&env, &[], "", Overrides::default()).map(|s| s.runtime_threads)
        };
        assert_eq!(threads(None).expect("default"), 1);
        assert_eq!(threads(Some(" 4 ")).expect("four"), 4);
        for bad in ["0", "many", "-1", "257"] {
            assert!(
                matches!(threads(Some(bad)), Err(SettingsError::BadThreads(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn identity_token_provisions_when_not_pinned() {
        let s = resolve(
            &[
                ("GATEWAY_RELAY_URL", "https://c.example"),
                ("HERMES_IDENTITY_TOKEN", "idt"),
            ],
            &[],
            "",
            Overrides::default(),
        )
        .expect("resolves");
        assert_eq!(
            s.relay.auth,
            RelayAuth::Provision {
                gateway_id: "gw-test".into(),
                identity_token: Secret::new("idt")
            }
        );
        // Pinned credentials win over provisioning.
        let mut env = PINNED.to_vec();
        env.push(("HERMES_IDENTITY_TOKEN", "idt"));
        let s = resolve(&env, &[], "", Overrides::default()).expect("resolves");
        assert!(matches!(s.relay.auth, RelayAuth::Pinned { .. }));
    }

    #[test]
    fn unknown_config_key_is_an_error() {
        let e = ConfigFile::parse("[gateway]\nrelay_secrt = \"x\"\n", Path::new("c.toml"));
        let msg = e.expect_err("unknown key").to_string();
        assert!(msg.contains("relay_secrt") && !msg.contains('\n'), "{msg}");
    }
}
