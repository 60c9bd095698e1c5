//! The caller's encoding of entries and snapshots. The engine stores bytes;
//! a [`Codec`] turns the caller's values into those bytes and back.

use std::fmt;

/// Encodes values of `T` into log entries (or snapshots) and decodes them.
///
/// `encode` appends to `out`, which is the engine's batch buffer, so encoding
/// straight into it costs no extra copy (see [`super::Store::append_encoded`]).
///
/// ```
/// use ringvisor_behaviours::persist::{Codec, DecodeError};
///
/// struct Add;
/// impl Codec<i64> for Add {
///     fn encode(value: &i64, out: &mut Vec<u8>) {
///         out.extend_from_slice(&value.to_le_bytes());
///     }
///     fn decode(bytes: &[u8]) -> Result<i64, DecodeError> {
///         let bytes: [u8; 8] = bytes.try_into().map_err(|_| DecodeError::new("expected 8 bytes"))?;
///         Ok(i64::from_le_bytes(bytes))
///     }
/// }
///
/// let mut buf = Vec::new();
/// Add::encode(&-5, &mut buf);
/// assert_eq!(Add::decode(&buf).unwrap(), -5);
/// ```
pub trait Codec<T> {
    /// Appends the encoding of `value` to `out`.
    fn encode(value: &T, out: &mut Vec<u8>);
    /// Decodes one value from exactly `bytes`.
    fn decode(bytes: &[u8]) -> Result<T, DecodeError>;
}

/// Why bytes did not decode.
///
/// ```
/// use ringvisor_behaviours::persist::DecodeError;
/// let e = DecodeError::new("bad tag 7");
/// assert_eq!(e.to_string(), "decode error: bad tag 7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    /// An error with a message saying what was wrong.
    pub fn new(message: impl Into<String>) -> DecodeError {
        DecodeError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "decode error: {}", self.message)
    }
}

impl std::error::Error for DecodeError {}

/// The identity codec: entries are the bytes themselves.
///
/// ```
/// use ringvisor_behaviours::persist::{BytesCodec, Codec};
/// let mut out = Vec::new();
/// BytesCodec::encode(&b"abc".to_vec(), &mut out);
/// assert_eq!(BytesCodec::decode(&out).unwrap(), b"abc");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec<Vec<u8>> for BytesCodec {
    fn encode(value: &Vec<u8>, out: &mut Vec<u8>) {
        out.extend_from_slice(value);
    }

    fn decode(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(bytes.to_vec())
    }
}
