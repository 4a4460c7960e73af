//! `translation-worker gateway`: an HTTP front door to the queue.
//!
//! Each request becomes one job, sent through the [`client`](translation_client) library on
//! one shared broker connection (many calls in flight on it), and is answered when the
//! job's reply arrives:
//!
//! - `GET /translate?q=…&q=…&source=ko&target=en` →
//!   `{"translations": [...], "cached": [...], "model": "…"}`;
//! - `POST /translate`, LibreTranslate-compatible (JSON or form body; `q` a string or an
//!   array) → `{"translatedText": "…"}` or `{"translatedText": ["…", …]}`;
//! - `POST /detect` (LibreTranslate) → the candidate languages among the served ones,
//!   and `source: "auto"` on `/translate`: each text's language is detected and the
//!   texts are sent grouped by it (`detectedLanguage` in the answer);
//! - `GET /languages` (LibreTranslate shape) lists the served pairs;
//! - `POST /translate_file` (LibreTranslate; multipart `file`, `source`, `target`) →
//!   `{"translatedFileUrl": "…/download_file/<uuid>.<stem><ext>"}`: the file is taken
//!   apart by [`crate::documents`], its texts are sent as jobs like `/translate`'s, and
//!   the rebuilt file is kept in Redis for `gateway.file_ttl_secs`, so that
//!   `GET /download_file/<name>` works on any replica;
//! - optional API keys (`gateway.api_keys_file`, `api_key` in the body or query) and a
//!   per-minute rate limit per key or client IP (`gateway.req_limit_per_minute`),
//!   counted in Redis so that every replica shares it (fail-open while Redis is down);
//! - `/healthz` (200 while the broker connection is up, else 503) and `/metrics`.
//!
//! Errors are `{"error": "<message>", "code": "<code>"}` (LibreTranslate clients read
//! `error`): 400 for a bad request, an unsupported or corrupt file, a missing API key
//! or an unserved pair (checked against [`Config::served_pairs`] before publishing,
//! and from the broker's `basic.return` when no worker binds the pair), 403 for an
//! unknown API key, 404 for an unknown or expired download, 413 for too many texts or
//! too large a body or file (the worker's `too_large` too), 414 for too long a query
//! string, 415 for a body that is neither JSON nor a form, 429 with `Retry-After` over
//! the rate limit, 502 when the worker failed (`internal`), 503 with `Retry-After`
//! when `gateway.max_pending` requests already wait or the broker (for files, Redis)
//! is down, 504 when no reply came within `gateway.request_timeout_ms` (or the worker
//! answered `deadline_exceeded`).
//!
//! The [`Client`] never reconnects by itself, so a supervisor task owns it: it connects
//! with jittered exponential backoff (`amqp.reconnect_*`), watches the connection and
//! replaces the client when it drops. Requests arriving while there is none get 503.
//!
//! # Layout
//! - `server`: [`Gateway`] (bind, serve, drain) and [`GatewayHandle`];
//! - `api`: the routes, their handlers, admission control and the metrics middleware;
//! - `libretranslate`: reading requests (query string, LibreTranslate bodies) and the
//!   `/languages` list;
//! - `detect`: language identification (lingua, restricted to the served languages)
//!   for `POST /detect` and `source: "auto"`;
//! - `files`: `/translate_file` and `/download_file`;
//! - `keys`: API keys and the rate limit (a middleware for `/translate` and `/detect`);
//! - `store`: the gateway's Redis (translated files, rate-limit counters), with
//!   deadlines and a cool-down so a dead Redis never hangs a request;
//! - `error`: the handlers' JSON error answers and how a client error maps to one;
//! - `http_errors`: JSON bodies for the errors hyper answers by itself;
//! - `link`: the broker client and the supervisor that keeps it connected;
//! - `metrics`: [`GatewayMetrics`], on `prometheus-client`.

mod api;
mod detect;
mod error;
mod files;
mod http_errors;
mod keys;
mod libretranslate;
mod link;
mod metrics;
mod server;
mod store;

pub use keys::KeysError;
pub use metrics::GatewayMetrics;
pub use server::{Gateway, GatewayError, GatewayHandle};
pub use store::StoreError;
