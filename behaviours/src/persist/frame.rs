//! Log record framing: `len u32 | crc32c u32 | seq u64 | payload`, little
//! endian. The CRC covers `len`, `seq` and the payload, so a torn or flipped
//! header fails the check like a torn payload does.
//!
//! Records are built in place at the end of a batch buffer ([`begin`] leaves
//! room for the header, the caller encodes the payload straight into the
//! buffer, [`finish`] fills the header), so appending copies nothing.

/// Bytes of header before each record's payload.
///
/// ```
/// assert_eq!(ringvisor_behaviours::persist::RECORD_HEADER_BYTES, 16);
/// ```
pub const RECORD_HEADER_BYTES: usize = 16;

const LEN_AT: usize = 0;
const CRC_AT: usize = 4;
const SEQ_AT: usize = 8;

/// What sits at an offset of a log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A valid record; the next one starts at `next`.
    Record {
        seq: u64,
        payload: &'a [u8],
        next: usize,
    },
    /// Fewer bytes than the header or the length field announce.
    Incomplete,
    /// A complete record that fails its checks.
    Bad(&'static str),
}

/// Reserves a header at the end of `buf`; returns where the record starts.
pub(crate) fn begin(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    start
}

/// Fills the header of the record that starts at `start` and runs to the end
/// of `buf`. Returns the payload length.
pub(crate) fn finish(buf: &mut [u8], start: usize, seq: u64) -> usize {
    let payload_bytes = buf.len() - start - RECORD_HEADER_BYTES;
    assert!(payload_bytes <= u32::MAX as usize, "record length fits u32");
    let record = &mut buf[start..];
    record[LEN_AT..CRC_AT].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    record[SEQ_AT..RECORD_HEADER_BYTES].copy_from_slice(&seq.to_le_bytes());
    let crc = checksum(record);
    record[CRC_AT..SEQ_AT].copy_from_slice(&crc.to_le_bytes());
    payload_bytes
}

/// Appends one whole record to `out`.
#[cfg(test)]
pub(crate) fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let start = begin(out);
    out.extend_from_slice(payload);
    finish(out, start, seq);
}

fn checksum(record: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&record[LEN_AT..CRC_AT]);
    crc32c::crc32c_append(crc, &record[SEQ_AT..])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the record at `offset`. A length above `record_bytes_max` is
/// `Bad`, not `Incomplete`, so a flipped length bit cannot make the reader
/// wait for gigabytes that will never come.
pub(crate) fn decode_at(buf: &[u8], offset: usize, record_bytes_max: usize) -> Decoded<'_> {
    debug_assert!(offset <= buf.len());
    let rest = &buf[offset..];
    if rest.len() < RECORD_HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let payload_bytes = u32_at(rest, LEN_AT) as usize;
    if payload_bytes > record_bytes_max {
        return Decoded::Bad("length above record_bytes_max");
    }
    let record_bytes = RECORD_HEADER_BYTES + payload_bytes;
    if rest.len() < record_bytes {
        return Decoded::Incomplete;
    }
    let record = &rest[..record_bytes];
    if checksum(record) != u32_at(record, CRC_AT) {
        return Decoded::Bad("checksum mismatch");
    }
    let seq = u64_at(record, SEQ_AT);
    if seq == 0 {
        return Decoded::Bad("sequence number 0");
    }
    Decoded::Record {
        seq,
        payload: &record[RECORD_HEADER_BYTES..],
        next: offset + record_bytes,
    }
}

/// Looks for any valid record starting after `from` whose sequence number
/// is above `seq_after`: its presence turns a bad record into corruption
/// rather than a torn tail. Cheap checks (length, plausible seq) come before
/// the CRC, so the scan costs about one pass over the bytes.
pub(crate) fn find_valid_after(
    buf: &[u8],
    from: usize,
    seq_after: u64,
    record_bytes_max: usize,
) -> Option<(usize, u64)> {
    let seq_limit = seq_after.saturating_add((buf.len() / RECORD_HEADER_BYTES) as u64 + 1);
    let last_start = buf.len().checked_sub(RECORD_HEADER_BYTES)?;
    for offset in (from + 1)..=last_start {
        let seq = u64_at(buf, offset + SEQ_AT);
        if seq <= seq_after || seq > seq_limit {
            continue;
        }
        if let Decoded::Record { seq, .. } = decode_at(buf, offset, record_bytes_max) {
            return Some((offset, seq));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_payload_round_trips() {
        let mut buf = Vec::new();
        encode(7, b"", &mut buf);
        assert_eq!(buf.len(), RECORD_HEADER_BYTES);
        let expected = Decoded::Record {
            seq: 7,
            payload: b"",
            next: RECORD_HEADER_BYTES,
        };
        assert_eq!(decode_at(&buf, 0, 16), expected);
    }

    #[test]
    fn all_zero_bytes_are_not_a_record() {
        let zeros = [0u8; 64];
        assert!(matches!(decode_at(&zeros, 0, 1024), Decoded::Bad(_)));
    }

    #[test]
    fn length_above_limit_is_bad_not_incomplete() {
        let mut buf = Vec::new();
        encode(1, &[9u8; 100], &mut buf);
        assert_eq!(
            decode_at(&buf, 0, 99),
            Decoded::Bad("length above record_bytes_max")
        );
    }

    #[test]
    fn scan_finds_the_record_after_a_damaged_one() {
        let mut buf = Vec::new();
        encode(1, b"first", &mut buf);
        let second_at = buf.len();
        encode(2, b"second", &mut buf);
        buf[3] ^= 0x40; // length of record 1: now huge
        assert!(matches!(decode_at(&buf, 0, 1024), Decoded::Bad(_)));
        assert_eq!(find_valid_after(&buf, 0, 0, 1024), Some((second_at, 2)));
        assert_eq!(find_valid_after(&buf, 0, 2, 1024), None);
    }

    proptest! {
        #[test]
        fn records_round_trip(
            records in proptest::collection::vec(
                (1u64..u64::MAX, proptest::collection::vec(any::<u8>(), 0..300)),
                1..20,
            )
        ) {
            let mut buf = Vec::new();
            for (seq, payload) in &records {
                encode(*seq, payload, &mut buf);
            }
            let mut offset = 0;
            for (seq, payload) in &records {
                match decode_at(&buf, offset, 300) {
                    Decoded::Record { seq: got, payload: bytes, next } => {
                        prop_assert_eq!(got, *seq);
                        prop_assert_eq!(bytes, &payload[..]);
                        offset = next;
                    }
                    other => prop_assert!(false, "decoded {:?}", other),
                }
            }
            prop_assert_eq!(offset, buf.len());
        }

        #[test]
        fn any_single_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            bit in 0usize..(8 * (RECORD_HEADER_BYTES + 64)),
        ) {
            let mut buf = Vec::new();
            encode(42, &payload, &mut buf);
            let bit = bit % (8 * buf.len());
            buf[bit / 8] ^= 1 << (bit % 8);
            let decoded = decode_at(&buf, 0, 64);
            prop_assert!(!matches!(decoded, Decoded::Record { .. }), "accepted {:?}", decoded);
        }
    }
}
