//! Translation: from texts to translations, independent of the broker.
//!
//! - `segment`: documents cut into sentences, over-long sentences halved, byte-exact
//!   reassembly (pure).
//! - `html`: HTML documents (`format: "html"`): sentences across inline tags, markup
//!   kept byte for byte (pure).
//! - `cache`: the content-addressed Redis cache with its circuit breaker.
//! - `redis_conn`: the lazy standalone/cluster Redis connection the cache and the
//!   gateway's file store share.
//! - `batcher`: the batching policy (a pure function), the queue task and one engine
//!   thread per replica.
//! - `engine`: the CTranslate2 model and its tokenizer (blocking; engine threads only).
//! - `model_spec`: the model's own limits, read from `model.bin`.
//! - `languages`: client language codes → NLLB / M2M-100 language tokens (a leaf:
//!   configuration validates with it).

mod batcher;
mod cache;
mod engine;
pub(crate) mod html;
mod languages;
mod model_spec;
pub(crate) mod redis_conn;
pub(crate) mod segment;

pub use batcher::{
    batch_cost, batch_size, lane_index, next_batch, next_lane_batch, next_streak, spawn,
    spawn_gated, BatchError, BatcherHandle, BusyEstimate, CpuGate, Decision, GatePass, Lane,
    Pending, Policy,
};
pub use cache::{cache_value, cached_translation, Cache, CacheError, CacheKey, KeyContext};
pub use engine::{
    distinct_alternatives, fingerprint_dir, input_limit, Backend, Engine, EngineError, Translation,
    DEFAULT_MAX_INPUT_LENGTH,
};
pub use languages::{model_token, pair_tokens, LanguageTokens, NLLB_CODES};
pub use model_spec::{read_limits, ModelLimits, SpecError};
pub use segment::sentences;
