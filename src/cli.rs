//! Command-line definitions only (clap). `main.rs` acts on them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "An L7 reverse-proxy load balancer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        #[command(flatten)]
        config: ConfigFile,
        /// Worker threads (overrides server.workers; 0 = one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Log format (overrides log.format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
        /// Log filter, e.g. `info` or `sluice=debug` (overrides log.level).
        #[arg(long)]
        log_level: Option<String>,
    },
    /// Validate a config file fully and print a summary; exit 0 valid, 1 invalid.
    Check {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Try sluice out: three demo backends and the proxy on 127.0.0.1:8080, admin on :9901.
    Demo {
        /// Proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
    /// Health-check an HTTP endpoint (for containers without curl): `GET URL`, exit 0 on a
    /// 2xx answer, 1 otherwise with the reason on stderr. Plain http:// only.
    Probe {
        /// The URL to GET, e.g. http://127.0.0.1:9901/healthz.
        url: String,
        /// How long to wait for the answer, connect included ("500ms", "2s").
        #[arg(long, default_value = "2s", value_parser = crate::probe::parse_timeout)]
        timeout: std::time::Duration,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

/// `--config FILE`, shared by the commands that read a config file.
#[derive(Debug, clap::Args)]
pub struct ConfigFile {
    /// Config file: `--config`, else $SLUICE_CONFIG, else config/sluice.toml.
    #[arg(
        long = "config",
        value_name = "FILE",
        env = "SLUICE_CONFIG",
        default_value = "config/sluice.toml",
        hide_env_values = true
    )]
    pub path: PathBuf,
}
