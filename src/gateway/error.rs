//! The handlers' error answers, `{"error": message, "code": code}`, and how a failed
//! call through the client becomes one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use translation_client::wire::ErrorCode;
use translation_client::ClientError;

use super::http_errors::ErrorJson;

/// An HTTP error answer: `{"error": message, "code": code}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// Seconds for `Retry-After` (503 only).
    pub(super) retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// A 503 that tells the client to retry after `retry_after` seconds.
    pub(super) fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after: u64,
    ) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorJson {
            error: &self.message,
            code: self.code,
        });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The HTTP answer to a contract error reply of the worker.
fn rejected_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest | ErrorCode::UnsupportedLanguagePair => StatusCode::BAD_REQUEST,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // The gateway wrote the job's JSON: the worker refusing it is not the caller's
        // fault, and neither is an engine failure.
        ErrorCode::InvalidJson | ErrorCode::Internal => StatusCode::BAD_GATEWAY,
    }
}

/// The HTTP answer to a failed call.
pub(super) fn client_error(e: ClientError, retry_after: u64) -> ApiError {
    match e {
        ClientError::Timeout(d) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no reply within {} ms", d.as_millis()),
        ),
        ClientError::Unroutable { routing_key, .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_language_pair",
            format!("no worker serves the pair {routing_key}"),
        ),
        ClientError::Rejected { code, message, .. } => {
            ApiError::new(rejected_status(code), code.as_str(), message)
        }
        ClientError::InvalidReply(m) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "invalid_reply",
            format!("the worker's reply is not valid: {m}"),
        ),
        e @ (ClientError::ConnectionLost
        | ClientError::Closed
        | ClientError::Connect { .. }
        | ClientError::Broker { .. }
        | ClientError::Nacked) => {
            ApiError::unavailable("broker_unavailable", e.to_string(), retry_after)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn client_errors_map_to_statuses() {
        let status = |e| client_error(e, 3).status;
        assert_eq!(
            status(ClientError::Timeout(Duration::from_secs(1))),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status(ClientError::Unroutable {
                exchange: "x".into(),
                routing_key: "ko-ja".into(),
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
            }),
            StatusCode::BAD_REQUEST
        );
        let e = client_error(ClientError::ConnectionLost, 3);
        assert_eq!(
            (e.status, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, Some(3))
        );
        for (code, want) in [
            (ErrorCode::InvalidRequest, StatusCode::BAD_REQUEST),
            (ErrorCode::UnsupportedLanguagePair, StatusCode::BAD_REQUEST),
            (ErrorCode::TooLarge, StatusCode::PAYLOAD_TOO_LARGE),
            (ErrorCode::DeadlineExceeded, StatusCode::GATEWAY_TIMEOUT),
            (ErrorCode::Internal, StatusCode::BAD_GATEWAY),
            (ErrorCode::InvalidJson, StatusCode::BAD_GATEWAY),
        ] {
            let e = client_error(
                ClientError::Rejected {
                    code,
                    message: "m".into(),
                    id: None,
                },
                1,
            );
            assert_eq!((e.status, e.code), (want, code.as_str()), "{code}");
        }
    }

    #[test]
    fn errors_render_libretranslate_shape_with_retry_after() {
        let r = ApiError::unavailable("overloaded", "busy", 7).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let r = ApiError::bad_request("nope").into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
