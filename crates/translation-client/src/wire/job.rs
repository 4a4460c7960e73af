//! Job bodies of wire contract v1: one type, written by clients and parsed (strictly,
//! with limits) by workers.
//!
//! Parsing never panics: every malformed body becomes a [`JobError`] with the code the
//! README documents, and the `id` is echoed whenever it can be read.

use serde::{Deserialize, Serialize};

use super::error::{ErrorCode, JobError};
use super::options::JobOptions;

/// A job: parsed and size-checked when read by a worker.
///
/// Clients build one and [`Job::to_bytes`] it; workers [`parse_job`] the bytes back
/// (a single `text` is read as a one-element `texts`; `texts` is always written).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Job {
    /// Texts to translate; `translations[i]` answers `texts[i]`.
    pub texts: Vec<String>,
    /// Source language, if given (workers check it against the pair they serve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Target language, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Client's id, echoed in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Decoding options (validated by the worker against its defaults).
    #[serde(skip_serializing_if = "JobOptions::is_empty")]
    pub options: JobOptions,
    /// Absolute Unix time in ms after which the answer is useless.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Whether texts are documents to cut into sentences.
    #[serde(skip_serializing_if = "Split::is_none")]
    pub split: Split,
    /// Whether texts are plain text or HTML documents (HTML is always cut into
    /// sentences: [`Format::Html`]).
    #[serde(skip_serializing_if = "Format::is_text")]
    pub format: Format,
}

impl Job {
    /// JSON bytes of the job.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, integers and floats (serde_json writes non-finite ones as null):
        // serialising cannot fail.
        serde_json::to_vec(self).expect("job serialisation is infallible")
    }
}

/// Limits on a job, enforced by [`parse_job`] before any work (`[limits]` in the
/// worker's configuration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most texts in one job.
    pub max_texts: usize,
    /// Most characters (Unicode scalar values) in one text.
    pub max_text_chars: usize,
    /// Largest message body, checked before parsing.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_texts: 128,
            max_text_chars: 10_000,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// How a job's texts are cut before translation (`split` in the wire contract).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Each text is one segment, translated whole.
    #[default]
    None,
    /// Each text is a document: cut into sentences, each cached and translated on its
    /// own, and put back together with the original whitespace.
    Sentences,
}

impl Split {
    /// Whether this is [`Split::None`] (the field is then left out of a job).
    pub fn is_none(&self) -> bool {
        *self == Split::None
    }
}

/// What a job's texts are (`format` in the wire contract).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Plain text.
    #[default]
    Text,
    /// HTML documents: markup, attributes, entities, comments and the contents of
    /// `script`, `style`, `code`, `pre`, `textarea` and `translate="no"` elements are
    /// kept byte for byte; the text is translated sentence by sentence, across inline
    /// tags. Implies [`Split::Sentences`] (an explicit `"split": "none"` is refused).
    Html,
}

impl Format {
    /// Whether this is [`Format::Text`] (the field is then left out of a job).
    pub fn is_text(&self) -> bool {
        *self == Format::Text
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    texts: Option<Vec<String>>,
    text: Option<String>,
    source: Option<String>,
    target: Option<String>,
    id: Option<String>,
    options: Option<Object<JobOptions>>,
    deadline_ms: Option<u64>,
    // A string, mapped below: serde_json reports a non-string where an enum is
    // expected as a syntax error, which would read as `invalid_json`.
    split: Option<String>,
    // A string too, for the same reason.
    format: Option<String>,
}

/// A `T` read from a JSON object only. A derived struct on its own also accepts a
/// JSON array (its fields by position), which is not part of the contract.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(Object)
    }
}

/// Reads only `id`, to echo it when the full parse failed.
#[derive(Deserialize)]
struct IdOnly {
    id: Option<String>,
}

/// Parses and size-checks a job body. Limits are enforced before the body is parsed
/// (size) or before any work (count, length).
pub fn parse_job(body: &[u8], limits: &Limits) -> Result<Job, JobError> {
    if body.len() > limits.max_body_bytes {
        return Err(JobError::new(
            ErrorCode::TooLarge,
            format!(
                "body is {} bytes, the limit is {}",
                body.len(),
                limits.max_body_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| JobError::new(ErrorCode::InvalidJson, format!("body is not UTF-8: {e}")))?;
    let Object(raw): Object<RawJob> = serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            // A type error found before the end of a body that is not JSON at all
            // (e.g. truncated): the body's real fault is its syntax.
            Category::Data if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() => {
                JobError::new(
                    ErrorCode::InvalidJson,
                    format!("body is not valid JSON: {e}"),
                )
            }
            Category::Data => {
                let id = serde_json::from_str::<Object<IdOnly>>(text)
                    .ok()
                    .and_then(|Object(j)| j.id);
                JobError::new(ErrorCode::InvalidRequest, format!("invalid job: {e}")).with_id(id)
            }
            Category::Syntax | Category::Eof | Category::Io => JobError::new(
                ErrorCode::InvalidJson,
                format!("body is not valid JSON: {e}"),
            ),
        }
    })?;
    let id = raw.id;
    let invalid = |m: &str| JobError::new(ErrorCode::InvalidRequest, m).with_id(id.clone());
    let texts = match (raw.text, raw.texts) {
        (Some(t), None) => vec![t],
        (None, Some(ts)) if ts.is_empty() => return Err(invalid("`texts` must not be empty")),
        (None, Some(ts)) => ts,
        (Some(_), Some(_)) => {
            return Err(invalid("give exactly one of `text` and `texts`, not both"))
        }
        (None, None) => return Err(invalid("missing `text` or `texts`")),
    };
    let split = match raw.split.as_deref() {
        None | Some("none") => Split::None,
        Some("sentences") => Split::Sentences,
        Some(other) => {
            return Err(invalid(&format!(
                "`split` must be \"none\" or \"sentences\", not {other:?}"
            )))
        }
    };
    let format = match raw.format.as_deref() {
        None | Some("text") => Format::Text,
        Some("html") => Format::Html,
        Some(other) => {
            return Err(invalid(&format!(
                "`format` must be \"text\" or \"html\", not {other:?}"
            )))
        }
    };
    if format == Format::Html && raw.split.as_deref() == Some("none") {
        // HTML is a document: its text is always cut into sentences. Saying otherwise
        // is a contradiction, not a preference to guess at.
        return Err(invalid(
            "`format: \"html\"` is always split into sentences: leave `split` out or set it to \"sentences\"",
        ));
    }
    let options = raw.options.map(|Object(o)| o).unwrap_or_default();
    if format == Format::Html && options.alternatives.is_some_and(|n| n > 0) {
        // A page is many sentences put back into markup: there is no single
        // runner-up of a whole page to offer.
        return Err(invalid(
            "`options.alternatives` is not available with `format: \"html\"`: leave it out or set it to 0",
        ));
    }
    if texts.len() > limits.max_texts {
        return Err(JobError::new(
            ErrorCode::TooLarge,
            format!("{} texts, the limit is {}", texts.len(), limits.max_texts),
        )
        .with_id(id));
    }
    for (i, t) in texts.iter().enumerate() {
        // Byte length bounds the char count from above: skip the count for short texts.
        if t.len() > limits.max_text_chars {
            let chars = t.chars().count();
            if chars > limits.max_text_chars {
                return Err(JobError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "text {i} has {chars} characters, the limit is {}",
                        limits.max_text_chars
                    ),
                )
                .with_id(id));
            }
        }
    }
    Ok(Job {
        texts,
        id,
        source: raw.source,
        target: raw.target,
        options,
        deadline_ms: raw.deadline_ms,
        split,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DecodeOptions;

    fn limits() -> Limits {
        Limits {
            max_texts: 3,
            max_text_chars: 5,
            max_body_bytes: 200,
        }
    }

    fn code(body: &[u8]) -> ErrorCode {
        parse_job(body, &limits()).unwrap_err().code
    }

    #[test]
    fn parses_single_and_multi() {
        let j = parse_job(br#"{"text":"hi","id":"a"}"#, &limits()).unwrap();
        assert_eq!(j.texts, vec!["hi"]);
        assert_eq!(j.id.as_deref(), Some("a"));
        let j = parse_job(
            br#"{"texts":["a","",""],"source":"ko","target":"en","deadline_ms":5,"options":{"beam_size":2}}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(j.texts.len(), 3);
        assert_eq!(j.options.beam_size, Some(2));
        assert_eq!(j.deadline_ms, Some(5));
    }

    #[test]
    fn classifies_bad_bodies() {
        assert_eq!(code(b"not json"), ErrorCode::InvalidJson);
        assert_eq!(code(b"{\"text\":\"\xff\"}"), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{"text":"ab"#), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{"text":"\ud800"}"#), ErrorCode::InvalidJson);
        assert_eq!(code(b"[1,2]"), ErrorCode::InvalidRequest);
        assert_eq!(code(b"\"s\""), ErrorCode::InvalidRequest);
        assert_eq!(code(b"7"), ErrorCode::InvalidRequest);
        assert_eq!(code(b"null"), ErrorCode::InvalidRequest);
        assert_eq!(code(b"{}"), ErrorCode::InvalidRequest);
        assert_eq!(
            code(br#"{"text":"a","texts":["b"]}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(code(br#"{"texts":[]}"#), ErrorCode::InvalidRequest);
        assert_eq!(code(br#"{"texts":[1]}"#), ErrorCode::InvalidRequest);
        assert_eq!(code(br#"{"texts":[null]}"#), ErrorCode::InvalidRequest);
        assert_eq!(code(br#"{"text":{}}"#), ErrorCode::InvalidRequest);
        assert_eq!(
            code(br#"{"text":"a","colour":1}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(br#"{"text":"a","options":{"beam":1}}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(br#"{"text":"a","deadline_ms":1e400}"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(br#"{"text":"a","deadline_ms":99999999999999999999999}"#),
            ErrorCode::InvalidRequest
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse_job(
            deep.as_bytes(),
            &Limits {
                max_body_bytes: 1 << 20,
                ..limits()
            },
        )
        .unwrap_err();
        assert!(matches!(
            e.code,
            ErrorCode::InvalidJson | ErrorCode::InvalidRequest
        ));
    }

    #[test]
    fn enforces_limits() {
        assert_eq!(code(&[b' '; 201]), ErrorCode::TooLarge);
        assert_eq!(code(br#"{"texts":["a","b","c","d"]}"#), ErrorCode::TooLarge);
        assert_eq!(code(br#"{"text":"abcdef"}"#), ErrorCode::TooLarge);
        // Five multi-byte characters are within a five-character limit.
        assert!(parse_job("{\"text\":\"한국어번역\"}".as_bytes(), &limits()).is_ok());
    }

    #[test]
    fn echoes_id_on_shape_errors() {
        let e = parse_job(br#"{"id":"x","texts":[]}"#, &limits()).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("x"));
        let e = parse_job(br#"{"id":"y","texts":[3]}"#, &limits()).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("y"));
    }

    #[test]
    fn only_json_objects_are_jobs() {
        // A derived struct also accepts a JSON array (its fields by position): the
        // contract says a job and its options are objects.
        assert_eq!(
            code(br#"[null,"a",null,null,null,null,null]"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(code(br#"[["a"]]"#), ErrorCode::InvalidRequest);
        assert_eq!(
            code(br#"{"text":"a","options":[4,256,1.0,1.0,0]}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(br#"{"text":"a","options":[]}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(br#"{"text":"a","options":4}"#),
            ErrorCode::InvalidRequest
        );
        // `null` still means "absent".
        let j = parse_job(br#"{"text":"a","options":null,"id":null}"#, &limits()).unwrap();
        assert_eq!(j.options, JobOptions::default());
        let j = parse_job(br#" {"text":"a","options":{"beam_size":2}} "#, &limits()).unwrap();
        assert_eq!(j.options.beam_size, Some(2));
    }

    #[test]
    fn body_that_is_not_json_is_invalid_json_wherever_the_type_error_is() {
        let big = Limits {
            max_body_bytes: 1 << 20,
            ..limits()
        };
        let code_big = |b: &[u8]| parse_job(b, &big).unwrap_err().code;
        // Truncated after a wrong type: still not JSON.
        assert_eq!(code(br#"{"texts":[5]"#), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{"text":5,"#), ErrorCode::InvalidJson);
        assert_eq!(code(br#"[1,"#), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{"text":"a"} x"#), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{"text":"a"}{"text":"b"}"#), ErrorCode::InvalidJson);
        assert_eq!(code(b""), ErrorCode::InvalidJson);
        assert_eq!(code(b" \n\t "), ErrorCode::InvalidJson);
        assert_eq!(
            code(b"\xef\xbb\xbf{\"text\":\"a\"}"),
            ErrorCode::InvalidJson
        );
        assert_eq!(code(b"{\"text\":\"a\x00\"}"), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{'text':'a'}"#), ErrorCode::InvalidJson);
        // 100k unclosed brackets: not JSON; closed, it is JSON of the wrong shape.
        let open = "[".repeat(100_000);
        assert_eq!(code_big(open.as_bytes()), ErrorCode::InvalidJson);
        assert_eq!(
            code_big(format!("{{\"text\":{open}").as_bytes()),
            ErrorCode::InvalidJson
        );
        let closed = format!("{open}{}", "]".repeat(100_000));
        assert_eq!(code_big(closed.as_bytes()), ErrorCode::InvalidRequest);
        let deep_obj = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
        assert_eq!(code_big(deep_obj.as_bytes()), ErrorCode::InvalidRequest);
        // The id is still echoed past a deeply nested unknown field.
        let e = parse_job(
            format!("{{\"id\":\"deep\",\"texts\":[1],\"x\":{closed}}}").as_bytes(),
            &big,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::InvalidRequest, Some("deep"))
        );
    }

    #[test]
    fn wrong_types_and_out_of_range_values_are_invalid_requests() {
        for body in [
            br#"{"text":5}"#.as_slice(),
            br#"{"text":null}"#,
            br#"{"text":["a"]}"#,
            br#"{"texts":"a"}"#,
            br#"{"texts":[{}]}"#,
            br#"{"texts":[["a"]]}"#,
            br#"{"texts":["a",null]}"#,
            br#"{"text":"a","id":5}"#,
            br#"{"text":"a","source":1}"#,
            br#"{"text":"a","text":"b"}"#,
            br#"{"text":"a","deadline_ms":-1}"#,
            br#"{"text":"a","deadline_ms":1.5}"#,
            br#"{"text":"a","deadline_ms":"1"}"#,
            br#"{"text":"a","deadline_ms":18446744073709551616}"#,
            br#"{"text":"a","options":{"beam_size":"4"}}"#,
            br#"{"text":"a","options":{"beam_size":-1}}"#,
            br#"{"text":"a","options":{"beam_size":2.5}}"#,
            br#"{"text":"a","options":{"length_penalty":"1"}}"#,
            br#"{"text":"a","options":{"no_repeat_ngram_size":true}}"#,
            br#"{"text":"a","options":{"beam_size":1,"beam_size":2}}"#,
        ] {
            let e = parse_job(body, &limits()).unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::InvalidRequest,
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
        // Parseable but out of range: rejected when resolved against the defaults.
        let d = DecodeOptions::default();
        for opts in [
            r#"{"beam_size":0}"#,
            r#"{"beam_size":1000}"#,
            r#"{"max_decoding_length":0}"#,
            r#"{"max_decoding_length":18446744073709551615}"#,
            r#"{"length_penalty":1e39}"#,
            r#"{"length_penalty":-1e39}"#,
            r#"{"repetition_penalty":-1}"#,
            r#"{"repetition_penalty":1e-50}"#,
        ] {
            let body = format!(r#"{{"text":"a","options":{opts}}}"#);
            let job = parse_job(body.as_bytes(), &limits()).unwrap();
            let e = job.options.resolve(&d).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{opts}");
        }
        // At the edges of the ranges: fine.
        let body = br#"{"text":"a","options":{"beam_size":16,"max_decoding_length":1024,"no_repeat_ngram_size":16,"length_penalty":-3.5,"repetition_penalty":1e-30},"deadline_ms":18446744073709551615}"#;
        let roomy = Limits {
            max_body_bytes: 4096,
            ..limits()
        };
        let job = parse_job(body, &roomy).unwrap();
        assert!(job.options.resolve(&d).is_ok());
        assert_eq!(job.deadline_ms, Some(u64::MAX));
    }

    #[test]
    fn split_is_none_unless_asked_and_checked() {
        let j = parse_job(br#"{"text":"a"}"#, &limits()).unwrap();
        assert_eq!(j.split, Split::None);
        let j = parse_job(br#"{"text":"a","split":"sentences"}"#, &limits()).unwrap();
        assert_eq!(j.split, Split::Sentences);
        let j = parse_job(br#"{"text":"a","split":"none"}"#, &limits()).unwrap();
        assert_eq!(j.split, Split::None);
        assert_eq!(
            code(br#"{"text":"a","split":"words"}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(br#"{"text":"a","split":true}"#),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn format_is_text_unless_asked_and_checked() {
        let j = parse_job(br#"{"text":"a"}"#, &limits()).unwrap();
        assert_eq!(j.format, Format::Text);
        let j = parse_job(br#"{"text":"a","format":"text"}"#, &limits()).unwrap();
        assert_eq!(j.format, Format::Text);
        let j = parse_job(br#"{"text":"a","format":"html"}"#, &limits()).unwrap();
        assert_eq!((j.format, j.split), (Format::Html, Split::None));
        let j = parse_job(
            br#"{"text":"a","format":"html","split":"sentences"}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!((j.format, j.split), (Format::Html, Split::Sentences));
        for body in [
            br#"{"text":"a","format":"HTML"}"#.as_slice(),
            br#"{"text":"a","format":"markdown"}"#,
            br#"{"text":"a","format":1}"#,
            br#"{"text":"a","format":"html","split":"none"}"#,
        ] {
            assert_eq!(
                code(body),
                ErrorCode::InvalidRequest,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let e = parse_job(br#"{"id":"h","text":"a","format":"xml"}"#, &limits()).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("h"));
        // Written only when not the default, so text jobs keep their bytes.
        let html = Job {
            texts: vec!["<br>".into()],
            format: Format::Html,
            ..Job::default()
        };
        assert_eq!(
            String::from_utf8(html.to_bytes()).unwrap(),
            r#"{"texts":["<br>"],"format":"html"}"#
        );
        assert_eq!(parse_job(&html.to_bytes(), &limits()).unwrap(), html);
    }

    #[test]
    fn alternatives_parse_serialise_and_are_checked() {
        let roomy = Limits {
            max_body_bytes: 4096,
            ..limits()
        };
        let j = parse_job(br#"{"text":"a","options":{"alternatives":3}}"#, &roomy).unwrap();
        assert_eq!(j.options.alternatives, Some(3));
        assert_eq!(parse_job(&j.to_bytes(), &roomy).unwrap(), j);
        assert_eq!(
            String::from_utf8(j.to_bytes()).unwrap(),
            r#"{"texts":["a"],"options":{"alternatives":3}}"#
        );
        // Absent: not written, so jobs without it keep their bytes.
        let j = parse_job(br#"{"text":"a"}"#, &roomy).unwrap();
        assert_eq!(j.options.alternatives, None);
        assert_eq!(
            String::from_utf8(j.to_bytes()).unwrap(),
            r#"{"texts":["a"]}"#
        );
        // With sentences: accepted (alternatives of one-sentence texts).
        let j = parse_job(
            br#"{"text":"a","split":"sentences","options":{"alternatives":1}}"#,
            &roomy,
        )
        .unwrap();
        assert_eq!(
            (j.split, j.options.alternatives),
            (Split::Sentences, Some(1))
        );
        // With HTML: refused, naming the option; 0 is no alternatives, so allowed.
        let e = parse_job(
            br#"{"id":"h","text":"<p>a</p>","format":"html","options":{"alternatives":2}}"#,
            &roomy,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::InvalidRequest, Some("h"))
        );
        assert!(e.message.contains("options.alternatives"), "{e}");
        assert!(parse_job(
            br#"{"text":"<b>","format":"html","options":{"alternatives":0}}"#,
            &roomy
        )
        .is_ok());
        // Wrong types are shape errors; out of range is refused on resolving.
        for body in [
            br#"{"text":"a","options":{"alternatives":-1}}"#.as_slice(),
            br#"{"text":"a","options":{"alternatives":1.5}}"#,
            br#"{"text":"a","options":{"alternatives":"2"}}"#,
            br#"{"text":"a","options":{"alternatives":true}}"#,
        ] {
            assert_eq!(
                parse_job(body, &roomy).unwrap_err().code,
                ErrorCode::InvalidRequest,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let j = parse_job(br#"{"text":"a","options":{"alternatives":9}}"#, &roomy).unwrap();
        let e = j.options.resolve(&DecodeOptions::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("options.alternatives"), "{e}");
    }

    #[test]
    fn hostile_but_valid_text_is_kept_exactly() {
        let lim = Limits {
            max_texts: 4,
            max_text_chars: 100,
            max_body_bytes: 4096,
        };
        let texts = [
            "\u{0}\u{1}\u{7}\u{1b}[31m\u{7f}\u{85}",
            "\u{202e}abc\u{202c}\u{2066}",
            "👩‍💻🚀\u{fe0f}\u{feff}\u{fffd}\u{10ffff}",
            "",
        ];
        let body = serde_json::to_vec(&serde_json::json!({ "texts": texts })).unwrap();
        assert_eq!(parse_job(&body, &lim).unwrap().texts, texts);
        // A valid surrogate pair decodes to one character.
        let j = parse_job(br#"{"text":"\ud83d\ude00\u0000"}"#, &lim).unwrap();
        assert_eq!(j.texts, ["😀\u{0}"]);
        // A lone low surrogate is as invalid as a lone high one.
        assert_eq!(code(br#"{"text":"\udc00"}"#), ErrorCode::InvalidJson);
        assert_eq!(code(br#"{"text":"\ud800\u0041"}"#), ErrorCode::InvalidJson);
    }

    /// Property tests: `parse_job` on arbitrary bytes, on random JSON and on mutated
    /// jobs. 3000 cases per property by default (a few seconds); `PROPTEST_CASES`
    /// overrides it for a longer run.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::Config as ProptestConfig;
        use serde_json::Value;
        use std::collections::HashMap;

        const TOP_FIELDS: &[&str] = &[
            "text",
            "texts",
            "source",
            "target",
            "id",
            "options",
            "deadline_ms",
        ];
        const OPTION_FIELDS: &[&str] = &[
            "beam_size",
            "max_decoding_length",
            "length_penalty",
            "repetition_penalty",
            "no_repeat_ngram_size",
            "alternatives",
        ];
        /// JSON source text that no `serde_json::Value` can carry (numbers out of
        /// range, lone surrogates) and range edges.
        const TOKENS: &[&str] = &[
            "1e400",
            "-1e400",
            "1e-400",
            "99999999999999999999999",
            "-99999999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "-1",
            "-0",
            "0",
            "0.0",
            "1.5",
            "1",
            "16",
            "17",
            "1024",
            "1025",
            "1e39",
            r#""\ud800""#,
            r#""\udc00\ud800""#,
            r#""\ud83d\ude00""#,
            r#""\u0000\u001f""#,
            r#""\u202e""#,
            r#""ko""#,
            r#""en""#,
            r#""""#,
            "true",
            "null",
            "{}",
            "[]",
        ];

        /// A JSON-ish tree rendered to source text, so it can hold any token.
        #[derive(Debug, Clone)]
        enum J {
            Tok(String),
            Arr(Vec<J>),
            Obj(Vec<(String, J)>),
        }

        impl J {
            fn render(&self, out: &mut String) {
                match self {
                    J::Tok(t) => out.push_str(t),
                    J::Arr(items) => {
                        out.push('[');
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            item.render(out);
                        }
                        out.push(']');
                    }
                    J::Obj(fields) => {
                        out.push('{');
                        for (i, (k, v)) in fields.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            out.push_str(k);
                            out.push(':');
                            v.render(out);
                        }
                        out.push('}');
                    }
                }
            }

            fn to_text(&self) -> String {
                let mut s = String::new();
                self.render(&mut s);
                s
            }
        }

        fn quoted(s: &str) -> String {
            serde_json::to_string(s).unwrap()
        }

        fn string_tok() -> impl Strategy<Value = J> {
            any::<String>().prop_map(|s| J::Tok(quoted(&s)))
        }

        fn leaf() -> impl Strategy<Value = J> {
            prop_oneof![
                3 => prop::sample::select(TOKENS).prop_map(|t| J::Tok(t.to_string())),
                3 => string_tok(),
                1 => any::<u64>().prop_map(|n| J::Tok(n.to_string())),
                1 => any::<i64>().prop_map(|n| J::Tok(n.to_string())),
                // NaN and infinities serialise as `null`.
                1 => any::<f64>().prop_map(|f| J::Tok(serde_json::to_string(&f).unwrap())),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(TOP_FIELDS).prop_map(quoted),
                1 => prop::sample::select(OPTION_FIELDS).prop_map(quoted),
                1 => any::<String>().prop_map(|s| quoted(&s)),
                1 => Just(r#""\ud800""#.to_string()),
            ]
        }

        /// Random JSON: nested arrays and objects with known and random keys.
        fn tree() -> impl Strategy<Value = J> {
            leaf().prop_recursive(6, 64, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
                    prop::collection::vec((key(), inner), 0..6).prop_map(J::Obj),
                ]
            })
        }

        /// Objects shaped like jobs, valid often enough to exercise the `Ok` path.
        /// A string of up to 15 arbitrary characters, as a JSON string.
        fn short_string_tok() -> impl Strategy<Value = J> {
            prop::collection::vec(any::<char>(), 0..16)
                .prop_map(|c| J::Tok(quoted(&c.into_iter().collect::<String>())))
        }

        /// Objects shaped like jobs, valid often enough to exercise the `Ok` path.
        fn job() -> impl Strategy<Value = J> {
            let pair =
                |name: &'static str, v: BoxedStrategy<J>| v.prop_map(move |v| (quoted(name), v));
            let text = prop_oneof![8 => short_string_tok(), 1 => string_tok(), 1 => leaf()];
            let number = prop_oneof![
                6 => (0u64..2000).prop_map(|n| J::Tok(n.to_string())),
                1 => any::<f32>().prop_map(|f| J::Tok(serde_json::to_string(&f).unwrap())),
                1 => leaf(),
            ]
            .boxed();
            let option = (prop::sample::select(OPTION_FIELDS), number.clone())
                .prop_map(|(k, v)| (quoted(k), v));
            let lang = prop_oneof![
                6 => prop::sample::select(&[r#""ko""#, r#""en""#, r#""de""#, "null"][..])
                    .prop_map(|t| J::Tok(t.to_string())),
                1 => leaf(),
            ]
            .boxed();
            let head = prop_oneof![
                1 => pair("text", text.clone().boxed()),
                1 => pair(
                    "texts",
                    prop::collection::vec(text, 0..5).prop_map(J::Arr).boxed()
                ),
            ];
            let extra = prop_oneof![
                2 => pair("source", lang.clone()),
                2 => pair("target", lang),
                2 => pair("id", prop_oneof![3 => short_string_tok(), 1 => leaf()].boxed()),
                2 => pair(
                    "options",
                    prop_oneof![
                        8 => prop::collection::vec(option, 0..4).prop_map(J::Obj),
                        1 => tree(),
                    ]
                    .boxed()
                ),
                2 => pair("deadline_ms", number),
                1 => (key(), tree()),
            ];
            (
                prop::option::weighted(0.95, head),
                prop::collection::vec(extra, 0..3),
                any::<bool>(),
            )
                .prop_map(|(head, mut fields, head_last)| {
                    if let Some(h) = head {
                        if head_last {
                            fields.push(h);
                        } else {
                            fields.insert(0, h);
                        }
                    }
                    J::Obj(fields)
                })
        }

        fn limits_strategy() -> impl Strategy<Value = Limits> {
            (1usize..6, 0usize..40, 16usize..4096).prop_map(
                |(max_texts, max_text_chars, max_body_bytes)| Limits {
                    max_texts,
                    max_text_chars,
                    max_body_bytes,
                },
            )
        }

        /// A body cut short, with a byte changed, inserted or removed.
        fn mutated(text: String, at: prop::sample::Index, how: u8, byte: u8) -> Vec<u8> {
            let mut b = text.into_bytes();
            let i = at.index(b.len() + 1);
            match how % 4 {
                0 => b.truncate(i),
                1 if i < b.len() => b[i] = byte,
                2 => b.insert(i, byte),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => {}
            }
            b
        }

        fn as_texts(obj: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
            let text = obj.get("text").filter(|v| !v.is_null());
            let texts = obj.get("texts").filter(|v| !v.is_null());
            match (text, texts) {
                (Some(t), None) => Some(vec![t.as_str()?.to_string()]),
                (None, Some(ts)) => ts
                    .as_array()?
                    .iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect(),
                _ => None,
            }
        }

        fn opt_str(obj: &serde_json::Map<String, Value>, k: &str) -> Option<String> {
            obj.get(k).and_then(Value::as_str).map(str::to_string)
        }

        /// What must hold for any body: no panic (a panic fails the case), an `Ok`
        /// that is exactly what a plain JSON parse of an object says, within the
        /// limits, or an error with a code `parse_job` may give and the right one.
        fn check(body: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
            let result = parse_job(body, limits);
            let value: Option<Value> = serde_json::from_slice(body).ok();
            let show = || String::from_utf8_lossy(body).into_owned();
            match result {
                Ok(job) => {
                    prop_assert!(body.len() <= limits.max_body_bytes);
                    prop_assert!(
                        (1..=limits.max_texts).contains(&job.texts.len()),
                        "{} texts accepted, limit {}: {}",
                        job.texts.len(),
                        limits.max_texts,
                        show()
                    );
                    for t in &job.texts {
                        prop_assert!(t.chars().count() <= limits.max_text_chars);
                    }
                    let obj = match &value {
                        Some(Value::Object(o)) => o,
                        _ => {
                            return Err(TestCaseError::fail(format!(
                                "accepted a body that is not a JSON object: {}",
                                show()
                            )))
                        }
                    };
                    for k in obj.keys() {
                        prop_assert!(TOP_FIELDS.contains(&k.as_str()), "key {k:?} accepted");
                    }
                    if let Some(Value::Object(o)) = obj.get("options") {
                        for k in o.keys() {
                            prop_assert!(OPTION_FIELDS.contains(&k.as_str()), "option {k:?}");
                        }
                    }
                    prop_assert_eq!(Some(job.texts), as_texts(obj));
                    prop_assert_eq!(job.id, opt_str(obj, "id"));
                    prop_assert_eq!(job.source, opt_str(obj, "source"));
                    prop_assert_eq!(job.target, opt_str(obj, "target"));
                    prop_assert_eq!(
                        job.deadline_ms,
                        obj.get("deadline_ms").and_then(Value::as_u64)
                    );
                }
                Err(e) => {
                    prop_assert!(
                        matches!(
                            e.code,
                            ErrorCode::InvalidJson
                                | ErrorCode::InvalidRequest
                                | ErrorCode::TooLarge
                        ),
                        "{e}"
                    );
                    prop_assert!(!e.message.is_empty());
                    let syntax_ok = std::str::from_utf8(body)
                        .is_ok_and(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok());
                    if body.len() > limits.max_body_bytes {
                        prop_assert_eq!(e.code, ErrorCode::TooLarge);
                    } else if !syntax_ok {
                        // Not UTF-8 or not JSON by the grammar.
                        prop_assert_eq!(e.code, ErrorCode::InvalidJson, "{}: {}", e, show());
                    } else if value.is_some() {
                        // Well-formed JSON is never "not JSON".
                        prop_assert_ne!(e.code, ErrorCode::InvalidJson, "{}: {}", e, show());
                    }
                    // An echoed id is the body's own (checked where a plain parse can
                    // tell; out-of-range numbers elsewhere do not stop the echo).
                    if let (Some(id), Some(v)) = (&e.id, &value) {
                        prop_assert_eq!(Some(id.as_str()), v.get("id").and_then(Value::as_str));
                    }
                }
            }
            Ok(())
        }

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 3000,
                // Failures print their minimal input; no files in the tree.
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Guards against a vacuous fuzz: the job generator must reach the `Ok` path
        /// and each kind of error often.
        #[test]
        fn job_generator_reaches_every_outcome() {
            use proptest::strategy::ValueTree;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let limits = Limits {
                max_texts: 3,
                max_text_chars: 20,
                max_body_bytes: 400,
            };
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let n = 1000;
            for _ in 0..n {
                let doc = job().new_tree(&mut runner).unwrap().current();
                let outcome = match parse_job(doc.to_text().as_bytes(), &limits) {
                    Ok(_) => "ok",
                    Err(e) => e.code.as_str(),
                };
                *seen.entry(outcome).or_default() += 1;
            }
            for (outcome, percent) in [
                ("ok", 20),
                ("invalid_request", 20),
                ("too_large", 5),
                ("invalid_json", 1),
            ] {
                let k = seen.get(outcome).copied().unwrap_or(0);
                assert!(k * 100 >= n * percent, "{outcome}: {k} of {n} ({seen:?})");
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_bytes(
                body in prop::collection::vec(any::<u8>(), 0..600),
                limits in limits_strategy(),
            ) {
                check(&body, &limits)?;
            }

            #[test]
            fn random_json(doc in tree(), limits in limits_strategy()) {
                check(doc.to_text().as_bytes(), &limits)?;
            }

            #[test]
            fn job_shaped_json(doc in job(), limits in limits_strategy()) {
                let text = doc.to_text();
                check(text.as_bytes(), &limits)?;
                // With room for any job, a well-formed job is either accepted or
                // refused as a request, never as JSON.
                let roomy = Limits {
                    max_texts: 16,
                    max_text_chars: 1 << 16,
                    max_body_bytes: 1 << 20,
                };
                check(text.as_bytes(), &roomy)?;
            }

            #[test]
            fn mutated_jobs(
                doc in job(),
                at in any::<prop::sample::Index>(),
                how in any::<u8>(),
                byte in any::<u8>(),
                limits in limits_strategy(),
            ) {
                check(&mutated(doc.to_text(), at, how, byte), &limits)?;
            }
        }
    }

    #[test]
    fn a_written_job_parses_back_to_itself() {
        let job = Job {
            texts: vec!["안녕하세요.".into(), String::new()],
            source: Some("ko".into()),
            target: Some("en".into()),
            id: Some("j-1".into()),
            options: JobOptions {
                beam_size: Some(4),
                length_penalty: Some(0.5),
                ..JobOptions::default()
            },
            deadline_ms: Some(1_700_000_000_000),
            split: Split::Sentences,
            format: Format::Html,
        };
        assert_eq!(parse_job(&job.to_bytes(), &Limits::default()).unwrap(), job);
        // Defaults are left out, as older clients wrote them.
        let plain = Job {
            texts: vec!["a".into()],
            source: Some("ko".into()),
            target: Some("en".into()),
            ..Job::default()
        };
        assert_eq!(
            String::from_utf8(plain.to_bytes()).unwrap(),
            r#"{"texts":["a"],"source":"ko","target":"en"}"#
        );
    }
}
