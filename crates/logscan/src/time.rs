//! Timestamps as the logs write them, turned into milliseconds on one naive clock.
//!
//! Error logs write local time without a zone (nginx, Apache, HAProxy) or UTC (cleargate). The
//! scanner does not guess zones: it reads every timestamp as written, so the times in a report are
//! the times the reader sees in the file. Nothing here allocates or fails loudly; an odd timestamp
//! is simply absent.

/// Milliseconds since 1970-01-01 00:00:00 on the clock the log was written in.
pub type Millis = i64;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date and time of `ms`: (year, month, day, hour, minute, second).
pub fn civil(ms: Millis) -> (i64, u32, u32, u32, u32, u32) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `2024-05-01 10:00:03`, the one way reports print a time.
pub fn format(ms: Millis) -> String {
    let (y, mo, d, h, mi, s) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

pub(crate) fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

/// `Jan`..`Dec` to 1..12.
pub(crate) fn month(b: &[u8]) -> Option<u32> {
    const NAMES: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    NAMES.iter().position(|m| &m[..] == b).map(|i| i as u32 + 1)
}

/// Builds the timestamp after checking ranges, so garbage digits give `None`, not a wild date.
pub(crate) fn make(
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    ms: u32,
) -> Option<Millis> {
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some(
        ((days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec)) * 1000)
            + i64::from(ms),
    )
}

/// `HH:MM:SS` at the start of `b`.
pub(crate) fn hms(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    Some((digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?))
}

/// Milliseconds from a fraction written after a dot (`123`, `123456`): the first three digits.
pub(crate) fn fraction_ms(b: &[u8]) -> u32 {
    let mut ms = 0;
    for i in 0..3 {
        let d = b
            .get(i)
            .filter(|c| c.is_ascii_digit())
            .map_or(0, |c| c - b'0');
        ms = ms * 10 + u32::from(d);
    }
    ms
}

/// `2026-11-23T10:04:05.123Z`, also with a space for the `T`, `/` between the date's parts, a zone
/// or no fraction: the first 19 characters and the milliseconds, read as written (the zone is not
/// applied, like every other timestamp here).
pub(crate) fn iso(t: &[u8]) -> Option<Millis> {
    if t.len() < 19 || t[4] != t[7] || !matches!(t[4], b'-' | b'/') || !matches!(t[10], b'T' | b' ')
    {
        return None;
    }
    let (h, m, s) = hms(&t[11..19])?;
    let ms = if t.get(19) == Some(&b'.') {
        fraction_ms(&t[20..])
    } else {
        0
    };
    make(
        digits(&t[0..4])?,
        digits(&t[5..7])?,
        digits(&t[8..10])?,
        h,
        m,
        s,
        ms,
    )
}

/// Unix time written as a decimal number, `1796220715.9084802`: seconds, or milliseconds or
/// nanoseconds when the integer part is that large. UTC.
pub(crate) fn unix_number(t: &[u8]) -> Option<Millis> {
    let int_len = t
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(t.len());
    if int_len == 0 || int_len > 19 {
        return None;
    }
    let mut int: i64 = 0;
    for &c in &t[..int_len] {
        int = int * 10 + i64::from(c - b'0');
    }
    let frac = match t.get(int_len) {
        Some(b'.') => i64::from(fraction_ms(&t[int_len + 1..])),
        _ => 0,
    };
    // Seconds until the year 5138, milliseconds until then, nanoseconds beyond.
    let ms = if int < 100_000_000_000 {
        int * 1000 + frac
    } else if int < 100_000_000_000_000 {
        int
    } else {
        int / 1_000_000
    };
    (ms <= 253_402_300_799_999).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_known_dates() {
        let t = make(2024, 5, 1, 10, 0, 3, 114).unwrap();
        assert_eq!(format(t), "2024-05-01 10:00:03");
        assert_eq!(make(1970, 1, 1, 0, 0, 0, 0), Some(0));
        assert_eq!(
            format(make(2000, 2, 29, 23, 59, 59, 0).unwrap()),
            "2000-02-29 23:59:59"
        );
        assert_eq!(make(2024, 13, 1, 0, 0, 0, 0), None);
    }

    #[test]
    fn reads_iso_and_unix_numbers() {
        let t = make(2026, 12, 2, 14, 11, 55, 908).unwrap();
        assert_eq!(iso(b"2026-12-02T14:11:55.908Z"), Some(t));
        assert_eq!(iso(b"2026-12-02T14:11:55.908+0100"), Some(t));
        assert_eq!(iso(b"2026/12/02 14:11:55.908"), Some(t));
        assert_eq!(iso(b"2026-12-02T14:11:55Z"), Some(t - 908));
        assert_eq!(iso(b"2026-12-02"), None);
        assert_eq!(unix_number(b"1796220715.9084802"), Some(1_796_220_715_908));
        assert_eq!(unix_number(b"1796220715"), Some(1_796_220_715_000));
        assert_eq!(unix_number(b"1796220715908.48"), Some(1_796_220_715_908));
        assert_eq!(unix_number(b"1796220715908480200"), Some(1_796_220_715_908));
        assert_eq!(unix_number(b"x"), None);
        assert_eq!(unix_number(b"99999999999999999999"), None);
    }
}
