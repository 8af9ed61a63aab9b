//! Ranges of every duration and count of the API, in one place.
//!
//! Each range is documented on its field in `proto/rsup/v1/containers.proto`
//! (unit and bounds); a value outside is INVALID_ARGUMENT naming the field.
//! The runtime's validation (spec, restart, health, resources, log,
//! supervisor, stop and exec) checks them once, where a request becomes a
//! validated value, so nothing downstream sees an absurd one: no restart
//! delay of 2^64-1 ms that leaves a container "restarting" forever, no
//! `SystemTime + Duration` that overflows, no pids limit the kernel refuses
//! at every start. The bounds follow Docker where Docker has one (a health
//! duration is at least 1 ms) and are generous elsewhere: a day for every
//! delay and timeout, a week for the backoff's reset.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::Error;

const MS: Duration = Duration::from_millis(1);
/// One day: the longest delay, timeout or period the API takes.
pub const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// `restart.delay_ms` and `restart.max_delay_ms`.
pub const RESTART_DELAY: RangeInclusive<Duration> = Duration::ZERO..=DAY;
/// `restart.reset_after_ms`.
pub const RESTART_RESET_AFTER: RangeInclusive<Duration> = Duration::ZERO..=WEEK;
/// `restart.jitter`, a fraction of the delay.
pub const RESTART_JITTER: RangeInclusive<f64> = 0.0..=1.0;
/// `health.interval_ms` and `health.timeout_ms` (Docker: at least 1 ms).
pub const HEALTH_PERIOD: RangeInclusive<Duration> = MS..=DAY;
/// `health.start_period_ms`: 0 (none) or at least 1 ms, as in Docker.
pub const HEALTH_START_PERIOD: RangeInclusive<Duration> = Duration::ZERO..=DAY;
/// `health.retries`.
pub const HEALTH_RETRIES: RangeInclusive<u64> = 1..=1000;
/// `log.max_size_bytes` when set (0: the daemon's default).
pub const LOG_MAX_SIZE: RangeInclusive<u64> = 1024..=(1 << 40);
/// `log.max_files` when set (0: the daemon's default).
pub const LOG_MAX_FILES: RangeInclusive<u64> = 1..=100;
/// `resources.pids_limit` when limited (0: unlimited): the kernel's
/// PID_MAX_LIMIT, the largest `pids.max` it accepts.
pub const PIDS_LIMIT: RangeInclusive<u64> = 1..=4_194_304;
/// `intensity` of a supervisor.
pub const SUPERVISOR_INTENSITY: RangeInclusive<u64> = 1..=10_000;
/// `period_ms` of a supervisor.
pub const SUPERVISOR_PERIOD: RangeInclusive<Duration> = MS..=DAY;
/// `timeout_seconds` of Stop.
pub const STOP_TIMEOUT: RangeInclusive<Duration> = Duration::ZERO..=DAY;
/// `timeout_ms` of Exec.
pub const EXEC_TIMEOUT: RangeInclusive<Duration> = MS..=DAY;

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidArgument { field, reason }
}

/// A duration the way the API's users give it: whole milliseconds, plus
/// the largest exact unit (`86400000 ms (24 h)`).
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let sub_ms = d.subsec_nanos() % 1_000_000;
    if sub_ms != 0 {
        return format!("{:?}", d);
    }
    let units: [(u128, &str); 4] = [
        (24 * 3600 * 1000, "d"),
        (3600 * 1000, "h"),
        (60 * 1000, "min"),
        (1000, "s"),
    ];
    match units
        .iter()
        .find(|(n, _)| ms >= *n && ms.is_multiple_of(*n))
    {
        Some((n, unit)) => format!("{ms} ms ({} {unit})", ms / n),
        None => format!("{ms} ms"),
    }
}

/// `d` if it lies in `range`, else INVALID_ARGUMENT naming `field`.
pub fn duration(
    field: &'static str,
    d: Duration,
    range: &RangeInclusive<Duration>,
) -> Result<Duration, Error> {
    if range.contains(&d) {
        return Ok(d);
    }
    Err(invalid(
        field,
        format!(
            "{} is out of range: give {} to {}",
            human(d),
            human(*range.start()),
            human(*range.end())
        ),
    ))
}

/// `n` (of `unit`) if it lies in `range`, else INVALID_ARGUMENT naming
/// `field`.
pub fn count(
    field: &'static str,
    n: u64,
    range: &RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, Error> {
    if range.contains(&n) {
        return Ok(n);
    }
    Err(invalid(
        field,
        format!(
            "{n} {unit} is out of range: give {} to {} {unit}",
            range.start(),
            range.end()
        ),
    ))
}

/// `x` if it lies in `range` (NaN never does), else INVALID_ARGUMENT.
pub fn fraction(field: &'static str, x: f64, range: &RangeInclusive<f64>) -> Result<f64, Error> {
    if range.contains(&x) {
        return Ok(x);
    }
    Err(invalid(
        field,
        format!(
            "{x} is out of range: give a number from {} to {}",
            range.start(),
            range.end()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of<T: std::fmt::Debug>(r: Result<T, Error>) -> &'static str {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn durations_are_checked_at_both_ends() {
        let ms = Duration::from_millis;
        assert_eq!(duration("f", DAY, &HEALTH_PERIOD).expect("max"), DAY);
        assert_eq!(duration("f", ms(1), &HEALTH_PERIOD).expect("min"), ms(1));
        assert_eq!(field_of(duration("f", Duration::ZERO, &HEALTH_PERIOD)), "f");
        assert_eq!(field_of(duration("f", DAY + ms(1), &HEALTH_PERIOD)), "f");
        // The largest value the proto can carry is refused, not overflowed.
        let huge = ms(u64::MAX);
        let Err(Error::InvalidArgument { reason, .. }) = duration("g", huge, &RESTART_DELAY) else {
            panic!("accepted 2^64-1 ms");
        };
        assert!(
            reason.contains("18446744073709551615 ms") && reason.contains("86400000 ms (1 d)"),
            "{reason}"
        );
    }

    #[test]
    fn counts_and_fractions_are_checked() {
        assert_eq!(
            count("n", 1000, &HEALTH_RETRIES, "retries").expect("max"),
            1000
        );
        assert_eq!(field_of(count("n", 0, &HEALTH_RETRIES, "retries")), "n");
        assert_eq!(field_of(count("n", 1001, &HEALTH_RETRIES, "x")), "n");
        assert_eq!(
            field_of(count("n", u64::from(u32::MAX), &SUPERVISOR_INTENSITY, "x")),
            "n"
        );
        assert_eq!(fraction("j", 1.0, &RESTART_JITTER).expect("1"), 1.0);
        for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            assert_eq!(field_of(fraction("j", bad, &RESTART_JITTER)), "j", "{bad}");
        }
    }

    #[test]
    fn stop_and_exec_timeouts_have_ranges() {
        let ms = Duration::from_millis;
        assert!(duration("t", Duration::ZERO, &STOP_TIMEOUT).is_ok());
        assert!(duration("t", DAY, &STOP_TIMEOUT).is_ok());
        // The largest Stop timeout the proto carries: 2^32-1 seconds.
        let secs = Duration::from_secs(u32::MAX.into());
        assert_eq!(
            field_of(duration("timeout_seconds", secs, &STOP_TIMEOUT)),
            "timeout_seconds"
        );
        assert!(duration("t", ms(1), &EXEC_TIMEOUT).is_ok());
        for bad in [Duration::ZERO, DAY + ms(1), ms(u64::MAX)] {
            assert_eq!(
                field_of(duration("timeout_ms", bad, &EXEC_TIMEOUT)),
                "timeout_ms"
            );
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(human(Duration::from_secs(2)), "2000 ms (2 s)");
        assert_eq!(human(DAY), "86400000 ms (1 d)");
        assert_eq!(human(Duration::ZERO), "0 ms");
        assert_eq!(human(Duration::from_micros(1500)), "1.5ms");
    }
}
