//! Files → texts to translate → the same file translated: `.txt`, `.html`, `.md`,
//! `.docx`, `.odt`, `.pptx`, for the gateway's `/translate_file` and the CLI's
//! `translate --file F --out G`.
//!
//! # Design
//!
//! [`extract`] takes a file apart into [`Extracted::texts`], all in one wire
//! [`Format`] ([`Extracted::format`]), and keeps what is needed to put translations
//! back; [`Extracted::rebuild`] writes the file with `translations[i]` in place of
//! `texts()[i]`. Every byte outside the translated texts is copied from the input,
//! and a translation equal to its text leaves that text's bytes exactly as they
//! were: through the copy model (translation = input) a rebuilt file equals its
//! input (zip kinds: every entry's bytes).
//!
//! The worker already translates `format: "html"` jobs sentence by sentence across
//! inline tags, putting tags back by relative word position and leaving markup
//! untouched ([`crate::translate`]'s `html`). Files reuse that: a paragraph whose
//! inline structure must survive is sent as HTML in which that structure is empty
//! inline *marker* elements (`<x-r id="3"></x-r>`, or `<br id="3">` for a line
//! break or tab, which also ends a sentence), its text escaped. The rebuild parses
//! the translated HTML (html5gum) back into text and markers (`markup.rs`).
//!
//! | kind | texts | kept untouched |
//! |------|-------|----------------|
//! | `.txt` (`text.rs`) | paragraphs (blank-line separated), `text` format | blank lines, leading/trailing whitespace of each paragraph, line endings |
//! | `.html` (`page.rs`) | the page itself, `html` format; a page over [`TEXT_CHARS`] is cut at block-element boundaries into several texts, rebuilt by concatenation | all markup (the worker's HTML rules) |
//! | `.md` (`markdown.rs`) | each run of inline content (paragraph, heading, list item, table cell, block quote text), `html` format; emphasis, links, inline code, inline HTML and hard breaks as markers | code blocks, inline code, link and image targets, HTML blocks, front matter, block syntax (`#`, `>`, `-`, `|`) |
//! | `.docx`, `.pptx`, `.odt` (`office.rs`) | each paragraph (`w:p`, `a:p`, `text:p`/`text:h`), `html` format; each text node (`w:t`, `a:t`, ODF text inside `text:span`/`text:a`) after the first starts with a marker | every XML byte outside the text nodes (runs, styles, fields, drawings); zip entries not translated are raw-copied |
//!
//! Parts of `.docx`: `word/document.xml`, headers, footers, footnotes, endnotes,
//! comments; `.pptx`: slides and notes slides; `.odt`: `content.xml` and
//! `styles.xml` (headers and footers).
//!
//! How a translation goes back into a paragraph of several runs: the text before
//! the first marker goes to the first text node, the text after marker `k` to node
//! `k`. The worker keeps every marker and their order, placing each by relative
//! word position, so with a real model a run boundary (bold, a link) keeps its
//! place in the sentence but may shift by a word; a node whose text is unchanged is
//! not touched.
//!
//! # Sending the texts
//!
//! [`translate_document`] is the one round trip the CLI and the gateway share:
//! it cuts [`Extracted::texts`] into jobs with [`Extracted::chunks`] (at most
//! `max_texts` texts and [`JOB_TEXT_BYTES`] of JSON text per job, within the
//! worker's limits), calls the caller's `send(texts, format)` for each job (a few
//! at a time), checks each reply's count and rebuilds the file:
//!
//! ```no_run
//! # async fn demo(client: translation_client::Client, bytes: Vec<u8>) -> anyhow::Result<()> {
//! use translation_client::TranslateRequest;
//! use translation_worker::documents::{self, FileKind};
//! let extracted = documents::extract(FileKind::Docx, &bytes, documents::MAX_EXPANDED_BYTES)?;
//! let out = documents::translate_document(&extracted, 128, 4, |texts, format| {
//!     let client = client.clone();
//!     async move {
//!         let request = TranslateRequest::new("ko", "en", texts).with_format(format);
//!         Ok::<_, anyhow::Error>(client.translate(request).await?.translations)
//!     }
//! })
//! .await?;
//! # let _ = out; Ok(()) }
//! ```
//!
//! # Limits
//!
//! Zip parts are read up to `max_expanded_bytes` in all (a zip bomb is
//! [`DocumentError::TooLarge`], found while inflating, whatever the header claims);
//! entries not translated are copied raw, never inflated. A paragraph of an office
//! or Markdown file is one text: one longer than the worker's `max_text_chars` is
//! refused by the worker. Nothing here panics on hostile input: the parsers return
//! errors, and html5gum runs under `catch_unwind` like in the worker.

mod markdown;
mod markup;
mod office;
mod page;
mod text;

use std::future::Future;
use std::ops::Range;

use futures_util::StreamExt;
use translation_client::wire::Format;

/// Most characters in one text that [`extract`] makes where it can cut (`.txt`
/// paragraphs, `.html` pages): the worker's default `limits.max_text_chars`.
pub const TEXT_CHARS: usize = 10_000;

/// Most bytes of JSON-encoded texts in one job made by [`Extracted::chunks`]: the
/// worker refuses bodies over `limits.max_body_bytes` (1 MiB by default), and the
/// rest of the job (ids, languages, options) needs far less than the quarter left.
pub const JOB_TEXT_BYTES: usize = 768 * 1024;

/// Default bound for `max_expanded_bytes`: what the parts of one office file read
/// for translation may inflate to (real documents' XML is a few MiB at most).
pub const MAX_EXPANDED_BYTES: usize = 64 * 1024 * 1024;

/// A file type this module reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Plain text (`.txt`).
    Txt,
    /// HTML (`.html`, `.htm`).
    Html,
    /// Markdown (`.md`, `.markdown`).
    Markdown,
    /// Word processing (`.docx`, Office Open XML).
    Docx,
    /// OpenDocument text (`.odt`).
    Odt,
    /// Presentation (`.pptx`, Office Open XML).
    Pptx,
}

impl FileKind {
    /// Every kind, in the order `/frontend/settings` lists them.
    pub const ALL: [FileKind; 6] = [
        FileKind::Txt,
        FileKind::Html,
        FileKind::Markdown,
        FileKind::Docx,
        FileKind::Odt,
        FileKind::Pptx,
    ];

    /// The kind for a file name, by its extension (case-insensitive).
    pub fn from_name(name: &str) -> Option<FileKind> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" => FileKind::Txt,
            "html" | "htm" => FileKind::Html,
            "md" | "markdown" => FileKind::Markdown,
            "docx" => FileKind::Docx,
            "odt" => FileKind::Odt,
            "pptx" => FileKind::Pptx,
            _ => return None,
        })
    }

    /// The extension written on a translated file (with the dot).
    pub fn extension(self) -> &'static str {
        match self {
            FileKind::Txt => ".txt",
            FileKind::Html => ".html",
            FileKind::Markdown => ".md",
            FileKind::Docx => ".docx",
            FileKind::Odt => ".odt",
            FileKind::Pptx => ".pptx",
        }
    }

    /// The media type a download is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            FileKind::Txt => "text/plain; charset=utf-8",
            FileKind::Html => "text/html; charset=utf-8",
            FileKind::Markdown => "text/markdown; charset=utf-8",
            FileKind::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            FileKind::Odt => "application/vnd.oasis.opendocument.text",
            FileKind::Pptx => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
        }
    }
}

/// Why a file cannot be read or written back.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not one of [`FileKind::ALL`].
    #[error("unsupported file type: {0}")]
    Unsupported(String),
    /// The bytes are not a valid file of its kind (bad zip, bad XML, not UTF-8, …).
    #[error("corrupt {kind} file: {detail}")]
    Corrupt {
        /// The kind it claimed to be.
        kind: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A part of the file expands past the limit (zip bombs).
    #[error("file too large: {0}")]
    TooLarge(String),
    /// `rebuild` got a different number of translations than `texts` had.
    #[error("expected {expected} translations, got {got}")]
    Mismatch {
        /// Texts extracted.
        expected: usize,
        /// Translations given.
        got: usize,
    },
}

impl FileKind {
    /// The kind's name in messages (its extension without the dot).
    pub fn name(self) -> &'static str {
        &self.extension()[1..]
    }

    /// A [`DocumentError::Corrupt`] for this kind.
    fn corrupt(self, detail: impl std::fmt::Display) -> DocumentError {
        DocumentError::Corrupt {
            kind: self.name(),
            detail: detail.to_string(),
        }
    }
}

/// What [`Extracted::rebuild`] needs, per kind.
#[derive(Debug)]
enum Layout {
    Text(text::Layout),
    Page(text::Layout),
    Markdown(markdown::Layout),
    Office(office::Layout),
}

/// A file taken apart: the texts to translate (all in one [`Format`]) and what is
/// needed to put the translations back.
#[derive(Debug)]
pub struct Extracted {
    kind: FileKind,
    format: Format,
    texts: Vec<String>,
    layout: Layout,
}

impl Extracted {
    /// The file's kind.
    pub fn kind(&self) -> FileKind {
        self.kind
    }
    /// The format the texts are sent in (`html` where inline markup must be kept).
    pub fn format(&self) -> Format {
        self.format
    }
    /// The texts to translate, in order.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The texts cut into jobs, as index ranges into [`texts`](Self::texts), in
    /// order: at most `max_texts` texts (at least one) and, unless a single text is
    /// larger, at most [`JOB_TEXT_BYTES`] of JSON-encoded text per job.
    pub fn chunks(&self, max_texts: usize) -> Vec<Range<usize>> {
        let max_texts = max_texts.max(1);
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut bytes = 0;
        for (i, t) in self.texts.iter().enumerate() {
            let size = json_len(t);
            if i > start && (i - start >= max_texts || bytes + size > JOB_TEXT_BYTES) {
                chunks.push(start..i);
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < self.texts.len() {
            chunks.push(start..self.texts.len());
        }
        chunks
    }

    /// The file with `translations[i]` in place of `texts()[i]`.
    pub fn rebuild(&self, translations: &[String]) -> Result<Vec<u8>, DocumentError> {
        if translations.len() != self.texts.len() {
            return Err(DocumentError::Mismatch {
                expected: self.texts.len(),
                got: translations.len(),
            });
        }
        match &self.layout {
            Layout::Text(l) => Ok(l.rebuild(&self.texts, translations)),
            Layout::Page(l) => Ok(l.rebuild(&self.texts, translations)),
            Layout::Markdown(l) => Ok(l.rebuild(&self.texts, translations)),
            Layout::Office(l) => l.rebuild(&self.texts, translations),
        }
    }
}

/// Length of `text` as a JSON string (escapes included), without allocating.
fn json_len(text: &str) -> usize {
    2 + text
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

/// Takes a file apart. `max_expanded_bytes` bounds what its parts may expand to.
pub fn extract(
    kind: FileKind,
    bytes: &[u8],
    max_expanded_bytes: usize,
) -> Result<Extracted, DocumentError> {
    let (format, texts, layout) = match kind {
        FileKind::Txt => {
            let (texts, l) = text::extract(bytes)?;
            (Format::Text, texts, Layout::Text(l))
        }
        FileKind::Html => {
            let (texts, l) = page::extract(bytes)?;
            (Format::Html, texts, Layout::Page(l))
        }
        FileKind::Markdown => {
            let (texts, l) = markdown::extract(bytes)?;
            (Format::Html, texts, Layout::Markdown(l))
        }
        FileKind::Docx | FileKind::Pptx | FileKind::Odt => {
            let (texts, l) = office::extract(kind, bytes, max_expanded_bytes)?;
            (Format::Html, texts, Layout::Office(l))
        }
    };
    Ok(Extracted {
        kind,
        format,
        texts,
        layout,
    })
}

/// Translates a whole file: sends [`Extracted::chunks`] of at most `max_texts` texts
/// through `send(texts, format)`, `concurrency` jobs at a time (at least one), and
/// rebuilds the file from the translations. `send` returns one translation per
/// text it was given, in order (a reply with another count is
/// [`DocumentError::Mismatch`]); its first error ends the call.
pub async fn translate_document<F, Fut, E>(
    extracted: &Extracted,
    max_texts: usize,
    concurrency: usize,
    mut send: F,
) -> Result<Vec<u8>, E>
where
    F: FnMut(Vec<String>, Format) -> Fut,
    Fut: Future<Output = Result<Vec<String>, E>>,
    E: From<DocumentError>,
{
    let texts = extracted.texts();
    let jobs = extracted.chunks(max_texts).into_iter().map(|range| {
        let expected = range.len();
        let reply = send(texts[range].to_vec(), extracted.format());
        async move {
            let translations = reply.await?;
            if translations.len() != expected {
                return Err(E::from(DocumentError::Mismatch {
                    expected,
                    got: translations.len(),
                }));
            }
            Ok(translations)
        }
    });
    let mut replies = futures_util::stream::iter(jobs).buffered(concurrency.max(1));
    let mut translations = Vec::with_capacity(texts.len());
    while let Some(reply) = replies.next().await {
        translations.extend(reply?);
    }
    Ok(extracted.rebuild(&translations)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fixture of tests/fixtures/files, by name.
    fn fixtures() -> Vec<(&'static str, &'static [u8])> {
        vec![
            (
                "notes.txt",
                include_bytes!("../../tests/fixtures/files/notes.txt"),
            ),
            (
                "guide.md",
                include_bytes!("../../tests/fixtures/files/guide.md"),
            ),
            (
                "page.html",
                include_bytes!("../../tests/fixtures/files/page.html"),
            ),
            (
                "report.docx",
                include_bytes!("../../tests/fixtures/files/report.docx"),
            ),
            (
                "slides.pptx",
                include_bytes!("../../tests/fixtures/files/slides.pptx"),
            ),
            (
                "notes.odt",
                include_bytes!("../../tests/fixtures/files/notes.odt"),
            ),
        ]
    }

    #[test]
    fn kinds_by_name() {
        assert_eq!(FileKind::from_name("a/B.DOCX"), Some(FileKind::Docx));
        assert_eq!(FileKind::from_name("x.htm"), Some(FileKind::Html));
        assert_eq!(FileKind::from_name("x.markdown"), Some(FileKind::Markdown));
        assert_eq!(FileKind::from_name("x.pdf"), None);
        assert_eq!(FileKind::from_name("docx"), None);
        for kind in FileKind::ALL {
            assert_eq!(
                FileKind::from_name(&format!("f{}", kind.extension())),
                Some(kind)
            );
        }
    }

    #[test]
    fn every_fixture_extracts_and_rebuilds_as_it_was() {
        let mut seen = Vec::new();
        for (name, bytes) in fixtures() {
            let kind = FileKind::from_name(name).unwrap();
            seen.push(kind);
            let e = extract(kind, bytes, MAX_EXPANDED_BYTES).unwrap();
            assert_eq!(e.kind(), kind);
            assert!(!e.texts().is_empty(), "{name}");
            let expected = if kind == FileKind::Txt {
                Format::Text
            } else {
                Format::Html
            };
            assert_eq!(e.format(), expected, "{name}");
            if matches!(kind, FileKind::Txt | FileKind::Html | FileKind::Markdown) {
                assert_eq!(e.rebuild(e.texts()).unwrap(), bytes, "{name}");
            }
            assert!(matches!(
                e.rebuild(&e.texts()[1..]),
                Err(DocumentError::Mismatch { .. })
            ));
        }
        seen.sort_by_key(|k| FileKind::ALL.iter().position(|a| a == k));
        assert_eq!(seen, FileKind::ALL, "a fixture per kind");
        // The page is longer than a text may be: cut into several.
        let page = extract(FileKind::Html, fixtures()[2].1, MAX_EXPANDED_BYTES).unwrap();
        assert!(page.texts().len() > 1);
        assert!(page.texts().iter().all(|t| t.chars().count() <= TEXT_CHARS));
    }

    #[test]
    fn chunks_respect_counts_and_bytes() {
        let e = Extracted {
            kind: FileKind::Txt,
            format: Format::Text,
            texts: (0..300).map(|i| format!("text {i}")).collect(),
            layout: Layout::Text(text::extract(b"").unwrap().1),
        };
        let chunks = e.chunks(128);
        assert_eq!(chunks, [0..128, 128..256, 256..300]);
        assert_eq!(e.chunks(0).len(), 300);
        let big = "가".repeat(9_000); // 27 kB of JSON
        let e = Extracted {
            texts: vec![big; 100],
            ..e
        };
        let chunks = e.chunks(128);
        assert!(chunks.len() > 1);
        for c in &chunks {
            let bytes: usize = e.texts()[c.clone()].iter().map(|t| json_len(t)).sum();
            assert!(bytes <= JOB_TEXT_BYTES);
        }
        assert_eq!(chunks.last().unwrap().end, 100);
        assert_eq!(
            json_len("a\"\n\u{1}가"),
            serde_json::to_string("a\"\n\u{1}가").unwrap().len()
        );
    }

    /// What a real model does to a sentence, roughly: other words, in another order.
    fn reword(sentence: &str) -> String {
        let words: Vec<String> = sentence
            .split_whitespace()
            .rev()
            .map(|w| format!("{}~", w.to_uppercase()))
            .collect();
        words.join(" ")
    }

    #[test]
    fn reworded_translations_through_the_worker_html_rules_give_valid_files() {
        use crate::translate::html;
        for (name, bytes) in fixtures() {
            let kind = FileKind::from_name(name).unwrap();
            let e = extract(kind, bytes, MAX_EXPANDED_BYTES).unwrap();
            // As the worker does for `format: "html"`: sentences across tags,
            // translated, tags put back by relative word position.
            let translations: Vec<String> = e
                .texts()
                .iter()
                .map(|t| match e.format() {
                    Format::Html => {
                        let plan = html::plan(t, "ko", |_| true).unwrap();
                        let out: Vec<String> = plan.segments().iter().map(|s| reword(s)).collect();
                        plan.rebuild(t, &out)
                    }
                    Format::Text => reword(t),
                })
                .collect();
            assert_ne!(&translations, e.texts(), "{name}");
            let out = e.rebuild(&translations).unwrap();
            assert_ne!(out, bytes, "{name}");
            // The file reads back, with the new words where the old ones were.
            let again = extract(kind, &out, MAX_EXPANDED_BYTES).unwrap();
            let joined = again.texts().concat();
            assert!(joined.contains('~'), "{name}");
            if matches!(kind, FileKind::Docx | FileKind::Pptx | FileKind::Odt) {
                // Same paragraphs, same run boundaries: the markers all came back.
                assert_eq!(again.texts().len(), e.texts().len(), "{name}");
                for (a, b) in again.texts().iter().zip(e.texts()) {
                    assert_eq!(
                        a.matches("<x-r").count(),
                        b.matches("<x-r").count(),
                        "{name}: {a}"
                    );
                }
            }
            if kind == FileKind::Markdown {
                let out = String::from_utf8(out).unwrap();
                for kept in [
                    "](https://example.com/style_guide \"Style\")",
                    "`cargo test --workspace`",
                    "println!(\"code blocks are not translated\");",
                    "![",
                    "](img/logo.png)",
                ] {
                    assert!(out.contains(kept), "{kept} lost:\n{out}");
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Any text file, Markdown or HTML (syntax-heavy alphabets): taken apart
        /// without a panic, rebuilt byte for byte from its own texts, and rebuilt
        /// without a panic from other ones (markers lost or repeated).
        #[test]
        fn text_kinds_round_trip_anything(
            source in "([a-z가 *_`\\[\\]()<>#|!&;:/\\\\~=+.-]|\n|\r\n|    |<b>|</b>|```|\\[x\\]: y){0,120}",
            other in "[a-z <>&/\"=x-]{0,20}",
        ) {
            for kind in [FileKind::Txt, FileKind::Markdown, FileKind::Html] {
                let e = extract(kind, source.as_bytes(), MAX_EXPANDED_BYTES).unwrap();
                proptest::prop_assert_eq!(e.rebuild(e.texts()).unwrap(), source.as_bytes());
                let changed: Vec<String> = e
                    .texts()
                    .iter()
                    .map(|t| format!("{other}{}", reword(t)))
                    .collect();
                let _ = e.rebuild(&changed).unwrap();
            }
        }
    }

    #[test]
    fn the_round_trip_is_send_for_the_gateway() {
        fn assert_send<T: Send>(_: &T) {}
        let e = extract(FileKind::Txt, b"a", MAX_EXPANDED_BYTES).unwrap();
        let job = translate_document(
            &e,
            1,
            1,
            |texts, _| async move { Ok::<_, DocumentError>(texts) },
        );
        assert_send(&job);
    }

    #[tokio::test]
    async fn translate_document_sends_chunks_and_rebuilds() {
        let (_, bytes) = fixtures()[3];
        let e = extract(FileKind::Docx, bytes, MAX_EXPANDED_BYTES).unwrap();
        let sizes = std::sync::Mutex::new(Vec::new());
        let out = translate_document(&e, 5, 3, |texts, format| {
            sizes.lock().expect("not poisoned").push(texts.len());
            assert_eq!(format, Format::Html);
            async move { Ok::<_, DocumentError>(texts) }
        })
        .await
        .unwrap();
        let sizes = sizes.into_inner().expect("not poisoned");
        assert_eq!(sizes.iter().sum::<usize>(), e.texts().len());
        assert!(sizes.iter().all(|&n| n <= 5));
        assert_eq!(
            extract(FileKind::Docx, &out, MAX_EXPANDED_BYTES)
                .unwrap()
                .texts(),
            e.texts()
        );
        // A reply with another count is an error, not a shifted document.
        let err = translate_document(&e, 5, 1, |mut texts, _| {
            texts.pop();
            async move { Ok::<_, DocumentError>(texts) }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, DocumentError::Mismatch { .. }));
    }
}
