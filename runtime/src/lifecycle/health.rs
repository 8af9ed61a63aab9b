//! Health checks, the pure part: Docker's three states and how one check's
//! result moves them. The containers service runs the checks (an exec on
//! an interval) and applies [`HealthState::record`].

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Where a container's health checks stand (Docker's three states).
/// Persisted in `state.json` and sent over gRPC as its [`as_str`] name.
///
/// [`as_str`]: HealthStatus::as_str
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No check has passed yet and too few have failed to say unhealthy.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed (outside the start period).
    Unhealthy,
}

impl HealthStatus {
    /// Every status, in the order metrics list them.
    pub const ALL: [HealthStatus; 3] = [
        HealthStatus::Starting,
        HealthStatus::Healthy,
        HealthStatus::Unhealthy,
    ];

    /// The name in `state.json`, the API, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health of a container, as `ps` and `inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    pub status: HealthStatus,
    pub failing_streak: u32,
    pub last_output: String,
    pub last_check: Option<SystemTime>,
}

impl HealthState {
    pub fn starting() -> HealthState {
        HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            last_output: String::new(),
            last_check: None,
        }
    }
}

/// One check's result, as [`HealthState::record`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The command exited 0 within its timeout.
    pub passed: bool,
    /// What it printed (capped), or why it could not run.
    pub output: String,
    pub at: SystemTime,
    /// The container is still within the check's start period: a failure
    /// does not count.
    pub in_start_period: bool,
}

impl HealthState {
    /// Records a check: a pass makes it healthy and clears the streak; a
    /// failure outside the start period adds to the streak, and `retries`
    /// failures in a row make it unhealthy. Returns the new status when it
    /// changed.
    pub fn record(&mut self, check: CheckResult, retries: u32) -> Option<HealthStatus> {
        let before = self.status;
        self.last_output = check.output;
        self.last_check = Some(check.at);
        if check.passed {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !check.in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check(passed: bool, in_start_period: bool) -> CheckResult {
        CheckResult {
            passed,
            output: if passed { "ok".into() } else { "down".into() },
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(7),
            in_start_period,
        }
    }

    #[test]
    fn a_pass_makes_it_healthy_and_clears_the_streak() {
        let mut h = HealthState::starting();
        assert_eq!(h.record(check(false, false), 3), None);
        assert_eq!(h.failing_streak, 1);
        assert_eq!(h.record(check(true, false), 3), Some(HealthStatus::Healthy));
        assert_eq!(h.failing_streak, 0);
        assert_eq!(h.last_output, "ok");
        assert_eq!(
            h.last_check,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(7))
        );
        // Passing again changes nothing.
        assert_eq!(h.record(check(true, false), 3), None);
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy() {
        let mut h = HealthState::starting();
        h.record(check(true, false), 3);
        assert_eq!(h.record(check(false, false), 3), None);
        assert_eq!(h.record(check(false, false), 3), None);
        assert_eq!(h.status, HealthStatus::Healthy);
        assert_eq!(
            h.record(check(false, false), 3),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(h.failing_streak, 3);
        assert_eq!(h.record(check(false, false), 3), None);
        assert_eq!(h.failing_streak, 4);
        // One pass and it is healthy again.
        assert_eq!(h.record(check(true, false), 3), Some(HealthStatus::Healthy));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut h = HealthState::starting();
        for _ in 0..5 {
            assert_eq!(h.record(check(false, true), 1), None);
        }
        assert_eq!(h.failing_streak, 0);
        assert_eq!(h.status, HealthStatus::Starting);
        assert_eq!(h.last_output, "down");
        // A pass in the start period counts.
        assert_eq!(h.record(check(true, true), 1), Some(HealthStatus::Healthy));
        assert_eq!(
            h.record(check(false, false), 1),
            Some(HealthStatus::Unhealthy)
        );
    }

    #[test]
    fn health_status_names() {
        let names: Vec<&str> = HealthStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["starting", "healthy", "unhealthy"]);
        assert_eq!(HealthStatus::Unhealthy.to_string(), "unhealthy");
        assert_eq!(HealthState::starting().status, HealthStatus::Starting);
    }

    #[test]
    fn health_status_is_persisted_by_its_name() {
        for s in HealthStatus::ALL {
            let json = serde_json::to_string(&s).expect("serialize");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            let back: HealthStatus = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, s);
        }
        assert!(serde_json::from_str::<HealthStatus>("\"Healthy\"").is_err());
    }

    #[test]
    fn health_state_reads_what_earlier_versions_wrote() {
        // state.json's `health` as rsupd wrote it when the status was a string.
        let old = r#"{"status":"unhealthy","failing_streak":3,"last_output":"down\n","last_check":{"secs_since_epoch":1700000000,"nanos_since_epoch":5}}"#;
        let h: HealthState = serde_json::from_str(old).expect("old state.json");
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(h.failing_streak, 3);
        assert_eq!(h.last_output, "down\n");
        assert_eq!(
            h.last_check,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        assert_eq!(serde_json::to_string(&h).expect("serialize"), old);
    }
}
