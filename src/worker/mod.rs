//! The worker: consumes jobs, answers them from the cache or the batcher, replies, acks.
//!
//! Delivery guarantee: a job is acknowledged only after its reply (or dead letter) is
//! confirmed by the broker, so a crash at any point leaves it unacknowledged and the
//! broker redelivers it (at-least-once).
//!
//! - `start`: loads the models, sets up the cache and one batcher per model.
//! - `run`: the broker session: consume with reconnects, answer and ack each
//!   delivery (through [`crate::amqp::answer`]), graceful drain.
//! - `pipeline`: one job: parse, route to a model and pair, cache, segment,
//!   translate the misses through the batcher, build the reply.

mod pipeline;
mod run;
mod start;

pub use pipeline::Outcome;
pub use start::{Worker, WorkerError};
