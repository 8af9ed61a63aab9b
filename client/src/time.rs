//! Wall-clock formatting without a date crate: RFC 3339 timestamps in UTC
//! (Go's `RFC3339Nano` and Docker's fixed-width variant) and Docker's
//! human-readable durations ("5 seconds", "About an hour").
//!
//! A missing protobuf timestamp stands for Go's zero time, which Docker prints
//! as `0001-01-01T00:00:00Z`; every function here is total (no panics on
//! out-of-range input) and takes "now" as a parameter so it can be tested.

use std::time::{Duration, SystemTime};

use prost_types::Timestamp;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// Seconds from 0001-01-01T00:00:00Z (Go's zero time) to the Unix epoch.
const ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// How to print the fractional second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fraction {
    /// Go's `RFC3339Nano`: trailing zeros trimmed, no dot for whole seconds.
    Trimmed,
    /// Docker's `RFC3339NanoFixed`: always nine digits (aligned log prefixes).
    Fixed,
}

/// Formats `ts` (or Go's zero time for `None`) as RFC 3339 in UTC.
pub fn rfc3339(ts: Option<&Timestamp>, fraction: Fraction) -> String {
    let (seconds, nanos) = match ts {
        Some(ts) => normalize(ts),
        None => (ZERO_TIME_SECONDS, 0),
    };
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let secs_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    match fraction {
        Fraction::Fixed => out.push_str(&format!(".{nanos:09}")),
        Fraction::Trimmed if nanos != 0 => {
            let digits = format!("{nanos:09}");
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        Fraction::Trimmed => {}
    }
    out.push('Z');
    out
}

/// How long ago `ts` was, as of `now`; zero for missing or future times.
pub fn elapsed(ts: Option<&Timestamp>, now: SystemTime) -> Duration {
    let Some(ts) = ts else {
        return Duration::ZERO;
    };
    let (seconds, nanos) = normalize(ts);
    let then = i128::from(seconds) * i128::from(NANOS_PER_SECOND) + i128::from(nanos);
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    let diff = now.saturating_sub(then).max(0);
    Duration::from_nanos(u64::try_from(diff).unwrap_or(u64::MAX))
}

/// Docker's `HumanDuration` (go-units): "Less than a second", "1 second",
/// "42 seconds", "About a minute", "5 minutes", "About an hour", "3 hours",
/// "4 days", "2 weeks", "3 months", "2 years".
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    // go-units rounds hours to the nearest one.
    let hours = (seconds + 1800) / 3600;
    match () {
        () if seconds < 1 => "Less than a second".to_owned(),
        () if seconds == 1 => "1 second".to_owned(),
        () if seconds < 60 => format!("{seconds} seconds"),
        () if minutes == 1 => "About a minute".to_owned(),
        () if minutes < 60 => format!("{minutes} minutes"),
        () if hours == 1 => "About an hour".to_owned(),
        () if hours < 48 => format!("{hours} hours"),
        () if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        () if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        () if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        () => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// "5 seconds ago", relative to `now`.
pub fn ago(ts: Option<&Timestamp>, now: SystemTime) -> String {
    format!("{} ago", human_duration(elapsed(ts, now)))
}

/// Seconds and nanoseconds with the nanoseconds in `0..1e9`.
fn normalize(ts: &Timestamp) -> (i64, i64) {
    let nanos = i64::from(ts.nanos);
    (
        ts.seconds
            .saturating_add(nanos.div_euclid(NANOS_PER_SECOND)),
        nanos.rem_euclid(NANOS_PER_SECOND),
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn formats_epoch_and_known_dates() {
        assert_eq!(
            rfc3339(Some(&ts(0, 0)), Fraction::Trimmed),
            "1970-01-01T00:00:00Z"
        );
        // 2024-02-29 (leap day) 12:34:56 UTC.
        let leap = ts(1_709_210_096, 0);
        assert_eq!(
            rfc3339(Some(&leap), Fraction::Trimmed),
            "2024-02-29T12:34:56Z"
        );
        assert_eq!(
            rfc3339(Some(&ts(951_782_400, 0)), Fraction::Trimmed),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(Some(&ts(-1, 0)), Fraction::Trimmed),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn fractions_are_trimmed_or_fixed() {
        let t = ts(1_700_000_000, 120_000_000);
        assert_eq!(
            rfc3339(Some(&t), Fraction::Trimmed),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339(Some(&t), Fraction::Fixed),
            "2023-11-14T22:13:20.120000000Z"
        );
        let whole = ts(1_700_000_000, 0);
        assert_eq!(
            rfc3339(Some(&whole), Fraction::Fixed),
            "2023-11-14T22:13:20.000000000Z"
        );
        let one = ts(1_700_000_000, 1);
        assert_eq!(
            rfc3339(Some(&one), Fraction::Trimmed),
            "2023-11-14T22:13:20.000000001Z"
        );
    }

    #[test]
    fn out_of_range_nanos_are_normalized() {
        assert_eq!(
            rfc3339(Some(&ts(0, -1)), Fraction::Fixed),
            "1969-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            rfc3339(Some(&ts(0, 1_500_000_000)), Fraction::Trimmed),
            "1970-01-01T00:00:01.5Z"
        );
        // Absurd values must not panic.
        let _ = rfc3339(Some(&ts(i64::MAX, i32::MAX)), Fraction::Fixed);
        let _ = rfc3339(Some(&ts(i64::MIN, i32::MIN)), Fraction::Fixed);
    }

    #[test]
    fn missing_time_is_go_zero_time() {
        assert_eq!(rfc3339(None, Fraction::Trimmed), "0001-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(None, Fraction::Fixed),
            "0001-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn human_durations_match_docker() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(400)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(5)), "5 seconds");
        assert_eq!(human_duration(s(59)), "59 seconds");
        assert_eq!(human_duration(s(60)), "About a minute");
        assert_eq!(human_duration(s(119)), "About a minute");
        assert_eq!(human_duration(s(120)), "2 minutes");
        assert_eq!(human_duration(s(59 * 60)), "59 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5400)), "2 hours");
        assert_eq!(human_duration(s(47 * 3600)), "47 hours");
        assert_eq!(human_duration(s(3 * 86_400)), "3 days");
        assert_eq!(human_duration(s(20 * 86_400)), "2 weeks");
        assert_eq!(human_duration(s(90 * 86_400)), "3 months");
        assert_eq!(human_duration(s(800 * 86_400)), "2 years");
    }

    #[test]
    fn ago_is_relative_to_now_and_clamped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(ago(Some(&ts(995, 0)), now), "5 seconds ago");
        assert_eq!(ago(Some(&ts(2_000, 0)), now), "Less than a second ago");
        assert_eq!(ago(None, now), "Less than a second ago");
        assert_eq!(
            elapsed(Some(&ts(999, 500_000_000)), now),
            Duration::from_millis(500)
        );
    }
}
