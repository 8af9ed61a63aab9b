//! The restart and health parts of a container spec: when rsup starts a
//! container again after it ends, and how it checks that a running one is
//! healthy.
//!
//! Requests carry what the user set (`None`: the default); validation
//! bounds every duration and count (see [`crate::bounds`]) and checks the
//! parts against each other: a liveness probe (`restart_on_unhealthy`)
//! needs a health command and a restart policy that restarts the killed
//! container. The policy and backoff themselves are the pure
//! [`crate::lifecycle`] types.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::bounds;
use crate::error::Error;
use crate::lifecycle::{BackoffConfig, RestartPolicy};

/// A health check as requested (Docker's --health-* flags).
#[derive(Debug, Clone, Default)]
pub struct HealthRequest {
    /// Shell command run with `/bin/sh -c` inside the container ("" = none).
    pub cmd: String,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
    /// Kill the container when it turns unhealthy, so that its restart
    /// policy restarts it (a liveness probe).
    pub restart_on_unhealthy: bool,
}

/// Interval and timeout of a health check that does not set them (Docker's).
const HEALTH_DEFAULT_PERIOD: Duration = Duration::from_secs(30);

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// argv run inside the container.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    pub restart_on_unhealthy: bool,
}

impl HealthRequest {
    pub(crate) fn validate(&self, restart: &RestartSpec) -> Result<Option<HealthSpec>, Error> {
        if self.cmd.is_empty() {
            if self.restart_on_unhealthy {
                return Err(invalid(
                    "health.restart_on_unhealthy",
                    "needs a health command",
                ));
            }
            return Ok(None);
        }
        let period = |d: Option<Duration>, field: &'static str| {
            bounds::duration(
                field,
                d.unwrap_or(HEALTH_DEFAULT_PERIOD),
                &bounds::HEALTH_PERIOD,
            )
        };
        let retries = bounds::count(
            "health.retries",
            self.retries.map_or(3, u64::from),
            &bounds::HEALTH_RETRIES,
            "retries",
        )?;
        let spec = HealthSpec {
            test: vec!["/bin/sh".into(), "-c".into(), self.cmd.clone()],
            interval: period(self.interval, "health.interval_ms")?,
            timeout: period(self.timeout, "health.timeout_ms")?,
            // In range: at most 1000.
            retries: u32::try_from(retries).unwrap_or(u32::MAX),
            start_period: bounds::duration(
                "health.start_period_ms",
                self.start_period.unwrap_or_default(),
                &bounds::HEALTH_START_PERIOD,
            )?,
            restart_on_unhealthy: self.restart_on_unhealthy,
        };
        if spec.restart_on_unhealthy && restart.policy.is_no() {
            return Err(invalid(
                "health.restart_on_unhealthy",
                "needs a restart policy (on-failure or always) to restart the killed container",
            ));
        }
        Ok(Some(spec))
    }
}

/// Restart policy and backoff as requested (unset fields: defaults).
#[derive(Debug, Clone, Default)]
pub struct RestartRequest {
    /// "no", "on-failure[:N]", "always", "unless-stopped" ("" = no).
    pub policy: String,
    pub delay: Option<Duration>,
    pub max_delay: Option<Duration>,
    pub reset_after: Option<Duration>,
    pub jitter: Option<f64>,
}

/// The validated restart settings of a container.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub backoff: BackoffConfig,
}

impl RestartRequest {
    pub fn validate(&self) -> Result<RestartSpec, Error> {
        let policy: RestartPolicy = self
            .policy
            .parse()
            .map_err(|e| invalid("restart_policy", e))?;
        let d = BackoffConfig::default();
        let mut backoff = BackoffConfig {
            initial: bounds::duration(
                "restart.delay_ms",
                self.delay.unwrap_or(d.initial),
                &bounds::RESTART_DELAY,
            )?,
            max: bounds::duration(
                "restart.max_delay_ms",
                self.max_delay.unwrap_or(d.max),
                &bounds::RESTART_DELAY,
            )?,
            reset_after: bounds::duration(
                "restart.reset_after_ms",
                self.reset_after.unwrap_or(d.reset_after),
                &bounds::RESTART_RESET_AFTER,
            )?,
            jitter: bounds::fraction(
                "restart.jitter",
                self.jitter.unwrap_or(d.jitter),
                &bounds::RESTART_JITTER,
            )?,
        };
        // A delay above the default cap raises the cap with it.
        if self.max_delay.is_none() && backoff.initial > backoff.max {
            backoff.max = backoff.initial;
        }
        backoff
            .validate()
            .map_err(|(field, reason)| invalid(field, reason))?;
        Ok(RestartSpec { policy, backoff })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::invalid_field;

    #[test]
    fn restart_durations_and_jitter_have_ranges() {
        let ms = Duration::from_millis;
        let r = RestartRequest::default;
        let ok = |req: RestartRequest| req.validate().expect("in range").backoff;
        // The largest values in range are taken as given.
        let b = ok(RestartRequest {
            delay: Some(bounds::DAY),
            max_delay: Some(bounds::DAY),
            reset_after: Some(ms(7 * 24 * 3600 * 1000)),
            jitter: Some(1.0),
            ..r()
        });
        assert_eq!(
            (b.initial, b.max, b.jitter),
            (bounds::DAY, bounds::DAY, 1.0)
        );
        // A delay of 0 is fine (an immediate restart).
        assert_eq!(
            ok(RestartRequest {
                delay: Some(ms(0)),
                ..r()
            })
            .initial,
            ms(0)
        );
        let field = |req: RestartRequest| invalid_field(req.validate());
        for huge in [bounds::DAY + ms(1), ms(u64::MAX)] {
            assert_eq!(
                field(RestartRequest {
                    delay: Some(huge),
                    ..r()
                }),
                "restart.delay_ms"
            );
            assert_eq!(
                field(RestartRequest {
                    max_delay: Some(huge),
                    ..r()
                }),
                "restart.max_delay_ms"
            );
        }
        assert_eq!(
            field(RestartRequest {
                reset_after: Some(ms(7 * 24 * 3600 * 1000 + 1)),
                ..r()
            }),
            "restart.reset_after_ms"
        );
        for j in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            assert_eq!(
                field(RestartRequest {
                    jitter: Some(j),
                    ..r()
                }),
                "restart.jitter"
            );
        }
        assert_eq!(
            field(RestartRequest {
                delay: Some(ms(2000)),
                max_delay: Some(ms(1000)),
                ..r()
            }),
            "restart.max_delay_ms"
        );
    }

    #[test]
    fn health_durations_and_retries_have_ranges() {
        let ms = Duration::from_millis;
        let restart = RestartSpec::default();
        let h = || HealthRequest {
            cmd: "true".into(),
            ..Default::default()
        };
        let ok = |req: HealthRequest| {
            req.validate(&restart)
                .expect("in range")
                .expect("a health check")
        };
        let spec = ok(HealthRequest {
            interval: Some(ms(1)),
            timeout: Some(bounds::DAY),
            start_period: Some(bounds::DAY),
            retries: Some(1000),
            ..h()
        });
        assert_eq!(
            (spec.interval, spec.timeout, spec.retries),
            (ms(1), bounds::DAY, 1000)
        );
        assert_eq!(ok(h()).interval, Duration::from_secs(30));
        assert_eq!(
            ok(HealthRequest {
                start_period: Some(ms(0)),
                ..h()
            })
            .start_period,
            ms(0)
        );
        let field = |req: HealthRequest| invalid_field(req.validate(&restart));
        for bad in [ms(0), bounds::DAY + ms(1), ms(u64::MAX)] {
            assert_eq!(
                field(HealthRequest {
                    interval: Some(bad),
                    ..h()
                }),
                "health.interval_ms"
            );
            assert_eq!(
                field(HealthRequest {
                    timeout: Some(bad),
                    ..h()
                }),
                "health.timeout_ms"
            );
        }
        assert_eq!(
            field(HealthRequest {
                start_period: Some(ms(u64::MAX)),
                ..h()
            }),
            "health.start_period_ms"
        );
        for bad in [0, 1001, u32::MAX] {
            assert_eq!(
                field(HealthRequest {
                    retries: Some(bad),
                    ..h()
                }),
                "health.retries"
            );
        }
    }
}
