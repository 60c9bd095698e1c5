//! The seeds' `Codec`: bytes to requests (incrementally) and replies to bytes.

/// A frame the codec cannot decode; the connection that sent it is closed
/// after the error is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// Decodes requests from a byte stream and encodes replies.
pub trait Codec: 'static {
    /// A decoded request.
    type Request: 'static;
    /// A reply to encode.
    type Reply: 'static;

    /// Decodes one request from the front of `buf`: `Ok(Some((request,
    /// consumed)))`, `Ok(None)` if the frame is incomplete, or an error for a
    /// bad frame.
    fn decode(&mut self, buf: &[u8]) -> Result<Option<(Self::Request, usize)>, CodecError>;

    /// Appends the encoding of `reply` to `out`.
    fn encode(&mut self, reply: &Self::Reply, out: &mut Vec<u8>);

    /// Appends an error message (a bad frame, or a failed call) to `out`.
    fn encode_error(&mut self, message: &str, out: &mut Vec<u8>);
}

/// Longest line a [`LineCodec`] accepts, newline included.
pub const LINE_LENGTH_MAX: usize = 4096;

type ParseFn<Req> = Box<dyn Fn(&str) -> Result<Req, String>>;

/// One request per `\n`-terminated line (a trailing `\r` is ignored), one
/// reply per line; errors are written as `error: MESSAGE`.
///
/// ```
/// use ringvisor_behaviours::codec::{Codec, LineCodec};
/// let mut codec = LineCodec::new(|line: &str| line.parse::<u32>().map_err(|e| e.to_string()), |n: &u32| n.to_string());
/// assert_eq!(codec.decode(b"42\r\nrest").unwrap(), Some((42, 4)));
/// assert_eq!(codec.decode(b"4").unwrap(), None);
/// let mut out = Vec::new();
/// codec.encode(&7, &mut out);
/// assert_eq!(out, b"7\n");
/// ```
pub struct LineCodec<Req, Rep> {
    parse: ParseFn<Req>,
    format: Box<dyn Fn(&Rep) -> String>,
}

impl<Req, Rep> LineCodec<Req, Rep> {
    /// A line codec from a parser and a formatter.
    pub fn new(
        parse: impl Fn(&str) -> Result<Req, String> + 'static,
        format: impl Fn(&Rep) -> String + 'static,
    ) -> Self {
        LineCodec {
            parse: Box::new(parse),
            format: Box::new(format),
        }
    }
}

impl<Req: 'static, Rep: 'static> Codec for LineCodec<Req, Rep> {
    type Request = Req;
    type Reply = Rep;

    fn decode(&mut self, buf: &[u8]) -> Result<Option<(Req, usize)>, CodecError> {
        let Some(end) = buf.iter().position(|b| *b == b'\n') else {
            if buf.len() >= LINE_LENGTH_MAX {
                return Err(CodecError(format!(
                    "line longer than {LINE_LENGTH_MAX} bytes"
                )));
            }
            return Ok(None);
        };
        if end >= LINE_LENGTH_MAX {
            return Err(CodecError(format!(
                "line longer than {LINE_LENGTH_MAX} bytes"
            )));
        }
        let line =
            std::str::from_utf8(&buf[..end]).map_err(|_| CodecError("line is not UTF-8".into()))?;
        let line = line.strip_suffix('\r').unwrap_or(line).trim();
        let request = (self.parse)(line).map_err(CodecError)?;
        Ok(Some((request, end + 1)))
    }

    fn encode(&mut self, reply: &Rep, out: &mut Vec<u8>) {
        out.extend_from_slice((self.format)(reply).as_bytes());
        out.push(b'\n');
    }

    fn encode_error(&mut self, message: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"error: ");
        out.extend_from_slice(message.as_bytes());
        out.push(b'\n');
    }
}
