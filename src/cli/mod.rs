//! The `translation-worker` command line: subcommands, their arguments, and the
//! start-up of each (runtime, logging, signals). The library does the work.

mod tools;
mod translate;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use translation_worker::config::{Config, LogFormat};
use translation_worker::gateway::Gateway;
use translation_worker::telemetry::HttpServer;
use translation_worker::telemetry::{self, Metrics};
use translation_worker::worker::Worker;

use self::tools::{BenchEngineArgs, EchoArgs, LoadgenArgs};

#[derive(Parser)]
#[command(
    version,
    about = "RabbitMQ → Redis cache → dynamic batches → CTranslate2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume translation jobs until SIGTERM/SIGINT.
    Serve {
        /// TOML configuration file (environment variables TW_<SECTION>__<KEY> override it).
        #[arg(long, short, env = "TW_CONFIG")]
        config: Option<PathBuf>,
    },
    /// HTTP gateway: GET/POST /translate (LibreTranslate-compatible), /languages,
    /// /healthz and /metrics on `gateway.listen`; requests go through the broker as
    /// jobs. Drains on SIGTERM/SIGINT.
    Gateway {
        /// TOML configuration file (environment variables TW_<SECTION>__<KEY> override it).
        #[arg(long, short, env = "TW_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Raw CTranslate2 throughput of a model (no broker, no cache), as JSON.
    BenchEngine(BenchEngineArgs),
    /// Print the effective configuration (secrets redacted) and exit.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, short, env = "TW_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Translate texts (arguments, --file, or stdin lines) through the broker; prints
    /// one translation per line. Exits 1 on an error reply.
    Translate(translate::TranslateArgs),
    /// Send many jobs with a bounded number in flight and report throughput, latency
    /// and lost, failed or wrong jobs. Exits 1 if any (errors: unless --allow-errors).
    Loadgen(LoadgenArgs),
    /// Answer jobs with their own texts, no model or cache: the broker's round-trip
    /// ceiling for `loadgen`. Stops on SIGTERM/SIGINT.
    Echo(EchoArgs),
}

/// Parses the command line and runs the subcommand.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            telemetry::init_logging(config.log.format)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("tw-async")
                // Bounded: see `Config::blocking_threads`.
                .max_blocking_threads(config.blocking_threads())
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(config))
        }
        Command::Gateway { config } => {
            let config = Config::load(config.as_deref())?;
            telemetry::init_logging(config.log.format)?;
            runtime()?.block_on(gateway(config))
        }
        Command::BenchEngine(args) => {
            let report = translation_worker::tools::bench::run(&args.into())?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = Config::load(config.as_deref())?;
            print!("{}", config.effective_toml()?);
            for advice in config.advisories() {
                eprintln!("warning: {advice}");
            }
            Ok(())
        }
        Command::Translate(args) => {
            init_cli_logging()?;
            translate::run(&args)
        }
        Command::Loadgen(args) => {
            init_cli_logging()?;
            let options = args.options();
            let report = runtime()?.block_on(translation_worker::tools::loadgen::run(&options))?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            if !report.passed(args.allow_errors) {
                eprintln!(
                    "loadgen: FAILED ({} lost, {} mismatches, {} errors)",
                    report.lost, report.mismatches, report.errors
                );
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Echo(args) => {
            telemetry::init_logging(LogFormat::Auto)?;
            runtime()?.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(watch_signals(shutdown.clone()));
                translation_worker::tools::echo::run(&args.into(), shutdown).await
            })?;
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tw-async")
        .build()
        .context("cannot start the async runtime")
}

/// Logs of the client commands go to stderr (stdout carries their output); lapin's
/// warning on every returned message is noise there, the call reports it.
fn init_cli_logging() -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,lapin=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    for advice in config.advisories() {
        tracing::warn!("{advice}");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let metrics = Arc::new(Metrics::default());
    // Probes and metrics first: liveness holds during a long model load, and the
    // listener outlives the drain (it stops after the worker).
    let http_stop = CancellationToken::new();
    let http = if config.http.listen.is_empty() {
        None
    } else {
        let server = HttpServer::bind(&config.http.listen, metrics.clone()).await?;
        if let Some(addr) = server.local_addr() {
            tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
        }
        Some(tokio::spawn(server.serve(http_stop.clone())))
    };
    let worker = tokio::select! {
        w = Worker::start_observed(config, metrics, |engine| engine) => w?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let ran = worker.run(shutdown).await;
    http_stop.cancel();
    if let Some(task) = http {
        task.await.context("HTTP task")??;
    }
    Ok(ran?)
}

async fn gateway(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let gateway = Gateway::bind(&config).await?;
    if let Some(addr) = gateway.local_addr() {
        tracing::info!(%addr, "gateway serving /translate, /languages, /healthz and /metrics");
    }
    gateway.run(shutdown).await?;
    Ok(())
}

/// First SIGTERM/SIGINT: graceful drain. Second: exit at once (unacked jobs are
/// redelivered by the broker).
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: draining (send again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
