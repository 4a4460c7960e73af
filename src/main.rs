//! `translation-worker` binary: parses the command line and runs the worker.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use translation_worker::bench::EngineBench;
use translation_worker::client::{Answer, TranslateArgs};
use translation_worker::config::{Config, LogFormat};
use translation_worker::echo::EchoArgs;
use translation_worker::gateway::Gateway;
use translation_worker::http::HttpServer;
use translation_worker::loadgen::LoadgenArgs;
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
    /// HTTP gateway: GET/POST /translate (LibreTranslate-compatible), /languages,
    /// /healthz and /metrics on `gateway.listen`; requests go through the broker as
    /// jobs. Drains on SIGTERM/SIGINT.
    Gateway {
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
    /// Translate texts (arguments, --file, or stdin lines) through the broker; prints
    /// one translation per line. Exits 1 on an error reply.
    Translate(TranslateArgs),
    /// Send many jobs with a bounded number in flight and report throughput, latency
    /// and lost, failed or wrong jobs. Exits 1 if any (errors: unless --allow-errors).
    Loadgen(LoadgenArgs),
    /// Answer jobs with their own texts, no model or cache: the broker's round-trip
    /// ceiling for `loadgen`. Stops on SIGTERM/SIGINT.
    Echo(EchoArgs),
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
        Command::BenchEngine(bench) => {
            let report = translation_worker::bench::run(&bench)?;
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
            // Read the input before starting the runtime: blocking I/O stays off it.
            let texts = read_texts(&args)?;
            if texts.is_empty() {
                return Ok(());
            }
            let results =
                runtime()?.block_on(translation_worker::client::translate_texts(&args, texts))?;
            if !print_replies(&args, &results)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Loadgen(args) => {
            init_cli_logging()?;
            let report = runtime()?.block_on(translation_worker::loadgen::run(&args))?;
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
                translation_worker::echo::run(&args, shutdown).await
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

/// The texts of `translate`: its arguments, else the lines of --file, else of stdin
/// (with --document: the whole file or stdin as one text).
fn read_texts(args: &TranslateArgs) -> anyhow::Result<Vec<String>> {
    if !args.texts.is_empty() {
        return Ok(args.texts.clone());
    }
    let text = match &args.file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?,
    };
    if args.document {
        return Ok(vec![text]);
    }
    Ok(text.lines().map(str::to_owned).collect())
}

/// Prints the replies in order; returns false after the first failed job (its error
/// goes to stderr). With --json every reply body is printed, one per line.
fn print_replies(
    args: &TranslateArgs,
    results: &[Result<
        translation_worker::client::RawReply,
        translation_worker::client::ClientError,
    >],
) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut ok = true;
    for result in results {
        // Texts the worker cut or could not translate are named on stderr, and a
        // failed text makes the command fail.
        if let Ok(Answer::Ok(reply)) = result.as_ref().map(|r| &r.answer) {
            for (i, e) in reply.errors.iter().enumerate() {
                if let Some(e) = e {
                    eprintln!("error: text {i}: {}: {}", e.code, e.message);
                    ok = false;
                }
            }
            for (i, _) in reply.truncated.iter().enumerate().filter(|(_, t)| **t) {
                eprintln!("warning: text {i} was longer than the model reads: truncated");
            }
        }
        match result {
            Ok(raw) if args.json => {
                out.write_all(&raw.body)?;
                out.write_all(b"\n")?;
                if let Answer::Error(e) = &raw.answer {
                    eprintln!("error: {}: {}", e.code, e.message);
                    ok = false;
                }
            }
            Ok(raw) => match &raw.answer {
                // A document is printed as it came back: its own line breaks.
                Answer::Ok(reply) if args.document => {
                    for t in &reply.translations {
                        write!(out, "{t}")?;
                    }
                }
                Answer::Ok(reply) => {
                    for t in &reply.translations {
                        writeln!(out, "{t}")?;
                    }
                }
                Answer::Error(e) => {
                    eprintln!("error: {}: {}", e.code, e.message);
                    ok = false;
                    break;
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
                if !args.json {
                    break;
                }
            }
        }
    }
    out.flush()?;
    Ok(ok)
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
