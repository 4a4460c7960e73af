//! `.md`: each run of inline content (a paragraph, heading, list item, table cell,
//! the text of a block quote) is one `html` text, found with pulldown-cmark's
//! source offsets. Its plain text is sent escaped; the Markdown syntax between
//! pieces of text (emphasis delimiters, `[`/`](target)` of links and images, inline
//! code, inline HTML, footnote references, hard breaks) becomes marker elements,
//! put back byte for byte from the source. Code blocks, HTML blocks, front matter
//! and block syntax are never sent.
//!
//! A soft line break inside a paragraph is sent as a newline (plain whitespace to
//! the worker); in a changed paragraph newlines become spaces, so a paragraph that
//! continued over lines (in a quote or list item, with `>` or indentation) is
//! written on one line, which Markdown reads the same. A piece of text that comes
//! back unchanged is copied as written (escapes and entities included); a changed
//! one is written as the translation gives it.

use std::ops::Range;

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};

use super::markup::{self, Piece};
use super::{DocumentError, FileKind};

/// The file and its runs of inline content, one per text.
#[derive(Debug)]
pub(super) struct Layout {
    source: String,
    runs: Vec<Run>,
}

/// A run of inline content: its bytes and its pieces, in order.
#[derive(Debug)]
struct Run {
    range: Range<usize>,
    segs: Vec<Seg>,
}

#[derive(Debug)]
enum Seg {
    /// Text (soft breaks included): its bytes and what it reads as.
    Text { src: Range<usize>, decoded: String },
    /// Syntax between texts, a marker in the sent text; `line_break` for a hard break.
    Gap { src: Range<usize>, line_break: bool },
}

/// An inline event of the run being collected.
#[derive(Debug)]
enum Inline {
    Text(String),
    SoftBreak,
    Syntax { line_break: bool },
}

/// Takes a `.md` file apart.
pub(super) fn extract(bytes: &[u8]) -> Result<(Vec<String>, Layout), DocumentError> {
    let source = std::str::from_utf8(bytes)
        .map_err(|e| FileKind::Markdown.corrupt(format!("not UTF-8: {e}")))?;
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut runs = Vec::new();
    let mut events: Vec<(Range<usize>, Inline)> = Vec::new();
    // Inside a code block or front matter: its text is not inline content.
    let mut verbatim = 0usize;
    // Open links: whether each is an autolink (its text is its target: kept).
    let mut links: Vec<bool> = Vec::new();
    for (event, range) in Parser::new_ext(source, options).into_offset_iter() {
        let inline = match event {
            Event::Start(tag) => match tag {
                Tag::Emphasis
                | Tag::Strong
                | Tag::Strikethrough
                | Tag::Superscript
                | Tag::Subscript
                | Tag::Image { .. } => Some(Inline::Syntax { line_break: false }),
                Tag::Link { link_type, .. } => {
                    links.push(matches!(link_type, LinkType::Autolink | LinkType::Email));
                    Some(Inline::Syntax { line_break: false })
                }
                Tag::CodeBlock(_) | Tag::MetadataBlock(_) => {
                    verbatim += 1;
                    None
                }
                _ => None,
            },
            Event::End(tag) => match tag {
                TagEnd::Emphasis
                | TagEnd::Strong
                | TagEnd::Strikethrough
                | TagEnd::Superscript
                | TagEnd::Subscript
                | TagEnd::Image => Some(Inline::Syntax { line_break: false }),
                TagEnd::Link => {
                    links.pop();
                    Some(Inline::Syntax { line_break: false })
                }
                TagEnd::CodeBlock | TagEnd::MetadataBlock(_) => {
                    verbatim = verbatim.saturating_sub(1);
                    None
                }
                _ => None,
            },
            // An autolink's text is its target.
            Event::Text(_) if links.iter().any(|&auto| auto) => {
                Some(Inline::Syntax { line_break: false })
            }
            Event::Text(t) => Some(Inline::Text(t.into_string())),
            Event::SoftBreak => Some(Inline::SoftBreak),
            Event::HardBreak => Some(Inline::Syntax { line_break: true }),
            Event::Code(_)
            | Event::InlineHtml(_)
            | Event::InlineMath(_)
            | Event::FootnoteReference(_)
            | Event::TaskListMarker(_) => Some(Inline::Syntax { line_break: false }),
            Event::Html(_) | Event::DisplayMath(_) | Event::Rule => None,
        };
        match inline {
            Some(_) if verbatim > 0 => {}
            Some(i) => events.push((range, i)),
            None => runs.extend(run_of(source, std::mem::take(&mut events))),
        }
    }
    runs.extend(run_of(source, events));
    let texts = runs.iter().map(Run::html).collect();
    Ok((
        texts,
        Layout {
            source: source.to_owned(),
            runs,
        },
    ))
}

/// The run made of `events` (in document order), if it has text to translate.
fn run_of(source: &str, events: Vec<(Range<usize>, Inline)>) -> Option<Run> {
    let start = events.iter().map(|(r, _)| r.start).min()?;
    let end = events.iter().map(|(r, _)| r.end).max()?;
    // Text pieces, contiguous ones merged (an escape or entity splits a text event).
    let mut texts: Vec<(Range<usize>, String)> = Vec::new();
    for (range, inline) in &events {
        if let Inline::Text(t) = inline {
            match texts.last_mut() {
                Some((r, s)) if r.end == range.start => {
                    r.end = range.end;
                    s.push_str(t);
                }
                _ => texts.push((range.clone(), t.clone())),
            }
        }
    }
    if texts.iter().all(|(_, t)| t.trim().is_empty()) {
        return None;
    }
    // Syntax positions: where each syntax event starts and ends (a container's
    // range spans its content; its delimiters are at either end).
    let syntax: Vec<(usize, usize, bool)> = events
        .iter()
        .filter_map(|(r, i)| match i {
            Inline::Syntax { line_break } => Some((r.start, r.end, *line_break)),
            _ => None,
        })
        .collect();
    let mut segs: Vec<Seg> = Vec::new();
    let push_text = |segs: &mut Vec<Seg>, src: Range<usize>, decoded: &str| match segs.last_mut() {
        Some(Seg::Text { src: s, decoded: d }) if s.end == src.start => {
            s.end = src.end;
            d.push_str(decoded);
        }
        _ => segs.push(Seg::Text {
            src,
            decoded: decoded.to_owned(),
        }),
    };
    let mut at = start;
    let gap = |segs: &mut Vec<Seg>, a: usize, b: usize| {
        if a >= b {
            return;
        }
        let inside = |p: usize| (a..b).contains(&p);
        let mut syntax_here = false;
        let mut line_break = false;
        for &(s, e, brk) in &syntax {
            if inside(s) || (e > s && inside(e - 1)) {
                syntax_here = true;
                line_break |= brk && inside(s);
            }
        }
        let bytes = &source[a..b];
        if !syntax_here && bytes.chars().all(|c| c.is_whitespace() || c == '>') {
            // A soft break, with a block quote's `>` on the next line.
            let decoded = if bytes.contains('\n') { "\n" } else { bytes };
            push_text(segs, a..b, decoded);
        } else if !syntax_here && bytes.chars().all(|c| c == '\\') {
            // The backslash of an escape (`\*`): part of the text, read as nothing.
            push_text(segs, a..b, "");
        } else {
            segs.push(Seg::Gap {
                src: a..b,
                line_break,
            });
        }
    };
    for (range, text) in texts {
        gap(&mut segs, at, range.start);
        push_text(&mut segs, range.clone(), &text);
        at = range.end;
    }
    gap(&mut segs, at, end);
    Some(Run {
        range: start..end,
        segs,
    })
}

impl Run {
    /// The text sent: escaped text, a marker per gap (numbered from 0).
    fn html(&self) -> String {
        let mut out = String::new();
        let mut g = 0;
        for seg in &self.segs {
            match seg {
                Seg::Text { decoded, .. } => markup::escape_into(&mut out, decoded),
                Seg::Gap { line_break, .. } => {
                    markup::marker_into(&mut out, g, *line_break);
                    g += 1;
                }
            }
        }
        out
    }

    /// The run's new bytes from its translation: gaps in the order the translation
    /// has their markers (any it lost at the end, so no syntax is dropped).
    fn rebuild(&self, source: &str, translation: &str) -> String {
        let gaps: Vec<&Range<usize>> = self
            .segs
            .iter()
            .filter_map(|s| match s {
                Seg::Gap { src, .. } => Some(src),
                Seg::Text { .. } => None,
            })
            .collect();
        // The source text after each gap (index 0: before the first gap).
        let mut after: Vec<Option<(&Range<usize>, &str)>> = vec![None; gaps.len() + 1];
        let mut g = 0;
        for seg in &self.segs {
            match seg {
                Seg::Gap { .. } => g += 1,
                Seg::Text { src, decoded } => after[g] = Some((src, decoded)),
            }
        }
        let mut out = String::new();
        let mut used = vec![false; gaps.len()];
        let mut slot = 0; // after which gap the text being read goes (+1)
        let mut text = String::new();
        let flush = |out: &mut String, text: &mut String, slot: usize| {
            match after.get(slot).copied().flatten() {
                Some((src, decoded)) if decoded == text.as_str() => {
                    out.push_str(&source[src.clone()])
                }
                _ => escape_into(out, &text.replace(['\r', '\n'], " ")),
            }
            text.clear();
        };
        for piece in markup::parse(translation) {
            match piece {
                Piece::Text(t) => text.push_str(&t),
                Piece::Marker(g) if g < gaps.len() && !used[g] => {
                    flush(&mut out, &mut text, slot);
                    out.push_str(&source[gaps[g].clone()]);
                    used[g] = true;
                    slot = g + 1;
                }
                Piece::Marker(_) => {}
            }
        }
        flush(&mut out, &mut text, slot);
        for (g, range) in gaps.iter().enumerate() {
            if !used[g] {
                out.push_str(&source[(*range).clone()]);
            }
        }
        out
    }
}

/// Appends changed text, with a backslash before each character that Markdown
/// could read as syntax inside a line (CommonMark reads `\x` as `x` for any ASCII
/// punctuation, so this is always safe; `|` matters in table cells).
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '|' | '~') {
            out.push('\\');
        }
        out.push(c);
    }
}

impl Layout {
    /// The file with each changed run rewritten.
    pub(super) fn rebuild(&self, texts: &[String], translations: &[String]) -> Vec<u8> {
        let mut out = String::with_capacity(self.source.len());
        let mut at = 0;
        for ((run, text), translation) in self.runs.iter().zip(texts).zip(translations) {
            if text == translation {
                continue;
            }
            out.push_str(&self.source[at..run.range.start]);
            out.push_str(&run.rebuild(&self.source, translation));
            at = run.range.end;
        }
        out.push_str(&self.source[at..]);
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "---\ntitle: Front matter\n---\n\n# Hello *world*\n\n\
Read the [guide](https://example.com/a_b \"T\") and run `cargo test` first.\n\
Second line of the paragraph with **bold text** &amp; an escape \\*.\n\n\
> Quoted text\n> over two lines.\n\n\
- Item one\n- Item <span>two</span>  \n  continued\n\n\
| Name | Value |\n|------|-------|\n| 이름 | 값 |\n\n\
```rust\nfn main() { println!(\"not translated\"); }\n```\n\n\
<div>\nHTML block\n</div>\n\n\
![alt text](img.png) <https://example.com>\n";

    fn extracted() -> (Vec<String>, Layout) {
        extract(DOC.as_bytes()).unwrap()
    }

    #[test]
    fn texts_are_inline_runs_with_syntax_as_markers() {
        let (texts, _) = extracted();
        assert_eq!(
            texts,
            [
                "Hello <x-r id=\"0\"></x-r>world<x-r id=\"1\"></x-r>",
                "Read the <x-r id=\"0\"></x-r>guide<x-r id=\"1\"></x-r> and run \
<x-r id=\"2\"></x-r> first.\nSecond line of the paragraph with <x-r id=\"3\"></x-r>bold text\
<x-r id=\"4\"></x-r> &amp; an escape *.",
                "Quoted text\nover two lines.",
                "Item one",
                "Item <x-r id=\"0\"></x-r>two<br id=\"1\">continued",
                "Name",
                "Value",
                "이름",
                "값",
                "<x-r id=\"0\"></x-r>alt text<x-r id=\"1\"></x-r> <x-r id=\"2\"></x-r>",
            ]
        );
    }

    #[test]
    fn identity_is_byte_identical_and_changes_land_in_place() {
        let (texts, layout) = extracted();
        assert_eq!(layout.rebuild(&texts, &texts), DOC.as_bytes());
        let mut t = texts.clone();
        t[0] = "안녕 <x-r id=\"0\"></x-r>세계<x-r id=\"1\"></x-r>".into();
        t[1] = "먼저 <x-r id=\"0\"></x-r>안내서<x-r id=\"1\"></x-r>를 읽고 <x-r id=\"2\"></x-r>를 \
실행하세요.\n둘째 줄 <x-r id=\"3\"></x-r>굵게<x-r id=\"4\"></x-r> &amp; 탈출 *."
            .into();
        t[2] = "인용\n두 줄.".into();
        t[6] = "값|어치".into();
        let out = String::from_utf8(layout.rebuild(&texts, &t)).unwrap();
        assert!(out.contains("# 안녕 *세계*\n"), "{out}");
        assert!(
            out.contains(
                "먼저 [안내서](https://example.com/a_b \"T\")를 읽고 `cargo test`를 실행하세요. \
둘째 줄 **굵게** & 탈출 \\*.\n"
            ),
            "{out}"
        );
        assert!(out.contains("> 인용 두 줄.\n\n"), "{out}");
        // Changed text is escaped: a `|` does not end the cell.
        assert!(out.contains("| Name | 값\\|어치 |"), "{out}");
        assert!(out.starts_with("---\ntitle: Front matter\n---\n"));
        assert!(out.contains("fn main() { println!(\"not translated\"); }"));
    }

    #[test]
    fn lost_markers_keep_their_syntax() {
        let (texts, layout) = extracted();
        let mut t = texts.clone();
        t[0] = "Hi there".into();
        let out = String::from_utf8(layout.rebuild(&texts, &t)).unwrap();
        assert!(out.contains("# Hi there**\n"), "{out}");
    }

    #[test]
    fn invalid_utf8_is_corrupt() {
        assert!(matches!(
            extract(b"# \xff"),
            Err(DocumentError::Corrupt { kind: "md", .. })
        ));
    }
}
