//! The HTTP KV subset the peers serve, sans I/O: `GET`/`PUT /kv/{key}` over
//! HTTP/1.1 keep-alive with pipelining, parsed with `httparse`, values in a
//! `BTreeMap` (byte order, like `http_kv`'s listing needs).
//!
//! [`serve_buffered`] consumes every complete request in the input buffer and
//! appends their responses, in order, to one output buffer; the servers write
//! that buffer with a single write.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

/// Headers parsed per request.
pub const HEADERS_MAX: usize = 32;
/// Largest request head accepted (431 above it).
pub const HEAD_LIMIT_BYTES: usize = 8 * 1024;
/// Largest request body accepted (413 above it), as `http_kv`'s default.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Longest key accepted (414 above it).
pub const KEY_LIMIT_BYTES: usize = 1024;

/// The in-memory map.
pub type Store = BTreeMap<Vec<u8>, Vec<u8>>;

/// What the connection does after the responses are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading requests.
    KeepOpen,
    /// Close once the output is written.
    Close,
}

enum Step {
    /// The request at the front is not complete yet.
    Partial,
    /// One request of `len` bytes was answered.
    Served { len: usize, flow: Flow },
}

/// Serves every complete request at the front of `input`, removes them from
/// it, and appends the responses to `out`.
///
/// ```
/// use ringvisor_peers::http::{serve_buffered, Flow, Store};
/// let mut store = Store::new();
/// let mut input = b"PUT /kv/a HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /kv/a HTTP/1.1\r\n\r\n".to_vec();
/// let mut out = Vec::new();
/// let date = b"Thu, 01 Jan 1970 00:00:00 GMT";
/// assert_eq!(serve_buffered(&mut input, &mut store, date, &mut out), Flow::KeepOpen);
/// assert!(input.is_empty());
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.starts_with("HTTP/1.1 201 Created\r\n"));
/// assert!(text.ends_with("\r\n\r\nx"));
/// ```
pub fn serve_buffered(
    input: &mut Vec<u8>,
    store: &mut Store,
    date: &[u8],
    out: &mut Vec<u8>,
) -> Flow {
    let mut consumed = 0;
    let mut flow = Flow::KeepOpen;
    while consumed < input.len() {
        match serve_one(&input[consumed..], store, date, out) {
            Step::Partial => break,
            Step::Served {
                len,
                flow: Flow::KeepOpen,
            } => consumed += len,
            Step::Served {
                flow: Flow::Close, ..
            } => {
                flow = Flow::Close;
                consumed = input.len();
                break;
            }
        }
    }
    input.drain(..consumed);
    flow
}

/// Parses the request at the front of `buf` once and answers it if complete.
fn serve_one(buf: &[u8], store: &mut Store, date: &[u8], out: &mut Vec<u8>) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let bad = |out: &mut Vec<u8>, status| {
        write_status(out, date, status);
        Step::Served {
            len: buf.len(),
            flow: Flow::Close,
        }
    };
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > HEAD_LIMIT_BYTES => return bad(out, 431),
        Ok(httparse::Status::Partial) => return Step::Partial,
        Err(httparse::Error::TooManyHeaders) => return bad(out, 431),
        Err(_) => return bad(out, 400),
    };
    let mut body_len = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => body_len = n,
                None => return bad(out, 400),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return bad(out, 501); // not part of the benchmarked subset
        }
    }
    if body_len > BODY_LIMIT_BYTES {
        return bad(out, 413);
    }
    let len = head_len + body_len;
    if buf.len() < len {
        return Step::Partial;
    }
    let flow = if wants_close(&req) {
        Flow::Close
    } else {
        Flow::KeepOpen
    };
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("");
    let status = respond(method, path, &buf[head_len..len], store, date, out);
    if let Some(status) = status {
        write_status(out, date, status);
    }
    Step::Served { len, flow }
}

/// Answers a parsed request; returns the status of an empty response to
/// write, or `None` if the response was written.
fn respond(
    method: &str,
    path: &str,
    body: &[u8],
    store: &mut Store,
    date: &[u8],
    out: &mut Vec<u8>,
) -> Option<u16> {
    let Some(raw_key) = path.strip_prefix("/kv/").filter(|k| !k.is_empty()) else {
        return Some(404);
    };
    let Some(key) = percent_decode(raw_key.as_bytes()) else {
        return Some(400);
    };
    if key.len() > KEY_LIMIT_BYTES {
        return Some(414);
    }
    match method {
        "GET" => match store.get(key.as_ref()) {
            Some(value) => {
                write_response(out, date, 200, OCTETS, value);
                None
            }
            None => Some(404),
        },
        "PUT" => match store.insert(key.into_owned(), body.to_vec()) {
            Some(_) => Some(200),
            None => Some(201),
        },
        _ => Some(405),
    }
}

fn wants_close(req: &httparse::Request) -> bool {
    let connection = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("connection"))
        .map(|h| h.value);
    match req.version {
        Some(0) => !connection.is_some_and(|v| v.eq_ignore_ascii_case(b"keep-alive")),
        _ => connection.is_some_and(|v| v.eq_ignore_ascii_case(b"close")),
    }
}

/// Decodes `%XX` escapes; borrows when there are none (the common case).
fn percent_decode(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.contains(&b'%') {
        return Some(Cow::Borrowed(raw));
    }
    let mut key = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            key.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            key.push(raw[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(key))
}

const OCTETS: &str = "application/octet-stream";
const TEXT: &str = "text/plain; charset=utf-8";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Not Implemented",
    }
}

/// A response with no value: the same bytes as `http_kv` writes for the
/// statuses the benchmark sees (an empty 200/201, a 404 with a short text).
fn write_status(out: &mut Vec<u8>, date: &[u8], status: u16) {
    match status {
        200 | 201 => write_response(out, date, status, "", b""),
        404 => write_response(out, date, status, TEXT, b"no such key\n"),
        _ => write_response(out, date, status, TEXT, reason(status).as_bytes()),
    }
}

/// `http_kv`'s layout: status line, `date`, `content-length`, then
/// `content-type` if there is one, lower-case names.
fn write_response(out: &mut Vec<u8>, date: &[u8], status: u16, content_type: &str, body: &[u8]) {
    let _ = write!(out, "HTTP/1.1 {status} {}\r\ndate: ", reason(status));
    out.extend_from_slice(date);
    let _ = write!(out, "\r\ncontent-length: {}\r\n", body.len());
    if !content_type.is_empty() {
        let _ = write!(out, "content-type: {content_type}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Thu, 01 Jan 1970 00:00:00 GMT";

    fn serve(input: &[u8], store: &mut Store) -> (String, Flow, usize) {
        let mut input = input.to_vec();
        let mut out = Vec::new();
        let flow = serve_buffered(&mut input, store, DATE, &mut out);
        (String::from_utf8(out).unwrap(), flow, input.len())
    }

    #[test]
    fn put_then_get_then_replace() {
        let mut store = Store::new();
        let (out, ..) = serve(
            b"PUT /kv/k HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            &mut store,
        );
        assert!(out.starts_with("HTTP/1.1 201 Created"));
        let (out, ..) = serve(
            b"PUT /kv/k HTTP/1.1\r\nContent-Length: 1\r\n\r\nz",
            &mut store,
        );
        assert!(out.starts_with("HTTP/1.1 200 OK"));
        let (out, ..) = serve(b"GET /kv/k HTTP/1.1\r\n\r\n", &mut store);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\ncontent-length: 1\r\n\
             content-type: application/octet-stream\r\n\r\nz"
        );
    }

    #[test]
    fn partial_request_waits_for_the_rest() {
        let mut store = Store::new();
        let partial = b"PUT /kv/k HTTP/1.1\r\nContent-Length: 9\r\n\r\nab";
        let (out, flow, left) = serve(partial, &mut store);
        assert!(out.is_empty());
        assert_eq!(flow, Flow::KeepOpen);
        assert_eq!(
            left,
            partial.len(),
            "nothing consumed until the body is complete"
        );
        assert!(store.is_empty());
    }

    #[test]
    fn pipelined_requests_answer_in_order() {
        let mut store = Store::new();
        let one = b"GET /kv/missing HTTP/1.1\r\n\r\n";
        let (out, _, left) = serve(&one.repeat(16), &mut store);
        assert_eq!(out.matches("404 Not Found").count(), 16);
        assert_eq!(left, 0);
    }

    #[test]
    fn garbage_gets_400_and_close() {
        let mut store = Store::new();
        let (out, flow, _) = serve(b"\x01\x02 nonsense\r\n\r\n", &mut store);
        assert!(out.starts_with("HTTP/1.1 400"));
        assert_eq!(flow, Flow::Close);
    }

    #[test]
    fn percent_encoded_key_is_decoded() {
        let mut store = Store::new();
        serve(
            b"PUT /kv/a%2Fb HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            &mut store,
        );
        assert!(store.contains_key(&b"a/b"[..]));
    }
}
