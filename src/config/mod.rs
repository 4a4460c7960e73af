//! Configuration: a TOML file overlaid by `TW_<SECTION>__<KEY>` environment variables.
//!
//! Every key has a default, so an empty file (or none) is a valid configuration for
//! this machine: local RabbitMQ and Redis and the bundled copy test model. Start-up
//! fails with a message naming the offending key when a value is missing its mark.
//!
//! One file per section, each with its type, its defaults and its own `validate`:
//! [`amqp`](AmqpConfig), [`redis`](RedisConfig), [`model`](ModelConfig) (also each
//! `[[models]]` entry), [`batch`](BatchConfig), `limits`, and the service sections
//! [`http`](HttpConfig), [`gateway`](GatewayConfig), [`shutdown`](ShutdownConfig) and
//! [`log`](LogConfig). `load`: [`Config`], loading (file, environment overlay, secret
//! files), [`Config::validate`] (the sections, then what spans them) and what is
//! derived from the whole (advisories, the effective TOML, queues, thread counts).

mod amqp;
mod batch;
mod cpus;
mod limits;
mod load;
mod model;
mod overlay;
mod redis;
mod service;
mod tls;

#[cfg(test)]
mod tests;

pub use self::amqp::{AmqpConfig, QueueType};
pub use self::batch::BatchConfig;
pub use self::cpus::{available_cpus, cgroup_cpu_quota};
pub use self::load::{Config, ConfigError, CONFIG_FILE_ENV, ENV_PREFIX};
pub use self::model::{parse_compute_type, Device, ModelConfig, COMPUTE_TYPES};
pub use self::redis::{RedisConfig, RedisMode};
pub use self::service::{GatewayConfig, HttpConfig, LogConfig, LogFormat, ShutdownConfig};
pub use self::tls::{TlsFiles, TlsPem};
pub use crate::translate::LanguageTokens;
pub use translation_client::wire::Limits;

// The check every section's `validate` uses.
use self::load::check;
