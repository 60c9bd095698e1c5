//! Keys as requests carry them and shards keep them: short ones inline, so a
//! GET of a short key allocates nothing between the parser and the shard (a
//! malloc and a free were about a twentieth of a pipelined GET's
//! instructions), and a shard's map holds them without a heap block each.
//!
//! Invariants: a key is `Inline` exactly when it has at most
//! [`KEY_INLINE_BYTES`] bytes, and an inline key's unused bytes are zero.
//! Both make the order of keys that of their bytes, compared a word at a
//! time (see [`Key::cmp`](Ord::cmp)), and equality that of their bytes.

use std::borrow::Borrow;
use std::cmp::Ordering;
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
            if key.len() <= KEY_INLINE_BYTES {
                // Escapes made it short: inline, as every short key is.
                return Ok(Key::from(&key[..]));
            }
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

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self
    }
}

/// The big-endian word of an inline key's bytes from `at` (zero past
/// the end): compared as integers, words order as their bytes do.
#[inline]
fn word(bytes: &[u8; KEY_INLINE_BYTES], at: usize) -> u64 {
    let end = (at + 8).min(KEY_INLINE_BYTES);
    let mut word = [0u8; 8];
    word[..end - at].copy_from_slice(&bytes[at..end]);
    u64::from_be_bytes(word)
}

impl Ord for Key {
    /// The order of the keys' bytes (as `[u8]` compares them, so a map of
    /// keys can be searched with a `&[u8]` too). Two inline keys compare a
    /// word at a time, without a `memcmp` call: their zero padding makes
    /// the padded arrays order as the keys do, except that a key ending in
    /// zero bytes ties with the key without them, which the length breaks.
    #[inline]
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (
                Key::Inline { len, bytes },
                Key::Inline {
                    len: other_len,
                    bytes: other_bytes,
                },
            ) => {
                debug_assert!(bytes[usize::from(*len)..].iter().all(|&b| b == 0));
                debug_assert!(other_bytes[usize::from(*other_len)..]
                    .iter()
                    .all(|&b| b == 0));
                // Keys mostly differ in their first word.
                for at in (0..KEY_INLINE_BYTES).step_by(8) {
                    match word(bytes, at).cmp(&word(other_bytes, at)) {
                        Ordering::Equal => {}
                        unequal => return unequal,
                    }
                }
                len.cmp(other_len)
            }
            _ => (**self).cmp(&**other),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
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
        assert_eq!(Key::decode(b"%zz"), Err(BadEscape));
        assert_eq!(Key::decode(b"%4"), Err(BadEscape));
        let escaped_short = Key::decode("%41".repeat(KEY_INLINE_BYTES).as_bytes()).expect("ok");
        assert!(matches!(escaped_short, Key::Inline { .. }));
        assert_eq!(
            escaped_short,
            Key::from("A".repeat(KEY_INLINE_BYTES).as_bytes())
        );
    }

    #[test]
    fn keys_order_as_their_bytes() {
        let samples: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\0".to_vec(),
            b"\0\0".to_vec(),
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\0b".to_vec(),
            b"ab".to_vec(),
            b"key1".to_vec(),
            b"key10".to_vec(),
            b"key9".to_vec(),
            b"\xff".to_vec(),
            vec![b'k'; 15],
            vec![b'k'; 16],
            vec![b'k'; 17],
            vec![b'k'; KEY_INLINE_BYTES],
            vec![b'k'; KEY_INLINE_BYTES + 1],
            [vec![b'k'; KEY_INLINE_BYTES], vec![0]].concat(),
            [vec![b'k'; 16], vec![b'a']].concat(),
            [vec![b'k'; 16], vec![b'z'], vec![0; 5]].concat(),
            [vec![b'k'; 29], vec![b'j']].concat(),
            [vec![b'k'; 29], vec![b'j', 0]].concat(),
        ];
        for a in &samples {
            for b in &samples {
                let (ka, kb) = (Key::from(&a[..]), Key::from(&b[..]));
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
