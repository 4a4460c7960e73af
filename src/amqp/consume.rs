//! One consume → reply → ack path for everything that answers jobs (the worker and the
//! `echo` tool), so that both keep the same delivery guarantee: a job is acked only
//! after its reply (or dead letter) is confirmed by the broker; a publish that is not
//! confirmed requeues it.

use std::future::Future;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio_util::sync::CancellationToken;
use translation_client::wire::Reply;

use super::session::{amqp, BrokerError, Session};
use crate::config::AmqpConfig;

/// Consumes `queues` until `shutdown` (`Ok`) or until the connection fails (`Err`),
/// handing each delivery to `on_delivery` with the index of its queue. Each queue has
/// its own consumer, so each gets its own prefetch window: at most `prefetch`
/// deliveries per queue are unacked, which bounds what `on_delivery` is handed.
///
/// `started` runs once every consumer is up; `stopping` runs on shutdown, before the
/// consumers are cancelled. Deliveries the broker already pushed but that were never
/// read stay unacked and are redelivered when the connection closes.
pub async fn consume_until(
    session: &Session,
    queues: &[&str],
    shutdown: &CancellationToken,
    started: impl FnOnce(),
    stopping: impl FnOnce(),
    on_delivery: impl FnMut(usize, Delivery),
) -> Result<(), BrokerError> {
    let on: Vec<ConsumeOn<'_>> = queues
        .iter()
        .map(|queue| ConsumeOn {
            queue,
            channel: &session.consume,
        })
        .collect();
    consume_on_until(&on, shutdown, started, stopping, on_delivery).await
}

/// A queue to consume, and the channel (so the prefetch window) it is consumed on.
pub struct ConsumeOn<'a> {
    /// Queue name.
    pub queue: &'a str,
    /// Channel of the consumer and its acks; it must stay open until every delivery
    /// handed out is settled (the caller keeps it through the drain).
    pub channel: &'a Channel,
}

/// A consuming channel of its own on `session`'s connection, with a prefetch window of
/// `prefetch` deliveries per consumer: the worker's interactive lanes, so that bulk
/// deliveries can never fill the window interactive jobs need.
pub async fn prefetch_channel(session: &Session, prefetch: u16) -> Result<Channel, BrokerError> {
    let channel = session
        .connection
        .create_channel()
        .await
        .map_err(amqp("channel.open (lane)"))?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(amqp("basic.qos (lane)"))?;
    Ok(channel)
}

/// Like [`consume_until`], each queue on the channel given with it.
pub async fn consume_on_until(
    queues: &[ConsumeOn<'_>],
    shutdown: &CancellationToken,
    started: impl FnOnce(),
    stopping: impl FnOnce(),
    mut on_delivery: impl FnMut(usize, Delivery),
) -> Result<(), BrokerError> {
    let mut tags = Vec::with_capacity(queues.len());
    let mut streams = Vec::with_capacity(queues.len());
    for (i, on) in queues.iter().enumerate() {
        let consumer = on
            .channel
            .basic_consume(
                on.queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("basic.consume"))?;
        tags.push((on.channel, consumer.tag()));
        streams.push(consumer.map(move |d| (i, d)).boxed());
    }
    let mut deliveries = futures_util::stream::select_all(streams);
    started();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                stopping();
                for (channel, tag) in &tags {
                    let _ = channel
                        .basic_cancel(tag.clone(), BasicCancelOptions::default())
                        .await;
                }
                return Ok(());
            }
            next = deliveries.next() => match next {
                Some((queue, Ok(delivery))) => on_delivery(queue, delivery),
                Some((_, Err(source))) => {
                    return Err(BrokerError::Amqp { op: "consume", source });
                }
                None => return Err(BrokerError::ConsumerClosed),
            }
        }
    }
}

/// Publishes of one reply the broker may nack before it is given up (the reply queue
/// is taken to be full, `x-overflow: reject-publish`). Nacks are not always final:
/// after a replicated reply queue's leader died, RabbitMQ 3.10 nacked every reply on
/// the worker's long-lived publish channel (the cluster drill, docs/reliability.md),
/// and dropping those replies lost answered jobs. So the second and third tries go out
/// on a fresh channel each, after 0.3 s and 0.9 s; a full queue costs each refused job
/// only that. A reply reported nacked that the broker had enqueued after all (seen
/// among a full queue's refusals on the shared channel) arrives twice: a duplicate,
/// which at-least-once delivery allows.
const REPLY_NACK_ATTEMPTS: u32 = 3;
/// Wait before the second try; tripled before each next one.
const REPLY_NACK_BACKOFF: std::time::Duration = std::time::Duration::from_millis(300);

/// Where a job that cannot be answered (an error reply and no `reply_to`) is parked.
pub struct DeadLetter<'a> {
    /// The `amqp` settings (the dead-letter exchange).
    pub cfg: &'a AmqpConfig,
    /// The queue the job came from (recorded in a header).
    pub queue: &'a str,
}

/// Answers one delivery and settles it: publishes `reply` to the job's `reply_to`
/// with a publisher confirm (with no `reply_to`: an error reply is dead-lettered when
/// `dead_letter` is given, anything else needs no message), runs `alongside` at the
/// same time (the worker's cache store), then acks. A publish the broker does not
/// confirm requeues the job instead. Returns whether the job was acked.
pub async fn answer(
    session: &Session,
    delivery: &Delivery,
    reply: &Reply,
    dead_letter: Option<DeadLetter<'_>>,
    alongside: impl Future<Output = ()>,
) -> bool {
    let reply_to = delivery
        .properties
        .reply_to()
        .as_ref()
        .filter(|r| !r.as_str().is_empty());
    let publish = async {
        match (reply_to, reply, dead_letter) {
            (Some(rt), r, _) => {
                let body = r.to_bytes();
                let corr = delivery.properties.correlation_id().as_ref();
                let mut sent = session.reply(rt.as_str(), corr, &body).await;
                let mut backoff = REPLY_NACK_BACKOFF;
                for _ in 1..REPLY_NACK_ATTEMPTS {
                    if !matches!(sent, Err(BrokerError::Nacked(_))) {
                        break;
                    }
                    // A nack may be transient (see REPLY_NACK_ATTEMPTS): try again, on
                    // a channel of its own, before giving the reply up.
                    tracing::warn!("reply nacked; retrying on a fresh channel");
                    tokio::time::sleep(backoff).await;
                    backoff *= 3;
                    sent = session
                        .reply_on_fresh_channel(rt.as_str(), corr, &body)
                        .await;
                }
                sent
            }
            // Nobody to tell: park it in the dead-letter queue with the reason.
            (None, Reply::Error { error, .. }, Some(dl)) => {
                session
                    .dead_letter(
                        dl.cfg,
                        dl.queue,
                        &delivery.data,
                        &delivery.properties,
                        error.code.as_str(),
                        &error.message,
                    )
                    .await
            }
            // Cache warming (translated and stored), or a tool that keeps no dead
            // letters: nothing to send.
            (None, _, _) => Ok(()),
        }
    };
    let (published, ()) = tokio::join!(publish, alongside);
    let done = match published {
        Ok(()) => true,
        // The reply queue refused the reply every time (full, with `x-overflow:
        // reject-publish`): like a deleted reply queue, the client cannot take it.
        // Requeueing would redeliver the job at once and loop for as long as the queue
        // stays full.
        Err(e @ BrokerError::Nacked(_)) if reply_to.is_some() => {
            tracing::warn!(error = %e, "reply refused by its queue; dropped");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "reply not confirmed; requeueing the job");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            false
        }
    };
    if done {
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            // The channel is gone: the broker will redeliver (a duplicate reply).
            tracing::warn!(error = %e, "ack failed");
        }
    }
    done
}
