//! `trackgate`: parse the command line, load the config, set up logging, run, exit with a code
//! that means something: 0 clean, 1 failed at start or while running, 2 bad command line or
//! configuration, 3 shutdown grace period exceeded.
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use trackgate::app::{self, Exit};
use trackgate::cli::{self, Cli, Command};
use trackgate::config::{Config, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("trackgate: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trackgate: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => app::serve(config).await,
            other => cli::run(&config, other).await.map(|()| Exit::Clean),
        }
    });
    match result {
        Ok(Exit::Clean) => ExitCode::SUCCESS,
        Ok(Exit::GraceExceeded) => ExitCode::from(3),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "trackgate failed");
            eprintln!("trackgate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
