//! The worker: consumes jobs, answers them from the cache or the batcher, replies, acks.
//!
//! Delivery guarantee: a job is acknowledged only after its reply (or dead letter) is
//! confirmed by the broker, so a crash at any point leaves it unacknowledged and the
//! broker redelivers it (at-least-once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::batcher::{self, BatcherHandle, Policy};
use crate::broker::{routing_key, BrokerError, Session};
use crate::cache::{Cache, CacheError, CacheKey, KeyContext};
use crate::config::{redact_url, Config};
use crate::engine::{Backend, Engine, EngineError};
use crate::protocol::{parse_job, DecodeOptions, ErrorCode, JobError, Reply};
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
}

/// State shared by every job.
struct Shared {
    /// The whole configuration.
    config: Config,
    /// Tokenizer and model (tokenizing happens on the blocking pool).
    engine: Arc<Engine>,
    /// Entry to the dynamic batcher.
    batcher: BatcherHandle,
    /// Redis cache (or its stand-in when disabled).
    cache: Cache,
    /// Counters and histograms.
    metrics: Arc<Metrics>,
    /// Model identity for cache keys.
    keys: KeyContext,
    /// Decoding options a job gets when it sets none.
    defaults: DecodeOptions,
    /// Model id for replies.
    model_id: String,
}

/// A started worker: model loaded, batcher running, not yet connected to the broker.
pub struct Worker {
    shared: Arc<Shared>,
    batcher_task: tokio::task::JoinHandle<()>,
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
    /// served (the HTTP listener starts before the model loads).
    pub async fn start_observed(
        config: Config,
        metrics: Arc<Metrics>,
        wrap: impl FnOnce(Arc<Engine>) -> Arc<dyn Backend>,
    ) -> Result<Self, WorkerError> {
        let model_cfg = config.model.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::load(&model_cfg))
            .await
            .map_err(|e| WorkerError::Join(e.to_string()))??;
        let engine = Arc::new(engine);
        let cache = Cache::new(&config.redis, metrics.clone())?;
        let policy = Policy {
            max_batch_size: config.batch.max_batch_size,
            max_batch_tokens: config.batch.max_batch_tokens,
            max_wait: config.max_wait(),
        };
        let backend = wrap(engine.clone());
        let (batcher, batcher_task) = batcher::spawn(backend, policy, metrics.clone());
        let (replicas, threads) = config.model.threading();
        let keys = KeyContext {
            model_fingerprint: engine.fingerprint(),
            source: config.model.source.clone(),
            target: config.model.target.clone(),
        };
        let defaults = DecodeOptions {
            beam_size: config.model.beam_size as u32,
            max_decoding_length: config.model.max_decoding_length as u32,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
        };
        let model_id = config.model.model_id();
        let _ = metrics.build_info.set(BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            model: model_id.clone(),
            backend: BACKEND,
            device: config.model.device.to_string(),
        });
        metrics.cache_enabled.set(u64::from(config.redis.enabled));
        metrics.model_loaded.set(1);
        tracing::info!(
            model = %model_id,
            path = %config.model.path.display(),
            replicas,
            threads_per_replica = threads,
            device = %config.model.device,
            compute_type = %config.model.compute_type,
            redis = %redact_url(&config.redis.url),
            cache = config.redis.enabled,
            "model loaded"
        );
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                engine,
                batcher,
                cache,
                metrics,
                keys,
                defaults,
                model_id,
            }),
            batcher_task,
        })
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Processes one job body without the broker: parse, validate, cache, translate.
    pub async fn process(&self, body: &[u8]) -> Outcome {
        self.shared.process(body).await
    }

    /// Consumes until `shutdown` fires, reconnecting to the broker with exponential
    /// backoff and jitter whenever the connection is lost. On shutdown it stops
    /// consuming, lets in-flight jobs finish for up to `shutdown.drain_timeout_secs`,
    /// and closes the connection; anything unanswered is redelivered by the broker.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = self.shared.clone();
        let self_metrics = shared.metrics.clone();
        let amqp = &shared.config.amqp;
        let keys = vec![routing_key(
            &shared.config.model.source,
            &shared.config.model.target,
        )];
        let tracker = TaskTracker::new();
        let initial = Duration::from_millis(amqp.reconnect_initial_ms);
        let max = Duration::from_millis(amqp.reconnect_max_ms);
        let mut backoff = initial;
        let mut connected_before = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let opened = tokio::select! {
                r = Session::open(amqp, &keys) => r,
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
                        queue = %amqp.queue,
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
        shared.metrics.model_loaded.set(0);
        drop(shared);
        // Dropping the last batcher handle lets the batcher finish and stop.
        let Worker {
            shared,
            batcher_task,
        } = self;
        drop(shared);
        // Jobs abandoned at the drain deadline may still hold handles: do not wait long.
        let _ = tokio::time::timeout(Duration::from_secs(1), batcher_task).await;
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

/// A delay in `[d/2, d]`, so reconnecting workers do not stampede the broker together.
fn jittered(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let frac = (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(0.5 + 0.5 * frac)
}

/// Consumes deliveries until shutdown (`Ok`) or until the connection fails (`Err`).
async fn consume(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), BrokerError> {
    let mut consumer = session.consume(&shared.config.amqp.queue, "").await?;
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
                let _ = session
                    .consume
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                return Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
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
                    // At most `prefetch` of these exist at once: the broker sends no more
                    // deliveries until earlier ones are acked.
                    tracker.spawn(handle_delivery(shared, session, delivery).instrument(span));
                }
                Some(Err(source)) => {
                    return Err(BrokerError::Amqp { op: "consume", source });
                }
                None => return Err(BrokerError::ConsumerClosed),
            }
        }
    }
}

/// Processes one delivery end to end and acks it once its reply is confirmed.
async fn handle_delivery(shared: Arc<Shared>, session: Arc<Session>, delivery: Delivery) {
    let start = Instant::now();
    let m = &shared.metrics;
    m.jobs_in_flight.inc();
    let Outcome { reply, to_store } = shared.process(&delivery.data).await;
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
    async fn process(&self, body: &[u8]) -> Outcome {
        match self.try_process(body).await {
            Ok(o) => o,
            Err(e) => Outcome {
                reply: e.into(),
                to_store: Vec::new(),
            },
        }
    }

    async fn try_process(&self, body: &[u8]) -> Result<Outcome, JobError> {
        let job = parse_job(body, &self.config.limits)?;
        let id = job.id.clone();
        if let Some(id) = &id {
            tracing::Span::current().record("id", id.as_str());
        }
        let model = &self.config.model;
        for (field, want, got) in [
            ("source", &model.source, &job.source),
            ("target", &model.target, &job.target),
        ] {
            if let Some(got) = got {
                if got != want {
                    return Err(JobError::new(
                        ErrorCode::UnsupportedLanguagePair,
                        format!(
                            "{field} {got:?} is not served here; this worker translates {}-{}",
                            model.source, model.target
                        ),
                    )
                    .with_id(id));
                }
            }
        }
        let options = job
            .options
            .resolve(&self.defaults)
            .map_err(|e| e.with_id(id.clone()))?;
        let deadline_error =
            || JobError::new(ErrorCode::DeadlineExceeded, "deadline_ms passed").with_id(id.clone());
        let work = self.translate_texts(job.texts, options);
        let (translations, cached, to_store) = match job.deadline_ms {
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
        Ok(Outcome {
            reply: Reply::Ok {
                id,
                translations,
                cached,
                model: self.model_id.clone(),
            },
            to_store,
        })
    }

    /// Translates `texts`: cache first (one round trip), then the misses through the batcher.
    async fn translate_texts(
        &self,
        mut texts: Vec<String>,
        options: DecodeOptions,
    ) -> Result<(Vec<String>, Vec<bool>, Vec<(CacheKey, String)>), JobError> {
        let n = texts.len();
        let keys: Vec<Option<CacheKey>> = texts
            .iter()
            .map(|t| (!t.is_empty()).then(|| self.keys.key(&options, t)))
            .collect();
        let lookup: Vec<CacheKey> = keys.iter().flatten().copied().collect();
        let mut hits = self.cache.get_many(&lookup).await.into_iter();
        let mut out: Vec<Option<String>> = vec![None; n];
        let mut cached = vec![false; n];
        // Distinct missing texts, each with every position that asked for it.
        let mut missing: Vec<(CacheKey, Vec<usize>)> = Vec::new();
        let mut seen: HashMap<CacheKey, usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let Some(key) = key else {
                // An empty string translates to an empty string, without the model.
                out[i] = Some(String::new());
                continue;
            };
            match hits.next().flatten() {
                Some(hit) => {
                    out[i] = Some(hit);
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
        if !missing.is_empty() {
            // Keys are computed; the texts themselves are only needed for tokenizing.
            let sources: Vec<String> = missing
                .iter()
                .map(|(_, pos)| std::mem::take(&mut texts[pos[0]]))
                .collect();
            let engine = self.engine.clone();
            // Tokenizing long documents is CPU work: keep it off the async threads.
            let tokens = tokio::task::spawn_blocking(move || {
                sources
                    .iter()
                    .map(|s| engine.tokenize(s))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| internal(format!("tokenizer task failed: {e}")))?
            .map_err(|e| internal(e.to_string()))?;
            let results = futures_util::future::join_all(
                missing
                    .iter()
                    .zip(tokens)
                    .map(|((key, _), toks)| self.batcher.translate(*key, toks, options)),
            )
            .await;
            for ((key, positions), result) in missing.into_iter().zip(results) {
                let translation = result.map_err(|e| internal(e.to_string()))?;
                for &p in &positions {
                    out[p] = Some(translation.clone());
                }
                to_store.push((key, translation));
            }
        }
        let translations = out
            .into_iter()
            .map(|t| t.ok_or_else(|| internal("a text was left untranslated".into())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((translations, cached, to_store))
    }
}

fn internal(message: String) -> JobError {
    JobError::new(ErrorCode::Internal, message)
}
