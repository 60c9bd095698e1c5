//! Responses: what the router answers, and their encoding into a
//! connection's output buffer (status line, headers, body) without
//! allocating.

use std::rc::Rc;

use crate::date::DATE_BYTES;

/// A response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// Fixed text.
    Static(&'static [u8]),
    /// A stored value, shared with the shard that holds it (the request
    /// body's own buffer: storing a PUT copies nothing).
    Shared(Rc<Vec<u8>>),
    /// Bytes made for this response (listings, status, metrics).
    Owned(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Static(b) => b,
            Body::Shared(b) => b.as_slice(),
            Body::Owned(b) => b,
        }
    }
}

/// `Content-Type` of plain text answers.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// `Content-Type` of values.
pub const OCTETS: &str = "application/octet-stream";
/// `Content-Type` of `/_status`.
pub const JSON: &str = "application/json";
/// `Content-Type` of `/metrics` (Prometheus text exposition 0.0.4).
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`, if there is a body.
    pub content_type: Option<&'static str>,
    /// The body (not sent for `HEAD`, but its length is).
    pub body: Body,
    /// `Allow`, for 405.
    pub allow: Option<&'static str>,
    /// Send `Retry-After: 1` (503).
    pub retry_after: bool,
}

impl Response {
    /// A response with a plain-text body.
    pub fn text(status: u16, body: &'static str) -> Response {
        Response {
            status,
            content_type: Some(TEXT),
            body: Body::Static(body.as_bytes()),
            allow: None,
            retry_after: false,
        }
    }

    /// A response with no body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: None,
            body: Body::Empty,
            allow: None,
            retry_after: false,
        }
    }

    /// A response with `body` of type `content_type`.
    pub fn with_body(status: u16, content_type: &'static str, body: Body) -> Response {
        Response {
            status,
            content_type: Some(content_type),
            body,
            allow: None,
            retry_after: false,
        }
    }

    /// 405 with the methods the path allows.
    pub fn method_not_allowed(allow: &'static str) -> Response {
        Response {
            allow: Some(allow),
            ..Response::text(405, "method not allowed\n")
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(body: &'static str) -> Response {
        Response {
            retry_after: true,
            ..Response::text(503, body)
        }
    }
}

/// How the connection goes on after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Keep-alive is the default (HTTP/1.1): no header needed.
    KeepAlive,
    /// Keep-alive asked for by an HTTP/1.0 client: say so.
    KeepAliveAnnounced,
    /// The connection closes after this response.
    Close,
}

/// The reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends `response` to `out`; without the body bytes if `head_only`.
pub fn encode(
    response: &Response,
    head_only: bool,
    persistence: Persistence,
    date: &[u8; DATE_BYTES],
    out: &mut Vec<u8>,
) {
    let body = response.body.bytes();
    // 1xx and 204 carry neither a body nor a Content-Length (RFC 9110 8.6).
    let bodiless = response.status < 200 || response.status == 204;
    debug_assert!(!bodiless || body.is_empty());
    // Formatting machinery (`write!`) costs more than the rest of the head
    // together on the pipelined hot path; the head is plain bytes, and room
    // for all of it is made once. Every field after the date starts with
    // the line end of the one before, so fixed text goes in whole pieces
    // (each piece is a `memcpy` call: about 20 instructions).
    out.reserve(HEAD_BYTES_MAX + if head_only { 0 } else { body.len() });
    match status_line_and_date_name(response.status) {
        Some(start) => out.extend_from_slice(start),
        None => {
            out.extend_from_slice(b"HTTP/1.1 ");
            push_decimal(out, u64::from(response.status));
            out.push(b' ');
            out.extend_from_slice(reason_phrase(response.status).as_bytes());
            out.extend_from_slice(b"\r\ndate: ");
        }
    }
    out.extend_from_slice(date);
    if !bodiless {
        out.extend_from_slice(b"\r\ncontent-length: ");
        push_decimal(out, body.len() as u64);
    }
    if let Some(content_type) = response.content_type {
        match content_type_field(content_type) {
            Some(field) => out.extend_from_slice(field),
            None => {
                out.extend_from_slice(b"\r\ncontent-type: ");
                out.extend_from_slice(content_type.as_bytes());
            }
        }
    }
    if let Some(allow) = response.allow {
        out.extend_from_slice(b"\r\nallow: ");
        out.extend_from_slice(allow.as_bytes());
    }
    if response.retry_after {
        out.extend_from_slice(b"\r\nretry-after: 1");
    }
    out.extend_from_slice(match persistence {
        Persistence::KeepAlive => b"\r\n\r\n",
        Persistence::KeepAliveAnnounced => b"\r\nconnection: keep-alive\r\n\r\n",
        Persistence::Close => b"\r\nconnection: close\r\n\r\n",
    });
    if !head_only && !bodiless {
        out.extend_from_slice(body);
    }
}

/// Room reserved for a head: the longest status line, date, length and
/// content type, `Allow`, `Retry-After` and `Connection` fit.
const HEAD_BYTES_MAX: usize = 320;

/// The status line and the `Date` field's name, for the statuses answered
/// on the hot path.
fn status_line_and_date_name(status: u16) -> Option<&'static [u8]> {
    Some(match status {
        200 => b"HTTP/1.1 200 OK\r\ndate: ",
        201 => b"HTTP/1.1 201 Created\r\ndate: ",
        204 => b"HTTP/1.1 204 No Content\r\ndate: ",
        404 => b"HTTP/1.1 404 Not Found\r\ndate: ",
        _ => return None,
    })
}

/// The whole `Content-Type` field (after the previous field's line end) of
/// the types answered on the hot path (matched by length first: one
/// compare of the bytes, against the type of that length).
fn content_type_field(content_type: &str) -> Option<&'static [u8]> {
    Some(match content_type {
        OCTETS => b"\r\ncontent-type: application/octet-stream",
        TEXT => b"\r\ncontent-type: text/plain; charset=utf-8",
        _ => return None,
    })
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    // Values and texts are mostly under 1,000 bytes: fixed-length copies
    // compile to stores, not a `memcpy` call.
    let digit = |d: u64| b'0' + (d % 10) as u8;
    match n {
        0..=9 => out.push(digit(n)),
        10..=99 => out.extend_from_slice(&[digit(n / 10), digit(n)]),
        100..=999 => out.extend_from_slice(&[digit(n / 100), digit(n / 10), digit(n)]),
        _ => {
            let mut digits = [0u8; 20];
            let mut start = digits.len();
            let mut n = n;
            loop {
                start -= 1;
                digits[start] = digit(n);
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(&digits[start..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8; DATE_BYTES] = b"Thu, 01 Jan 1970 00:00:00 GMT";

    fn encoded(r: &Response, head_only: bool, p: Persistence) -> String {
        let mut out = Vec::new();
        encode(r, head_only, p, DATE, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fast_status_lines_match_the_general_form() {
        for status in [200u16, 201, 204, 404] {
            let general = format!("HTTP/1.1 {status} {}\r\ndate: ", reason_phrase(status));
            assert_eq!(status_line_and_date_name(status), Some(general.as_bytes()));
        }
        for content_type in [OCTETS, TEXT] {
            let general = format!("\r\ncontent-type: {content_type}");
            assert_eq!(content_type_field(content_type), Some(general.as_bytes()));
        }
        let s = encoded(
            &Response::with_body(200, JSON, Body::Static(b"{}")),
            false,
            Persistence::KeepAlive,
        );
        assert!(s.ends_with("\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"));
        let mut out = Vec::new();
        encode(
            &Response::text(503, "x"),
            false,
            Persistence::KeepAlive,
            DATE,
            &mut out,
        );
        assert!(out.starts_with(b"HTTP/1.1 503 Service Unavailable\r\ndate: "));
    }

    #[test]
    fn decimals_are_written_whole() {
        for n in [0u64, 7, 10, 42, 99, 100, 305, 999, 1000, 1 << 20, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn encodes_status_headers_and_body() {
        let r = Response::with_body(200, OCTETS, Body::Shared(Rc::new(b"hi".to_vec())));
        assert_eq!(
            encoded(&r, false, Persistence::KeepAlive),
            "HTTP/1.1 200 OK\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\ncontent-length: 2\r\n\
             content-type: application/octet-stream\r\n\r\nhi"
        );
        let head = encoded(&r, true, Persistence::Close);
        assert!(head.ends_with("content-length: 2\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n"));
    }

    #[test]
    fn no_content_has_no_length_and_errors_carry_their_headers() {
        let s = encoded(
            &Response::empty(204),
            false,
            Persistence::KeepAliveAnnounced,
        );
        assert!(!s.contains("content-length"));
        assert!(s.contains("connection: keep-alive\r\n"));
        let s = encoded(
            &Response::method_not_allowed("GET, HEAD"),
            false,
            Persistence::KeepAlive,
        );
        assert!(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(s.contains("allow: GET, HEAD\r\n"));
        let s = encoded(
            &Response::unavailable("busy\n"),
            false,
            Persistence::KeepAlive,
        );
        assert!(s.contains("retry-after: 1\r\n") && s.ends_with("busy\n"));
    }
}
