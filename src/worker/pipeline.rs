//! One job, from body to reply: parse, route to a model and pair, look every segment
//! up in the cache, translate the misses through the batcher, build the reply.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use translation_client::wire::Format;
use translation_client::wire::{pair_key, parse_pair};
use translation_client::wire::{
    parse_job, unix_ms_now, DecodeOptions, ErrorBody, ErrorCode, Job, JobError, Reply,
    SegmentStats, Split,
};

use crate::config::{Config, ModelConfig};
use crate::telemetry::Metrics;
use crate::translate::{cache_value, cached_translation, Translation};
use crate::translate::{html, segment};
use crate::translate::{BatcherHandle, Cache, CacheKey, Engine, EngineError, KeyContext, Lane};

/// State shared by every job.
pub(super) struct Shared {
    /// The whole configuration.
    pub(super) config: Config,
    /// The models served, in configuration order.
    pub(super) models: Vec<Model>,
    /// Jobs tokenizing at once: one per inference thread. Encoding a text briefly
    /// holds every token of it (≈ 500 bytes each, before the cut to
    /// `max_input_length`), so without this a flood of long texts costs that
    /// `prefetch` times over; more at once would not run faster on these CPUs.
    /// One pool per lane ([`crate::translate::lane_index`]), so an interactive job
    /// never queues for its permit behind a backlog of bulk documents.
    pub(super) tokenize_permits: [Arc<tokio::sync::Semaphore>; 2],
    /// Redis cache (or its stand-in when disabled).
    pub(super) cache: Cache,
    /// Counters and histograms.
    pub(super) metrics: Arc<Metrics>,
}

/// One served model: its engine, its batcher and what it answers.
pub(super) struct Model {
    /// Model id for replies.
    pub(super) id: String,
    /// Its settings.
    pub(super) config: ModelConfig,
    /// The queue it consumes.
    pub(super) queue: String,
    /// Language pairs it serves.
    pub(super) pairs: Vec<(String, String)>,
    /// Client language code → the model's language token (multilingual models only).
    pub(super) tokens: BTreeMap<String, String>,
    /// Tokenizer and model (tokenizing happens on the blocking pool).
    pub(super) engine: Arc<Engine>,
    /// Entry to its dynamic batcher.
    pub(super) batcher: BatcherHandle,
    /// Decoding options a job gets when it sets none.
    pub(super) defaults: DecodeOptions,
}

/// Where a job goes: a model and the pair it is translated in.
struct Route<'a> {
    model: &'a Model,
    source: String,
    target: String,
}

impl Route<'_> {
    /// Cache-key context: model files, pair.
    fn keys(&self) -> KeyContext {
        KeyContext {
            model_fingerprint: self.model.engine.fingerprint(),
            source: self.source.clone(),
            target: self.target.clone(),
        }
    }

    /// The model's tokens for the pair: source token, target prefix.
    fn language_tokens(&self) -> (Option<String>, Option<String>) {
        (
            self.model.tokens.get(&self.source).cloned(),
            self.model.tokens.get(&self.target).cloned(),
        )
    }
}

/// Segments of one job: the texts' units, and how they map back.
struct Segmented {
    /// What is translated (sentences, or whole texts).
    units: Vec<String>,
    /// Per text: how its units go back into it, and where its units start in
    /// `units`.
    layout: Vec<(Layout, usize)>,
}

/// How one document's units are put back together.
enum Layout {
    /// Plain text (`split: sentences`): the units' ranges inside the text.
    Sentences(Vec<Range<usize>>),
    /// HTML (`format: html`): the document's plan.
    Html(html::Plan),
    /// The document could not be segmented: why (it fails on its own).
    Failed(String),
}

impl Layout {
    /// Number of units.
    fn len(&self) -> usize {
        match self {
            Layout::Sentences(ranges) => ranges.len(),
            Layout::Html(plan) => plan.segment_count(),
            Layout::Failed(_) => 0,
        }
    }
}

/// A job's texts after translation.
struct Translated {
    /// Per text: its translation (`""` when it failed).
    translations: Vec<String>,
    /// Per text: whether it came from the cache.
    cached: Vec<bool>,
    /// Per text, for `split: sentences`: its segments and cache hits.
    segments: Option<Vec<SegmentStats>>,
    /// Per text: whether the model read only its start.
    truncated: Vec<bool>,
    /// Per text: why it failed, if it did.
    errors: Vec<Option<String>>,
    /// Per text: its alternatives (empty unless the job asked for them).
    alternatives: Vec<Vec<String>>,
    /// New translations to store in the cache.
    to_store: Vec<(CacheKey, String)>,
}

/// What translating a list of units gave, per unit, and the new cache entries.
struct UnitResults {
    /// The translation (with the alternatives its options asked for), or why it
    /// failed.
    results: Vec<Result<Translation, String>>,
    /// Whether it came from the cache.
    cached: Vec<bool>,
    /// Whether the model read only its start.
    truncated: Vec<bool>,
    /// New cache entries: key and value ([`cache_value`]).
    to_store: Vec<(CacheKey, String)>,
}

/// What processing one job produced.
pub struct Outcome {
    /// The reply to send.
    pub reply: Reply,
    /// New translations to store in the cache.
    pub to_store: Vec<(CacheKey, String)>,
}

impl Shared {
    /// Processes one job body; `model` is the queue's model when the job came from
    /// one, `routing_key` its key (the pair, when the body names none), `lane` the
    /// lane its texts are batched in.
    pub(super) async fn process(
        &self,
        body: &[u8],
        model: Option<usize>,
        routing_key: Option<&str>,
        lane: Lane,
    ) -> Outcome {
        match self.try_process(body, model, routing_key, lane).await {
            Ok(o) => o,
            Err(e) => Outcome {
                reply: e.into(),
                to_store: Vec::new(),
            },
        }
    }

    /// The model and pair for `job`: the pair named in the body, else by the routing
    /// key, else the model's own `source`/`target`; a model that serves it, among
    /// the queue's model (or all models when there is no queue).
    fn route(
        &self,
        job: &Job,
        model: Option<usize>,
        routing_key: Option<&str>,
    ) -> Result<Route<'_>, JobError> {
        let candidates: Vec<&Model> = match model.and_then(|i| self.models.get(i)) {
            Some(m) => vec![m],
            None => self.models.iter().collect(),
        };
        let from_key = routing_key.and_then(parse_pair);
        let default = candidates
            .first()
            .map(|m| (&m.config.source, &m.config.target));
        let pick = |given: &Option<String>, keyed: Option<&str>, fallback: Option<&String>| {
            given
                .clone()
                .or_else(|| keyed.map(str::to_owned))
                .or_else(|| fallback.cloned())
                .unwrap_or_default()
        };
        let source = pick(&job.source, from_key.map(|k| k.0), default.map(|d| d.0));
        let target = pick(&job.target, from_key.map(|k| k.1), default.map(|d| d.1));
        let served = candidates
            .iter()
            .find(|m| m.pairs.iter().any(|(s, t)| *s == source && *t == target))
            .copied();
        match served {
            Some(model) => Ok(Route {
                model,
                source,
                target,
            }),
            None => {
                let pairs: Vec<String> = candidates
                    .iter()
                    .flat_map(|m| m.pairs.iter().map(|(s, t)| pair_key(s, t)))
                    .collect();
                Err(JobError::new(
                    ErrorCode::UnsupportedLanguagePair,
                    format!(
                        "{source}-{target} is not served here; this {} translates {}",
                        if model.is_some() { "queue" } else { "worker" },
                        pairs.join(", ")
                    ),
                ))
            }
        }
    }

    async fn try_process(
        &self,
        body: &[u8],
        model: Option<usize>,
        routing_key: Option<&str>,
        lane: Lane,
    ) -> Result<Outcome, JobError> {
        let job = parse_job(body, &self.config.limits)?;
        let id = job.id.clone();
        if let Some(id) = &id {
            tracing::Span::current().record("id", id.as_str());
        }
        let route = self
            .route(&job, model, routing_key)
            .map_err(|e| e.with_id(id.clone()))?;
        let options = job
            .options
            .resolve(&route.model.defaults)
            .map_err(|e| e.with_id(id.clone()))?;
        let deadline_error =
            || JobError::new(ErrorCode::DeadlineExceeded, "deadline_ms passed").with_id(id.clone());
        let work = self.translate_job(&route, job.texts, (job.split, job.format), options, lane);
        let done = match job.deadline_ms {
            None => work.await,
            Some(ms) => {
                let now = unix_ms_now();
                if ms <= now {
                    return Err(deadline_error());
                }
                tokio::time::timeout(Duration::from_millis(ms - now), work)
                    .await
                    .map_err(|_| deadline_error())?
            }
        }
        .map_err(|e| e.with_id(id.clone()))?;
        let failed = done.errors.iter().filter(|e| e.is_some()).count();
        let cut = done.truncated.iter().filter(|t| **t).count();
        if failed > 0 && failed == done.errors.len() {
            // Nothing to give back: the job fails as a whole, as it always did.
            let first = done.errors.into_iter().flatten().next().unwrap_or_default();
            return Err(internal(first).with_id(id));
        }
        self.metrics.texts_failed.add(failed as u64);
        self.metrics.texts_truncated.add(cut as u64);
        let errors = (failed > 0).then(|| {
            done.errors
                .into_iter()
                .map(|e| {
                    e.map(|message| ErrorBody {
                        code: ErrorCode::Internal,
                        message,
                    })
                })
                .collect()
        });
        Ok(Outcome {
            reply: Reply::Ok {
                id,
                translations: done.translations,
                cached: done.cached,
                model: route.model.id.clone(),
                segments: done.segments,
                truncated: (cut > 0).then_some(done.truncated),
                errors,
                // Present exactly when asked for, so other replies keep their bytes.
                alternatives: (options.alternatives > 0).then_some(done.alternatives),
            },
            to_store: done.to_store,
        })
    }

    /// Translates a job's texts: whole, or (`split`, or `format: html`) sentence by
    /// sentence, each sentence a cache entry of its own, put back together with the
    /// text's own whitespace (and HTML markup) between them. A text that fails (the
    /// engine failed on it even alone) is reported in `errors` and does not fail its
    /// neighbours. Alternatives (`options.alternatives`) are given for texts
    /// translated as one segment: every text without `split`, and a document cut into
    /// a single segment; the segments of longer documents are translated without
    /// alternatives at the same beam (so they share their cache entries with jobs
    /// that asked for none), and their texts get `[]`.
    async fn translate_job(
        &self,
        route: &Route<'_>,
        texts: Vec<String>,
        (split, format): (Split, Format),
        options: DecodeOptions,
        lane: Lane,
    ) -> Result<Translated, JobError> {
        // HTML is always a document (see `Format::Html`).
        if split == Split::None && format == Format::Text {
            let unit_options = vec![options; texts.len()];
            let units = self
                .translate_units(route, texts, &unit_options, lane)
                .await?;
            let mut translations = Vec::with_capacity(units.results.len());
            let mut errors = Vec::with_capacity(units.results.len());
            let mut alternatives = Vec::with_capacity(units.results.len());
            for r in units.results {
                match r {
                    Ok(t) => {
                        translations.push(t.best);
                        errors.push(None);
                        alternatives.push(t.alternatives);
                    }
                    Err(e) => {
                        translations.push(String::new());
                        errors.push(Some(e));
                        alternatives.push(Vec::new());
                    }
                }
            }
            return Ok(Translated {
                translations,
                cached: units.cached,
                segments: None,
                truncated: units.truncated,
                errors,
                alternatives,
                to_store: units.to_store,
            });
        }
        let engine = route.model.engine.clone();
        let lang = route.source.clone();
        let with_token = route.language_tokens().0.is_some();
        let max_tokens = route.model.engine.max_input_length();
        let permit = self.tokenize_permit(lane).await?;
        // Segmenting (and measuring long sentences in tokens) is CPU work.
        let (texts, seg) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let seg = segment_texts(&texts, &lang, format, |s| {
                // A piece covers at least one byte, so a short sentence surely fits
                // without being tokenized.
                if s.len() + 3 <= max_tokens {
                    return Ok(true);
                }
                engine.fits(s, with_token)
            });
            (texts, seg)
        })
        .await
        .map_err(|e| internal(format!("segmenting task failed: {e}")))?;
        let Segmented { units, layout } = seg;
        // Alternatives only for a document that is one segment (see above).
        let mut unit_options = vec![options.without_alternatives(); units.len()];
        for (layout, first) in &layout {
            if let (Layout::Sentences(ranges), Some(o)) = (layout, unit_options.get_mut(*first)) {
                if ranges.len() == 1 {
                    *o = options;
                }
            }
        }
        let units = self
            .translate_units(route, units, &unit_options, lane)
            .await?;
        let n_texts = texts.len();
        let mut done = Translated {
            translations: Vec::with_capacity(n_texts),
            cached: Vec::with_capacity(n_texts),
            segments: None,
            truncated: Vec::with_capacity(n_texts),
            errors: Vec::with_capacity(n_texts),
            alternatives: Vec::with_capacity(n_texts),
            to_store: units.to_store,
        };
        let mut stats = Vec::with_capacity(n_texts);
        for (text, (layout, first)) in texts.iter().zip(layout) {
            let n = layout.len();
            let span = first..first + n;
            let results = &units.results[span.clone()];
            let hits = units.cached[span.clone()].iter().filter(|c| **c).count();
            stats.push(SegmentStats {
                segments: n,
                cached: hits,
            });
            done.truncated
                .push(units.truncated[span].iter().any(|t| *t));
            // One failed segment fails its text (a document with a hole in it would
            // read as complete); the other texts are still answered.
            let failure = results.iter().enumerate().find_map(|(j, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("segment {} of {n} failed: {e}", j + 1))
            });
            let failure = match &layout {
                Layout::Failed(e) => Some(e.clone()),
                _ => failure,
            };
            if let Some(e) = failure {
                done.translations.push(String::new());
                done.cached.push(false);
                done.errors.push(Some(e));
                done.alternatives.push(Vec::new());
                continue;
            }
            let outs: Vec<&str> = results
                .iter()
                .map(|r| r.as_ref().map_or("", |t| t.best.as_str()))
                .collect();
            let ranges = match layout {
                Layout::Sentences(ranges) => ranges,
                Layout::Html(plan) => {
                    done.translations.push(plan.rebuild(text, &outs));
                    done.cached.push(n > 0 && hits == n);
                    done.errors.push(None);
                    done.alternatives.push(Vec::new());
                    continue;
                }
                Layout::Failed(_) => Vec::new(),
            };
            // A one-segment document's alternatives, with its own whitespace around
            // them as its translation has (only such a segment was asked for any).
            let alternatives = match (ranges.len(), results.first()) {
                (1, Some(Ok(t))) => t
                    .alternatives
                    .iter()
                    .map(|a| segment::reassemble(text, &ranges, std::slice::from_ref(a)))
                    .collect(),
                _ => Vec::new(),
            };
            done.alternatives.push(alternatives);
            // Segments that touched in the source (CJK) are kept apart by a space when
            // their translations are in a script written with spaces.
            let outs: Vec<std::borrow::Cow<'_, str>> = outs
                .iter()
                .enumerate()
                .map(|(j, out)| {
                    let touching = j
                        .checked_sub(1)
                        .and_then(|i| ranges.get(i).zip(ranges.get(j)).zip(outs.get(i)))
                        .filter(|((a, b), _)| a.end == b.start);
                    let space = touching.is_some_and(|((_, b), prev)| {
                        segment::needs_space(text, b.start, prev, out)
                    });
                    if space {
                        std::borrow::Cow::Owned(format!(" {out}"))
                    } else {
                        std::borrow::Cow::Borrowed(*out)
                    }
                })
                .collect();
            done.translations
                .push(segment::reassemble(text, &ranges, &outs));
            done.cached.push(n > 0 && hits == n);
            done.errors.push(None);
        }
        done.segments = Some(stats);
        Ok(done)
    }

    /// A slot to tokenize (or segment) on the blocking pool; see `tokenize_permits`.
    async fn tokenize_permit(
        &self,
        lane: Lane,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, JobError> {
        self.tokenize_permits[crate::translate::lane_index(lane)]
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal(format!("tokenizer permits closed: {e}")))
    }

    /// Translates `texts`, `texts[i]` with `options[i]` (one entry per text): cache
    /// first (one round trip), then the misses through the batcher. A text the
    /// tokenizer or the engine fails on is an `Err` of its own.
    /// Whether a text is longer than the model reads comes from tokenizing it (a
    /// miss), or from measuring it (a hit long enough to possibly be).
    async fn translate_units(
        &self,
        route: &Route<'_>,
        mut texts: Vec<String>,
        options: &[DecodeOptions],
        lane: Lane,
    ) -> Result<UnitResults, JobError> {
        let n = texts.len();
        if options.len() != n {
            return Err(internal(format!(
                "{} option sets for {n} segments",
                options.len()
            )));
        }
        let key_ctx = route.keys();
        let keys: Vec<Option<CacheKey>> = texts
            .iter()
            .zip(options)
            .map(|(t, o)| (!t.is_empty()).then(|| key_ctx.key(o, t)))
            .collect();
        let lookup: Vec<CacheKey> = keys.iter().flatten().copied().collect();
        let mut hits = self.cache.get_many(&lookup).await.into_iter();
        let mut out: Vec<Option<Result<Translation, String>>> = vec![None; n];
        let mut cached = vec![false; n];
        let mut truncated = vec![false; n];
        // Distinct missing texts, each with every position that asked for it (the key
        // covers the options, so one entry is one text with one options set).
        let mut missing: Vec<(CacheKey, Vec<usize>)> = Vec::new();
        let mut seen: HashMap<CacheKey, usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let Some(key) = key else {
                // An empty string translates to an empty string, without the model.
                out[i] = Some(Ok(Translation::default()));
                continue;
            };
            // A value not in the layout these options store is a miss (overwritten).
            let hit = hits
                .next()
                .flatten()
                .and_then(|v| cached_translation(&options[i], v));
            match hit {
                Some(hit) => {
                    out[i] = Some(Ok(hit));
                    cached[i] = true;
                    self.metrics.segments_cache_hit.inc();
                }
                None => {
                    self.metrics.segments_cache_miss.inc();
                    match seen.get(key) {
                        Some(&m) => missing[m].1.push(i),
                        None => {
                            seen.insert(*key, missing.len());
                            missing.push((*key, vec![i]));
                        }
                    }
                }
            }
        }
        let mut to_store = Vec::with_capacity(missing.len());
        let engine = &route.model.engine;
        let (source_token, target_token) = route.language_tokens();
        // A few dozen segments at a time: a job never holds the tokens of more than
        // `UNITS_IN_FLIGHT` segments (each at most `max_input_length`), however long
        // its document, while that is still several full batches for the replicas.
        for chunk in missing.chunks(UNITS_IN_FLIGHT) {
            // Keys are computed; the texts themselves are only needed for tokenizing.
            let sources: Vec<String> = chunk
                .iter()
                .map(|(_, pos)| std::mem::take(&mut texts[pos[0]]))
                .collect();
            let engine = engine.clone();
            let source_token = source_token.clone();
            // Held by the blocking task itself, so a job given up at its deadline
            // still counts until its tokenizing really ends.
            let permit = self.tokenize_permit(lane).await?;
            // Tokenizing long documents is CPU work: keep it off the async threads.
            let tokens: Vec<Result<(Vec<String>, bool), EngineError>> =
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    sources
                        .iter()
                        .map(|s| engine.tokenize_measured(s, source_token.as_deref()))
                        .collect()
                })
                .await
                .map_err(|e| internal(format!("tokenizer task failed: {e}")))?;
            for ((_, positions), toks) in chunk.iter().zip(&tokens) {
                let long = toks.as_ref().is_ok_and(|(_, long)| *long);
                for &p in positions {
                    truncated[p] = long;
                }
            }
            let batcher = &route.model.batcher;
            let results = futures_util::future::join_all(chunk.iter().zip(tokens).map(
                |((key, positions), toks)| {
                    let prefix = target_token.clone();
                    // Every position of a key has the same options (they are in it).
                    let options = options[positions[0]];
                    async move {
                        let (toks, _) = toks.map_err(|e| e.to_string())?;
                        batcher
                            .translate_alternatives_in(lane, *key, toks, prefix, options)
                            .await
                            .map_err(|e| e.to_string())
                    }
                },
            ))
            .await;
            for ((key, positions), result) in chunk.iter().zip(results) {
                if let Ok(translation) = &result {
                    to_store.push((*key, cache_value(&options[positions[0]], translation)));
                }
                for &p in positions {
                    out[p] = Some(result.clone());
                }
            }
        }
        self.measure_hits(route, &texts, &cached, &mut truncated, lane)
            .await?;
        let results = out
            .into_iter()
            .map(|t| t.unwrap_or_else(|| Err("the text was left untranslated".into())))
            .collect();
        Ok(UnitResults {
            results,
            cached,
            truncated,
            to_store,
        })
    }

    /// Sets `truncated[i]` for the cached texts long enough to possibly be over the
    /// model's input limit (a piece covers at least one byte, the word-start mark,
    /// language token and `</s>` aside). Short ones, nearly all, are never tokenized.
    async fn measure_hits(
        &self,
        route: &Route<'_>,
        texts: &[String],
        cached: &[bool],
        truncated: &mut [bool],
        lane: Lane,
    ) -> Result<(), JobError> {
        let engine = &route.model.engine;
        let max_tokens = engine.max_input_length();
        let long: Vec<(usize, String)> = texts
            .iter()
            .zip(cached)
            .enumerate()
            .filter(|(_, (t, hit))| **hit && t.len() + 3 > max_tokens)
            .map(|(i, (t, _))| (i, t.clone()))
            .collect();
        if long.is_empty() {
            return Ok(());
        }
        let engine = engine.clone();
        let with_token = route.language_tokens().0.is_some();
        let permit = self.tokenize_permit(lane).await?;
        let measured = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            long.into_iter()
                .map(|(i, t)| (i, !engine.fits(&t, with_token).unwrap_or(true)))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| internal(format!("measuring task failed: {e}")))?;
        for (i, long) in measured {
            truncated[i] = long;
        }
        Ok(())
    }
}

/// Segments of one job tokenized and queued at once (see `translate_units`).
const UNITS_IN_FLIGHT: usize = 64;

/// Cuts each text into sentences (an HTML text: its text between the markup, see
/// [`html::plan`]), and any sentence `fits` refuses into halves until every piece
/// fits (a piece that cannot be cut further goes as it is, and CTranslate2 truncates
/// it). A piece the tokenizer fails on is taken as fitting: it
/// fails again, as its text's own error, when it is tokenized for translation.
/// Blocking.
fn segment_texts(
    texts: &[String],
    lang: &str,
    format: Format,
    mut fits: impl FnMut(&str) -> Result<bool, EngineError>,
) -> Segmented {
    let mut units = Vec::new();
    let mut layout = Vec::with_capacity(texts.len());
    for text in texts {
        let first = units.len();
        if format == Format::Html {
            match html::plan(text, lang, |piece| fits(piece).unwrap_or(true)) {
                Ok(plan) => {
                    units.extend(plan.segments());
                    layout.push((Layout::Html(plan), first));
                }
                Err(e) => layout.push((Layout::Failed(e.to_string()), first)),
            }
            continue;
        }
        let mut ranges = Vec::new();
        for sentence in segment::sentences(text, lang) {
            ranges.extend(segment::split_to_fit(text, sentence, |piece| {
                fits(piece).unwrap_or(true)
            }));
        }
        // `split_to_fit` only returns ranges of `text`; `get` keeps this panic-free.
        units.extend(
            ranges
                .iter()
                .map(|r| text.get(r.clone()).unwrap_or_default().to_owned()),
        );
        layout.push((Layout::Sentences(ranges), first));
    }
    Segmented { units, layout }
}

fn internal(message: String) -> JobError {
    JobError::new(ErrorCode::Internal, message)
}
