//! What a converted CTranslate2 model says about its own limits, read from the header
//! of its `model.bin`: the variables' names and shapes (the weights are skipped, never
//! read). A model whose position encodings are a table (learned, or sinusoidal as
//! Hugging Face stores them: Marian/OPUS-MT, M2M-100, NLLB, BART) cannot take more
//! source tokens, nor produce more target tokens, than the table has rows; CTranslate2
//! fails the whole batch when asked ("No position encodings are defined for positions
//! >= 512").
//!
//! Hand-written (≈ 100 lines) because no crate reads this format: it is CTranslate2's
//! own (`src/models/model.cc`, `Model::load`), stable since binary version 1.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// Errors reading `model.bin`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a CTranslate2 model this reader knows.
    #[error("{path} is not a CTranslate2 model.bin this worker can read: {message}")]
    Format {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
}

/// The position limits of a model (`None`: no table, so no limit from the model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelLimits {
    /// Rows of the encoder's position table: most source tokens, `</s>` and language
    /// tokens included.
    pub source_positions: Option<usize>,
    /// Rows of the decoder's position table: most decoding steps, the start token and
    /// any target prefix included.
    pub target_positions: Option<usize>,
}

const ENCODER_TABLE: &str = "encoder/position_encodings/encodings";
const DECODER_TABLE: &str = "decoder/position_encodings/encodings";
/// A format far newer than the ones this reader was written against may lay the
/// header out differently: refuse rather than misread.
const NEWEST_KNOWN_VERSION: u32 = 6;

/// Reads the position limits of the model in `dir`. Blocking (seeks through the file).
pub fn read_limits(dir: &Path) -> Result<ModelLimits, SpecError> {
    let path = dir.join("model.bin");
    let shown = path.display().to_string();
    let file = File::open(&path).map_err(|source| SpecError::Io {
        path: shown.clone(),
        source,
    })?;
    parse(BufReader::new(file)).map_err(|e| match e {
        ParseError::Io(source) if source.kind() != std::io::ErrorKind::UnexpectedEof => {
            SpecError::Io {
                path: shown,
                source,
            }
        }
        ParseError::Io(_) => SpecError::Format {
            path: shown,
            message: "file ends inside the header".into(),
        },
        ParseError::Format(message) => SpecError::Format {
            path: shown,
            message,
        },
    })
}

enum ParseError {
    Io(std::io::Error),
    Format(String),
}

impl From<std::io::Error> for ParseError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

fn parse<R: Read + Seek>(mut r: R) -> Result<ModelLimits, ParseError> {
    let version = u32_le(&mut r)?;
    if version == 0 || version > NEWEST_KNOWN_VERSION {
        return Err(ParseError::Format(format!(
            "binary version {version} (this worker reads 1 to {NEWEST_KNOWN_VERSION})"
        )));
    }
    if version >= 2 {
        let _spec_name = string(&mut r)?;
        let _spec_revision = u32_le(&mut r)?;
    }
    let variables = u32_le(&mut r)?;
    let mut rows = std::collections::HashMap::new();
    for _ in 0..variables {
        let name = string(&mut r)?;
        let rank = u8_le(&mut r)?;
        let mut dims = Vec::with_capacity(usize::from(rank));
        for _ in 0..rank {
            dims.push(u32_le(&mut r)? as usize);
        }
        // Version 4 on: a dtype id; before: the item size. Either way one byte.
        let _dtype = u8_le(&mut r)?;
        let bytes = u32_le(&mut r)?;
        r.seek_relative(i64::from(bytes))?;
        if name == ENCODER_TABLE || name == DECODER_TABLE {
            if let Some(&first) = dims.first() {
                rows.insert(name, first);
            }
        }
    }
    // Version 3 on: aliases, e.g. an encoder sharing the decoder's table.
    let mut aliases = Vec::new();
    if version >= 3 {
        let count = u32_le(&mut r)?;
        for _ in 0..count {
            let alias = string(&mut r)?;
            let target = string(&mut r)?;
            aliases.push((alias, target));
        }
    }
    let lookup = |name: &str| {
        rows.get(name).copied().or_else(|| {
            aliases
                .iter()
                .find(|(alias, _)| alias == name)
                .and_then(|(_, target)| rows.get(target).copied())
        })
    };
    Ok(ModelLimits {
        source_positions: lookup(ENCODER_TABLE),
        target_positions: lookup(DECODER_TABLE),
    })
}

fn u8_le(r: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn u32_le(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// A length-prefixed (u16), NUL-terminated string.
fn string(r: &mut impl Read) -> Result<String, ParseError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)?;
    let mut bytes = vec![0u8; usize::from(u16::from_le_bytes(len))];
    r.read_exact(&mut bytes)?;
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|_| ParseError::Format("a name is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A model.bin header of `version` with `vars` (name, dims, payload bytes) and
    /// `aliases`, as CTranslate2's converter writes it.
    fn model_bin(version: u32, vars: &[(&str, &[u32], u32)], aliases: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        let s = |out: &mut Vec<u8>, v: &str| {
            out.extend_from_slice(&(v.len() as u16 + 1).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        };
        out.extend_from_slice(&version.to_le_bytes());
        if version >= 2 {
            s(&mut out, "TransformerSpec");
            out.extend_from_slice(&7u32.to_le_bytes());
        }
        out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
        for (name, dims, bytes) in vars {
            s(&mut out, name);
            out.push(dims.len() as u8);
            for d in *dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.push(4);
            out.extend_from_slice(&bytes.to_le_bytes());
            out.extend(std::iter::repeat_n(0xAB, *bytes as usize));
        }
        if version >= 3 {
            out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
            for (a, t) in aliases {
                s(&mut out, a);
                s(&mut out, t);
            }
        }
        out
    }

    fn limits(bytes: Vec<u8>) -> Result<ModelLimits, String> {
        parse(Cursor::new(bytes)).map_err(|e| match e {
            ParseError::Io(e) => e.to_string(),
            ParseError::Format(m) => m,
        })
    }

    #[test]
    fn reads_both_tables_and_skips_the_weights() {
        let bin = model_bin(
            6,
            &[
                ("encoder/embeddings_0/weight", &[100, 8], 3200),
                (ENCODER_TABLE, &[512, 8], 16384),
                (DECODER_TABLE, &[256, 8], 8192),
                ("decoder/scale_embeddings", &[], 1),
            ],
            &[],
        );
        assert_eq!(
            limits(bin),
            Ok(ModelLimits {
                source_positions: Some(512),
                target_positions: Some(256),
            })
        );
    }

    #[test]
    fn an_alias_shares_the_decoders_table() {
        let bin = model_bin(
            6,
            &[(DECODER_TABLE, &[1024, 4], 16384)],
            &[(ENCODER_TABLE, DECODER_TABLE)],
        );
        assert_eq!(
            limits(bin),
            Ok(ModelLimits {
                source_positions: Some(1024),
                target_positions: Some(1024),
            })
        );
    }

    #[test]
    fn no_table_means_no_limit_and_old_versions_parse() {
        let bin = model_bin(1, &[("encoder/layer_0/weight", &[4, 4], 64)], &[]);
        assert_eq!(limits(bin), Ok(ModelLimits::default()));
    }

    #[test]
    fn foreign_or_cut_files_are_refused_not_misread() {
        assert!(limits(model_bin(99, &[], &[]))
            .unwrap_err()
            .contains("version 99"));
        let mut cut = model_bin(6, &[(ENCODER_TABLE, &[512, 8], 16384)], &[]);
        cut.truncate(30);
        assert!(limits(cut).is_err());
        assert!(limits(Vec::new()).is_err());
    }

    #[test]
    fn the_bundled_copy_models_have_their_tables() {
        for dir in [
            "tests/fixtures/copy-model",
            "tests/fixtures/copy-model-multi",
        ] {
            let l = read_limits(Path::new(dir)).unwrap();
            assert_eq!(l.target_positions, Some(1024), "{dir}");
            assert_eq!(l.source_positions, Some(1024), "{dir}");
        }
    }
}
