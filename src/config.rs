//! Configuration: a TOML file overlaid by `TW_<SECTION>__<KEY>` environment variables.
//!
//! Every key has a default, so an empty file (or none) is a valid configuration for
//! this machine: local RabbitMQ and Redis and the bundled copy test model. Start-up
//! fails with a message naming the offending key when a value is missing its mark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
        /// Dotted key, e.g. `batch.max_batch_size`.
        key: &'static str,
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
    pub limits: LimitsConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Health and metrics HTTP listener.
    pub http: HttpConfig,
    /// The HTTP gateway (`translation-worker gateway`).
    pub gateway: GatewayConfig,
}

/// The HTTP listener for probes and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`; empty disables the listener.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
        }
    }
}

/// The HTTP gateway: HTTP requests in, jobs on the broker through the client library.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address of the gateway's HTTP listener (`host:port`).
    pub listen: String,
    /// How long (ms) a request waits for its reply before answering 504. Also sent as
    /// the job's deadline, so a worker skips a job whose caller has given up.
    pub request_timeout_ms: u64,
    /// Translation requests waiting for their reply at once; more are answered 503 at
    /// once with `Retry-After` (bounds the gateway's memory and the broker backlog it
    /// can create).
    pub max_pending: usize,
    /// Largest request body (POST) and query string (GET), in bytes; larger is 413/414.
    pub max_body_bytes: usize,
    /// Most texts (`q` values) in one request; more is 413. 0 (the default) = the
    /// workers' `limits.max_texts`; a larger value is refused (see
    /// [`Config::gateway_max_texts`]).
    pub max_texts: usize,
    /// Seconds put in `Retry-After` of a 503 (overload or broker down).
    pub retry_after_secs: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            request_timeout_ms: 30_000,
            max_pending: 1024,
            max_body_bytes: 1024 * 1024,
            max_texts: 0,
            retry_after_secs: 1,
        }
    }
}

/// Where inference runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CPU (oneDNN or ruy backend).
    Cpu,
    /// NVIDIA GPU 0; needs a binary built with the `cuda` feature.
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

/// RabbitMQ settings.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// AMQP URI, e.g. `amqp://user:pass@host:5672/%2f`, or `amqps://` for TLS. Logged
    /// only with the password redacted.
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
    /// Durable job queue the worker consumes.
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
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            url_file: PathBuf::new(),
            tls_ca_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            queue: "translation.jobs".into(),
            exchange: "translation".into(),
            dead_letter: "translation.dead".into(),
            prefetch: 512,
            reconnect_initial_ms: 200,
            reconnect_max_ms: 10_000,
            queue_type: QueueType::Classic,
            delivery_limit: 5,
        }
    }
}

/// Redis cache settings.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Use the cache at all.
    pub enabled: bool,
    /// `standalone` (one Redis, or a primary behind a proxy/Sentinel address) or
    /// `cluster` (Redis Cluster: keys spread over the nodes by hash slot).
    pub mode: RedisMode,
    /// Redis URL, e.g. `redis://:pass@host:6379/0`, or `rediss://` for TLS. In cluster
    /// mode a comma-separated list of seed nodes (`redis://h1:6379,redis://h2:6379`);
    /// the rest of the cluster is discovered from them. Logged only with passwords
    /// redacted.
    pub url: String,
    /// File holding `url` (e.g. a mounted Kubernetes Secret); when set, its trimmed
    /// contents replace `url` at start-up.
    pub url_file: PathBuf,
    /// PEM CA certificates trusted for `rediss://` *instead of* the system roots
    /// (redis-rs replaces the root store); empty = system roots (which honour
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR`). Applies to every cluster node too.
    pub tls_ca_file: PathBuf,
    /// PEM client certificate (chain) for mutual TLS; needs `tls_key_file`.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub tls_key_file: PathBuf,
    /// Lifetime of a cached translation, in seconds.
    pub ttl_secs: u64,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Budget for one cache round trip (lookup or store), in milliseconds. Past it the
    /// job goes on without the cache.
    pub timeout_ms: u64,
    /// After a failure, skip Redis for this long (milliseconds) before trying again, so
    /// a dead Redis costs no timeout per job.
    pub breaker_cooldown_ms: u64,
}

/// How the cache talks to Redis.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (one URL).
    Standalone,
    /// A Redis Cluster reached through one or more seed URLs.
    Cluster,
}

impl std::fmt::Display for RedisMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
        })
    }
}

impl RedisConfig {
    /// The URLs to connect to: `url` itself in standalone mode, each seed (trimmed,
    /// empty entries skipped) in cluster mode.
    pub fn urls(&self) -> Vec<&str> {
        match self.mode {
            RedisMode::Standalone => vec![self.url.as_str()],
            RedisMode::Cluster => split_url_list(&self.url),
        }
    }

    /// The TLS files of this section.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            section: "redis",
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        }
    }
}

impl AmqpConfig {
    /// The TLS files of this section.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            section: "amqp",
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        }
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
            .field("reconnect_initial_ms", reconnect_initial_ms)
            .field("reconnect_max_ms", reconnect_max_ms)
            .field("queue_type", queue_type)
            .field("delivery_limit", delivery_limit)
            .finish()
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            enabled,
            mode,
            url,
            url_file,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            ttl_secs,
            key_prefix,
            timeout_ms,
            breaker_cooldown_ms,
        } = self;
        f.debug_struct("RedisConfig")
            .field("enabled", enabled)
            .field("mode", mode)
            .field("url", &redact_url(url))
            .field("url_file", url_file)
            .field("tls_ca_file", tls_ca_file)
            .field("tls_cert_file", tls_cert_file)
            .field("tls_key_file", tls_key_file)
            .field("ttl_secs", ttl_secs)
            .field("key_prefix", key_prefix)
            .field("timeout_ms", timeout_ms)
            .field("breaker_cooldown_ms", breaker_cooldown_ms)
            .finish()
    }
}

/// The TLS files of one connection (`amqp.tls_*` or `redis.tls_*`); empty paths are unset.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `amqp` or `redis`, for messages.
    pub section: &'static str,
    /// Extra (AMQP) or replacement (Redis) trust anchors.
    pub ca_file: PathBuf,
    /// Client certificate chain for mutual TLS.
    pub cert_file: PathBuf,
    /// Private key of `cert_file`.
    pub key_file: PathBuf,
}

/// PEM contents of [`TlsFiles`], read and checked for the expected PEM blocks.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsPem {
    /// CA certificates (PEM), when a CA file is set.
    pub ca: Option<String>,
    /// Client certificate chain (PEM), when mutual TLS is set up.
    pub client_cert: Option<Vec<u8>>,
    /// The client's private key (PEM), with `client_cert`.
    pub client_key: Option<Vec<u8>>,
}

// Never prints the key (nor the certificates: only whether they are set).
impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |b: bool| if b { "<set>" } else { "<unset>" };
        f.debug_struct("TlsPem")
            .field("ca", &set(self.ca.is_some()))
            .field("client_cert", &set(self.client_cert.is_some()))
            .field("client_key", &set(self.client_key.is_some()))
            .finish()
    }
}

impl TlsPem {
    /// Whether nothing is set (plain system-root TLS, or no TLS at all).
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_cert.is_none()
    }
}

/// Largest TLS or URL file read: real CA bundles are a few hundred KB (the Mozilla
/// bundle is about 220 KB); anything bigger is the wrong file, not a certificate.
const MAX_SECRET_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a file named by `key`, refusing oversized ones. Errors never carry contents.
fn read_named_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let err = |message: String| ConfigError::File {
        key,
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(err(format!(
            "is {} bytes, more than the {MAX_SECRET_FILE_BYTES} a URL or PEM file may have",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))
}

impl TlsFiles {
    /// The dotted keys of the CA, certificate and key files, for messages.
    fn keys(&self) -> (&'static str, &'static str, &'static str) {
        match self.section {
            "amqp" => (
                "amqp.tls_ca_file",
                "amqp.tls_cert_file",
                "amqp.tls_key_file",
            ),
            _ => (
                "redis.tls_ca_file",
                "redis.tls_cert_file",
                "redis.tls_key_file",
            ),
        }
    }

    /// Whether any TLS file is set.
    pub fn any_set(&self) -> bool {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .iter()
            .any(|p| !p.as_os_str().is_empty())
    }

    /// Reads the files that are set. Blocking (file I/O): call it before the async
    /// runtime or on its blocking pool. Each file must hold the PEM blocks it is for;
    /// rustls parses them fully when connecting.
    pub fn read(&self) -> Result<TlsPem, ConfigError> {
        let (ca_key, cert_key, key_key) = self.keys();
        let read = |key: &'static str, path: &Path, marker: &str, what: &str| {
            if path.as_os_str().is_empty() {
                return Ok(None);
            }
            let bytes = read_named_file(key, path)?;
            let pem_marker = |m: &str| bytes.windows(m.len()).any(|w| w == m.as_bytes());
            if !(pem_marker("-----BEGIN ") && pem_marker(marker)) {
                return Err(ConfigError::File {
                    key,
                    path: path.to_path_buf(),
                    message: format!("holds no PEM {what} (no \"{marker}\" block)"),
                });
            }
            Ok(Some(bytes))
        };
        let ca = read(ca_key, &self.ca_file, "CERTIFICATE-----", "certificate")?
            .map(|b| {
                String::from_utf8(b).map_err(|_| ConfigError::File {
                    key: ca_key,
                    path: self.ca_file.clone(),
                    message: "is not a text (PEM) file".into(),
                })
            })
            .transpose()?;
        let client_cert = read(cert_key, &self.cert_file, "CERTIFICATE-----", "certificate")?;
        let client_key = read(key_key, &self.key_file, "PRIVATE KEY-----", "private key")?;
        Ok(TlsPem {
            ca,
            client_cert,
            client_key,
        })
    }

    /// Checks the keys against the URL scheme: TLS files need a TLS URL, and a client
    /// certificate needs its key (and the reverse).
    fn validate(&self, tls_url: bool, scheme: &str) -> Result<(), ConfigError> {
        let (ca_key, cert_key, key_key) = self.keys();
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        for (key, path) in [
            (ca_key, &self.ca_file),
            (cert_key, &self.cert_file),
            (key_key, &self.key_file),
        ] {
            if set(path) && !tls_url {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "is set but {}.url does not start with {scheme}://: TLS files apply \
                         only to TLS connections (use {scheme}://, or clear {key})",
                        self.section
                    ),
                });
            }
        }
        if set(&self.cert_file) != set(&self.key_file) {
            return Err(ConfigError::Invalid {
                key: cert_key,
                message: format!("and {key_key} must be set together (mutual TLS)"),
            });
        }
        Ok(())
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379".into(),
            url_file: PathBuf::new(),
            tls_ca_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            ttl_secs: 30 * 24 * 3600,
            key_prefix: "tw".into(),
            timeout_ms: 250,
            breaker_cooldown_ms: 2_000,
        }
    }
}

/// Model settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// CTranslate2 model directory (with `source.spm`/`target.spm` or `tokenizer.json`).
    pub path: PathBuf,
    /// Model id reported in replies; empty means the directory's name.
    pub id: String,
    /// Source language the model translates from (routing key and validation).
    pub source: String,
    /// Target language the model translates to.
    pub target: String,
    /// `cpu`, or `cuda` (needs the `cuda` build).
    pub device: Device,
    /// CTranslate2 compute type: `default`, `auto`, `int8`, `int8_float32`, `int16`, `float32`, ...
    pub compute_type: String,
    /// Total CPU threads for inference; 0 means the CPUs this process may use: the
    /// container's CPU quota (cgroup `cpu.max`) when there is one, else the cores.
    pub threads: usize,
    /// Engine replicas sharing those threads; 0 means one replica per thread, which
    /// measured fastest on small CPUs (each replica runs its own batch).
    pub replicas: usize,
    /// Default beam size (jobs may override it per request).
    pub beam_size: usize,
    /// Default maximum output length in tokens (jobs may override it).
    pub max_decoding_length: usize,
    /// Source tokens a text may have (`</s>` and language tokens included): with
    /// `split = "sentences"` a longer sentence is split further; otherwise the text is
    /// truncated. 0 (the default): the model's own limit, the rows of its position
    /// table (512 for OPUS-MT), or 1024 for a model without one. A value above the
    /// model's limit is refused at start-up.
    pub max_input_length: usize,
    /// Language pairs served, as `"source-target"` (e.g. `["ko-en", "en-ko"]`) for a
    /// multilingual model; empty means the one pair `source-target`.
    pub pairs: Vec<String>,
    /// How the model marks languages: `none` (a bilingual model such as OPUS-MT),
    /// `nllb` (`kor_Hang` source token, `eng_Latn` target prefix) or `m2m100`
    /// (`__ko__`, `__en__`). See [`crate::languages`].
    pub language_tokens: LanguageTokens,
    /// Language code → model token, overriding or extending the built-in mapping
    /// (e.g. `{ zh = "zho_Hant" }`).
    pub language_codes: BTreeMap<String, String>,
    /// Queue this model consumes; empty means `amqp.queue` when the worker serves one
    /// model, else `<amqp.queue>.<model id>` (one queue per model, so one model's
    /// backlog never queues another's jobs behind it).
    pub queue: String,
}

/// How a model marks source and target languages.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LanguageTokens {
    /// No language tokens: a bilingual model (OPUS-MT).
    #[default]
    None,
    /// NLLB-200: source token before the text, target token as the decoding prefix.
    Nllb,
    /// M2M-100: like NLLB, with `__xx__` tokens.
    M2m100,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("tests/fixtures/copy-model"),
            id: String::new(),
            source: "ko".into(),
            target: "en".into(),
            device: Device::Cpu,
            compute_type: "int8".into(),
            threads: 0,
            replicas: 0,
            beam_size: 1,
            max_decoding_length: 256,
            max_input_length: 0,
            pairs: Vec::new(),
            language_tokens: LanguageTokens::None,
            language_codes: BTreeMap::new(),
            queue: String::new(),
        }
    }
}

impl ModelConfig {
    /// The id put in replies: `id`, or the model directory's name.
    pub fn model_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    }

    /// The `(source, target)` pairs this model serves: `pairs`, or `source-target`.
    /// Entries that are not `a-b` are skipped here and refused by validation.
    pub fn served_pairs(&self) -> Vec<(String, String)> {
        if self.pairs.is_empty() {
            return vec![(self.source.clone(), self.target.clone())];
        }
        self.pairs
            .iter()
            .filter_map(|p| parse_pair(p))
            .map(|(s, t)| (s.to_owned(), t.to_owned()))
            .collect()
    }

    /// Total inference threads after resolving `0 = the CPUs we may use`.
    pub fn total_threads(&self) -> usize {
        if self.threads == 0 {
            available_cpus()
        } else {
            self.threads
        }
    }

    /// `(replicas, threads per replica)` after resolving the `0 = auto` defaults.
    pub fn threading(&self) -> (usize, usize) {
        let threads = self.total_threads();
        let replicas = if self.replicas == 0 {
            threads
        } else {
            self.replicas
        };
        (replicas, (threads / replicas).max(1))
    }
}

/// `"ko-en"` → `("ko", "en")`: two non-empty codes of letters, digits and `_`.
pub fn parse_pair(pair: &str) -> Option<(&str, &str)> {
    let (s, t) = pair.split_once('-')?;
    let code = |c: &str| {
        !c.is_empty()
            && c.len() <= 16
            && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    };
    (code(s) && code(t)).then_some((s, t))
}

/// Dynamic batching policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch is cut when it holds this many distinct texts.
    pub max_batch_size: usize,
    /// Fewest texts per batch when more are in flight: the size adapts to the load
    /// (in-flight texts ÷ (2 × replicas), between this and `max_batch_size`), so that
    /// as many texts wait to be sorted by length as run. Equal to `max_batch_size`:
    /// a fixed size.
    pub min_batch_size: usize,
    /// ... or when its padded size (texts × longest source in tokens) would pass this.
    pub max_batch_tokens: usize,
    /// ... or when its oldest text has waited this long (ms) for a busy engine to free
    /// a replica. An idle engine never waits.
    pub max_wait_ms: u64,
    /// Longest (ms) a text may be passed over for batches of texts closer in length to
    /// each other; after that the next batch holds it. 0: every batch holds the oldest
    /// text.
    pub max_delay_ms: u64,
    /// Most distinct texts the batcher holds and sorts by length to choose batches
    /// from (its window); jobs wait to enter beyond it.
    pub max_queued: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            min_batch_size: 32,
            max_batch_tokens: 8192,
            max_wait_ms: 5,
            max_delay_ms: 2000,
            max_queued: 1024,
        }
    }
}

/// Limits on a job, enforced before any work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most texts in one job.
    pub max_texts: usize,
    /// Most characters (Unicode scalar values) in one text.
    pub max_text_chars: usize,
    /// Largest message body, checked before parsing.
    pub max_body_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_texts: 128,
            max_text_chars: 10_000,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// CPUs this process may use: the cgroup CPU quota (rounded up, at least 1) when one
/// is set, capped by the cores it may run on. A pod limited to 2 CPUs on a 64-core node
/// gets 2, not 64: more threads than quota only adds throttling.
pub fn available_cpus() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match cgroup_cpu_quota() {
        Some(q) => (q.ceil() as usize).clamp(1, cores),
        None => cores,
    }
}

/// The CPU quota of this process's cgroup in CPUs (v2 `cpu.max`, else v1
/// `cpu.cfs_quota_us` / `cpu.cfs_period_us`), or `None` when unlimited or unknown.
pub fn cgroup_cpu_quota() -> Option<f64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    // The process's own cgroup; in a container that is usually the root of its view.
    let v2_dir = read("/proc/self/cgroup")
        .and_then(|s| parse_cgroup_v2_path(&s))
        .unwrap_or_default();
    for dir in [format!("/sys/fs/cgroup{v2_dir}"), "/sys/fs/cgroup".into()] {
        if let Some(max) = read(&format!("{}/cpu.max", dir.trim_end_matches('/'))) {
            return parse_cpu_max(&max);
        }
    }
    let quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?;
    let period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?;
    parse_cfs_quota(&quota, &period)
}

/// The cgroup v2 path from `/proc/self/cgroup` (the `0::<path>` line).
fn parse_cgroup_v2_path(s: &str) -> Option<String> {
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
        .filter(|p| p != "/")
}

/// Parses cgroup v2 `cpu.max` (`"<quota> <period>"`, quota `max` = unlimited).
fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    (quota > 0.0).then(|| quota / period)
}

/// Parses cgroup v1 CFS quota and period (`-1` quota = unlimited).
fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long (seconds) in-flight jobs may take to finish before the
    /// worker closes anyway (unanswered jobs are then redelivered by the broker).
    /// Keep it below Kubernetes' `terminationGracePeriodSeconds`.
    pub drain_timeout_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout_secs: 25,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, human-readable text when it is.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// Logging settings (levels come from `RUST_LOG`, default `info`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `auto`, `json` or `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
        }
    }
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
            message: syntax_message(toml_text, &e),
        })?;
        // Start from the defaults so env overrides know each key's type.
        let mut table = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Shape(e.to_string()))?;
        merge(&mut table, file, "")?;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != CONFIG_FILE_ENV)
            .collect();
        vars.sort();
        for (var, value) in vars {
            apply_env(&mut table, &var, &value)?;
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
            if file.as_os_str().is_empty() {
                continue;
            }
            let bytes = read_named_file(key, file)?;
            let err = |message: &str| ConfigError::File {
                key,
                path: file.clone(),
                message: message.into(),
            };
            let text = String::from_utf8(bytes).map_err(|_| err("is not UTF-8 text"))?;
            let trimmed = text.trim();
            if trimmed.is_empty() {
                return Err(err("is empty"));
            }
            *url = trimmed.to_owned();
        }
        Ok(())
    }

    /// Checks ranges and relations that types alone do not express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.amqp.url.starts_with("amqp://") || self.amqp.url.starts_with("amqps://"),
            "amqp.url",
            "must start with amqp:// or amqps://",
        )?;
        self.amqp
            .tls_files()
            .validate(self.amqp.url.starts_with("amqps://"), "amqps")?;
        check(
            !self.amqp.queue.is_empty(),
            "amqp.queue",
            "must not be empty",
        )?;
        check(
            !self.amqp.exchange.is_empty(),
            "amqp.exchange",
            "must not be empty",
        )?;
        check(
            !self.amqp.dead_letter.is_empty(),
            "amqp.dead_letter",
            "must not be empty",
        )?;
        check(
            self.amqp.prefetch >= 1,
            "amqp.prefetch",
            "must be at least 1",
        )?;
        check(
            self.amqp.queue_type == QueueType::Classic || self.amqp.delivery_limit >= 1,
            "amqp.delivery_limit",
            "must be at least 1 for a quorum queue",
        )?;
        check(
            self.amqp.reconnect_initial_ms >= 1
                && self.amqp.reconnect_initial_ms <= self.amqp.reconnect_max_ms,
            "amqp.reconnect_initial_ms",
            "must be at least 1 and at most amqp.reconnect_max_ms",
        )?;
        match self.redis.mode {
            RedisMode::Standalone => check(
                self.redis.url.starts_with("redis://")
                    || self.redis.url.starts_with("rediss://")
                    || self.redis.url.starts_with("unix://"),
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            )?,
            RedisMode::Cluster => validate_cluster_seeds(&self.redis.url)?,
        }
        let redis_tls = {
            let urls = self.redis.urls();
            !urls.is_empty() && urls.iter().all(|u| u.starts_with("rediss://"))
        };
        self.redis.tls_files().validate(redis_tls, "rediss")?;
        check(
            self.redis.ttl_secs >= 1,
            "redis.ttl_secs",
            "must be at least 1",
        )?;
        check(
            self.redis.timeout_ms >= 1,
            "redis.timeout_ms",
            "must be at least 1",
        )?;
        if self.models.is_empty() {
            validate_model(&self.model)?;
        }
        let mut pairs_seen = std::collections::HashSet::new();
        let mut queues_seen = std::collections::HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let entry = |e: ConfigError| ConfigError::Invalid {
                key: "models",
                message: format!("entry {i} ({}): {e}", m.model_id()),
            };
            validate_model(m).map_err(entry)?;
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
        check(
            self.http.listen.is_empty() || self.http.listen.parse::<std::net::SocketAddr>().is_ok(),
            "http.listen",
            "must be host:port with an IP address (e.g. 0.0.0.0:9090), or empty to disable",
        )?;
        check(
            self.gateway.listen.parse::<std::net::SocketAddr>().is_ok(),
            "gateway.listen",
            "must be host:port with an IP address (e.g. 0.0.0.0:8080)",
        )?;
        check(
            self.gateway.request_timeout_ms >= 1,
            "gateway.request_timeout_ms",
            "must be at least 1",
        )?;
        check(
            self.gateway.max_pending >= 1,
            "gateway.max_pending",
            "must be at least 1",
        )?;
        check(
            self.gateway.max_body_bytes >= 64,
            "gateway.max_body_bytes",
            "must be at least 64",
        )?;
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
        check(
            self.gateway.retry_after_secs >= 1,
            "gateway.retry_after_secs",
            "must be at least 1",
        )?;
        check(
            self.model.device == Device::Cpu || cfg!(feature = "cuda"),
            "model.device",
            "cuda needs a binary built with the `cuda` feature (this one is CPU-only)",
        )?;
        check(
            self.batch.max_batch_size >= 1,
            "batch.max_batch_size",
            "must be at least 1",
        )?;
        check(
            self.batch.max_batch_tokens >= 1,
            "batch.max_batch_tokens",
            "must be at least 1",
        )?;
        check(
            (1..=self.batch.max_batch_size).contains(&self.batch.min_batch_size),
            "batch.min_batch_size",
            "must be between 1 and batch.max_batch_size",
        )?;
        check(
            self.batch.max_queued >= self.batch.max_batch_size,
            "batch.max_queued",
            "must be at least batch.max_batch_size (the window a batch is chosen from)",
        )?;
        check(
            self.limits.max_texts >= 1,
            "limits.max_texts",
            "must be at least 1",
        )?;
        check(
            self.limits.max_text_chars >= 1,
            "limits.max_text_chars",
            "must be at least 1",
        )?;
        check(
            self.limits.max_body_bytes >= 64,
            "limits.max_body_bytes",
            "must be at least 64",
        )?;
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

/// `Ok` when `ok`, else the error for `key`.
fn check(ok: bool, key: &'static str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            message: message.into(),
        })
    }
}

/// Checks one model's settings; errors name the key as `model.<key>`.
fn validate_model(m: &ModelConfig) -> Result<(), ConfigError> {
    check(!m.source.is_empty(), "model.source", "must not be empty")?;
    check(!m.target.is_empty(), "model.target", "must not be empty")?;
    check(
        crate::engine::parse_compute_type(&m.compute_type).is_some(),
        "model.compute_type",
        "must be one of default, auto, int8, int8_float32, int8_float16, int8_bfloat16, int16, float16, bfloat16, float32",
    )?;
    check(
        (1..=16).contains(&m.beam_size),
        "model.beam_size",
        "must be in 1..=16",
    )?;
    check(
        (1..=1024).contains(&m.max_decoding_length),
        "model.max_decoding_length",
        "must be in 1..=1024",
    )?;
    check(
        m.replicas <= m.total_threads(),
        "model.replicas",
        "must not exceed model.threads (or the core count when threads = 0)",
    )?;
    if let Some(bad) = m.pairs.iter().find(|p| parse_pair(p).is_none()) {
        return Err(ConfigError::Invalid {
            key: "model.pairs",
            message: format!("{bad:?} is not a pair like \"ko-en\""),
        });
    }
    if m.language_tokens != LanguageTokens::None {
        for (s, t) in m.served_pairs() {
            for lang in [s, t] {
                check(
                    crate::languages::model_token(m.language_tokens, &lang, &m.language_codes)
                        .is_some(),
                    "model.language_codes",
                    &format!(
                        "no {:?} token is known for language {lang:?}; add it to model.language_codes",
                        m.language_tokens
                    ),
                )?;
            }
        }
    }
    Ok(())
}

/// The parser's message with the line and column of the error. toml's own `Display`
/// quotes the offending line, which may be `url = "amqp://user:password@..."`.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// Merges `overlay` into `base`; keys unknown to `base` are errors naming the key.
fn merge(base: &mut toml::Table, overlay: toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for (key, value) in overlay {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &dotted)?,
            (Some(slot), value) => *slot = value,
            (None, _) => {
                return Err(ConfigError::Shape(format!("unknown key `{dotted}`")));
            }
        }
    }
    Ok(())
}

/// Applies `TW_SECTION__KEY=value`, parsing the value as the type the key already has.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let rest = &var[ENV_PREFIX.len()..];
    let Some((section, key)) = rest.split_once("__") else {
        return Err(err("expected TW_<SECTION>__<KEY>".into()));
    };
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let slot = table
        .get_mut(&section)
        .and_then(|s| s.as_table_mut())
        .and_then(|s| s.get_mut(&key))
        .ok_or_else(|| err(format!("no configuration key `{section}.{key}`")))?;
    let parsed = match slot {
        toml::Value::String(_) => toml::Value::String(value.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            value
                .trim()
                .parse()
                .map_err(|_| err(format!("expected an integer, got {value:?}")))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            value
                .trim()
                .parse()
                .map_err(|_| err(format!("expected a number, got {value:?}")))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(
            value
                .trim()
                .parse()
                .map_err(|_| err(format!("expected true or false, got {value:?}")))?,
        ),
        // Lists of strings (e.g. `model.pairs`) as comma-separated values.
        toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_owned()))
                .collect(),
        ),
        other => {
            return Err(err(format!(
                "cannot be set from the environment (a {})",
                other.type_str()
            )))
        }
    };
    *slot = parsed;
    Ok(())
}

/// Checks `redis.url` in cluster mode: at least one seed, each a `redis://` or
/// `rediss://` URL that parses. Messages show seeds only redacted.
fn validate_cluster_seeds(list: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "redis.url",
        message,
    };
    let seeds = split_url_list(list);
    if seeds.is_empty() {
        return Err(invalid(
            "must list at least one seed node in cluster mode (redis://host:port,...)".into(),
        ));
    }
    for (i, seed) in seeds.iter().enumerate() {
        let n = i + 1;
        if !(seed.starts_with("redis://") || seed.starts_with("rediss://")) {
            return Err(invalid(format!(
                "seed {n} ({}) must start with redis:// or rediss:// in cluster mode",
                redact_url(seed)
            )));
        }
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(*seed) {
            return Err(invalid(format!(
                "seed {n} ({}) does not parse: {}",
                redact_url(seed),
                e
            )));
        }
    }
    Ok(())
}

/// Splits a comma-separated list of URLs. A comma separates only where the next entry
/// starts with `scheme://` (or nothing follows), so a comma inside one URL (e.g. in a
/// password) does not split it.
pub fn split_url_list(list: &str) -> Vec<&str> {
    fn starts_with_scheme(t: &str) -> bool {
        t.find("://").is_some_and(|p| {
            p > 0
                && t[..p].starts_with(|c: char| c.is_ascii_alphabetic())
                && t[..p]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        let rest = list[i + 1..].trim_start();
        if rest.is_empty() || starts_with_scheme(rest) {
            out.push(list[start..i].trim());
            start = i + 1;
        }
    }
    out.push(list[start..].trim());
    out.retain(|u| !u.is_empty());
    out
}

/// Hides the password of a URL (`scheme://user:***@host/...`) for logs and errors. A
/// comma-separated list (Redis Cluster seeds) has each of its URLs redacted.
pub fn redact_url(url: &str) -> String {
    let urls = split_url_list(url);
    if urls.len() > 1 {
        return urls
            .iter()
            .map(|u| redact_one_url(u))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one_url(url)
}

fn redact_one_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = scheme_end + 3;
    let authority_end = url[after..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after + i);
    let authority = &url[after..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // A lone userinfo (`redis://token@host`) is the secret itself.
                "***".to_string()
            };
            format!(
                "{}{}@{}{}",
                &url[..after],
                masked,
                &authority[at + 1..],
                &url[authority_end..]
            )
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tw_config_names_the_file_and_is_not_a_setting() {
        let c = Config::from_sources(
            "",
            None,
            env(&[("TW_CONFIG", "/etc/tw.toml"), ("TW_AMQP__PREFETCH", "64")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.amqp.prefetch, 64);
        // Any other TW_ variable without a section is still refused.
        assert!(Config::from_sources("", None, env(&[("TW_CONFIGG", "x")])).is_err());
    }

    #[test]
    fn gateway_max_texts_above_the_workers_limit_is_refused() {
        let err = Config::from_sources("[gateway]\nmax_texts = 200\n", None, env(&[]))
            .expect_err("200 gateway texts against 128 worker texts")
            .to_string();
        assert!(
            err.contains("gateway.max_texts") && err.contains("limits.max_texts (128)"),
            "{err}"
        );
        let both = "[gateway]\nmax_texts = 200\n[limits]\nmax_texts = 200\n";
        let c = Config::from_sources(both, None, env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.gateway_max_texts(), 200);
        // Unset (0), it follows the workers' limit, so a worker-only file that lowers
        // limits.max_texts needs no gateway setting.
        let c = Config::from_sources("[limits]\nmax_texts = 16\n", None, env(&[]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.gateway.max_texts, 0);
        assert_eq!(c.gateway_max_texts(), 16);
    }

    #[test]
    fn prefetch_below_the_batchers_need_is_a_warning_not_an_error() {
        let pinned = "[model]\nthreads = 2\nreplicas = 2\n";
        let c = Config::from_sources(pinned, None, env(&[("TW_AMQP__PREFETCH", "1")]))
            .unwrap_or_else(|e| panic!("prefetch 1 is allowed: {e}"));
        let advice = c.advisories();
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(
            advice[0].contains("amqp.prefetch = 1") && advice[0].contains("= 256"),
            "{advice:?}"
        );
        // The defaults agree with each other on two replicas.
        let c = Config::from_sources(pinned, None, env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.advisories(), Vec::<String>::new());
        let c = Config::from_sources(pinned, None, env(&[("TW_AMQP__PREFETCH", "256")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.advisories(), Vec::<String>::new());
    }

    #[test]
    fn effective_toml_leaves_out_the_ignored_model_section() {
        let single = Config::from_sources("", None, env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert!(single.effective_toml().unwrap().contains("[model]"));
        let many = Config::from_sources(
            "[[models]]\npath = \"tests/fixtures/copy-model\"\nsource = \"ko\"\ntarget = \"en\"\n",
            None,
            env(&[]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = many.effective_toml().unwrap();
        assert!(!shown.contains("[model]"), "{shown}");
        assert!(shown.contains("[[models]]"), "{shown}");
        let back: Config = toml::from_str(&shown).unwrap_or_else(|e| panic!("{e}: {shown}"));
        assert_eq!(back.models, many.models);
    }

    #[test]
    fn cgroup_quota_parsing() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs_quota("50000\n", "100000\n"), Some(0.5));
        assert_eq!(
            parse_cgroup_v2_path("0::/kubepods/pod1/ctr\n"),
            Some("/kubepods/pod1/ctr".into())
        );
        assert_eq!(parse_cgroup_v2_path("0::/\n"), None);
        assert_eq!(parse_cgroup_v2_path("4:cpu,cpuacct:/docker/x\n"), None);
        let cpus = available_cpus();
        assert!(cpus >= 1 && cpus <= std::thread::available_parallelism().unwrap().get());
    }

    #[test]
    fn http_listen_and_device_are_validated() {
        let bad = Config::from_sources("[http]\nlisten = \"nowhere\"\n", None, env(&[]));
        assert!(bad.unwrap_err().to_string().contains("http.listen"));
        let off = Config::from_sources("", None, env(&[("TW_HTTP__LISTEN", "")])).unwrap();
        assert_eq!(off.http.listen, "");
        let cuda = Config::from_sources("", None, env(&[("TW_MODEL__DEVICE", "cuda")]));
        assert_eq!(cuda.is_ok(), cfg!(feature = "cuda"));
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_sources("", None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn shipped_default_file_is_valid_and_matches_code_defaults() {
        let text = include_str!("../config/default.toml");
        let c = Config::from_sources(text, None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn env_overrides_file_with_typed_values() {
        let c = Config::from_sources(
            "[amqp]\nprefetch = 8\n",
            None,
            env(&[
                ("TW_AMQP__PREFETCH", "16"),
                ("TW_AMQP__QUEUE", "q1"),
                ("TW_MODEL__SOURCE", "de"),
                ("TW_REDIS__ENABLED", "false"),
                ("TW_BATCH__MAX_WAIT_MS", "7"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.amqp.prefetch, 16);
        assert_eq!(c.amqp.queue, "q1");
        assert_eq!(c.model.source, "de");
        assert!(!c.redis.enabled);
        assert_eq!(c.batch.max_wait_ms, 7);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_sources("", None, env(&[("TW_AMQP__PREFETCH", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("TW_AMQP__PREFETCH"), "{e}");
        let e = Config::from_sources("", None, env(&[("TW_AMQP__NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("amqp.nope"), "{e}");
        let e = Config::from_sources("[batch]\nmax_batch_sise = 3\n", None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch.max_batch_sise"), "{e}");
        let e = Config::from_sources("[batch]\nmax_batch_size = 0\n", None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch.max_batch_size"), "{e}");
        let e = Config::from_sources("[amqp]\nprefetch = \"x\"\n", None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefetch"), "{e}");
        let e = Config::from_sources("", None, env(&[("TW_MODEL__COMPUTE_TYPE", "int3")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.compute_type"), "{e}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://:p%40ss@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(redact_url("redis://tok@h"), "redis://***@h");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert!(!redact_url("amqps://u:pw@h/v?x=@").contains("pw"));
    }

    #[test]
    fn queue_type_and_delivery_limit() {
        let c = Config::from_sources("", None, env(&[])).unwrap();
        assert_eq!(c.amqp.queue_type, QueueType::Classic);
        assert_eq!(c.amqp.delivery_limit, 5);
        let c = Config::from_sources(
            "[amqp]\nqueue_type = \"quorum\"\n",
            None,
            env(&[("TW_AMQP__DELIVERY_LIMIT", "3")]),
        )
        .unwrap();
        assert_eq!(c.amqp.queue_type, QueueType::Quorum);
        assert_eq!(c.amqp.delivery_limit, 3);
        let c = Config::from_sources("", None, env(&[("TW_AMQP__QUEUE_TYPE", "quorum")]));
        assert_eq!(c.unwrap().amqp.queue_type, QueueType::Quorum);
        let e = Config::from_sources("[amqp]\nqueue_type = \"stream\"\n", None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue_type") || e.contains("stream"), "{e}");
        let e = Config::from_sources(
            "[amqp]\nqueue_type = \"quorum\"\ndelivery_limit = 0\n",
            None,
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("amqp.delivery_limit"), "{e}");
    }

    #[test]
    fn redis_cluster_seeds_are_split_and_validated() {
        let c = Config::from_sources(
            "[redis]\nmode = \"cluster\"\nurl = \"redis://:pw@h1:7000, redis://:pw@h2:7001,\"\n",
            None,
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.redis.mode, RedisMode::Cluster);
        assert_eq!(
            c.redis.urls(),
            vec!["redis://:pw@h1:7000", "redis://:pw@h2:7001"]
        );
        // Standalone: the URL is one URL, even with a comma in it.
        let s = RedisConfig {
            url: "redis://:a,b@h:6379".into(),
            ..RedisConfig::default()
        };
        assert_eq!(s.urls(), vec!["redis://:a,b@h:6379"]);
        for (bad, needle) in [
            ("", "at least one seed"),
            ("redis://h1:7000,unix:///tmp/r.sock", "seed 2"),
            ("redis://:secret@h1:7000,redis://:secret@:x", "seed 2"),
        ] {
            let e = Config::from_sources(
                "[redis]\nmode = \"cluster\"\n",
                None,
                env(&[("TW_REDIS__URL", bad)]),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("redis.url") && e.contains(needle), "{e}");
            assert!(!e.contains("secret"), "password leaked: {e}");
        }
        let e = Config::from_sources("", None, env(&[("TW_REDIS__MODE", "sentinel")]));
        assert!(e.is_err());
    }

    #[test]
    fn url_lists_are_split_at_schemes_and_redacted_each() {
        assert_eq!(
            split_url_list("redis://a:1,redis://b:2 , rediss://c:3,"),
            vec!["redis://a:1", "redis://b:2", "rediss://c:3"]
        );
        // A comma inside a password does not split the URL.
        assert_eq!(split_url_list("redis://:p,w@h:1"), vec!["redis://:p,w@h:1"]);
        assert_eq!(split_url_list(" , "), Vec::<&str>::new());
        assert_eq!(
            redact_url("redis://:s1@h1:7000,redis://u:s2@h2:7001,redis://h3:7002"),
            "redis://:***@h1:7000,redis://u:***@h2:7001,redis://h3:7002"
        );
        assert_eq!(redact_url("redis://:p,w@h:1"), "redis://:***@h:1");
    }

    /// A fresh directory for one test's files.
    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tw-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    #[test]
    fn urls_come_from_files_trimmed() {
        let d = temp_dir();
        let amqp = d.join("amqp-url");
        let redis = d.join("redis-url");
        std::fs::write(&amqp, "  amqps://u:file-secret@mq:5671/%2f\n").unwrap();
        std::fs::write(&redis, "rediss://:file-secret@cache:6380\n").unwrap();
        let c = Config::from_sources(
            &format!("[redis]\nurl_file = {:?}\n", redis.display().to_string()),
            None,
            env(&[
                ("TW_AMQP__URL", "amqp://ignored:x@h/%2f"),
                ("TW_AMQP__URL_FILE", amqp.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(c.amqp.url, "amqps://u:file-secret@mq:5671/%2f");
        assert_eq!(c.redis.url, "rediss://:file-secret@cache:6380");
        assert_eq!(c.amqp.url_file, amqp);
        // The file's URL is validated like any other.
        std::fs::write(&amqp, "http://u:file-secret@mq/\n").unwrap();
        let e = Config::from_sources(
            "",
            None,
            env(&[("TW_AMQP__URL_FILE", amqp.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("amqp.url"), "{e}");
        assert!(!e.contains("file-secret"), "{e}");
        // Missing and empty files are errors naming the key and the path.
        let missing = d.join("nope");
        let e = Config::from_sources(
            "",
            None,
            env(&[("TW_REDIS__URL_FILE", missing.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("redis.url_file") && e.contains("nope") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(&redis, " \n").unwrap();
        let e = Config::from_sources(
            "",
            None,
            env(&[("TW_REDIS__URL_FILE", redis.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("redis.url_file") && e.contains("empty"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn tls_files_need_a_tls_url_and_each_other() {
        let d = temp_dir();
        let ca = d.join("ca.pem");
        let cert = d.join("cert.pem");
        let key = d.join("key.pem");
        std::fs::write(&ca, PEM_CERT).unwrap();
        std::fs::write(&cert, PEM_CERT).unwrap();
        std::fs::write(&key, PEM_KEY).unwrap();
        let (ca_s, cert_s, key_s) = (
            ca.to_str().unwrap(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        );
        // A CA file with a plain URL is a configuration error naming both keys.
        for (vars, needle) in [
            (vec![("TW_AMQP__TLS_CA_FILE", ca_s)], "amqp.tls_ca_file"),
            (vec![("TW_REDIS__TLS_CA_FILE", ca_s)], "redis.tls_ca_file"),
            (
                vec![
                    ("TW_AMQP__URL", "amqps://u:p@h/%2f"),
                    ("TW_AMQP__TLS_CERT_FILE", cert_s),
                ],
                "amqp.tls_key_file must be set together",
            ),
            (
                vec![
                    ("TW_REDIS__URL", "rediss://h:1"),
                    ("TW_REDIS__TLS_KEY_FILE", key_s),
                ],
                "redis.tls_cert_file",
            ),
            (
                vec![
                    ("TW_REDIS__MODE", "cluster"),
                    ("TW_REDIS__URL", "rediss://h1:1,redis://h2:2"),
                    ("TW_REDIS__TLS_CA_FILE", ca_s),
                ],
                "redis.tls_ca_file",
            ),
        ] {
            let e = Config::from_sources("", None, env(&vars))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let e = Config::from_sources("", None, env(&[("TW_AMQP__TLS_CA_FILE", ca_s)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("amqps://"), "{e}");
        // With TLS URLs, everything is read.
        let c = Config::from_sources(
            "",
            None,
            env(&[
                ("TW_AMQP__URL", "amqps://u:p@h/%2f"),
                ("TW_AMQP__TLS_CA_FILE", ca_s),
                ("TW_AMQP__TLS_CERT_FILE", cert_s),
                ("TW_AMQP__TLS_KEY_FILE", key_s),
                ("TW_REDIS__MODE", "cluster"),
                ("TW_REDIS__URL", "rediss://h1:1,rediss://h2:2"),
                ("TW_REDIS__TLS_CA_FILE", ca_s),
            ]),
        )
        .unwrap();
        let pem = c.amqp.tls_files().read().unwrap();
        assert_eq!(pem.ca.as_deref(), Some(PEM_CERT));
        assert_eq!(pem.client_key.as_deref(), Some(PEM_KEY.as_bytes()));
        assert!(!format!("{pem:?}").contains("MIIE"), "{pem:?}");
        let pem = c.redis.tls_files().read().unwrap();
        assert!(pem.ca.is_some() && pem.client_cert.is_none());
        assert!(Config::default()
            .amqp
            .tls_files()
            .read()
            .unwrap()
            .is_empty());
        // Unreadable or non-PEM files stop the start-up with the key and path named.
        let e = Config::from_sources(
            "",
            None,
            env(&[
                ("TW_AMQP__URL", "amqps://h/%2f"),
                ("TW_AMQP__TLS_CA_FILE", "/no/such/ca.pem"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("amqp.tls_ca_file") && e.contains("/no/such/ca.pem"),
            "{e}"
        );
        let e = Config::from_sources(
            "",
            None,
            env(&[
                ("TW_REDIS__URL", "rediss://h:1"),
                ("TW_REDIS__TLS_CERT_FILE", key_s),
                ("TW_REDIS__TLS_KEY_FILE", cert_s),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("redis.tls_cert_file") && e.contains("no PEM certificate"),
            "{e}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn syntax_errors_and_debug_output_hide_passwords() {
        let e = Config::from_sources(
            "[amqp]\nurl = \"amqp://u:toml-secret@h/%2f\" junk\n",
            Some(Path::new("w.toml")),
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("w.toml") && e.contains("line 2"), "{e}");
        assert!(!e.contains("toml-secret"), "{e}");
        let c = Config::from_sources(
            "",
            None,
            env(&[
                ("TW_AMQP__URL", "amqp://u:dbg-secret@h/%2f"),
                ("TW_REDIS__URL", "redis://:dbg-secret@h:1"),
            ]),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("dbg-secret"), "{dbg}");
        assert!(
            dbg.contains("amqp://u:***@h/%2f") && dbg.contains("redis://:***@h:1"),
            "{dbg}"
        );
    }

    #[test]
    fn threading_defaults_to_one_thread_per_replica() {
        let mut m = ModelConfig {
            threads: 4,
            ..ModelConfig::default()
        };
        assert_eq!(m.threading(), (4, 1));
        m.replicas = 1;
        assert_eq!(m.threading(), (1, 4));
        m.replicas = 2;
        assert_eq!(m.threading(), (2, 2));
    }

    #[test]
    fn blocking_pool_is_the_largest_models_threads_plus_four() {
        let mut c = Config::default();
        c.model.threads = 3;
        assert_eq!((c.tokenize_threads(), c.blocking_threads()), (3, 7));
        // With a model list, `[model]` is ignored and the largest model counts.
        c.models = vec![
            ModelConfig {
                threads: 2,
                ..ModelConfig::default()
            },
            ModelConfig {
                threads: 5,
                ..ModelConfig::default()
            },
        ];
        assert_eq!((c.tokenize_threads(), c.blocking_threads()), (5, 9));
    }

    #[test]
    fn more_replicas_than_threads_is_rejected() {
        let e = Config::from_sources(
            "",
            None,
            env(&[("TW_MODEL__THREADS", "2"), ("TW_MODEL__REPLICAS", "3")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.replicas"), "{e}");
    }
}
