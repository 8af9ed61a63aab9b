//! Byte sizes the way Docker reads and writes them: `256m`, `1.5g` or plain
//! bytes on the command line (`RAMInBytes`, powers of 1024), and `1.5MiB`
//! (`BytesSize`: four significant digits, binary units) in tables.

/// What a size flag accepts, for its error message.
pub const EXPECTED: &str = "expected a size such as 256m, 1g or a number of bytes";

const UNITS: [char; 5] = ['b', 'k', 'm', 'g', 't'];
const HUMAN_UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// Parses `[-]DIGITS[.DIGITS][UNIT]` into bytes, where UNIT is one of
/// b, k, m, g, t (case-insensitive, powers of 1024; `kb`, `kib` and the like
/// are accepted too, as Docker does). A fraction of a byte is cut off. The
/// sign is kept so that the daemon, not the client, judges negative values.
pub fn parse(value: &str) -> Result<i64, String> {
    parse_bytes(value).ok_or_else(|| EXPECTED.to_owned())
}

fn parse_bytes(value: &str) -> Option<i64> {
    let (negative, rest) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let number_end = rest
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rest.len());
    let (number, unit) = rest.split_at(number_end);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return None;
    }
    let multiplier = multiplier(unit)?;

    let whole: i128 = whole.parse().ok()?;
    // fraction * multiplier, digit by digit from the right with the carry
    // cut at each step: exact, and the fraction of a byte is cut off.
    let fraction_bytes = fraction.bytes().rev().fold(0, |carry, digit| {
        (i128::from(digit - b'0') * multiplier + carry) / 10
    });
    let bytes = whole.checked_mul(multiplier)?.checked_add(fraction_bytes)?;
    let bytes = if negative { -bytes } else { bytes };
    i64::try_from(bytes).ok()
}

/// Bytes per unit for `b`, `k`, `kb`, `kib`, `m`, ... (case-insensitive);
/// an empty unit means bytes.
fn multiplier(unit: &str) -> Option<i128> {
    let unit = unit.to_ascii_lowercase();
    let mut chars = unit.chars();
    let Some(prefix) = chars.next() else {
        return Some(1);
    };
    let suffix = chars.as_str();
    let suffix_ok = match prefix {
        'b' => suffix.is_empty(),
        _ => matches!(suffix, "" | "b" | "ib"),
    };
    let power = UNITS.iter().position(|u| *u == prefix)?;
    suffix_ok.then(|| 1_i128 << (10 * power))
}

/// Docker's `units.BytesSize`: `0B`, `512B`, `1.5MiB`, `12.06KiB`.
pub fn human(bytes: u64) -> String {
    // Precision lost above 2^53 bytes is invisible at four digits.
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < HUMAN_UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", significant(size, 4), HUMAN_UNITS[unit])
}

/// Go's `%.{digits}g` for values from 0 to below 10^digits: fixed notation,
/// `digits` significant digits, trailing zeros dropped.
fn significant(value: f64, digits: i32) -> String {
    // At most 3 for the values `human` passes (< 1024).
    let magnitude = if value > 0.0 {
        value.log10().floor() as i32
    } else {
        0
    };
    let decimals = usize::try_from(digits - 1 - magnitude).unwrap_or(0);
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse("100"), Ok(100));
        assert_eq!(parse("100b"), Ok(100));
        assert_eq!(parse("512k"), Ok(512 * 1024));
        assert_eq!(parse("256m"), Ok(256 << 20));
        assert_eq!(parse("256M"), Ok(256 << 20));
        assert_eq!(parse("1g"), Ok(1 << 30));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("2t"), Ok(2 << 40));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("64mb"), Ok(64 << 20));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("7B"), Ok(7));
    }

    #[test]
    fn fractions_are_exact_and_cut_toward_zero() {
        assert_eq!(parse("1.5g"), Ok(1_610_612_736));
        assert_eq!(parse("0.5k"), Ok(512));
        assert_eq!(parse("1.5"), Ok(1));
        assert_eq!(parse("0.001k"), Ok(1));
        assert_eq!(parse("2.50m"), Ok(2_621_440));
        assert_eq!(parse("0.99999999999999999999999999k"), Ok(1023));
        assert_eq!(parse("1.00000000000000000000000001"), Ok(1));
    }

    #[test]
    fn negative_sizes_are_left_to_the_daemon() {
        assert_eq!(parse("-1"), Ok(-1));
        assert_eq!(parse("-1k"), Ok(-1024));
    }

    #[test]
    fn malformed_sizes_are_rejected() {
        for bad in [
            "",
            "abc",
            "12x",
            "m",
            "-",
            "1.",
            ".5",
            "1..5",
            "1.2.3",
            "1 m",
            " 1",
            "1mm",
            "1ib",
            "1bb",
            "1bib",
            "1kk",
            "1kbb",
            "+1",
            "1e3",
            "--1",
            "9223372036854775808",
            "8388608t",
        ] {
            assert_eq!(parse(bad), Err(EXPECTED.to_owned()), "{bad:?}");
        }
        assert_eq!(parse("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse("-9223372036854775808"), Ok(i64::MIN));
    }

    #[test]
    fn human_sizes_read_like_docker() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(100), "100B");
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(1024), "1KiB");
        assert_eq!(human(1536 * 1024), "1.5MiB");
        assert_eq!(human(32 << 20), "32MiB");
        assert_eq!(human(12_345), "12.06KiB");
        assert_eq!(human(1_048_575), "1024KiB");
        assert_eq!(human(8 << 30), "8GiB");
        assert_eq!(human(123_456_789), "117.7MiB");
        assert_eq!(human(u64::MAX), "16EiB");
    }
}
