//! The inline HTML that carries a paragraph's structure through an `html` job:
//! escaped text and empty marker elements, written here and read back from the
//! translation with html5gum.

use std::panic::{catch_unwind, AssertUnwindSafe};

use html5gum::{Token, Tokenizer};

/// Name of the marker element for a boundary inside a sentence. Not an HTML
/// element, so html.rs treats it as inline markup (and custom-element names never
/// clash with real ones).
const MARKER: &str = "x-r";

/// One piece of a translated paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    /// Text, character references decoded.
    Text(String),
    /// Marker `id`.
    Marker(usize),
}

/// Appends `text` escaped for HTML text content.
pub(super) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// Appends marker `id`: `<br id="N">` where the boundary is a line break (html.rs
/// then ends the sentence there), else `<x-r id="N"></x-r>`.
pub(super) fn marker_into(out: &mut String, id: usize, line_break: bool) {
    if line_break {
        out.push_str(&format!("<br id=\"{id}\">"));
    } else {
        out.push_str(&format!("<{MARKER} id=\"{id}\"></{MARKER}>"));
    }
}

/// Reads a translated paragraph back: its text and markers, in order. Other tags
/// (the worker adds none) and comments are dropped; a tokenizer panic gives the
/// whole input as text rather than crashing.
pub(super) fn parse(html: &str) -> Vec<Piece> {
    catch_unwind(AssertUnwindSafe(|| parse_inner(html)))
        .unwrap_or_else(|_| vec![Piece::Text(html.to_owned())])
}

fn parse_inner(html: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for token in Tokenizer::new(html).flatten() {
        match token {
            Token::String(s) => {
                let s = String::from_utf8_lossy(&s.value);
                match pieces.last_mut() {
                    Some(Piece::Text(t)) => t.push_str(&s),
                    _ => pieces.push(Piece::Text(s.into_owned())),
                }
            }
            Token::StartTag(t) if &t.name[..] == MARKER.as_bytes() || &t.name[..] == b"br" => {
                let id = t
                    .attributes
                    .iter()
                    .find(|(k, _)| &k[..] == b"id")
                    .and_then(|(_, v)| std::str::from_utf8(&v.value).ok()?.trim().parse().ok());
                if let Some(id) = id {
                    pieces.push(Piece::Marker(id));
                }
            }
            _ => {}
        }
    }
    pieces
}

/// Escapes `text` for XML character data; drops characters XML 1.0 cannot hold
/// (a model could emit a control character).
pub(super) fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_text_round_trip() {
        let mut html = String::new();
        escape_into(&mut html, "a < b & ");
        marker_into(&mut html, 1, false);
        escape_into(&mut html, "c");
        marker_into(&mut html, 2, true);
        escape_into(&mut html, "d");
        assert_eq!(html, "a &lt; b &amp; <x-r id=\"1\"></x-r>c<br id=\"2\">d");
        assert_eq!(
            parse(&html),
            vec![
                Piece::Text("a < b & ".into()),
                Piece::Marker(1),
                Piece::Text("c".into()),
                Piece::Marker(2),
                Piece::Text("d".into()),
            ]
        );
    }

    #[test]
    fn hostile_markup_is_text_or_ignored() {
        assert_eq!(
            parse("<x-r id=\"zz\"></x-r><b>x</b><!-- c --><x-r>"),
            vec![Piece::Text("x".into())]
        );
        assert_eq!(escape_xml("a\u{1}b<&\u{FFFF}"), "ab&lt;&amp;");
    }
}
