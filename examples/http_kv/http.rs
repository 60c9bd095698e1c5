//! Request heads: finding where a head ends, parsing it with `httparse`, and
//! deciding how its body is framed.
//!
//! Invariants: a head is never longer than [`HEAD_BYTES_MAX`] nor has more
//! than [`HEADERS_MAX`] fields; a request with both `Content-Length` and
//! `Transfer-Encoding`, with two different lengths, or with a length that is
//! not plain digits is refused (request smuggling lives in those gaps). Every
//! error here is a [`HttpError`], answered and followed by closing the
//! connection, since the framing of whatever follows is unknown.

use std::mem::MaybeUninit;

/// Largest request head (request line and header fields) accepted: 431 above.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Most header fields in one request: 431 above.
pub const HEADERS_MAX: usize = 64;

/// The request methods the service tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `POST`
    Post,
    /// Anything else (answered 405 on known paths).
    Other,
}

impl Method {
    /// Every method, in the order metrics list them.
    pub const ALL: [Method; 6] = [
        Method::Get,
        Method::Head,
        Method::Put,
        Method::Delete,
        Method::Post,
        Method::Other,
    ];

    fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "POST" => Method::Post,
            _ => Method::Other,
        }
    }

    /// The method's name (`OTHER` for the rest).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Post => "POST",
            Method::Other => "OTHER",
        }
    }

    /// Index into [`Method::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (neither `Content-Length` nor `Transfer-Encoding`).
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head; `target` borrows the connection's input buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'b> {
    /// The method.
    pub method: Method,
    /// The request target as sent (origin or absolute form).
    pub target: &'b str,
    /// Whether the connection stays open after this request.
    pub keep_alive: bool,
    /// The request is HTTP/1.0.
    pub http10: bool,
    /// `Expect: 100-continue` was sent (HTTP/1.1 only).
    pub expect_continue: bool,
    /// How the body is delimited.
    pub framing: Framing,
}

/// A request the parser cannot accept; answered with `status`, then closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status to answer with.
    pub status: u16,
    /// A short explanation, sent as the body.
    pub reason: &'static str,
}

impl HttpError {
    /// A 400 with `reason`.
    pub const fn bad_request(reason: &'static str) -> HttpError {
        HttpError {
            status: 400,
            reason,
        }
    }
}

/// Where the head in `buf` ends (just past its blank line), searching from
/// `scanned` (bytes already searched without success) so dribbled input is
/// not searched again and again.
pub fn find_head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let from = scanned.saturating_sub(3);
    let mut i = from;
    while let Some(off) = memchr::memchr(b'\n', &buf[i..]) {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

/// The error for `buf` holding no complete head, if it can no longer become
/// one within [`HEAD_BYTES_MAX`]: 414 while the request line itself is
/// unfinished, 431 once the header fields are what is too long.
pub fn check_partial_head(buf: &[u8]) -> Result<(), HttpError> {
    if buf.len() < HEAD_BYTES_MAX {
        return Ok(());
    }
    if !buf[..HEAD_BYTES_MAX].contains(&b'\n') {
        return Err(HttpError {
            status: 414,
            reason: "request line too long",
        });
    }
    Err(HttpError {
        status: 431,
        reason: "request header fields too large",
    })
}

/// Parses the head occupying `buf[..end]` (`end` from [`find_head_end`]).
pub fn parse_head(buf: &[u8], end: usize) -> Result<Head<'_>, HttpError> {
    debug_assert!(end <= buf.len());
    if end > HEAD_BYTES_MAX {
        check_partial_head(&buf[..end])?;
    }
    // Left uninitialised: filling 64 empty fields (2 KiB) per request cost
    // more than parsing a short head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(&buf[..end], &mut fields) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HttpError::bad_request("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError {
                status: 431,
                reason: "too many header fields",
            })
        }
        Err(_) => return Err(HttpError::bad_request("malformed request head")),
    }
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("/");
    let http10 = req.version == Some(0);
    let fields = Fields::read(req.headers, http10)?;
    Ok(Head {
        method,
        target,
        keep_alive: if http10 {
            fields.keep_alive && !fields.close
        } else {
            !fields.close
        },
        http10,
        expect_continue: fields.expect_continue && !http10,
        framing: fields.framing()?,
    })
}

/// What the header fields say, before their consistency is checked.
#[derive(Default)]
struct Fields {
    length: Option<u64>,
    chunked: bool,
    other_coding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    has_host: bool,
    http10: bool,
}

impl Fields {
    fn read(headers: &[httparse::Header<'_>], http10: bool) -> Result<Fields, HttpError> {
        let mut f = Fields {
            http10,
            ..Fields::default()
        };
        for h in headers {
            // The length picks the one name a field can be; a word compare
            // settles it (`eq_ignore_ascii_case` against each name folded
            // every byte: a fifth of a PUT's head parsing).
            let name = h.name.as_bytes();
            match name.len() {
                14 if is_name(name, b"content-length") => {
                    let n = parse_length(h.value)?;
                    if f.length.is_some_and(|old| old != n) {
                        return Err(HttpError::bad_request("conflicting content-length"));
                    }
                    f.length = Some(n);
                }
                17 if is_name(name, b"transfer-encoding") => f.read_codings(h.value)?,
                10 if is_name(name, b"connection") => {
                    for token in tokens(h.value) {
                        f.close |= token.eq_ignore_ascii_case("close");
                        f.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                    }
                }
                6 if is_name(name, b"expect") => {
                    if !trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                        return Err(HttpError {
                            status: 417,
                            reason: "only 100-continue is supported",
                        });
                    }
                    f.expect_continue = true;
                }
                4 if is_name(name, b"host") => f.has_host = true,
                _ => {}
            }
        }
        Ok(f)
    }

    /// `Transfer-Encoding` codings; chunked must come last and only once.
    fn read_codings(&mut self, value: &[u8]) -> Result<(), HttpError> {
        for token in tokens(value) {
            if self.chunked {
                return Err(HttpError::bad_request("chunked must be the last coding"));
            }
            if token.eq_ignore_ascii_case("chunked") {
                self.chunked = true;
            } else {
                self.other_coding = true;
            }
        }
        Ok(())
    }

    fn framing(&self) -> Result<Framing, HttpError> {
        if !self.http10 && !self.has_host {
            return Err(HttpError::bad_request("HTTP/1.1 request without host"));
        }
        let encoded = self.chunked || self.other_coding;
        if encoded && self.length.is_some() {
            return Err(HttpError::bad_request(
                "both content-length and transfer-encoding",
            ));
        }
        if encoded && (self.http10 || !self.chunked) {
            return Err(HttpError::bad_request("unsupported transfer-encoding"));
        }
        Ok(match (self.chunked, self.length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::Empty,
        })
    }
}

/// Whether `name` is `lower` (lowercase letters and `-`, 4 bytes or more)
/// but for ASCII case, compared in overlapping words: a letter's byte may
/// differ from it only in the case bit (0x20); every other byte must be equal.
#[inline(always)]
fn is_name(name: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.len() >= 4);
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
    if name.len() != lower.len() {
        return false;
    }
    let n = lower.len();
    if n < 8 {
        return word_is::<4>(&name[..4], &lower[..4])
            && word_is::<4>(&name[n - 4..], &lower[n - 4..]);
    }
    let mut i = 0;
    while i + 8 < n {
        if !word_is::<8>(&name[i..i + 8], &lower[i..i + 8]) {
            return false;
        }
        i += 8;
    }
    word_is::<8>(&name[n - 8..], &lower[n - 8..])
}

/// One word of [`is_name`]: the case bit is let through only where `lower`
/// has a letter (bit 0x40, which `-` lacks).
#[inline(always)]
fn word_is<const N: usize>(name: &[u8], lower: &[u8]) -> bool {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..N].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let want = word(lower);
    let case_bits = (want & 0x4040_4040_4040_4040) >> 1;
    word(name) | case_bits == want
}

/// `Content-Length`: one or more ASCII digits, nothing else.
fn parse_length(value: &[u8]) -> Result<u64, HttpError> {
    const INVALID: HttpError = HttpError::bad_request("invalid content-length");
    let digits = trim(value);
    if digits.is_empty() {
        return Err(INVALID);
    }
    // Digits folded straight in (no UTF-8 check and `str::parse` per PUT);
    // anything but a digit, or a length past u64, is refused.
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(INVALID);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(INVALID)
    })
}

/// Comma-separated tokens of a header value, trimmed; non-UTF-8 ones are
/// kept as a token nothing matches.
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
        .map(|t| std::str::from_utf8(t).unwrap_or("\u{fffd}"))
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !b.is_ascii_whitespace());
    let end = value.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(s), Some(e)) => &value[s..=e],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Head<'_>, HttpError> {
        let end = find_head_end(raw, 0).expect("complete head");
        parse_head(raw, end)
    }

    #[test]
    fn head_end_is_found_across_scans() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(find_head_end(&raw[..20], 0), None);
        assert_eq!(find_head_end(raw, 20), Some(raw.len() - 4));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\n", 0), Some(16));
    }

    #[test]
    fn keep_alive_defaults_follow_the_version() {
        let h = parse(b"GET /kv/a HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        assert_eq!(h.framing, Framing::Empty);
        let h = parse(b"GET /kv/a HTTP/1.0\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        let h = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn lengths_and_codings_are_checked() {
        let h = parse(b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        let h = parse(b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        for bad in [
            &b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().status,
                400,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let max =
            parse(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 018446744073709551615\r\n\r\n");
        assert_eq!(max.unwrap().framing, Framing::Length(u64::MAX));
        let same =
            parse(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(same.unwrap().framing, Framing::Length(2));
    }

    #[test]
    fn field_names_match_in_any_case_and_nothing_else() {
        for (name, lower) in [
            ("Content-Length", "content-length"),
            ("CONTENT-LENGTH", "content-length"),
            ("content-lengtH", "content-length"),
            ("Transfer-Encoding", "transfer-encoding"),
            ("TRANSFER-ENCODINg", "transfer-encoding"),
            ("Connection", "connection"),
            ("eXpEcT", "expect"),
            ("HOST", "host"),
        ] {
            assert!(is_name(name.as_bytes(), lower.as_bytes()), "{name}");
            assert_eq!(
                is_name(name.as_bytes(), lower.as_bytes()),
                name.eq_ignore_ascii_case(lower)
            );
        }
        for (name, lower) in [
            ("Content_Length", "content-length"),
            ("Content\rLength", "content-length"),
            ("Content\x0dLength", "content-length"),
            ("content-lengti", "content-length"),
            ("Transfer-Encodinf", "transfer-encoding"),
            ("transfer-encodin", "transfer-encoding"),
            ("h0st", "host"),
            ("hos", "host"),
            ("expecT!", "expect"),
            ("\u{c3}xpect", "expect"),
        ] {
            assert!(!is_name(name.as_bytes(), lower.as_bytes()), "{name:?}");
        }
        // Every byte against every letter and `-`: only the two cases match.
        for b in 0..=255u8 {
            for want in b"az-".iter().copied() {
                let name = [b, b'o', b's', b't'];
                let lower = [want, b'o', b's', b't'];
                assert_eq!(
                    is_name(&name, &lower),
                    b.to_ascii_lowercase() == want,
                    "{b:#x} vs {want}"
                );
            }
        }
    }

    #[test]
    fn expect_continue_is_recognised() {
        let h = parse(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(h.unwrap().expect_continue);
        let e = parse(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n").unwrap_err();
        assert_eq!(e.status, 417);
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused() {
        assert_eq!(
            parse(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(parse(b"G@T / HTTP/1.1\r\n\r\n").unwrap_err().status, 400);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=HEADERS_MAX {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).unwrap_err().status, 431);
        let long_line = vec![b'a'; HEAD_BYTES_MAX];
        assert_eq!(check_partial_head(&long_line).unwrap_err().status, 414);
        let mut long_fields = b"GET / HTTP/1.1\r\n".to_vec();
        long_fields.resize(HEAD_BYTES_MAX, b'a');
        assert_eq!(check_partial_head(&long_fields).unwrap_err().status, 431);
        assert!(check_partial_head(&long_fields[..100]).is_ok());
    }
}
