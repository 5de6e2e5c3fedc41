//! `hermes-gateway`: the binary. It wires the library crates together, reads
//! configuration and formats output; the logic lives in the libraries.
//!
//! Exit codes (`cli.md`): 0 success, 1 runtime failure or misconfiguration
//! (one `error: …` line on stderr), 2 usage error (clap), 3 a typed
//! rejection of the input (`convert`), 4 relay access revoked (`run`).

/// mimalloc instead of glibc's allocator: a forward allocates and frees
/// many small buffers across tasks, and glibc's malloc/free/consolidate
/// were ~11 % of the gateway's CPU at saturation (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod args;
mod convert;
mod demo;
mod dev;
mod embedded;
mod enroll;
mod env_file;
mod exposition;
mod logging;
mod plugins_check;
mod plugins_diff;
mod plugins_test;
mod push;
mod record;
mod run;
mod scaffold;
mod serving;
mod settings;
mod text;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, PluginCommand, PluginsCommand};

/// Exit code for a runtime failure or misconfiguration.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a typed rejection of the input (`convert`).
pub const EXIT_REJECTED: u8 = 3;
/// Exit code when the relay revoked this gateway's access.
pub const EXIT_REVOKED: u8 = 4;

fn main() -> ExitCode {
    // Usage errors print clap's message and exit 2; --help/--version exit 0.
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => run::run(cli.run),
        Some(Command::Run(args)) => run::run(args),
        Some(Command::Plugins(PluginsCommand::Check(args))) => plugins_check::run(args),
        Some(Command::Plugins(PluginsCommand::Test(args))) => plugins_test::run(args),
        Some(Command::Plugins(PluginsCommand::Push(args))) => push::run(args),
        Some(Command::Plugins(PluginsCommand::Diff(args))) => plugins_diff::run(args),
        Some(Command::Convert(args)) => convert::run(args),
        Some(Command::Plugin(PluginCommand::New(args))) => new_plugin(&args.name),
        Some(Command::Enroll(args)) => enroll::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Dev(args)) => dev::run(args),
        Some(Command::Demo(args)) => demo::run(args),
    }
}

fn new_plugin(name: &str) -> anyhow::Result<ExitCode> {
    let s = scaffold::create(std::path::Path::new("."), name)?;
    println!(
        "created converter crate {} ({} files, the converter SDK and WIT included)",
        s.dir.display(),
        s.files.len()
    );
    println!("next:");
    println!("  rustup target add wasm32-wasip2   # once per machine");
    println!(
        "  cd {} && cargo test && cargo build --release --target wasm32-wasip2",
        s.dir.display()
    );
    println!("  (the crate's README.md goes on: plugins check, plugins test, dev)");
    Ok(ExitCode::SUCCESS)
}

/// An error and its causes on one line (`outer: inner: root`).
fn one_line(e: &anyhow::Error) -> String {
    text::one_line(&format!("{e:#}"))
}
