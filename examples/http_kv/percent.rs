//! Percent-encoding of keys: decoding path segments and query values into
//! arbitrary bytes, and encoding keys for the one-per-line listing.
//!
//! `+` is a literal plus everywhere (RFC 3986), not a space.

/// A `%` not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEscape;

/// Appends the percent-decoded `input` to `out`.
///
/// ```ignore
/// let mut key = Vec::new();
/// decode(b"a%2Fb%00", &mut key).unwrap();
/// assert_eq!(key, b"a/b\0");
/// ```
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), BadEscape> {
    out.reserve(input.len());
    decode_with(input, |b| out.push(b))
}

/// Percent-decodes `input`, handing each decoded byte to `push` in order
/// (never more bytes than `input` has).
pub fn decode_with(input: &[u8], mut push: impl FnMut(u8)) -> Result<(), BadEscape> {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != b'%' {
            push(b);
            i += 1;
            continue;
        }
        let hi = input.get(i + 1).and_then(|&c| hex_value(c));
        let lo = input.get(i + 2).and_then(|&c| hex_value(c));
        match (hi, lo) {
            (Some(hi), Some(lo)) => push(hi << 4 | lo),
            _ => return Err(BadEscape),
        }
        i += 3;
    }
    Ok(())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Appends `key` to `out` for a listing line: printable ASCII other than
/// `%` as is, every other byte (controls, space, newline, non-ASCII) as
/// `%XX`, so each key stays on one line and decodes back exactly.
pub fn encode_for_line(key: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_the_rest() {
        let mut out = Vec::new();
        decode(b"a%2Fb%00%ff+c", &mut out).unwrap();
        assert_eq!(out, b"a/b\0\xff+c");
        for bad in [&b"%"[..], b"%4", b"%zz", b"a%g0"] {
            assert_eq!(decode(bad, &mut Vec::new()), Err(BadEscape));
        }
    }

    #[test]
    fn listing_encoding_round_trips() {
        let key: Vec<u8> = (0..=255).collect();
        let mut line = Vec::new();
        encode_for_line(&key, &mut line);
        assert!(!line.contains(&b'\n') && !line.contains(&b' '));
        let mut back = Vec::new();
        decode(&line, &mut back).unwrap();
        assert_eq!(back, key);
        let mut plain = Vec::new();
        encode_for_line(b"user/42:x", &mut plain);
        assert_eq!(plain, b"user/42:x");
    }
}
