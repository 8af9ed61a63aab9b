//! Statistics and dates of the benchmark binaries, computed as the peers'
//! `stats.py` does, so that rsup's rows stand beside theirs. Included by
//! `rsup-bench` and `rsup-bench-suite` with `#[path]`.

use std::time::SystemTime;

/// Summary statistics as Python's `statistics` computes them (median of an
/// even count: mean of the two middle values; sample stdev); p95 and p99 are
/// nearest-rank percentiles (the ceil(q n)-th smallest value).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p95: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub stdev: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Summary {
                n,
                median: f64::NAN,
                p95: f64::NAN,
                p99: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                mean: f64::NAN,
                stdev: f64::NAN,
            };
        }
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let rank = |q: usize| (n * q).div_ceil(100).max(1) - 1;
        let mean = v.iter().sum::<f64>() / n as f64;
        let stdev = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Summary {
            n,
            median,
            p95: v[rank(95)],
            p99: v[rank(99)],
            min: v[0],
            max: v[n - 1],
            mean,
            stdev,
        }
    }
}

/// `YYYY-MM-DD HH:MM UTC`, the `date` format of stats.py.
pub fn utc_minute(t: SystemTime) -> String {
    // YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ
    let s = rsup_runtime::logs::format_rfc3339_nanos(t);
    format!("{} {} UTC", &s[..10], &s[11..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn summary_matches_python_statistics() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(
            (s.n, s.median, s.min, s.max, s.mean),
            (4, 2.5, 1.0, 4.0, 2.5)
        );
        assert!((s.stdev - 1.290_994_448_735_805_6).abs() < 1e-12);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&hundred);
        assert_eq!((s.p95, s.p99), (95.0, 99.0));
        assert_eq!(Summary::of(&[7.0]).p99, 7.0);
    }

    #[test]
    fn dates_are_utc_minutes() {
        assert_eq!(utc_minute(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(utc_minute(leap), "2000-02-29 01:02 UTC");
    }
}
