//! The gateway's server: binds the listener, starts the broker link's supervisor,
//! serves until shutdown and drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use translation_client::{Client, ClientOptions};

use super::api::{router, AppState};
use super::http_errors::JsonErrors;
use super::link::{supervise, Link};
use super::metrics::GatewayMetrics;
use crate::config::Config;

/// Errors of the gateway's HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `gateway.listen` could not be bound.
    #[error("cannot listen on {addr} (gateway.listen, TW_GATEWAY__LISTEN): {source}")]
    Bind {
        /// Configured address.
        addr: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("gateway HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The broker refused the gateway's first login: a configuration error (see
    /// [`Gateway::run`]).
    #[error(transparent)]
    Refused(Box<crate::amqp::BrokerError>),
    /// `gateway.api_keys_file` could not be read.
    #[error(transparent)]
    Keys(#[from] super::keys::KeysError),
    /// The `[redis]` settings could not be used (URL, TLS files).
    #[error("gateway redis (files, rate limit): {0}")]
    Store(#[from] super::store::StoreError),
    /// A rate limit is configured but Redis is disabled: it could not be shared by the
    /// replicas.
    #[error("gateway.req_limit_per_minute (or a limit in gateway.api_keys_file) needs redis.enabled = true: the replicas share the counters through Redis")]
    LimitWithoutRedis,
}

/// The gateway's listener: accepted connections are wrapped in [`JsonErrors`], so the
/// errors hyper answers itself carry the same JSON body as the handlers' errors.
struct Listener {
    inner: tokio::net::TcpListener,
    metrics: Arc<GatewayMetrics>,
}

impl axum::serve::Listener for Listener {
    type Io = JsonErrors<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let metrics = self.metrics.clone();
        let on_rewrite = Box::new(move |status| {
            metrics.record("other", "other", status, Duration::ZERO);
        });
        (JsonErrors::new(io, on_rewrite), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The peer address of a connection (`ConnectInfo<Peer>`): the rate limit's client
/// when there is no `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer(pub(super) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The HTTP gateway: a bound listener and its broker supervisor.
pub struct Gateway {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    supervisor_stop: CancellationToken,
    supervisor: tokio::task::JoinHandle<Option<crate::amqp::BrokerError>>,
    drain: Duration,
}

impl Gateway {
    /// Binds `gateway.listen` (port 0 picks a free one) and starts connecting to the
    /// broker (`amqp.url`, `amqp.exchange`) in the background: until connected,
    /// `/healthz` and translations answer 503. Must be called on a Tokio runtime.
    pub async fn bind(config: &Config) -> Result<Self, GatewayError> {
        let mut cfg = config.gateway.clone();
        cfg.max_texts = config.gateway_max_texts();
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: cfg.listen.clone(),
                source,
            })?;
        let pairs = config.served_pairs();
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let options = ClientOptions {
            exchange: config.amqp.exchange.clone(),
            timeout,
            // Admission already caps calls at max_pending: the client's own limit must
            // not queue admitted calls behind it.
            max_in_flight: cfg.max_pending,
            connection_name: "translation-worker-gateway".into(),
            // `gateway.lane`: interactive by default (a person waits on each request).
            lane: cfg.lane,
            ..ClientOptions::default()
        };
        let languages = super::libretranslate::languages(&pairs);
        let codes: Vec<String> = languages.iter().map(|l| l.code().to_owned()).collect();
        let detector = Arc::new(super::detect::Detector::new(&codes));
        // Build the language detector in the background: the first `/detect` or
        // `source: "auto"` then need not.
        tokio::task::spawn_blocking({
            let detector = detector.clone();
            move || detector.warm_up()
        });
        let keys = if cfg.api_keys_file.as_os_str().is_empty() {
            None
        } else {
            let keys = super::keys::ApiKeys::load(&cfg.api_keys_file)?;
            // The count only: keys are never logged.
            tracing::info!(keys = keys.len(), "API keys loaded");
            Some(keys)
        };
        let mut access = super::keys::Access {
            required: keys.is_some() && cfg.api_keys_required,
            keys,
            default_limit: cfg.req_limit_per_minute,
            store: None,
        };
        let wants_files = cfg.files_translation && config.redis.enabled;
        if access.needs_store() && !config.redis.enabled {
            return Err(GatewayError::LimitWithoutRedis);
        }
        // One lazy connection for files and counters; nothing connects yet.
        let store = if wants_files || access.needs_store() {
            Some(Arc::new(super::store::Store::new(&config.redis)?))
        } else {
            None
        };
        if access.needs_store() {
            access.store = store.clone();
        }
        let formats = if wants_files {
            crate::documents::FileKind::ALL
                .iter()
                .map(|k| k.extension().to_owned())
                .collect()
        } else {
            Vec::new()
        };
        let frontend =
            super::libretranslate::frontend_settings(&pairs, config.limits.max_text_chars)
                .with_features(formats, access.keys.is_some(), access.required);
        let state = Arc::new(AppState {
            languages,
            detector,
            frontend,
            files: if wants_files { store } else { None },
            access,
            pairs,
            timeout,
            metrics: Arc::new(GatewayMetrics::new(cfg.max_pending)),
            cfg,
            link: Arc::new(Link::default()),
        });
        let supervisor_stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(
            state.link.clone(),
            state.metrics.clone(),
            config.amqp.clone(),
            options,
            supervisor_stop.clone(),
        ));
        Ok(Self {
            listener,
            state,
            supervisor_stop,
            supervisor,
            drain: Duration::from_secs(config.shutdown.drain_timeout_secs),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> Arc<GatewayMetrics> {
        self.state.metrics.clone()
    }

    /// A handle that outlives [`Gateway::run`] taking `self`: metrics and the current
    /// broker client.
    pub fn handle(&self) -> GatewayHandle {
        GatewayHandle {
            state: self.state.clone(),
        }
    }

    /// Serves until `shutdown` fires, then stops accepting connections, lets requests
    /// in flight finish (up to `shutdown.drain_timeout_secs`) and closes the broker
    /// connection.
    ///
    /// A refused login (`ACCESS_REFUSED`, or `NOT_ALLOWED` for the vhost) before the
    /// first successful connection is almost always a wrong `amqp.url`: the gateway
    /// stops serving and returns [`GatewayError::Refused`] (the binary exits non-zero)
    /// rather than answering 503 for ever. Later refusals are retried like outages.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let Gateway {
            listener,
            state,
            supervisor_stop,
            mut supervisor,
            drain,
        } = self;
        let app = router(state.clone());
        let stop = shutdown.clone();
        let listener = Listener {
            inner: listener,
            metrics: state.metrics.clone(),
        };
        let serve = async move {
            // The peer address is the rate limit's client without X-Forwarded-For.
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        };
        let result = tokio::select! {
            r = serve => r.map_err(GatewayError::Serve),
            _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
                tracing::warn!(
                    pending = state.metrics.pending(),
                    "gateway drain deadline passed; closing with requests in flight"
                );
                Ok(())
            }
            done = &mut supervisor => {
                // The supervisor only returns early on a refused first login.
                return match done {
                    Ok(Some(refused)) => Err(GatewayError::Refused(Box::new(refused))),
                    _ => Ok(()),
                };
            }
        };
        supervisor_stop.cancel();
        let _ = supervisor.await;
        result
    }
}

/// A view of a running gateway (see [`Gateway::handle`]).
#[derive(Clone)]
pub struct GatewayHandle {
    state: Arc<AppState>,
}

impl GatewayHandle {
    /// The gateway's metrics.
    pub fn metrics(&self) -> Arc<GatewayMetrics> {
        self.state.metrics.clone()
    }

    /// The supervisor's broker client while one is connected. Closing it makes the
    /// supervisor connect a new one (how the tests drill a lost connection).
    pub fn client(&self) -> Option<Client> {
        self.state.link.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_keys_come_from_the_environment_and_are_validated() {
        let env = |vars: &[(&str, &str)]| {
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let c = Config::from_sources(
            "[gateway]\nmax_pending = 8\n",
            None,
            env(&[
                ("TW_GATEWAY__LISTEN", "127.0.0.1:18080"),
                ("TW_GATEWAY__REQUEST_TIMEOUT_MS", "1500"),
                ("TW_GATEWAY__MAX_FILE_BYTES", "4096"),
                ("TW_GATEWAY__FILE_TTL_SECS", "60"),
                ("TW_GATEWAY__API_KEYS_FILE", "/etc/tw/keys"),
                ("TW_GATEWAY__API_KEYS_REQUIRED", "false"),
                ("TW_GATEWAY__REQ_LIMIT_PER_MINUTE", "30"),
                ("TW_GATEWAY__FILES_TRANSLATION", "false"),
                ("TW_GATEWAY__PUBLIC_URL", "https://tr.example.com"),
            ]),
        )
        .unwrap();
        assert_eq!(c.gateway.listen, "127.0.0.1:18080");
        assert_eq!(c.gateway.request_timeout_ms, 1500);
        assert_eq!(c.gateway.max_pending, 8);
        assert_eq!(
            (c.gateway.max_file_bytes, c.gateway.file_ttl_secs),
            (4096, 60)
        );
        assert_eq!(
            c.gateway.api_keys_file,
            std::path::PathBuf::from("/etc/tw/keys")
        );
        assert!(!c.gateway.api_keys_required && !c.gateway.files_translation);
        assert_eq!(c.gateway.req_limit_per_minute, 30);
        assert_eq!(c.gateway.public_url, "https://tr.example.com");
        let d = Config::default().gateway;
        assert_eq!(
            (d.max_file_bytes, d.file_ttl_secs, d.req_limit_per_minute),
            (10 * 1024 * 1024, 1800, 0)
        );
        assert!(d.api_keys_file.as_os_str().is_empty() && d.files_translation);
        for (var, value, key) in [
            ("TW_GATEWAY__LISTEN", "localhost", "gateway.listen"),
            ("TW_GATEWAY__MAX_PENDING", "0", "gateway.max_pending"),
            (
                "TW_GATEWAY__REQUEST_TIMEOUT_MS",
                "0",
                "gateway.request_timeout_ms",
            ),
            ("TW_GATEWAY__MAX_BODY_BYTES", "10", "gateway.max_body_bytes"),
            ("TW_GATEWAY__MAX_TEXTS", "129", "gateway.max_texts"),
            (
                "TW_GATEWAY__RETRY_AFTER_SECS",
                "0",
                "gateway.retry_after_secs",
            ),
            ("TW_GATEWAY__MAX_FILE_BYTES", "10", "gateway.max_file_bytes"),
            ("TW_GATEWAY__FILE_TTL_SECS", "0", "gateway.file_ttl_secs"),
            (
                "TW_GATEWAY__PUBLIC_URL",
                "tr.example.com",
                "gateway.public_url",
            ),
            ("TW_GATEWAY__PUBLIC_URL", "https://x/", "gateway.public_url"),
        ] {
            let e = Config::from_sources("", None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{var}={value}: {e}");
        }
    }
}
