//! The `Date` response header (IMF-fixdate), formatted once per second.
//!
//! Wall-clock time is read only when the loop's clock has moved past the
//! second the cached text was made for, so responses cost no clock reads.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_BYTES: usize = 29;

/// The cached `Date` value.
pub struct DateCache {
    text: [u8; DATE_BYTES],
    refresh_at: Option<Instant>,
}

impl DateCache {
    /// A cache that formats on first use.
    pub fn new() -> DateCache {
        DateCache {
            text: [b' '; DATE_BYTES],
            refresh_at: None,
        }
    }

    /// The date for loop time `now`.
    pub fn get(&mut self, now: Instant) -> &[u8; DATE_BYTES] {
        if self.refresh_at.is_none_or(|at| now >= at) {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            self.text = format_imf(since_epoch.as_secs());
            let to_next_second =
                Duration::from_nanos(1_000_000_000 - u64::from(since_epoch.subsec_nanos()));
            self.refresh_at = Some(now + to_next_second);
        }
        &self.text
    }
}

/// Formats seconds since the Unix epoch as an IMF-fixdate.
pub fn format_imf(unix_secs: u64) -> [u8; DATE_BYTES] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = [b' '; DATE_BYTES];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3] = b',';
    put2(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    put2(&mut out[12..14], year / 100);
    put2(&mut out[14..16], year % 100);
    put2(&mut out[17..19], secs_of_day / 3600);
    out[19] = b':';
    put2(&mut out[20..22], secs_of_day / 60 % 60);
    out[22] = b':';
    put2(&mut out[23..25], secs_of_day % 60);
    out[26..29].copy_from_slice(b"GMT");
    out
}

fn put2(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(&format_imf(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_imf(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_imf(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format_imf(4_102_444_799), b"Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn cache_refreshes_after_a_second() {
        let mut cache = DateCache::new();
        let t0 = Instant::now();
        let first = *cache.get(t0);
        assert_eq!(&first[26..], b"GMT");
        assert!(cache
            .refresh_at
            .is_some_and(|at| at <= t0 + Duration::from_secs(1)));
    }
}
