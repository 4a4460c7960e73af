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
    /// [`ALTERNATIVES`]: how many alternative translations (the distinct runners-up
    /// of the beam search) to give per text besides the best one; 0 = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternatives: Option<u64>,
}

/// Allowed `options.beam_size` (and `model.beam_size`).
pub const BEAM_SIZE: RangeInclusive<u64> = 1..=16;
/// Allowed `options.max_decoding_length` (and `model.max_decoding_length`).
pub const MAX_DECODING_LENGTH: RangeInclusive<u64> = 1..=1024;
/// Allowed `options.no_repeat_ngram_size`.
pub const NO_REPEAT_NGRAM_SIZE: RangeInclusive<u64> = 0..=16;
/// Allowed `options.alternatives`. Each alternative widens the beam (it must hold
/// `1 + alternatives` hypotheses), so a text costs about `1 + alternatives` times a
/// greedy one: 8 is more than a "pick another wording" list shows, and keeps the beam
/// within [`BEAM_SIZE`].
pub const ALTERNATIVES: RangeInclusive<u64> = 0..=8;

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
    /// Alternative translations asked for per text (0 = none): the engine keeps
    /// `1 + alternatives` hypotheses, so a batch never mixes texts that differ here.
    pub alternatives: u32,
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
        self.alternatives.hash(state);
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
            alternatives: 0,
        }
    }
}

impl DecodeOptions {
    /// Canonical bytes for the cache key: 20 bytes, or 24 when alternatives are asked
    /// for. Fixed widths, and the caller length-prefixes them, so unambiguous; the
    /// bytes of options without alternatives are those of versions before
    /// alternatives existed, so their cache entries keep their keys.
    pub fn to_key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.beam_size.to_le_bytes());
        out.extend_from_slice(&self.max_decoding_length.to_le_bytes());
        out.extend_from_slice(&self.length_penalty.to_bits().to_le_bytes());
        out.extend_from_slice(&self.repetition_penalty.to_bits().to_le_bytes());
        out.extend_from_slice(&self.no_repeat_ngram_size.to_le_bytes());
        if self.alternatives > 0 {
            out.extend_from_slice(&self.alternatives.to_le_bytes());
        }
        out
    }

    /// Hypotheses the engine keeps per text: the best one and the alternatives.
    pub fn num_hypotheses(&self) -> u32 {
        self.alternatives.saturating_add(1)
    }

    /// The same options without alternatives: what a text that gets none (a
    /// document's sentence) is translated with, at the same beam, so it shares its
    /// cache entry and its translation with a job that asked for none.
    pub fn without_alternatives(self) -> Self {
        Self {
            alternatives: 0,
            ..self
        }
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
        let alternatives = ranged(
            "alternatives",
            self.alternatives,
            ALTERNATIVES,
            defaults.alternatives,
        )?;
        // The beam must hold every hypothesis asked for (CTranslate2 refuses fewer):
        // the effective beam, which is what the cache key and the batching see.
        let beam_size = beam_size.max(alternatives + 1);
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
            alternatives,
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

    #[test]
    fn alternatives_are_bounded_and_widen_the_beam() {
        let d = DecodeOptions::default();
        let with = |alternatives: u64, beam_size: Option<u64>| JobOptions {
            alternatives: Some(alternatives),
            beam_size,
            ..Default::default()
        };
        // Absent and 0 are the same: no alternatives, the beam as it was.
        assert_eq!(with(0, None).resolve(&d).unwrap(), d);
        let o = with(3, None).resolve(&d).unwrap();
        assert_eq!((o.alternatives, o.num_hypotheses(), o.beam_size), (3, 4, 4));
        // A wider beam asked for is kept; a narrower one is widened.
        assert_eq!(with(2, Some(6)).resolve(&d).unwrap().beam_size, 6);
        assert_eq!(with(2, Some(2)).resolve(&d).unwrap().beam_size, 3);
        let top = *ALTERNATIVES.end();
        let o = with(top, None).resolve(&d).unwrap();
        assert!(BEAM_SIZE.contains(&u64::from(o.beam_size)), "{o:?}");
        let e = with(top + 1, None).resolve(&d).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert_eq!(e.message, "options.alternatives must be in 0..=8, got 9");
        // Without them, a text gets the same effective beam.
        assert_eq!(
            o.without_alternatives(),
            DecodeOptions {
                beam_size: o.beam_size,
                ..d
            }
        );
    }

    #[test]
    fn key_bytes_of_plain_options_are_unchanged_and_alternatives_change_them() {
        let d = DecodeOptions::default();
        // The layout from before alternatives: five little-endian u32 fields.
        let mut plain = Vec::new();
        for word in [1u32, 256, 1.0f32.to_bits(), 1.0f32.to_bits(), 0] {
            plain.extend_from_slice(&word.to_le_bytes());
        }
        assert_eq!(d.to_key_bytes(), plain);
        let alt = DecodeOptions {
            alternatives: 2,
            ..d
        };
        assert_eq!(alt.to_key_bytes().len(), 24);
        assert_ne!(alt.to_key_bytes(), d.to_key_bytes());
        assert_ne!(
            alt.to_key_bytes(),
            DecodeOptions {
                alternatives: 3,
                ..d
            }
            .to_key_bytes()
        );
        // Options that differ only in alternatives are never one engine call.
        assert_ne!(alt, d);
    }
}
