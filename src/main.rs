//! `translation-worker` binary: parses the command line and runs the worker.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use translation_worker::bench::EngineBench;
use translation_worker::config::Config;
use translation_worker::http::HttpServer;
use translation_worker::telemetry::{self, Metrics};
use translation_worker::worker::Worker;

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
    /// Raw CTranslate2 throughput of a model (no broker, no cache), as JSON.
    BenchEngine(EngineBench),
    /// Print the effective configuration (secrets redacted) and exit.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, short, env = "TW_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            telemetry::init_logging(config.log.format)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("tw-async")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(config))
        }
        Command::BenchEngine(bench) => {
            let report = translation_worker::bench::run(&bench)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::CheckConfig { config } => {
            let mut config = Config::load(config.as_deref())?;
            config.amqp.url = translation_worker::config::redact_url(&config.amqp.url);
            config.redis.url = translation_worker::config::redact_url(&config.redis.url);
            print!("{}", toml::to_string(&config)?);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
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
    worker.run(shutdown).await;
    http_stop.cancel();
    if let Some(task) = http {
        task.await.context("HTTP task")??;
    }
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
