//! LibreTranslate's file translation: `POST /translate_file` (multipart: `file`,
//! `source`, `target`, `api_key`) → `{"translatedFileUrl": "<base>/download_file/<name>"}`,
//! and `GET /download_file/<name>`.
//!
//! The file is taken apart by [`crate::documents`], its texts are sent as jobs of at
//! most `max_texts` texts through the same path as `/translate` (admission control,
//! deadline, error mapping), and the rebuilt file is kept in Redis for
//! `gateway.file_ttl_secs` under `<uuid v4>.<original stem><extension>`, so any replica
//! can serve the download and names cannot be guessed. Nothing touches the disk.

use std::sync::Arc;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{ConnectInfo, Multipart, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::api::AppState;
use super::error::ApiError;
use super::keys::{client_ip, query_key};
use super::libretranslate::TextRequest;
use super::server::Peer;
use super::store::StoreError;
use crate::documents::{self, DocumentError, FileKind};

/// Bytes a multipart body may have beyond the file: the boundaries, the part headers
/// and the small fields (`source`, `target`, `api_key`).
pub(super) const FORM_OVERHEAD: usize = 64 * 1024;

/// Longest original file stem kept in a stored name (the rest is cut).
const MAX_STEM_CHARS: usize = 100;

/// Jobs of one file in flight at once: enough to overlap round trips, few enough
/// that one large file does not take every pending slot.
const JOBS_IN_FLIGHT: usize = 4;

/// Characters of a file's text gathered to detect its language (`source: "auto"`;
/// the detector reads at most its own sample of them).
const DETECT_SAMPLE_CHARS: usize = 4096;

/// What a zip-based file may expand to, per uploaded byte (zip-bomb bound handed to
/// [`documents::extract`]): office XML compresses about 10:1.
const EXPANSION_FACTOR: usize = 20;

/// The error of a file the gateway refuses, counted by `reason`.
fn reject(s: &AppState, reason: &'static str, e: ApiError) -> ApiError {
    s.metrics.file_rejected(reason);
    e
}

fn too_large(s: &AppState) -> ApiError {
    reject(
        s,
        "too_large",
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the file is over {} bytes", s.cfg.max_file_bytes),
        ),
    )
}

fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "files_disabled",
        "Files translation are disabled on this server.",
    )
}

fn store_error(s: &AppState, e: &StoreError) -> ApiError {
    tracing::warn!(error = %e, "file store unavailable");
    ApiError::unavailable(
        "store_unavailable",
        "the file store (redis) is unavailable; retry later",
        s.cfg.retry_after_secs,
    )
}

/// The multipart form of `/translate_file`.
#[derive(Default)]
struct FileForm {
    file: Option<(String, Vec<u8>)>,
    source: Option<String>,
    target: Option<String>,
    api_key: Option<String>,
}

/// Reads the form, refusing a file over `max_file_bytes` as soon as it is seen.
async fn read_form(s: &AppState, mut multipart: Multipart) -> Result<FileForm, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(s)
        } else {
            reject(
                s,
                "invalid_request",
                ApiError::bad_request(format!("Invalid request: {}", e.body_text())),
            )
        }
    };
    let mut form = FileForm::default();
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = field.file_name().unwrap_or_default().to_owned();
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if bytes.len() + chunk.len() > s.cfg.max_file_bytes {
                        return Err(too_large(s));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                form.file = Some((name, bytes));
            }
            "source" => form.source = Some(field.text().await.map_err(bad)?),
            "target" => form.target = Some(field.text().await.map_err(bad)?),
            "api_key" => form.api_key = Some(field.text().await.map_err(bad)?),
            // Other fields (LibreTranslate's UI sends none) are read and dropped.
            _ => while field.chunk().await.map_err(bad)?.is_some() {},
        }
    }
    Ok(form)
}

/// The stem of an uploaded name, as werkzeug's `secure_filename` would keep it:
/// the last path component, ASCII letters, digits, `-`, `_` and `.` only.
fn safe_stem(file_name: &str) -> String {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or_default();
    let stem = base.rsplit_once('.').map_or(base, |(s, _)| s);
    let clean: String = stem
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(MAX_STEM_CHARS)
        .collect();
    let clean = clean.trim_matches(['.', '_']).to_owned();
    if clean.is_empty() {
        "file".into()
    } else {
        clean
    }
}

/// Whether `name` is one this gateway could have made: `<uuid>.<safe name>`.
fn valid_name(name: &str) -> bool {
    let Some((id, rest)) = name.split_once('.') else {
        return false;
    };
    uuid::Uuid::try_parse(id).is_ok()
        && !rest.is_empty()
        && rest.len() <= MAX_STEM_CHARS + 16
        && !rest.starts_with('.')
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Scheme and host of the download URL: `gateway.public_url`, else the request's.
fn base_url(s: &AppState, headers: &HeaderMap) -> String {
    if !s.cfg.public_url.is_empty() {
        return s.cfg.public_url.clone();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let proto = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let host = header("host").unwrap_or("localhost");
    format!("{proto}://{host}")
}

/// Why translating a file's texts failed: an API error of a job, or the document
/// module's (the [`documents::translate_document`] error type).
enum Failure {
    Api(ApiError),
    Document(DocumentError),
}

impl From<DocumentError> for Failure {
    fn from(e: DocumentError) -> Self {
        Failure::Document(e)
    }
}

/// Translates the texts of `extracted` from `source` (a served code, or `auto`: the
/// language of its text) to `target`, in jobs of at most `max_texts`, and rebuilds
/// the file.
async fn translate_file(
    s: &AppState,
    source: String,
    target: String,
    extracted: &documents::Extracted,
) -> Result<Vec<u8>, Failure> {
    let source = if source == "auto" && !extracted.texts().is_empty() {
        // Whole texts (markup is not cut mid-tag) until the sample is long enough.
        let mut sample = String::new();
        for t in extracted.texts() {
            if sample.chars().count() >= DETECT_SAMPLE_CHARS {
                break;
            }
            sample.push_str(t);
            sample.push('\n');
        }
        let format = extracted.format();
        let found = {
            // Detection is bounded like a translation: it holds a pending slot.
            let _slot = s.admit().map_err(Failure::Api)?;
            // Of HTML texts (html, md, office files) only what a reader sees.
            s.on_detector(move |d| d.best(&super::detect::detectable_text(&sample, format)))
                .await
                .map_err(Failure::Api)?
        };
        if found.confidence == 0.0 {
            // Nothing to tell by: the first source served to the target.
            s.pairs
                .iter()
                .find(|(_, t)| *t == target)
                .map(|(src, _)| src.clone())
                .unwrap_or(found.language)
        } else {
            found.language
        }
    } else {
        source
    };
    if source == target || extracted.texts().is_empty() {
        // Already in the target language, or no text: nothing to translate.
        return Ok(extracted.rebuild(extracted.texts())?);
    }
    documents::translate_document(
        extracted,
        s.cfg.max_texts,
        JOBS_IN_FLIGHT,
        |texts, format| {
            let job = TextRequest {
                source: Some(source.clone()),
                target: Some(target.clone()),
                texts,
                many: true,
                format,
                ..TextRequest::default()
            };
            async move {
                s.translate(job)
                    .await
                    .map(|reply| reply.translations)
                    .map_err(Failure::Api)
            }
        },
    )
    .await
}

/// `POST /translate_file`.
pub(super) async fn post_translate_file(
    State(s): State<Arc<AppState>>,
    peer: Result<ConnectInfo<Peer>, axum::extract::rejection::ExtensionRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(store) = s.files.clone() else {
        return Err(disabled());
    };
    // Refuse an announced oversize body before reading it.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > s.cfg.max_file_bytes.saturating_add(FORM_OVERHEAD)) {
        return Err(too_large(&s));
    }
    let multipart = multipart.map_err(|_| {
        reject(
            &s,
            "invalid_request",
            ApiError::bad_request("Invalid request: missing file parameter"),
        )
    })?;
    let form = read_form(&s, multipart).await?;
    if s.access.enabled() {
        let key = form
            .api_key
            .clone()
            .or_else(|| query.as_deref().and_then(query_key));
        let ip = client_ip(&headers, peer.ok().map(|c| c.0 .0));
        s.access.check(key.as_deref(), &ip, &s.metrics).await?;
    }
    let missing = |what: &str| {
        reject(
            &s,
            "invalid_request",
            ApiError::bad_request(format!("Invalid request: missing {what} parameter")),
        )
    };
    let (file_name, bytes) = form.file.ok_or_else(|| missing("file"))?;
    let source = form
        .source
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("source"))?;
    let target = form
        .target
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("target"))?;
    if file_name.is_empty() {
        return Err(reject(
            &s,
            "invalid_request",
            ApiError::bad_request("Invalid request: empty file"),
        ));
    }
    let unsupported = || {
        reject(
            &s,
            "unsupported",
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_file",
                "Invalid request: file format not supported",
            ),
        )
    };
    let kind = FileKind::from_name(&file_name).ok_or_else(unsupported)?;
    let known = |code: &str| s.languages.iter().any(|l| l.code() == code);
    for code in [&source, &target] {
        if !(known(code) || (code == &source && code == "auto")) {
            return Err(reject(
                &s,
                "invalid_request",
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_language_pair",
                    format!("{code} is not supported"),
                ),
            ));
        }
    }
    let size = bytes.len();
    let max_expanded = s.cfg.max_file_bytes.saturating_mul(EXPANSION_FACTOR);
    let extracted =
        tokio::task::spawn_blocking(move || documents::extract(kind, &bytes, max_expanded))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("reading the file failed: {e}"),
                )
            })?
            .map_err(|e| document_error(&s, e))?;
    let rebuilt = match translate_file(&s, source, target, &extracted).await {
        Ok(bytes) => bytes,
        Err(Failure::Api(e)) => {
            s.metrics.file_rejected("translation_failed");
            return Err(e);
        }
        Err(Failure::Document(e)) => return Err(document_error(&s, e)),
    };
    let name = format!(
        "{}.{}{}",
        uuid::Uuid::new_v4(),
        safe_stem(&file_name),
        kind.extension()
    );
    store
        .put_file(&name, &rebuilt, s.cfg.file_ttl_secs)
        .await
        .map_err(|e| {
            s.metrics.file_rejected("store_unavailable");
            store_error(&s, &e)
        })?;
    s.metrics.file_translated(kind.extension(), size);
    Ok(Json(json!({
        "translatedFileUrl": format!("{}/download_file/{name}", base_url(&s, &headers)),
    })))
}

/// The answer to a file [`documents`] could not read or write.
fn document_error(s: &AppState, e: DocumentError) -> ApiError {
    match e {
        DocumentError::Unsupported(_) => reject(
            s,
            "unsupported",
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_file",
                "Invalid request: file format not supported",
            ),
        ),
        DocumentError::Corrupt { .. } => reject(
            s,
            "corrupt",
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "corrupt_file",
                format!("Invalid request: {e}"),
            ),
        ),
        DocumentError::TooLarge(_) => reject(
            s,
            "too_large",
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string()),
        ),
        // A mismatch, a write failure, or a reason added later: not the caller's fault.
        other => {
            s.metrics.file_rejected("translation_failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            )
        }
    }
}

/// `GET /download_file/<name>`: the file, as an attachment named without its uuid.
pub(super) async fn get_download_file(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let Some(store) = s.files.clone() else {
        // LibreTranslate answers a download with files off 400, an upload 403.
        return Err(ApiError::bad_request(
            "Files translation are disabled on this server.",
        ));
    };
    if !valid_name(&name) {
        return Err(ApiError::bad_request("Invalid filename"));
    }
    let bytes = store
        .get_file(&name)
        .await
        .map_err(|e| store_error(&s, &e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such file (it may have expired)",
            )
        })?;
    let download = name.split_once('.').map_or(name.as_str(), |(_, rest)| rest);
    let content_type =
        FileKind::from_name(download).map_or("application/octet-stream", FileKind::content_type);
    // `download` is ASCII letters, digits, `-`, `_` and `.` only (valid_name).
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{download}\""))
        .map_err(|_| ApiError::bad_request("Invalid filename"))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_safe_and_checked() {
        assert_eq!(safe_stem("report.docx"), "report");
        assert_eq!(safe_stem("../../etc/pass wd.txt"), "pass_wd");
        assert_eq!(safe_stem("C:\\x\\한국어.txt"), "file");
        assert_eq!(safe_stem(".hidden"), "file");
        assert_eq!(safe_stem("a.b.c.md"), "a.b.c");
        let name = format!("{}.report.docx", uuid::Uuid::new_v4());
        assert!(valid_name(&name));
        assert!(!valid_name("report.docx"));
        assert!(!valid_name(&format!("{}..%2F.txt", uuid::Uuid::new_v4())));
        assert!(!valid_name(&format!("{}.a\"b.txt", uuid::Uuid::new_v4())));
        assert!(!valid_name(&format!("{}.", uuid::Uuid::new_v4())));
    }
}
