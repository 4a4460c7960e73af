//! Decoding options: as a job sends them, and as the worker resolves them.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::error::{ErrorCode, JobError};

/// Per-job decoding options as sent by the client (all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// [`BEAM_SIZE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beam_size: Option<u64>,
    /// [`MAX_DECODING_LENGTH`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_decoding_length: Option<u64>,
    /// Finite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length_penalty: Option<f32>,
    /// Finite and above 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// [`NO_REPEAT_NGRAM_SIZE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_repeat_ngram_size: Option<u64>,
}

/// Allowed `options.beam_size` (and `model.beam_size`).
pub const BEAM_SIZE: RangeInclusive<u64> = 1..=16;
/// Allowed `options.max_decoding_length` (and `model.max_decoding_length`).
pub const MAX_DECODING_LENGTH: RangeInclusive<u64> = 1..=1024;
/// Allowed `options.no_repeat_ngram_size`.
pub const NO_REPEAT_NGRAM_SIZE: RangeInclusive<u64> = 0..=16;

impl JobOptions {
    /// Whether no option is set (the field is then left out of a job).
    pub fn is_empty(&self) -> bool {
        *self == JobOptions::default()
    }
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

impl Default for DecodeOptions {
    /// The contract's defaults: greedy, 256 tokens, no penalties (a worker's
    /// `model.beam_size` and `model.max_decoding_length` replace the first two).
    fn default() -> Self {
        Self {
            beam_size: 1,
            max_decoding_length: 256,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
        }
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
        fn ranged(
            name: &str,
            v: Option<u64>,
            range: RangeInclusive<u64>,
            d: u32,
        ) -> Result<u32, JobError> {
            match v {
                None => Ok(d),
                // Every range ends at most at 1024, so the cast cannot truncate.
                Some(v) if range.contains(&v) => Ok(v as u32),
                Some(v) => Err(JobError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "options.{name} must be in {}..={}, got {v}",
                        range.start(),
                        range.end()
                    ),
                )),
            }
        }
        let beam_size = ranged("beam_size", self.beam_size, BEAM_SIZE, defaults.beam_size)?;
        let max_decoding_length = ranged(
            "max_decoding_length",
            self.max_decoding_length,
            MAX_DECODING_LENGTH,
            defaults.max_decoding_length,
        )?;
        let no_repeat_ngram_size = ranged(
            "no_repeat_ngram_size",
            self.no_repeat_ngram_size,
            NO_REPEAT_NGRAM_SIZE,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_options_with_ranges() {
        let d = DecodeOptions::default();
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
}
