//! RabbitMQ: connection, idempotent topology, consuming, and confirmed publishing.

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, DefaultConnectionBuilder,
};

use translation_client::url::{redact_url, shuffled_urls};

use super::topology::{declare_queues, QueueBinding};
use crate::config::{AmqpConfig, ConfigError, QueueType, TlsPem};

/// Header set on dead-lettered jobs: the contract error code.
pub const DEAD_CODE_HEADER: &str = "x-translation-error-code";
/// Header set on dead-lettered jobs: the human-readable reason.
pub const DEAD_REASON_HEADER: &str = "x-translation-error";

/// Errors from the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting failed (the URL in the message is redacted).
    #[error("cannot connect to {url}: {source}{hint}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// lapin's error.
        source: lapin::Error,
        /// What to check, for TLS failures; empty otherwise.
        hint: &'static str,
    },
    /// The broker refused the login (`ACCESS_REFUSED`, 403) or the user's access to
    /// the vhost (`NOT_ALLOWED`, 530): a configuration error, not an outage.
    #[error(
        "the broker at {url} refused the connection: {message}. Check the user and \
         password in amqp.url (or the file amqp.url_file names) and the user's \
         permissions on the vhost"
    )]
    Refused {
        /// Redacted URL.
        url: String,
        /// The broker's reply text (it never carries the password).
        message: String,
    },
    /// The TLS files (`amqp.tls_*`) could not be read.
    #[error(transparent)]
    TlsFiles(#[from] ConfigError),
    /// Reading the TLS files on the blocking pool failed (the task panicked or the
    /// runtime is shutting down).
    #[error("reading the amqp TLS files failed: {0}")]
    TlsRead(String),
    /// A job queue or the dead-letter queue exists with other arguments than this
    /// configuration declares (another `amqp.queue_type`, delivery limit or
    /// dead-letter exchange). RabbitMQ
    /// never changes an existing queue's arguments.
    #[error(
        "queue.declare of {queue} failed: {source}. The queue exists with other arguments \
         than this worker declares ({queue_type} queue, {arguments}); RabbitMQ cannot change \
         them on an existing queue (in particular not its type): configure a new {setting} \
         name, or delete the old queue once it is drained"
    )]
    QueueMismatch {
        /// The queue.
        queue: String,
        /// The setting that names it (`amqp.queue`, `amqp.dead_letter`).
        setting: &'static str,
        /// The configured type.
        queue_type: QueueType,
        /// The arguments declared, for the message.
        arguments: String,
        /// lapin's error (PRECONDITION_FAILED).
        source: lapin::Error,
    },
    /// A topology, channel or consume operation failed.
    #[error("{op} failed: {source}")]
    Amqp {
        /// What was being done.
        op: &'static str,
        /// lapin's error.
        source: lapin::Error,
    },
    /// The broker ended the consumer (queue deleted, channel or connection closed).
    #[error("the broker closed the consumer")]
    ConsumerClosed,
    /// The broker refused (nacked) a published message.
    #[error("broker nacked the message published to {0}")]
    Nacked(String),
    /// The broker did not confirm a publish in time.
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(Duration),
}

impl BrokerError {
    /// Whether the broker refused the login or the vhost (see [`BrokerError::Refused`]).
    pub fn is_refused(&self) -> bool {
        matches!(self, BrokerError::Refused { .. })
    }
}

/// The broker's reply text when `err` is a refused login (403) or vhost (530).
fn refusal(err: &lapin::Error) -> Option<String> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) if matches!(e.get_id(), 403 | 530) => {
            Some(e.to_string())
        }
        _ => None,
    }
}

pub(super) fn amqp(op: &'static str) -> impl FnOnce(lapin::Error) -> BrokerError {
    move |source| BrokerError::Amqp { op, source }
}

/// How long to wait for a publisher confirm before treating the publish as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// One live broker connection with a consuming and a publishing channel.
///
/// Publishing uses its own channel in confirm mode so that a flow-controlled or slow
/// publish never delays deliveries or acks on the consuming channel.
pub struct Session {
    /// The connection (closed on drop by lapin).
    pub connection: Connection,
    /// Channel with the consumer and its acks.
    pub consume: Channel,
    /// Channel in confirm mode for replies and dead letters.
    pub publish: Channel,
}

/// The lapin TLS settings for `pem`: extra roots (added to the system roots) and a
/// client identity for mutual TLS.
pub fn tls_config(pem: TlsPem) -> OwnedTLSConfig {
    let identity = match (pem.client_cert, pem.client_key) {
        // `PKCS8` is lapin's name for "PEM certificate + PEM key"; rustls accepts PKCS#8,
        // PKCS#1 and SEC1 keys there.
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 { pem: cert, key }),
        _ => None,
    };
    OwnedTLSConfig {
        identity,
        cert_chain: pem.ca,
    }
}

/// Connects to `cfg.url`, which may list several nodes of one RabbitMQ cluster
/// (comma-separated): they are tried in random order, so that workers and gateways
/// spread over the nodes and a dead node is passed over at once; the node connected
/// to is logged (password redacted). A refused login or vhost stops at the node that
/// refused (every node has the same users).
///
/// For `amqps://` the server certificate must chain to the system roots
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured) or to `amqp.tls_ca_file`, and
/// `amqp.tls_cert_file`/`tls_key_file` are presented when set. The TLS files are read
/// again at every connect (on the blocking pool), so rotated certificates are picked up
/// by the next reconnect. Errors show the URL redacted.
pub async fn connect(
    cfg: &AmqpConfig,
    props: ConnectionProperties,
) -> Result<Connection, BrokerError> {
    let files = cfg.tls_files();
    let tls = if files.any_set() {
        let pem = tokio::task::spawn_blocking(move || files.read())
            .await
            .map_err(|e| BrokerError::TlsRead(e.to_string()))??;
        tls_config(pem)
    } else {
        OwnedTLSConfig::default()
    };
    let mut nodes = shuffled_urls(&cfg.url);
    let several = nodes.len() > 1;
    // The last node's result is the answer; validation refuses an empty list, and lapin
    // says what is wrong with one anyway.
    let last = nodes.pop().unwrap_or(&cfg.url);
    for node in nodes {
        match connect_node(node, props.clone(), tls.clone()).await {
            Ok(connection) => {
                tracing::info!(node = %redact_url(node), "connected to broker node");
                return Ok(connection);
            }
            Err(e) if e.is_refused() => return Err(e),
            Err(e) => tracing::warn!(error = %e, "broker node unavailable; trying the next"),
        }
    }
    let connection = connect_node(last, props, tls).await?;
    if several {
        tracing::info!(node = %redact_url(last), "connected to broker node");
    }
    Ok(connection)
}

/// Connects to one node.
async fn connect_node(
    url: &str,
    props: ConnectionProperties,
    tls: OwnedTLSConfig,
) -> Result<Connection, BrokerError> {
    let connect_err = |source: lapin::Error| {
        if let Some(message) = refusal(&source) {
            return BrokerError::Refused {
                url: redact_url(url),
                message,
            };
        }
        let hint = if url.starts_with("amqps://") && mentions_tls(&source.to_string()) {
            " (TLS: the broker's certificate must chain to amqp.tls_ca_file or the system \
             roots, SSL_CERT_FILE, and name the URL's host)"
        } else {
            ""
        };
        BrokerError::Connect {
            url: redact_url(url),
            source,
            hint,
        }
    };
    DefaultConnectionBuilder::new()
        .map_err(connect_err)?
        .with_uri_str(url.to_owned())
        .with_properties(props)
        .with_tls_config(tls)
        .connect()
        .await
        .map_err(connect_err)
}

/// Whether an error message is about the TLS handshake or a certificate.
fn mentions_tls(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer", "peer"]
        .iter()
        .any(|w| m.contains(w))
}

impl Session {
    /// Connects (see [`connect`]), declares the topology (idempotently) and sets the
    /// prefetch.
    pub async fn open(cfg: &AmqpConfig, routing_keys: &[String]) -> Result<Self, BrokerError> {
        Self::open_queues(
            cfg,
            &[QueueBinding {
                queue: cfg.queue.clone(),
                routing_keys: routing_keys.to_vec(),
            }],
        )
        .await
    }

    /// Like [`Session::open`], declaring every queue of `bindings` (a worker with
    /// several models consumes one queue per model). The prefetch applies to each
    /// consumer on the channel separately.
    pub async fn open_queues(
        cfg: &AmqpConfig,
        bindings: &[QueueBinding],
    ) -> Result<Self, BrokerError> {
        let props =
            ConnectionProperties::default().with_connection_name("translation-worker".into());
        let connection = connect(cfg, props).await?;
        let publish = connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("confirm.select"))?;
        declare_queues(&publish, cfg, bindings).await?;
        let consume = connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))?;
        consume
            .basic_qos(cfg.prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp("basic.qos"))?;
        Ok(Self {
            connection,
            consume,
            publish,
        })
    }

    /// Starts consuming the job queue with manual acks.
    pub async fn consume(&self, queue: &str, tag: &str) -> Result<Consumer, BrokerError> {
        self.consume
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("basic.consume"))
    }

    /// Publishes `body` to `exchange`/`routing_key` and waits for the broker's confirm.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        publish_on(&self.publish, exchange, routing_key, body, properties).await
    }

    /// Publishes a reply to `reply_to` through the default exchange.
    pub async fn reply(
        &self,
        reply_to: &str,
        correlation_id: Option<&ShortString>,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let props = reply_properties(correlation_id);
        self.publish_confirmed("", reply_to, body, props).await
    }

    /// Like [`Session::reply`], on a confirm channel opened for this one reply and
    /// closed after. A channel keeps per-queue state at the broker; after a replicated
    /// queue's leader died, RabbitMQ 3.10 was seen nacking every publish to it on the
    /// worker's long-lived channel (the cluster drill, docs/reliability.md), and a new
    /// channel starts without that state. (That it clears those nacks is not yet
    /// observed: the drill fails if a reply is still given up.)
    pub async fn reply_on_fresh_channel(
        &self,
        reply_to: &str,
        correlation_id: Option<&ShortString>,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))?;
        let sent = async {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(amqp("confirm.select"))?;
            let props = reply_properties(correlation_id);
            publish_on(&channel, "", reply_to, body, props).await
        }
        .await;
        let _ = channel.close(200, "reply sent".into()).await;
        sent
    }

    /// Sends an unanswerable job (no `reply_to`) to the dead-letter exchange with
    /// headers saying why, keeping its original properties.
    pub async fn dead_letter(
        &self,
        cfg: &AmqpConfig,
        queue: &str,
        body: &[u8],
        original: &BasicProperties,
        code: &str,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut headers = original.headers().clone().unwrap_or_default();
        headers.insert(DEAD_CODE_HEADER.into(), AMQPValue::LongString(code.into()));
        headers.insert(
            DEAD_REASON_HEADER.into(),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            "x-original-queue".into(),
            AMQPValue::LongString(queue.into()),
        );
        let props = original.clone().with_headers(headers).with_delivery_mode(2);
        self.publish_confirmed(&cfg.dead_letter, "", body, props)
            .await
    }

    /// Closes channels and connection politely (errors are irrelevant at this point).
    pub async fn close(&self) {
        let _ = self.consume.close(200, "shutdown".into()).await;
        let _ = self.publish.close(200, "shutdown".into()).await;
        let _ = self.connection.close(200, "shutdown".into()).await;
    }
}

/// The properties of a reply: JSON, persistent (a durable reply queue keeps replies
/// across a broker restart), with the job's correlation id.
fn reply_properties(correlation_id: Option<&ShortString>) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    match correlation_id {
        Some(c) => props.with_correlation_id(c.clone()),
        None => props,
    }
}

/// Publishes on `channel` (in confirm mode) and waits for the broker's confirm.
async fn publish_on(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BrokerError> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .map_err(amqp("basic.publish"))?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| BrokerError::ConfirmTimeout(CONFIRM_TIMEOUT))?
        .map_err(amqp("publisher confirm"))?;
    if confirmation.is_nack() {
        return Err(BrokerError::Nacked(format!("{exchange}/{routing_key}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_map_to_lapin() {
        assert_eq!(tls_config(TlsPem::default()), OwnedTLSConfig::default());
        let pem = TlsPem {
            ca: Some("CA".into()),
            client_cert: Some(b"CERT".to_vec()),
            client_key: Some(b"KEY".to_vec()),
        };
        let tls = tls_config(pem);
        assert_eq!(tls.cert_chain.as_deref(), Some("CA"));
        assert_eq!(
            tls.identity,
            Some(OwnedIdentity::PKCS8 {
                pem: b"CERT".to_vec(),
                key: b"KEY".to_vec()
            })
        );
        assert!(mentions_tls(
            "IO error: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!mentions_tls("IO error: Connection refused (os error 111)"));
    }

    #[tokio::test]
    async fn connect_errors_name_the_tls_file_key_and_hide_the_password() {
        let cfg = AmqpConfig {
            url: "amqps://u:hidden-pw@127.0.0.1:1/%2f".into(),
            tls_ca_file: "/no/such/ca.pem".into(),
            ..AmqpConfig::default()
        };
        let e = connect(&cfg, ConnectionProperties::default())
            .await
            .expect_err("missing CA file")
            .to_string();
        assert!(
            e.contains("amqp.tls_ca_file") && e.contains("/no/such/ca.pem"),
            "{e}"
        );
        let cfg = AmqpConfig {
            url: "amqp://u:hidden-pw@127.0.0.1:1/%2f".into(),
            ..AmqpConfig::default()
        };
        let e = connect(&cfg, ConnectionProperties::default())
            .await
            .expect_err("nothing listens on port 1")
            .to_string();
        assert!(e.contains("amqp://u:***@127.0.0.1:1/%2f"), "{e}");
        assert!(!e.contains("hidden-pw"), "{e}");
    }
}
