//! JSON bodies for the errors hyper answers by itself.
//!
//! hyper rejects some requests before any handler runs and answers them with an empty
//! body: a request line longer than the `http` crate's URI limit (64 KiB) gets 414, a
//! request head larger than hyper's read buffer (≈ 400 KiB) 431, bytes that are not
//! HTTP/1 400, an unknown HTTP version 505. It offers no hook to change those answers,
//! and the gateway promises `{"error": …, "code": …}` on every error, so [`JsonErrors`]
//! wraps each accepted connection and rewrites them on their way out.
//!
//! It recognises them by what the gateway's handlers never send: a status of 400 or
//! more with `content-length: 0` (every handler error has a JSON body). It follows the
//! responses on a connection through their `content-length`, so body bytes are never
//! read as a head; after a response without one (chunked or close-delimited) it stops
//! looking and passes the rest of that connection through untouched. A response to
//! `HEAD` declares a length it does not send, which throws the count off for the rest
//! of that connection: at worst a later error of hyper's there keeps its empty body.
//! Nothing else is ever changed, since only hyper's own errors match.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest response head looked at: hyper's own error heads are about 100 bytes, and
/// a handler's head is well under this. A longer one is passed through unexamined.
const MAX_HEAD: usize = 16 * 1024;

/// Where the writer is in the stream of responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// The next byte written starts a response head.
    Head,
    /// This many bytes (the rest of a head and its body) pass before the next head.
    Skip(u64),
    /// Everything passes through from here on.
    Off,
}

/// The body of every gateway error, handlers' and rewritten ones alike. A struct, not
/// `json!`: its keys go out in this order, as the docs show them (`json!` objects
/// serialise sorted).
#[derive(serde::Serialize)]
pub(crate) struct ErrorJson<'a> {
    /// What went wrong (LibreTranslate clients read this).
    pub error: &'a str,
    /// Machine-readable code.
    pub code: &'a str,
}

/// Called with the status of each response rewritten (the gateway counts them: they
/// never reach its handlers or its metrics middleware).
pub type OnRewrite = Box<dyn Fn(u16) + Send + Sync>;

/// A connection whose bodiless error responses (hyper's own) get a JSON body.
pub struct JsonErrors<IO> {
    inner: IO,
    scan: Scan,
    /// A rewritten response still being written, and how much of it is out.
    pending: Vec<u8>,
    written: usize,
    on_rewrite: OnRewrite,
}

impl<IO> JsonErrors<IO> {
    /// Wraps `inner`; `on_rewrite` hears of each rewritten response.
    pub fn new(inner: IO, on_rewrite: OnRewrite) -> Self {
        Self {
            inner,
            scan: Scan::Head,
            pending: Vec::new(),
            written: 0,
            on_rewrite,
        }
    }
}

/// What a response head says about itself.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the head, the blank line included.
    len: usize,
    status: u16,
    content_length: Option<u64>,
}

/// Parses the response head at the start of `buf`; `None` when `buf` does not start
/// with a complete, sane one.
fn parse_head(buf: &[u8]) -> Option<Head> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let end = window.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&window[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    let mut content_length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = Some(value.trim().parse().ok()?);
            }
        }
    }
    Some(Head {
        len: end,
        status,
        content_length,
    })
}

/// The `(code, message)` of the JSON body for an error hyper answered with `status`.
fn describe(status: u16) -> (&'static str, &'static str) {
    match status {
        414 => (
            "too_large",
            "the request line is longer than this server accepts (64 KiB); \
             POST the texts in a body instead",
        ),
        431 => (
            "too_large",
            "the request line and headers are larger than this server accepts; \
             POST the texts in a body instead",
        ),
        505 => (
            "invalid_request",
            "HTTP version not supported: send HTTP/1.1",
        ),
        408 => ("timeout", "the request head did not arrive in time"),
        _ => ("invalid_request", "the request is not valid HTTP/1.1"),
    }
}

/// The full response replacing hyper's bodiless `status` answer. The connection
/// closes after it, as hyper closes it after these errors.
fn json_response(status: u16) -> Vec<u8> {
    let (code, message) = describe(status);
    let body = serde_json::to_string(&ErrorJson {
        error: message,
        code,
    })
    .unwrap_or_default();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<IO: AsyncWrite + Unpin> JsonErrors<IO> {
    /// Writes out what is left of a rewritten response.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonErrors<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonErrors<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if this.scan == Scan::Head {
            match parse_head(buf) {
                Some(head) if head.status >= 400 && head.content_length == Some(0) => {
                    // hyper's own error: swap it for the JSON one. hyper closes the
                    // connection after it, so nothing else is looked at.
                    this.pending = json_response(head.status);
                    this.written = 0;
                    (this.on_rewrite)(head.status);
                    this.scan = Scan::Off;
                    // The head counts as written; the flush below (or the next call)
                    // sends the replacement.
                    let _ = this.poll_pending(cx)?;
                    return Poll::Ready(Ok(head.len));
                }
                Some(head) => {
                    let bodiless = head.status < 200 || head.status == 204 || head.status == 304;
                    this.scan = match (head.content_length, bodiless) {
                        (_, true) => Scan::Skip(head.len as u64),
                        (Some(n), false) => Scan::Skip(head.len as u64 + n),
                        (None, false) => Scan::Off,
                    };
                }
                None => this.scan = Scan::Off,
            }
        }
        match this.scan {
            Scan::Skip(left) => {
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..take]))?;
                let left = left - n as u64;
                this.scan = if left == 0 {
                    Scan::Head
                } else {
                    Scan::Skip(left)
                };
                Poll::Ready(Ok(n))
            }
            Scan::Off | Scan::Head => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    async fn through(writes: &[&[u8]]) -> (String, Vec<u16>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut w = JsonErrors::new(
            Vec::new(),
            Box::new(move |status| log.lock().unwrap().push(status)),
        );
        for chunk in writes {
            w.write_all(chunk).await.unwrap();
        }
        w.flush().await.unwrap();
        let rewritten = seen.lock().unwrap().clone();
        (String::from_utf8(w.inner).unwrap(), rewritten)
    }

    #[tokio::test]
    async fn hypers_bodiless_error_gets_a_json_body() {
        let (out, rewritten) =
            through(&[b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n"]).await;
        assert_eq!(rewritten, [414]);
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        // The handlers' key order: "error", then "code".
        assert!(body.starts_with(r#"{"error":"#), "{body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_large");
        assert!(v["error"].as_str().unwrap().contains("POST"), "{v}");
    }

    #[tokio::test]
    async fn handler_responses_pass_untouched_even_when_a_body_looks_like_a_head() {
        // A JSON error, then a 200 whose body is a bodiless error head, then a real
        // hyper error: only the last is rewritten.
        let fake = "HTTP/1.1 431 X\r\ncontent-length: 0\r\n\r\n";
        let first = "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        let second = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", fake.len());
        let third = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let (out, rewritten) = through(&[
            first.as_bytes(),
            second.as_bytes(),
            // The body written in two pieces, the first of which starts like a head.
            &fake.as_bytes()[..10],
            &fake.as_bytes()[10..],
            third.as_bytes(),
        ])
        .await;
        assert_eq!(rewritten, [431]);
        assert!(
            out.starts_with(&format!("{first}{second}{fake}HTTP/1.1 431 ")),
            "{out}"
        );
        assert!(out.ends_with("}"), "{out}");
    }

    #[tokio::test]
    async fn a_chunked_response_ends_the_inspection() {
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let later = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let (out, rewritten) = through(&[chunked.as_bytes(), later.as_bytes()]).await;
        assert!(rewritten.is_empty());
        assert_eq!(out, format!("{chunked}{later}"));
    }

    #[test]
    fn heads_parse_and_garbage_does_not() {
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\nrest"),
            Some(Head {
                len: 46,
                status: 204,
                content_length: Some(0)
            })
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(parse_head(b"{\"a\":1}\r\n\r\n"), None);
    }
}
