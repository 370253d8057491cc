//! Tumbling windows on event time: which window of a size a moment falls in,
//! and where it ends. Hours are aligned to UTC; days and weeks (Monday first)
//! to midnight UTC, or to local midnight in the configured IANA time zone, so a
//! zoned day is 23 or 25 hours long on the days daylight saving time changes.
//! Times are milliseconds since the Unix epoch.

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Times within this many ms of the epoch (about 250,000 years) are in
/// chrono's range, so UTC windows are plain arithmetic on them.
const PLAIN_MS: i64 = 8_000_000_000_000_000;

/// The window sizes the processor keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowSize {
    Hour,
    Day,
    Week,
}

impl WindowSize {
    pub fn as_str(&self) -> &'static str {
        match self {
            WindowSize::Hour => "hour",
            WindowSize::Day => "day",
            WindowSize::Week => "week",
        }
    }
}

/// Window arithmetic in one zone (UTC when `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calendar {
    pub zone: Option<Tz>,
}

impl Calendar {
    /// `[start, end)` of the `size` window holding `t`.
    pub fn window(&self, size: WindowSize, t: i64) -> (i64, i64) {
        // UTC days and weeks: what chrono gives below, as arithmetic (1970-01-01 was a Thursday).
        let plain = self.zone.is_none() && t.abs() < PLAIN_MS;
        match size {
            WindowSize::Hour => {
                let start = t.div_euclid(HOUR_MS) * HOUR_MS;
                (start, start + HOUR_MS)
            }
            WindowSize::Day if plain => {
                let day = t.div_euclid(DAY_MS) * DAY_MS;
                (day, day + DAY_MS)
            }
            WindowSize::Week if plain => {
                let days = t.div_euclid(DAY_MS);
                let monday = (days - (days + 3).rem_euclid(7)) * DAY_MS;
                (monday, monday + 7 * DAY_MS)
            }
            WindowSize::Day => {
                let day = self.local_date(t);
                (self.midnight(day), self.midnight(day + Days::new(1)))
            }
            WindowSize::Week => {
                let day = self.local_date(t);
                let monday = day - Days::new(day.weekday().num_days_from_monday() as u64);
                (self.midnight(monday), self.midnight(monday + Days::new(7)))
            }
        }
    }

    /// Hour of day (0–23) and weekday (0 = Monday) of `t` in the zone.
    pub fn hour_and_weekday(&self, t: i64) -> (usize, usize) {
        if self.zone.is_none() && t.abs() < PLAIN_MS {
            return (t.rem_euclid(DAY_MS).div_euclid(HOUR_MS) as usize, (t.div_euclid(DAY_MS) + 3).rem_euclid(7) as usize);
        }
        let utc = utc(t);
        match self.zone {
            Some(tz) => {
                let l = utc.with_timezone(&tz);
                (l.hour() as usize, l.weekday().num_days_from_monday() as usize)
            }
            None => (utc.hour() as usize, utc.weekday().num_days_from_monday() as usize),
        }
    }

    fn local_date(&self, t: i64) -> NaiveDate {
        match self.zone {
            Some(tz) => utc(t).with_timezone(&tz).date_naive(),
            None => utc(t).date_naive(),
        }
    }

    /// The first instant of `day` in the zone. Where the day starts inside a
    /// daylight-saving gap (a few zones move their clocks at midnight), it is
    /// the first local time that exists; where midnight happens twice, the first.
    fn midnight(&self, day: NaiveDate) -> i64 {
        let Some(tz) = self.zone else {
            return day.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
        };
        let mut local = day.and_time(NaiveTime::MIN);
        // Gaps are at most a few hours; step through them a quarter hour at a time.
        for _ in 0..24 {
            if let Some(t) = tz.from_local_datetime(&local).earliest() {
                return t.timestamp_millis();
            }
            local += chrono::Duration::minutes(15);
        }
        // No zone has a gap this long; fall back to UTC midnight.
        day.and_time(NaiveTime::MIN).and_utc().timestamp_millis()
    }
}

/// Milliseconds since the epoch as UTC (clamped into chrono's range).
pub fn utc(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// RFC 3339 with milliseconds only when there are any (stable text for records).
pub fn rfc3339(t: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(t, &mut out);
    // (ASCII only.)
    String::from_utf8(out).unwrap_or_default()
}

/// [`rfc3339`] appended to `out`: `YYYY-MM-DDTHH:MM:SS[.mmm]Z`, as chrono's
/// `to_rfc3339_opts(AutoSi, true)` writes it (tested), by arithmetic for the
/// years 0–9999 (a record has three; chrono's formatting machinery was most
/// of a small record's cost) and by chrono for the others.
pub fn write_rfc3339(t: i64, out: &mut Vec<u8>) {
    // 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z.
    const FROM: i64 = -62_167_219_200_000;
    const UNTIL: i64 = 253_402_300_800_000;
    if !(FROM..UNTIL).contains(&t) {
        out.extend_from_slice(utc(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true).as_bytes());
        return;
    }
    let (days, ms) = (t.div_euclid(DAY_MS), t.rem_euclid(DAY_MS));
    let (y, m, d) = civil_from_days(days);
    let (secs, milli) = (ms / 1000, ms % 1000);
    let two = |out: &mut Vec<u8>, v: i64| out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    two(out, y / 100);
    two(out, y % 100);
    out.push(b'-');
    two(out, m);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, secs / 3600);
    out.push(b':');
    two(out, secs / 60 % 60);
    out.push(b':');
    two(out, secs % 60);
    if milli != 0 {
        out.extend_from_slice(&[b'.', b'0' + (milli / 100) as u8, b'0' + (milli / 10 % 10) as u8, b'0' + (milli % 10) as u8]);
    }
    out.push(b'Z');
}

/// The proleptic Gregorian (year, month, day) of a day number (0 = 1970-01-01),
/// after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn utc_windows_are_aligned() {
        let c = Calendar { zone: None };
        let t = ms("2026-03-11T13:45:10Z");
        assert_eq!(c.window(WindowSize::Hour, t), (ms("2026-03-11T13:00:00Z"), ms("2026-03-11T14:00:00Z")));
        assert_eq!(c.window(WindowSize::Day, t), (ms("2026-03-11T00:00:00Z"), ms("2026-03-12T00:00:00Z")));
        // 2026-03-11 is a Wednesday.
        assert_eq!(c.window(WindowSize::Week, t), (ms("2026-03-09T00:00:00Z"), ms("2026-03-16T00:00:00Z")));
        assert_eq!(c.hour_and_weekday(t), (13, 2));
    }

    #[test]
    fn utc_arithmetic_is_what_chrono_gives() {
        let c = Calendar { zone: None };
        // The slow path: a zone whose offset is always zero.
        let z = Calendar { zone: Some(chrono_tz::Etc::UTC) };
        let mut t = -400 * 86_400_000 * 365;
        while t < 400 * 86_400_000 * 365 {
            for size in [WindowSize::Hour, WindowSize::Day, WindowSize::Week] {
                assert_eq!(c.window(size, t), z.window(size, t), "{size:?} {t}");
            }
            assert_eq!(c.hour_and_weekday(t), z.hour_and_weekday(t), "{t}");
            t += 3_599_999 * 61 + 12_345;
        }
        for t in [0, -1, 1, HOUR_MS - 1, DAY_MS, -DAY_MS, -DAY_MS - 1, PLAIN_MS - 1, 1 - PLAIN_MS] {
            for size in [WindowSize::Hour, WindowSize::Day, WindowSize::Week] {
                assert_eq!(c.window(size, t), z.window(size, t), "{size:?} {t}");
            }
            assert_eq!(c.hour_and_weekday(t), z.hour_and_weekday(t), "{t}");
        }
    }

    #[test]
    fn rfc3339_is_what_chrono_writes() {
        let chrono = |t: i64| utc(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let mut t: i64 = -63_000_000_000_000;
        while t < 254_000_000_000_000 {
            for t in [t, t + 1, t - 1, t + 999, t.div_euclid(DAY_MS) * DAY_MS] {
                assert_eq!(rfc3339(t), chrono(t), "{t}");
            }
            t += 3_599_999 * 24 * 17 + 12_345;
        }
        for t in
            [0, -1, 1, 999, 1000, -62_167_219_200_000, -62_167_219_200_001, 253_402_300_799_999, 253_402_300_800_000, i64::MIN, i64::MAX]
        {
            assert_eq!(rfc3339(t), chrono(t), "{t}");
        }
    }

    #[test]
    fn zoned_days_follow_daylight_saving_time() {
        let c = Calendar { zone: Some(chrono_tz::Europe::Berlin) };
        // Clocks go forward on 2026-03-29 at 02:00 local: a 23-hour day.
        let (s, e) = c.window(WindowSize::Day, ms("2026-03-29T12:00:00Z"));
        assert_eq!((s, e), (ms("2026-03-28T23:00:00Z"), ms("2026-03-29T22:00:00Z")));
        assert_eq!(e - s, 23 * HOUR_MS);
        // And back on 2026-10-25: 25 hours.
        let (s, e) = c.window(WindowSize::Day, ms("2026-10-25T12:00:00Z"));
        assert_eq!(e - s, 25 * HOUR_MS);
        // 23:30 UTC on the 28th is already the 29th in Berlin.
        assert_eq!(c.window(WindowSize::Day, ms("2026-03-28T23:30:00Z")).0, ms("2026-03-28T23:00:00Z"));
        assert_eq!(c.hour_and_weekday(ms("2026-03-28T23:30:00Z")), (0, 6));
    }

    #[test]
    fn a_day_starting_in_a_gap_starts_when_the_clock_resumes() {
        // Santiago moved its clocks forward at midnight on 2026-09-06 (00:00 → 01:00).
        let c = Calendar { zone: Some(chrono_tz::America::Santiago) };
        let (s, _) = c.window(WindowSize::Day, ms("2026-09-06T12:00:00Z"));
        let local = utc(s).with_timezone(&chrono_tz::America::Santiago);
        assert_eq!(local.date_naive(), NaiveDate::from_ymd_opt(2026, 9, 6).unwrap());
        assert!(local.hour() <= 1, "{local}");
    }
}
