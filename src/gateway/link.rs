//! The gateway's broker connection: [`Link`] holds the current [`Client`], and
//! [`supervise`] keeps one connected.
//!
//! Jobs go to the lane of [`ClientOptions::lane`] (`gateway.lane`, interactive by
//! default); the client falls back to the bulk lane when no worker binds it.
//!
//! The [`Client`] never reconnects by itself, so the supervisor task owns it: it
//! connects with jittered exponential backoff (`amqp.reconnect_*`), watches the
//! connection and replaces the client when it drops. Requests arriving while there is
//! none get 503.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use translation_client::{Client, ClientOptions};

use super::metrics::GatewayMetrics;
use crate::amqp::{BrokerError, ClientSetupError};
use crate::config::AmqpConfig;

/// How often the supervisor checks that the broker connection is still up (a call
/// that sees it drop wakes it at once).
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait for one connection attempt: a black-holed broker address would
/// otherwise hold the supervisor for the OS's TCP timeout (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for closing a client whose connection is already broken.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A client the broker nacks jobs on is replaced, but not before it is this old: a
/// queue that refuses every job (full, `reject-publish`) costs one reconnect per
/// period, not one per request.
const MIN_NACKED_CLIENT_AGE: Duration = Duration::from_secs(1);

/// The current broker client, replaced by the supervisor when its connection drops.
#[derive(Default)]
pub(super) struct Link {
    client: RwLock<Option<Client>>,
    /// Woken by a call that saw the connection drop, so the supervisor re-checks now.
    check: Notify,
    /// Set by a call whose job the broker nacked: the supervisor replaces the client.
    nacked: AtomicBool,
}

impl Link {
    /// The connected client, if any.
    pub(super) fn current(&self) -> Option<Client> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, client: Option<Client>) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
    }

    /// Tells the supervisor that a call saw the connection drop, so it replaces the
    /// client now rather than at its next periodic check.
    pub(super) fn connection_lost(&self) {
        self.check.notify_one();
    }

    /// Tells the supervisor that the broker nacked a job on the current client, so it
    /// replaces the client (connecting to a node picked afresh). RabbitMQ 3.10 can keep
    /// nacking every publish of a channel that first published to a quorum queue while
    /// its leader's node was down, long after a new leader was elected (the cluster
    /// drill in `tests/cluster.rs` met this for minutes); a new connection publishes
    /// fine.
    pub(super) fn publish_nacked(&self) {
        self.nacked.store(true, Ordering::Relaxed);
        self.check.notify_one();
    }
}

/// Keeps one connected [`Client`] in `link`: connects with backoff, watches the
/// connection, and replaces the client when it drops. Closes it on `stop`.
///
/// Returns early only when the broker refuses the very first login (almost always a
/// wrong `amqp.url`, which retrying cannot fix), with that error; later refusals are
/// retried like outages.
pub(super) async fn supervise(
    link: Arc<Link>,
    metrics: Arc<GatewayMetrics>,
    amqp: AmqpConfig,
    options: ClientOptions,
    stop: CancellationToken,
) -> Option<BrokerError> {
    let mut backoff = amqp.backoff();
    let mut connected_before = false;
    loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, crate::amqp::connect_client(&amqp, options.clone())) => r,
            _ = stop.cancelled() => return None,
        };
        match attempt {
            Ok(Ok(client)) => {
                if connected_before {
                    metrics.broker_reconnects.inc();
                }
                connected_before = true;
                backoff.reset();
                tracing::info!(
                    reply_queue = client.reply_queue(),
                    lane = %options.lane,
                    "gateway connected to the broker"
                );
                link.set(Some(client.clone()));
                // Nacks seen by the previous client are no reason to replace this one.
                link.nacked.store(false, Ordering::Relaxed);
                let connected_at = Instant::now();
                metrics.broker_connected.set(1);
                let stopping = loop {
                    tokio::select! {
                        _ = stop.cancelled() => break true,
                        _ = link.check.notified() => {}
                        _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                    }
                    if !client.is_connected() {
                        break false;
                    }
                    if connected_at.elapsed() >= MIN_NACKED_CLIENT_AGE
                        && link.nacked.swap(false, Ordering::Relaxed)
                    {
                        tracing::warn!(
                            "the broker nacks the gateway's jobs; replacing the connection"
                        );
                        break false;
                    }
                };
                link.set(None);
                metrics.broker_connected.set(0);
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
                if stopping {
                    return None;
                }
                tracing::warn!("gateway lost the broker connection; reconnecting");
            }
            Ok(Err(ClientSetupError::Connect(e))) if e.is_refused() && !connected_before => {
                tracing::error!(error = %e, "the broker refused the gateway's login; stopping");
                return Some(e);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "gateway cannot connect to the broker"),
            Err(_) => tracing::warn!(
                timeout_s = CONNECT_TIMEOUT.as_secs(),
                "gateway: connecting to the broker timed out"
            ),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return None,
        }
    }
}
