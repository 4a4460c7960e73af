//! translation-client: wire contract v1 of translation-worker and an async Rust client
//! for it.
//!
//! This is the crate a backend application depends on to send translation jobs: it
//! builds with lapin, serde and tokio only (no CTranslate2, no C++ build). The worker,
//! its gateway and its tools use the same types, so the contract is written once.
//!
//! # Modules
//! - [`wire`]: the contract: [`wire::Job`] (written by clients, parsed strictly by
//!   workers with [`wire::parse_job`]), [`wire::Reply`] (written by workers, parsed
//!   leniently by clients), error codes, decoding options and pair routing keys.
//! - [`Client`] (module `client`): one broker connection, many calls in flight,
//!   replies matched by correlation id; [`Lane`]: interactive or bulk job queue.
//! - [`backoff`]: reconnect delays (exponential with jitter) shared by every
//!   reconnecting component of the project.
//! - [`url`]: URL lists and password redaction for logs and errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), translation_client::ClientError> {
//! use translation_client::{Client, ClientOptions, TranslateRequest};
//!
//! let client = Client::connect("amqp://guest:guest@127.0.0.1:5672/%2f", ClientOptions::default()).await?;
//! let reply = client
//!     .translate(TranslateRequest::new("ko", "en", ["안녕하세요. 회의는 3시에 시작합니다."]))
//!     .await?;
//! println!("{}", reply.translations[0]);
//! # Ok(())
//! # }
//! ```

pub mod backoff;
mod client;
pub mod url;
pub mod wire;

pub use client::{
    parse_reply, Answer, Client, ClientError, ClientOptions, ClientStats, ErrorReply, Lane,
    RawReply, TranslateReply, TranslateRequest, DEFAULT_AMQP_URL, DEFAULT_EXCHANGE,
};
