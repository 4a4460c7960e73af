//! `[amqp]`: the RabbitMQ connection, the job queue and its topology.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use translation_client::url::{redact_url, split_url_list};
use translation_client::Lane;

use super::{check, ConfigError, TlsFiles};

/// RabbitMQ settings.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// AMQP URI, e.g. `amqp://user:pass@host:5672/%2f`, or `amqps://` for TLS. Several
    /// nodes of one cluster: comma-separated URIs, tried in random order at every
    /// (re)connect. Logged only with the password redacted.
    pub url: String,
    /// File holding the AMQP URI (e.g. a mounted Kubernetes Secret); when set, its
    /// trimmed contents replace `url` at start-up.
    pub url_file: PathBuf,
    /// PEM CA certificates trusted for `amqps://`, in addition to the system roots
    /// (which honour `SSL_CERT_FILE`/`SSL_CERT_DIR`); empty = system roots only.
    pub tls_ca_file: PathBuf,
    /// PEM client certificate (chain) for mutual TLS; needs `tls_key_file`.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub tls_key_file: PathBuf,
    /// Durable job queue the worker consumes: the **bulk** lane. Its interactive lane
    /// is `<queue>.interactive` (see `interactive_lane`).
    pub queue: String,
    /// Durable direct exchange jobs may be published to, routed by `<source>-<target>`.
    pub exchange: String,
    /// Dead-letter exchange and queue (same name) for jobs that cannot be answered.
    pub dead_letter: String,
    /// Unacknowledged deliveries the broker may push to this worker at once. It bounds
    /// in-flight jobs and so memory (see docs/reliability.md for the formula), and it
    /// is the batcher's window under a backlog: the texts it sorts by length to cut
    /// batches of similar lengths. At least 2 × `batch.max_batch_size` × replicas.
    pub prefetch: u16,
    /// Declare, bind and consume the **interactive** lane of every job queue:
    /// `<queue>.interactive`, bound by `<source>-<target>.interactive`, consumed on a
    /// channel of its own with `interactive_prefetch`, its texts batched before bulk
    /// ones. Off: only the bulk queue (the Rust client and the gateway then fall back
    /// to it, as the broker returns their interactive jobs unroutable).
    pub interactive_lane: bool,
    /// Unacknowledged deliveries of each interactive lane queue at once, a window of
    /// its own that bulk deliveries can never fill. Interactive jobs are short: enough
    /// for the interactive requests one worker has in flight at peak.
    pub interactive_prefetch: u16,
    /// First reconnect delay after the broker connection is lost, in milliseconds.
    pub reconnect_initial_ms: u64,
    /// Upper bound of the exponential reconnect delay, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Type of the job queue: `classic` (one node) or `quorum` (replicated over the
    /// cluster's nodes, survives losing a minority of them). RabbitMQ cannot change the
    /// type of an existing queue: switching needs a new `queue` name, or deleting the
    /// old queue once drained.
    pub queue_type: QueueType,
    /// Quorum queues only: deliveries of one job before the broker dead-letters it
    /// (`x-delivery-limit`), so a job that crashes or stalls every worker taking it
    /// ends in `dead_letter` instead of being redelivered forever.
    pub delivery_limit: u32,
}

/// Type of the job queue (`x-queue-type`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A classic queue: lives on one broker node.
    Classic,
    /// A quorum queue: Raft-replicated, durable, with a delivery limit.
    Quorum,
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        })
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: translation_client::DEFAULT_AMQP_URL.into(),
            url_file: PathBuf::new(),
            tls_ca_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            queue: "translation.jobs".into(),
            exchange: translation_client::DEFAULT_EXCHANGE.into(),
            dead_letter: "translation.dead".into(),
            prefetch: 512,
            interactive_lane: true,
            interactive_prefetch: 64,
            reconnect_initial_ms: 200,
            reconnect_max_ms: 10_000,
            queue_type: QueueType::Classic,
            delivery_limit: 5,
        }
    }
}

impl AmqpConfig {
    /// Reconnect delays: `reconnect_initial_ms` doubling to `reconnect_max_ms`,
    /// jittered.
    pub fn backoff(&self) -> translation_client::backoff::Backoff {
        translation_client::backoff::Backoff::new(
            Duration::from_millis(self.reconnect_initial_ms),
            Duration::from_millis(self.reconnect_max_ms),
        )
    }

    /// The TLS files of this section.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            section: "amqp",
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        }
    }

    /// Checks this section on its own; errors name the key (`amqp.<key>`). The TLS
    /// files are only checked against the URL here: they are read after validation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // One URL, or several nodes of one cluster, comma-separated.
        let urls = split_url_list(&self.url);
        check(
            !urls.is_empty()
                && urls
                    .iter()
                    .all(|u| u.starts_with("amqp://") || u.starts_with("amqps://")),
            "amqp.url",
            "must start with amqp:// or amqps:// (several nodes: comma-separated URLs)",
        )?;
        check(
            urls.iter().all(|u| u.starts_with("amqps://"))
                || urls.iter().all(|u| u.starts_with("amqp://")),
            "amqp.url",
            "must not mix amqp:// and amqps:// nodes",
        )?;
        self.tls_files()
            .validate(self.url.starts_with("amqps://"), "amqps")?;
        check(!self.queue.is_empty(), "amqp.queue", "must not be empty")?;
        check(
            !self.exchange.is_empty(),
            "amqp.exchange",
            "must not be empty",
        )?;
        check(
            !self.dead_letter.is_empty(),
            "amqp.dead_letter",
            "must not be empty",
        )?;
        // `<queue>.interactive` is the interactive lane's queue: a job queue of that
        // name would be another model's lane (both consumed, each job answered by
        // whichever model got it), so the suffix is reserved.
        check(
            !self.queue.ends_with(Lane::INTERACTIVE_SUFFIX),
            "amqp.queue",
            "must not end with \".interactive\" (reserved for the interactive lane's queue)",
        )?;
        check(
            self.dead_letter != self.queue
                && self.dead_letter != format!("{}{}", self.queue, Lane::INTERACTIVE_SUFFIX),
            "amqp.dead_letter",
            "must differ from amqp.queue and from its interactive lane's queue",
        )?;
        check(self.prefetch >= 1, "amqp.prefetch", "must be at least 1")?;
        check(
            self.interactive_prefetch >= 1,
            "amqp.interactive_prefetch",
            "must be at least 1",
        )?;
        check(
            self.queue_type == QueueType::Classic || self.delivery_limit >= 1,
            "amqp.delivery_limit",
            "must be at least 1 for a quorum queue",
        )?;
        check(
            self.reconnect_initial_ms >= 1 && self.reconnect_initial_ms <= self.reconnect_max_ms,
            "amqp.reconnect_initial_ms",
            "must be at least 1 and at most amqp.reconnect_max_ms",
        )
    }
}

// Hand-written so that `{:?}` of a configuration (or of anything holding one) never
// prints a password. Destructured, so a new field cannot be forgotten here.
impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            url,
            url_file,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            queue,
            exchange,
            dead_letter,
            prefetch,
            interactive_lane,
            interactive_prefetch,
            reconnect_initial_ms,
            reconnect_max_ms,
            queue_type,
            delivery_limit,
        } = self;
        f.debug_struct("AmqpConfig")
            .field("url", &redact_url(url))
            .field("url_file", url_file)
            .field("tls_ca_file", tls_ca_file)
            .field("tls_cert_file", tls_cert_file)
            .field("tls_key_file", tls_key_file)
            .field("queue", queue)
            .field("exchange", exchange)
            .field("dead_letter", dead_letter)
            .field("prefetch", prefetch)
            .field("interactive_lane", interactive_lane)
            .field("interactive_prefetch", interactive_prefetch)
            .field("reconnect_initial_ms", reconnect_initial_ms)
            .field("reconnect_max_ms", reconnect_max_ms)
            .field("queue_type", queue_type)
            .field("delivery_limit", delivery_limit)
            .finish()
    }
}
