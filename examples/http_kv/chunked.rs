//! Incremental decoding of `Transfer-Encoding: chunked` request bodies.
//!
//! The decoder is fed whatever bytes have arrived, consumes what it can,
//! appends chunk data to the body, and remembers where it stopped, so a body
//! may arrive in any split. Chunk-size lines, trailers and the decoded body
//! are all bounded.

use crate::http::HttpError;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;
/// Most trailer bytes accepted after the last chunk.
pub const TRAILER_BYTES_MAX: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data { remaining_bytes: u64 },
    DataEnd,
    Trailer { seen_bytes: usize },
    Done,
}

/// Where a chunked body is in its decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> ChunkedDecoder {
        ChunkedDecoder { state: State::Size }
    }
}

/// A body over its limit.
pub const TOO_LARGE: HttpError = HttpError {
    status: 413,
    reason: "body too large",
};

impl ChunkedDecoder {
    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending data to `body` (at most
    /// `body_max_bytes` in all). Returns the bytes of `input` consumed; stops
    /// early once done, so a pipelined request after the body stays unread.
    pub fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        body_max_bytes: usize,
    ) -> Result<usize, HttpError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let used = match self.state {
                State::Done => return Ok(pos),
                State::Size => self.size_line(rest, body.len(), body_max_bytes)?,
                State::Data { remaining_bytes } => {
                    let take = rest
                        .len()
                        .min(usize::try_from(remaining_bytes).unwrap_or(usize::MAX));
                    body.extend_from_slice(&rest[..take]);
                    let remaining_bytes = remaining_bytes - take as u64;
                    if remaining_bytes == 0 {
                        self.state = State::DataEnd;
                    } else {
                        self.state = State::Data { remaining_bytes };
                    }
                    take
                }
                State::DataEnd => self.data_end(rest)?,
                State::Trailer { seen_bytes } => self.trailer_line(rest, seen_bytes)?,
            };
            if used == 0 {
                return Ok(pos);
            }
            pos += used;
        }
    }

    fn size_line(
        &mut self,
        rest: &[u8],
        body_len: usize,
        body_max_bytes: usize,
    ) -> Result<usize, HttpError> {
        const BAD: HttpError = HttpError::bad_request("invalid chunk size");
        if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(BAD);
        }
        match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete((used, size))) => {
                let total = (body_len as u64).saturating_add(size);
                if total > body_max_bytes as u64 {
                    return Err(TOO_LARGE);
                }
                self.state = if size == 0 {
                    State::Trailer { seen_bytes: 0 }
                } else {
                    State::Data {
                        remaining_bytes: size,
                    }
                };
                Ok(used)
            }
            Ok(httparse::Status::Partial) if rest.len() < CHUNK_LINE_BYTES_MAX => Ok(0),
            Ok(httparse::Status::Partial) | Err(_) => Err(BAD),
        }
    }

    fn data_end(&mut self, rest: &[u8]) -> Result<usize, HttpError> {
        if rest.len() < 2 {
            if rest.first().is_some_and(|&b| b != b'\r') {
                return Err(HttpError::bad_request("chunk not followed by CRLF"));
            }
            return Ok(0);
        }
        if &rest[..2] != b"\r\n" {
            return Err(HttpError::bad_request("chunk not followed by CRLF"));
        }
        self.state = State::Size;
        Ok(2)
    }

    /// One trailer line (ignored); the empty line ends the body.
    fn trailer_line(&mut self, rest: &[u8], seen_bytes: usize) -> Result<usize, HttpError> {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if seen_bytes + rest.len() > TRAILER_BYTES_MAX {
                return Err(HttpError {
                    status: 431,
                    reason: "trailers too large",
                });
            }
            return Ok(0);
        };
        let line = &rest[..nl];
        let seen_bytes = seen_bytes + nl + 1;
        if seen_bytes > TRAILER_BYTES_MAX {
            return Err(HttpError {
                status: 431,
                reason: "trailers too large",
            });
        }
        if line.is_empty() || line == b"\r" {
            self.state = State::Done;
        } else {
            self.state = State::Trailer { seen_bytes };
        }
        Ok(nl + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(raw: &[u8], piece: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut dec = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut buffered: Vec<u8> = Vec::new();
        let mut consumed = 0;
        for part in raw.chunks(piece) {
            buffered.extend_from_slice(part);
            let used = dec.decode(&buffered, &mut body, 1 << 20)?;
            buffered.drain(..used);
            consumed += used;
            if dec.is_done() {
                break;
            }
        }
        assert!(dec.is_done(), "body incomplete");
        Ok((body, consumed))
    }

    #[test]
    fn decodes_in_any_split() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET";
        for piece in 1..raw.len() {
            let (body, consumed) = decode_in_pieces(raw, piece).unwrap();
            assert_eq!(body, b"hello world");
            assert_eq!(consumed, raw.len() - 3, "stops before the next request");
        }
    }

    #[test]
    fn refuses_bad_framing() {
        for bad in [
            &b"z\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"fffffffffffffffff\r\n",
        ] {
            let mut dec = ChunkedDecoder::default();
            let err = dec.decode(bad, &mut Vec::new(), 1 << 20).unwrap_err();
            assert_eq!(err.status, 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn limits_the_body_and_trailers() {
        let mut dec = ChunkedDecoder::default();
        let err = dec.decode(b"11\r\n", &mut Vec::new(), 16).unwrap_err();
        assert_eq!(err.status, 413);
        let mut dec = ChunkedDecoder::default();
        let mut raw = b"0\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'a', TRAILER_BYTES_MAX + 1));
        assert_eq!(
            dec.decode(&raw, &mut Vec::new(), 16).unwrap_err().status,
            431
        );
        let mut dec = ChunkedDecoder::default();
        let long = vec![b'1'; CHUNK_LINE_BYTES_MAX];
        assert_eq!(
            dec.decode(&long, &mut Vec::new(), 16).unwrap_err().status,
            400
        );
    }
}
