//! Wire contract v1: job parsing and validation, and reply encoding.
//!
//! Parsing never panics: every malformed body becomes a [`JobError`] with the code the
//! README documents, and the `id` is echoed whenever it can be read.

use serde::{Deserialize, Serialize};

use crate::config::LimitsConfig;

/// The error codes of wire contract v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Body is not UTF-8 or not JSON.
    InvalidJson,
    /// Wrong shape, types, empty `texts`, unknown or out-of-range option.
    InvalidRequest,
    /// `source`/`target` name a pair this worker does not serve.
    UnsupportedLanguagePair,
    /// Body, text count or text length over the configured limits.
    TooLarge,
    /// `deadline_ms` passed before the job could be answered.
    DeadlineExceeded,
    /// The worker failed (e.g. the engine); not the client's fault.
    Internal,
}

impl ErrorCode {
    /// Every code, in a fixed order (metrics label values).
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidRequest,
        ErrorCode::UnsupportedLanguagePair,
        ErrorCode::TooLarge,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedLanguagePair => "unsupported_language_pair",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job that cannot be answered with translations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JobError {
    /// Contract error code.
    pub code: ErrorCode,
    /// Human-readable explanation, safe to return to the client.
    pub message: String,
    /// The job's `id`, when it could be read.
    pub id: Option<String>,
}

impl JobError {
    /// A new error without an id.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
        }
    }

    /// Attaches the job's id.
    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }
}

/// Per-job decoding options as sent by the client (all optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// 1..=16.
    pub beam_size: Option<u64>,
    /// 1..=1024.
    pub max_decoding_length: Option<u64>,
    /// Finite.
    pub length_penalty: Option<f32>,
    /// Finite and positive.
    pub repetition_penalty: Option<f32>,
    /// 0..=16.
    pub no_repeat_ngram_size: Option<u64>,
}

/// Decoding options after defaults are applied: everything that changes the output.
/// Part of the cache key and the unit of batching (one engine call, one options set).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    /// Beam size (1 = greedy).
    pub beam_size: u32,
    /// Maximum output tokens.
    pub max_decoding_length: u32,
    /// Length penalty.
    pub length_penalty: f32,
    /// Repetition penalty.
    pub repetition_penalty: f32,
    /// No-repeat n-gram size (0 = off).
    pub no_repeat_ngram_size: u32,
}

// Eq/Hash by bit pattern: options are compared for "same engine call", not numerically.
impl Eq for DecodeOptions {}
impl std::hash::Hash for DecodeOptions {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.beam_size.hash(state);
        self.max_decoding_length.hash(state);
        self.length_penalty.to_bits().hash(state);
        self.repetition_penalty.to_bits().hash(state);
        self.no_repeat_ngram_size.hash(state);
    }
}

impl DecodeOptions {
    /// Canonical bytes for the cache key (fixed width, so unambiguous).
    pub fn to_key_bytes(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[0..4].copy_from_slice(&self.beam_size.to_le_bytes());
        out[4..8].copy_from_slice(&self.max_decoding_length.to_le_bytes());
        out[8..12].copy_from_slice(&self.length_penalty.to_bits().to_le_bytes());
        out[12..16].copy_from_slice(&self.repetition_penalty.to_bits().to_le_bytes());
        out[16..20].copy_from_slice(&self.no_repeat_ngram_size.to_le_bytes());
        out
    }
}

impl JobOptions {
    /// Validates ranges and fills the gaps from `defaults`.
    pub fn resolve(&self, defaults: &DecodeOptions) -> Result<DecodeOptions, JobError> {
        fn ranged(name: &str, v: Option<u64>, lo: u64, hi: u64, d: u32) -> Result<u32, JobError> {
            match v {
                None => Ok(d),
                // `hi` is at most 1024, so the cast cannot truncate.
                Some(v) if (lo..=hi).contains(&v) => Ok(v as u32),
                Some(v) => Err(JobError::new(
                    ErrorCode::InvalidRequest,
                    format!("options.{name} must be in {lo}..={hi}, got {v}"),
                )),
            }
        }
        let beam_size = ranged("beam_size", self.beam_size, 1, 16, defaults.beam_size)?;
        let max_decoding_length = ranged(
            "max_decoding_length",
            self.max_decoding_length,
            1,
            1024,
            defaults.max_decoding_length,
        )?;
        let no_repeat_ngram_size = ranged(
            "no_repeat_ngram_size",
            self.no_repeat_ngram_size,
            0,
            16,
            defaults.no_repeat_ngram_size,
        )?;
        let length_penalty = self.length_penalty.unwrap_or(defaults.length_penalty);
        if !length_penalty.is_finite() {
            return Err(JobError::new(
                ErrorCode::InvalidRequest,
                "options.length_penalty must be a finite number",
            ));
        }
        let repetition_penalty = self
            .repetition_penalty
            .unwrap_or(defaults.repetition_penalty);
        if !(repetition_penalty.is_finite() && repetition_penalty > 0.0) {
            return Err(JobError::new(
                ErrorCode::InvalidRequest,
                "options.repetition_penalty must be a finite number above 0",
            ));
        }
        Ok(DecodeOptions {
            beam_size,
            max_decoding_length,
            length_penalty,
            repetition_penalty,
            no_repeat_ngram_size,
        })
    }
}

/// A parsed, size-checked job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Client's id, echoed in the reply.
    pub id: Option<String>,
    /// Texts to translate (a single `text` becomes a one-element list).
    pub texts: Vec<String>,
    /// Requested source language, if any.
    pub source: Option<String>,
    /// Requested target language, if any.
    pub target: Option<String>,
    /// Requested options (validated later against the model's defaults).
    pub options: JobOptions,
    /// Absolute Unix time in ms after which the answer is useless.
    pub deadline_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    texts: Option<Vec<String>>,
    text: Option<String>,
    source: Option<String>,
    target: Option<String>,
    id: Option<String>,
    options: Option<JobOptions>,
    deadline_ms: Option<u64>,
}

/// Reads only `id`, to echo it when the full parse failed.
#[derive(Deserialize)]
struct IdOnly {
    id: Option<String>,
}

/// Parses and size-checks a job body. Limits are enforced before the body is parsed
/// (size) or before any work (count, length).
pub fn parse_job(body: &[u8], limits: &LimitsConfig) -> Result<Job, JobError> {
    if body.len() > limits.max_body_bytes {
        return Err(JobError::new(
            ErrorCode::TooLarge,
            format!(
                "body is {} bytes, the limit is {}",
                body.len(),
                limits.max_body_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| JobError::new(ErrorCode::InvalidJson, format!("body is not UTF-8: {e}")))?;
    let raw: RawJob = serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|j| j.id);
                JobError::new(ErrorCode::InvalidRequest, format!("invalid job: {e}")).with_id(id)
            }
            Category::Syntax | Category::Eof | Category::Io => JobError::new(
                ErrorCode::InvalidJson,
                format!("body is not valid JSON: {e}"),
            ),
        }
    })?;
    let id = raw.id;
    let invalid = |m: &str| JobError::new(ErrorCode::InvalidRequest, m).with_id(id.clone());
    let texts = match (raw.text, raw.texts) {
        (Some(t), None) => vec![t],
        (None, Some(ts)) if ts.is_empty() => return Err(invalid("`texts` must not be empty")),
        (None, Some(ts)) => ts,
        (Some(_), Some(_)) => {
            return Err(invalid("give exactly one of `text` and `texts`, not both"))
        }
        (None, None) => return Err(invalid("missing `text` or `texts`")),
    };
    if texts.len() > limits.max_texts {
        return Err(JobError::new(
            ErrorCode::TooLarge,
            format!("{} texts, the limit is {}", texts.len(), limits.max_texts),
        )
        .with_id(id));
    }
    for (i, t) in texts.iter().enumerate() {
        // Byte length bounds the char count from above: skip the count for short texts.
        if t.len() > limits.max_text_chars {
            let chars = t.chars().count();
            if chars > limits.max_text_chars {
                return Err(JobError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "text {i} has {chars} characters, the limit is {}",
                        limits.max_text_chars
                    ),
                )
                .with_id(id));
            }
        }
    }
    Ok(Job {
        id,
        texts,
        source: raw.source,
        target: raw.target,
        options: raw.options.unwrap_or_default(),
        deadline_ms: raw.deadline_ms,
    })
}

/// A reply body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Reply {
    /// Every text translated.
    Ok {
        /// The job's id.
        id: Option<String>,
        /// `translations[i]` answers input `i`.
        translations: Vec<String>,
        /// `cached[i]`: whether `translations[i]` came from the cache.
        cached: Vec<bool>,
        /// The model id.
        model: String,
    },
    /// The job failed as a whole.
    Error {
        /// The job's id.
        id: Option<String>,
        /// What went wrong.
        error: ErrorBody,
    },
}

/// The `error` object of an error reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorBody {
    /// Contract error code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl From<JobError> for Reply {
    fn from(e: JobError) -> Self {
        Reply::Error {
            id: e.id,
            error: ErrorBody {
                code: e.code,
                message: e.message,
            },
        }
    }
}

impl Reply {
    /// JSON bytes of the reply.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, bools and a fieldless enum cannot fail.
        serde_json::to_vec(self).expect("reply serialisation is infallible")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_texts: 3,
            max_text_chars: 5,
            max_body_bytes: 200,
        }
    }

    fn code(body: &[u8]) -> ErrorCode {
        parse_job(body, &limits()).unwrap_err().code
    }

    #[test]
    fn parses_single_and_multi() {
        let j = parse_job(br#"{"text":"hi","id":"a"}"#, &limits()).unwrap();
        assert_eq!(j.texts, vec!["hi"]);
        assert_eq!(j.id.as_deref(), Some("a"));
        let j = parse_job(
            br#"{"texts":["a","",""],"source":"ko","target":"en","deadline_ms":5,"options":{"beam_size":2}}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(j.texts.len(), 3);
        assert_eq!(j.options.beam_size, Some(2));
        assert_eq!(j.deadline_ms, Some(5));
    }

    #[test]
    fn classifies_bad_bodies() {
        assert_eq!(code(b"not json"), ErrorCode::InvalidJson);
        assert_eq!(code(b"{\"text\":\"\xff\"}"), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{"text":"ab"#), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{"text":"\ud800"}"#), ErrorCode::InvalidJson);
        assert_eq!(code(b"[1,2]"), ErrorCode::InvalidRequest);
        assert_eq!(code(b"\"s\""), ErrorCode::InvalidRequest);
        assert_eq!(code(b"7"), ErrorCode::InvalidRequest);
        assert_eq!(code(b"null"), ErrorCode::InvalidRequest);
        assert_eq!(code(b"{}"), ErrorCode::InvalidRequest);
        assert_eq!(
            code(br#"{"text":"a","texts":["b"]}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(code(br#"{"texts":[]}"#), ErrorCode::InvalidRequest);
        assert_eq!(code(br#"{"texts":[1]}"#), ErrorCode::InvalidRequest);
        assert_eq!(code(br#"{"texts":[null]}"#), ErrorCode::InvalidRequest);
        assert_eq!(code(br#"{"text":{}}"#), ErrorCode::InvalidRequest);
        assert_eq!(
            code(br#"{"text":"a","colour":1}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(br#"{"text":"a","options":{"beam":1}}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(br#"{"text":"a","deadline_ms":1e400}"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(br#"{"text":"a","deadline_ms":99999999999999999999999}"#),
            ErrorCode::InvalidRequest
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse_job(
            deep.as_bytes(),
            &LimitsConfig {
                max_body_bytes: 1 << 20,
                ..limits()
            },
        )
        .unwrap_err();
        assert!(matches!(
            e.code,
            ErrorCode::InvalidJson | ErrorCode::InvalidRequest
        ));
    }

    #[test]
    fn enforces_limits() {
        assert_eq!(code(&[b' '; 201]), ErrorCode::TooLarge);
        assert_eq!(code(br#"{"texts":["a","b","c","d"]}"#), ErrorCode::TooLarge);
        assert_eq!(code(br#"{"text":"abcdef"}"#), ErrorCode::TooLarge);
        // Five multi-byte characters are within a five-character limit.
        assert!(parse_job("{\"text\":\"한국어번역\"}".as_bytes(), &limits()).is_ok());
    }

    #[test]
    fn echoes_id_on_shape_errors() {
        let e = parse_job(br#"{"id":"x","texts":[]}"#, &limits()).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("x"));
        let e = parse_job(br#"{"id":"y","texts":[3]}"#, &limits()).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("y"));
    }

    #[test]
    fn resolves_options_with_ranges() {
        let d = DecodeOptions {
            beam_size: 1,
            max_decoding_length: 256,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
        };
        assert_eq!(JobOptions::default().resolve(&d).unwrap(), d);
        let o = JobOptions {
            beam_size: Some(4),
            ..Default::default()
        };
        assert_eq!(o.resolve(&d).unwrap().beam_size, 4);
        for bad in [
            JobOptions {
                beam_size: Some(0),
                ..Default::default()
            },
            JobOptions {
                beam_size: Some(17),
                ..Default::default()
            },
            JobOptions {
                max_decoding_length: Some(1025),
                ..Default::default()
            },
            JobOptions {
                no_repeat_ngram_size: Some(17),
                ..Default::default()
            },
            JobOptions {
                repetition_penalty: Some(0.0),
                ..Default::default()
            },
            JobOptions {
                length_penalty: Some(f32::INFINITY),
                ..Default::default()
            },
        ] {
            assert_eq!(bad.resolve(&d).unwrap_err().code, ErrorCode::InvalidRequest);
        }
    }

    #[test]
    fn replies_match_the_contract() {
        let ok = Reply::Ok {
            id: Some("a".into()),
            translations: vec!["x".into()],
            cached: vec![true],
            model: "m".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&ok.to_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"a","status":"ok","translations":["x"],"cached":[true],"model":"m"})
        );
        let err: Reply = JobError::new(ErrorCode::TooLarge, "big").into();
        let v: serde_json::Value = serde_json::from_slice(&err.to_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":null,"status":"error","error":{"code":"too_large","message":"big"}})
        );
    }
}
