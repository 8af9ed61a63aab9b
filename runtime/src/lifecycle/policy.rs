//! Restart policies, with Docker's names and meaning.
//!
//! | policy           | restarts after an exit when...                           | at rsupd start            |
//! |------------------|----------------------------------------------------------|---------------------------|
//! | `no`             | never                                                    | no                        |
//! | `on-failure[:N]` | the exit code is not 0 (an OOM kill counts), at most N times | if it failed while down |
//! | `always`         | always                                                   | yes, even if user-stopped |
//! | `unless-stopped` | always                                                   | unless the user stopped it|
//!
//! A stop by the user (`stop`, `kill` through `stop`, `rm`) suspends restarts
//! until the next user `start`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// When a container that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure {
        /// At most this many restarts (None: unbounded).
        max: Option<u32>,
    },
    Always,
    UnlessStopped,
}

/// How a run ended, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub exit_code: i32,
    pub oom_killed: bool,
    /// The user asked for the stop.
    pub stopped_by_user: bool,
    /// Restarts done so far by the policy.
    pub restarts: u32,
}

impl RestartPolicy {
    /// Whether to restart after `e`.
    pub fn should_restart(&self, e: &Ending) -> bool {
        if e.stopped_by_user {
            return false;
        }
        match *self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max } => {
                (e.exit_code != 0 || e.oom_killed) && max.is_none_or(|m| e.restarts < m)
            }
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }

    /// Whether rsupd starts the container when it starts itself (the
    /// container is not running then).
    pub fn start_with_daemon(&self, stopped_by_user: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !stopped_by_user,
            RestartPolicy::No | RestartPolicy::OnFailure { .. } => false,
        }
    }

    pub fn is_no(&self) -> bool {
        matches!(self, RestartPolicy::No)
    }
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{} is not a restart policy: use no, on-failure[:MAX], always or unless-stopped",
                crate::names::quote(s)
            )
        };
        match s {
            "" | "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
            _ => {
                let max = s.strip_prefix("on-failure:").ok_or_else(bad)?;
                let n: u32 = max.parse().map_err(|_| {
                    format!("on-failure:{max}: the maximum must be a whole number >= 0")
                })?;
                Ok(RestartPolicy::OnFailure { max: Some(n) })
            }
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(code: i32, restarts: u32) -> Ending {
        Ending {
            exit_code: code,
            oom_killed: false,
            stopped_by_user: false,
            restarts,
        }
    }

    #[test]
    fn parses_docker_names() {
        assert_eq!("no".parse(), Ok(RestartPolicy::No));
        assert_eq!("always".parse(), Ok(RestartPolicy::Always));
        assert_eq!("unless-stopped".parse(), Ok(RestartPolicy::UnlessStopped));
        assert_eq!(
            "on-failure".parse(),
            Ok(RestartPolicy::OnFailure { max: None })
        );
        assert_eq!(
            "on-failure:3".parse(),
            Ok(RestartPolicy::OnFailure { max: Some(3) })
        );
        for bad in ["on-failure:-1", "on-failure:x", "sometimes", "always:3"] {
            assert!(bad.parse::<RestartPolicy>().is_err(), "{bad}");
        }
        for p in [
            "no",
            "on-failure",
            "on-failure:3",
            "always",
            "unless-stopped",
        ] {
            assert_eq!(
                p.parse::<RestartPolicy>().map(|x| x.to_string()),
                Ok(p.to_string())
            );
        }
    }

    #[test]
    fn decisions() {
        let of3 = RestartPolicy::OnFailure { max: Some(3) };
        assert!(of3.should_restart(&end(1, 0)));
        assert!(of3.should_restart(&end(1, 2)));
        assert!(!of3.should_restart(&end(1, 3)));
        assert!(!of3.should_restart(&end(0, 0)));
        let oom = Ending {
            oom_killed: true,
            ..end(0, 0)
        };
        assert!(of3.should_restart(&oom));
        assert!(RestartPolicy::Always.should_restart(&end(0, 100)));
        assert!(!RestartPolicy::No.should_restart(&end(1, 0)));
        let stopped = Ending {
            stopped_by_user: true,
            ..end(1, 0)
        };
        assert!(!RestartPolicy::Always.should_restart(&stopped));
        assert!(RestartPolicy::Always.start_with_daemon(true));
        assert!(!RestartPolicy::UnlessStopped.start_with_daemon(true));
        assert!(RestartPolicy::UnlessStopped.start_with_daemon(false));
    }
}
