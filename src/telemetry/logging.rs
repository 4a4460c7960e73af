//! The global `tracing` subscriber: JSON lines or human-readable text.

use std::io::IsTerminal;

use crate::config::LogFormat;

/// Errors while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// Levels when `RUST_LOG` is not set. lapin's I/O loop is off: it logs every failed
/// connection attempt at ERROR as "Exponential backoff attempts exhausted, aborting
/// recovery" (its own reconnection is disabled here, so that fires on the first
/// failure), which reads as "gave up" while the worker keeps retrying. Every such
/// failure reaches the worker as an error, which it logs with the (redacted) URL and
/// what it does next.
const DEFAULT_LOG_FILTER: &str = "info,lapin::io_loop=off";

/// Installs the global `tracing` subscriber: JSON lines or human-readable text, levels
/// from `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]).
pub fn init_logging(format: LogFormat) -> Result<(), TelemetryError> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let res = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        // Colour codes only for a terminal: in a file or a pipe they are noise.
        builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init()
    };
    res.map_err(|e| TelemetryError::Subscriber(e.to_string()))
}
