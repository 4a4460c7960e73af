//! Operator tools shipped in the worker binary: `bench-engine` (the engine's own
//! ceiling), `loadgen` (load through the broker) and `echo` (a model-free consumer:
//! the broker's ceiling).
//!
//! Each takes a plain options struct; the command line that fills them (flags, their
//! defaults and environment variables) is the binary's (`src/cli/`), so the library
//! does not depend on how it is called.

pub mod bench;
pub mod echo;
pub mod loadgen;

use translation_client::{DEFAULT_AMQP_URL, DEFAULT_EXCHANGE};

/// Broker address and exchange, shared by the client tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// AMQP URI of the broker.
    pub amqp_url: String,
    /// Exchange jobs are published to, with routing key `<source>-<target>`.
    pub exchange: String,
}

impl Default for ConnectOptions {
    /// The local broker and the worker's default exchange.
    fn default() -> Self {
        Self {
            amqp_url: DEFAULT_AMQP_URL.into(),
            exchange: DEFAULT_EXCHANGE.into(),
        }
    }
}
