//! One lazy connection to standalone Redis or a Redis Cluster (the `[redis]` section,
//! TLS alike), shared by the worker's cache and the gateway's file store and rate
//! limit, so both connect, time out and recover the same way.
//!
//! Nothing connects until the first command: a Redis that is down at start-up is not
//! an error. Callers bound every command with their own deadline and breaker, and call
//! [`Connection::reset`] after a failure.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::RedisResult;
use translation_client::url::redact_url;

use crate::config::{ConfigError, RedisConfig, RedisMode};

/// Errors setting a connection up (no command has run yet).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The Redis URL (or a cluster seed) could not be parsed (the message carries the
    /// redacted URL).
    #[error("invalid redis URL {url}: {message}")]
    Url {
        /// Redacted URL.
        url: String,
        /// Parser message.
        message: String,
    },
    /// The TLS files (`redis.tls_*`) could not be read.
    #[error(transparent)]
    TlsFiles(#[from] ConfigError),
    /// The TLS files were read but Redis' TLS set-up refused them (e.g. a PEM block
    /// that does not parse).
    #[error("redis TLS set-up for {url} failed: {message}")]
    Tls {
        /// Redacted URL.
        url: String,
        /// redis-rs' message.
        message: String,
    },
}

/// The connection to standalone Redis or to a Redis Cluster.
pub(crate) enum Connection {
    /// One server; the manager reconnects by itself.
    Standalone(ConnectionManager),
    /// A cluster, through its seed nodes (boxed: the client is large).
    Cluster(Box<LazyCluster>),
}

/// A cluster connection made on first use and made afresh after a failure.
///
/// The cluster connection follows slot moves and reconnects single nodes itself; it is
/// still dropped after any failure, so the next attempt starts from the seeds (the
/// whole cluster may have been restarted, on new addresses).
pub(crate) struct LazyCluster {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
    /// Held while connecting, so concurrent callers wait for one connection attempt.
    connecting: tokio::sync::Mutex<()>,
}

impl LazyCluster {
    fn current(&self) -> Option<ClusterConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cluster connection, connecting first when there is none.
    pub(crate) async fn get(&self) -> RedisResult<ClusterConnection> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let c = self.client.get_async_connection().await?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn reset(&self) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Connection {
    /// Builds the (lazy) connection for `cfg.mode`, each connect and response bounded
    /// by `timeout`. Nothing is connected yet.
    pub(crate) fn lazy(cfg: &RedisConfig, timeout: Duration) -> Result<Self, ConnectError> {
        let url_err = |e: redis::RedisError| ConnectError::Url {
            url: redact_url(&cfg.url),
            message: e.to_string(),
        };
        let tls_err = |e: redis::RedisError| ConnectError::Tls {
            url: redact_url(&cfg.url),
            message: e.to_string(),
        };
        let certs = tls_certificates(cfg)?;
        match cfg.mode {
            RedisMode::Standalone => {
                let client = match certs {
                    Some(certs) => {
                        // Parse the URL first, so a URL error is reported as one.
                        let info =
                            redis::IntoConnectionInfo::into_connection_info(cfg.url.as_str())
                                .map_err(url_err)?;
                        redis::Client::build_with_tls(info, certs).map_err(tls_err)?
                    }
                    None => redis::Client::open(cfg.url.as_str()).map_err(url_err)?,
                };
                let mgr_cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // One quick retry inside the manager; the callers' breakers handle
                    // longer outages.
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(100));
                let mgr =
                    ConnectionManager::new_lazy_with_config(client, mgr_cfg).map_err(url_err)?;
                Ok(Connection::Standalone(mgr))
            }
            RedisMode::Cluster => {
                let mut builder = ClusterClient::builder(cfg.urls());
                if let Some(certs) = certs {
                    // The same roots and client certificate for every node, seeds and
                    // discovered ones alike.
                    builder = builder.certs(certs);
                }
                let client = builder
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Few, quick retries (a MOVED/ASK redirect takes one); the callers'
                    // breakers handle longer outages.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(url_err)?;
                Ok(Connection::Cluster(Box::new(LazyCluster {
                    client,
                    conn: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                })))
            }
        }
    }

    /// Runs one command. On a cluster it goes to its key's node, so it must name one
    /// key (or hash slot); a command without a key goes to whichever node the
    /// connection picks.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Connection::Standalone(m) => cmd.query_async(&mut m.clone()).await,
            Connection::Cluster(lazy) => cmd.query_async(&mut lazy.get().await?).await,
        }
    }

    /// Forgets the connection after a failure (cluster only; the manager reconnects).
    pub(crate) fn reset(&self) {
        if let Connection::Cluster(lazy) = self {
            lazy.reset();
        }
    }
}

/// The redis-rs TLS settings of `cfg`, or `None` when no TLS file is set.
fn tls_certificates(cfg: &RedisConfig) -> Result<Option<redis::TlsCertificates>, ConnectError> {
    let files = cfg.tls_files();
    if !files.any_set() {
        return Ok(None);
    }
    let pem = files.read()?;
    let client_tls = match (pem.client_cert, pem.client_key) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert: pem.ca.map(String::into_bytes),
    }))
}
