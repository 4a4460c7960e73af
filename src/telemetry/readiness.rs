//! What this worker is (build and model) and whether it takes jobs: the state that
//! `/readyz` and the `translation_worker_ready` and `translation_worker_build_info`
//! metrics report.

/// What the build and the loaded model are, for `translation_worker_build_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Crate version.
    pub version: &'static str,
    /// Model id served.
    pub model: String,
    /// CTranslate2 CPU backend compiled in (`dnnl`, `ruy`, `cuda`).
    pub backend: &'static str,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Source tokens per segment each model reads (comma-separated, in model order):
    /// the model's own position limit unless configured lower.
    pub max_input_length: String,
}

/// The CTranslate2 backend this binary was built with.
pub const BACKEND: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "dnnl") {
    "dnnl"
} else if cfg!(feature = "ruy") {
    "ruy"
} else {
    "default"
};

/// Readiness as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// Model loaded and batcher running.
    pub model_loaded: bool,
    /// AMQP connection and channels open.
    pub broker_connected: bool,
    /// A consumer is registered on the job queue (false while draining).
    pub consuming: bool,
    /// Cache configured at all.
    pub cache_enabled: bool,
    /// Last Redis call succeeded (reported, not required: the cache is optional).
    pub redis_up: bool,
}

impl Readiness {
    /// Ready to take jobs: model, broker and consumer, but not Redis.
    pub fn ready(&self) -> bool {
        self.model_loaded && self.broker_connected && self.consuming
    }
}
