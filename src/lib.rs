//! translation-worker: a RabbitMQ queue in front of CTranslate2, with a Redis cache and
//! dynamic batching.
//!
//! # Layout
//! - [`config`]: TOML file + `TW_<SECTION>__<KEY>` environment overlay, validation.
//! - [`protocol`]: wire contract v1: job parsing and limits, replies, error codes.
//! - [`segment`]: sentence splitting of documents (`"split": "sentences"`), halving of
//!   too-long sentences, byte-exact reassembly (pure).
//! - [`broker`]: RabbitMQ connection, topology, confirmed publishing (lapin).
//! - [`cache`]: content-addressed Redis cache with a circuit breaker.
//! - [`batcher`]: the batching policy (a pure function), the queue task, and one
//!   engine thread per replica.
//! - [`engine`]: CTranslate2 model and tokenizer (blocking; used from engine threads).
//! - [`model_spec`]: the model's own limits (position tables), read from `model.bin`.
//! - [`languages`]: client language codes → NLLB / M2M-100 language tokens.
//! - [`worker`]: ties them together per delivery; reconnects; graceful drain.
//! - [`telemetry`]: logging set-up, Prometheus metrics and readiness state.
//! - [`http`]: `/healthz`, `/readyz` and `/metrics` for probes and scrapers.
//! - [`bench`]: `bench-engine`, the raw CTranslate2 throughput ceiling.
//! - [`client`]: Rust client for the wire contract (many calls in flight on one
//!   connection) and the `translate` subcommand.
//! - [`loadgen`]: `loadgen`, load through the broker with a latency/throughput report.
//! - [`echo`]: `echo`, a model-free consumer answering in the reply shape (broker ceiling).
//! - [`gateway`]: `gateway`, HTTP (`/translate`, LibreTranslate-compatible) in front of
//!   the queue through the [`client`].
//! - [`http_errors`]: JSON bodies for the errors hyper answers itself (414, 431, 400),
//!   on the gateway's connections.
//!
//! Data flow: delivery → [`protocol::parse_job`] → [`cache::Cache::get_many`] → misses
//! tokenized → [`batcher::BatcherHandle::translate`] → engine thread → reply published
//! with confirm → cache store → ack.

pub mod batcher;
pub mod bench;
pub mod broker;
pub mod cache;
pub mod client;
pub mod config;
pub mod echo;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod http_errors;
pub mod languages;
pub mod loadgen;
pub mod model_spec;
pub mod protocol;
pub mod segment;
pub mod telemetry;
pub mod worker;
