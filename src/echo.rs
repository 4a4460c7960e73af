//! `echo`: a consumer that answers every job at once with its own texts as the
//! "translations", in the exact reply shape of wire contract v1. No model, no cache:
//! what is left is the broker round trip, so `loadgen` against `echo` measures the
//! ceiling the worker can reach on this broker.
//!
//! For a fair comparison it goes through the worker's own broker code
//! ([`crate::broker::Session`]): the same topology, the same `basic.qos` prefetch, one
//! task per delivery, replies published with confirms, and the job acked only after
//! its reply is confirmed. Jobs are parsed and checked by [`crate::protocol::parse_job`]
//! with the default limits, so malformed jobs get the same error replies. A job without
//! `reply_to` is acked and dropped (there is nothing to translate or cache).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{BrokerError, Session};
use crate::client::ConnectArgs;
use crate::config::{AmqpConfig, LimitsConfig};
use crate::protocol::{parse_job, ErrorCode, JobError, Reply};

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

/// The `echo` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct EchoArgs {
    /// Broker and exchange (declared and bound like the worker does).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Job queue to consume (declared like the worker's). Required, so that `echo`
    /// never answers a production queue by accident.
    #[arg(long)]
    pub queue: String,
    /// Dead-letter exchange and queue named in the job queue's arguments (must match
    /// the worker's when sharing its queue).
    #[arg(long, default_value = "translation.dead")]
    pub dead_letter: String,
    /// Language pair(s) to bind, as `<source>-<target>`; repeat for more.
    #[arg(long = "pair", default_value = "ko-en")]
    pub pairs: Vec<String>,
    /// Unacknowledged deliveries in flight, as the worker's `amqp.prefetch`.
    #[arg(long, default_value_t = 128)]
    pub prefetch: u16,
    /// Model id put in the replies.
    #[arg(long, default_value = "echo")]
    pub model: String,
}

/// Totals of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Jobs answered and acked.
    pub answered: u64,
}

/// A language pair split from `ko-en`.
fn split_pair(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('-') {
        Some((s, t)) if !s.is_empty() && !t.is_empty() => Ok((s.to_owned(), t.to_owned())),
        _ => Err(format!("--pair {pair:?} is not <source>-<target>")),
    }
}

/// The reply to a job body: its texts back, or the contract error the worker would send
/// for a malformed job or a pair not served here.
pub fn echo_reply(
    body: &[u8],
    pairs: &[(String, String)],
    limits: &LimitsConfig,
    model: &str,
) -> Reply {
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
    Reply::Ok {
        id: job.id,
        translations: job.texts,
        cached,
        model: model.to_owned(),
        segments: None,
        truncated: None,
        errors: None,
    }
}

/// Consumes and answers until `shutdown`, then finishes the jobs in flight and closes.
/// Returns an error if the broker fails (no reconnect: this is a measuring tool).
pub async fn run(args: &EchoArgs, shutdown: CancellationToken) -> Result<EchoStats, EchoError> {
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
    let mut consumer = session.consume(&cfg.queue, "").await?;
    tracing::info!(queue = %cfg.queue, prefetch = cfg.prefetch, "echo consuming");
    let shared = std::sync::Arc::new(EchoShared {
        pairs,
        limits: LimitsConfig::default(),
        model: args.model.clone(),
        answered: std::sync::atomic::AtomicU64::new(0),
    });
    let tracker = TaskTracker::new();
    let result = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let _ = session
                    .consume
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                break Ok(());
            }
            next = consumer.next() => match next {
                // At most `prefetch` tasks exist: the broker sends no more deliveries
                // until earlier ones are acked.
                Some(Ok(delivery)) => {
                    tracker.spawn(answer(shared.clone(), session.clone(), delivery));
                }
                Some(Err(source)) => break Err(BrokerError::Amqp { op: "consume", source }),
                None => break Err(BrokerError::ConsumerClosed),
            }
        }
    };
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
    limits: LimitsConfig,
    model: String,
    answered: std::sync::atomic::AtomicU64,
}

async fn answer(shared: std::sync::Arc<EchoShared>, session: std::sync::Arc<Session>, d: Delivery) {
    let reply_to = d
        .properties
        .reply_to()
        .as_ref()
        .map(|r| r.as_str().to_owned())
        .filter(|r| !r.is_empty());
    let published = match reply_to {
        Some(rt) => {
            let reply = echo_reply(&d.data, &shared.pairs, &shared.limits, &shared.model);
            session
                .reply(
                    &rt,
                    d.properties.correlation_id().as_ref(),
                    &reply.to_bytes(),
                )
                .await
        }
        None => Ok(()),
    };
    match published {
        Ok(()) => {
            shared
                .answered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = d.ack(BasicAckOptions::default()).await {
                tracing::warn!(error = %e, "ack failed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reply not confirmed; requeueing the job");
            let _ = d
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> Vec<(String, String)> {
        vec![("ko".into(), "en".into())]
    }

    fn reply(body: &[u8]) -> serde_json::Value {
        let r = echo_reply(body, &pairs(), &LimitsConfig::default(), "echo");
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
