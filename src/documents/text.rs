//! `.txt`: each paragraph (lines up to a blank line) is one text, without its
//! leading and trailing whitespace; everything between paragraphs is kept as it was.
//! A paragraph over [`TEXT_CHARS`] is cut at line ends (else at whitespace).

use std::ops::Range;

use super::{DocumentError, FileKind, TEXT_CHARS};

/// Where each text lies in the file (also a page's: `page.rs` cuts a page into
/// contiguous ranges).
#[derive(Debug)]
pub(super) struct Layout {
    source: String,
    ranges: Vec<Range<usize>>,
}

impl Layout {
    /// The texts at `ranges` of `source` (in order, disjoint), and their layout.
    pub(super) fn cut(source: &str, ranges: Vec<Range<usize>>) -> (Vec<String>, Self) {
        let texts = ranges
            .iter()
            .map(|r| source[r.clone()].to_owned())
            .collect();
        (
            texts,
            Self {
                source: source.to_owned(),
                ranges,
            },
        )
    }

    /// The file with each text's range replaced by its translation where it changed.
    pub(super) fn rebuild(&self, texts: &[String], translations: &[String]) -> Vec<u8> {
        splice(&self.source, &self.ranges, texts, translations)
    }
}

/// `source` with `ranges[i]` (in order, disjoint) replaced by `translations[i]`
/// wherever that differs from `texts[i]`.
pub(super) fn splice(
    source: &str,
    ranges: &[Range<usize>],
    texts: &[String],
    translations: &[String],
) -> Vec<u8> {
    let mut out = String::with_capacity(source.len());
    let mut at = 0;
    for ((range, text), translation) in ranges.iter().zip(texts).zip(translations) {
        if text == translation {
            continue;
        }
        out.push_str(&source[at..range.start]);
        out.push_str(translation);
        at = range.end;
    }
    out.push_str(&source[at..]);
    out.into_bytes()
}

/// Takes a `.txt` file apart.
pub(super) fn extract(bytes: &[u8]) -> Result<(Vec<String>, Layout), DocumentError> {
    let source =
        std::str::from_utf8(bytes).map_err(|e| FileKind::Txt.corrupt(format!("not UTF-8: {e}")))?;
    let mut ranges = Vec::new();
    let mut paragraph: Option<Range<usize>> = None;
    let mut at = 0;
    for line in source.split_inclusive('\n') {
        let end = at + line.trim_end_matches(['\n', '\r']).len();
        if is_blank(&source[at..end]) {
            if let Some(p) = paragraph.take() {
                push_paragraph(source, p, &mut ranges);
            }
        } else {
            paragraph = Some(paragraph.map_or(at..end, |p| p.start..end));
        }
        at += line.len();
    }
    if let Some(p) = paragraph {
        push_paragraph(source, p, &mut ranges);
    }
    Ok(Layout::cut(source, ranges))
}

/// Whitespace, or a byte-order mark.
fn is_blank_char(c: char) -> bool {
    c.is_whitespace() || c == '\u{FEFF}'
}

fn is_blank(s: &str) -> bool {
    s.chars().all(is_blank_char)
}

/// Pushes the paragraph `range` of `source`, trimmed and cut to fit.
fn push_paragraph(source: &str, range: Range<usize>, ranges: &mut Vec<Range<usize>>) {
    let s = &source[range.clone()];
    let start = range.start + (s.len() - s.trim_start_matches(is_blank_char).len());
    let end = range.start + s.trim_end_matches(is_blank_char).len();
    if start < end {
        cut(source, start..end, TEXT_CHARS, ranges);
    }
}

/// Cuts `range` of `source` into pieces of at most `max` characters, at the last
/// line end that fits, else the last whitespace, else anywhere; whitespace around
/// the cuts stays outside the pieces.
fn cut(source: &str, range: Range<usize>, max: usize, out: &mut Vec<Range<usize>>) {
    let max = max.max(1);
    let mut start = range.start;
    loop {
        let rest = &source[start..range.end];
        let Some((limit, _)) = rest.char_indices().nth(max) else {
            break;
        };
        let window = &rest[..limit];
        let at = window
            .rfind('\n')
            .filter(|&i| i > 0)
            .or_else(|| window.rfind(char::is_whitespace).filter(|&i| i > 0))
            .unwrap_or(limit);
        let piece = rest[..at].trim_end();
        if !piece.is_empty() {
            out.push(start..start + piece.len());
        }
        let after = &rest[at..];
        start += at + (after.len() - after.trim_start().len());
    }
    if start < range.end {
        out.push(start..range.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_are_texts_and_the_rest_is_kept() {
        let src = "\u{FEFF}  Title line\r\n\r\nFirst para\nsecond line.  \n \t\n\n\nLast";
        let (texts, layout) = extract(src.as_bytes()).unwrap();
        assert_eq!(texts, ["Title line", "First para\nsecond line.", "Last"]);
        assert_eq!(layout.rebuild(&texts, &texts), src.as_bytes());
        let out = layout.rebuild(&texts, &["제목".into(), texts[1].clone(), "끝".into()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\u{FEFF}  제목\r\n\r\nFirst para\nsecond line.  \n \t\n\n\n끝"
        );
    }

    #[test]
    fn long_paragraphs_are_cut_to_fit() {
        let line = "word ".repeat(1500); // 7500 chars a line
        let src = format!("{line}\n{line}\n{}", "x".repeat(25_000));
        let (texts, layout) = extract(src.as_bytes()).unwrap();
        assert!(texts.len() >= 5, "{}", texts.len());
        assert!(texts.iter().all(|t| t.chars().count() <= TEXT_CHARS));
        assert_eq!(layout.rebuild(&texts, &texts), src.as_bytes());
    }

    #[test]
    fn empty_and_invalid_input() {
        assert!(extract(b"").unwrap().0.is_empty());
        assert!(extract(b" \n\n\t").unwrap().0.is_empty());
        assert!(matches!(
            extract(b"caf\xe9"),
            Err(DocumentError::Corrupt { kind: "txt", .. })
        ));
    }
}
