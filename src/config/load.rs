//! [`Config`], the whole file: loading (file, environment overlay, secret files),
//! validation (the sections, then what spans them) and what is derived from the whole.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use translation_client::url::redact_url;

use super::overlay;
use super::*;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "TW_";
/// The variable naming the configuration file (`--config`), read by the command line,
/// not a `TW_<SECTION>__<KEY>` setting.
pub const CONFIG_FILE_ENV: &str = "TW_CONFIG";

/// Errors met while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML. The message names the line and column but never
    /// quotes the line: it may hold a password.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file named on the command line.
        path: PathBuf,
        /// The parser's message and the position of the error.
        message: String,
    },
    /// A file named by a key (`*.url_file`, `*.tls_*_file`) cannot be read or holds
    /// the wrong thing. The message never includes the file's contents.
    #[error("{key} = {path}: {message}")]
    File {
        /// Dotted key, e.g. `amqp.url_file`.
        key: &'static str,
        /// The file it names.
        path: PathBuf,
        /// What is wrong (the I/O error, or what the file lacks).
        message: String,
    },
    /// An environment variable names no known key or holds a value of the wrong type.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable, e.g. `TW_AMQP__PREFETCH`.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A key is unknown or has the wrong type.
    #[error("invalid configuration: {0}")]
    Shape(String),
    /// A value is out of its allowed range.
    #[error("invalid configuration: {key} {message}")]
    Invalid {
        /// Dotted key, e.g. `batch.max_batch_size`, or `models[1].device` for an entry
        /// of the model list.
        key: Cow<'static, str>,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole worker configuration. See `config/default.toml` for every key documented.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// RabbitMQ connection and topology.
    pub amqp: AmqpConfig,
    /// Redis translation cache.
    pub redis: RedisConfig,
    /// The CTranslate2 model and how it runs (when `models` is empty).
    pub model: ModelConfig,
    /// Several models in one worker, each serving its own language pairs from its own
    /// queue; when non-empty, `model` is ignored. Set in the TOML file (`[[models]]`).
    pub models: Vec<ModelConfig>,
    /// Dynamic batching policy.
    pub batch: BatchConfig,
    /// Limits on what a job may carry.
    pub limits: Limits,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Health and metrics HTTP listener.
    pub http: HttpConfig,
    /// The HTTP gateway (`translation-worker gateway`).
    pub gateway: GatewayConfig,
}

impl Config {
    /// Loads `path` (or defaults when `None`), overlays the process environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_sources(&text, path, std::env::vars())
    }

    /// Builds a configuration from TOML text and `(name, value)` environment pairs.
    pub fn from_sources(
        toml_text: &str,
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file: toml::Table = toml::from_str(toml_text).map_err(|e| ConfigError::Syntax {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            message: overlay::syntax_message(toml_text, &e),
        })?;
        // Start from the defaults so env overrides know each key's type.
        let mut table = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Shape(e.to_string()))?;
        overlay::merge(&mut table, file, "")?;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != CONFIG_FILE_ENV)
            .collect();
        vars.sort();
        for (var, value) in vars {
            overlay::apply_env(&mut table, &var, &value)?;
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Shape(e.to_string()))?;
        config.read_url_files()?;
        config.validate()?;
        // Read the TLS files now, so a missing or wrong one stops the start-up with a
        // message naming its key (the broker and the cache read them again to connect).
        config.amqp.tls_files().read()?;
        config.redis.tls_files().read()?;
        Ok(config)
    }

    /// Replaces `amqp.url` / `redis.url` by the trimmed contents of `*.url_file` where
    /// set (credentials mounted as files, e.g. a Kubernetes Secret volume).
    fn read_url_files(&mut self) -> Result<(), ConfigError> {
        for (key, file, url) in [
            ("amqp.url_file", &self.amqp.url_file, &mut self.amqp.url),
            ("redis.url_file", &self.redis.url_file, &mut self.redis.url),
        ] {
            if !file.as_os_str().is_empty() {
                *url = tls::read_url_file(key, file)?;
            }
        }
        Ok(())
    }

    /// Checks ranges and relations that types alone do not express: each section on
    /// its own (its `validate`), then the checks that need two sections. The first
    /// error stops it; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.amqp.validate()?;
        self.redis.validate()?;
        self.validate_models()?;
        self.http.validate()?;
        self.gateway.validate()?;
        // A gateway allowing more texts than the workers would accept requests that
        // every worker then refuses.
        check(
            self.gateway.max_texts <= self.limits.max_texts,
            "gateway.max_texts",
            &format!(
                "({}) must not exceed limits.max_texts ({}): the gateway would accept \
                 requests every worker refuses. Lower it, or raise limits.max_texts (the \
                 gateway and the workers read the same setting)",
                self.gateway.max_texts, self.limits.max_texts
            ),
        )?;
        self.batch.validate()?;
        limits::validate(&self.limits)?;
        self.shutdown.validate()?;
        self.log.validate()
    }

    /// Checks the models served: `[model]` alone, or every `[[models]]` entry (then
    /// `[model]` is ignored, so it is not checked either), each as `models[i].<key>`
    /// with the model's id; and that no two entries serve the same pair (its jobs
    /// would go to either model) or consume the same queue (each model would take jobs
    /// only the other serves).
    fn validate_models(&self) -> Result<(), ConfigError> {
        if self.models.is_empty() {
            return self.model.validate();
        }
        let mut pairs_seen = HashSet::new();
        let mut queues_seen = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            m.validate_as(&format!("models[{i}]"))
                .map_err(|e| e.of_model(&m.model_id()))?;
            for (s, t) in m.served_pairs() {
                check(
                    pairs_seen.insert((s.clone(), t.clone())),
                    "models",
                    &format!("pair {s}-{t} is served by two models; each pair needs one"),
                )?;
            }
            let queue = self.queue_for(m);
            check(
                queues_seen.insert(queue.clone()),
                "models",
                &format!("two models consume queue {queue:?}; give each its own `queue`"),
            )?;
        }
        Ok(())
    }

    /// Most texts per gateway request: `gateway.max_texts`, or the workers'
    /// `limits.max_texts` when it is 0. A gateway allowing more than the workers would
    /// accept requests they all refuse, so validation refuses that.
    pub fn gateway_max_texts(&self) -> usize {
        match self.gateway.max_texts {
            0 => self.limits.max_texts,
            n => n,
        }
    }

    /// Settings that are valid but work against each other, as plain warnings: the
    /// worker logs each at start-up and `check-config` prints them. Not errors: a
    /// small `amqp.prefetch` is right for jobs of many texts (prefetch counts jobs,
    /// batches count texts), it only starves the batcher on one-text jobs.
    pub fn advisories(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some((id, replicas)) = self
            .model_list()
            .iter()
            .map(|m| (m.model_id(), m.threading().0))
            .max_by_key(|(_, replicas)| *replicas)
        else {
            return out;
        };
        let wanted = 2 * self.batch.max_batch_size * replicas;
        if usize::from(self.amqp.prefetch) < wanted {
            out.push(format!(
                "amqp.prefetch = {} is below 2 × batch.max_batch_size × replicas = {wanted} \
                 (model {id}, {replicas} replicas): one-text jobs cannot fill a batch, so \
                 throughput falls (docs/benchmarks.md); jobs of many texts need fewer. \
                 Raise amqp.prefetch, or lower batch.max_batch_size",
                self.amqp.prefetch
            ));
        }
        out
    }

    /// The effective configuration as TOML, URLs redacted, for `check-config`. With
    /// `[[models]]` the single `[model]` section is ignored, so it is left out.
    pub fn effective_toml(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        shown.amqp.url = redact_url(&shown.amqp.url);
        shown.redis.url = redact_url(&shown.redis.url);
        let mut value =
            toml::Value::try_from(&shown).map_err(|e| ConfigError::Shape(e.to_string()))?;
        if !self.models.is_empty() {
            if let Some(table) = value.as_table_mut() {
                table.remove("model");
            }
        }
        toml::to_string(&value).map_err(|e| ConfigError::Shape(e.to_string()))
    }

    /// Every `(source, target)` language pair this configuration serves, in order.
    pub fn served_pairs(&self) -> Vec<(String, String)> {
        self.model_list()
            .into_iter()
            .flat_map(ModelConfig::served_pairs)
            .collect()
    }

    /// The models this worker serves: `models`, or the single `model`.
    pub fn model_list(&self) -> Vec<&ModelConfig> {
        if self.models.is_empty() {
            vec![&self.model]
        } else {
            self.models.iter().collect()
        }
    }

    /// Jobs that tokenize (or segment) at once: one per inference thread of the
    /// largest model. More would not run faster on the same CPUs, and each holds a
    /// text's every token while encoding it (`docs/reliability.md`).
    pub fn tokenize_threads(&self) -> usize {
        self.model_list()
            .iter()
            .map(|m| m.total_threads())
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Threads of the async runtime's blocking pool: the tokenizing jobs plus a few for
    /// model loads, certificate reads and name lookups. With tokio's default (512) a
    /// busy worker grew to 27–40 threads: a job waiting for a tokenize slot is woken
    /// before the finished task's thread is idle again, so tokio starts another, and
    /// every thread keeps its stack and a malloc arena (`docs/reliability.md`, "Soak").
    pub fn blocking_threads(&self) -> usize {
        self.tokenize_threads() + 4
    }

    /// The queue `m` consumes (see [`ModelConfig::queue`]).
    pub fn queue_for(&self, m: &ModelConfig) -> String {
        if !m.queue.is_empty() {
            m.queue.clone()
        } else if self.models.len() <= 1 {
            self.amqp.queue.clone()
        } else {
            format!("{}.{}", self.amqp.queue, m.model_id())
        }
    }

    /// Longest wait of a text in the batcher.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.batch.max_wait_ms)
    }
}

/// `Ok` when `ok`, else the error for `key`. Every section's `validate` is a list of
/// these, so a message always names its key.
pub(super) fn check(
    ok: bool,
    key: impl Into<Cow<'static, str>>,
    message: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        })
    }
}

impl ConfigError {
    /// Adds the model's id to an error about a `[[models]]` entry: the index names the
    /// table, the id the model the operator knows it by.
    fn of_model(self, id: &str) -> Self {
        match self {
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key,
                message: format!("(model {id:?}) {message}"),
            },
            other => other,
        }
    }
}
