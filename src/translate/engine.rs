//! The CTranslate2 engine: model loading, tokenization and blocking batch translation.
//!
//! Everything here blocks: the batcher calls [`Backend::translate`] from dedicated OS
//! threads (one per replica), never from the async runtime.

use std::io::Read;
use std::path::Path;

use ct2rs::sys::{ComputeType, Config as Ct2Config, Device, TranslationOptions, Translator};
use ct2rs::tokenizers::hf;
use ct2rs::Tokenizer as _;
use sentencepiece::SentencePieceProcessor;

use crate::config::ModelConfig;
use translation_client::wire::DecodeOptions;

/// Errors from the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model directory is missing or unreadable (`path` says, for a relative one,
    /// which working directory it was resolved against).
    #[error(
        "cannot read model directory {path} (model.path or a [[models]] entry's path; \
         TW_MODEL__PATH): {message}"
    )]
    ModelFiles {
        /// The directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// CTranslate2 could not load the model.
    #[error("cannot load model {path}: {message}")]
    Load {
        /// The directory.
        path: String,
        /// CTranslate2's message.
        message: String,
    },
    /// None of `tokenizer.json`, `source.spm` + `target.spm` or
    /// `sentencepiece.bpe.model` could be loaded.
    #[error(
        "cannot load a tokenizer from {path} (need tokenizer.json, source.spm and \
         target.spm, or sentencepiece.bpe.model): {message}"
    )]
    Tokenizer {
        /// The directory.
        path: String,
        /// The tokenizer's message.
        message: String,
    },
    /// Tokenizing or detokenizing one text failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// A translation call failed.
    #[error("translation failed: {0}")]
    Translate(String),
}

/// One source's translation: the best hypothesis and, when the options ask for
/// alternatives, the distinct runners-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translation {
    /// The best hypothesis: what a job without alternatives gets at the same beam.
    pub best: String,
    /// Other hypotheses, best first: at most `options.alternatives`, none equal to
    /// `best` or to one another (see [`distinct_alternatives`]).
    pub alternatives: Vec<String>,
}

impl From<String> for Translation {
    fn from(best: String) -> Self {
        Self {
            best,
            alternatives: Vec::new(),
        }
    }
}

/// What the batcher needs from a translation backend. The real one is [`Engine`];
/// tests substitute fakes.
pub trait Backend: Send + Sync + 'static {
    /// Translates tokenized `sources` (one engine call, one options set) and returns one
    /// detokenized translation per source, in order. `target_prefixes` is empty, or
    /// holds one entry per source: the target-language token a multilingual model
    /// must start its output with (dropped from the translation). Blocks.
    fn translate(
        &self,
        sources: &[Vec<String>],
        target_prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<String>, EngineError>;

    /// Like [`Backend::translate`], with up to `options.alternatives` alternatives per
    /// source. The batcher calls this one. By default a backend has none to give (its
    /// translations come back without alternatives); [`Engine`] asks CTranslate2 for
    /// `1 + alternatives` hypotheses.
    fn translate_alternatives(
        &self,
        sources: &[Vec<String>],
        target_prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<Translation>, EngineError> {
        self.translate(sources, target_prefixes, options)
            .map(|outs| outs.into_iter().map(Translation::from).collect())
    }

    /// How many batches may run at once (engine replicas).
    fn replicas(&self) -> usize;
}

/// The alternatives among `candidates` (hypotheses after the best, best first): each
/// different from `best` and from the ones kept before it (two token sequences can
/// read the same once detokenized), at most `max`. LibreTranslate filters its
/// hypotheses the same way.
pub fn distinct_alternatives(
    best: &str,
    candidates: impl IntoIterator<Item = String>,
    max: usize,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in candidates {
        if out.len() == max {
            break;
        }
        if c != best && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// A loaded CTranslate2 translator and its tokenizer.
pub struct Engine {
    translator: Translator,
    tokenizer: ModelTokenizer,
    /// The model adds `</s>` to every source itself (`add_source_eos` in config.json),
    /// so the tokenizer's own `</s>` must be dropped or the source carries two.
    strip_eos: bool,
    replicas: usize,
    /// Source tokens CTranslate2 reads: `model.max_input_length`, or the model's own
    /// position limit when that is 0.
    max_input_length: usize,
    /// Most decoding steps the model has positions for (`None`: no limit).
    max_decoding_steps: Option<usize>,
    fingerprint: [u8; 32],
}

/// Source tokens when neither the configuration nor the model sets a limit (a model
/// whose positions are computed, not tabled).
pub const DEFAULT_MAX_INPUT_LENGTH: usize = 1024;

/// The source-token limit to use: the configured one (0: the model's), never above
/// the model's position table. Refuses a configured value over the model's limit, as
/// every text that long would fail in CTranslate2.
pub fn input_limit(configured: usize, model: Option<usize>) -> Result<usize, String> {
    match (configured, model) {
        (0, Some(limit)) => Ok(limit),
        (0, None) => Ok(DEFAULT_MAX_INPUT_LENGTH),
        (n, Some(limit)) if n > limit => Err(format!(
            "model.max_input_length = {n} is above the model's {limit} source positions \
             (its position table has {limit} rows): set it to {limit} or less, or to 0 \
             for the model's own limit"
        )),
        (n, _) => Ok(n),
    }
}

/// `path` for messages: a relative path also names the working directory it is
/// resolved against (the defaults are relative to the repository root, and a worker
/// started elsewhere otherwise reports only "tests/fixtures/copy-model: not found").
fn shown_path(path: &Path) -> String {
    if path.is_absolute() {
        return path.display().to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => format!(
            "{} (relative to the working directory {})",
            path.display(),
            cwd.display()
        ),
        Err(_) => path.display().to_string(),
    }
}

impl Engine {
    /// Loads the model described by `cfg`. Blocks (reads and hashes the model files).
    pub fn load(cfg: &ModelConfig) -> Result<Self, EngineError> {
        let path = shown_path(&cfg.path);
        let fingerprint = fingerprint_dir(&cfg.path).map_err(|e| EngineError::ModelFiles {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Before the (slow) model load: a wrong language token fails fast.
        if cfg.language_tokens != crate::config::LanguageTokens::None {
            let (tokens, _) = super::languages::pair_tokens(
                cfg.language_tokens,
                &cfg.served_pairs(),
                &cfg.language_codes,
            );
            let wanted: Vec<String> = tokens.into_values().collect();
            let missing =
                missing_tokens(&cfg.path, &wanted).map_err(|message| EngineError::ModelFiles {
                    path: path.clone(),
                    message,
                })?;
            if !missing.is_empty() {
                return Err(EngineError::Load {
                    path: path.clone(),
                    message: format!(
                        "language tokens {missing:?} are not in the model's vocabulary \
                         (check model.language_tokens and model.language_codes)"
                    ),
                });
            }
        }
        let limits =
            crate::translate::read_limits(&cfg.path).map_err(|e| EngineError::ModelFiles {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let max_input_length =
            input_limit(cfg.max_input_length, limits.source_positions).map_err(|message| {
                EngineError::Load {
                    path: path.clone(),
                    message,
                }
            })?;
        tracing::info!(
            path = %path,
            max_input_length,
            model_source_positions = limits.source_positions,
            model_target_positions = limits.target_positions,
            "model limits"
        );
        let (replicas, threads_per_replica) = cfg.threading();
        let ct2_config = Ct2Config {
            device: match cfg.device {
                crate::config::Device::Cpu => Device::CPU,
                crate::config::Device::Cuda => Device::CUDA,
            },
            // Validated at config load; `default` is a safe fallback.
            compute_type: crate::config::parse_compute_type(&cfg.compute_type)
                .unwrap_or(ComputeType::DEFAULT),
            // One entry per replica on the same device: each replica runs its own batch
            // on its own threads (on 2 cores, 2×1 measured 1.3× faster than 1×2).
            device_indices: vec![0; replicas],
            num_threads_per_replica: threads_per_replica,
            ..Ct2Config::default()
        };
        let translator =
            new_translator(&cfg.path, ct2_config, cfg.inference_nice).map_err(|message| {
                EngineError::Load {
                    path: path.clone(),
                    message,
                }
            })?;
        let ct2_json = std::fs::read(cfg.path.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let eos = ct2_json
            .as_ref()
            .and_then(|v| v.get("eos_token")?.as_str())
            .unwrap_or(EOS)
            .to_owned();
        let strip_eos = ct2_json
            .as_ref()
            .and_then(|v| v.get("add_source_eos").and_then(|b| b.as_bool()))
            .unwrap_or(false);
        let style = SpecialTokens::for_model(cfg.language_tokens, strip_eos);
        let tokenizer = ModelTokenizer::load(&cfg.path, eos, style)
            .map_err(|message| EngineError::Tokenizer { path, message })?;
        Ok(Self {
            translator,
            tokenizer,
            strip_eos,
            replicas,
            max_input_length,
            // The start token takes the first position.
            max_decoding_steps: limits.target_positions.map(|n| n.saturating_sub(1).max(1)),
            fingerprint,
        })
    }

    /// Source tokens a text may have (`</s>` and language tokens included): longer
    /// ones are cut (see [`Engine::tokenize`]).
    pub fn max_input_length(&self) -> usize {
        self.max_input_length
    }

    /// Hash of the model directory's files: part of every cache key.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Source tokens of `text`, with exactly one end-of-sentence token in the end (added
    /// here, or by CTranslate2 when the model says `add_source_eos`), after
    /// `language_token` when the model needs one (NLLB, M2M-100), cut to what
    /// CTranslate2 reads (see [`Engine::fits`] to split instead).
    pub fn tokenize(
        &self,
        text: &str,
        language_token: Option<&str>,
    ) -> Result<Vec<String>, EngineError> {
        self.tokenize_measured(text, language_token)
            .map(|(tokens, _)| tokens)
    }

    /// [`Engine::tokenize`], and whether the text was longer than the model reads
    /// (the contract's `truncated`).
    pub fn tokenize_measured(
        &self,
        text: &str,
        language_token: Option<&str>,
    ) -> Result<(Vec<String>, bool), EngineError> {
        let mut tokens = self.encode(text)?;
        if let Some(lang) = language_token {
            tokens.insert(0, lang.to_owned());
        }
        // The end-of-sentence token counts; CTranslate2 adds it itself when the model
        // says `add_source_eos`.
        let long = tokens.len() + usize::from(self.strip_eos) > self.max_input_length;
        Ok((cut_source(tokens, self.max_input_length), long))
    }

    /// The text of output tokens, as the model's own Hugging Face tokenizer writes it.
    pub fn detokenize(&self, tokens: Vec<String>) -> Result<String, EngineError> {
        self.tokenizer.decode(tokens).map_err(EngineError::Tokenize)
    }

    /// Whether `text` (with a language token if `with_language_token`) fits the
    /// model's input limit uncut.
    pub fn fits(&self, text: &str, with_language_token: bool) -> Result<bool, EngineError> {
        let n = self.encode(text)?.len() + usize::from(with_language_token);
        // The end-of-sentence token counts; CTranslate2 adds it itself when the model
        // says `add_source_eos`.
        Ok(n + usize::from(self.strip_eos) <= self.max_input_length)
    }

    /// The tokenizer's pieces of `text`, ending in `</s>` unless the model adds it.
    fn encode(&self, text: &str) -> Result<Vec<String>, EngineError> {
        let mut tokens = self.tokenizer.encode(text).map_err(EngineError::Tokenize)?;
        if self.strip_eos && tokens.last().is_some_and(|t| *t == self.tokenizer.eos()) {
            tokens.pop();
        }
        Ok(tokens)
    }

    /// Output tokens (best hypothesis) of each source, target prefix included as
    /// CTranslate2 returns it. Blocks.
    pub fn hypotheses(
        &self,
        sources: &[Vec<String>],
        target_prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<Vec<String>>, EngineError> {
        Ok(self
            .n_best(sources, target_prefixes, options)?
            .into_iter()
            .map(|h| h.into_iter().next().unwrap_or_default())
            .collect())
    }

    /// Output tokens of each source's hypotheses, best first: `1 + options.alternatives`
    /// of them (fewer if the search finished fewer), target prefix included as
    /// CTranslate2 returns it. Blocks.
    pub fn n_best(
        &self,
        sources: &[Vec<String>],
        target_prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<Vec<Vec<String>>>, EngineError> {
        let opts = self.ct2_options(options);
        let results = if target_prefixes.iter().any(Option::is_some) {
            if target_prefixes.len() != sources.len() {
                return Err(EngineError::Translate(format!(
                    "{} target prefixes for {} inputs",
                    target_prefixes.len(),
                    sources.len()
                )));
            }
            let prefixes: Vec<Vec<String>> = target_prefixes
                .iter()
                .map(|p| p.iter().cloned().collect())
                .collect();
            self.translator
                .translate_batch_with_target_prefix(sources, &prefixes, &opts, None)
        } else {
            self.translator.translate_batch(sources, &opts, None)
        }
        .map_err(|e| EngineError::Translate(format!("{e:#}")))?;
        if results.len() != sources.len() {
            return Err(EngineError::Translate(format!(
                "{} results for {} inputs",
                results.len(),
                sources.len()
            )));
        }
        Ok(results.into_iter().map(|r| r.hypotheses).collect())
    }
}

/// The end-of-sentence token of Marian, M2M-100 and NLLB models (CTranslate2's
/// `config.json` names it).
const EOS: &str = "</s>";

/// A model's own tokenizer, found by the files its directory has.
enum ModelTokenizer {
    /// `tokenizer.json` (NLLB and most Hugging Face models), without the special
    /// tokens its post-processor adds: NLLB's template would put the language it was
    /// saved with in front of every text, whatever the job's source. The worker adds
    /// the job's language token and the end-of-sentence token (`.1`) itself.
    // Boxed: the tokenizer is over a kilobyte; one per model, read on every text.
    Hf(Box<hf::Tokenizer>, String),
    /// `source.spm` + `target.spm` (OPUS-MT), or one `sentencepiece.bpe.model` for
    /// both sides (M2M-100). Ends every source with `</s>`.
    SentencePiece {
        /// The source side's model.
        source: SentencePieceProcessor,
        /// The target side's model.
        target: SentencePieceProcessor,
        /// How the model's own Hugging Face tokenizer writes special tokens.
        style: SpecialTokens,
    },
}

/// How output tokens become text: as the Python pipeline for the model's origin does.
///
/// A model converted from Hugging Face (`ct2-transformers-converter`) is used with its
/// Hugging Face tokenizer, which writes tokens that are not ordinary pieces (`</s>`,
/// `<unk>`, language codes) as they are, where SentencePiece alone would drop them or
/// write ` ⁇ `, any token outside its vocabulary as `<unk>`, and trims the text.
/// Checked against those tokenizers by `tests/converted.rs`. A model converted from
/// Marian's own checkpoint (OPUS-MT's releases, `ct2-opus-mt-converter`) is used with
/// SentencePiece alone, as CTranslate2's OPUS-MT guide shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpecialTokens {
    /// SentencePiece's own decoding.
    SentencePiece,
    /// `MarianTokenizer`: a space after each special token.
    Marian,
    /// `M2M100Tokenizer` (and NLLB's SentencePiece tokenizer): nothing after it.
    Fairseq,
}

impl SpecialTokens {
    /// The style of a model that marks languages as `tokens` says. `framework_native`:
    /// its `config.json` says `add_source_eos`, which CTranslate2's converters for
    /// Marian, fairseq and OpenNMT checkpoints write and the Hugging Face one does not.
    fn for_model(tokens: crate::config::LanguageTokens, framework_native: bool) -> Self {
        match tokens {
            crate::config::LanguageTokens::None if framework_native => Self::SentencePiece,
            crate::config::LanguageTokens::None => Self::Marian,
            crate::config::LanguageTokens::M2m100 | crate::config::LanguageTokens::Nllb => {
                Self::Fairseq
            }
        }
    }
}

/// Whether Python's `str.strip()` removes `c`: Unicode white space and the four
/// ASCII separators `\x1c`–`\x1f`, which Rust's `char::is_whitespace` keeps.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// The text of `tokens` as a SentencePiece model's Hugging Face tokenizer writes it
/// (see [`SpecialTokens`]): runs of ordinary pieces decoded by `sp`, other tokens
/// written out, then trimmed.
fn decode_pieces(
    sp: &SentencePieceProcessor,
    tokens: &[String],
    style: SpecialTokens,
) -> Result<String, String> {
    if style == SpecialTokens::SentencePiece {
        return sp.decode_pieces(tokens).map_err(|e| e.to_string());
    }
    let control = [sp.bos_id(), sp.eos_id(), sp.pad_id()];
    let ordinary = |t: &str| -> bool {
        match sp.piece_to_id(t) {
            Ok(Some(id)) => !control.contains(&Some(id)),
            _ => false,
        }
    };
    let mut out = String::new();
    let mut run: Vec<&str> = Vec::new();
    for token in tokens {
        if ordinary(token) {
            run.push(token);
            continue;
        }
        out.push_str(&sp.decode_pieces(&run).map_err(|e| e.to_string())?);
        run.clear();
        // fairseq's filler entries ("madeupword0"…) pad M2M-100's vocabulary in
        // CTranslate2's copy but are not in the tokenizer's: written as `<unk>`.
        let filler = token
            .strip_prefix("madeupword")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        out.push_str(if filler { UNK } else { token });
        if style == SpecialTokens::Marian {
            out.push(' ');
        }
    }
    out.push_str(&sp.decode_pieces(&run).map_err(|e| e.to_string())?);
    Ok(out.trim_matches(python_space).to_owned())
}

/// The unknown-token of Marian, M2M-100 and NLLB models.
const UNK: &str = "<unk>";

impl ModelTokenizer {
    /// The first of the layouts above that `dir` has. `eos`: the model's
    /// end-of-sentence token; `style`: how its tokenizer writes special tokens.
    fn load(dir: &Path, eos: String, style: SpecialTokens) -> Result<Self, String> {
        if dir.join("tokenizer.json").is_file() {
            let mut t = hf::Tokenizer::new(dir).map_err(|e| format!("tokenizer.json: {e:#}"))?;
            t.disable_spacial_token();
            return Ok(Self::Hf(Box::new(t), eos));
        }
        let (src, tgt) = (dir.join("source.spm"), dir.join("target.spm"));
        let (src, tgt) = if src.is_file() || tgt.is_file() {
            (src, tgt)
        } else {
            let one = dir.join("sentencepiece.bpe.model");
            (one.clone(), one)
        };
        let open = |path: &Path| {
            SentencePieceProcessor::open(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        Ok(Self::SentencePiece {
            source: open(&src)?,
            target: open(&tgt)?,
            style,
        })
    }

    /// The token every encoded source ends with.
    fn eos(&self) -> &str {
        match self {
            Self::Hf(_, eos) => eos,
            Self::SentencePiece { .. } => EOS,
        }
    }

    /// The source tokens of `text`, ending in the end-of-sentence token.
    fn encode(&self, text: &str) -> Result<Vec<String>, String> {
        match self {
            Self::Hf(t, eos) => t
                .encode(text)
                .map(|mut tokens| {
                    tokens.push(eos.clone());
                    tokens
                })
                .map_err(|e| format!("{e:#}")),
            // A character outside the vocabulary comes back as itself (with the
            // unknown id): CTranslate2 reads it as `<unk>`, as the tokenizer's id would.
            Self::SentencePiece { source, .. } => source
                .encode(text)
                .map(|pieces| {
                    let mut tokens: Vec<String> = pieces.into_iter().map(|p| p.piece).collect();
                    tokens.push(EOS.to_owned());
                    tokens
                })
                .map_err(|e| e.to_string()),
        }
    }

    /// The text of output tokens.
    fn decode(&self, tokens: Vec<String>) -> Result<String, String> {
        match self {
            Self::Hf(t, _) => t.decode(tokens).map_err(|e| format!("{e:#}")),
            Self::SentencePiece { target, style, .. } => decode_pieces(target, &tokens, *style),
        }
    }
}

/// What CTranslate2 reads of a source longer than `max_len` tokens: it keeps the first
/// `max_len` positions and writes the end-of-sentence (and a language code after it)
/// into the last ones, so the first `max_len` and the last two tokens give it the same
/// input. The rest would only wait in memory for a batch (≈ 80 bytes a token, tens of
/// times the text) and inflate the batcher's token counts.
fn cut_source(mut tokens: Vec<String>, max_len: usize) -> Vec<String> {
    let n = tokens.len();
    if max_len == 0 || n <= max_len + 2 {
        return tokens;
    }
    tokens.drain(max_len..n - 2);
    tokens.shrink_to_fit();
    tokens
}

impl Engine {
    /// One raw `translate_batch` call over all `sources`, letting CTranslate2 split them
    /// into length-sorted sub-batches of `max_batch_size` spread over its replicas:
    /// the engine's own ceiling, used by `bench-engine`. Returns output token counts.
    pub fn translate_raw(
        &self,
        sources: &[Vec<String>],
        options: &DecodeOptions,
        max_batch_size: usize,
    ) -> Result<Vec<usize>, EngineError> {
        let opts = TranslationOptions {
            max_batch_size,
            ..self.ct2_options(options)
        };
        let results = self
            .translator
            .translate_batch(sources, &opts, None)
            .map_err(|e| EngineError::Translate(format!("{e:#}")))?;
        Ok(results
            .iter()
            .map(|r| r.output().map_or(0, Vec::len))
            .collect())
    }

    fn ct2_options(&self, options: &DecodeOptions) -> TranslationOptions<String, String> {
        let num_hypotheses = options.num_hypotheses() as usize;
        TranslationOptions {
            // CTranslate2 refuses more hypotheses than the beam holds; resolved job
            // options already widen the beam (`JobOptions::resolve`), this keeps
            // options built in code valid too.
            beam_size: (options.beam_size as usize).max(num_hypotheses),
            num_hypotheses,
            // Never past the model's last target position, where CTranslate2 would fail
            // the whole batch; the model cannot write more than that anyway.
            max_decoding_length: self
                .max_decoding_steps
                .map_or(options.max_decoding_length as usize, |m| {
                    m.min(options.max_decoding_length as usize)
                }),
            length_penalty: options.length_penalty,
            repetition_penalty: options.repetition_penalty,
            no_repeat_ngram_size: options.no_repeat_ngram_size as usize,
            max_input_length: self.max_input_length,
            // The batcher already cut the batch; CTranslate2 must not re-split it.
            max_batch_size: 0,
            ..TranslationOptions::default()
        }
    }
}

impl Backend for Engine {
    fn translate(
        &self,
        sources: &[Vec<String>],
        target_prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<String>, EngineError> {
        let hypotheses = self.hypotheses(sources, target_prefixes, options)?;
        hypotheses
            .into_iter()
            .enumerate()
            .map(|(i, tokens)| self.output_text(tokens, target_prefixes.get(i)))
            .collect()
    }

    fn translate_alternatives(
        &self,
        sources: &[Vec<String>],
        target_prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<Translation>, EngineError> {
        let n_best = self.n_best(sources, target_prefixes, options)?;
        n_best
            .into_iter()
            .enumerate()
            .map(|(i, hypotheses)| {
                let prefix = target_prefixes.get(i);
                let mut texts = hypotheses
                    .into_iter()
                    .map(|tokens| self.output_text(tokens, prefix));
                let best = texts.next().transpose()?.unwrap_or_default();
                let rest = texts.collect::<Result<Vec<String>, EngineError>>()?;
                let alternatives =
                    distinct_alternatives(&best, rest, options.alternatives as usize);
                Ok(Translation { best, alternatives })
            })
            .collect()
    }

    fn replicas(&self) -> usize {
        self.replicas
    }
}

impl Engine {
    /// The text of one hypothesis: without the forced target-language token
    /// (`prefix`, which CTranslate2 returns first: not text), detokenized.
    fn output_text(
        &self,
        mut tokens: Vec<String>,
        prefix: Option<&Option<String>>,
    ) -> Result<String, EngineError> {
        if let Some(Some(prefix)) = prefix {
            if tokens.first() == Some(prefix) {
                tokens.remove(0);
            }
        }
        self.detokenize(tokens)
    }
}

/// Which of `tokens` none of the model's vocabulary files (`shared_vocabulary`,
/// `source_vocabulary`, `target_vocabulary`; `.json` or `.txt`) lists.
fn missing_tokens(dir: &Path, tokens: &[String]) -> Result<Vec<String>, String> {
    let mut known = std::collections::HashSet::new();
    let mut found = false;
    for name in ["shared", "source", "target"] {
        let json = dir.join(format!("{name}_vocabulary.json"));
        let txt = dir.join(format!("{name}_vocabulary.txt"));
        if let Ok(bytes) = std::fs::read(&json) {
            let list: Vec<String> =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", json.display()))?;
            known.extend(list);
            found = true;
        } else if let Ok(text) = std::fs::read_to_string(&txt) {
            known.extend(text.lines().map(str::to_owned));
            found = true;
        }
    }
    if !found {
        return Err(
            "no vocabulary file (shared_vocabulary.json, ...) to check language tokens against"
                .into(),
        );
    }
    Ok(tokens
        .iter()
        .filter(|t| !known.contains(*t))
        .cloned()
        .collect())
}

/// blake3 over every regular file in `dir` (sorted by name; name and length prefixed).
pub fn fingerprint_dir(dir: &Path) -> std::io::Result<[u8; 32]> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Docs and checksums beside the model do not change its output.
        if name.ends_with(".md") || name.starts_with('.') {
            continue;
        }
        let mut f = std::fs::File::open(&p)?;
        let len = f.metadata()?.len();
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&len.to_le_bytes());
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(*h.finalize().as_bytes())
}

/// Builds the translator on a short-lived thread of its own, made `nice` steps
/// nicer first: CTranslate2 starts its replica threads (and they their intra-op
/// threads) in the constructor, and a Linux thread inherits its creator's niceness,
/// so inference runs below every other thread of the worker without touching them.
/// A niceness that cannot be set is logged and the model loaded all the same.
fn new_translator(path: &Path, config: Ct2Config, nice: u8) -> Result<Translator, String> {
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("tw-engine-load".into())
        .spawn(move || {
            if nice > 0 {
                match lower_thread_priority(nice) {
                    Ok(now) => tracing::info!(inference_nice = now, "inference threads niced"),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "could not lower the inference threads' priority; they run as the \
                         rest of the worker"
                    ),
                }
            }
            Translator::new(&path, &config).map_err(|e| format!("{e:#}"))
        })
        .map_err(|e| format!("cannot start the model-loading thread: {e}"))?
        .join()
        .map_err(|_| "the model-loading thread panicked".to_owned())?
}

/// Adds `by` to the calling thread's niceness (Linux keeps it per thread) and returns
/// the new value; the kernel caps it at 19.
#[cfg(target_os = "linux")]
fn lower_thread_priority(by: u8) -> std::io::Result<i32> {
    // SAFETY: `gettid` has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).map_err(std::io::Error::other)?;
    // SAFETY: resetting errno is how `getpriority`'s -1 is told apart from an error.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: a plain system call about this thread; it reads no memory of ours.
    let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    if now == -1 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error().unwrap_or(0) != 0 {
            return Err(e);
        }
    }
    let wanted = (now + i32::from(by)).min(19);
    // SAFETY: as above; raising niceness needs no privilege.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, wanted) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(wanted)
}

/// Elsewhere the threads keep the worker's priority.
#[cfg(not(target_os = "linux"))]
fn lower_thread_priority(_by: u8) -> std::io::Result<i32> {
    Err(std::io::Error::other(
        "thread niceness is only set on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_relative_model_path_names_the_setting_and_the_working_directory() {
        let cfg = ModelConfig {
            path: "no/such/model-dir".into(),
            ..ModelConfig::default()
        };
        let err = match Engine::load(&cfg) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a missing directory loads"),
        };
        let cwd = std::env::current_dir().unwrap();
        assert!(err.contains("no/such/model-dir"), "{err}");
        assert!(
            err.contains(&format!(
                "relative to the working directory {}",
                cwd.display()
            )),
            "{err}"
        );
        assert!(
            err.contains("model.path") && err.contains("TW_MODEL__PATH"),
            "{err}"
        );
        // An absolute path is shown as it is.
        assert_eq!(shown_path(Path::new("/models/x")), "/models/x");
    }

    #[test]
    fn long_sources_keep_what_ctranslate2_reads() {
        let toks = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(cut_source(toks(6), 4), toks(6));
        let cut = cut_source(toks(100), 4);
        assert_eq!(cut, ["0", "1", "2", "3", "98", "99"]);
        assert_eq!(cut.capacity(), cut.len());
        assert_eq!(cut_source(toks(100), 0).len(), 100);
    }

    #[test]
    fn the_input_limit_comes_from_the_model() {
        assert_eq!(input_limit(0, Some(512)), Ok(512));
        assert_eq!(input_limit(0, None), Ok(DEFAULT_MAX_INPUT_LENGTH));
        assert_eq!(input_limit(256, Some(512)), Ok(256));
        assert_eq!(input_limit(512, Some(512)), Ok(512));
        assert_eq!(input_limit(4096, None), Ok(4096));
        let e = input_limit(1024, Some(512)).unwrap_err();
        assert!(e.contains("1024") && e.contains("512"), "{e}");
    }

    #[test]
    fn loading_takes_the_limit_from_the_model_and_refuses_more() {
        let cfg = ModelConfig {
            threads: 1,
            max_input_length: 2000,
            ..ModelConfig::default()
        };
        let e = Engine::load(&cfg)
            .err()
            .expect("2000 > 1024 positions")
            .to_string();
        assert!(e.contains("2000") && e.contains("1024"), "{e}");
        let engine = Engine::load(&ModelConfig {
            threads: 1,
            ..ModelConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(engine.max_input_length(), 1024);
        assert_eq!(engine.max_decoding_steps, Some(1023));
    }

    /// The niceness in a `/proc/.../stat` line (field 19, counted after the name).
    #[cfg(target_os = "linux")]
    fn niceness(stat: &str) -> Option<i32> {
        let (_, after_name) = stat.rsplit_once(") ")?;
        after_name.split_whitespace().nth(16)?.parse().ok()
    }

    /// How many threads of this process run at niceness `nice`.
    #[cfg(target_os = "linux")]
    fn threads_at(nice: i32) -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("procfs is mounted")
            .flatten()
            // A thread may end between the listing and the read.
            .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .filter(|stat| niceness(stat) == Some(nice))
            .count()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn inference_threads_run_nicer_than_the_rest_of_the_worker() {
        let own = || {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
            niceness(&stat).expect("this thread's niceness")
        };
        let base = own();
        // 7: no other test loads an engine with it (the default is 10).
        let wanted = (base + 7).min(19);
        let engine = Engine::load(&ModelConfig {
            threads: 3,
            replicas: 3,
            inference_nice: 7,
            ..ModelConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        // One thread per replica at least (CTranslate2 started them in the constructor).
        let niced = threads_at(wanted);
        assert!(niced >= 3, "{niced} threads at niceness {wanted}");
        // The loading thread's niceness did not leak into the caller's.
        assert_eq!(own(), base);
        // And the niced replicas translate.
        let out = engine
            .translate(
                &[engine.tokenize("hello world", None).expect("tokenizes")],
                &[None],
                &DecodeOptions::default(),
            )
            .expect("translates");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn alternatives_are_distinct_from_the_best_and_each_other() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            distinct_alternatives("a", c(&["b", "a", "b", "c", "d"]), 2),
            ["b", "c"]
        );
        assert_eq!(
            distinct_alternatives("a", c(&["a", "a"]), 3),
            Vec::<String>::new()
        );
        assert_eq!(
            distinct_alternatives("a", c(&["b"]), 0),
            Vec::<String>::new()
        );
        assert_eq!(distinct_alternatives("", c(&["", "x"]), 5), ["x"]);
    }

    /// The copy model through CTranslate2: n-best comes back best first, the best
    /// is the plain translation at the same beam, and the engine widens a beam
    /// narrower than the hypotheses asked for instead of failing.
    #[test]
    fn n_best_keeps_the_best_of_the_same_beam() {
        let engine = Engine::load(&ModelConfig {
            threads: 1,
            ..ModelConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let text = "회의는 오전 10시에 시작합니다.";
        let source = vec![engine.tokenize(text, None).unwrap()];
        let alt = DecodeOptions {
            beam_size: 4,
            alternatives: 3,
            ..DecodeOptions::default()
        };
        let plain = DecodeOptions {
            beam_size: 4,
            ..DecodeOptions::default()
        };
        let got = engine.translate_alternatives(&source, &[], &alt).unwrap();
        let want = engine.translate(&source, &[], &plain).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].best, want[0]);
        assert_eq!(got[0].best, text, "the copy model copies");
        assert!(got[0].alternatives.len() <= 3, "{got:?}");
        assert!(!got[0].alternatives.contains(&got[0].best), "{got:?}");
        let n_best = engine.n_best(&source, &[], &alt).unwrap();
        assert!((2..=4).contains(&n_best[0].len()), "{n_best:?}");
        // Beam 1 with 2 hypotheses: widened, not refused by CTranslate2.
        let narrow = DecodeOptions {
            alternatives: 1,
            ..DecodeOptions::default()
        };
        let got = engine
            .translate_alternatives(&source, &[], &narrow)
            .unwrap();
        assert_eq!(got[0].best, text);
        // Without alternatives, the default method and the engine agree.
        let one = engine.translate_alternatives(&source, &[], &plain).unwrap();
        assert_eq!(one[0], Translation::from(want[0].clone()));
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let dir = std::env::temp_dir().join(format!("tw-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.bin"), b"a").unwrap();
        let a = fingerprint_dir(&dir).unwrap();
        std::fs::write(dir.join("README.md"), b"docs").unwrap();
        assert_eq!(a, fingerprint_dir(&dir).unwrap());
        std::fs::write(dir.join("model.bin"), b"b").unwrap();
        assert_ne!(a, fingerprint_dir(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
