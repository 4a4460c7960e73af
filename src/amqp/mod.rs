//! RabbitMQ, shared by the worker, the `echo` tool and the gateway: the connection
//! (`session`: TLS, login, channels, confirmed publishing), the idempotent topology
//! (`topology`), the one consume → reply → ack path (`consume`), and the Rust client
//! on a worker's `amqp` settings (`client`). Reconnect delays come from
//! [`translation_client::backoff`], shared with the client crate.

mod client;
mod consume;
mod session;
mod topology;

pub use client::{connect_client, ClientSetupError};
pub use consume::{
    answer, consume_on_until, consume_until, prefetch_channel, ConsumeOn, DeadLetter,
};
pub use session::{
    connect, tls_config, BrokerError, Session, DEAD_CODE_HEADER, DEAD_REASON_HEADER,
};
pub use topology::{
    declare_queues, declare_topology, is_precondition_failed, job_queue_arguments, QueueBinding,
};
