//! The command line, exactly as `cli.md` specifies it (clap derive).
//!
//! Flags with an environment fallback name it with clap's `env`, so `--help`
//! shows `[env: NAME=]` next to the flag. Variables that are not tied to one
//! flag (the relay settings of `relay-contract.md` §8) are listed in each
//! subcommand's trailing help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Environment variables `run` reads, shown after its flags in `--help`.
pub const RUN_ENV_HELP: &str = "\
Environment (the env file, ~/.hermes/.env or --env-file, is read first and never
overrides a variable already set; then the config file; then defaults):
  GATEWAY_RELAY_URL            connector base or dial URL; enables the relay
                               (config gateway.relay_url; --relay-url overrides)
  GATEWAY_RELAY_ID             this gateway's id for link auth (gateway.relay_id)
  GATEWAY_RELAY_SECRET         its secret; a blank secret with an id is an error
                               (gateway.relay_secret)
  GATEWAY_RELAY_DELIVERY_KEY   legacy delivery-signature key
                               (gateway.relay_delivery_key)
  GATEWAY_RELAY_PLATFORM       hello identity platform (default relay)
  GATEWAY_RELAY_BOT_ID         hello identity bot id (default empty)
  GATEWAY_RELAY_ROUTE_KEYS     route keys for provisioning, comma-separated
                               (gateway.relay_route_keys)
  GATEWAY_RELAY_WAKE_URL       provisioning extra: wake URL
  GATEWAY_RELAY_INSTANCE_ID    provisioning extra: instance id
  GATEWAY_RELAY_ALLOW_UNAUTHENTICATED
                               set to 1 to allow dialling without credentials
                               (local development only)
  GATEWAY_RELAY_ALLOW_PLAINTEXT
                               set to 1 to allow ws:// or http:// to a relay
                               that is not loopback (see --allow-plaintext)
  HERMES_IDENTITY_TOKEN        identity token used to provision id and secret at
                               start when none are pinned
  HERMES_ADMIN_TOKEN           bearer token for the admin /plugins and /reload
                               (see --admin-token-file)
  HERMES_AGENT                 agent spec (see --agent)
  HERMES_AGENT_ENV             comma-separated variable names passed to an
                               exec: agent; it gets only PATH, HOME, USER,
                               LOGNAME, SHELL, LANG, LANGUAGE, LC_ALL,
                               LC_CTYPE, TZ, TMPDIR and TERM otherwise
  OPENAI_API_KEY               API key for openai: agents
  RUST_LOG                     log filter, e.g. info or hermes=debug

Exit codes: 0 clean shutdown, 1 runtime failure or misconfiguration,
2 usage error, 4 relay access revoked.";

/// Environment variables `enroll` reads.
pub const ENROLL_ENV_HELP: &str = "\
Environment:
  GATEWAY_RELAY_ENROLL_TOKEN   enrollment token (see --token); unlike a
                               --token value, not visible in `ps`
  GATEWAY_RELAY_URL            connector URL when --connector-url is not given
                               (also read from the env file)
  GATEWAY_RELAY_WAKE_URL       wake URL (see --wake-url)
  HERMES_IDENTITY_TOKEN        identity token (see --identity-token)
  HERMES_MANAGED               when set, enroll refuses: a managed install is
                               enrolled by its manager

Writes GATEWAY_RELAY_ID, GATEWAY_RELAY_SECRET, GATEWAY_RELAY_DELIVERY_KEY (and
GATEWAY_RELAY_URL / GATEWAY_RELAY_WAKE_URL when given on the command line) into
the env file, keeping its other lines, mode 0600. Secrets are shown as <hidden>.";

/// Exit codes shared by `plugins check` and `convert`.
pub const CONVERT_HELP: &str = "\
Prints one JSON object on stdout:
  {\"outcome\":\"event\",\"plugin\":…,\"events\":[…]}            exit 0
  {\"outcome\":\"ignored\",\"plugin\":…,\"reason\":…}             exit 0
  {\"outcome\":\"error\",\"plugin\":…,\"error_kind\":…,\"message\":…} exit 3
A plugin fault (trap, timeout, memory limit, malformed output) or a request no
plugin routes prints outcome \"error\" with error_kind \"plugin_fault\" or
\"no_route\" and exits 1.

Environment:
  RUST_LOG    log filter for the plugin's log lines (written to stderr)";

/// hermes-gateway connects an AI agent to chat platforms through a relay
/// connector, converting raw webhooks with sandboxed WebAssembly plugins.
///
/// `hermes-gateway --plugins DIR` is the same as `hermes-gateway run --plugins DIR`.
#[derive(Debug, Parser)]
#[command(
    name = "hermes-gateway",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = RUN_ENV_HELP
)]
pub struct Cli {
    /// What to do; without one, the flags below run the gateway (`run`).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The flags of `run`, accepted at the top level as a shortcut.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: dial the relay connector and serve the agent.
    #[command(after_help = RUN_ENV_HELP)]
    Run(RunArgs),
    /// Validate and inspect converter plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Run one request through routing and its converter; print the outcome as JSON.
    #[command(after_help = CONVERT_HELP)]
    Convert(ConvertArgs),
    /// Create things for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Enroll this gateway with a relay connector and save its credentials.
    #[command(after_help = ENROLL_ENV_HELP)]
    Enroll(EnrollArgs),
    /// Run the gateway against an embedded connector on loopback and accept
    /// raw platform webhooks over HTTP (for trying converters with curl).
    #[command(after_help = DEV_HELP)]
    Dev(DevArgs),
    /// Run `dev` with a scripted set of sample requests, print the
    /// conversation, then exit 0.
    Demo(DemoArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory of converter plugins (`*.wasm`); a `policy.toml` in it is the
    /// default policy. Watched: changes are picked up without a restart.
    #[arg(long, value_name = "DIR", required = true)]
    pub plugins: Option<PathBuf>,

    /// The agent that answers: `echo` (replies with the event's text),
    /// `exec:COMMAND` (runs COMMAND via `sh -c` per turn) or
    /// `openai:BASE_URL` (an OpenAI-compatible chat-completions server).
    /// Falls back to the env file, then config `agent.spec`, then `echo`.
    #[arg(long, value_name = "SPEC", env = "HERMES_AGENT")]
    pub agent: Option<String>,

    /// Model name for `openai:` agents (config `agent.model`).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Policy file pinning converters per platform, tenant and profile and
    /// passing config to them (default: DIR/policy.toml when present).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// TOML config file: `[gateway]` relay_url, relay_id, relay_secret,
    /// relay_delivery_key, relay_route_keys, group_sessions_per_user,
    /// thread_sessions_per_user; `[agent]` spec, model. Environment wins over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Env file of KEY=VALUE lines read at start without overriding variables
    /// already set (default: ~/.hermes/.env when it exists).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Serve the admin HTTP endpoints on ADDR (e.g. 127.0.0.1:9464):
    /// GET /healthz, /readyz, /metrics, /plugins and POST /reload. A loopback
    /// address unless --admin-allow-remote is given.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// Let --admin listen on an address that is not loopback. Set a token
    /// too (--admin-token-file or HERMES_ADMIN_TOKEN).
    #[arg(long, requires = "admin")]
    pub admin_allow_remote: bool,

    /// File holding the bearer token GET /plugins and POST /reload require
    /// (`Authorization: Bearer TOKEN`); /healthz, /readyz and /metrics stay
    /// open. Overrides HERMES_ADMIN_TOKEN.
    #[arg(long, value_name = "FILE", requires = "admin")]
    pub admin_token_file: Option<PathBuf>,

    /// Relay connector URL; overrides GATEWAY_RELAY_URL and the config file.
    #[arg(long, value_name = "URL")]
    pub relay_url: Option<String>,

    /// Dial without credentials when none are configured (local development
    /// only; otherwise a missing or blank secret is an error).
    /// Also enabled by GATEWAY_RELAY_ALLOW_UNAUTHENTICATED=1.
    #[arg(long)]
    pub allow_unauthenticated: bool,

    /// Dial a relay that is not on this machine over plaintext ws:// or
    /// http:// (the upgrade token and every message cross the network
    /// unencrypted). Loopback is always allowed; anything else needs wss://
    /// or https:// unless this is given.
    /// Also enabled by GATEWAY_RELAY_ALLOW_PLAINTEXT=1.
    #[arg(long)]
    pub allow_plaintext: bool,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// `--record DIR` and its limits.
    #[command(flatten)]
    pub record: crate::record::RecordFlags,

    /// `--shadow-log FILE`.
    #[command(flatten)]
    pub shadow: ShadowFlags,
}

/// Where the differences of shadow candidates (`shadow = "…"` in the
/// policy) are written.
#[derive(Debug, Clone, Args)]
pub struct ShadowFlags {
    /// Append each difference a shadow candidate makes as a JSON line to
    /// FILE (created 0600; at most 64 MiB): route, platform, tenant, both
    /// plugins' versions and digests, and the differing fields.
    #[arg(long, value_name = "FILE")]
    pub shadow_log: Option<PathBuf>,
    /// Also write each differing request's body (base64). Header values
    /// are never written.
    #[arg(long, requires = "shadow_log")]
    pub shadow_log_bodies: bool,
}

impl ShadowFlags {
    /// Opens the log on `host`, when asked for.
    pub fn apply(&self, host: &hermes_plugin_host::PluginHost) -> anyhow::Result<()> {
        if let Some(path) = &self.shadow_log {
            host.set_shadow_log(path.clone(), self.shadow_log_bodies)
                .map_err(|e| anyhow::anyhow!("--shadow-log {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

impl RunArgs {
    /// Flag combinations clap cannot check on its own, as clap usage errors
    /// (exit 2): a non-loopback `--admin` needs `--admin-allow-remote`.
    pub fn check_usage(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory as _;
        let remote = self
            .admin
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .filter(|a| !a.ip().to_canonical().is_loopback());
        match remote {
            Some(addr) if !self.admin_allow_remote => Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!(
                    "--admin {addr} is not a loopback address: anyone who can reach it could use the admin endpoints; pass --admin-allow-remote to serve there (with --admin-token-file or HERMES_ADMIN_TOKEN)"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `plugins …` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Load DIR as `run` would and print each plugin and the routing table.
    /// Exits 1 if any file failed to load, naming the file and the reason.
    Check(CheckArgs),
    /// Run every case of a webhook corpus through DIR's routed plugins and
    /// compare each outcome with the case's expectation. Prints a line per
    /// failing case (the first field that differs, expected and got) and a
    /// summary; exits 1 if any case failed.
    Test(TestArgs),
    /// Publish a converter component to an OCI registry, in the Wasm OCI
    /// artifact layout (annotations: name, version, platforms, WIT version
    /// from its describe()). Prints the manifest digest and the pin to write
    /// into the policy: `oci://HOST/REPO@sha256:…`.
    Push(PushArgs),
    /// Run every case of a corpus through two plugins — the one serving now
    /// and a candidate — and print where their outcomes differ, field by
    /// field. Exits 1 when any case differs.
    Diff(DiffArgs),
}

/// Flags of `plugins diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Directory of converter plugins holding both, loaded as `run` would.
    #[arg(long, value_name = "DIR")]
    pub plugins: PathBuf,
    /// The plugin serving now (by `describe()` name).
    #[arg(long, value_name = "NAME")]
    pub old: String,
    /// The candidate.
    #[arg(long, value_name = "NAME")]
    pub new: String,
    /// Corpus directory (`manifest.json` version 2), e.g. one `--record` wrote.
    #[arg(long, value_name = "CORPUS_DIR")]
    pub corpus: PathBuf,
    /// Policy file (default: DIR/policy.toml when present).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// Flags of `plugins push`.
#[derive(Debug, Args)]
#[command(after_help = PUSH_HELP)]
pub struct PushArgs {
    /// The component (`*.wasm`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where: `HOST[:PORT]/REPOSITORY:TAG` (`oci://` optional).
    #[arg(value_name = "REF")]
    pub reference: String,
}

/// Credentials and transport of `plugins push`.
pub const PUSH_HELP: &str = "\
Credentials: HERMES_REGISTRY_USERNAME and HERMES_REGISTRY_PASSWORD, else the
registry's entry in the Docker config file ($DOCKER_CONFIG/config.json or
~/.docker/config.json), else anonymous. They are never printed or logged.
Plain http:// is used only for a registry on loopback.";

/// Flags of `plugins test`.
#[derive(Debug, Args)]
#[command(after_help = TEST_HELP)]
pub struct TestArgs {
    /// Directory of converter plugins, loaded as `run` would.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Corpus directory: a `manifest.json` (version 2, the format of
    /// `tests/data/corpus`) and the body files it names.
    #[arg(long, value_name = "CORPUS_DIR")]
    pub corpus: PathBuf,
    /// Policy file (default: DIR/policy.toml when present).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// The corpus rules `plugins test --help` explains.
pub const TEST_HELP: &str = "\
Each case's forward (plus its body file, checked against body_bytes and
body_sha256) is converted through routing, as `run` would convert it. A case
with a `config` object runs once, with that tenant config on top of the
policy's; a case without runs twice: with no extra config (compared with
`text`) and with options=named (compared with `text_named` where present).
Every key of an expected event is compared; `extras` is not.

Exit codes: 0 every case passed; 1 a case failed, or the corpus is empty or
unreadable; 2 usage error.";

/// Flags of `plugins check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Directory of converter plugins.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Policy file (default: DIR/policy.toml when present).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// Flags of `convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Directory of converter plugins, loaded as `run` would.
    #[arg(long, value_name = "DIR")]
    pub plugins: PathBuf,
    /// Forward platform (`discord`, `twilio`, `slack`, …): picks the converter.
    #[arg(long, value_name = "P")]
    pub platform: String,
    /// Request path at the connector (informational).
    #[arg(long, value_name = "PATH", default_value = "")]
    pub path: String,
    /// HTTP method.
    #[arg(long, value_name = "M", default_value = "POST")]
    pub method: String,
    /// A request header as 'Name: value'; repeat for more, order is kept.
    #[arg(long = "header", value_name = "'Name: value'", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Read the body bytes from file F (`-` for stdin).
    #[arg(long, value_name = "F", conflicts_with = "body_b64")]
    pub body_file: Option<PathBuf>,
    /// The body as standard base64.
    #[arg(long, value_name = "B", value_parser = parse_b64)]
    pub body_b64: Option<B64Body>,
    /// Target profile (session namespace).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Bot or app id of the forward.
    #[arg(long, value_name = "ID", default_value = "")]
    pub bot_id: String,
    /// Tenant config as key=value, as a policy file would set it; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Policy file (default: DIR/policy.toml when present).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// `Name: value` → `(Name, value)`; the value keeps inner spaces, loses the
/// one after the colon.
fn parse_header(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("{raw:?} is not 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("{raw:?} has no valid header name"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// Body bytes given as base64 on the command line (a newtype so clap does
/// not read `Vec<u8>` as "many values").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct B64Body(pub Vec<u8>);

/// Standard base64 (`+`, `/`, padded), as in a forward's `bodyB64`.
fn parse_b64(raw: &str) -> Result<B64Body, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map(B64Body)
        .map_err(|e| format!("not standard base64: {e}"))
}

/// `key=value`.
fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("{raw:?} has an empty key"));
    }
    Ok((k.trim().to_owned(), v.to_owned()))
}

/// `plugin …` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a converter crate in ./NAME (refuses an existing directory).
    New(NewPluginArgs),
}

/// Flags of `plugin new`.
#[derive(Debug, Args)]
pub struct NewPluginArgs {
    /// Crate name: lowercase letters, digits, `-` and `_`, starting with a letter.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Flags of `enroll`. `Debug` never prints the tokens.
#[derive(Args)]
pub struct EnrollArgs {
    /// One-time enrollment token from the connector's operator; `-` reads it
    /// from stdin. A value given here is visible to other users (`ps`):
    /// prefer `--token -`, --token-file or the environment variable.
    #[arg(
        long,
        value_name = "T",
        env = "GATEWAY_RELAY_ENROLL_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file"
    )]
    pub token: Option<String>,
    /// Read the enrollment token from FILE (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Connector URL (base or dial form); also written to the env file.
    /// Default: GATEWAY_RELAY_URL from the environment or the env file.
    #[arg(long, value_name = "URL")]
    pub connector_url: Option<String>,
    /// Gateway id to enroll as (default gw-<hostname>).
    #[arg(long, value_name = "ID")]
    pub gateway_id: Option<String>,
    /// Env file to write the credentials into (default ~/.hermes/.env).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// URL the connector may call to wake this gateway; sent with the
    /// enrollment and written to the env file.
    #[arg(long, value_name = "URL", env = "GATEWAY_RELAY_WAKE_URL")]
    pub wake_url: Option<String>,
    /// Identity token proving who enrolls (sent as the bearer).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HERMES_IDENTITY_TOKEN",
        hide_env_values = true
    )]
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for EnrollArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollArgs")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("token_file", &self.token_file)
            .field("connector_url", &self.connector_url)
            .field("gateway_id", &self.gateway_id)
            .field("env_file", &self.env_file)
            .field("wake_url", &self.wake_url)
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// Trailing help of `dev`.
pub const DEV_HELP: &str = "\
Hooks (POST): /hooks/discord/interactions, /hooks/twilio/messaging,
/hooks/twilio/voice, /hooks/slack/commands, /hooks/slack/interactivity.
Each is forwarded to the gateway as a passthrough_forward frame and answered as
the real connector answers the provider. Platform signatures are NOT verified:
the ingress is for local use and binds loopback only unless
--allow-non-loopback is given.

Example:
  curl -sS -H 'content-type: application/json' \\
    --data-binary @docs/examples/discord-slash-command.json \\
    http://127.0.0.1:8787/hooks/discord/interactions

Environment:
  HERMES_AGENT     agent spec (see --agent)
  OPENAI_API_KEY   API key for openai: agents
  RUST_LOG         log filter (default warn; logs go to stderr)";

/// Flags of `dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory of converter plugins (`*.wasm`), loaded as `run` loads it.
    #[arg(long, value_name = "DIR")]
    pub plugins: PathBuf,
    /// Address of the webhook ingress; port 0 picks a free port (the banner
    /// prints the bound address).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787", value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,
    /// The agent that answers: `echo`, `exec:COMMAND` or `openai:BASE_URL`
    /// (as for `run`).
    #[arg(
        long,
        value_name = "SPEC",
        env = "HERMES_AGENT",
        default_value = "echo"
    )]
    pub agent: String,
    /// Policy file (default: DIR/policy.toml when present).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Let the ingress listen on a non-loopback address. It verifies no
    /// platform signature: anyone who can reach it can talk to your agent.
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Also print typing-indicator actions (dimmed on a terminal).
    #[arg(long)]
    pub show_typing: bool,
    /// Serve the admin HTTP endpoints on ADDR, a loopback address (as for
    /// `run`: /healthz, /readyz, /metrics, /plugins, POST /reload).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// `--record DIR` and its limits.
    #[command(flatten)]
    pub record: crate::record::RecordFlags,
    /// `--shadow-log FILE`.
    #[command(flatten)]
    pub shadow: ShadowFlags,
}

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory of converter plugins; needs the Discord and Twilio converters.
    #[arg(long, value_name = "DIR")]
    pub plugins: PathBuf,
    /// Seconds to wait for each expected reply before failing (exit 1).
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub timeout: u64,
}

/// Parses `--listen`.
fn parse_listen(raw: &str) -> Result<std::net::SocketAddr, String> {
    raw.parse()
        .map_err(|e| format!("{raw:?} is not an IP address and port (e.g. 127.0.0.1:8787): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn enroll_debug_never_prints_the_tokens() {
        let cli = Cli::try_parse_from([
            "hermes-gateway",
            "enroll",
            "--token",
            "enroll-secret",
            "--identity-token",
            "identity-secret",
        ])
        .expect("parses");
        let shown = format!("{cli:?}");
        assert!(shown.contains("EnrollArgs"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }

    #[test]
    fn remote_admin_needs_the_opt_in_as_a_usage_error() {
        let check = |extra: &[&str]| {
            let mut argv = vec!["hermes-gateway", "run", "--plugins", "p"];
            argv.extend(extra);
            let cli = Cli::try_parse_from(argv).expect("parses");
            let Some(Command::Run(run)) = cli.command else {
                panic!("not run");
            };
            run.check_usage()
        };
        for remote in ["0.0.0.0:9464", "192.0.2.1:9464", "[::]:9464"] {
            let err = check(&["--admin", remote]).expect_err(remote);
            assert_eq!(err.exit_code(), 2, "{remote}");
            assert!(err.to_string().contains("--admin-allow-remote"), "{err}");
            assert!(check(&["--admin", remote, "--admin-allow-remote"]).is_ok());
        }
        for local in ["127.0.0.1:9464", "[::1]:9464", "not-an-address"] {
            assert!(check(&["--admin", local]).is_ok(), "{local}");
        }
        assert!(check(&[]).is_ok());
        let err = Cli::try_parse_from([
            "hermes-gateway",
            "run",
            "--plugins",
            "p",
            "--admin-token-file",
            "t",
        ])
        .expect_err("needs --admin");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn top_level_plugins_is_run() {
        let cli = Cli::try_parse_from(["hermes-gateway", "--plugins", "p"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.run.plugins, Some(PathBuf::from("p")));
    }

    #[test]
    fn subcommand_does_not_need_top_level_plugins() {
        let cli = Cli::try_parse_from(["hermes-gateway", "plugins", "check", "d"]).expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Plugins(PluginsCommand::Check(_)))
        ));
    }

    #[test]
    fn body_sources_conflict() {
        let err = Cli::try_parse_from([
            "hermes-gateway",
            "convert",
            "--plugins",
            "d",
            "--platform",
            "x",
            "--body-file",
            "f",
            "--body-b64",
            "AA==",
        ])
        .expect_err("conflict");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn convert_values_are_parsed() {
        let cli = Cli::try_parse_from([
            "hermes-gateway",
            "convert",
            "--plugins",
            "d",
            "--platform",
            "x",
            "--header",
            "Content-Type: text/plain; charset=utf-8",
            "--header",
            "X-A:b",
            "--body-b64",
            "aGk=",
            "--config",
            "options=named",
        ])
        .expect("parses");
        let Some(Command::Convert(c)) = cli.command else {
            panic!("not convert");
        };
        assert_eq!(
            c.headers,
            vec![
                (
                    "Content-Type".to_owned(),
                    "text/plain; charset=utf-8".to_owned()
                ),
                ("X-A".to_owned(), "b".to_owned())
            ]
        );
        assert_eq!(c.body_b64, Some(B64Body(b"hi".to_vec())));
        assert_eq!(c.config, vec![("options".to_owned(), "named".to_owned())]);
        for bad in [
            ["--header", "nocolon"],
            ["--body-b64", "a_b-"],
            ["--config", "novalue"],
        ] {
            let mut argv = vec![
                "hermes-gateway",
                "convert",
                "--plugins",
                "d",
                "--platform",
                "x",
            ];
            argv.extend(bad);
            let err = Cli::try_parse_from(argv).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
