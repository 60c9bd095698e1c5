//! The `date` response header, formatted at most once per second, as
//! `http_kv` does.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of an IMF-fixdate (`Thu, 01 Jan 1970 00:00:00 GMT`).
pub const DATE_BYTES: usize = 29;

/// The current date header text, refreshed when the second changes.
///
/// ```
/// let mut cache = ringvisor_peers::date::DateCache::default();
/// assert!(cache.get().ends_with(b" GMT"));
/// ```
#[derive(Default)]
pub struct DateCache {
    secs: u64,
    text: [u8; DATE_BYTES],
}

impl DateCache {
    /// The header text for now.
    pub fn get(&mut self) -> &[u8; DATE_BYTES] {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.secs || self.text[0] == 0 {
            self.secs = secs;
            self.text = format_imf(secs);
        }
        &self.text
    }
}

/// Formats seconds since the epoch as an IMF-fixdate.
///
/// ```
/// let text = ringvisor_peers::date::format_imf(784_111_777);
/// assert_eq!(&text, b"Sun, 06 Nov 1994 08:49:37 GMT");
/// ```
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
/// (Howard Hinnant's `civil_from_days`).
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
