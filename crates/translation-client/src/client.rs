//! Rust client for wire contract v1: publish a job, wait for its reply.
//!
//! One [`Client`] holds one broker connection with two channels: a publishing channel in
//! confirm mode and a consuming channel for the client's own reply queue. It is `Clone`
//! (an `Arc` inside) and every method takes `&self`, so any number of tasks can have
//! calls in flight on the one connection; a semaphore caps them at
//! [`ClientOptions::max_in_flight`].
//!
//! # Reply queue
//!
//! Each client declares one **exclusive, server-named, auto-delete queue** and consumes
//! it with automatic acks. RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`) was
//! rejected: its replies are never stored, so a reply is lost whenever the consuming
//! channel is not there at the instant the worker publishes it (at-most-once), while
//! the worker goes to the trouble of publishing replies with confirms and acking the
//! job only afterwards. With a real queue a confirmed reply sits in the queue until the
//! client reads it. Both lose replies when the client's *connection* drops (the
//! exclusive queue is deleted with it), which is why in-flight calls then fail at once
//! with [`ClientError::ConnectionLost`] instead of waiting for their timeout. The client
//! does not reconnect: create a new one.
//!
//! # Publishing
//!
//! Jobs go to [`ClientOptions::exchange`] with routing key `<source>-<target>`
//! (bulk lane) or `<source>-<target>.interactive` (interactive lane, see [`Lane`]),
//! `mandatory = true` and publisher confirms, persistent, with a fresh `correlation_id`
//! and `reply_to` = the reply queue. An interactive job that comes back unroutable
//! (workers older than lanes, or with `amqp.interactive_lane = false`) is published
//! once more to the bulk lane: a returned job was queued nowhere, so this cannot
//! duplicate it. A pair no worker serves comes back as
//! `basic.return` before the confirm: the call fails at once with
//! [`ClientError::Unroutable`]. lapin hands a returned message to whichever confirm it
//! resolves next, which need not be the call that published it when confirms are
//! coalesced, so returned messages are matched to their call by `correlation_id`.
//!
//! # Replies
//!
//! A pending-calls map keyed by correlation id: the first reply completes the call.
//! Replies nobody waits for (after a timeout, a second reply after a redelivery, or a
//! stranger's) are dropped and counted in [`ClientStats::ignored_replies`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::BasicReturnMessage;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::url::{redact_url, shuffled_urls};
use crate::wire::{
    pair_key, unix_ms_now, ErrorBody, ErrorCode, Format, Job, JobOptions, Reply, SegmentStats,
    Split,
};

/// Broker URI used when none is given (the same as `amqp.url` in `config/default.toml`).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Exchange jobs are published to by default (`amqp.exchange`).
pub const DEFAULT_EXCHANGE: &str = "translation";

/// Why a call (or connecting) failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached or refused the login (URL redacted).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// lapin's error.
        source: lapin::Error,
    },
    /// A broker operation failed (channel closed, publish refused, ...).
    #[error("{op} failed: {source}")]
    Broker {
        /// What was being done.
        op: &'static str,
        /// lapin's error.
        source: lapin::Error,
    },
    /// The connection (or the reply consumer) ended while the call was in flight, or
    /// before it started. Whether the job was translated is unknown.
    #[error("the broker connection was lost; the client must be re-created")]
    ConnectionLost,
    /// [`Client::close`] was called.
    #[error("the client is closed")]
    Closed,
    /// No reply within the call's timeout (the job may still be answered later; that
    /// reply is ignored).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The broker returned the job: no queue is bound to this pair (no worker serves it).
    #[error(
        "no worker serves {routing_key:?} on exchange {exchange:?} (returned by the broker: \
         {reply_code} {reply_text})"
    )]
    Unroutable {
        /// Exchange published to.
        exchange: String,
        /// The pair's routing key.
        routing_key: String,
        /// AMQP reply code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's explanation.
        reply_text: String,
    },
    /// The broker refused (nacked) the job; nothing was queued.
    #[error("the broker nacked the job")]
    Nacked,
    /// The worker answered with an error reply.
    #[error("the worker answered {code}: {message}")]
    Rejected {
        /// Contract error code.
        code: ErrorCode,
        /// The worker's explanation.
        message: String,
        /// The job's id, as echoed.
        id: Option<String>,
    },
    /// A reply that does not follow the wire contract.
    #[error("invalid reply: {0}")]
    InvalidReply(String),
}

impl ClientError {
    /// A short, stable label for reports and metrics: the contract code for
    /// [`ClientError::Rejected`], else the kind of failure.
    pub fn label(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "connect",
            ClientError::Broker { .. } => "broker",
            ClientError::ConnectionLost => "connection_lost",
            ClientError::Closed => "closed",
            ClientError::Timeout(_) => "timeout",
            ClientError::Unroutable { .. } => "unroutable",
            ClientError::Nacked => "nacked",
            ClientError::Rejected { code, .. } => code.as_str(),
            ClientError::InvalidReply(_) => "invalid_reply",
        }
    }
}

fn broker(op: &'static str) -> impl FnOnce(lapin::Error) -> ClientError {
    move |source| ClientError::Broker { op, source }
}

/// Which of a model's two job queues a job waits in.
///
/// Workers consume both lanes of each model, each queue with its own prefetch
/// window, and their batchers cut batches from interactive texts first (bulk texts
/// still get a stated share, so they never starve). The lane is the queue, not a
/// field of the job: `<queue>` is the bulk lane (every producer that names no lane),
/// `<queue>.interactive` the interactive one, bound on the jobs exchange with the
/// routing key `<source>-<target>.interactive`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// Backend and document work: throughput first. The default.
    #[default]
    Bulk,
    /// A person waiting (the gateway's requests): served before bulk work.
    Interactive,
}

impl Lane {
    /// Both lanes, bulk first.
    pub const ALL: [Lane; 2] = [Lane::Bulk, Lane::Interactive];
    /// Appended to a queue name or routing key for the interactive lane.
    pub const INTERACTIVE_SUFFIX: &'static str = ".interactive";

    /// `"bulk"` or `"interactive"` (configuration, metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Bulk => "bulk",
            Lane::Interactive => "interactive",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Lane::Bulk => "",
            Lane::Interactive => Self::INTERACTIVE_SUFFIX,
        }
    }

    /// This lane's queue of the job queue `queue` (`queue` itself for bulk).
    pub fn queue(self, queue: &str) -> String {
        format!("{queue}{}", self.suffix())
    }

    /// This lane's routing key for the pair key `pair` (`ko-en`, or
    /// `ko-en.interactive`).
    pub fn routing_key(self, pair: &str) -> String {
        format!("{pair}{}", self.suffix())
    }

    /// The pair key of a routing key of this lane (the key itself when it lacks the
    /// lane's suffix).
    pub fn pair_of(self, routing_key: &str) -> &str {
        routing_key
            .strip_suffix(self.suffix())
            .filter(|_| self != Lane::Bulk)
            .unwrap_or(routing_key)
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Lane {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lane::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown lane {s:?} (bulk or interactive)"))
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Exchange jobs are published to, routed by `<source>-<target>`.
    pub exchange: String,
    /// Default per-call timeout (a request may override it).
    pub timeout: Duration,
    /// Calls in flight at once; more wait for a slot (within their timeout). It bounds
    /// the pending-calls map and the replies the broker can push at the client.
    pub max_in_flight: usize,
    /// Send `deadline_ms` = now + timeout, so a worker skips a job whose caller has
    /// already given up (answering `deadline_exceeded`). Assumes clocks agree to well
    /// within the timeout.
    pub send_deadline: bool,
    /// Declare the exchange (durable, direct: as the worker does) at connect, so that a
    /// client started before any worker gets [`ClientError::Unroutable`] rather than a
    /// channel closed by NOT_FOUND. Turn off when the user may not declare exchanges.
    pub declare_exchange: bool,
    /// Connection name shown in the RabbitMQ management UI.
    pub connection_name: String,
    /// Lane of the requests that name none ([`TranslateRequest::with_lane`]): bulk by
    /// default; the gateway's is interactive.
    pub lane: Lane,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            exchange: DEFAULT_EXCHANGE.into(),
            timeout: Duration::from_secs(30),
            // Enough to keep several workers' prefetch windows (128 each) full from one
            // client; a pending call costs a map entry and a oneshot.
            max_in_flight: 1024,
            send_deadline: true,
            declare_exchange: true,
            connection_name: "translation-worker-client".into(),
            lane: Lane::Bulk,
        }
    }
}

/// One job to send: the wire [`Job`] and how long to wait for its reply.
#[derive(Debug, Clone, Default)]
pub struct TranslateRequest {
    /// The job body (`source` and `target` also make its routing key).
    pub job: Job,
    /// Overrides [`ClientOptions::timeout`] for this call.
    pub timeout: Option<Duration>,
    /// Overrides [`ClientOptions::lane`] for this call.
    pub lane: Option<Lane>,
}

impl TranslateRequest {
    /// A request for `texts` from `source` to `target`.
    pub fn new(
        source: impl Into<String>,
        target: impl Into<String>,
        texts: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            job: Job {
                texts: texts.into_iter().map(Into::into).collect(),
                source: Some(source.into()),
                target: Some(target.into()),
                ..Job::default()
            },
            timeout: None,
            lane: None,
        }
    }

    /// Sends this call in `lane` (e.g. [`Lane::Interactive`] for a person waiting).
    pub fn with_lane(mut self, lane: Lane) -> Self {
        self.lane = Some(lane);
        self
    }

    /// Sets the id echoed in the reply.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.job.id = Some(id.into());
        self
    }

    /// Sets this call's timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets how texts are cut (e.g. [`Split::Sentences`] for documents).
    pub fn with_split(mut self, split: Split) -> Self {
        self.job.split = split;
        self
    }

    /// Sets what the texts are: [`Format::Html`] translates HTML documents sentence
    /// by sentence and keeps their markup byte for byte.
    pub fn with_format(mut self, format: Format) -> Self {
        self.job.format = format;
        self
    }

    /// Sets decoding options.
    pub fn with_options(mut self, options: JobOptions) -> Self {
        self.job.options = options;
        self
    }

    /// The routing key of the request's pair.
    pub fn routing_key(&self) -> String {
        pair_key(
            self.job.source.as_deref().unwrap_or_default(),
            self.job.target.as_deref().unwrap_or_default(),
        )
    }
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateReply {
    /// The job's id, as echoed.
    pub id: Option<String>,
    /// `translations[i]` answers input `i`.
    pub translations: Vec<String>,
    /// `cached[i]`: whether `translations[i]` came from the cache.
    pub cached: Vec<bool>,
    /// Model id.
    pub model: String,
    /// Per text, its segments and cache hits (`split: sentences` jobs only).
    pub segments: Option<Vec<SegmentStats>>,
    /// `truncated[i]`: the model read only the start of text `i` (all `false` when the
    /// reply has no `truncated`).
    pub truncated: Vec<bool>,
    /// `errors[i]`: why text `i` failed (its translation is then `""`), or `None`.
    pub errors: Vec<Option<ErrorBody>>,
    /// `alternatives[i]`: other translations of text `i` (`options.alternatives`
    /// jobs only; see [`crate::wire::Reply`]).
    pub alternatives: Option<Vec<Vec<String>>>,
    /// The call's correlation id.
    pub correlation_id: String,
}

impl TranslateReply {
    /// Whether every text was translated (no per-text errors).
    pub fn is_complete(&self) -> bool {
        self.errors.iter().all(Option::is_none)
    }
}

/// An error reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReply {
    /// The job's id, as echoed.
    pub id: Option<String>,
    /// Contract error code.
    pub code: ErrorCode,
    /// The worker's explanation.
    pub message: String,
    /// The call's correlation id.
    pub correlation_id: String,
}

/// A decoded reply: translations or a contract error.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `status: ok`.
    Ok(TranslateReply),
    /// `status: error`.
    Error(ErrorReply),
}

/// A reply with its body exactly as received.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReply {
    /// The JSON body.
    pub body: Vec<u8>,
    /// The decoded reply.
    pub answer: Answer,
}

/// Counters of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Replies that matched no pending call: late (after a timeout), duplicates (after a
    /// redelivery) or strangers'.
    pub ignored_replies: u64,
    /// Jobs the broker returned as unroutable.
    pub returned: u64,
    /// Calls waiting for a reply now.
    pub pending: usize,
}

/// Decodes a reply body to a job of `expected` texts, checking that every per-text
/// array has one entry per text.
pub fn parse_reply(
    body: &[u8],
    expected: usize,
    correlation_id: &str,
) -> Result<Answer, ClientError> {
    let reply = Reply::parse(body)
        .map_err(|e| ClientError::InvalidReply(format!("not a v1 reply: {e}")))?;
    match reply {
        Reply::Ok {
            id,
            translations,
            cached,
            model,
            segments,
            truncated,
            errors,
            alternatives,
        } => {
            if truncated.as_ref().is_some_and(|t| t.len() != expected)
                || errors.as_ref().is_some_and(|e| e.len() != expected)
                || alternatives.as_ref().is_some_and(|a| a.len() != expected)
            {
                return Err(ClientError::InvalidReply(format!(
                    "truncated, errors or alternatives not one per text (expected {expected})"
                )));
            }
            if segments.as_ref().is_some_and(|s| s.len() != expected) {
                return Err(ClientError::InvalidReply(format!(
                    "segment counts for {} texts, expected {expected}",
                    segments.as_ref().map_or(0, Vec::len)
                )));
            }
            if translations.len() != expected || cached.len() != expected {
                return Err(ClientError::InvalidReply(format!(
                    "{} translations and {} cache flags for {expected} texts",
                    translations.len(),
                    cached.len()
                )));
            }
            Ok(Answer::Ok(TranslateReply {
                id,
                translations,
                cached,
                model,
                segments,
                truncated: truncated.unwrap_or_else(|| vec![false; expected]),
                errors: errors.unwrap_or_else(|| vec![None; expected]),
                alternatives,
                correlation_id: correlation_id.to_owned(),
            }))
        }
        Reply::Error { id, error } => Ok(Answer::Error(ErrorReply {
            id,
            code: error.code,
            message: error.message,
            correlation_id: correlation_id.to_owned(),
        })),
    }
}

type CallResult = Result<RawReply, ClientError>;

struct PendingCall {
    tx: oneshot::Sender<CallResult>,
    /// Texts sent, to check the reply's arrays.
    expected: usize,
}

#[derive(Default)]
struct PendingMap {
    calls: HashMap<String, PendingCall>,
    /// Set when the connection is gone: new calls fail at once.
    closed: Option<Closed>,
}

#[derive(Clone, Copy)]
enum Closed {
    Lost,
    ByUser,
}

impl Closed {
    fn error(self) -> ClientError {
        match self {
            Closed::Lost => ClientError::ConnectionLost,
            Closed::ByUser => ClientError::Closed,
        }
    }
}

/// State shared by the callers and the reply dispatcher (not the connection, so the
/// dispatcher does not keep the client alive).
#[derive(Default)]
struct Shared {
    pending: Mutex<PendingMap>,
    ignored_replies: AtomicU64,
    returned: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PendingMap> {
        // The map stays consistent across a panic elsewhere (single inserts/removes).
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call; fails when the client is closed or the id is taken.
    fn register(
        &self,
        corr: &str,
        expected: usize,
    ) -> Result<oneshot::Receiver<CallResult>, ClientError> {
        let mut map = self.lock();
        if let Some(closed) = map.closed {
            return Err(closed.error());
        }
        let (tx, rx) = oneshot::channel();
        if map
            .calls
            .insert(corr.to_owned(), PendingCall { tx, expected })
            .is_some()
        {
            // Ids are a per-client random prefix plus a counter: cannot repeat.
            return Err(ClientError::InvalidReply(format!(
                "correlation id {corr} reused"
            )));
        }
        Ok(rx)
    }

    fn forget(&self, corr: &str) {
        self.lock().calls.remove(corr);
    }

    /// Completes the call `corr` with a reply body. Returns false (and counts it) when
    /// no call waits for it.
    fn complete(&self, corr: Option<&str>, body: Vec<u8>) -> bool {
        let call = corr.and_then(|c| self.lock().calls.remove(c));
        let (Some(corr), Some(call)) = (corr, call) else {
            self.ignored_replies.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(correlation_id = ?corr, "ignoring a reply no call waits for");
            return false;
        };
        let result =
            parse_reply(&body, call.expected, corr).map(|answer| RawReply { body, answer });
        // The caller may have given up an instant ago: nothing to do then.
        let _ = call.tx.send(result);
        true
    }

    /// Fails the call `corr`, if it is still pending.
    fn fail(&self, corr: &str, error: ClientError) -> bool {
        let Some(call) = self.lock().calls.remove(corr) else {
            return false;
        };
        let _ = call.tx.send(Err(error));
        true
    }

    /// Fails every pending call and refuses new ones.
    fn close(&self, why: Closed) {
        let calls = {
            let mut map = self.lock();
            map.closed.get_or_insert(why);
            std::mem::take(&mut map.calls)
        };
        for (_, call) in calls {
            let _ = call.tx.send(Err(why.error()));
        }
    }

    /// Routes a message the broker returned to the call that published it.
    fn returned(&self, message: BasicReturnMessage) {
        self.returned.fetch_add(1, Ordering::Relaxed);
        let corr = message
            .delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_owned());
        let error = ClientError::Unroutable {
            exchange: message.delivery.exchange.as_str().to_owned(),
            routing_key: message.delivery.routing_key.as_str().to_owned(),
            reply_code: message.reply_code,
            reply_text: message.reply_text.as_str().to_owned(),
        };
        if !corr.as_deref().is_some_and(|c| self.fail(c, error)) {
            tracing::debug!(correlation_id = ?corr, "returned job of no pending call");
        }
    }
}

/// Removes the call's entry when the call ends in any way (also when its future is
/// dropped), so a late reply finds nothing.
struct PendingGuard<'a> {
    shared: &'a Shared,
    corr: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.corr);
    }
}

struct Inner {
    connection: Connection,
    publish: Channel,
    reply_queue: String,
    options: ClientOptions,
    shared: Arc<Shared>,
    /// Caps calls in flight (see [`ClientOptions::max_in_flight`]).
    slots: Arc<Semaphore>,
    /// Random per client, so ids never collide across clients sharing a queue.
    id_prefix: String,
    next_id: AtomicU64,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The dispatcher owns the reply consumer; stopping it lets the connection close.
        self.dispatcher.abort();
    }
}

/// A connection to the broker for sending translation jobs. Cheap to clone; clones
/// share the connection, reply queue and in-flight limit.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("reply_queue", &self.inner.reply_queue)
            .field("exchange", &self.inner.options.exchange)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, opens the channels, declares the exchange (see
    /// [`ClientOptions::declare_exchange`]) and the reply queue, and starts consuming it.
    /// `url` may list several nodes of one RabbitMQ cluster, comma-separated: they are
    /// tried in random order until one accepts (a refused login stops at once: every
    /// node has the same users).
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let props = ConnectionProperties::default()
            .with_connection_name(options.connection_name.as_str().into());
        let mut nodes = shuffled_urls(url);
        // The last node's result is the answer (an empty list: lapin says what is wrong).
        let last = nodes.pop().unwrap_or(url);
        let connect_err = |node: &str, source: lapin::Error| ClientError::Connect {
            url: redact_url(node),
            source,
        };
        for node in nodes {
            match Connection::connect(node, props.clone()).await {
                Ok(connection) => return Self::on_connection(connection, options).await,
                Err(source) => {
                    // A refused login or vhost (403, 530): every node has the same users.
                    let refused = matches!(
                        source.kind(),
                        lapin::ErrorKind::ProtocolError(e) if matches!(e.get_id(), 403 | 530)
                    );
                    let e = connect_err(node, source);
                    if refused {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "broker node unavailable; trying the next");
                }
            }
        }
        let connection = Connection::connect(last, props)
            .await
            .map_err(|source| connect_err(last, source))?;
        Self::on_connection(connection, options).await
    }

    /// Sets up the client's channels and reply queue on a connection opened by the
    /// caller (e.g. with TLS client certificates; see the worker's `amqp` module).
    pub async fn on_connection(
        connection: Connection,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let publish = connection
            .create_channel()
            .await
            .map_err(broker("channel.open"))?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(broker("confirm.select"))?;
        if options.declare_exchange && !options.exchange.is_empty() {
            publish
                .exchange_declare(
                    options.exchange.as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(broker("exchange.declare"))?;
        }
        let consume = connection
            .create_channel()
            .await
            .map_err(broker("channel.open"))?;
        let queue = consume
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(broker("queue.declare (replies)"))?;
        let reply_queue = queue.name().as_str().to_owned();
        // Automatic acks: a reply is only useful to this process's memory, so an ack
        // round trip buys nothing. Unacked pushes are bounded by the calls in flight.
        let consumer = consume
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(broker("basic.consume (replies)"))?;
        let shared = Arc::new(Shared::default());
        let dispatcher = tokio::spawn(dispatch(consumer, shared.clone(), consume));
        let max_in_flight = options.max_in_flight.max(1);
        Ok(Client {
            inner: Arc::new(Inner {
                connection,
                publish,
                reply_queue,
                options,
                shared,
                slots: Arc::new(Semaphore::new(max_in_flight)),
                id_prefix: uuid::Uuid::new_v4().simple().to_string(),
                next_id: AtomicU64::new(0),
                dispatcher,
            }),
        })
    }

    /// Sends `request` and waits for its reply. An error reply is
    /// [`ClientError::Rejected`].
    pub async fn translate(
        &self,
        request: TranslateRequest,
    ) -> Result<TranslateReply, ClientError> {
        match self.call(request).await?.answer {
            Answer::Ok(reply) => Ok(reply),
            Answer::Error(e) => Err(ClientError::Rejected {
                code: e.code,
                message: e.message,
                id: e.id,
            }),
        }
    }

    /// Sends `request` and waits for its reply, ok or error, with the raw body.
    pub async fn call(&self, request: TranslateRequest) -> Result<RawReply, ClientError> {
        let timeout = request.timeout.unwrap_or(self.inner.options.timeout);
        let lane = request.lane.unwrap_or(self.inner.options.lane);
        let mut request = request;
        if self.inner.options.send_deadline {
            request.job.deadline_ms =
                Some(unix_ms_now().saturating_add(timeout.as_millis() as u64));
        }
        let texts = request.job.texts.len();
        let pair = request.routing_key();
        let body = request.job.to_bytes();
        let call = async {
            let first = self
                .call_within(&body, texts, lane.routing_key(&pair))
                .await;
            match first {
                // No worker binds the interactive lane: the job was queued nowhere, so
                // sending it to the bulk lane cannot duplicate it.
                Err(ClientError::Unroutable { .. }) if lane != Lane::Bulk => {
                    tracing::debug!(routing_key = %pair, "interactive lane unroutable; using bulk");
                    self.call_within(&body, texts, Lane::Bulk.routing_key(&pair))
                        .await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            // Dropping the call's future removed its pending entry (PendingGuard).
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    async fn call_within(
        &self,
        body: &[u8],
        texts: usize,
        routing_key: String,
    ) -> Result<RawReply, ClientError> {
        let inner = &*self.inner;
        // Shared by this call and its confirm task: the slot is free only once the reply
        // is in (or the call gave up) and the broker has confirmed the publish.
        let slot = Arc::new(
            inner
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ClientError::Closed)?,
        );
        let corr = format!(
            "{}.{}",
            inner.id_prefix,
            inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let rx = inner.shared.register(&corr, texts)?;
        let _guard = PendingGuard {
            shared: &inner.shared,
            corr: &corr,
        };
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id(corr.as_str().into())
            .with_reply_to(inner.reply_queue.as_str().into());
        let confirm = inner
            .publish
            .basic_publish(
                inner.options.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .map_err(broker("basic.publish"))?;
        // The confirm is awaited in its own task, so a call that times out never drops
        // it (a dropped confirm would lose a returned message it carries for another
        // call). The task holds the call's slot too, so unconfirmed publishes of calls
        // that timed out still count against max_in_flight.
        tokio::spawn(settle_confirm(
            confirm,
            inner.shared.clone(),
            corr.clone(),
            slot.clone(),
        ));
        match rx.await {
            Ok(result) => result,
            // The sender went away without a word: only when the map was cleared.
            Err(_) => Err(ClientError::ConnectionLost),
        }
    }

    /// The name of this client's reply queue.
    pub fn reply_queue(&self) -> &str {
        &self.inner.reply_queue
    }

    /// The options this client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Counters (ignored replies, returned jobs, calls pending).
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.shared;
        ClientStats {
            ignored_replies: s.ignored_replies.load(Ordering::Relaxed),
            returned: s.returned.load(Ordering::Relaxed),
            pending: s.lock().calls.len(),
        }
    }

    /// Whether calls can still succeed: the connection is open and the reply consumer
    /// runs. Once false it stays false (the client does not reconnect).
    pub fn is_connected(&self) -> bool {
        self.inner.shared.lock().closed.is_none() && self.inner.connection.status().connected()
    }

    /// Fails the calls in flight with [`ClientError::Closed`] and closes the connection.
    pub async fn close(&self) {
        self.inner.shared.close(Closed::ByUser);
        self.inner.slots.close();
        let _ = self
            .inner
            .connection
            .close(200, "client closed".into())
            .await;
    }
}

/// Waits for the broker's confirm of one publish and settles the call when the broker
/// returned or refused the job.
async fn settle_confirm(
    confirm: PublisherConfirm,
    shared: Arc<Shared>,
    corr: String,
    _slot: Arc<OwnedSemaphorePermit>,
) {
    match confirm.await {
        Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
        Ok(Confirmation::Ack(Some(returned))) => shared.returned(returned),
        Ok(Confirmation::Nack(returned)) => {
            if let Some(r) = returned {
                shared.returned(r);
            }
            shared.fail(&corr, ClientError::Nacked);
        }
        Err(source) => {
            shared.fail(
                &corr,
                ClientError::Broker {
                    op: "publisher confirm",
                    source,
                },
            );
        }
    }
}

/// Hands each reply to its pending call until the consumer ends, then fails the rest.
async fn dispatch(mut consumer: Consumer, shared: Arc<Shared>, _channel: Channel) {
    while let Some(next) = consumer.next().await {
        match next {
            Ok(delivery) => {
                let corr = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.as_str().to_owned());
                shared.complete(corr.as_deref(), delivery.data);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reply consumer failed");
                break;
            }
        }
    }
    shared.close(Closed::Lost);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_job, Limits};

    #[test]
    fn encoded_jobs_are_accepted_by_the_worker_parser() {
        let request = TranslateRequest::new("ko", "en", ["안녕하세요", "", "a\u{0}b"])
            .with_id("doc-1")
            .with_options(JobOptions {
                beam_size: Some(2),
                ..JobOptions::default()
            });
        let mut sent = request.job.clone();
        sent.deadline_ms = Some(1_764_300_000_000);
        let body = sent.to_bytes();
        let job = parse_job(&body, &Limits::default()).expect("valid job");
        assert_eq!(job.texts, request.job.texts);
        assert_eq!(job.id.as_deref(), Some("doc-1"));
        assert_eq!(job.source.as_deref(), Some("ko"));
        assert_eq!(job.target.as_deref(), Some("en"));
        assert_eq!(job.options.beam_size, Some(2));
        assert_eq!(job.options.max_decoding_length, None);
        assert_eq!(job.deadline_ms, Some(1_764_300_000_000));

        // No id, options or deadline: the keys are left out, not sent as null.
        let body = TranslateRequest::new("ko", "en", ["x"]).job.to_bytes();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(!text.contains("null"), "{text}");
        assert!(parse_job(&body, &Limits::default()).is_ok());
    }

    #[test]
    fn parses_ok_and_error_replies() {
        let ok = br#"{"id":"d","status":"ok","translations":["a","b"],"cached":[true,false],"model":"m"}"#;
        let Answer::Ok(r) = parse_reply(ok, 2, "c1").unwrap() else {
            panic!("ok reply")
        };
        assert_eq!(r.translations, ["a", "b"]);
        assert_eq!(r.cached, [true, false]);
        assert_eq!(r.id.as_deref(), Some("d"));
        assert_eq!(r.model, "m");
        assert_eq!(r.correlation_id, "c1");
        assert_eq!(r.truncated, [false, false]);
        assert_eq!(r.errors, [None, None]);
        assert!(r.is_complete());

        // One text cut, the other failed.
        let partial = br#"{"status":"ok","id":null,"translations":["a",""],"cached":[false,false],"model":"m","truncated":[true,false],"errors":[null,{"code":"internal","message":"boom"}]}"#;
        let Answer::Ok(r) = parse_reply(partial, 2, "c3").unwrap() else {
            panic!("ok reply")
        };
        assert_eq!(r.truncated, [true, false]);
        assert_eq!(
            r.errors,
            [
                None,
                Some(ErrorBody {
                    code: ErrorCode::Internal,
                    message: "boom".into()
                })
            ]
        );
        assert!(!r.is_complete());

        let err =
            br#"{"id":null,"status":"error","error":{"code":"too_large","message":"3 texts"}}"#;
        let Answer::Error(e) = parse_reply(err, 3, "c2").unwrap() else {
            panic!("error reply")
        };
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert_eq!(e.message, "3 texts");
        assert_eq!(e.id, None);
    }

    #[test]
    fn every_error_code_round_trips() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert!("nope".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn rejects_replies_off_contract() {
        for body in [
            &b"not json"[..],
            br#"{"status":"maybe"}"#,
            br#"{"status":"ok","translations":["a"]}"#,
            br#"{"status":"ok","translations":["a"],"cached":[true],"model":"m"}"#,
            br#"{"status":"ok","translations":["a","b"],"cached":[true],"model":"m"}"#,
            br#"{"status":"error","error":{"code":"new_code","message":"?"}}"#,
            br#"{"status":"ok","translations":["a","b"],"cached":[true,false],"model":"m","truncated":[true]}"#,
            br#"{"status":"ok","translations":["a","b"],"cached":[true,false],"model":"m","errors":[null]}"#,
            br#"{"status":"ok","translations":["a","b"],"cached":[true,false],"model":"m","errors":[null,{"code":"new_code","message":"?"}]}"#,
        ] {
            let r = parse_reply(body, 2, "c");
            assert!(
                matches!(r, Err(ClientError::InvalidReply(_))),
                "{}: {r:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn ok_body(texts: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": null, "status": "ok", "translations": texts,
            "cached": vec![false; texts.len()], "model": "m"
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn first_reply_wins_and_later_ones_are_ignored() {
        let shared = Shared::default();
        let rx = shared.register("a", 1).unwrap();
        assert!(shared.complete(Some("a"), ok_body(&["x"])));
        let reply = rx.await.unwrap().unwrap();
        assert!(matches!(reply.answer, Answer::Ok(ref r) if r.translations == ["x"]));
        // Duplicate (redelivery), unknown id and no id at all: dropped and counted.
        assert!(!shared.complete(Some("a"), ok_body(&["y"])));
        assert!(!shared.complete(Some("zzz"), ok_body(&["y"])));
        assert!(!shared.complete(None, ok_body(&["y"])));
        assert_eq!(shared.ignored_replies.load(Ordering::Relaxed), 3);
        assert!(shared.lock().calls.is_empty());
    }

    #[tokio::test]
    async fn a_forgotten_call_ignores_its_late_reply() {
        let shared = Shared::default();
        let rx = shared.register("t", 1).unwrap();
        {
            let _guard = PendingGuard {
                shared: &shared,
                corr: "t",
            };
        }
        assert!(rx.await.is_err(), "the sender was dropped with the entry");
        assert!(!shared.complete(Some("t"), ok_body(&["late"])));
        assert_eq!(shared.ignored_replies.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn closing_fails_pending_and_new_calls() {
        let shared = Shared::default();
        let rx1 = shared.register("1", 1).unwrap();
        let rx2 = shared.register("2", 1).unwrap();
        shared.close(Closed::Lost);
        assert!(matches!(
            rx1.await.unwrap(),
            Err(ClientError::ConnectionLost)
        ));
        assert!(matches!(
            rx2.await.unwrap(),
            Err(ClientError::ConnectionLost)
        ));
        assert!(matches!(
            shared.register("3", 1),
            Err(ClientError::ConnectionLost)
        ));
    }

    #[tokio::test]
    async fn a_wrong_count_reply_fails_its_call() {
        let shared = Shared::default();
        let rx = shared.register("n", 2).unwrap();
        assert!(shared.complete(Some("n"), ok_body(&["only one"])));
        assert!(matches!(
            rx.await.unwrap(),
            Err(ClientError::InvalidReply(_))
        ));
    }

    #[test]
    fn lanes_name_their_queues_and_routing_keys() {
        assert_eq!(Lane::default(), Lane::Bulk);
        assert_eq!(Lane::Bulk.queue("translation.jobs"), "translation.jobs");
        assert_eq!(
            Lane::Interactive.queue("translation.jobs"),
            "translation.jobs.interactive"
        );
        assert_eq!(Lane::Bulk.routing_key("ko-en"), "ko-en");
        assert_eq!(Lane::Interactive.routing_key("ko-en"), "ko-en.interactive");
        assert_eq!(Lane::Interactive.pair_of("ko-en.interactive"), "ko-en");
        assert_eq!(Lane::Interactive.pair_of("ko-en"), "ko-en");
        assert_eq!(Lane::Bulk.pair_of("ko-en.interactive"), "ko-en.interactive");
        for lane in Lane::ALL {
            assert_eq!(lane.as_str().parse::<Lane>(), Ok(lane));
            let json = serde_json::to_string(&lane).unwrap();
            assert_eq!(json, format!("\"{lane}\""));
        }
        assert!("urgent".parse::<Lane>().is_err());
        assert!(
            Lane::Interactive > Lane::Bulk,
            "the higher lane wins a merge"
        );
        // The lane is the queue: a job's bytes do not change with it.
        let bulk = TranslateRequest::new("ko", "en", ["x"]);
        let interactive = bulk.clone().with_lane(Lane::Interactive);
        assert_eq!(bulk.job.to_bytes(), interactive.job.to_bytes());
        assert_eq!(interactive.lane, Some(Lane::Interactive));
    }

    #[test]
    fn labels_use_contract_codes() {
        let e = ClientError::Rejected {
            code: ErrorCode::InvalidRequest,
            message: String::new(),
            id: None,
        };
        assert_eq!(e.label(), "invalid_request");
        assert_eq!(ClientError::Timeout(Duration::ZERO).label(), "timeout");
    }
}
