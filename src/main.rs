//! The `keygate` command.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "The agent gateway: identify, strip, inject, gate, audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve agents until SIGTERM or SIGINT.
    Run {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and report every problem.
    Check {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Print an agent token signed by the configuration's dev issuer (development only).
    DevToken {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
        /// The agent id (`sub`).
        #[arg(long)]
        agent: String,
        /// An `owner` claim, for issuers that take agents from claims.
        #[arg(long)]
        owner: Option<String>,
        /// Lifetime, such as 15m or 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Run a small upstream that echoes what it receives (to see what keygate forwards).
    Echo {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match keygate::config::load(&config) {
            Ok(s) => {
                println!(
                    "{}: ok ({} tools, {} agents, {} issuers)",
                    config.display(),
                    s.tools.by_name.len(),
                    s.agents.by_id.len(),
                    s.identity.issuers.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                ExitCode::from(2)
            }
        },
        Command::DevToken {
            config,
            agent,
            owner,
            ttl,
        } => {
            let result = keygate::config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|s| keygate::dev::dev_token(&s, &agent, owner.as_deref(), ttl));
            match result {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keygate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => runtime(|| run(config)),
        Command::Echo { listen } => runtime(|| async move { keygate::echo::run(&listen).await }),
    }
}

fn runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    keygate::telemetry::init_logging();
    let threads = std::env::var("KEYGATE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: PathBuf) -> Result<(), String> {
    let snapshot = keygate::config::load(&config).map_err(|e| e.to_string())?;
    let gw = keygate::Gateway::start(snapshot).await?;
    let running = keygate::server::serve(gw).await?;
    let shutdown = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        let _ = shutdown.send(true);
    });
    running.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
