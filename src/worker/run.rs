//! The broker side of a started worker: consume with reconnects, answer and ack each
//! delivery, drain on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use translation_client::url::redact_url;
use translation_client::wire::{pair_key, Reply};
use translation_client::Lane;

use super::pipeline::{Outcome, Shared};
use super::start::{Worker, WorkerError};
use crate::amqp::{self, BrokerError, ConsumeOn, DeadLetter, QueueBinding, Session};
use crate::translate::{lane_index, CacheKey};

impl Worker {
    /// Consumes until `shutdown` fires, reconnecting to the broker with exponential
    /// backoff and jitter whenever the connection is lost. On shutdown it stops
    /// consuming, lets in-flight jobs finish for up to `shutdown.drain_timeout_secs`,
    /// and closes the connection; anything unanswered is redelivered by the broker.
    ///
    /// A refused login (`ACCESS_REFUSED`, or `NOT_ALLOWED` for the vhost) before the
    /// first successful connection is almost always a wrong `amqp.url`: `run` returns
    /// it as an error then (the binary exits non-zero, so Kubernetes shows a crash
    /// loop with the reason) instead of retrying for ever. After the worker has
    /// been connected, a refusal (rotated credentials, a broker restoring its users)
    /// is retried like any outage, with a warning that says so.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let shared = self.shared.clone();
        let self_metrics = shared.metrics.clone();
        let amqp = &shared.config.amqp;
        let bulk: Vec<QueueBinding> = shared
            .models
            .iter()
            .map(|m| QueueBinding {
                queue: m.queue.clone(),
                routing_keys: m.pairs.iter().map(|(s, t)| pair_key(s, t)).collect(),
            })
            .collect();
        // Bulk queues first, then (when on) every interactive lane: see `lanes`.
        let mut bindings = bulk.clone();
        if amqp.interactive_lane {
            bindings.extend(bulk.iter().map(|b| b.in_lane(Lane::Interactive)));
        }
        let tracker = TaskTracker::new();
        let probe_stop = shutdown.child_token();
        let probe = tokio::spawn(probe_redis(shared.clone(), probe_stop.clone()));
        let mut backoff = amqp.backoff();
        let mut connected_before = false;
        let mut fatal = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let opened = tokio::select! {
                r = Session::open_queues(amqp, &bindings) => r,
                _ = shutdown.cancelled() => break,
            };
            match opened {
                Ok(session) => {
                    if connected_before {
                        shared.metrics.broker_reconnects.inc();
                    }
                    connected_before = true;
                    backoff.reset();
                    shared.metrics.broker_connected.set(1);
                    tracing::info!(
                        url = %redact_url(&amqp.url),
                        queues = %bindings.iter().map(|b| b.queue.as_str()).collect::<Vec<_>>().join(","),
                        prefetch = amqp.prefetch,
                        interactive_prefetch = amqp.interactive_lane.then_some(amqp.interactive_prefetch),
                        "consuming"
                    );
                    let session = Arc::new(session);
                    let consumed = consume(&shared, &session, &shutdown, &tracker).await;
                    shared.metrics.consuming.set(0);
                    if consumed.is_err() {
                        shared.metrics.broker_connected.set(0);
                    }
                    match consumed {
                        // `consume` drained the in-flight jobs (their acks need its
                        // lane channels open).
                        Ok(()) => {
                            session.close().await;
                            shared.metrics.broker_connected.set(0);
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "broker connection lost"),
                    }
                }
                Err(e) if e.is_refused() && !connected_before => {
                    tracing::error!(error = %e, "the broker refused the login; stopping");
                    fatal = Some(e);
                    break;
                }
                Err(e) if e.is_refused() => tracing::warn!(
                    error = %e,
                    "the broker refused a login it accepted before (credentials rotated, \
                     user or vhost removed?); retrying"
                ),
                Err(e) => tracing::warn!(error = %e, "broker unavailable"),
            }
            let delay = backoff.next_delay();
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting to the broker"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        // Jobs of a lost connection may still be running; give them the same deadline.
        drain(&shared, &tracker).await;
        probe_stop.cancel();
        let _ = probe.await;
        shared.metrics.model_loaded.set(0);
        drop(shared);
        // Dropping the last batcher handle lets the batcher finish and stop.
        let Worker {
            shared,
            batcher_tasks,
        } = self;
        drop(shared);
        // Jobs abandoned at the drain deadline may still hold handles: do not wait long.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            futures_util::future::join_all(batcher_tasks),
        )
        .await;
        let m = &self_metrics;
        tracing::info!(
            jobs_ok = m.jobs_ok.get(),
            batches = m.batch_size.count(),
            batched_texts = m.batch_size.sum(),
            inference_seconds = m.inference_seconds.sum(),
            cache_hits = m.segments_cache_hit.get(),
            cache_misses = m.segments_cache_miss.get(),
            "worker stopped"
        );
        match fatal {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// How often the worker PINGs Redis to keep `redis_up` (and `/readyz`) current while
/// jobs do not: under Kubernetes' default readiness period (10 s), and one tiny
/// command per worker every few seconds costs Redis nothing.
const REDIS_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// PINGs Redis at once and then every [`REDIS_PROBE_INTERVAL`] until `stop`, so a
/// fresh or idle worker reports Redis as it is (see [`Cache::probe`]).
async fn probe_redis(shared: Arc<Shared>, stop: CancellationToken) {
    if !shared.cache.enabled() {
        return;
    }
    loop {
        tokio::select! {
            _ = shared.cache.probe() => {}
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(REDIS_PROBE_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Waits for in-flight jobs, up to the configured drain deadline.
async fn drain(shared: &Shared, tracker: &TaskTracker) {
    tracker.close();
    let deadline = Duration::from_secs(shared.config.shutdown.drain_timeout_secs);
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            unfinished = tracker.len(),
            "drain deadline passed; unfinished jobs will be redelivered"
        );
    }
}

/// The queues a worker consumes, as `(model, lane)`: every model's bulk queue, then
/// (when `amqp.interactive_lane`) every model's interactive queue, in the order of the
/// bindings declared in [`Worker::run`].
fn lanes(shared: &Shared) -> Vec<(usize, Lane)> {
    let models = 0..shared.models.len();
    let mut lanes: Vec<(usize, Lane)> = models.clone().map(|m| (m, Lane::Bulk)).collect();
    if shared.config.amqp.interactive_lane {
        lanes.extend(models.map(|m| (m, Lane::Interactive)));
    }
    lanes
}

/// Consumes deliveries until shutdown (then drains the jobs in flight, `Ok`) or until
/// the connection fails (`Err`). Each queue has its own consumer, so its own prefetch
/// window: the bulk queues `amqp.prefetch` each on the session's consuming channel,
/// the interactive ones `amqp.interactive_prefetch` each on a channel of their own, so
/// a bulk backlog can never fill the window interactive jobs arrive through.
async fn consume(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), BrokerError> {
    let lanes = lanes(shared);
    let lane_channel = if shared.config.amqp.interactive_lane {
        Some(amqp::prefetch_channel(session, shared.config.amqp.interactive_prefetch).await?)
    } else {
        None
    };
    let queues: Vec<String> = lanes
        .iter()
        .map(|&(m, lane)| lane.queue(&shared.models[m].queue))
        .collect();
    let on: Vec<ConsumeOn<'_>> = lanes
        .iter()
        .zip(&queues)
        .map(|(&(_, lane), queue)| ConsumeOn {
            queue,
            channel: match (lane, &lane_channel) {
                (Lane::Interactive, Some(ch)) => ch,
                _ => &session.consume,
            },
        })
        .collect();
    let consumed = amqp::consume_on_until(
        &on,
        shutdown,
        || shared.metrics.consuming.set(1),
        || {
            tracing::info!("shutdown: no longer consuming, finishing in-flight jobs");
            // Unready at once, so Kubernetes stops counting this pod while it drains.
            shared.metrics.consuming.set(0);
        },
        |index, delivery| {
            let (model, lane) = lanes.get(index).copied().unwrap_or((index, Lane::Bulk));
            let span = tracing::info_span!(
                "job",
                lane = lane.as_str(),
                correlation_id = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.as_str().to_owned()),
                delivery_tag = delivery.delivery_tag,
                // The job's own id, recorded once the body is parsed.
                id = tracing::field::Empty,
            );
            // At most `prefetch` of these exist per model at once: the broker sends no
            // more deliveries until earlier ones are acked.
            tracker.spawn(
                handle_delivery(shared.clone(), session.clone(), delivery, model, lane)
                    .instrument(span),
            );
        },
    )
    .await;
    if consumed.is_ok() {
        // The lane channel (dropped on return) carries the acks of its deliveries.
        drain(shared, tracker).await;
    }
    consumed
}

/// Processes one delivery end to end and acks it once its reply is confirmed.
async fn handle_delivery(
    shared: Arc<Shared>,
    session: Arc<Session>,
    delivery: Delivery,
    model: usize,
    lane: Lane,
) {
    let start = Instant::now();
    let m = &shared.metrics;
    m.jobs_in_flight.inc();
    m.jobs_received[lane_index(lane)].inc();
    // The routing key names the pair only on the jobs exchange (with the lane's
    // suffix); straight to the queue (default exchange) it is the queue's name.
    let via_exchange = delivery.exchange.as_str() == shared.config.amqp.exchange;
    let routing_key = via_exchange.then(|| lane.pair_of(delivery.routing_key.as_str()));
    let Outcome { reply, to_store } = shared
        .process(&delivery.data, Some(model), routing_key, lane)
        .await;
    match &reply {
        Reply::Ok { .. } => m.jobs_ok.inc(),
        Reply::Error { error, .. } => {
            m.job_error(error.code);
            tracing::info!(code = %error.code, message = %error.message, "job rejected");
        }
    }
    let entries: Vec<(CacheKey, &str)> = to_store.iter().map(|(k, t)| (*k, t.as_str())).collect();
    let queue = lane.queue(
        shared
            .models
            .get(model)
            .map_or(&shared.config.amqp.queue, |m| &m.queue),
    );
    let dead_letter = DeadLetter {
        cfg: &shared.config.amqp,
        queue: &queue,
    };
    amqp::answer(
        &session,
        &delivery,
        &reply,
        Some(dead_letter),
        shared.cache.put_many(&entries),
    )
    .await;
    m.jobs_in_flight.dec();
    let took = start.elapsed().as_secs_f64();
    m.job_seconds.observe(took);
    m.lane_job_seconds[lane_index(lane)].observe(took);
}
