//! `[model]` and each `[[models]]` entry: the CTranslate2 model, the language pairs it
//! serves, how it runs (device, compute type, threads) and its default decoding.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use translation_client::wire::{parse_pair, DecodeOptions, BEAM_SIZE, MAX_DECODING_LENGTH};

use super::{available_cpus, check, ConfigError, LanguageTokens};

/// Where inference runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CPU (oneDNN or ruy backend).
    Cpu,
    /// NVIDIA GPU 0; needs a binary built with the `cuda` feature.
    Cuda,
}

impl Device {
    /// Whether this binary can run a model on the device: the CPU always, CUDA only
    /// in a build with the `cuda` feature (the CPU build links no CUDA runtime).
    pub fn is_built_in(self) -> bool {
        match self {
            Device::Cpu => true,
            Device::Cuda => cfg!(feature = "cuda"),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
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
    /// Niceness added to the engine's inference threads (Linux; 0–19, 0 = as the rest
    /// of the worker). Inference keeps every core busy under load; below it, the
    /// worker's own threads (consuming, cache lookups, tokenizing, replies, acks, AMQP
    /// heartbeats, probes) run as soon as they have work, so a burst of jobs reaches
    /// the batcher while the replicas compute. In a container this orders the pod's
    /// own threads only (the pod's CPU share is its cgroup's).
    pub inference_nice: u8,
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
    /// (`__ko__`, `__en__`). See [`LanguageTokens`].
    pub language_tokens: LanguageTokens,
    /// Language code → model token, overriding or extending the built-in mapping
    /// (e.g. `{ zh = "zho_Hant" }`).
    pub language_codes: BTreeMap<String, String>,
    /// Queue this model consumes; empty means `amqp.queue` when the worker serves one
    /// model, else `<amqp.queue>.<model id>` (one queue per model, so one model's
    /// backlog never queues another's jobs behind it).
    pub queue: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        // The decoding defaults are the wire contract's, so a job without options is
        // decoded alike by a default worker and by the contract's documentation.
        let decode = DecodeOptions::default();
        Self {
            path: PathBuf::from("tests/fixtures/copy-model"),
            id: String::new(),
            source: "ko".into(),
            target: "en".into(),
            device: Device::Cpu,
            compute_type: "int8".into(),
            threads: 0,
            replicas: 0,
            inference_nice: DEFAULT_INFERENCE_NICE,
            beam_size: decode.beam_size as usize,
            max_decoding_length: decode.max_decoding_length as usize,
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

    /// The decoding defaults of jobs for this model: `beam_size` and
    /// `max_decoding_length`, the rest the wire contract's defaults. Validation keeps
    /// both within [`BEAM_SIZE`] and [`MAX_DECODING_LENGTH`], so they fit in `u32`.
    pub fn decode_options(&self) -> DecodeOptions {
        let defaults = DecodeOptions::default();
        DecodeOptions {
            beam_size: u32::try_from(self.beam_size).unwrap_or(defaults.beam_size),
            max_decoding_length: u32::try_from(self.max_decoding_length)
                .unwrap_or(defaults.max_decoding_length),
            ..defaults
        }
    }

    /// Checks the `[model]` section; errors name the key (`model.<key>`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_as("model")
    }

    /// Checks one model's settings, naming keys `<section>.<key>`: `model` for the
    /// `[model]` section, `models[i]` for an entry of the list, so the message points
    /// at the table the operator has to edit.
    pub(super) fn validate_as(&self, section: &str) -> Result<(), ConfigError> {
        let key = |name: &str| -> Cow<'static, str> { format!("{section}.{name}").into() };
        check(!self.source.is_empty(), key("source"), "must not be empty")?;
        check(!self.target.is_empty(), key("target"), "must not be empty")?;
        check(
            self.device.is_built_in(),
            key("device"),
            "cuda needs a binary built with the `cuda` feature (this one is CPU-only)",
        )?;
        check(
            parse_compute_type(&self.compute_type).is_some(),
            key("compute_type"),
            &format!("must be one of {}", COMPUTE_TYPES.join(", ")),
        )?;
        check(
            self.inference_nice <= MAX_NICE,
            key("inference_nice"),
            "must be between 0 and 19 (Linux niceness)",
        )?;
        check_range(self.beam_size, &BEAM_SIZE, key("beam_size"))?;
        check_range(
            self.max_decoding_length,
            &MAX_DECODING_LENGTH,
            key("max_decoding_length"),
        )?;
        check(
            self.replicas <= self.total_threads(),
            key("replicas"),
            &format!("must not exceed {section}.threads (or the core count when threads = 0)"),
        )?;
        if let Some(bad) = self.pairs.iter().find(|p| parse_pair(p).is_none()) {
            return Err(ConfigError::Invalid {
                key: key("pairs"),
                message: format!("{bad:?} is not a pair like \"ko-en\""),
            });
        }
        if self.language_tokens != LanguageTokens::None {
            let (_, missing) = crate::translate::pair_tokens(
                self.language_tokens,
                &self.served_pairs(),
                &self.language_codes,
            );
            if let Some(lang) = missing.first() {
                check(
                    false,
                    key("language_codes"),
                    &format!(
                        "no {:?} token is known for language {lang:?}; add it to \
                         {section}.language_codes",
                        self.language_tokens
                    ),
                )?;
            }
        }
        Ok(())
    }
}

/// `Ok` when `value` is in `range` (a wire contract range, so that a worker's default
/// is never one its own jobs could not ask for), else the error for `key`.
fn check_range(
    value: usize,
    range: &RangeInclusive<u64>,
    key: Cow<'static, str>,
) -> Result<(), ConfigError> {
    check(
        u64::try_from(value).is_ok_and(|v| range.contains(&v)),
        key,
        &format!("must be in {}..={}", range.start(), range.end()),
    )
}

/// Default of `model.inference_nice`: at 10 a thread of the worker's own gets about
/// nine tenths of a core it contends for with an inference thread (CFS weights 1024
/// against 110), so it is rarely kept waiting, while inference still takes every
/// cycle left over.
const DEFAULT_INFERENCE_NICE: u8 = 10;

/// The largest niceness Linux has.
const MAX_NICE: u8 = 19;

/// The compute types `model.compute_type` accepts, as [`parse_compute_type`] knows them.
pub const COMPUTE_TYPES: [&str; 10] = [
    "default",
    "auto",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
];

/// Maps a config string to a CTranslate2 compute type.
pub fn parse_compute_type(s: &str) -> Option<ct2rs::sys::ComputeType> {
    use ct2rs::sys::ComputeType;
    Some(match s {
        "default" => ComputeType::DEFAULT,
        "auto" => ComputeType::AUTO,
        "int8" => ComputeType::INT8,
        "int8_float32" => ComputeType::INT8_FLOAT32,
        "int8_float16" => ComputeType::INT8_FLOAT16,
        "int8_bfloat16" => ComputeType::INT8_BFLOAT16,
        "int16" => ComputeType::INT16,
        "float16" => ComputeType::FLOAT16,
        "bfloat16" => ComputeType::BFLOAT16,
        "float32" => ComputeType::FLOAT32,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_types_parse() {
        assert!(parse_compute_type("int8").is_some());
        assert!(parse_compute_type("float32").is_some());
        assert!(parse_compute_type("int4").is_none());
        // The list in the error message is the list the parser accepts.
        for name in COMPUTE_TYPES {
            assert!(parse_compute_type(name).is_some(), "{name}");
        }
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
    fn decoding_defaults_are_the_wire_contracts() {
        let m = ModelConfig::default();
        assert_eq!(m.decode_options(), DecodeOptions::default());
        assert_eq!(m.beam_size, DecodeOptions::default().beam_size as usize);
        assert_eq!(
            m.max_decoding_length,
            DecodeOptions::default().max_decoding_length as usize
        );
        let tuned = ModelConfig {
            beam_size: 4,
            max_decoding_length: 512,
            ..ModelConfig::default()
        };
        let options = tuned.decode_options();
        assert_eq!((options.beam_size, options.max_decoding_length), (4, 512));
        assert_eq!(
            options.repetition_penalty,
            DecodeOptions::default().repetition_penalty
        );
    }

    #[test]
    fn ranges_are_the_wire_contracts() {
        let at = |beam_size, max_decoding_length| {
            ModelConfig {
                beam_size,
                max_decoding_length,
                ..ModelConfig::default()
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        let (beam_max, length_max) = (
            *BEAM_SIZE.end() as usize,
            *MAX_DECODING_LENGTH.end() as usize,
        );
        assert!(at(beam_max, length_max).is_ok());
        assert_eq!(
            at(beam_max + 1, 256).unwrap_err(),
            format!("invalid configuration: model.beam_size must be in 1..={beam_max}")
        );
        assert_eq!(
            at(1, 0).unwrap_err(),
            "invalid configuration: model.max_decoding_length must be in 1..=1024"
        );
        assert!(at(0, 256).is_err());
        assert!(at(1, length_max + 1).is_err());
    }

    #[test]
    fn entry_keys_name_the_entry() {
        let m = ModelConfig {
            threads: 2,
            replicas: 3,
            ..ModelConfig::default()
        };
        let e = m.validate_as("models[2]").unwrap_err().to_string();
        assert!(
            e.contains("models[2].replicas must not exceed models[2].threads"),
            "{e}"
        );
    }
}
