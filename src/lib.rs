//! translation-worker: a RabbitMQ queue in front of CTranslate2, with a Redis cache and
//! dynamic batching.
//!
//! # Module map
//! The wire contract and the Rust client live in the `translation-client` crate
//! (`crates/translation-client`), which backend applications depend on without
//! building CTranslate2; this crate uses the same types.
//!
//! - [`config`]: TOML file + `TW_<SECTION>__<KEY>` environment overlay, validated
//!   section by section.
//! - [`translate`]: texts → translations, independent of the broker: `segment`
//!   (sentences, pure), `cache` (Redis, circuit breaker), `batcher` (pure policy,
//!   queue task, one engine thread per replica), `engine` (CTranslate2 and its
//!   tokenizer), `model_spec` (the model's limits), `languages` (language tokens),
//!   `html` (HTML jobs), `redis_conn` (the Redis connection the cache and the
//!   gateway's store share).
//! - [`documents`]: files (`.txt`, `.html`, `.md`, `.docx`, `.odt`, `.pptx`) taken
//!   apart into texts and rebuilt around their translations, for the CLI and the
//!   gateway's `/translate_file`.
//! - [`amqp`]: the RabbitMQ session (TLS, channels, confirmed publishing), the
//!   idempotent topology, and the Rust client on a worker's `amqp` settings.
//! - [`worker`]: ties them together per delivery: parse → cache → batcher → reply
//!   with confirm → cache store → ack; reconnects; graceful drain.
//! - [`gateway`]: HTTP (`/translate`, LibreTranslate-compatible, with `/detect` and
//!   `source: "auto"` by lingua, `/translate_file` with results in Redis, API keys
//!   and a rate limit shared through Redis) in front of the queue through the client.
//! - [`telemetry`]: logging, Prometheus metrics, readiness, and the `/healthz`,
//!   `/readyz`, `/metrics` listener.
//! - [`tools`]: `bench-engine`, `loadgen` and `echo`.
//!
//! Dependencies point one way: `config` → `translate::languages` (a leaf);
//! `translate` → `config`, `telemetry`; `documents` → `translate` (its pure HTML
//! parts); `amqp` → `config`; `worker` and `gateway` → everything below them; nothing
//! imports `worker`, `gateway` or `tools`.
//!
//! Data flow: delivery → [`translation_client::wire::parse_job`] →
//! [`translate::Cache::get_many`] → misses tokenized → [`translate::BatcherHandle::translate`]
//! → engine thread → reply published with confirm → cache store → ack.

pub mod amqp;
pub mod config;
pub mod documents;
pub mod gateway;
pub mod telemetry;
pub mod tools;
pub mod translate;
pub mod worker;
