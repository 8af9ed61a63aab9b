//! Durations on the command line, the way Go's `time.ParseDuration` (and so
//! Docker) reads them: `100ms`, `1.5s`, `2m`, `1h`, `1m30s`, `0`; units `ns`,
//! `us` (`µs`), `ms`, `s`, `m`, `h`. A plain number is seconds. Negative
//! durations are rejected, and so is anything beyond `u64::MAX` nanoseconds.

use std::time::Duration;

/// What a duration flag accepts, for its error message.
pub const EXPECTED: &str =
    "expected a duration such as 0, 100ms, 1.5s, 2m, 1h or 1m30s (a plain number is seconds)";

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Parses a duration flag; the error is [`EXPECTED`], for clap to show after
/// the flag and the value.
pub fn parse(value: &str) -> Result<Duration, String> {
    parse_nanos(value)
        .and_then(|nanos| u64::try_from(nanos).ok())
        .map(Duration::from_nanos)
        .ok_or_else(|| EXPECTED.to_owned())
}

/// Whole milliseconds of `d` (cut, not rounded), saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A whole number of milliseconds the way [`parse`] reads it back, without
/// zero parts: `0s`, `250ms`, `1.5s`, `10s`, `1m30s`, `1h`.
pub fn format_millis(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = ms / 60_000 % 60;
    let seconds = ms / 1000 % 60;
    let fraction = ms % 1000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if fraction > 0 {
        let digits = format!("{fraction:03}");
        out.push_str(&format!("{seconds}.{}s", digits.trim_end_matches('0')));
    } else if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

fn parse_nanos(value: &str) -> Option<u128> {
    if value.is_empty() {
        return None;
    }
    // A plain number (no unit at all) is seconds.
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return number(value, NANOS_PER_SECOND);
    }
    let mut rest = value;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        total = total.checked_add(number(digits, unit_nanos(unit)?)?)?;
        rest = next;
    }
    Some(total)
}

/// `DIGITS[.DIGITS]` (or `.DIGITS`, `DIGITS.`, as Go allows) times `unit`
/// nanoseconds, the fraction of a nanosecond cut off.
fn number(text: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // fraction * unit, digit by digit from the right: exact, then cut.
    let fraction = fraction.bytes().rev().fold(0, |carry, digit| {
        (u128::from(digit - b'0') * unit + carry) / 10
    });
    whole.checked_mul(unit)?.checked_add(fraction)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3600 * NANOS_PER_SECOND,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str) -> Duration {
        parse(value).unwrap_or_else(|e| panic!("{value:?}: {e}"))
    }

    #[test]
    fn go_style_durations() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("100ms"), Duration::from_millis(100));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("0.1h"), Duration::from_secs(360));
        assert_eq!(ok("1.0000000009s"), Duration::from_secs(1));
    }

    #[test]
    fn plain_numbers_are_seconds() {
        assert_eq!(ok("5"), Duration::from_secs(5));
        assert_eq!(ok("1.5"), Duration::from_millis(1500));
        assert_eq!(ok("0.001"), Duration::from_millis(1));
    }

    #[test]
    fn negative_and_garbage_are_rejected() {
        for bad in [
            "", "-1s", "-1", "+1s", "1x", "s", "ms", "1.2.3s", ".", ".s", "1 s", " 1s", "1s ",
            "abc", "1sm", "1d", "5m-3s", "1e3",
        ] {
            assert_eq!(parse(bad), Err(EXPECTED.to_owned()), "{bad:?}");
        }
        assert!(parse("18446744073709551616ns").is_err());
        assert!(parse("99999999999999999999999999h").is_err());
        assert_eq!(
            ok("18446744073709551615ns").as_nanos(),
            u128::from(u64::MAX)
        );
    }

    #[test]
    fn millis_format_compactly_and_parse_back() {
        for (ms, text) in [
            (0, "0s"),
            (250, "250ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (1001, "1.001s"),
            (10_000, "10s"),
            (60_000, "1m"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (3_601_000, "1h1s"),
            (3_723_004, "1h2m3.004s"),
        ] {
            assert_eq!(format_millis(ms), text, "{ms}");
            assert_eq!(millis(ok(text)), ms, "{text}");
        }
        assert_eq!(format_millis(u64::MAX), "5124095576030h25m51.615s");
    }

    #[test]
    fn millis_are_cut_and_saturate() {
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
