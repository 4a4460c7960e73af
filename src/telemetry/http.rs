//! The operations HTTP listener: `/healthz` (the process is alive), `/readyz` (it
//! takes jobs: model loaded, broker connected, consuming) and `/metrics` (Prometheus
//! text format).
//!
//! It starts before the model loads, so a liveness probe passes during a long load
//! while readiness stays false, and it keeps answering through the drain after SIGTERM
//! (ready turns false as soon as consuming stops).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use super::{Metrics, CONTENT_TYPE};

/// Errors of the HTTP listener.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (http.listen, TW_HTTP__LISTEN; empty disables the listener): {source}")]
    Bind {
        /// Configured address.
        addr: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound listener, ready to serve.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
}

impl HttpServer {
    /// Binds `addr` (`host:port`; port 0 picks a free one).
    pub async fn bind(addr: &str, metrics: Arc<Metrics>) -> Result<Self, HttpError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self { listener, metrics })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` fires.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), HttpError> {
        let app = router(self.metrics);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(HttpError::Serve)
    }
}

/// The routes, over the worker's metrics.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `/readyz`'s body. A struct, not `json!`: its keys go out in this order, as the
/// docs show them (`json!` objects serialise sorted).
#[derive(serde::Serialize)]
struct ReadyJson {
    ready: bool,
    model_loaded: bool,
    broker_connected: bool,
    consuming: bool,
    /// `up`, `down` or `disabled`.
    redis: &'static str,
}

async fn readyz(State(m): State<Arc<Metrics>>) -> Response {
    let r = m.readiness();
    let status = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = ReadyJson {
        ready: r.ready(),
        model_loaded: r.model_loaded,
        broker_connected: r.broker_connected,
        consuming: r.consuming,
        redis: match (r.cache_enabled, r.redis_up) {
            (false, _) => "disabled",
            (true, true) => "up",
            (true, false) => "down",
        },
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render()).into_response()
}
