//! `enroll` (`relay-contract.md` §7.4): trade an enrollment token for this
//! gateway's credentials and save them in the env file.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use hermes_protocol::enroll::{EnrollRequest, IssuedCredentials};
use hermes_protocol::url::{Endpoint, http_endpoint};
use hermes_transport::connector_api;

use crate::args::EnrollArgs;
use crate::env_file;
use crate::settings::{self, EnvLayers, Secret};

/// Runs `enroll`; errors are one-line messages (exit 1).
pub fn run(args: EnrollArgs) -> anyhow::Result<()> {
    let env_path = match args.env_file.clone() {
        Some(p) => p,
        None => env_file::default_path()
            .context("HOME is not set; pass --env-file to say where the credentials go")?,
    };
    let existing = env_file::read(&env_path)
        .with_context(|| format!("cannot read env file {}", env_path.display()))?
        .unwrap_or_default();
    // The process environment over the env file, as `run` reads them.
    let env = EnvLayers::over_file(existing);
    if env.get_nonblank("HERMES_MANAGED").is_some() {
        bail!(
            "this is a managed install (HERMES_MANAGED is set): its manager enrolls it; enroll is refused"
        );
    }

    let given_url = args
        .connector_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    let url = given_url
        .clone()
        .or_else(|| env.get_nonblank("GATEWAY_RELAY_URL").map(str::to_owned))
        .context("no connector URL: pass --connector-url or set GATEWAY_RELAY_URL")?;
    let url = settings::normalize_relay_url(&url)?;
    // The URL is written the way it is read back (§7.1: trimmed, no trailing `/`).
    let given_url = given_url.map(|_| url.clone());
    let endpoint = http_endpoint(&url, Endpoint::Enroll);

    let identity = args
        .identity_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .context(
            "enroll needs an identity token: pass --identity-token or set HERMES_IDENTITY_TOKEN",
        )?;
    let token = enrollment_token(&args)?;
    let gateway_id = args
        .gateway_id
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map_or_else(settings::default_gateway_id, str::to_owned);
    check_gateway_id(&gateway_id).context("cannot enroll as this gateway id (--gateway-id)")?;
    let wake_url = args
        .wake_url
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_owned);

    let body = EnrollRequest {
        enrollment_token: token.expose(),
        gateway_id: &gateway_id,
        wake_url: wake_url.as_deref(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let creds = runtime.block_on(connector_api::request_credentials(
        &endpoint,
        identity.expose(),
        &body,
        &gateway_id,
    ))?;
    // The answer is written into a file shells `source`: an id is checked
    // before anything is written, whatever the connector says.
    check_gateway_id(&creds.gateway_id)
        .context("the connector's answer has an unusable gatewayId; nothing was written")?;

    let written = write_credentials(&env_path, &creds, given_url.as_deref(), wake_url.as_deref())?;
    let mut out = std::io::stdout().lock();
    let tenant = creds
        .tenant
        .as_deref()
        .map(|t| format!(" for tenant {t}"))
        .unwrap_or_default();
    // A closed stdout must not turn a successful enrollment into a failure.
    let _ = writeln!(out, "enrolled {}{tenant} at {endpoint}", creds.gateway_id);
    let _ = writeln!(out, "wrote {} (mode 0600):", env_path.display());
    for line in written {
        let _ = writeln!(out, "  {line}");
    }
    Ok(())
}

/// The enrollment token from `--token-file`, `--token -` (stdin), the
/// environment or `--token VALUE`. The last one works but is visible to
/// every user of the machine (`ps`, `/proc/PID/cmdline`), so it warns.
fn enrollment_token(args: &EnrollArgs) -> anyhow::Result<Secret> {
    // clap fills `token` from GATEWAY_RELAY_ENROLL_TOKEN when the flag is
    // absent; a value equal to the variable's came from there.
    let from_env = |v: &str| std::env::var(ENROLL_TOKEN_ENV).is_ok_and(|e| e == v);
    let raw = match (&args.token_file, args.token.as_deref()) {
        (Some(_), Some(v)) if !from_env(v) => {
            bail!("give the enrollment token once: --token or --token-file, not both")
        }
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --token-file {}", path.display()))?,
        (None, Some("-")) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the enrollment token from stdin (--token -)")?;
            line
        }
        (None, Some(v)) => {
            if !from_env(v) {
                eprintln!(
                    "warning: --token on the command line is visible to other users of this machine (ps); use --token-file FILE, --token - (stdin) or {ENROLL_TOKEN_ENV}"
                );
            }
            v.to_owned()
        }
        (None, None) => bail!(
            "no enrollment token: pass --token-file FILE, --token - (stdin) or set {ENROLL_TOKEN_ENV}"
        ),
    };
    let token = Secret::new(raw.trim());
    if token.is_blank() {
        bail!(
            "the enrollment token is blank: pass --token-file FILE, --token - (stdin) or set {ENROLL_TOKEN_ENV}"
        );
    }
    Ok(token)
}

/// The environment variable `--token` falls back to.
const ENROLL_TOKEN_ENV: &str = "GATEWAY_RELAY_ENROLL_TOKEN";

/// Longest gateway id `enroll` accepts.
const MAX_GATEWAY_ID: usize = 128;

/// A gateway id `enroll` will send and write: 1–128 of `A-Za-z0-9._-`.
/// Anything else (a quote, `$(`, a space, a line break) could change the
/// meaning of the env file a shell sources, so it is refused outright.
fn check_gateway_id(id: &str) -> anyhow::Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if id.is_empty() || id.len() > MAX_GATEWAY_ID || !id.chars().all(allowed) {
        let shown: String = id.chars().take(MAX_GATEWAY_ID).collect();
        bail!("gateway id {shown:?} is not 1-{MAX_GATEWAY_ID} of the characters A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

/// Writes the credentials; returns the lines as they may be shown (secrets
/// as `<hidden>`).
fn write_credentials(
    path: &std::path::Path,
    creds: &IssuedCredentials,
    url: Option<&str>,
    wake_url: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut updates: Vec<(&str, &str, bool)> = vec![
        ("GATEWAY_RELAY_ID", creds.gateway_id.as_str(), false),
        ("GATEWAY_RELAY_SECRET", creds.secret.as_str(), true),
    ];
    if let Some(key) = &creds.delivery_key {
        updates.push(("GATEWAY_RELAY_DELIVERY_KEY", key.as_str(), true));
    }
    if let Some(url) = url {
        updates.push(("GATEWAY_RELAY_URL", url, false));
    }
    if let Some(wake) = wake_url {
        updates.push(("GATEWAY_RELAY_WAKE_URL", wake, false));
    }
    let pairs: Vec<(&str, &str)> = updates.iter().map(|(k, v, _)| (*k, *v)).collect();
    env_file::update_file(path, &pairs)
        .with_context(|| format!("cannot write env file {}", path.display()))?;
    Ok(updates
        .iter()
        .map(|(k, v, secret)| {
            if *secret {
                format!("{k}={}", Secret::new(*v))
            } else {
                format!("{k}={v}")
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids_are_a_safe_charset() {
        for good in ["gw-test", "gw_1.example", "A", &"x".repeat(MAX_GATEWAY_ID)] {
            assert!(check_gateway_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "gw-$(touch x)",
            "gw'x",
            "gw x",
            "gw\nGATEWAY_RELAY_URL=evil",
            "gw`id`",
            "gw\"",
            "gw-é",
            &"x".repeat(MAX_GATEWAY_ID + 1),
        ] {
            assert!(check_gateway_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
