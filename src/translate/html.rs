//! HTML documents for `"format": "html"` jobs: find the sentences of an HTML page,
//! translate their plain text, and put the translations back with every byte of
//! markup untouched.
//!
//! Pure functions over byte ranges, like [`super::segment`]: no I/O, no async.
//!
//! # What is translated
//!
//! The text of the page, sentence by sentence *across inline tags*:
//! `Read the <a href="/guide">guide</a> first.` is one segment, `Read the guide
//! first.`, whose tags are put back into its translation. Block-level elements
//! (`p`, `div`, `li`, `td`, `h1`–`h6`, `br`, …; [`BLOCK`]) end a run of text, so
//! a sentence never spans two of them. Inside a run, [`segment::sentences`] cuts the
//! text (line breaks inside a run are plain whitespace in HTML, so they do not end
//! a sentence here) and [`segment::split_to_fit`] cuts a sentence too long for the
//! model.
//!
//! Everything else is copied byte for byte from the input: tags with their
//! attributes (attribute values are not translated), comments, the doctype,
//! whitespace around and between sentences, and the whole of `script`, `style`,
//! `code`, `pre`, `textarea`, `kbd`, `samp` and other raw-text elements
//! ([`OPAQUE`]) and of any element with `translate="no"` or class `notranslate`.
//! Such an element inside a sentence stays in the sentence as markup (its text is
//! not sent to the engine); a block-level one ends the run.
//!
//! # How tags go back into a translation
//!
//! The engine sees a sentence's plain text: character references decoded (`&amp;` →
//! `&`), `\r\n` read as `\n`, tags removed. Each run of markup inside the sentence
//! sits at a character position of that text, and is put back at the position
//! mapped by *relative word position* ([`map_positions`]): the words of the source
//! and of the translation (maximal non-whitespace runs) are matched by their
//! relative index, and a tag before, after or inside word `i` of `n` goes before,
//! after or (proportionally) inside word `i·m/n` of the translation's `m`. When the
//! translation has the source's words (the copy model; names and numbers left as
//! they were) the mapping is exact. For a real model it is an estimate: languages
//! with another word order (Korean ↔ English) move the words a tag wraps, so a link
//! or bold span keeps its place in the sentence but may cover a neighbouring word.
//! Tags never change order, so nesting stays valid.
//!
//! Text put back is escaped: `&`, `<` and `>` become references, and a character
//! the source sentence wrote as a reference (`&nbsp;`, `&#x27;`) is written the same
//! way. A piece of text between two tags that comes back from the engine unchanged
//! is copied from the input as it was written, references included.
//!
//! # Why `html5gum`
//!
//! The tokenizer must give the byte span of every token, so that untouched parts are
//! copied from the input rather than re-serialised. Compared for this from their
//! documentation and source (2026-11; `html5gum` then prototyped on the corpus):
//! `html5gum` 0.9 (MIT, no dependencies, WHATWG tokenizer tested on html5lib's
//! suite, spans on every token, raw-text states for `script`/`style`/`textarea`);
//! `html5ever`'s tokenizer (browser-grade, but reports line numbers, not byte
//! offsets); `lol_html` (Cloudflare's streaming rewriter: keeps untouched bytes, but
//! rewrites chunk by chunk as they stream, so a sentence across tags cannot be
//! translated as one unit); `tl` 0.7 (fast, with node boundaries, but a lenient
//! parser of its own, not the WHATWG tokenizer browsers use). Only the grouping into
//! sentences is written here.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use html5gum::{DefaultEmitter, Token, Tokenizer};

use super::segment;

/// Elements whose start or end tag ends a run of text: a sentence never spans them.
pub const BLOCK: &[&str] = &[
    "address",
    "article",
    "aside",
    "base",
    "blockquote",
    "body",
    "br",
    "button",
    "caption",
    "center",
    "col",
    "colgroup",
    "dd",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "frame",
    "frameset",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hgroup",
    "hr",
    "html",
    "iframe",
    "legend",
    "li",
    "link",
    "main",
    "menu",
    "meta",
    "nav",
    "noscript",
    "ol",
    "optgroup",
    "option",
    "p",
    "plaintext",
    "pre",
    "section",
    "select",
    "summary",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "title",
    "tr",
    "ul",
    "xmp",
];

/// Elements whose content is never translated (code, preformatted text, scripts,
/// form contents and raw-text elements).
pub const OPAQUE: &[&str] = &[
    "code",
    "iframe",
    "kbd",
    "noembed",
    "noframes",
    "noscript",
    "plaintext",
    "pre",
    "samp",
    "script",
    "style",
    "textarea",
    "xmp",
];

/// Elements without content or end tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// Why an HTML text could not be segmented.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// The tokenizer failed on this input (a bug there, caught rather than crashing
    /// the worker).
    #[error("the HTML tokenizer failed on this document")]
    Tokenizer,
}

/// One segment of a document: a sentence (or a piece of a long one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unit {
    /// Bytes of the document that the rebuilt unit replaces: from its first character
    /// to its last, with the markup in between.
    raw: Range<usize>,
    /// The plain text sent to the engine.
    text: String,
    /// Pieces of `text` between runs of markup: byte range in `text`, byte range in
    /// the document. Markup run `k` lies between pieces `k` and `k + 1`.
    pieces: Vec<(Range<usize>, Range<usize>)>,
    /// Characters the sentence wrote as a single character reference, with the first
    /// such spelling (a range of the document).
    spellings: Vec<(char, Range<usize>)>,
    /// When the unit touches the previous one with no whitespace in between (CJK):
    /// the source's characters on both sides and the boundary between them, for
    /// [`segment::needs_space`].
    touching: Option<(String, usize)>,
}

/// The segments of one HTML document and how to put their translations back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    units: Vec<Unit>,
}

impl Plan {
    /// The plain texts to translate, in document order.
    pub fn segments(&self) -> Vec<String> {
        self.units.iter().map(|u| u.text.clone()).collect()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.units.len()
    }

    /// Rebuilds `html` (the document this plan was made from) with each segment
    /// replaced by its translation, markup put back in place and text escaped;
    /// every byte outside the segments is copied verbatim. Segments and
    /// translations pair by position; missing translations leave their segments as
    /// they were. Never panics.
    pub fn rebuild(&self, html: &str, translations: &[impl AsRef<str>]) -> String {
        let mut ranges = Vec::with_capacity(self.units.len());
        let mut outs = Vec::with_capacity(self.units.len());
        let mut prev: Option<&str> = None;
        for (unit, t) in self.units.iter().zip(translations) {
            let t = t.as_ref();
            let mut out = String::with_capacity(t.len() + unit.raw.len());
            let space = match (&unit.touching, prev) {
                (Some((ctx, at)), Some(p)) => segment::needs_space(ctx, *at, p, t),
                _ => false,
            };
            if space {
                out.push(' ');
            }
            unit.render(html, t, &mut out);
            ranges.push(unit.raw.clone());
            outs.push(out);
            prev = Some(t);
        }
        segment::reassemble(html, &ranges, &outs)
    }
}

impl Unit {
    /// Appends the unit's output for translation `t` to `out`.
    fn render(&self, html: &str, t: &str, out: &mut String) {
        // Markup run k sits after piece k, at the character position where piece k ends.
        let mut positions = Vec::with_capacity(self.pieces.len().saturating_sub(1));
        let mut chars = 0;
        for (piece, _) in &self.pieces[..self.pieces.len().saturating_sub(1)] {
            chars += self
                .text
                .get(piece.clone())
                .map_or(0, |s| s.chars().count());
            positions.push(chars);
        }
        let mapped = map_positions(&self.text, t, &positions);
        // Character offsets of `t` → byte offsets (one past the end included).
        let bounds: Vec<usize> = t
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(t.len()))
            .collect();
        let mut from = 0;
        for (k, (piece, raw)) in self.pieces.iter().enumerate() {
            let to = match mapped.get(k) {
                Some(&c) => bounds.get(c).copied().unwrap_or(t.len()).max(from),
                None => t.len(),
            };
            let target = t.get(from..to).unwrap_or_default();
            let source = self.text.get(piece.clone()).unwrap_or_default();
            match html.get(raw.clone()) {
                // Unchanged: as the source wrote it, references and all.
                Some(written) if target == source => out.push_str(written),
                _ => self.escape(html, target, out),
            }
            from = to;
            if let Some(((_, this), (_, next))) = self.pieces.get(k).zip(self.pieces.get(k + 1)) {
                out.push_str(html.get(this.end..next.start).unwrap_or_default());
            }
        }
    }

    /// Appends `text` escaped for HTML text content: a character the source wrote
    /// as a reference is written the same way; `&`, `<`, `>` as references.
    fn escape(&self, html: &str, text: &str, out: &mut String) {
        for c in text.chars() {
            let spelled = self
                .spellings
                .iter()
                .find(|(s, _)| *s == c)
                .and_then(|(_, raw)| html.get(raw.clone()));
            match (spelled, c) {
                (Some(s), _) => out.push_str(s),
                (None, '&') => out.push_str("&amp;"),
                (None, '<') => out.push_str("&lt;"),
                (None, '>') => out.push_str("&gt;"),
                (None, c) => out.push(c),
            }
        }
    }
}

/// A piece of a run's plain text and where it was written in the document.
#[derive(Debug, Clone)]
struct Chunk {
    /// Bytes of the run's plain text.
    plain: Range<usize>,
    /// Bytes of the document.
    raw: Range<usize>,
    /// Written as is (`plain` and `raw` have the same length and bytes); else a
    /// character reference or a `\r` line break, decoded.
    literal: bool,
}

/// A run of text between block boundaries: its plain text, the chunks it was decoded
/// from, and where each text token's plain text starts (markup lies between them).
#[derive(Debug, Default)]
struct Run {
    plain: String,
    chunks: Vec<Chunk>,
    /// Plain-text start of each text token after the first.
    token_starts: Vec<usize>,
}

impl Run {
    /// Adds the text token at `raw` of `html`, decoding it.
    fn push_text(&mut self, html: &str, raw: Range<usize>) {
        let Some(written) = html.get(raw.clone()) else {
            return;
        };
        if written.is_empty() {
            return;
        }
        if !self.plain.is_empty() {
            self.token_starts.push(self.plain.len());
        }
        decode_into(written, raw.start, self);
    }

    /// Document offset where plain offset `p` starts (`p` on a chunk boundary or in
    /// a literal chunk).
    fn raw_start(&self, p: usize) -> Option<usize> {
        let c = self.chunk_at(p)?;
        Some(if c.literal {
            c.raw.start + (p - c.plain.start)
        } else {
            c.raw.start
        })
    }

    /// Document offset where the plain text ending at `p` ends.
    fn raw_end(&self, p: usize) -> Option<usize> {
        let c = self.chunk_at(p.checked_sub(1)?)?;
        Some(if c.literal {
            c.raw.start + (p - c.plain.start)
        } else {
            c.raw.end
        })
    }

    /// The chunk holding plain byte `p`.
    fn chunk_at(&self, p: usize) -> Option<&Chunk> {
        let i = self.chunks.partition_point(|c| c.plain.end <= p);
        self.chunks.get(i).filter(|c| c.plain.start <= p)
    }

    /// `range` widened so it neither starts nor ends inside a decoded reference.
    fn snap(&self, range: Range<usize>) -> Range<usize> {
        let start = match self.chunk_at(range.start) {
            Some(c) if !c.literal => c.plain.start,
            _ => range.start,
        };
        let end = match range.end.checked_sub(1).and_then(|p| self.chunk_at(p)) {
            Some(c) if !c.literal => c.plain.end,
            _ => range.end,
        };
        start..end
    }
}

/// Decodes `written` (a text token starting at document offset `at`) onto `run`:
/// character references decoded as the tokenizer decodes them, `\r\n` and `\r` read
/// as `\n` (as HTML's input stream does), everything else literal.
fn decode_into(written: &str, at: usize, run: &mut Run) {
    let bytes = written.as_bytes();
    let mut i = 0;
    let mut literal_from = 0;
    let flush = |run: &mut Run, from: usize, to: usize| {
        if from < to {
            let start = run.plain.len();
            run.plain.push_str(&written[from..to]);
            run.chunks.push(Chunk {
                plain: start..run.plain.len(),
                raw: at + from..at + to,
                literal: true,
            });
        }
    };
    while i < bytes.len() {
        let (len, decoded): (usize, String) = match bytes[i] {
            b'\r' => {
                let len = if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                (len, "\n".to_owned())
            }
            b'&' => {
                let len = reference_len(&bytes[i..]);
                match written.get(i..i + len).map(decode_reference) {
                    Some(d) if d != written[i..i + len] => (len, d),
                    // Not a reference: a literal `&`.
                    _ => {
                        i += 1;
                        continue;
                    }
                }
            }
            _ => {
                i += 1;
                continue;
            }
        };
        flush(run, literal_from, i);
        let start = run.plain.len();
        run.plain.push_str(&decoded);
        run.chunks.push(Chunk {
            plain: start..run.plain.len(),
            raw: at + i..at + i + len,
            literal: false,
        });
        i += len;
        literal_from = i;
    }
    flush(run, literal_from, bytes.len());
}

/// Length of what may be a character reference at the start of `s` (which starts
/// with `&`): `&#` digits, `&#x` hex digits, or `&` and a name, each with its `;`.
/// The tokenizer decides what part of it, if any, is a reference.
fn reference_len(s: &[u8]) -> usize {
    let mut n = 1;
    if s.get(n) == Some(&b'#') {
        n += 1;
        let hex = matches!(s.get(n), Some(b'x' | b'X'));
        if hex {
            n += 1;
        }
        while s.get(n).is_some_and(|b| {
            if hex {
                b.is_ascii_hexdigit()
            } else {
                b.is_ascii_digit()
            }
        }) {
            n += 1;
        }
    } else {
        while s.get(n).is_some_and(u8::is_ascii_alphanumeric) {
            n += 1;
        }
    }
    if s.get(n) == Some(&b';') {
        n += 1;
    }
    n
}

/// `reference` (e.g. `&amp;`, `&#x27;`, `&copy2`) decoded by the HTML tokenizer, as
/// it decodes it in text.
fn decode_reference(reference: &str) -> String {
    let mut out = Vec::new();
    for token in Tokenizer::new(reference).flatten() {
        if let Token::String(s) = token {
            out.extend_from_slice(&s.value);
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| reference.to_owned())
}

/// What the tokenizer walk is inside of: an untranslated element, until its end.
struct Opaque {
    name: Vec<u8>,
    depth: usize,
    block: bool,
}

/// Segments `html`: every run of text between block boundaries is cut into sentences
/// (in language `lang`), and each sentence `fits` refuses into pieces that fit.
/// Blocking (CPU work on a long page).
pub fn plan(html: &str, lang: &str, mut fits: impl FnMut(&str) -> bool) -> Result<Plan, HtmlError> {
    // The tokenizer is fuzzed upstream, but a bug in it must cost this document,
    // not the worker.
    let runs = catch_unwind(AssertUnwindSafe(|| runs(html))).map_err(|_| HtmlError::Tokenizer)?;
    let mut units = Vec::new();
    for run in runs {
        units_of_run(&run, lang, &mut fits, &mut units);
    }
    Ok(Plan { units })
}

/// The runs of text of `html`, in order.
fn runs(html: &str) -> Vec<Run> {
    let mut emitter = DefaultEmitter::<usize>::new_with_span();
    // `script`, `style`, `textarea`, `title`, … hold raw text, not tags.
    emitter.naively_switch_states(true);
    let mut runs = Vec::new();
    let mut run = Run::default();
    let mut opaque: Option<Opaque> = None;
    let end_run = |run: &mut Run, runs: &mut Vec<Run>| {
        let done = std::mem::take(run);
        if !done.plain.trim().is_empty() {
            runs.push(done);
        }
    };
    for token in Tokenizer::new_with_emitter(html, emitter).flatten() {
        if let Some(o) = &mut opaque {
            match &token {
                Token::StartTag(t) if t.name[..] == o.name[..] => o.depth += 1,
                Token::EndTag(t) if t.name[..] == o.name[..] => {
                    o.depth -= 1;
                    if o.depth == 0 {
                        if o.block {
                            end_run(&mut run, &mut runs);
                        }
                        opaque = None;
                    }
                }
                _ => {}
            }
            continue;
        }
        match token {
            Token::String(s) => run.push_text(html, s.span.start..s.span.end),
            Token::StartTag(t) => {
                let name = String::from_utf8_lossy(&t.name);
                let block = BLOCK.contains(&&*name);
                if block {
                    end_run(&mut run, &mut runs);
                }
                let untranslated = OPAQUE.contains(&&*name)
                    || t.attributes.iter().any(|(k, v)| {
                        let v = String::from_utf8_lossy(&v.value);
                        match &***k {
                            b"translate" => v.trim().eq_ignore_ascii_case("no"),
                            b"class" => v
                                .split_ascii_whitespace()
                                .any(|c| c.eq_ignore_ascii_case("notranslate")),
                            _ => false,
                        }
                    });
                if untranslated && !VOID.contains(&&*name) {
                    opaque = Some(Opaque {
                        name: t.name.to_vec(),
                        depth: 1,
                        block,
                    });
                }
            }
            Token::EndTag(t) => {
                if BLOCK.contains(&&*String::from_utf8_lossy(&t.name)) {
                    end_run(&mut run, &mut runs);
                }
            }
            Token::Doctype(_) => end_run(&mut run, &mut runs),
            // Comments are markup inside a sentence; errors are only reports.
            Token::Comment(_) | Token::Error(_) => {}
        }
    }
    end_run(&mut run, &mut runs);
    runs
}

/// Appends the units of `run` to `units`.
fn units_of_run(run: &Run, lang: &str, fits: &mut impl FnMut(&str) -> bool, units: &mut Vec<Unit>) {
    let plain = &run.plain;
    // In HTML a line break is a space: the same byte length, so ranges carry over.
    let flat: String = plain
        .chars()
        .map(|c| {
            if c.is_whitespace() {
                " ".repeat(c.len_utf8())
            } else {
                c.to_string()
            }
        })
        .collect();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for sentence in segment::sentences(&flat, lang) {
        for piece in segment::split_to_fit(plain, sentence, &mut *fits) {
            let piece = run.snap(piece);
            // Snapping may make neighbours overlap: they become one unit.
            match ranges.last_mut() {
                Some(last) if piece.start < last.end => last.end = last.end.max(piece.end),
                _ => ranges.push(piece),
            }
        }
    }
    let first = units.len();
    for range in ranges {
        let Some(unit) = unit_of(run, range.clone()) else {
            continue;
        };
        let touching = units
            .get(first..)
            .and_then(|mine| mine.last())
            .filter(|_| range.start > 0)
            .and_then(|_| touching_context(plain, range.start));
        units.push(Unit { touching, ..unit });
    }
}

/// The characters on both sides of `at` in `plain` and the boundary between them,
/// when `at` falls between two non-whitespace characters.
fn touching_context(plain: &str, at: usize) -> Option<(String, usize)> {
    let before = plain.get(..at)?.chars().next_back()?;
    let after = plain.get(at..)?.chars().next()?;
    (!before.is_whitespace() && !after.is_whitespace())
        .then(|| (format!("{before}{after}"), before.len_utf8()))
}

/// The unit for plain-text `range` of `run`.
fn unit_of(run: &Run, range: Range<usize>) -> Option<Unit> {
    let text = run.plain.get(range.clone())?.to_owned();
    let raw = run.raw_start(range.start)?..run.raw_end(range.end)?;
    // Cut points: the token starts strictly inside the unit.
    let mut cuts: Vec<usize> = run
        .token_starts
        .iter()
        .copied()
        .filter(|&s| range.start < s && s < range.end)
        .collect();
    cuts.push(range.end);
    let mut pieces = Vec::with_capacity(cuts.len());
    let mut from = range.start;
    for to in cuts {
        let written = run.raw_start(from)?..run.raw_end(to)?;
        pieces.push((from - range.start..to - range.start, written));
        from = to;
    }
    let mut spellings: Vec<(char, Range<usize>)> = Vec::new();
    let first = run.chunks.partition_point(|c| c.plain.end <= range.start);
    for c in run.chunks.get(first..).unwrap_or_default() {
        if c.plain.start >= range.end {
            break;
        }
        if c.literal {
            continue;
        }
        let mut decoded = run.plain.get(c.plain.clone()).unwrap_or_default().chars();
        // Only single characters written as a reference; `\r` line breaks are not.
        if let (Some(ch), None) = (decoded.next(), decoded.next()) {
            if ch != '\n' && !spellings.iter().any(|(s, _)| *s == ch) {
                spellings.push((ch, c.raw.clone()));
            }
        }
    }
    Some(Unit {
        raw,
        text,
        pieces,
        spellings,
        touching: None,
    })
}

/// A position in a text relative to its words (maximal non-whitespace runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Right before word `i`.
    Start(usize),
    /// Right after word `i`.
    End(usize),
    /// Inside word `i`: `offset` of its `len` characters.
    Inside { i: usize, offset: usize, len: usize },
    /// In the whitespace before word `i`, `offset` characters after the previous word.
    Gap { i: usize, offset: usize },
}

/// Character ranges of the words of `s`.
fn words(s: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    let mut n = 0;
    for (k, c) in s.chars().enumerate() {
        n = k + 1;
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(k),
            (true, Some(b)) => {
                out.push(b..k);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(b) = start {
        out.push(b..n);
    }
    out
}

/// Where character position `p` is among `words`.
fn place(words: &[Range<usize>], p: usize) -> Place {
    // First word that ends after p (or at it).
    let i = words.partition_point(|w| w.end < p);
    match words.get(i) {
        Some(w) if w.start == p => Place::Start(i),
        Some(w) if w.end == p => Place::End(i),
        Some(w) if w.start < p => Place::Inside {
            i,
            offset: p - w.start,
            len: w.len(),
        },
        _ => Place::Gap {
            i,
            offset: p - i
                .checked_sub(1)
                .and_then(|j| words.get(j))
                .map_or(0, |w| w.end),
        },
    }
}

/// Maps character positions `positions` (ascending) of `source` to positions in
/// `target` by relative word position (see the module docs). Exact when `target`
/// has the same words as `source`; ascending and within `target` whatever the texts.
pub fn map_positions(source: &str, target: &str, positions: &[usize]) -> Vec<usize> {
    let ws = words(source);
    let wt = words(target);
    let t_len = target.chars().count();
    let (n, m) = (ws.len(), wt.len());
    // Source word i covers target words first..=last, by relative position: word i
    // itself when both have as many words.
    let span = |i: usize| -> Option<(&Range<usize>, &Range<usize>)> {
        if n == 0 || m == 0 {
            return None;
        }
        let first = (i * m / n).min(m - 1);
        let last = ((i + 1) * m)
            .div_ceil(n)
            .saturating_sub(1)
            .clamp(first, m - 1);
        Some((wt.get(first)?, wt.get(last)?))
    };
    let mut out = Vec::with_capacity(positions.len());
    let mut last = 0;
    for &p in positions {
        let mapped = match (place(&ws, p), span(place_word(&ws, p))) {
            (_, None) => p.min(t_len),
            (Place::Start(_), Some((first, _))) => first.start,
            (Place::End(_), Some((_, last))) => last.end,
            (Place::Inside { offset, len, .. }, Some((first, last))) => {
                let (a, b) = (first.start, last.end);
                let x = a + offset * (b - a) / len.max(1);
                if first != last {
                    // Several target words for one source word (a CJK sentence
                    // translated into English): the nearest word boundary.
                    wt.iter()
                        .flat_map(|w| [w.start, w.end])
                        .filter(|&q| a <= q && q <= b)
                        .min_by_key(|&q| q.abs_diff(x))
                        .unwrap_or(x)
                } else if b - a < 2 {
                    if 2 * offset < len {
                        a
                    } else {
                        b
                    }
                } else {
                    x.clamp(a + 1, b - 1)
                }
            }
            (Place::Gap { i, offset }, Some((first, _))) if i < n => {
                match wt
                    .iter()
                    .position(|w| w == first)
                    .and_then(|j| j.checked_sub(1))
                {
                    Some(j) => {
                        let prev = wt.get(j).map_or(0, |w| w.end);
                        prev + offset.min(first.start - prev)
                    }
                    None => first.start,
                }
            }
            (Place::Gap { offset, .. }, Some(_)) => wt.last().map_or(0, |w| w.end) + offset,
        };
        let mapped = mapped.min(t_len).max(last);
        out.push(mapped);
        last = mapped;
    }
    out
}

/// The word a position belongs to or precedes (the last word for a position after
/// every word).
fn place_word(words: &[Range<usize>], p: usize) -> usize {
    match place(words, p) {
        Place::Start(i) | Place::End(i) | Place::Inside { i, .. } => i,
        Place::Gap { i, .. } => i.min(words.len().saturating_sub(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(html: &str) -> Vec<String> {
        plan(html, "en", |_| true).unwrap().segments()
    }

    /// The document rebuilt with each segment translated by `f`.
    fn translate(html: &str, f: impl Fn(&str) -> String) -> String {
        let p = plan(html, "en", |_| true).unwrap();
        let outs: Vec<String> = p.segments().iter().map(|s| f(s)).collect();
        p.rebuild(html, &outs)
    }

    #[test]
    fn a_sentence_across_inline_tags_is_one_segment() {
        let html = "<p>Read the <a href=\"/guide?a=1&amp;b=2\">user <b>guide</b></a> first. \
                    Then <em>run</em> it.</p>";
        assert_eq!(
            segments(html),
            ["Read the user guide first.", "Then run it."]
        );
        // Copied back exactly when the text is unchanged.
        assert_eq!(translate(html, str::to_owned), html);
        // Tags go back around the same words of a translation with as many words.
        assert_eq!(
            translate(html, |s| s.to_uppercase()),
            "<p>READ THE <a href=\"/guide?a=1&amp;b=2\">USER <b>GUIDE</b></a> FIRST. \
             THEN <em>RUN</em> IT.</p>"
        );
    }

    #[test]
    fn block_elements_end_segments_and_markup_is_untouched() {
        let html = "<!DOCTYPE html>\n<html><head><title>A &amp; B</title>\
            <style>p > a { color: red }</style></head>\n<body>\n  <h1>Title</h1>\n  \
            <ul>\n    <li>One</li>\n    <li>Two<br>Three</li>\n  </ul>\n\
            <!-- a comment. -->\n<p class=\"x>y\">Tail</p></body></html>";
        assert_eq!(
            segments(html),
            ["A & B", "Title", "One", "Two", "Three", "Tail"]
        );
        assert_eq!(translate(html, str::to_owned), html);
        let out = translate(html, |s| format!("[{s}]"));
        assert!(out.contains("<title>[A &amp; B]</title>"), "{out}");
        assert!(out.contains("<style>p > a { color: red }</style>"), "{out}");
        assert!(out.contains("<li>[Two]<br>[Three]</li>"), "{out}");
        assert!(out.contains("<!-- a comment. -->"), "{out}");
        assert!(out.contains("<p class=\"x>y\">[Tail]</p>"), "{out}");
    }

    #[test]
    fn untranslated_elements_pass_through() {
        let html = "<p>Run <code>cargo build</code> now.</p><pre>Keep. This.</pre>\
            <div translate=\"no\">Brand <div>Name</div> here.</div><p>Yes.</p>\
            <span class=\"a notranslate\">ACME Inc.</span><script>if (a<b) x();</script>\
            <textarea>Typed text.</textarea><p>Press <kbd>Ctrl</kbd>.</p>";
        assert_eq!(segments(html), ["Run  now.", "Yes.", "Press ."]);
        assert_eq!(translate(html, str::to_owned), html);
        let out = translate(html, |s| s.to_uppercase());
        assert!(
            out.starts_with("<p>RUN <code>cargo build</code> NOW.</p>"),
            "{out}"
        );
        assert!(out.contains("<pre>Keep. This.</pre>"), "{out}");
        assert!(
            out.contains(">Brand <div>Name</div> here.</div><p>YES.</p>"),
            "{out}"
        );
    }

    #[test]
    fn entities_keep_their_spelling_and_new_text_is_escaped() {
        let html = "<p>Tom &amp; Jerry&#x27;s &quot;show&quot;&nbsp;costs &lt;5&gt; &#169;.</p>";
        assert_eq!(segments(html), ["Tom & Jerry's \"show\"\u{a0}costs <5> ©."]);
        assert_eq!(translate(html, str::to_owned), html);
        // A changed sentence: the source's spellings, and `<`/`&` escaped.
        assert_eq!(
            translate(html, |_| "A & B's \"x\"\u{a0}<y> ©".to_owned()),
            "<p>A &amp; B&#x27;s &quot;x&quot;&nbsp;&lt;y&gt; &#169;</p>"
        );
        assert_eq!(
            translate("<p>a</p>", |_| "<script>&</script>".to_owned()),
            "<p>&lt;script&gt;&amp;&lt;/script&gt;</p>"
        );
    }

    #[test]
    fn line_breaks_inside_a_paragraph_do_not_end_sentences() {
        let html = "<p>This sentence\r\n  wraps over\n  lines. Another\tone.</p>\r\n";
        assert_eq!(
            segments(html),
            ["This sentence\n  wraps over\n  lines.", "Another\tone."]
        );
        assert_eq!(translate(html, str::to_owned), html);
    }

    #[test]
    fn malformed_html_is_kept() {
        for html in [
            "<P>Unclosed <B>bold. Stray</p></p> text</DIV> <i>end",
            "<p>a < b and c > d.</p><p>AT&T &ampx &copy2 fine.</p>",
            "<![CDATA[ x < y ]]><p>After.</p><a href='x'>link",
            "<div><p>One<p>Two</div></span>",
            "no markup at all. Two sentences.",
            "",
            "<p>",
            "&",
            "<p>회의는 <b>오전 10시</b>에 시작합니다. 자료를 <a href=\"#\">준비해</a> 주세요!</p>",
            "<p>会議は<b>十時</b>に始まります。資料を準備してください。</p>",
        ] {
            assert_eq!(translate(html, str::to_owned), html, "{html}");
        }
        assert_eq!(
            segments("<p>a < b and c > d.</p><p>AT&T &ampx &copy2 fine.</p>"),
            ["a < b and c > d.", "AT&T &x ©2 fine."]
        );
    }

    #[test]
    fn positions_map_by_relative_word_position() {
        // Same words: exact, wherever the positions are.
        let s = "Read the user guide first.";
        let all: Vec<usize> = (0..=s.chars().count()).collect();
        assert_eq!(map_positions(s, s, &all), all);
        // Before/after whole words, with fewer and more words.
        let s = "one two three four";
        // <b> before "two", </b> after "three".
        assert_eq!(map_positions(s, "uno dos tres cuatro", &[4, 13]), [4, 12]);
        assert_eq!(map_positions(s, "eins zwei", &[4, 13]), [0, 9]);
        // Inside a word: proportionally; never out of order or out of range.
        assert_eq!(map_positions("abcd", "wxyz", &[2]), [2]);
        assert_eq!(map_positions("abcd efgh", "", &[2, 5]), [0, 0]);
        let m = map_positions("a b c d e f", "x", &[2, 3, 6, 7]);
        assert!(
            m.windows(2).all(|w| w[0] <= w[1]) && m.iter().all(|&p| p <= 1),
            "{m:?}"
        );
        assert_eq!(
            map_positions(
                "会議は十時に始まります。",
                "会議は十時に始まります。",
                &[3, 5]
            ),
            [3, 5]
        );
    }

    #[test]
    fn cjk_sentences_touching_get_a_space_in_a_spaced_translation() {
        let html = "<p>会議は十時に始まります。<b>資料</b>を準備してください。</p>";
        assert_eq!(
            segments(html),
            ["会議は十時に始まります。", "資料を準備してください。"]
        );
        let out = translate(html, |s| {
            if s.starts_with('会') {
                "The meeting starts at ten.".into()
            } else {
                "Please prepare documents.".into()
            }
        });
        assert_eq!(
            out,
            "<p>The meeting starts at ten.<b> Please</b> prepare documents.</p>"
        );
    }

    #[test]
    fn the_corpus_comes_back_byte_for_byte() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/html");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "html") {
                continue;
            }
            let html = std::fs::read_to_string(&path).unwrap();
            let p = plan(&html, "en", |_| true).unwrap();
            let segs = p.segments();
            assert!(segs.len() >= 4, "{}: {segs:?}", path.display());
            for s in &segs {
                // Plain text only: no markup reached the engine.
                assert!(
                    !s.contains("<p") && !s.contains("</"),
                    "{}: {s:?}",
                    path.display()
                );
            }
            assert_eq!(p.rebuild(&html, &segs), html, "{}", path.display());
            n += 1;
        }
        assert!(n >= 8, "{n} pages");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const PIECES: &[&str] = &[
            "<p>",
            "</p>",
            "<b>",
            "</b>",
            "<a href=\"x>y\">",
            "</a>",
            "<br>",
            "<br/>",
            "<script>",
            "</script>",
            "<code>",
            "</code>",
            "<!--",
            "-->",
            "&amp;",
            "&nbsp;",
            "&#x27;",
            "&#39",
            "&",
            "<",
            ">",
            "&copy2",
            "&notit;",
            "\r\n",
            "\r",
            "\n",
            " ",
            "  ",
            "\t",
            "Hello",
            "world.",
            "Dr.",
            "3.5",
            "회의는",
            "시작합니다.",
            "会議。",
            "\"",
            "'",
            "<div translate=no>",
            "</div>",
            "<!DOCTYPE html>",
            "<![CDATA[",
            "]]>",
            "</",
            "<P>",
            "x",
            "&#0;",
            "\u{0}",
            "😀",
            "\u{a0}",
            "\u{3000}",
            "<textarea>",
            "</textarea>",
            "<pre>",
            "</pre>",
            "<title>",
            "</title>",
            "<span class=notranslate>",
            "</span>",
            "?",
            "!",
            "<li>",
            "<td>",
        ];

        fn html() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(PIECES), 0..48).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any page: segmenting never panics, an unchanged translation rebuilds
            /// the page exactly (also with sentences cut to fit), and a changed one
            /// keeps every byte outside the segments.
            #[test]
            fn any_page_round_trips(page in html(), max in 4usize..40) {
                let p = plan(&page, "en", |_| true).unwrap();
                let segs = p.segments();
                prop_assert_eq!(p.rebuild(&page, &segs), page.clone());
                let short = plan(&page, "en", |s| s.len() <= max).unwrap();
                prop_assert_eq!(short.rebuild(&page, &short.segments()), page.clone());
                let changed: Vec<String> = segs.iter().map(|s| format!("{s} <&> X")).collect();
                let out = p.rebuild(&page, &changed);
                prop_assert!(out.len() >= page.len() - segs.iter().map(String::len).sum::<usize>());
                let none: Vec<String> = segs.iter().map(|_| String::new()).collect();
                p.rebuild(&page, &none);
            }
        }
    }

    #[test]
    fn long_sentences_are_cut_to_fit_and_tags_follow_their_piece() {
        let html = "<p>one two <b>three</b> four five six seven eight</p>";
        let p = plan(html, "en", |s| s.len() <= 20).unwrap();
        let segs = p.segments();
        assert!(segs.len() >= 2, "{segs:?}");
        assert!(segs.iter().all(|s| s.len() <= 20), "{segs:?}");
        assert_eq!(p.rebuild(html, &segs), html);
    }
}
