//! Reading translation requests from HTTP: `GET /translate`'s query string and
//! LibreTranslate's `POST /translate` body (JSON or form), and the language list that
//! `GET /languages` answers in LibreTranslate's shape.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use translation_client::wire::{Format, ALTERNATIVES};

use super::error::ApiError;

/// A translation request as read from HTTP, before validation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct TextRequest {
    /// Source language code, as given.
    pub(super) source: Option<String>,
    /// Target language code, as given.
    pub(super) target: Option<String>,
    /// The texts, in order.
    pub(super) texts: Vec<String>,
    /// `q` was an array (LibreTranslate answers an array then).
    pub(super) many: bool,
    /// `format`: plain text (the default) or HTML.
    pub(super) format: Format,
    /// LibreTranslate's `alternatives`: how many alternative translations to answer
    /// per text (0: none, and no `alternatives` key in the answer).
    pub(super) alternatives: u32,
}

/// Reads LibreTranslate's `alternatives` as it does (`int(...)`): a number (a
/// fraction is cut to a whole one) or a string of digits, as forms send it; absent
/// or `null` is 0, a negative number reads as 0, and more than the wire contract's
/// `options.alternatives` allows is refused, both with LibreTranslate's messages.
fn parse_alternatives(value: Option<&serde_json::Value>) -> Result<u32, ApiError> {
    use serde_json::Value;
    let not_a_number =
        || ApiError::bad_request("Invalid request: alternatives parameter is not a number");
    let n: i128 = match value {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i128::from(i),
            (_, Some(u), _) => i128::from(u),
            // Finite, as serde_json reads no other: saturates far past the limit.
            (_, _, Some(f)) => f.trunc() as i128,
            _ => return Err(not_a_number()),
        },
        Some(Value::String(s)) => s.trim().parse::<i128>().map_err(|_| not_a_number())?,
        Some(_) => return Err(not_a_number()),
    };
    let max = *ALTERNATIVES.end();
    match u64::try_from(n.max(0)) {
        Ok(n) if n <= max => Ok(n as u32),
        _ => Err(ApiError::bad_request(format!(
            "Invalid request: alternatives parameter must be <= {max}"
        ))),
    }
}

/// Reads LibreTranslate's `format`: `text` (also when empty or absent) or `html`.
fn parse_format(format: Option<&str>) -> Result<Format, ApiError> {
    match format {
        None | Some("text") | Some("") => Ok(Format::Text),
        Some("html") => Ok(Format::Html),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown format {other:?}: \"text\" or \"html\""
        ))),
    }
}

/// Reads `GET /translate`'s query: repeatable `q`, `source`, `target`, `format`;
/// nothing else.
pub(super) fn parse_query(query: &str) -> Result<TextRequest, ApiError> {
    let mut req = TextRequest {
        many: true,
        ..TextRequest::default()
    };
    let mut format = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*key {
            "q" => {
                req.texts.push(value.into_owned());
                continue;
            }
            "source" => &mut req.source,
            "target" => &mut req.target,
            "format" => &mut format,
            // Checked by the keys middleware (src/gateway/keys.rs).
            "api_key" => continue,
            // Strict, like the wire contract: a misspelt key must not be ignored.
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?} (expected q, source, target, format, api_key)"
                )))
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(ApiError::bad_request(format!("{key} given twice")));
        }
    }
    req.format = parse_format(format.as_deref())?;
    Ok(req)
}

/// `q` of a LibreTranslate body: one text or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum LtText {
    One(String),
    Many(Vec<String>),
}

/// A LibreTranslate `POST /translate` JSON body. Other keys (`api_key`, ...) are
/// accepted and ignored, as LibreTranslate clients send them.
#[derive(Deserialize)]
struct LtBody {
    q: Option<LtText>,
    source: Option<String>,
    target: Option<String>,
    format: Option<String>,
    /// Any JSON: read as LibreTranslate does ([`parse_alternatives`]).
    alternatives: Option<serde_json::Value>,
}

/// The media type of a `Content-Type` header, lower-cased, without its parameters.
pub(super) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Reads a LibreTranslate body: a form (`application/x-www-form-urlencoded`; repeated
/// `q` is an array) or JSON (any other type but multipart).
pub(super) fn parse_lt_body(content_type: &str, body: &[u8]) -> Result<TextRequest, ApiError> {
    let mime = media_type(content_type);
    let (req, format) = match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            let mut req = TextRequest::default();
            let mut format = None;
            for (key, value) in form_urlencoded::parse(body) {
                match &*key {
                    "q" => req.texts.push(value.into_owned()),
                    "source" => req.source = Some(value.into_owned()),
                    "target" => req.target = Some(value.into_owned()),
                    "format" => format = Some(value.into_owned()),
                    "alternatives" => {
                        let value = serde_json::Value::String(value.into_owned());
                        req.alternatives = parse_alternatives(Some(&value))?;
                    }
                    _ => {}
                }
            }
            req.many = req.texts.len() > 1;
            (req, format)
        }
        m if m.starts_with("multipart/") => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send JSON or application/x-www-form-urlencoded",
            ))
        }
        _ => {
            let body: LtBody = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))?;
            let (texts, many) = match body.q {
                Some(LtText::One(t)) => (vec![t], false),
                Some(LtText::Many(ts)) => (ts, true),
                None => (Vec::new(), false),
            };
            let req = TextRequest {
                source: body.source,
                target: body.target,
                texts,
                many,
                format: Format::Text,
                alternatives: parse_alternatives(body.alternatives.as_ref())?,
            };
            (req, body.format)
        }
    };
    Ok(TextRequest {
        format: parse_format(format.as_deref())?,
        ..req
    })
}

/// A LibreTranslate `POST /detect` JSON body; other keys (`api_key`) are ignored.
#[derive(Deserialize)]
struct DetectBody {
    q: Option<LtText>,
}

/// Reads a LibreTranslate `POST /detect` body (JSON, or a form whose `q` may repeat):
/// the texts of `q`, and whether it was a list. An empty body has no text.
pub(super) fn parse_detect_body(
    content_type: &str,
    body: &[u8],
) -> Result<(Vec<String>, bool), ApiError> {
    let mime = media_type(content_type);
    if mime == "application/x-www-form-urlencoded" {
        let texts: Vec<String> = form_urlencoded::parse(body)
            .filter(|(k, _)| k == "q")
            .map(|(_, v)| v.into_owned())
            .collect();
        let many = texts.len() > 1;
        return Ok((texts, many));
    }
    if mime.starts_with("multipart/") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON or application/x-www-form-urlencoded",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), false));
    }
    let body: DetectBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))?;
    Ok(match body.q {
        Some(LtText::One(t)) => (vec![t], false),
        Some(LtText::Many(ts)) => (ts, true),
        None => (Vec::new(), false),
    })
}

/// One language of `GET /languages` (LibreTranslate's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Language {
    code: String,
    name: String,
    targets: Vec<String>,
}

impl Language {
    /// The language's code, as the served pairs spell it.
    pub(super) fn code(&self) -> &str {
        &self.code
    }
}

/// English names of common language codes; others are named by their code.
pub(super) fn language_name(code: &str) -> &str {
    match code {
        "ar" => "Arabic",
        "de" => "German",
        "en" => "English",
        "es" => "Spanish",
        "fr" => "French",
        "hi" => "Hindi",
        "id" => "Indonesian",
        "it" => "Italian",
        "ja" => "Japanese",
        "ko" => "Korean",
        "nl" => "Dutch",
        "pl" => "Polish",
        "pt" => "Portuguese",
        "ru" => "Russian",
        "sv" => "Swedish",
        "th" => "Thai",
        "tr" => "Turkish",
        "uk" => "Ukrainian",
        "vi" => "Vietnamese",
        "zh" => "Chinese",
        other => other,
    }
}

/// Every language of `pairs`, in order of first appearance, with the targets it is
/// served to (a language that is only a target has none, but is listed so that
/// clients offer it as a target).
pub(super) fn languages(pairs: &[(String, String)]) -> Vec<Language> {
    let mut out: Vec<Language> = Vec::new();
    let mut entry = |code: &str| -> usize {
        if let Some(i) = out.iter().position(|l| l.code == code) {
            return i;
        }
        out.push(Language {
            code: code.to_owned(),
            name: language_name(code).to_owned(),
            targets: Vec::new(),
        });
        out.len() - 1
    };
    let mut links = Vec::new();
    for (source, target) in pairs {
        let s = entry(source);
        entry(target);
        links.push((s, target.clone()));
    }
    for (s, target) in links {
        if !out[s].targets.contains(&target) {
            out[s].targets.push(target);
        }
    }
    out
}

/// `GET /frontend/settings` (LibreTranslate's shape): what its web UI and several
/// clients read before translating. Files and API keys are reported as configured
/// ([`FrontendSettings::with_features`]); suggestions are not offered; `charLimit` is
/// the worker's per-text limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FrontendSettings {
    char_limit: i64,
    /// Milliseconds LibreTranslate's UI waits after typing before it translates (its
    /// default).
    frontend_timeout: u64,
    api_keys: bool,
    key_required: bool,
    suggestions: bool,
    files_translation: bool,
    supported_files_format: Vec<String>,
    language: FrontendLanguages,
}

impl FrontendSettings {
    /// Reports file translation (`formats`: the extensions accepted, empty when off)
    /// and API keys (`api_keys`: keys are configured; `key_required`: a request
    /// without one is refused).
    pub(super) fn with_features(
        mut self,
        formats: Vec<String>,
        api_keys: bool,
        key_required: bool,
    ) -> Self {
        self.files_translation = !formats.is_empty();
        self.supported_files_format = formats;
        self.api_keys = api_keys;
        self.key_required = key_required;
        self
    }
}

/// The UI's default pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct FrontendLanguages {
    source: NamedLanguage,
    target: NamedLanguage,
}

/// A language code with its English name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct NamedLanguage {
    code: String,
    name: String,
}

impl NamedLanguage {
    fn new(code: &str) -> Self {
        Self {
            code: code.to_owned(),
            name: language_name(code).to_owned(),
        }
    }
}

/// The settings for a gateway serving `pairs` (the first is the UI's default pair)
/// with texts of at most `max_text_chars` characters.
pub(super) fn frontend_settings(
    pairs: &[(String, String)],
    max_text_chars: usize,
) -> FrontendSettings {
    let (source, target) = pairs
        .first()
        .map_or(("", ""), |(s, t)| (s.as_str(), t.as_str()));
    FrontendSettings {
        char_limit: i64::try_from(max_text_chars).unwrap_or(-1),
        frontend_timeout: 500,
        api_keys: false,
        key_required: false,
        suggestions: false,
        files_translation: false,
        supported_files_format: Vec::new(),
        language: FrontendLanguages {
            source: NamedLanguage::new(source),
            target: NamedLanguage::new(target),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn query_takes_repeated_q_and_refuses_unknown_keys() {
        let r = parse_query("q=%ED%95%9C&q=a+b&source=ko&target=en").unwrap();
        assert_eq!(r.texts, ["한", "a b"]);
        assert_eq!(r.source.as_deref(), Some("ko"));
        assert_eq!(r.target.as_deref(), Some("en"));
        assert!(r.many);
        let e = parse_query("q=x&sorce=ko").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("sorce"), "{}", e.message);
        let e = parse_query("q=x&source=ko&source=ja").unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
        assert!(parse_query("").unwrap().texts.is_empty());
    }

    #[test]
    fn libretranslate_bodies_json_and_form() {
        let r = parse_lt_body(
            "application/json",
            br#"{"q":"x","source":"ko","target":"en","format":"text","api_key":""}"#,
        )
        .unwrap();
        assert_eq!(
            (r.texts.as_slice(), r.many),
            (&["x".to_string()][..], false)
        );
        let r = parse_lt_body("", br#"{"q":["a","b"],"source":"ko","target":"en"}"#).unwrap();
        assert_eq!((r.texts.len(), r.many), (2, true));
        let r = parse_lt_body(
            "application/x-www-form-urlencoded; charset=utf-8",
            b"q=%EC%95%88&source=ko&target=en&api_key=k",
        )
        .unwrap();
        assert_eq!(
            (r.texts.as_slice(), r.many),
            (&["안".to_string()][..], false)
        );
        let r = parse_lt_body("application/x-www-form-urlencoded", b"q=a&q=b").unwrap();
        assert!(r.many);

        let r = parse_lt_body("application/json", br#"{"q":"<b>x</b>","format":"html"}"#).unwrap();
        assert_eq!(r.format, Format::Html);
        let r = parse_lt_body("application/x-www-form-urlencoded", b"q=x&format=html").unwrap();
        assert_eq!(r.format, Format::Html);
        let r = parse_lt_body("application/json", br#"{"q":"x","format":""}"#).unwrap();
        assert_eq!(r.format, Format::Text);
        assert_eq!(parse_query("q=x&format=html").unwrap().format, Format::Html);
        assert_eq!(parse_query("q=x").unwrap().format, Format::Text);
        for e in [
            parse_lt_body("application/json", br#"{"q":"x","format":"markdown"}"#).unwrap_err(),
            parse_query("q=x&format=xml").unwrap_err(),
            parse_query("q=x&format=html&format=text").unwrap_err(),
        ] {
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        let e = parse_lt_body("application/json", b"not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_lt_body("application/json", br#"{"q":3}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_lt_body("multipart/form-data; boundary=x", b"").unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn alternatives_are_read_as_libretranslate_reads_them() {
        let alt = |ct: &str, body: &[u8]| parse_lt_body(ct, body).map(|r| r.alternatives);
        let json = "application/json";
        let form = "application/x-www-form-urlencoded";
        assert_eq!(alt(json, br#"{"q":"x"}"#).unwrap(), 0);
        assert_eq!(alt(json, br#"{"q":"x","alternatives":null}"#).unwrap(), 0);
        assert_eq!(alt(json, br#"{"q":"x","alternatives":3}"#).unwrap(), 3);
        assert_eq!(alt(json, br#"{"q":"x","alternatives":"2"}"#).unwrap(), 2);
        assert_eq!(alt(json, br#"{"q":"x","alternatives":2.9}"#).unwrap(), 2);
        assert_eq!(alt(json, br#"{"q":"x","alternatives":-4}"#).unwrap(), 0);
        assert_eq!(alt(form, b"q=x&alternatives=3").unwrap(), 3);
        assert_eq!(alt(form, b"q=x&alternatives=+1").unwrap(), 1);
        let max = *ALTERNATIVES.end();
        assert_eq!(
            alt(
                json,
                format!(r#"{{"q":"x","alternatives":{max}}}"#).as_bytes()
            )
            .unwrap(),
            max as u32
        );
        for (ct, body, message) in [
            (
                json,
                &br#"{"q":"x","alternatives":"many"}"#[..],
                "Invalid request: alternatives parameter is not a number",
            ),
            (
                json,
                br#"{"q":"x","alternatives":[1]}"#,
                "Invalid request: alternatives parameter is not a number",
            ),
            (
                form,
                b"q=x&alternatives=1.5",
                "Invalid request: alternatives parameter is not a number",
            ),
            (
                json,
                br#"{"q":"x","alternatives":9}"#,
                "Invalid request: alternatives parameter must be <= 8",
            ),
            (
                json,
                br#"{"q":"x","alternatives":1e300}"#,
                "Invalid request: alternatives parameter must be <= 8",
            ),
            (
                form,
                b"q=x&alternatives=99999999999999999999999",
                "Invalid request: alternatives parameter must be <= 8",
            ),
        ] {
            let e = alt(ct, body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.message, message, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn detect_bodies_json_form_and_empty() {
        let r = parse_detect_body("application/json", br#"{"q":"x","api_key":"k"}"#).unwrap();
        assert_eq!(r, (vec!["x".to_string()], false));
        let r = parse_detect_body("", br#"{"q":["a","b"]}"#).unwrap();
        assert_eq!(r, (vec!["a".to_string(), "b".to_string()], true));
        let r = parse_detect_body("application/x-www-form-urlencoded", b"q=%EC%95%88&api_key=")
            .unwrap();
        assert_eq!(r, (vec!["안".to_string()], false));
        let r = parse_detect_body("application/x-www-form-urlencoded", b"q=a&q=b").unwrap();
        assert!(r.1);
        assert_eq!(parse_detect_body("", b"").unwrap(), (Vec::new(), false));
        assert_eq!(
            parse_detect_body("application/json", b"{}").unwrap(),
            (Vec::new(), false)
        );
        let e = parse_detect_body("application/json", b"[1]").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_detect_body("multipart/form-data; boundary=x", b"").unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn languages_list_sources_with_targets_and_bare_targets() {
        let l = languages(&pairs(&[
            ("ko", "en"),
            ("ja", "en"),
            ("ko", "ja"),
            ("ko", "en"),
        ]));
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!([
                {"code": "ko", "name": "Korean", "targets": ["en", "ja"]},
                {"code": "en", "name": "English", "targets": []},
                {"code": "ja", "name": "Japanese", "targets": ["en"]},
            ])
        );
        assert_eq!(languages(&pairs(&[("xx", "yy")]))[0].name, "xx");
    }

    #[test]
    fn frontend_settings_have_libretranslates_keys() {
        let v = serde_json::to_value(frontend_settings(
            &pairs(&[("ko", "en"), ("en", "ko")]),
            10_000,
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "charLimit": 10000,
                "frontendTimeout": 500,
                "apiKeys": false,
                "keyRequired": false,
                "suggestions": false,
                "filesTranslation": false,
                "supportedFilesFormat": [],
                "language": {
                    "source": {"code": "ko", "name": "Korean"},
                    "target": {"code": "en", "name": "English"}
                }
            })
        );
    }
}
