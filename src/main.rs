//! The `sluice` binary: parse the command line, start logging, hand over to the library.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice::cli::{Cli, Command, LogFormatArg};
use sluice::config::{Config, LogFormat};
use sluice::server::{self, RunOptions, Server};
use sluice::telemetry::LogControl;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => return check(&config.path),
        Command::Run {
            config,
            workers,
            log_format,
            log_level,
        } => run(&config.path, workers, log_format, log_level),
        Command::Demo { bind, admin } => demo(bind, admin),
        Command::Probe { url, timeout } => return probe(&url, timeout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn probe(url: &str, timeout: std::time::Duration) -> ExitCode {
    match sluice::probe::probe(url, timeout) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    path: &Path,
    workers: Option<usize>,
    log_format: Option<LogFormatArg>,
    log_level: Option<String>,
) -> anyhow::Result<()> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            anyhow::bail!("invalid configuration in {}", path.display());
        }
    };
    let format = match log_format {
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Json) => LogFormat::Json,
        None => config.log.format,
    };
    let level = log_level.unwrap_or_else(|| config.log.level.clone());
    let log = sluice::telemetry::init(&level, format)?;
    serve(config, workers, log.control(), |_| ())
}

/// Binds, calls `ready` with the bound server (to print where it listens), and serves until a
/// signal stops it.
fn serve(
    config: Config,
    workers: Option<usize>,
    log: LogControl,
    ready: impl FnOnce(&Server),
) -> anyhow::Result<()> {
    let source = config.source.display().to_string();
    let server = Server::bind(
        config,
        RunOptions {
            workers,
            log: Some(log),
            ..RunOptions::default()
        },
    )
    .context("cannot start")?;
    for addr in server.listener_addrs() {
        tracing::info!(%addr, workers = server.workers(), config = %source, "listening");
    }
    if let Some(addr) = server.admin_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    ready(&server);
    let shutdown = CancellationToken::new();
    server::handle_signals(shutdown.clone(), server.control())?;
    server.run(shutdown)?;
    tracing::info!("stopped");
    Ok(())
}

fn demo(bind: std::net::SocketAddr, admin: std::net::SocketAddr) -> anyhow::Result<()> {
    let log = sluice::telemetry::init("info", LogFormat::Text)?;
    let config = sluice::demo::start(bind, admin)?;
    serve(config, None, log.control(), |server| {
        let bind = server.listener_addrs()[0];
        let admin = server.admin_addr().unwrap_or(admin);
        println!("{}", sluice::demo::instructions(bind, admin));
    })
}
