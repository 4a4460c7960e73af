//! Start-up: the models loaded (on the blocking pool), their batchers running, the
//! cache set up; not yet connected to the broker.

use std::sync::Arc;
use std::time::Duration;

use translation_client::url::redact_url;
use translation_client::wire::pair_key;

use super::pipeline::{Model, Outcome, Shared};
use crate::amqp::BrokerError;
use crate::config::{available_cpus, Config, ModelConfig};
use crate::telemetry::{BuildInfo, Metrics, BACKEND};
use crate::translate::{self, Backend, Cache, CacheError, CpuGate, Engine, EngineError, Policy};

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

/// A started worker: model loaded, batcher running, not yet connected to the broker.
pub struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) batcher_tasks: Vec<tokio::task::JoinHandle<()>>,
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
            max_settle: Duration::from_millis(config.batch.max_settle_ms),
            settle_gap: Duration::from_millis(config.batch.settle_gap_ms),
            interactive_burst: config.batch.interactive_burst,
            interactive_max_batch_tokens: config.batch.interactive_max_batch_tokens,
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
                translate::spawn_gated(backend, policy, metrics.clone(), gate.clone(), threads);
            batcher_tasks.push(task);
            let pairs = model_cfg.served_pairs();
            // Codes without a token were refused by configuration validation.
            let (tokens, _) = translate::pair_tokens(
                model_cfg.language_tokens,
                &pairs,
                &model_cfg.language_codes,
            );
            let defaults = model_cfg.decode_options();
            let id = model_cfg.model_id();
            let queue = config.queue_for(&model_cfg);
            tracing::info!(
                model = %id,
                path = %model_cfg.path.display(),
                queue = %queue,
                pairs = %pairs.iter().map(|(s, t)| pair_key(s, t)).collect::<Vec<_>>().join(","),
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
        // Per lane: interactive jobs tokenize beside a bulk backlog, not behind it.
        let tokenize_permits =
            [(); 2].map(|()| Arc::new(tokio::sync::Semaphore::new(most_threads)));
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

    /// Processes one job body without the broker: parse, validate, cache, translate
    /// (in the bulk lane).
    pub async fn process(&self, body: &[u8]) -> Outcome {
        self.shared
            .process(body, None, None, translate::Lane::Bulk)
            .await
    }
}
