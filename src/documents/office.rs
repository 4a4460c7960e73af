//! `.docx`, `.pptx`, `.odt`: zip archives of XML parts. Each paragraph of the
//! translated parts (`w:p`, `a:p`, `text:p`/`text:h`) is one `html` text: its text
//! nodes (the content of `w:t`/`a:t`; in ODF the text directly inside the paragraph
//! or its `text:span`/`text:a`/`text:meta` elements) escaped, each node after the
//! first preceded by a marker (`<br>` where a line break or tab lies between them).
//!
//! Only the bytes of text nodes whose text changed are rewritten, spliced into the
//! part at the byte offsets quick-xml reports; every other byte of the part is the
//! input's (run properties, fields, bookmarks, drawings, namespaces, whitespace).
//! In Word, a node whose new text starts or ends with a space gets
//! `xml:space="preserve"` if it lacked it. Nested paragraphs (text boxes, ODF
//! footnotes and comments) are paragraphs of their own.
//!
//! The rebuilt archive has the input's entries in the input's order: parts whose
//! XML did not change are copied raw (compressed bytes, headers, ODF's stored
//! `mimetype` first), changed parts are deflated again with their name, time and
//! permissions.
//!
//! Parts read are bounded by `max_expanded_bytes` in all, checked while inflating
//! (a zip's sizes are claims); entries not read are never inflated.

use std::io::{Cursor, Read, Write};
use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::markup::{self, Piece};
use super::{DocumentError, FileKind};

/// WordprocessingML (transitional and strict).
const W: &[&str] = &[
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "http://purl.oclc.org/ooxml/wordprocessingml/main",
];
/// DrawingML (transitional and strict): PowerPoint's text.
const A: &[&str] = &[
    "http://schemas.openxmlformats.org/drawingml/2006/main",
    "http://purl.oclc.org/ooxml/drawingml/main",
];
/// ODF text.
const TEXT: &[&str] = &["urn:oasis:names:tc:opendocument:xmlns:text:1.0"];

/// An element name: any of its namespaces, local name.
type Name = (&'static [&'static str], &'static str);

/// What to read in one kind of file.
struct Dialect {
    /// Paragraph elements: one text each.
    paragraph: &'static [Name],
    /// Elements whose content is a text node (Word, PowerPoint).
    container: &'static [Name],
    /// Elements inside a paragraph whose direct text is paragraph text (ODF: text
    /// directly in the paragraph counts too).
    inline: &'static [Name],
    /// Elements that break a line (or tab) between text nodes.
    breaks: &'static [Name],
    /// Whether whitespace at a node's ends needs `xml:space="preserve"` (Word).
    preserve_space: bool,
    /// Whether runs of spaces, tabs and line breaks must be elements (ODF collapses
    /// whitespace in text: `text:s`, `text:tab`, `text:line-break`).
    odf_space: bool,
    /// An entry every file of the kind has.
    required: &'static str,
    /// The parts translated.
    part: fn(&str) -> bool,
}

const DOCX: Dialect = Dialect {
    paragraph: &[(W, "p")],
    container: &[(W, "t")],
    inline: &[],
    breaks: &[(W, "br"), (W, "cr"), (W, "tab")],
    preserve_space: true,
    odf_space: false,
    required: "word/document.xml",
    part: |name| {
        let Some(file) = name
            .strip_prefix("word/")
            .and_then(|n| n.strip_suffix(".xml"))
        else {
            return false;
        };
        !file.contains('/')
            && (matches!(file, "document" | "footnotes" | "endnotes" | "comments")
                || file.starts_with("header")
                || file.starts_with("footer"))
    },
};

const PPTX: Dialect = Dialect {
    paragraph: &[(A, "p")],
    container: &[(A, "t")],
    inline: &[],
    breaks: &[(A, "br")],
    preserve_space: false,
    odf_space: false,
    required: "ppt/presentation.xml",
    part: |name| {
        let in_dir = |dir: &str, stem: &str| {
            name.strip_prefix(dir)
                .and_then(|n| n.strip_suffix(".xml"))
                .is_some_and(|n| !n.contains('/') && n.starts_with(stem))
        };
        in_dir("ppt/slides/", "slide") || in_dir("ppt/notesSlides/", "notesSlide")
    },
};

const ODT: Dialect = Dialect {
    paragraph: &[(TEXT, "p"), (TEXT, "h")],
    container: &[],
    inline: &[
        (TEXT, "span"),
        (TEXT, "a"),
        (TEXT, "meta"),
        (TEXT, "ruby-base"),
    ],
    breaks: &[(TEXT, "line-break"), (TEXT, "tab")],
    preserve_space: false,
    odf_space: true,
    required: "content.xml",
    part: |name| name == "content.xml" || name == "styles.xml",
};

fn dialect(kind: FileKind) -> &'static Dialect {
    match kind {
        FileKind::Pptx => &PPTX,
        FileKind::Odt => &ODT,
        _ => &DOCX,
    }
}

/// A text node: its content's bytes in the part, its text, and where to add
/// `xml:space="preserve"` (before its start tag's `>`) if it needs one.
#[derive(Debug)]
struct Node {
    content: Range<usize>,
    text: String,
    preserve_at: Option<usize>,
}

/// A paragraph: its text nodes, and whether a line break lies before each.
#[derive(Debug, Default)]
struct Paragraph {
    /// The namespace prefix of its element (ODF whitespace elements use it).
    prefix: String,
    nodes: Vec<Node>,
    breaks: Vec<bool>,
    /// A break seen since the last node (while reading).
    pending_break: bool,
}

impl Paragraph {
    /// The text sent.
    fn html(&self) -> String {
        let mut out = String::new();
        for (k, node) in self.nodes.iter().enumerate() {
            if k > 0 {
                markup::marker_into(&mut out, k, self.breaks[k]);
            }
            markup::escape_into(&mut out, &node.text);
        }
        out
    }

    /// The splices that put `translation` in: node `k` gets the text after marker
    /// `k` (node 0 what comes before any marker); unchanged nodes are left alone.
    fn splices(&self, translation: &str, d: &Dialect, out: &mut Vec<(Range<usize>, String)>) {
        let mut texts = vec![String::new(); self.nodes.len()];
        let mut slot = 0;
        for piece in markup::parse(translation) {
            match piece {
                Piece::Text(t) => texts[slot].push_str(&t),
                Piece::Marker(k) if k < texts.len() => slot = k,
                Piece::Marker(_) => {}
            }
        }
        for (node, text) in self.nodes.iter().zip(texts) {
            if node.text == text {
                continue;
            }
            let needs_preserve = text != text.trim() || text.contains("  ");
            if let (true, true, Some(at)) = (d.preserve_space, needs_preserve, node.preserve_at) {
                out.push((at..at, " xml:space=\"preserve\"".to_owned()));
            }
            let xml = if d.odf_space {
                odf_text(&text, &self.prefix)
            } else {
                markup::escape_xml(&text)
            };
            out.push((node.content.clone(), xml));
        }
    }
}

/// `text` as ODF paragraph content: escaped, a run of spaces as one space and a
/// `text:s` for the rest, tabs and line breaks as their elements (ODF collapses
/// whitespace in text).
fn odf_text(text: &str, prefix: &str) -> String {
    let p = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}:")
    };
    let mut out = String::with_capacity(text.len());
    let mut spaces = 0;
    let flush = |out: &mut String, spaces: &mut usize| {
        match *spaces {
            0 => {}
            1 => out.push(' '),
            2 => out.push_str(&format!(" <{p}s/>")),
            n => out.push_str(&format!(" <{p}s {p}c=\"{}\"/>", n - 1)),
        }
        *spaces = 0;
    };
    for c in text.chars() {
        match c {
            ' ' => spaces += 1,
            '\t' | '\n' => {
                flush(&mut out, &mut spaces);
                let element = if c == '\t' { "tab" } else { "line-break" };
                out.push_str(&format!("<{p}{element}/>"));
            }
            '\r' => {}
            c => {
                flush(&mut out, &mut spaces);
                out.push_str(&markup::escape_xml(c.encode_utf8(&mut [0; 4])));
            }
        }
    }
    flush(&mut out, &mut spaces);
    out
}

/// A translated XML part.
#[derive(Debug)]
struct Part {
    /// Index of its zip entry.
    entry: usize,
    xml: String,
    paragraphs: Vec<Paragraph>,
}

/// The archive and its translated parts.
#[derive(Debug)]
pub(super) struct Layout {
    kind: FileKind,
    original: Vec<u8>,
    parts: Vec<Part>,
}

/// An open element while reading a part.
enum Frame {
    /// A paragraph (text directly inside counts in ODF).
    Paragraph { textual: bool },
    /// An element whose direct text is paragraph text.
    Textual { preserve_at: Option<usize> },
    /// Anything else.
    Other,
}

impl Frame {
    fn textual(&self) -> bool {
        match self {
            Frame::Paragraph { textual } => *textual,
            Frame::Textual { .. } => true,
            Frame::Other => false,
        }
    }
}

fn is(names: &[Name], ns: Option<&str>, local: &str) -> bool {
    names
        .iter()
        .any(|(nss, l)| *l == local && ns.is_some_and(|ns| nss.contains(&ns)))
}

/// Ends the text node being read (any markup does), adding it to its paragraph.
fn end_node(node: &mut Option<Node>, open: &mut [Paragraph]) {
    if let (Some(n), Some(p)) = (node.take(), open.last_mut()) {
        p.breaks.push(std::mem::take(&mut p.pending_break));
        p.nodes.push(n);
    }
}

/// A byte offset from quick-xml (never more than the part's length).
fn offset(position: u64) -> Result<usize, String> {
    usize::try_from(position).map_err(|_| "offset out of range".to_owned())
}

/// The paragraphs with text of one XML part, in the order they end.
fn parse_part(d: &Dialect, xml: &str) -> Result<Vec<Paragraph>, String> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Frame> = Vec::new();
    // Paragraphs being read: more than one when one nests in another.
    let mut open: Vec<Paragraph> = Vec::new();
    let mut done = Vec::new();
    let mut node: Option<Node> = None;
    loop {
        let before = offset(reader.buffer_position())?;
        let (role, event) = match reader.read_resolved_event() {
            Ok((res, event)) => {
                let ns = match &res {
                    ResolveResult::Bound(ns) => Some(ns.0),
                    _ => None,
                };
                let role = match &event {
                    Event::Start(e) | Event::Empty(e) => {
                        let local = e.local_name();
                        let local = local.as_ref();
                        let preserved = matches!(e.try_get_attribute("xml:space"), Ok(Some(_)));
                        if is(d.paragraph, ns, local) {
                            let name = e.name();
                            let prefix = name.prefix().map_or("", |p| p.into_inner());
                            Role::Paragraph {
                                prefix: prefix.to_owned(),
                            }
                        } else if is(d.container, ns, local) {
                            Role::Container { preserved }
                        } else if is(d.inline, ns, local) {
                            Role::Inline
                        } else if is(d.breaks, ns, local) {
                            Role::Break
                        } else {
                            Role::Other
                        }
                    }
                    _ => Role::Other,
                };
                (role, event.into_owned())
            }
            Err(e) => return Err(format!("at byte {}: {e}", reader.error_position())),
        };
        let after = offset(reader.buffer_position())?;
        match event {
            Event::Start(_) => {
                end_node(&mut node, &mut open);
                let parent_textual = stack.last().is_some_and(Frame::textual);
                let frame = match role {
                    Role::Paragraph { prefix } => {
                        open.push(Paragraph {
                            prefix,
                            ..Paragraph::default()
                        });
                        Frame::Paragraph {
                            textual: d.container.is_empty(),
                        }
                    }
                    Role::Container { preserved } if !open.is_empty() => Frame::Textual {
                        // `after - 1` is the start tag's `>`.
                        preserve_at: (!preserved).then(|| after.saturating_sub(1)),
                    },
                    Role::Inline if parent_textual => Frame::Textual { preserve_at: None },
                    Role::Break => {
                        if let Some(p) = open.last_mut() {
                            p.pending_break = true;
                        }
                        Frame::Other
                    }
                    _ => Frame::Other,
                };
                stack.push(frame);
            }
            Event::Empty(_) => {
                end_node(&mut node, &mut open);
                if let (Role::Break, Some(p)) = (role, open.last_mut()) {
                    p.pending_break = true;
                }
            }
            Event::End(_) => {
                end_node(&mut node, &mut open);
                if let Some(Frame::Paragraph { .. }) = stack.pop() {
                    if let Some(p) = open.pop() {
                        if p.nodes.iter().any(|n| !n.text.trim().is_empty()) {
                            done.push(p);
                        }
                    }
                }
            }
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_)
                if !open.is_empty() && stack.last().is_some_and(Frame::textual) =>
            {
                let text = match &event {
                    Event::Text(t) => t.xml10_content().into_owned(),
                    Event::CData(t) => t.xml10_content().into_owned(),
                    Event::GeneralRef(r) => match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => quick_xml::escape::resolve_predefined_entity(r)
                            .ok_or_else(|| format!("unknown entity &{};", &**r))?
                            .to_owned(),
                        Err(e) => return Err(format!("at byte {before}: {e}")),
                    },
                    _ => String::new(),
                };
                let preserve_at = match stack.last_mut() {
                    Some(Frame::Textual { preserve_at }) => preserve_at,
                    _ => &mut None,
                };
                let n = node.get_or_insert_with(|| Node {
                    content: before..before,
                    text: String::new(),
                    preserve_at: preserve_at.take(),
                });
                n.content.end = after;
                n.text.push_str(&text);
            }
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) => {}
            Event::Eof => break,
            _ => end_node(&mut node, &mut open),
        }
    }
    if !stack.is_empty() {
        return Err("the XML ends inside an element".to_owned());
    }
    Ok(done)
}

/// What an element is to the reader.
enum Role {
    /// With its namespace prefix.
    Paragraph {
        prefix: String,
    },
    Container {
        preserved: bool,
    },
    Inline,
    Break,
    Other,
}

/// Takes an office file apart.
pub(super) fn extract(
    kind: FileKind,
    bytes: &[u8],
    max_expanded_bytes: usize,
) -> Result<(Vec<String>, Layout), DocumentError> {
    let d = dialect(kind);
    let corrupt = |detail: String| kind.corrupt(detail);
    let mut archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| corrupt(format!("not a zip archive: {e}")))?;
    let mut budget = max_expanded_bytes;
    let mut parts = Vec::new();
    let mut required = false;
    for entry in 0..archive.len() {
        let name = {
            let file = archive
                .by_index_raw(entry)
                .map_err(|e| corrupt(format!("entry {entry}: {e}")))?;
            file.name()
                .map_err(|e| corrupt(format!("entry {entry}: {e}")))?
                .into_owned()
        };
        required |= name == d.required;
        if !(d.part)(&name) {
            continue;
        }
        let mut file = archive
            .by_index(entry)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        let too_large = || {
            DocumentError::TooLarge(format!(
                "{name} expands past the limit of {max_expanded_bytes} bytes for the parts read"
            ))
        };
        if file.size() > budget as u64 {
            return Err(too_large());
        }
        // Bounded read: the size in the header is only a claim.
        let mut data = Vec::new();
        (&mut file)
            .take(budget as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        if data.len() > budget {
            return Err(too_large());
        }
        budget -= data.len();
        let xml = String::from_utf8(data).map_err(|_| corrupt(format!("{name} is not UTF-8")))?;
        let paragraphs = parse_part(d, &xml).map_err(|e| corrupt(format!("{name}: {e}")))?;
        if !paragraphs.is_empty() {
            parts.push(Part {
                entry,
                xml,
                paragraphs,
            });
        }
    }
    if !required {
        return Err(corrupt(format!(
            "no {}: not a {} file",
            d.required,
            kind.name()
        )));
    }
    let texts = parts
        .iter()
        .flat_map(|p| p.paragraphs.iter().map(Paragraph::html))
        .collect();
    Ok((
        texts,
        Layout {
            kind,
            original: bytes.to_vec(),
            parts,
        },
    ))
}

impl Layout {
    /// The archive with each changed paragraph's text nodes rewritten.
    pub(super) fn rebuild(
        &self,
        texts: &[String],
        translations: &[String],
    ) -> Result<Vec<u8>, DocumentError> {
        let d = dialect(self.kind);
        let mut changed: Vec<(usize, String)> = Vec::new();
        let mut pairs = texts.iter().zip(translations);
        for part in &self.parts {
            let mut splices = Vec::new();
            for (paragraph, (text, translation)) in part.paragraphs.iter().zip(pairs.by_ref()) {
                if text != translation {
                    paragraph.splices(translation, d, &mut splices);
                }
            }
            if splices.is_empty() {
                continue;
            }
            // Paragraphs are listed in the order they end (a nested one first).
            splices.sort_by_key(|(r, _)| (r.start, r.end));
            let mut xml = String::with_capacity(part.xml.len());
            let mut at = 0;
            for (range, with) in splices {
                xml.push_str(&part.xml[at..range.start]);
                xml.push_str(&with);
                at = range.end;
            }
            xml.push_str(&part.xml[at..]);
            if xml != part.xml {
                changed.push((part.entry, xml));
            }
        }
        self.write(&changed)
    }

    /// The input archive with `changed` entries' contents replaced.
    fn write(&self, changed: &[(usize, String)]) -> Result<Vec<u8>, DocumentError> {
        // The input was read as a zip by `extract`; copying can still find an entry
        // whose local header or data is broken.
        let fail = |e: &dyn std::fmt::Display| self.kind.corrupt(format!("while copying: {e}"));
        let mut archive = ZipArchive::new(Cursor::new(&self.original[..])).map_err(|e| fail(&e))?;
        let mut writer = ZipWriter::new(Cursor::new(Vec::with_capacity(self.original.len())));
        for entry in 0..archive.len() {
            let file = archive.by_index_raw(entry).map_err(|e| fail(&e))?;
            match changed.iter().find(|(i, _)| *i == entry) {
                Some((_, xml)) => {
                    let name = file.name().map_err(|e| fail(&e))?.into_owned();
                    let method = match file.compression() {
                        CompressionMethod::Stored => CompressionMethod::Stored,
                        _ => CompressionMethod::Deflated,
                    };
                    let mut options = SimpleFileOptions::default()
                        .compression_method(method)
                        .large_file(xml.len() as u64 >= u64::from(u32::MAX));
                    if let Some(time) = file.last_modified() {
                        options = options.last_modified_time(time);
                    }
                    if let Some(mode) = file.unix_mode() {
                        options = options.unix_permissions(mode);
                    }
                    drop(file);
                    writer.start_file(name, options).map_err(|e| fail(&e))?;
                    writer.write_all(xml.as_bytes()).map_err(|e| fail(&e))?;
                }
                None => writer.raw_copy_file(file).map_err(|e| fail(&e))?,
            }
        }
        Ok(writer.finish().map_err(|e| fail(&e))?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DOCX: &[u8] = include_bytes!("../../tests/fixtures/files/report.docx");
    const PPTX: &[u8] = include_bytes!("../../tests/fixtures/files/slides.pptx");
    const ODT: &[u8] = include_bytes!("../../tests/fixtures/files/notes.odt");
    const LIMIT: usize = 1 << 26;

    /// Every entry: name, compression, contents.
    fn entries(zip: &[u8]) -> Vec<(String, CompressionMethod, Vec<u8>)> {
        let mut archive = ZipArchive::new(Cursor::new(zip)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut f = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                f.read_to_end(&mut data).unwrap();
                (f.name().unwrap().into_owned(), f.compression(), data)
            })
            .collect()
    }

    fn entry(zip: &[u8], name: &str) -> String {
        let (_, _, data) = entries(zip)
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap();
        String::from_utf8(data).unwrap()
    }

    /// `texts` with the one containing `needle` replaced by `with`.
    fn replace(texts: &[String], needle: &str, with: &str) -> Vec<String> {
        let i = texts.iter().position(|t| t.contains(needle)).unwrap();
        let mut out = texts.to_vec();
        out[i] = with.to_owned();
        out
    }

    /// Entries whose contents differ between two archives (same names, same order).
    fn changed_entries(a: &[u8], b: &[u8]) -> Vec<String> {
        let (a, b) = (entries(a), entries(b));
        assert_eq!(
            a.iter().map(|e| (&e.0, e.1)).collect::<Vec<_>>(),
            b.iter().map(|e| (&e.0, e.1)).collect::<Vec<_>>()
        );
        a.iter()
            .zip(&b)
            .filter(|(x, y)| x.2 != y.2)
            .map(|(x, _)| x.0.clone())
            .collect()
    }

    #[test]
    fn fixtures_give_their_paragraphs_and_rebuild_entry_for_entry() {
        for (kind, bytes, expected) in [
            (FileKind::Docx, DOCX, &["분기 보고서: Quarterly Report", "사내 한정 — Internal use only",
                "Page footer: 감사합니다.", "시간을 확인해 주세요. Please confirm.", "김민수",
                "첫 줄입니다.<br id=\"1\">둘째 줄입니다."][..]),
            (FileKind::Pptx, PPTX, &["Key points", "발표자 노트: 천천히 말하세요. Speak slowly.",
                "Price &lt; 10", "Works with <x-r id=\"1\"></x-r>bold<x-r id=\"2\"></x-r> and \
                <x-r id=\"3\"></x-r>linked<x-r id=\"4\"></x-r> text."][..]),
            (FileKind::Odt, ODT, &["머리글: Confidential draft", "Footer text — 바닥글", "둘째 항목",
                "회의는 <x-r id=\"1\"></x-r>오전 10시<x-r id=\"2\"></x-r>에 시작합니다. 자료를 \
                <x-r id=\"3\"></x-r>미리<x-r id=\"4\"></x-r> 준비해 주세요."][..]),
        ] {
            let (texts, layout) = extract(kind, bytes, LIMIT).unwrap();
            for e in expected {
                assert!(texts.iter().any(|t| t == e), "{kind:?}: no {e:?} in {texts:#?}");
            }
            // Whitespace-only paragraphs are not sent.
            assert!(texts.iter().all(|t| !t.trim().is_empty()));
            let out = layout.rebuild(&texts, &texts).unwrap();
            assert!(changed_entries(bytes, &out).is_empty(), "{kind:?}");
        }
    }

    #[test]
    fn a_changed_word_paragraph_lands_in_its_runs() {
        let (texts, layout) = extract(FileKind::Docx, DOCX, LIMIT).unwrap();
        let t = replace(
            &texts,
            "The report is due on",
            "Due <x-r id=\"1\"></x-r> Friday <x-r id=\"2\"></x-r>, Dr. Kim will <x-r id=\"3\"></x-r>\
             check<x-r id=\"4\"></x-r> it. See the <x-r id=\"5\"></x-r>guide<x-r id=\"6\"></x-r> &amp; &lt;tags&gt;.",
        );
        let out = layout.rebuild(&texts, &t).unwrap();
        assert_eq!(changed_entries(DOCX, &out), ["word/document.xml"]);
        let xml = entry(&out, "word/document.xml");
        for run in [
            "<w:t xml:space=\"preserve\">Due </w:t>",
            // A node that gained edge spaces keeps them.
            "<w:rPr><w:b/></w:rPr><w:t xml:space=\"preserve\"> Friday </w:t>",
            "<w:rPr><w:b/><w:i/></w:rPr><w:t>check</w:t>",
            "<w:rStyle w:val=\"Hyperlink\"/></w:rPr><w:t>guide</w:t></w:r></w:hyperlink>",
            "<w:t xml:space=\"preserve\"> &amp; &lt;tags&gt;.</w:t>",
        ] {
            assert!(xml.contains(run), "{run} not in {xml}");
        }
        // Everything outside that paragraph is as it was.
        let old = entry(DOCX, "word/document.xml");
        let p = old
            .find("<w:p><w:r><w:t xml:space=\"preserve\">The report")
            .unwrap();
        assert_eq!(xml[..p], old[..p]);
        let end = old[p..].find("</w:p>").unwrap() + p;
        assert!(xml.ends_with(&old[end..]));
        // The rebuilt file reads back with the new text.
        let (again, _) = extract(FileKind::Docx, &out, LIMIT).unwrap();
        assert!(again
            .iter()
            .any(|x| x.starts_with("Due <x-r id=\"1\"></x-r> Friday ")));
    }

    #[test]
    fn header_slide_and_odt_span_changes_land_in_place() {
        let (texts, layout) = extract(FileKind::Docx, DOCX, LIMIT).unwrap();
        let out = layout
            .rebuild(&texts, &replace(&texts, "사내 한정", "Internal"))
            .unwrap();
        assert_eq!(changed_entries(DOCX, &out), ["word/header1.xml"]);
        assert!(entry(&out, "word/header1.xml").contains("<w:t>Internal</w:t>"));

        let (texts, layout) = extract(FileKind::Pptx, PPTX, LIMIT).unwrap();
        let t = replace(
            &texts,
            "Works with",
            "굵은 <x-r id=\"1\"></x-r>글씨<x-r id=\"2\"></x-r>와 <x-r id=\"3\"></x-r>링크<x-r id=\"4\"></x-r>.",
        );
        let out = layout.rebuild(&texts, &t).unwrap();
        assert_eq!(changed_entries(PPTX, &out), ["ppt/slides/slide2.xml"]);
        let xml = entry(&out, "ppt/slides/slide2.xml");
        assert!(xml.contains("b=\"1\"/><a:t>글씨</a:t>"), "{xml}");
        assert!(xml.contains("<a:t>링크</a:t>"), "{xml}");

        let (texts, layout) = extract(FileKind::Odt, ODT, LIMIT).unwrap();
        let t = replace(
            &texts,
            "회의는",
            "The meeting starts at <x-r id=\"1\"></x-r>10 a.m.<x-r id=\"2\"></x-r> Prepare \
             <x-r id=\"3\"></x-r>early<x-r id=\"4\"></x-r>.",
        );
        let t = replace(&t, "머리글", "Header: Confidential draft");
        let out = layout.rebuild(&texts, &t).unwrap();
        let mut changed = changed_entries(ODT, &out);
        changed.sort();
        assert_eq!(changed, ["content.xml", "styles.xml"]);
        let xml = entry(&out, "content.xml");
        assert!(xml.contains(">10 a.m.</text:span>"), "{xml}");
        assert!(xml.contains(">early</text:span>"), "{xml}");
        assert!(entry(&out, "styles.xml").contains(">Header: Confidential draft</text:p>"));
        // ODF collapses whitespace: runs of spaces, tabs and line breaks are elements.
        assert_eq!(
            odf_text("a  b   c\td\ne <&", "text"),
            "a <text:s/>b <text:s text:c=\"2\"/>c<text:tab/>d<text:line-break/>e &lt;&amp;"
        );
        // ODF: `mimetype` stays the first entry, stored.
        let all = entries(&out);
        assert_eq!(
            (all[0].0.as_str(), all[0].1),
            ("mimetype", CompressionMethod::Stored)
        );
    }

    /// A zip with these entries (deflated).
    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in files {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn corrupt(kind: FileKind, bytes: &[u8]) -> String {
        match extract(kind, bytes, LIMIT) {
            Err(DocumentError::Corrupt { detail, .. }) => detail,
            other => panic!("{kind:?}: not corrupt: {:?}", other.map(|(t, _)| t)),
        }
    }

    #[test]
    fn corrupt_files_are_refused() {
        corrupt(FileKind::Docx, b"");
        corrupt(FileKind::Docx, b"PK\x03\x04 not really a zip");
        corrupt(FileKind::Docx, &DOCX[..DOCX.len() / 2]);
        let detail = corrupt(FileKind::Docx, PPTX);
        assert!(detail.contains("word/document.xml"), "{detail}");
        corrupt(FileKind::Pptx, ODT);
        corrupt(FileKind::Odt, DOCX);
        let w = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"";
        for xml in [
            format!("<w:document {w}><w:p><w:r><w:t>x</w:r></w:p></w:document>"),
            format!("<w:document {w}><w:p><w:r><w:t>x</w:t></w:r></w:p>"),
            format!("<w:document {w}><w:p><w:r><w:t>&bogus;</w:t></w:r></w:p></w:document>"),
        ] {
            let detail = corrupt(
                FileKind::Docx,
                &zip_of(&[("word/document.xml", xml.as_bytes())]),
            );
            assert!(detail.starts_with("word/document.xml: "), "{detail}");
        }
        let detail = corrupt(
            FileKind::Docx,
            &zip_of(&[("word/document.xml", b"<a>\xff</a>")]),
        );
        assert!(detail.contains("UTF-8"), "{detail}");
    }

    #[test]
    fn zip_bombs_are_too_large() {
        let big = vec![b' '; 4 << 20];
        let bomb = zip_of(&[("word/document.xml", &big)]);
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            extract(FileKind::Docx, &bomb, 1 << 20),
            Err(DocumentError::TooLarge(_))
        ));
        // The limit is for all parts read together.
        let half = vec![b' '; 600 << 10];
        let two = zip_of(&[("word/document.xml", &half), ("word/header1.xml", &half)]);
        assert!(matches!(
            extract(FileKind::Docx, &two, 1 << 20),
            Err(DocumentError::TooLarge(_))
        ));
        // Entries not translated are never inflated.
        let other = zip_of(&[("word/document.xml", b"<x/>"), ("word/media/big.bin", &big)]);
        assert!(extract(FileKind::Docx, &other, 1 << 20).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Damaged files are refused or read, never a panic; any translations
        /// (markers lost, unknown or repeated) rebuild a file that reads back.
        #[test]
        fn hostile_files_and_translations_never_panic(
            which in 0usize..3,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            translation in "[a-z <>&\"/=0-9x-]{0,40}",
        ) {
            let (kind, original) = [(FileKind::Docx, DOCX), (FileKind::Pptx, PPTX), (FileKind::Odt, ODT)][which];
            let mut bytes = original.to_vec();
            for (at, b) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            if let Ok((texts, layout)) = extract(kind, &bytes, LIMIT) {
                let translations: Vec<String> = texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| if i % 2 == 0 { format!("{translation}<x-r id=\"2\"></x-r>{t}") } else { translation.clone() })
                    .collect();
                if let Ok(out) = layout.rebuild(&texts, &translations) {
                    prop_assert!(extract(kind, &out, LIMIT).is_ok());
                }
            }
        }
    }
}
