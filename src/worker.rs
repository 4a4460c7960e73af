//! The worker: consumes jobs, answers them from the cache or the batcher, replies, acks.
//!
//! Delivery guarantee: a job is acknowledged only after its reply (or dead letter) is
//! confirmed by the broker, so a crash at any point leaves it unacknowledged and the
//! broker redelivers it (at-least-once).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::batcher::{self, BatcherHandle, CpuGate, Policy};
use crate::broker::{jittered, routing_key, BrokerError, QueueBinding, Session};
use crate::cache::{Cache, CacheError, CacheKey, KeyContext};
use crate::config::{available_cpus, parse_pair, redact_url, Config, ModelConfig};
use crate::engine::{Backend, Engine, EngineError};
use crate::protocol::{
    parse_job, DecodeOptions, ErrorBody, ErrorCode, Job, JobError, Reply, SegmentStats, Split,
};
use crate::segment;
use crate::telemetry::{BuildInfo, Metrics, BACKEND};

/// Errors that stop the worker from starting.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The model could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The cache could not be set up.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A blocking start-up task panicked.
    #[error("start-up task failed: {0}")]
    Join(String),
    /// The broker refused the worker's first login (see [`Worker::run`]).
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// State shared by every job.
struct Shared {
    /// The whole configuration.
    config: Config,
    /// The models served, in configuration order.
    models: Vec<Model>,
    /// Jobs tokenizing at once: one per inference thread. Encoding a text briefly
    /// holds every token of it (≈ 500 bytes each, before the cut to
    /// `max_input_length`), so without this a flood of long texts costs that
    /// `prefetch` times over; more at once would not run faster on these CPUs.
    tokenize_permits: Arc<tokio::sync::Semaphore>,
    /// Redis cache (or its stand-in when disabled).
    cache: Cache,
    /// Counters and histograms.
    metrics: Arc<Metrics>,
}

/// One served model: its engine, its batcher and what it answers.
struct Model {
    /// Model id for replies.
    id: String,
    /// Its settings.
    config: ModelConfig,
    /// The queue it consumes.
    queue: String,
    /// Language pairs it serves.
    pairs: Vec<(String, String)>,
    /// Client language code → the model's language token (multilingual models only).
    tokens: HashMap<String, String>,
    /// Tokenizer and model (tokenizing happens on the blocking pool).
    engine: Arc<Engine>,
    /// Entry to its dynamic batcher.
    batcher: BatcherHandle,
    /// Decoding options a job gets when it sets none.
    defaults: DecodeOptions,
}

/// Where a job goes: a model and the pair it is translated in.
struct Route<'a> {
    model: &'a Model,
    source: String,
    target: String,
}

impl Route<'_> {
    /// Cache-key context: model files, pair.
    fn keys(&self) -> KeyContext {
        KeyContext {
            model_fingerprint: self.model.engine.fingerprint(),
            source: self.source.clone(),
            target: self.target.clone(),
        }
    }

    /// The model's tokens for the pair: source token, target prefix.
    fn language_tokens(&self) -> (Option<String>, Option<String>) {
        (
            self.model.tokens.get(&self.source).cloned(),
            self.model.tokens.get(&self.target).cloned(),
        )
    }
}

/// Segments of one job: the texts' units, and how they map back.
struct Segmented {
    /// What is translated (sentences, or whole texts).
    units: Vec<String>,
    /// Per text: its units' ranges inside the text (`split`), and where its units
    /// start in `units`.
    layout: Vec<(Vec<Range<usize>>, usize)>,
}

/// A job's texts after translation.
struct Translated {
    /// Per text: its translation (`""` when it failed).
    translations: Vec<String>,
    /// Per text: whether it came from the cache.
    cached: Vec<bool>,
    /// Per text, for `split: sentences`: its segments and cache hits.
    segments: Option<Vec<SegmentStats>>,
    /// Per text: whether the model read only its start.
    truncated: Vec<bool>,
    /// Per text: why it failed, if it did.
    errors: Vec<Option<String>>,
    /// New translations to store in the cache.
    to_store: Vec<(CacheKey, String)>,
}

/// What translating a list of units gave, per unit, and the new cache entries.
struct UnitResults {
    /// The translation, or why it failed.
    results: Vec<Result<String, String>>,
    /// Whether it came from the cache.
    cached: Vec<bool>,
    /// Whether the model read only its start.
    truncated: Vec<bool>,
    /// New translations to store in the cache.
    to_store: Vec<(CacheKey, String)>,
}

/// A started worker: model loaded, batcher running, not yet connected to the broker.
pub struct Worker {
    shared: Arc<Shared>,
    batcher_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What processing one job produced.
pub struct Outcome {
    /// The reply to send.
    pub reply: Reply,
    /// New translations to store in the cache.
    pub to_store: Vec<(CacheKey, String)>,
}

impl Worker {
    /// Loads the model (on the blocking pool), sets up the cache and starts the batcher.
    pub async fn start(config: Config) -> Result<Self, WorkerError> {
        Self::start_with(config, |engine| engine).await
    }

    /// Like [`Worker::start`], but the batcher runs whatever `wrap` makes of the loaded
    /// engine: tests use it to inject engine faults.
    pub async fn start_with(
        config: Config,
        wrap: impl FnOnce(Arc<Engine>) -> Arc<dyn Backend>,
    ) -> Result<Self, WorkerError> {
        Self::start_observed(config, Arc::new(Metrics::default()), wrap).await
    }

    /// Like [`Worker::start_with`], counting into `metrics`, which may already be
    /// served (the HTTP listener starts before the model loads). With several models,
    /// `wrap` applies to the first.
    pub async fn start_observed(
        config: Config,
        metrics: Arc<Metrics>,
        wrap: impl FnOnce(Arc<Engine>) -> Arc<dyn Backend>,
    ) -> Result<Self, WorkerError> {
        let cache = Cache::new(&config.redis, metrics.clone())?;
        let policy = Policy {
            max_batch_size: config.batch.max_batch_size,
            min_batch_size: config.batch.min_batch_size,
            max_batch_tokens: config.batch.max_batch_tokens,
            max_wait: config.max_wait(),
            max_delay: Duration::from_millis(config.batch.max_delay_ms),
            max_queued: config.batch.max_queued,
        };
        let model_configs: Vec<ModelConfig> = config.model_list().into_iter().cloned().collect();
        let most_threads = config.tokenize_threads();
        // The models' engines share the CPUs this process may use (see CpuGate).
        let gate = CpuGate::new(available_cpus().max(most_threads));
        let mut wrap = Some(wrap);
        let mut models = Vec::with_capacity(model_configs.len());
        let mut batcher_tasks = Vec::with_capacity(model_configs.len());
        for model_cfg in model_configs {
            let load_cfg = model_cfg.clone();
            let engine = tokio::task::spawn_blocking(move || Engine::load(&load_cfg))
                .await
                .map_err(|e| WorkerError::Join(e.to_string()))??;
            let engine = Arc::new(engine);
            let backend: Arc<dyn Backend> = match wrap.take() {
                Some(w) => w(engine.clone()),
                None => engine.clone(),
            };
            let (replicas, threads) = model_cfg.threading();
            let (batcher, task) =
                batcher::spawn_gated(backend, policy, metrics.clone(), gate.clone(), threads);
            batcher_tasks.push(task);
            let pairs = model_cfg.served_pairs();
            let tokens = pairs
                .iter()
                .flat_map(|(s, t)| [s, t])
                .filter_map(|code| {
                    crate::languages::model_token(
                        model_cfg.language_tokens,
                        code,
                        &model_cfg.language_codes,
                    )
                    .map(|tok| (code.clone(), tok))
                })
                .collect();
            let defaults = DecodeOptions {
                beam_size: model_cfg.beam_size as u32,
                max_decoding_length: model_cfg.max_decoding_length as u32,
                length_penalty: 1.0,
                repetition_penalty: 1.0,
                no_repeat_ngram_size: 0,
            };
            let id = model_cfg.model_id();
            let queue = config.queue_for(&model_cfg);
            tracing::info!(
                model = %id,
                path = %model_cfg.path.display(),
                queue = %queue,
                pairs = %pairs.iter().map(|(s, t)| routing_key(s, t)).collect::<Vec<_>>().join(","),
                replicas,
                threads_per_replica = threads,
                device = %model_cfg.device,
                compute_type = %model_cfg.compute_type,
                "model loaded"
            );
            models.push(Model {
                id,
                config: model_cfg,
                queue,
                pairs,
                tokens,
                engine,
                batcher,
                defaults,
            });
        }
        let tokenize_permits = Arc::new(tokio::sync::Semaphore::new(most_threads));
        let _ = metrics.build_info.set(BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            model: models
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            backend: BACKEND,
            device: models
                .first()
                .map_or_else(String::new, |m| m.config.device.to_string()),
            max_input_length: models
                .iter()
                .map(|m| m.engine.max_input_length().to_string())
                .collect::<Vec<_>>()
                .join(","),
        });
        metrics.cache_enabled.set(u64::from(config.redis.enabled));
        metrics.model_loaded.set(1);
        tracing::info!(
            models = models.len(),
            redis = %redact_url(&config.redis.url),
            cache = config.redis.enabled,
            "worker ready"
        );
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                models,
                tokenize_permits,
                cache,
                metrics,
            }),
            batcher_tasks,
        })
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Processes one job body without the broker: parse, validate, cache, translate.
    pub async fn process(&self, body: &[u8]) -> Outcome {
        self.shared.process(body, None, None).await
    }

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
        let bindings: Vec<QueueBinding> = shared
            .models
            .iter()
            .map(|m| QueueBinding {
                queue: m.queue.clone(),
                routing_keys: m.pairs.iter().map(|(s, t)| routing_key(s, t)).collect(),
            })
            .collect();
        let tracker = TaskTracker::new();
        let probe_stop = shutdown.child_token();
        let probe = tokio::spawn(probe_redis(shared.clone(), probe_stop.clone()));
        let initial = Duration::from_millis(amqp.reconnect_initial_ms);
        let max = Duration::from_millis(amqp.reconnect_max_ms);
        let mut backoff = initial;
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
                    backoff = initial;
                    shared.metrics.broker_connected.set(1);
                    tracing::info!(
                        url = %redact_url(&amqp.url),
                        queues = %bindings.iter().map(|b| b.queue.as_str()).collect::<Vec<_>>().join(","),
                        prefetch = amqp.prefetch,
                        "consuming"
                    );
                    let session = Arc::new(session);
                    let consumed = consume(&shared, &session, &shutdown, &tracker).await;
                    shared.metrics.consuming.set(0);
                    if consumed.is_err() {
                        shared.metrics.broker_connected.set(0);
                    }
                    match consumed {
                        Ok(()) => {
                            drain(&shared, &tracker).await;
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
            let delay = jittered(backoff);
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting to the broker"
            );
            backoff = (backoff * 2).min(max);
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

/// Consumes deliveries until shutdown (`Ok`) or until the connection fails (`Err`).
/// Each model's queue has its own consumer (and so its own prefetch window).
async fn consume(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), BrokerError> {
    let mut tags = Vec::with_capacity(shared.models.len());
    let mut streams = Vec::with_capacity(shared.models.len());
    for (i, model) in shared.models.iter().enumerate() {
        let consumer = session.consume(&model.queue, "").await?;
        tags.push(consumer.tag());
        streams.push(consumer.map(move |d| (i, d)).boxed());
    }
    let mut deliveries = futures_util::stream::select_all(streams);
    shared.metrics.consuming.set(1);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                tracing::info!("shutdown: no longer consuming, finishing in-flight jobs");
                // Unready at once, so Kubernetes stops counting this pod while it drains.
                shared.metrics.consuming.set(0);
                // Deliveries the broker already pushed but we never read stay unacked
                // and are redelivered when the connection closes.
                for tag in &tags {
                    let _ = session
                        .consume
                        .basic_cancel(tag.clone(), BasicCancelOptions::default())
                        .await;
                }
                return Ok(());
            }
            next = deliveries.next() => match next {
                Some((model, Ok(delivery))) => {
                    let span = tracing::info_span!(
                        "job",
                        correlation_id = delivery
                            .properties
                            .correlation_id()
                            .as_ref()
                            .map(|c| c.as_str().to_owned()),
                        delivery_tag = delivery.delivery_tag,
                        // The job's own id, recorded once the body is parsed.
                        id = tracing::field::Empty,
                    );
                    let shared = shared.clone();
                    let session = session.clone();
                    // At most `prefetch` of these exist per model at once: the broker
                    // sends no more deliveries until earlier ones are acked.
                    tracker.spawn(
                        handle_delivery(shared, session, delivery, model).instrument(span),
                    );
                }
                Some((_, Err(source))) => {
                    return Err(BrokerError::Amqp { op: "consume", source });
                }
                None => return Err(BrokerError::ConsumerClosed),
            }
        }
    }
}

/// Processes one delivery end to end and acks it once its reply is confirmed.
async fn handle_delivery(
    shared: Arc<Shared>,
    session: Arc<Session>,
    delivery: Delivery,
    model: usize,
) {
    let start = Instant::now();
    let m = &shared.metrics;
    m.jobs_in_flight.inc();
    // The routing key names the pair only on the jobs exchange; straight to the
    // queue (default exchange) it is the queue's name.
    let via_exchange = delivery.exchange.as_str() == shared.config.amqp.exchange;
    let routing_key = via_exchange.then(|| delivery.routing_key.as_str());
    let Outcome { reply, to_store } = shared
        .process(&delivery.data, Some(model), routing_key)
        .await;
    match &reply {
        Reply::Ok { .. } => m.jobs_ok.inc(),
        Reply::Error { error, .. } => {
            m.job_error(error.code);
            tracing::info!(code = %error.code, message = %error.message, "job rejected");
        }
    }
    let reply_to = delivery
        .properties
        .reply_to()
        .as_ref()
        .filter(|r| !r.as_str().is_empty());
    let publish = async {
        match (reply_to, &reply) {
            (Some(rt), r) => {
                session
                    .reply(
                        rt.as_str(),
                        delivery.properties.correlation_id().as_ref(),
                        &r.to_bytes(),
                    )
                    .await
            }
            // Nobody to tell: park it in the dead-letter queue with the reason.
            (None, Reply::Error { error, .. }) => {
                session
                    .dead_letter(
                        &shared.config.amqp,
                        shared
                            .models
                            .get(model)
                            .map_or(&shared.config.amqp.queue, |m| &m.queue),
                        &delivery.data,
                        &delivery.properties,
                        error.code.as_str(),
                        &error.message,
                    )
                    .await
            }
            // Cache warming: translated and stored, nothing to send.
            (None, Reply::Ok { .. }) => Ok(()),
        }
    };
    let entries: Vec<(CacheKey, &str)> = to_store.iter().map(|(k, t)| (*k, t.as_str())).collect();
    let (published, ()) = tokio::join!(publish, shared.cache.put_many(&entries));
    let done = match published {
        Ok(()) => true,
        // The reply queue refused the reply (full, with `x-overflow: reject-publish`):
        // like a deleted reply queue, the client cannot take it. Requeueing would
        // redeliver the job at once and loop for as long as the queue stays full.
        Err(e @ BrokerError::Nacked(_)) if reply_to.is_some() => {
            tracing::warn!(error = %e, "reply refused by its queue; dropped");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "reply not confirmed; requeueing the job");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            false
        }
    };
    if done {
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            // The channel is gone: the broker will redeliver (a duplicate reply).
            tracing::warn!(error = %e, "ack failed");
        }
    }
    m.jobs_in_flight.dec();
    m.job_seconds.observe(start.elapsed().as_secs_f64());
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    /// Processes one job body; `model` is the queue's model when the job came from
    /// one, `routing_key` its key (the pair, when the body names none).
    async fn process(
        &self,
        body: &[u8],
        model: Option<usize>,
        routing_key: Option<&str>,
    ) -> Outcome {
        match self.try_process(body, model, routing_key).await {
            Ok(o) => o,
            Err(e) => Outcome {
                reply: e.into(),
                to_store: Vec::new(),
            },
        }
    }

    /// The model and pair for `job`: the pair named in the body, else by the routing
    /// key, else the model's own `source`/`target`; a model that serves it, among
    /// the queue's model (or all models when there is no queue).
    fn route(
        &self,
        job: &Job,
        model: Option<usize>,
        routing_key: Option<&str>,
    ) -> Result<Route<'_>, JobError> {
        let candidates: Vec<&Model> = match model.and_then(|i| self.models.get(i)) {
            Some(m) => vec![m],
            None => self.models.iter().collect(),
        };
        let from_key = routing_key.and_then(parse_pair);
        let default = candidates
            .first()
            .map(|m| (&m.config.source, &m.config.target));
        let pick = |given: &Option<String>, keyed: Option<&str>, fallback: Option<&String>| {
            given
                .clone()
                .or_else(|| keyed.map(str::to_owned))
                .or_else(|| fallback.cloned())
                .unwrap_or_default()
        };
        let source = pick(&job.source, from_key.map(|k| k.0), default.map(|d| d.0));
        let target = pick(&job.target, from_key.map(|k| k.1), default.map(|d| d.1));
        let served = candidates
            .iter()
            .find(|m| m.pairs.iter().any(|(s, t)| *s == source && *t == target))
            .copied();
        match served {
            Some(model) => Ok(Route {
                model,
                source,
                target,
            }),
            None => {
                let pairs: Vec<String> = candidates
                    .iter()
                    .flat_map(|m| m.pairs.iter().map(|(s, t)| format!("{s}-{t}")))
                    .collect();
                Err(JobError::new(
                    ErrorCode::UnsupportedLanguagePair,
                    format!(
                        "{source}-{target} is not served here; this {} translates {}",
                        if model.is_some() { "queue" } else { "worker" },
                        pairs.join(", ")
                    ),
                ))
            }
        }
    }

    async fn try_process(
        &self,
        body: &[u8],
        model: Option<usize>,
        routing_key: Option<&str>,
    ) -> Result<Outcome, JobError> {
        let job = parse_job(body, &self.config.limits)?;
        let id = job.id.clone();
        if let Some(id) = &id {
            tracing::Span::current().record("id", id.as_str());
        }
        let route = self
            .route(&job, model, routing_key)
            .map_err(|e| e.with_id(id.clone()))?;
        let options = job
            .options
            .resolve(&route.model.defaults)
            .map_err(|e| e.with_id(id.clone()))?;
        let deadline_error =
            || JobError::new(ErrorCode::DeadlineExceeded, "deadline_ms passed").with_id(id.clone());
        let work = self.translate_job(&route, job.texts, job.split, options);
        let done = match job.deadline_ms {
            None => work.await,
            Some(ms) => {
                let now = unix_ms_now();
                if ms <= now {
                    return Err(deadline_error());
                }
                tokio::time::timeout(Duration::from_millis(ms - now), work)
                    .await
                    .map_err(|_| deadline_error())?
            }
        }
        .map_err(|e| e.with_id(id.clone()))?;
        let failed = done.errors.iter().filter(|e| e.is_some()).count();
        let cut = done.truncated.iter().filter(|t| **t).count();
        if failed > 0 && failed == done.errors.len() {
            // Nothing to give back: the job fails as a whole, as it always did.
            let first = done.errors.into_iter().flatten().next().unwrap_or_default();
            return Err(internal(first).with_id(id));
        }
        self.metrics.texts_failed.add(failed as u64);
        self.metrics.texts_truncated.add(cut as u64);
        let errors = (failed > 0).then(|| {
            done.errors
                .into_iter()
                .map(|e| {
                    e.map(|message| ErrorBody {
                        code: ErrorCode::Internal,
                        message,
                    })
                })
                .collect()
        });
        Ok(Outcome {
            reply: Reply::Ok {
                id,
                translations: done.translations,
                cached: done.cached,
                model: route.model.id.clone(),
                segments: done.segments,
                truncated: (cut > 0).then_some(done.truncated),
                errors,
            },
            to_store: done.to_store,
        })
    }

    /// Translates a job's texts: whole, or (`split`) sentence by sentence, each
    /// sentence a cache entry of its own, put back together with the text's own
    /// whitespace between them. A text that fails (the engine failed on it even
    /// alone) is reported in `errors` and does not fail its neighbours.
    async fn translate_job(
        &self,
        route: &Route<'_>,
        texts: Vec<String>,
        split: Split,
        options: DecodeOptions,
    ) -> Result<Translated, JobError> {
        if split == Split::None {
            let units = self.translate_units(route, texts, options).await?;
            let (translations, errors) = units
                .results
                .into_iter()
                .map(|r| match r {
                    Ok(t) => (t, None),
                    Err(e) => (String::new(), Some(e)),
                })
                .unzip();
            return Ok(Translated {
                translations,
                cached: units.cached,
                segments: None,
                truncated: units.truncated,
                errors,
                to_store: units.to_store,
            });
        }
        let engine = route.model.engine.clone();
        let lang = route.source.clone();
        let with_token = route.language_tokens().0.is_some();
        let max_tokens = route.model.engine.max_input_length();
        let permit = self.tokenize_permit().await?;
        // Segmenting (and measuring long sentences in tokens) is CPU work.
        let (texts, seg) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let seg = segment_texts(&texts, &lang, |s| {
                // A piece covers at least one byte, so a short sentence surely fits
                // without being tokenized.
                if s.len() + 3 <= max_tokens {
                    return Ok(true);
                }
                engine.fits(s, with_token)
            });
            (texts, seg)
        })
        .await
        .map_err(|e| internal(format!("segmenting task failed: {e}")))?;
        let Segmented { units, layout } = seg;
        let units = self.translate_units(route, units, options).await?;
        let n_texts = texts.len();
        let mut done = Translated {
            translations: Vec::with_capacity(n_texts),
            cached: Vec::with_capacity(n_texts),
            segments: None,
            truncated: Vec::with_capacity(n_texts),
            errors: Vec::with_capacity(n_texts),
            to_store: units.to_store,
        };
        let mut stats = Vec::with_capacity(n_texts);
        for (text, (ranges, first)) in texts.iter().zip(layout) {
            let n = ranges.len();
            let span = first..first + n;
            let results = &units.results[span.clone()];
            let hits = units.cached[span.clone()].iter().filter(|c| **c).count();
            stats.push(SegmentStats {
                segments: n,
                cached: hits,
            });
            done.truncated
                .push(units.truncated[span].iter().any(|t| *t));
            // One failed segment fails its text (a document with a hole in it would
            // read as complete); the other texts are still answered.
            let failure = results.iter().enumerate().find_map(|(j, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("segment {} of {n} failed: {e}", j + 1))
            });
            if let Some(e) = failure {
                done.translations.push(String::new());
                done.cached.push(false);
                done.errors.push(Some(e));
                continue;
            }
            let outs: Vec<&str> = results
                .iter()
                .map(|r| r.as_ref().map_or("", String::as_str))
                .collect();
            // Segments that touched in the source (CJK) are kept apart by a space when
            // their translations are in a script written with spaces.
            let outs: Vec<std::borrow::Cow<'_, str>> = outs
                .iter()
                .enumerate()
                .map(|(j, out)| {
                    let touching = j
                        .checked_sub(1)
                        .and_then(|i| ranges.get(i).zip(ranges.get(j)).zip(outs.get(i)))
                        .filter(|((a, b), _)| a.end == b.start);
                    let space = touching.is_some_and(|((_, b), prev)| {
                        segment::needs_space(text, b.start, prev, out)
                    });
                    if space {
                        std::borrow::Cow::Owned(format!(" {out}"))
                    } else {
                        std::borrow::Cow::Borrowed(*out)
                    }
                })
                .collect();
            done.translations
                .push(segment::reassemble(text, &ranges, &outs));
            done.cached.push(n > 0 && hits == n);
            done.errors.push(None);
        }
        done.segments = Some(stats);
        Ok(done)
    }

    /// A slot to tokenize (or segment) on the blocking pool; see `tokenize_permits`.
    async fn tokenize_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, JobError> {
        self.tokenize_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal(format!("tokenizer permits closed: {e}")))
    }

    /// Translates `texts`: cache first (one round trip), then the misses through the
    /// batcher. A text the tokenizer or the engine fails on is an `Err` of its own.
    /// Whether a text is longer than the model reads comes from tokenizing it (a
    /// miss), or from measuring it (a hit long enough to possibly be).
    async fn translate_units(
        &self,
        route: &Route<'_>,
        mut texts: Vec<String>,
        options: DecodeOptions,
    ) -> Result<UnitResults, JobError> {
        let n = texts.len();
        let key_ctx = route.keys();
        let keys: Vec<Option<CacheKey>> = texts
            .iter()
            .map(|t| (!t.is_empty()).then(|| key_ctx.key(&options, t)))
            .collect();
        let lookup: Vec<CacheKey> = keys.iter().flatten().copied().collect();
        let mut hits = self.cache.get_many(&lookup).await.into_iter();
        let mut out: Vec<Option<Result<String, String>>> = vec![None; n];
        let mut cached = vec![false; n];
        let mut truncated = vec![false; n];
        // Distinct missing texts, each with every position that asked for it.
        let mut missing: Vec<(CacheKey, Vec<usize>)> = Vec::new();
        let mut seen: HashMap<CacheKey, usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let Some(key) = key else {
                // An empty string translates to an empty string, without the model.
                out[i] = Some(Ok(String::new()));
                continue;
            };
            match hits.next().flatten() {
                Some(hit) => {
                    out[i] = Some(Ok(hit));
                    cached[i] = true;
                    self.metrics.segments_cache_hit.inc();
                }
                None => {
                    self.metrics.segments_cache_miss.inc();
                    match seen.get(key) {
                        Some(&m) => missing[m].1.push(i),
                        None => {
                            seen.insert(*key, missing.len());
                            missing.push((*key, vec![i]));
                        }
                    }
                }
            }
        }
        let mut to_store = Vec::with_capacity(missing.len());
        let engine = &route.model.engine;
        let (source_token, target_token) = route.language_tokens();
        // A few dozen segments at a time: a job never holds the tokens of more than
        // `UNITS_IN_FLIGHT` segments (each at most `max_input_length`), however long
        // its document, while that is still several full batches for the replicas.
        for chunk in missing.chunks(UNITS_IN_FLIGHT) {
            // Keys are computed; the texts themselves are only needed for tokenizing.
            let sources: Vec<String> = chunk
                .iter()
                .map(|(_, pos)| std::mem::take(&mut texts[pos[0]]))
                .collect();
            let engine = engine.clone();
            let source_token = source_token.clone();
            // Held by the blocking task itself, so a job given up at its deadline
            // still counts until its tokenizing really ends.
            let permit = self.tokenize_permit().await?;
            // Tokenizing long documents is CPU work: keep it off the async threads.
            let tokens: Vec<Result<(Vec<String>, bool), EngineError>> =
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    sources
                        .iter()
                        .map(|s| engine.tokenize_measured(s, source_token.as_deref()))
                        .collect()
                })
                .await
                .map_err(|e| internal(format!("tokenizer task failed: {e}")))?;
            for ((_, positions), toks) in chunk.iter().zip(&tokens) {
                let long = toks.as_ref().is_ok_and(|(_, long)| *long);
                for &p in positions {
                    truncated[p] = long;
                }
            }
            let batcher = &route.model.batcher;
            let results =
                futures_util::future::join_all(chunk.iter().zip(tokens).map(|((key, _), toks)| {
                    let prefix = target_token.clone();
                    async move {
                        let (toks, _) = toks.map_err(|e| e.to_string())?;
                        batcher
                            .translate_with_prefix(*key, toks, prefix, options)
                            .await
                            .map_err(|e| e.to_string())
                    }
                }))
                .await;
            for ((key, positions), result) in chunk.iter().zip(results) {
                if let Ok(translation) = &result {
                    to_store.push((*key, translation.clone()));
                }
                for &p in positions {
                    out[p] = Some(result.clone());
                }
            }
        }
        self.measure_hits(route, &texts, &cached, &mut truncated)
            .await?;
        let results = out
            .into_iter()
            .map(|t| t.unwrap_or_else(|| Err("the text was left untranslated".into())))
            .collect();
        Ok(UnitResults {
            results,
            cached,
            truncated,
            to_store,
        })
    }

    /// Sets `truncated[i]` for the cached texts long enough to possibly be over the
    /// model's input limit (a piece covers at least one byte, the word-start mark,
    /// language token and `</s>` aside). Short ones, nearly all, are never tokenized.
    async fn measure_hits(
        &self,
        route: &Route<'_>,
        texts: &[String],
        cached: &[bool],
        truncated: &mut [bool],
    ) -> Result<(), JobError> {
        let engine = &route.model.engine;
        let max_tokens = engine.max_input_length();
        let long: Vec<(usize, String)> = texts
            .iter()
            .zip(cached)
            .enumerate()
            .filter(|(_, (t, hit))| **hit && t.len() + 3 > max_tokens)
            .map(|(i, (t, _))| (i, t.clone()))
            .collect();
        if long.is_empty() {
            return Ok(());
        }
        let engine = engine.clone();
        let with_token = route.language_tokens().0.is_some();
        let permit = self.tokenize_permit().await?;
        let measured = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            long.into_iter()
                .map(|(i, t)| (i, !engine.fits(&t, with_token).unwrap_or(true)))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| internal(format!("measuring task failed: {e}")))?;
        for (i, long) in measured {
            truncated[i] = long;
        }
        Ok(())
    }
}

/// Segments of one job tokenized and queued at once (see `translate_units`).
const UNITS_IN_FLIGHT: usize = 64;

/// Cuts each text into sentences, and any sentence `fits` refuses into halves until
/// every piece fits (a piece that cannot be cut further goes as it is, and
/// CTranslate2 truncates it). A piece the tokenizer fails on is taken as fitting: it
/// fails again, as its text's own error, when it is tokenized for translation.
/// Blocking.
fn segment_texts(
    texts: &[String],
    lang: &str,
    mut fits: impl FnMut(&str) -> Result<bool, EngineError>,
) -> Segmented {
    let mut units = Vec::new();
    let mut layout = Vec::with_capacity(texts.len());
    for text in texts {
        let first = units.len();
        let mut ranges = Vec::new();
        for sentence in segment::sentences(text, lang) {
            ranges.extend(segment::split_to_fit(text, sentence, |piece| {
                fits(piece).unwrap_or(true)
            }));
        }
        // `split_to_fit` only returns ranges of `text`; `get` keeps this panic-free.
        units.extend(
            ranges
                .iter()
                .map(|r| text.get(r.clone()).unwrap_or_default().to_owned()),
        );
        layout.push((ranges, first));
    }
    Segmented { units, layout }
}

fn internal(message: String) -> JobError {
    JobError::new(ErrorCode::Internal, message)
}
