//! A shared log record's payload: `stream u32 | stream seq u64 | entry`
//! (little endian), inside the usual frame (whose CRC covers it all).

use super::super::wal::STREAM_PREFIX_BYTES;

/// `(stream, stream seq, entry)` of a shared record's payload, or `None` if
/// it is shorter than the prefix.
pub(crate) fn split_prefix(payload: &[u8]) -> Option<(u32, u64, &[u8])> {
    let (prefix, entry) = payload.split_at_checked(STREAM_PREFIX_BYTES)?;
    let stream = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(prefix[4..].try_into().expect("8 bytes"));
    Some((stream, seq, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trips_and_short_payloads_are_refused() {
        let mut payload = 7u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&42u64.to_le_bytes());
        payload.extend_from_slice(b"entry");
        assert_eq!(split_prefix(&payload), Some((7, 42, &b"entry"[..])));
        assert_eq!(split_prefix(&payload[..11]), None);
    }
}
