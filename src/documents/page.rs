//! `.html`: the page is sent as it is in `html` format (the worker keeps every
//! byte of markup). A page over [`TEXT_CHARS`] is cut into several texts, rebuilt
//! by concatenation: at the start of a block-level tag (a sentence never spans one,
//! so nothing changes for the worker) outside `script`, `pre`, `translate="no"`
//! and other untranslated elements; only where no such tag fits, at any other tag.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use html5gum::{DefaultEmitter, Token, Tokenizer};

use super::text::Layout;
use super::{DocumentError, FileKind, TEXT_CHARS};
use crate::translate::html::{BLOCK, OPAQUE};

/// Elements without content or end tag (an untranslated one opens nothing). The
/// worker's list, which html.rs keeps private.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// A place the page may be cut: byte offset, characters before it, whether it is a
/// block-level tag.
#[derive(Debug, Clone, Copy)]
struct Cut {
    byte: usize,
    chars: usize,
    block: bool,
}

/// Takes an `.html` page apart.
pub(super) fn extract(bytes: &[u8]) -> Result<(Vec<String>, Layout), DocumentError> {
    extract_with(bytes, TEXT_CHARS)
}

fn extract_with(bytes: &[u8], max: usize) -> Result<(Vec<String>, Layout), DocumentError> {
    let source = std::str::from_utf8(bytes)
        .map_err(|e| FileKind::Html.corrupt(format!("not UTF-8: {e}")))?;
    let total = source.chars().count();
    let ranges = if source.trim().is_empty() {
        Vec::new()
    } else if total <= max {
        std::iter::once(0..source.len()).collect()
    } else {
        let cuts = catch_unwind(AssertUnwindSafe(|| cuts(source)))
            .map_err(|_| FileKind::Html.corrupt("the HTML tokenizer failed on this page"))?;
        pieces(source.len(), total, &cuts, max.max(1))
    };
    Ok(Layout::cut(source, ranges))
}

/// Contiguous pieces of at most `max` characters where the cuts allow: the last
/// block cut that fits, else the last cut that fits, else the first cut after.
fn pieces(len: usize, total: usize, cuts: &[Cut], max: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut byte, mut chars) = (0, 0);
    let mut next = 0; // first cut after `byte`
    while total - chars > max {
        while next < cuts.len() && cuts[next].byte <= byte {
            next += 1;
        }
        let fitting = cuts[next..]
            .iter()
            .take_while(|c| c.chars - chars <= max)
            .collect::<Vec<_>>();
        let chosen = fitting
            .iter()
            .rev()
            .find(|c| c.block)
            .or(fitting.last())
            .copied()
            .or(cuts.get(next));
        let Some(cut) = chosen else { break };
        ranges.push(byte..cut.byte);
        (byte, chars) = (cut.byte, cut.chars);
    }
    ranges.push(byte..len);
    ranges
}

/// Every tag start outside untranslated elements, in order.
fn cuts(source: &str) -> Vec<Cut> {
    let mut emitter = DefaultEmitter::<usize>::new_with_span();
    // As the worker does: `script`, `style`, `textarea`, … hold raw text.
    emitter.naively_switch_states(true);
    let mut cuts = Vec::new();
    let (mut byte, mut chars) = (0, 0);
    let mut at = |offset: usize, block: bool, cuts: &mut Vec<Cut>| {
        if let Some(s) = source.get(byte..offset) {
            chars += s.chars().count();
            byte = offset;
            cuts.push(Cut { byte, chars, block });
        }
    };
    // The untranslated element being skipped, and its nesting depth.
    let mut opaque: Option<(Vec<u8>, usize)> = None;
    for token in Tokenizer::new_with_emitter(source, emitter).flatten() {
        if let Some((name, depth)) = &mut opaque {
            match &token {
                Token::StartTag(t) if t.name[..] == name[..] => *depth += 1,
                Token::EndTag(t) if t.name[..] == name[..] => {
                    *depth -= 1;
                    if *depth == 0 {
                        opaque = None;
                    }
                }
                _ => {}
            }
            continue;
        }
        match token {
            Token::StartTag(t) => {
                let name = String::from_utf8_lossy(&t.name);
                at(t.span.start, BLOCK.contains(&&*name), &mut cuts);
                let untranslated = OPAQUE.contains(&&*name)
                    || t.attributes.iter().any(|(k, v)| {
                        let v = String::from_utf8_lossy(&v.value);
                        match &k[..] {
                            b"translate" => v.trim().eq_ignore_ascii_case("no"),
                            b"class" => v
                                .split_ascii_whitespace()
                                .any(|c| c.eq_ignore_ascii_case("notranslate")),
                            _ => false,
                        }
                    });
                if untranslated && !VOID.contains(&&*name) && !t.self_closing {
                    opaque = Some((t.name.to_vec(), 1));
                }
            }
            Token::EndTag(t) => {
                let block = BLOCK.contains(&&*String::from_utf8_lossy(&t.name));
                at(t.span.start, block, &mut cuts);
            }
            Token::Comment(c) => at(c.span.start, false, &mut cuts),
            _ => {}
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_pages_are_one_text() {
        let page = "<!doctype html><p>Hello <b>world</b>.</p>\n";
        let (texts, layout) = extract(page.as_bytes()).unwrap();
        assert_eq!(texts, [page]);
        assert_eq!(layout.rebuild(&texts, &texts), page.as_bytes());
        assert!(extract(b" \n").unwrap().0.is_empty());
        assert!(matches!(
            extract(b"<p>\xff</p>"),
            Err(DocumentError::Corrupt { kind: "html", .. })
        ));
    }

    #[test]
    fn long_pages_are_cut_at_block_tags_outside_untranslated_elements() {
        let mut page = String::from("<html><body>\n");
        for i in 0..40 {
            page.push_str(&format!(
                "<p>Paragraph {i} with <a href=\"#\">a link</a> and text.</p>\n"
            ));
            if i == 5 {
                page.push_str("<pre>\n<p>not a cut</p>\n<p>nor this</p>\n</pre>\n");
            }
        }
        page.push_str("</body></html>\n");
        let (texts, layout) = extract_with(page.as_bytes(), 300).unwrap();
        assert!(texts.len() > 5);
        assert_eq!(texts.concat(), page);
        for t in &texts {
            assert!(t.chars().count() <= 300, "{t}");
            assert!(
                t.starts_with("<p>") || t.starts_with("<html>") || t.starts_with("</body>"),
                "{t}"
            );
            assert!(!t.starts_with("<p>not") && !t.starts_with("<p>nor"), "{t}");
        }
        assert_eq!(layout.rebuild(&texts, &texts), page.as_bytes());
        let mut changed = texts.clone();
        changed[1] = "<p>X</p>".into();
        let out = String::from_utf8(layout.rebuild(&texts, &changed)).unwrap();
        assert_eq!(out, format!("{}<p>X</p>{}", texts[0], texts[2..].concat()));
    }

    #[test]
    fn a_page_without_tags_stays_one_oversized_text() {
        let page = "x".repeat(500);
        let (texts, _) = extract_with(page.as_bytes(), 100).unwrap();
        assert_eq!(texts, [page]);
    }
}
