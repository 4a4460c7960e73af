//! Logging set-up, the worker's metrics (on `prometheus-client`, one registry per
//! worker), its readiness, and the `/healthz`, `/readyz`, `/metrics` listener.
//!
//! - `logging`: the global `tracing` subscriber ([`init_logging`]).
//! - `metrics`: [`Metrics`] and the handles the crate counts with ([`Counter`],
//!   [`Gauge`], [`Histogram`]), rendered in the Prometheus text format.
//! - `readiness`: what `/readyz` reports ([`Readiness`]) and what runs
//!   ([`BuildInfo`], [`BACKEND`]).
//! - `http`: the operations listener ([`HttpServer`]).

mod http;
mod logging;
mod metrics;
mod readiness;

pub use http::{router, HttpError, HttpServer};
pub use logging::{init_logging, TelemetryError};
pub(crate) use metrics::render;
pub use metrics::{Counter, Gauge, Histogram, Metrics, CONTENT_TYPE};
pub use readiness::{BuildInfo, Readiness, BACKEND};
