//! `echo`: a consumer that answers every job at once with its own texts as the
//! "translations", in the exact reply shape of wire contract v1. No model, no cache:
//! what is left is the broker round trip, so `loadgen` against `echo` measures the
//! ceiling the worker can reach on this broker.
//!
//! For a fair comparison it goes through the worker's own broker code
//! ([`crate::amqp::Session`]): the same topology, the same `basic.qos` prefetch, one
//! task per delivery, replies published with confirms, and the job acked only after
//! its reply is confirmed. Jobs are parsed and checked by [`translation_client::wire::parse_job`]
//! with the default limits, so malformed jobs get the same error replies. A job without
//! `reply_to` is acked and dropped (there is nothing to translate or cache).

use std::time::Duration;

use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ConnectOptions;
use crate::amqp::{self, BrokerError, Session};
use crate::config::{AmqpConfig, Limits};
use translation_client::wire::{parse_job, parse_pair, ErrorCode, JobError, Reply};

/// Errors that stop the echo consumer.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// An argument is malformed.
    #[error("invalid argument: {0}")]
    Args(String),
    /// The broker failed (connect, topology, consume).
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// What `echo` consumes and how it answers (the `echo` command line fills it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoOptions {
    /// Broker and exchange (declared and bound like the worker does).
    pub connect: ConnectOptions,
    /// Job queue to consume (declared like the worker's). No default, so that `echo`
    /// never answers a production queue by accident.
    pub queue: String,
    /// Dead-letter exchange and queue named in the job queue's arguments (must match
    /// the worker's when sharing its queue).
    pub dead_letter: String,
    /// Language pairs to bind, as `<source>-<target>`.
    pub pairs: Vec<String>,
    /// Unacknowledged deliveries in flight, as the worker's `amqp.prefetch`.
    pub prefetch: u16,
    /// Model id put in the replies.
    pub model: String,
}

impl EchoOptions {
    /// Default `dead_letter`: the worker's default `amqp.dead_letter`.
    pub const DEFAULT_DEAD_LETTER: &'static str = "translation.dead";
    /// Default pair bound when none is given.
    pub const DEFAULT_PAIR: &'static str = "ko-en";
    /// Default `prefetch`.
    pub const DEFAULT_PREFETCH: u16 = 128;
    /// Default model id in replies.
    pub const DEFAULT_MODEL: &'static str = "echo";

    /// Options to consume `queue` on `connect`, the rest at their defaults.
    pub fn new(connect: ConnectOptions, queue: impl Into<String>) -> Self {
        Self {
            connect,
            queue: queue.into(),
            dead_letter: Self::DEFAULT_DEAD_LETTER.into(),
            pairs: vec![Self::DEFAULT_PAIR.into()],
            prefetch: Self::DEFAULT_PREFETCH,
            model: Self::DEFAULT_MODEL.into(),
        }
    }
}

/// Totals of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Jobs answered and acked.
    pub answered: u64,
}

/// A language pair split from `ko-en`.
fn split_pair(pair: &str) -> Result<(String, String), String> {
    parse_pair(pair)
        .map(|(s, t)| (s.to_owned(), t.to_owned()))
        .ok_or_else(|| format!("--pair {pair:?} is not <source>-<target>"))
}

/// The reply to a job body: its texts back, or the contract error the worker would send
/// for a malformed job or a pair not served here.
pub fn echo_reply(body: &[u8], pairs: &[(String, String)], limits: &Limits, model: &str) -> Reply {
    let job = match parse_job(body, limits) {
        Ok(job) => job,
        Err(e) => return e.into(),
    };
    let served = pairs.iter().any(|(s, t)| {
        job.source.as_ref().is_none_or(|js| js == s) && job.target.as_ref().is_none_or(|jt| jt == t)
    });
    if !served {
        return JobError::new(
            ErrorCode::UnsupportedLanguagePair,
            format!(
                "{}-{} is not served here",
                job.source.as_deref().unwrap_or("*"),
                job.target.as_deref().unwrap_or("*")
            ),
        )
        .with_id(job.id)
        .into();
    }
    let cached = vec![false; job.texts.len()];
    // The contract's shape: asked-for alternatives come back (none to give here).
    let alternatives = job
        .options
        .alternatives
        .is_some_and(|n| n > 0)
        .then(|| vec![Vec::new(); job.texts.len()]);
    Reply::Ok {
        id: job.id,
        translations: job.texts,
        cached,
        model: model.to_owned(),
        segments: None,
        truncated: None,
        errors: None,
        alternatives,
    }
}

/// Consumes and answers until `shutdown`, then finishes the jobs in flight and closes.
/// Returns an error if the broker fails (no reconnect: this is a measuring tool).
pub async fn run(args: &EchoOptions, shutdown: CancellationToken) -> Result<EchoStats, EchoError> {
    let pairs = args
        .pairs
        .iter()
        .map(|p| split_pair(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(EchoError::Args)?;
    let cfg = AmqpConfig {
        url: args.connect.amqp_url.clone(),
        queue: args.queue.clone(),
        exchange: args.connect.exchange.clone(),
        dead_letter: args.dead_letter.clone(),
        prefetch: args.prefetch,
        ..AmqpConfig::default()
    };
    let session = std::sync::Arc::new(Session::open(&cfg, &args.pairs).await?);
    let shared = std::sync::Arc::new(EchoShared {
        pairs,
        limits: Limits::default(),
        model: args.model.clone(),
        answered: std::sync::atomic::AtomicU64::new(0),
    });
    let tracker = TaskTracker::new();
    let result = amqp::consume_until(
        &session,
        &[cfg.queue.as_str()],
        &shutdown,
        || tracing::info!(queue = %cfg.queue, prefetch = cfg.prefetch, "echo consuming"),
        || {},
        // At most `prefetch` tasks exist: the broker sends no more deliveries until
        // earlier ones are acked.
        |_, delivery| {
            tracker.spawn(answer(shared.clone(), session.clone(), delivery));
        },
    )
    .await;
    tracker.close();
    // Replies are immediate; this only waits for confirms in flight.
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    session.close().await;
    let stats = EchoStats {
        answered: shared.answered.load(std::sync::atomic::Ordering::Relaxed),
    };
    tracing::info!(answered = stats.answered, "echo stopped");
    result.map(|()| stats).map_err(EchoError::from)
}

struct EchoShared {
    pairs: Vec<(String, String)>,
    limits: Limits,
    model: String,
    answered: std::sync::atomic::AtomicU64,
}

async fn answer(shared: std::sync::Arc<EchoShared>, session: std::sync::Arc<Session>, d: Delivery) {
    let reply = echo_reply(&d.data, &shared.pairs, &shared.limits, &shared.model);
    // No dead letters: a job without `reply_to` is acked unanswered.
    if amqp::answer(&session, &d, &reply, None, async {}).await {
        shared
            .answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dead_letter_is_the_workers() {
        let o = EchoOptions::new(ConnectOptions::default(), "q");
        assert_eq!(o.dead_letter, AmqpConfig::default().dead_letter);
        assert_eq!(o.pairs, ["ko-en"]);
    }

    fn pairs() -> Vec<(String, String)> {
        vec![("ko".into(), "en".into())]
    }

    fn reply(body: &[u8]) -> serde_json::Value {
        let r = echo_reply(body, &pairs(), &Limits::default(), "echo");
        serde_json::from_slice(&r.to_bytes()).unwrap()
    }

    #[test]
    fn echoes_texts_in_the_contract_shape() {
        let v =
            reply(r#"{"id":"d1","texts":["a","","회의"],"source":"ko","target":"en"}"#.as_bytes());
        assert_eq!(
            v,
            serde_json::json!({"id":"d1","status":"ok","translations":["a","","회의"],
                               "cached":[false,false,false],"model":"echo"})
        );
        let v = reply(br#"{"text":"x"}"#);
        assert_eq!(v["translations"], serde_json::json!(["x"]));
        assert_eq!(v["id"], serde_json::Value::Null);
    }

    #[test]
    fn malformed_and_unserved_jobs_get_contract_errors() {
        assert_eq!(reply(b"nope")["error"]["code"], "invalid_json");
        assert_eq!(
            reply(br#"{"texts":[]}"#)["error"]["code"],
            "invalid_request"
        );
        let v = reply(br#"{"id":"z","text":"a","source":"ja","target":"en"}"#);
        assert_eq!(v["error"]["code"], "unsupported_language_pair");
        assert_eq!(v["id"], "z");
    }

    #[test]
    fn pairs_are_validated() {
        assert_eq!(
            split_pair("ko-en").unwrap(),
            ("ko".to_owned(), "en".to_owned())
        );
        assert!(split_pair("koen").is_err());
        assert!(split_pair("-en").is_err());
    }
}
