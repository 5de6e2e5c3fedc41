//! A deliberately misbehaving converter for the plugin host's sandbox tests.
//!
//! The request body chooses the behaviour: its first word is the mode, the
//! rest an argument.
//!
//! | body | behaviour |
//! | --- | --- |
//! | `ok` | one text event `ok` |
//! | `loop` | spins forever (the epoch deadline must stop it) |
//! | `alloc` | allocates 1 MiB blocks until memory runs out |
//! | `panic MSG` | panics with `MSG` |
//! | `big-output` | one event with 128 KiB of text |
//! | `many-events` | 100 events |
//! | `read-file PATH` | tries to read PATH, reports what happened |
//! | `env` | reports the environment variables it can see |
//! | `socket ADDR` | tries a TCP connect to ADDR, reports what happened |
//! | `counter` | increments a global counter and reports it (always 1 on a fresh instance) |
//! | `config KEY` | reports the tenant config value of KEY |
//! | `reject` | a typed `invalid_json` rejection |
//! | `ignore` | ignored `ping` |
//! | `log-flood` | 10 000 log lines, then `ok` |
//! | `stderr-flood` | 1 MiB to stderr, then `ok` |
//! | `sleep` | `std::thread::sleep` for an hour, then `slept` |
//! | `many-media` | one event with 100 000 media urls (a stand-in for a list whose elements alias one big buffer) |
//! | `huge-text` | one event with 1 MiB of text (only the SDK's own cap check stands between it and the host) |
//! | `claim PLATFORM [KIND]` | one `/stop` event claiming PLATFORM's chat `victim-channel` in guild `victim-guild` by `victim`, replying by `follow-up(KIND)` when KIND is given (the trust boundary must refuse it) |
//! | `claim-profile PROFILE` | one event of the forward's platform claiming PROFILE |
//! | `log-forge` | `log` lines carrying newlines, carriage returns and terminal escapes, then `ok` |
//! | `panic-long` | panics with a 16 KiB message full of newlines |
//! | `spin N` | spins N million iterations (a slow but legitimate converter), then `spun` |
//! | anything else | like `config label` |
//!
//! `describe()` writes a line to stderr (harmless: it checks that guest
//! stdio during loading cannot disturb the host or the CLI).
//!
//! It claims the platforms `hostile` and `discord` (the latter so a
//! directory holding the Discord converter has a conflict for the policy to
//! resolve). `tenant-of` returns the `x-tenant` header. Everything is
//! `cfg(target_arch = "wasm32")`: natively the crate is empty.

#[cfg(target_arch = "wasm32")]
mod hostile {
    use hermes_converter_sdk::{
        ChatType, Config, Converter, ErrorKind, Level, Media, MessageEvent, Outcome, PluginInfo,
        ReplyRoute, Request, Source,
    };
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);

    /// The hostile converter.
    pub struct Hostile;

    fn event(req: &Request, text: String) -> MessageEvent {
        let source = Source::new(req.platform.clone(), "hostile-chat", ChatType::Dm);
        MessageEvent::new(text, source, ReplyRoute::Send)
    }

    fn config_text(key: &str, config: &dyn Config) -> String {
        match config.get(key) {
            Some(v) => format!("config: {key}={v}"),
            None => format!("config: {key}=<none>"),
        }
    }

    impl Converter for Hostile {
        fn describe() -> PluginInfo {
            eprintln!("hostile: describe() writes to stderr");
            // `discord` too, so a directory holding the Discord converter has a
            // platform conflict for the policy to resolve.
            PluginInfo::new(
                "hostile",
                env!("CARGO_PKG_VERSION"),
                &["hostile", "discord"],
            )
        }

        // Over-cap output must reach the host, whose checks are under test.
        const CHECK_OUTPUT_CAPS: bool = false;

        fn tenant_of(req: &Request) -> Option<String> {
            req.header("x-tenant").map(str::to_owned)
        }

        fn convert(req: &Request, config: &dyn Config) -> Outcome {
            let body = String::from_utf8_lossy(&req.body).into_owned();
            let (mode, arg) = match body.split_once(' ') {
                Some((m, a)) => (m.trim(), a.trim()),
                None => (body.trim(), ""),
            };
            let text = match mode {
                "ok" => "ok".to_owned(),
                "loop" => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                "alloc" => {
                    let mut blocks: Vec<Vec<u8>> = Vec::new();
                    loop {
                        blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
                    }
                }
                "panic" => panic!("{arg}"),
                "big-output" => "x".repeat(128 * 1024),
                "many-events" => {
                    return Outcome::Events((0..100).map(|i| event(req, i.to_string())).collect());
                }
                "read-file" => match std::fs::read(arg) {
                    Ok(bytes) => format!("read-file: read {} bytes", bytes.len()),
                    Err(e) => format!("read-file: error: {e}"),
                },
                "env" => {
                    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                    let args = std::env::args().count();
                    format!("env: vars=[{}] args={args}", vars.join(","))
                }
                "socket" => match std::net::TcpStream::connect(arg) {
                    Ok(_) => "socket: connected".to_owned(),
                    Err(e) => format!("socket: error: {e}"),
                },
                "counter" => format!("counter: {}", COUNTER.fetch_add(1, Ordering::SeqCst) + 1),
                "config" => config_text(arg, config),
                "reject" => return Outcome::error(ErrorKind::InvalidJson, "hostile reject"),
                "ignore" => return Outcome::ignored("ping"),
                "log-flood" => {
                    for i in 0..10_000 {
                        hermes_converter_sdk::log(Level::Info, &format!("flood line {i}"));
                    }
                    "ok".to_owned()
                }
                "stderr-flood" => {
                    let line = "e".repeat(1023);
                    for _ in 0..1024 {
                        eprintln!("{line}");
                    }
                    "ok".to_owned()
                }
                "sleep" => {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                    "slept".to_owned()
                }
                "many-media" => {
                    let mut e = event(req, "media".to_owned());
                    e.media = vec![Media::url("https://example.invalid/m"); 100_000];
                    return Outcome::event(e);
                }
                "huge-text" => "x".repeat(1 << 20),
                "claim" => {
                    let (platform, kind) = match arg.split_once(' ') {
                        Some((p, k)) => (p, Some(k)),
                        None => (arg, None),
                    };
                    let mut source = Source::new(platform, "victim-channel", ChatType::Group);
                    source.scope_id = Some("victim-guild".to_owned());
                    source.user_id = Some("victim".to_owned());
                    let route = match kind {
                        Some(k) => ReplyRoute::FollowUp(k.to_owned()),
                        None => ReplyRoute::Send,
                    };
                    return Outcome::event(MessageEvent::new("/stop", source, route));
                }
                "claim-profile" => {
                    let mut e = event(req, "profile".to_owned());
                    e.source.profile = Some(arg.to_owned());
                    return Outcome::event(e);
                }
                "log-forge" => {
                    hermes_converter_sdk::log(
                        Level::Info,
                        "real line\nERROR hermes_gateway: forged record\r\u{1b}[2Kwiped",
                    );
                    "ok".to_owned()
                }
                "panic-long" => panic!("{}", "forged\nERROR record\n".repeat(800)),
                "spin" => {
                    let n: u64 = arg.parse().unwrap_or(1);
                    let mut x: u64 = 0;
                    for _ in 0..n.saturating_mul(1_000_000) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                    "spun".to_owned()
                }
                _ => config_text("label", config),
            };
            Outcome::event(event(req, text))
        }
    }
}

hermes_converter_sdk::export_converter!(hostile::Hostile);
