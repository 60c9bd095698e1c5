//! Keys as requests carry them: short ones inline, so a GET of a short key
//! allocates nothing between the parser and the shard (a malloc and a free
//! were about a twentieth of a pipelined GET's instructions).

use std::fmt;
use std::ops::Deref;

use crate::percent::{self, BadEscape};

/// Longest key kept inline.
pub const KEY_INLINE_BYTES: usize = 30;

/// A key's bytes (1 to [`crate::router::KEY_BYTES_MAX`] of them).
#[derive(Clone, PartialEq, Eq)]
pub enum Key {
    /// Up to [`KEY_INLINE_BYTES`].
    Inline {
        /// Bytes used.
        len: u8,
        /// The bytes, `len` of them used.
        bytes: [u8; KEY_INLINE_BYTES],
    },
    /// Longer keys.
    Heap(Vec<u8>),
}

impl Key {
    /// The percent-decoded `raw` path segment.
    pub fn decode(raw: &[u8]) -> Result<Key, BadEscape> {
        // Decoding never makes a key longer than its encoding.
        if raw.len() > KEY_INLINE_BYTES {
            let mut key = Vec::new();
            percent::decode(raw, &mut key)?;
            return Ok(Key::Heap(key));
        }
        if memchr::memchr(b'%', raw).is_none() {
            // Nothing escaped (the common case): the bytes as they are.
            return Ok(Key::from(raw));
        }
        let mut bytes = [0u8; KEY_INLINE_BYTES];
        let mut len = 0;
        percent::decode_with(raw, |b| {
            bytes[len] = b;
            len += 1;
        })?;
        Ok(Key::Inline {
            len: len as u8,
            bytes,
        })
    }

    /// The bytes as an owned vector (for the map and the log).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Key::Inline { len, bytes } => bytes[..usize::from(len)].to_vec(),
            Key::Heap(key) => key,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(bytes: &[u8]) -> Key {
        if bytes.len() > KEY_INLINE_BYTES {
            return Key::Heap(bytes.to_vec());
        }
        let mut inline = [0u8; KEY_INLINE_BYTES];
        inline[..bytes.len()].copy_from_slice(bytes);
        Key::Inline {
            len: bytes.len() as u8,
            bytes: inline,
        }
    }
}

impl Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(key) => key,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", String::from_utf8_lossy(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_stay_inline_and_long_ones_do_not_and_both_decode() {
        let short = Key::decode(b"a%2Fb").expect("decodes");
        assert!(matches!(short, Key::Inline { len: 3, .. }));
        assert_eq!(&*short, b"a/b");
        let edge = "k".repeat(KEY_INLINE_BYTES);
        assert!(
            matches!(Key::decode(edge.as_bytes()), Ok(Key::Inline { len, .. }) if usize::from(len) == KEY_INLINE_BYTES)
        );
        let long = format!("{edge}%41");
        let key = Key::decode(long.as_bytes()).expect("decodes");
        assert!(matches!(key, Key::Heap(_)));
        assert_eq!(key.len(), KEY_INLINE_BYTES + 1);
        assert_eq!(Key::from(&b"a/b"[..]), short);
        assert_eq!(short.into_vec(), b"a/b".to_vec());
        assert_eq!(Key::decode(b"%zz"), Err(BadEscape));
        assert_eq!(Key::decode(b"%4"), Err(BadEscape));
    }
}
