//! The broker topology, declared idempotently by every worker at connect: the jobs
//! exchange, one queue per model bound by language pair (and, for the interactive
//! lane, `<queue>.interactive` bound by `<pair>.interactive`: see
//! [`QueueBinding::in_lane`]), the dead-letter exchange and queue.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::session::{amqp, BrokerError};
use crate::config::{AmqpConfig, QueueType};
use translation_client::Lane;

/// Declares exchanges, queues and bindings. Safe to repeat: declarations with the same
/// arguments are no-ops. A queue that exists with other arguments (e.g. declared by
/// hand without the dead-letter exchange) makes the broker refuse with
/// PRECONDITION_FAILED; the error says so.
pub async fn declare_topology(
    ch: &Channel,
    cfg: &AmqpConfig,
    routing_keys: &[String],
) -> Result<(), BrokerError> {
    declare_queues(
        ch,
        cfg,
        &[QueueBinding {
            queue: cfg.queue.clone(),
            routing_keys: routing_keys.to_vec(),
        }],
    )
    .await
}

/// A job queue and the routing keys (language pairs) bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBinding {
    /// Queue name.
    pub queue: String,
    /// Routing keys on the jobs exchange, `source-target`.
    pub routing_keys: Vec<String>,
}

impl QueueBinding {
    /// The same binding in `lane`: the lane's queue, bound by the lane's routing keys.
    /// The interactive lane cannot share the bulk keys: a direct exchange delivers a
    /// message to every queue bound by its key, so each job would be queued twice.
    pub fn in_lane(&self, lane: Lane) -> QueueBinding {
        QueueBinding {
            queue: lane.queue(&self.queue),
            routing_keys: self
                .routing_keys
                .iter()
                .map(|k| lane.routing_key(k))
                .collect(),
        }
    }
}

/// Like [`declare_topology`] for several job queues, each with its own keys.
pub async fn declare_queues(
    ch: &Channel,
    cfg: &AmqpConfig,
    bindings: &[QueueBinding],
) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        cfg.exchange.as_str().into(),
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await
    .map_err(amqp("exchange.declare (jobs)"))?;
    ch.exchange_declare(
        cfg.dead_letter.as_str().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await
    .map_err(amqp("exchange.declare (dead letters)"))?;
    declare_durable(
        ch,
        cfg,
        &cfg.dead_letter,
        "amqp.dead_letter",
        dead_letter_queue_arguments(cfg),
        "queue.declare (dead letters)",
    )
    .await?;
    ch.queue_bind(
        cfg.dead_letter.as_str().into(),
        cfg.dead_letter.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(amqp("queue.bind (dead letters)"))?;
    let arguments = job_queue_arguments(cfg);
    for b in bindings {
        declare_durable(
            ch,
            cfg,
            &b.queue,
            "amqp.queue",
            arguments.clone(),
            "queue.declare (jobs)",
        )
        .await?;
        for key in &b.routing_keys {
            ch.queue_bind(
                b.queue.as_str().into(),
                cfg.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("queue.bind (jobs)"))?;
        }
    }
    Ok(())
}

/// Declares the durable queue `queue` (named by the setting `setting`) with
/// `arguments`; a queue that exists with others is a [`BrokerError::QueueMismatch`]
/// that says what to change.
async fn declare_durable(
    ch: &Channel,
    cfg: &AmqpConfig,
    queue: &str,
    setting: &'static str,
    arguments: FieldTable,
    op: &'static str,
) -> Result<(), BrokerError> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::durable(),
        arguments.clone(),
    )
    .await
    .map_err(|source| {
        if is_precondition_failed(&source) {
            BrokerError::QueueMismatch {
                queue: queue.to_string(),
                setting,
                queue_type: cfg.queue_type,
                arguments: describe_arguments(&arguments),
                source,
            }
        } else {
            BrokerError::Amqp { op, source }
        }
    })?;
    Ok(())
}

/// Arguments of the job queue: messages rejected by the broker (e.g. expired) go to the
/// dead-letter exchange. A quorum queue (`x-queue-type`) also gets `x-delivery-limit`:
/// a job delivered that many times without an ack (every worker that took it crashed
/// or lost its connection) is dead-lettered instead of redelivered forever.
pub fn job_queue_arguments(cfg: &AmqpConfig) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(cfg.dead_letter.as_str().into()),
    );
    match cfg.queue_type {
        QueueType::Classic => {}
        QueueType::Quorum => {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(cfg.delivery_limit)),
            );
        }
    }
    args
}

/// Arguments of the dead-letter queue: of the job queues' type. A classic queue lives
/// on one node; on a cluster, while that node is down, RabbitMQ refuses its
/// `queue.declare`, which would keep every worker from opening its session on the
/// surviving nodes (found by the cluster drill, tests/cluster.rs). A quorum
/// dead-letter queue lives on every node like the job queues.
pub fn dead_letter_queue_arguments(cfg: &AmqpConfig) -> FieldTable {
    let mut args = FieldTable::default();
    match cfg.queue_type {
        QueueType::Classic => {}
        QueueType::Quorum => {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
    }
    args
}

/// Whether the broker refused a declaration as PRECONDITION_FAILED (406): the entity
/// exists with other properties or arguments.
pub fn is_precondition_failed(err: &lapin::Error) -> bool {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => e.get_id() == 406,
        _ => false,
    }
}

/// `key=value, ...` of queue arguments, for error messages.
fn describe_arguments(args: &FieldTable) -> String {
    args.inner()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                AMQPValue::LongString(s) => s.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg<'a>(args: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
        args.inner().get(key)
    }

    #[test]
    fn classic_job_queue_has_only_the_dead_letter_exchange() {
        let cfg = AmqpConfig::default();
        let args = job_queue_arguments(&cfg);
        assert_eq!(args.inner().len(), 1);
        assert_eq!(
            arg(&args, "x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("translation.dead".into()))
        );
        assert_eq!(arg(&args, "x-queue-type"), None);
        assert_eq!(arg(&args, "x-delivery-limit"), None);
    }

    #[test]
    fn the_interactive_lane_has_its_own_queue_and_keys() {
        let bulk = QueueBinding {
            queue: "translation.jobs".into(),
            routing_keys: vec!["ko-en".into(), "en-ko".into()],
        };
        assert_eq!(bulk.in_lane(Lane::Bulk), bulk);
        assert_eq!(
            bulk.in_lane(Lane::Interactive),
            QueueBinding {
                queue: "translation.jobs.interactive".into(),
                routing_keys: vec!["ko-en.interactive".into(), "en-ko.interactive".into()],
            }
        );
    }

    #[test]
    fn dead_letter_queue_is_of_the_job_queues_type() {
        let classic = dead_letter_queue_arguments(&AmqpConfig::default());
        assert!(classic.inner().is_empty());
        let quorum = dead_letter_queue_arguments(&AmqpConfig {
            queue_type: QueueType::Quorum,
            ..AmqpConfig::default()
        });
        assert_eq!(quorum.inner().len(), 1);
        assert_eq!(
            arg(&quorum, "x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
    }

    #[test]
    fn quorum_job_queue_has_type_and_delivery_limit() {
        let cfg = AmqpConfig {
            queue_type: QueueType::Quorum,
            delivery_limit: 7,
            ..AmqpConfig::default()
        };
        let args = job_queue_arguments(&cfg);
        assert_eq!(args.inner().len(), 3);
        assert_eq!(
            arg(&args, "x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("translation.dead".into()))
        );
        assert_eq!(
            arg(&args, "x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            arg(&args, "x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(7))
        );
        let text = describe_arguments(&args);
        assert!(text.contains("x-queue-type=quorum"), "{text}");
        assert!(text.contains("x-delivery-limit=7"), "{text}");
    }
}
