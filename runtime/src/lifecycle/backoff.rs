//! Exponential restart backoff, pure: no clock of its own (the caller passes
//! how long the run lasted and a random number), so the schedule is unit
//! tested exactly.
//!
//! Docker's schedule is the default: the first restart waits 100 ms, each
//! further one twice as long, capped at 1 minute; a run that lasted at least
//! 10 s resets the delay. Optional jitter spreads restarts of many containers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tunables of the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
    /// 0..=1: each delay is scaled by a random factor in [1 - jitter, 1].
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(10),
            jitter: 0.0,
        }
    }
}

impl BackoffConfig {
    /// Checks the tunables; returns the offending field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max < self.initial {
            return Err((
                "restart.max_delay_ms",
                "must not be below the restart delay".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(("restart.jitter", "must be between 0 and 1".into()));
        }
        Ok(())
    }
}

/// The running state of a backoff: the last delay used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub last: Option<Duration>,
}

impl Backoff {
    /// The delay before the next start, after a run that lasted `ran`.
    /// `random` gives a number in [0, 1), asked for only with jitter.
    pub fn next_delay(
        &mut self,
        cfg: &BackoffConfig,
        ran: Duration,
        random: impl FnOnce() -> f64,
    ) -> Duration {
        if ran >= cfg.reset_after {
            self.last = None;
        }
        let base = match self.last {
            None => cfg.initial,
            Some(d) => d.saturating_mul(2).min(cfg.max),
        };
        self.last = Some(base);
        if cfg.jitter > 0.0 {
            base.mul_f64(1.0 - cfg.jitter * random().clamp(0.0, 1.0))
        } else {
            base
        }
    }

    /// Forgets the history (a user start).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn docker_schedule_doubles_caps_and_resets() {
        let cfg = BackoffConfig::default();
        let mut b = Backoff::default();
        let short = MS(50);
        let got: Vec<u64> = (0..12)
            .map(|_| b.next_delay(&cfg, short, || 0.0).as_millis() as u64)
            .collect();
        assert_eq!(
            got,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000
            ]
        );
        // A stable run of 10 s resets the schedule.
        assert_eq!(b.next_delay(&cfg, Duration::from_secs(10), || 0.0), MS(100));
        assert_eq!(b.next_delay(&cfg, MS(9_999), || 0.0), MS(200));
    }

    #[test]
    fn tunable_and_zero_delay() {
        let cfg = BackoffConfig {
            initial: MS(0),
            max: MS(0),
            ..Default::default()
        };
        let mut b = Backoff::default();
        for _ in 0..5 {
            assert_eq!(b.next_delay(&cfg, MS(1), || 0.5), MS(0));
        }
        let cfg = BackoffConfig {
            initial: MS(500),
            max: MS(1500),
            reset_after: Duration::from_secs(2),
            jitter: 0.0,
        };
        let mut b = Backoff::default();
        let got: Vec<_> = (0..4).map(|_| b.next_delay(&cfg, MS(10), || 0.0)).collect();
        assert_eq!(got, [MS(500), MS(1000), MS(1500), MS(1500)]);
    }

    #[test]
    fn jitter_stays_in_range() {
        let cfg = BackoffConfig {
            jitter: 0.5,
            ..Default::default()
        };
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(&cfg, MS(1), || 0.0), MS(100));
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(&cfg, MS(1), || 1.0), MS(50));
        assert!(
            BackoffConfig {
                jitter: 1.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            BackoffConfig {
                max: MS(1),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn no_random_number_is_drawn_without_jitter() {
        let mut b = Backoff::default();
        let cfg = BackoffConfig::default();
        let d = b.next_delay(&cfg, MS(1), || unreachable!("no jitter: no draw"));
        assert_eq!(d, MS(100));
    }
}
