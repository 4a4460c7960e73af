//! Error codes of wire contract v1, the error a job gets, and its JSON shape.

use serde::{Deserialize, Serialize};

/// The error codes of wire contract v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl std::str::FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    /// The code spelled `s` on the wire.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

/// A string that is not one of the contract's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

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

/// The `error` object of an error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Contract error code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl From<JobError> for ErrorBody {
    fn from(e: JobError) -> Self {
        ErrorBody {
            code: e.code,
            message: e.message,
        }
    }
}
