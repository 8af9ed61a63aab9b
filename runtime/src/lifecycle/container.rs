//! The lifecycle of one container, the decisions: what follows an exit
//! (auto-remove, the supervisor, a policy restart after its backoff, or
//! nothing), whether a start goes ahead, and what rsupd does with a
//! container it loads at start. Pure: no I/O and no clock of its own (the
//! caller passes `now` and the jitter), so every transition is tested here
//! without a kernel or a sleep; the containers service carries the
//! decisions out (`crate::containers`).
//!
//! ```text
//!             start                exit                 delay
//!  created ─────────> running ──────────> exited ─────────────> restarting
//!     ^                 ^  │ stop            │ after_exit:           │
//!     │                 │  └──────> exited   ├─ Remove (--rm)        │
//!     │                 │                    ├─ Supervisor (its      │
//!     │                 │                    │   strategy decides)   │
//!     │                 │                    ├─ Restart {delay} ─────┘
//!     │                 └────────────────────┴─ Stay        (policy start)
//! ```

use std::time::{Duration, SystemTime};

use super::state::{ContainerState, StartBy, Status};
use super::{BackoffConfig, ChildRestart, Ending, RestartPolicy};

/// What the decisions need of a container's spec.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// `--rm`: removed when it exits.
    pub auto_remove: bool,
    /// It joined a supervisor: its strategy restarts it, with the policy
    /// as its OTP restart type.
    pub supervised: bool,
    pub policy: &'a RestartPolicy,
    pub backoff: &'a BackoffConfig,
}

/// What follows an exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterExit {
    /// Remove it (`--rm`).
    Remove,
    /// Hand it to its supervisor, whose strategy restarts it (and maybe
    /// its siblings).
    Supervisor,
    /// Start it again after `delay`; `backoff` is its new backoff state.
    Restart {
        delay: Duration,
        backoff: super::Backoff,
    },
    /// It stays exited.
    Stay,
}

impl AfterExit {
    /// Whether it will run again (its DNS names stay meanwhile).
    pub fn restarts(&self) -> bool {
        matches!(self, AfterExit::Supervisor | AfterExit::Restart { .. })
    }
}

/// Decides what follows the exit recorded in `s`, after a run of `ran`
/// (the backoff starts over after a long run); `jitter` gives a number in
/// [0, 1) that spreads the delays of containers that crash together (asked
/// for only when a restart has jitter).
pub(crate) fn after_exit(
    plan: &Plan<'_>,
    s: &Status,
    ran: Duration,
    jitter: impl FnOnce() -> f64,
) -> AfterExit {
    if plan.auto_remove {
        return AfterExit::Remove;
    }
    let code = s.exit.map_or(-1, |e| e.code);
    if plan.supervised {
        if s.supervisor_stopping || s.stopped_by_user {
            return AfterExit::Stay;
        }
        return match ChildRestart::of(plan.policy).restarts(code, s.oom_killed) {
            true => AfterExit::Supervisor,
            false => AfterExit::Stay,
        };
    }
    let ending = Ending {
        exit_code: code,
        oom_killed: s.oom_killed,
        stopped_by_user: s.stopped_by_user,
        restarts: s.restart_count,
    };
    if !plan.policy.should_restart(&ending) {
        return AfterExit::Stay;
    }
    let mut backoff = s.backoff;
    let delay = backoff.next_delay(plan.backoff, ran, jitter);
    AfterExit::Restart { delay, backoff }
}

/// Whether the exit recorded in `s` will be followed by a run (a policy
/// restart or its supervisor's).
pub(crate) fn will_restart(plan: &Plan<'_>, s: &Status) -> bool {
    after_exit(plan, s, Duration::ZERO, || 0.0).restarts()
}

/// Whether a start goes ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartGate {
    /// Go ahead.
    Go,
    /// Nothing to do: the restart this start was for was called off (the
    /// user stopped, started or removed it meanwhile), or a supervisor
    /// restart finds it running or stopped by its user.
    Moot,
    /// It was removed.
    Removed,
    /// It runs already.
    Running,
}

/// Decides whether a start by `by` goes ahead from status `s`.
pub(crate) fn start_gate(by: StartBy, s: &Status) -> StartGate {
    match by {
        StartBy::Policy if s.state != ContainerState::Restarting => return StartGate::Moot,
        StartBy::Supervisor
            if s.stopped_by_user
                || matches!(s.state, ContainerState::Running | ContainerState::Removed) =>
        {
            return StartGate::Moot;
        }
        _ => {}
    }
    match s.state {
        ContainerState::Removed => StartGate::Removed,
        st if st.can_start() => StartGate::Go,
        _ => StartGate::Running,
    }
}

/// What rsupd does with a container it loads at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOpen {
    /// It died while rsupd was down: decide as for an exit (`after_exit`).
    Exited,
    /// Start it (by its policy) after this delay: a pending restart that
    /// is due then, or a container its policy runs with the daemon.
    StartIn(Duration),
    /// Leave it as it is.
    Leave,
}

/// Decides what happens at rsupd's start to a container in status `s`
/// (`died_while_down`: it was running when rsupd went down and is not
/// now), at `now`.
pub(crate) fn on_open(
    policy: &RestartPolicy,
    s: &Status,
    died_while_down: bool,
    now: SystemTime,
) -> OnOpen {
    if died_while_down {
        return OnOpen::Exited;
    }
    match s.state {
        ContainerState::Restarting => OnOpen::StartIn(
            s.next_start_at
                .and_then(|t| t.duration_since(now).ok())
                .unwrap_or(Duration::ZERO),
        ),
        ContainerState::Exited if policy.start_with_daemon(s.stopped_by_user) => {
            OnOpen::StartIn(Duration::ZERO)
        }
        _ => OnOpen::Leave,
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{ExitInfo, Pids};
    use super::super::{Backoff, BackoffConfig};
    use super::*;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn plan<'a>(policy: &'a RestartPolicy, backoff: &'a BackoffConfig) -> Plan<'a> {
        Plan {
            auto_remove: false,
            supervised: false,
            policy,
            backoff,
        }
    }

    /// A status after a run that ended with `code` (`None`: the exit is
    /// unknown), `restarts` policy restarts so far.
    fn ended(code: Option<i32>, restarts: u32) -> Status {
        let mut s = Status::fresh(ContainerState::Created, at(0));
        s.started(StartBy::User, pids(), 0, at(1));
        for _ in 0..restarts {
            s.started(StartBy::Policy, pids(), 0, at(1));
        }
        let exit = code.map(|code| ExitInfo {
            code,
            signal: 0,
            finished_at: at(2),
        });
        s.exited(exit, None);
        s
    }

    fn pids() -> Pids {
        Pids {
            shim_pid: 10,
            shim_start_time: 100,
            init_pid: 11,
            init_start_time: 101,
        }
    }

    fn restart_delay(a: AfterExit) -> Option<Duration> {
        match a {
            AfterExit::Restart { delay, .. } => Some(delay),
            _ => None,
        }
    }

    #[test]
    fn each_policy_decides_each_exit() {
        let cfg = BackoffConfig::default();
        let on_failure = |max| RestartPolicy::OnFailure { max };
        // (policy, exit code or None for unknown, policy restarts so far) -> restarts?
        let cases = [
            (RestartPolicy::No, Some(0), 0, false),
            (RestartPolicy::No, Some(1), 0, false),
            (RestartPolicy::No, None, 0, false),
            (RestartPolicy::Always, Some(0), 0, true),
            (RestartPolicy::Always, Some(137), 50, true),
            (RestartPolicy::Always, None, 0, true),
            (RestartPolicy::UnlessStopped, Some(0), 0, true),
            (RestartPolicy::UnlessStopped, Some(2), 9, true),
            (on_failure(None), Some(0), 0, false),
            (on_failure(None), Some(1), 0, true),
            (on_failure(None), Some(1), 1000, true),
            // An unknown exit (a lost shim) is a failure.
            (on_failure(None), None, 0, true),
            (on_failure(Some(3)), Some(1), 2, true),
            (on_failure(Some(3)), Some(1), 3, false),
            (on_failure(Some(0)), Some(1), 0, false),
        ];
        for (policy, code, restarts, want) in cases {
            let s = ended(code, restarts);
            let got = after_exit(&plan(&policy, &cfg), &s, Duration::ZERO, || 0.0);
            assert_eq!(
                got.restarts(),
                want,
                "{policy} exit {code:?} after {restarts} restarts: {got:?}"
            );
            assert_eq!(will_restart(&plan(&policy, &cfg), &s), want);
            if want {
                assert!(matches!(got, AfterExit::Restart { .. }));
            } else {
                assert_eq!(got, AfterExit::Stay);
            }
        }
    }

    #[test]
    fn an_oom_kill_is_a_failure() {
        let cfg = BackoffConfig::default();
        let policy = RestartPolicy::OnFailure { max: None };
        let mut s = Status::fresh(ContainerState::Created, at(0));
        s.started(StartBy::User, pids(), 4, at(1));
        // Killed by SIGKILL (exit 0 is impossible then, but the counter
        // decides): the cgroup's OOM counter grew from 4 to 5.
        let exit = ExitInfo {
            code: 0,
            signal: libc::SIGKILL,
            finished_at: at(2),
        };
        s.exited(Some(exit), Some(5));
        assert!(s.oom_killed);
        assert_eq!(s.oom_kills, 5);
        assert!(after_exit(&plan(&policy, &cfg), &s, Duration::ZERO, || 0.0).restarts());
        // The same exit without an OOM kill is a success.
        let mut s = Status::fresh(ContainerState::Created, at(0));
        s.started(StartBy::User, pids(), 4, at(1));
        s.exited(Some(exit), Some(4));
        assert!(!s.oom_killed);
        assert_eq!(
            after_exit(&plan(&policy, &cfg), &s, Duration::ZERO, || 0.0),
            AfterExit::Stay
        );
        // A SIGTERM while the counter grew is not an OOM kill.
        let mut s = Status::fresh(ContainerState::Created, at(0));
        s.started(StartBy::User, pids(), 4, at(1));
        let term = ExitInfo {
            signal: libc::SIGTERM,
            ..exit
        };
        s.exited(Some(term), Some(6));
        assert!(!s.oom_killed);
        assert_eq!(s.oom_kills, 6);
    }

    #[test]
    fn a_user_stop_is_never_restarted() {
        let cfg = BackoffConfig::default();
        for policy in [
            RestartPolicy::Always,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure { max: None },
        ] {
            let mut s = Status::fresh(ContainerState::Created, at(0));
            s.started(StartBy::User, pids(), 0, at(1));
            s.stop_by_user();
            assert_eq!(s.state, ContainerState::Running, "the stop only marks it");
            s.exited(
                Some(ExitInfo {
                    code: 143,
                    signal: libc::SIGTERM,
                    finished_at: at(2),
                }),
                None,
            );
            assert_eq!(
                after_exit(&plan(&policy, &cfg), &s, Duration::ZERO, || 0.0),
                AfterExit::Stay,
                "{policy}"
            );
            // Supervised, the same.
            let p = Plan {
                supervised: true,
                ..plan(&policy, &cfg)
            };
            assert_eq!(after_exit(&p, &s, Duration::ZERO, || 0.0), AfterExit::Stay);
            // A user start clears the stop.
            s.started(StartBy::User, pids(), 0, at(3));
            assert!(!s.stopped_by_user);
        }
    }

    #[test]
    fn auto_remove_wins_over_every_policy_and_supervisor() {
        let cfg = BackoffConfig::default();
        for policy in [RestartPolicy::No, RestartPolicy::Always] {
            for supervised in [false, true] {
                let p = Plan {
                    auto_remove: true,
                    supervised,
                    policy: &policy,
                    backoff: &cfg,
                };
                let s = ended(Some(1), 0);
                assert_eq!(
                    after_exit(&p, &s, Duration::ZERO, || 0.0),
                    AfterExit::Remove
                );
                assert!(!will_restart(&p, &s));
            }
        }
    }

    #[test]
    fn a_supervised_container_goes_to_its_supervisor_by_its_restart_type() {
        let cfg = BackoffConfig::default();
        // (policy = OTP restart type, exit code) -> to the supervisor?
        let cases = [
            (RestartPolicy::Always, 0, true),                     // permanent
            (RestartPolicy::UnlessStopped, 1, true),              // permanent
            (RestartPolicy::OnFailure { max: Some(1) }, 1, true), // transient: no max
            (RestartPolicy::OnFailure { max: None }, 0, false),
            (RestartPolicy::No, 1, false), // temporary
        ];
        for (policy, code, want) in cases {
            let p = Plan {
                supervised: true,
                ..plan(&policy, &cfg)
            };
            // Many restarts already: the supervisor's intensity limits
            // them, not the policy's max.
            let s = ended(Some(code), 5);
            let got = after_exit(&p, &s, Duration::ZERO, || 0.0);
            let expect = if want {
                AfterExit::Supervisor
            } else {
                AfterExit::Stay
            };
            assert_eq!(got, expect, "{policy} exit {code}");
            assert_eq!(will_restart(&p, &s), want);
        }
        // Stopped by its supervisor (to restart it with its siblings): the
        // supervisor starts it, not this exit.
        let policy = RestartPolicy::Always;
        let p = Plan {
            supervised: true,
            ..plan(&policy, &cfg)
        };
        let mut s = ended(Some(143), 0);
        s.supervisor_stopping = true;
        assert_eq!(after_exit(&p, &s, Duration::ZERO, || 0.0), AfterExit::Stay);
        // A start clears the mark.
        s.started(StartBy::Supervisor, pids(), 0, at(3));
        assert!(!s.supervisor_stopping);
    }

    #[test]
    fn restarts_follow_the_backoff_schedule_and_reset_after_a_long_run() {
        let cfg = BackoffConfig::default(); // 100 ms doubling to 60 s, reset after 10 s
        let policy = RestartPolicy::Always;
        let p = plan(&policy, &cfg);
        let mut s = ended(Some(1), 0);
        let mut delays = Vec::new();
        for i in 0..12u64 {
            let a = after_exit(&p, &s, Duration::from_millis(5), || 0.0);
            let AfterExit::Restart { delay, backoff } = a else {
                panic!("{a:?}");
            };
            delays.push(delay.as_millis());
            // Carried out: restarting, then started by the policy, then
            // another crash.
            s.restart_at(backoff, at(10 + i) + delay);
            assert_eq!(s.state, ContainerState::Restarting);
            assert_eq!(s.next_start_at, Some(at(10 + i) + delay));
            assert_eq!(start_gate(StartBy::Policy, &s), StartGate::Go);
            s.started(StartBy::Policy, pids(), 0, at(11 + i));
            s.exited(None, None);
        }
        assert_eq!(
            delays,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000
            ]
        );
        assert_eq!(s.restart_count, 12);
        assert_eq!(s.restarts_total, 12);
        // A run of 10 s or more starts the schedule over.
        let a = after_exit(&p, &s, Duration::from_secs(10), || 0.0);
        assert_eq!(restart_delay(a), Some(Duration::from_millis(100)));
        // So does a user start (and it clears the count, not the total).
        s.started(StartBy::User, pids(), 0, at(100));
        s.exited(None, None);
        assert_eq!(s.restart_count, 0);
        assert_eq!(s.restarts_total, 12);
        let a = after_exit(&p, &s, Duration::ZERO, || 0.0);
        assert_eq!(restart_delay(a), Some(Duration::from_millis(100)));
    }

    #[test]
    fn jitter_shortens_a_delay_by_at_most_its_fraction() {
        let cfg = BackoffConfig {
            jitter: 0.5,
            ..BackoffConfig::default()
        };
        let policy = RestartPolicy::Always;
        let s = ended(Some(1), 0);
        let d = |r| {
            restart_delay(after_exit(
                &plan(&policy, &cfg),
                &s,
                Duration::ZERO,
                move || r,
            ))
        };
        assert_eq!(d(0.0), Some(Duration::from_millis(100)));
        assert_eq!(d(0.5), Some(Duration::from_millis(75)));
        assert_eq!(d(0.999_999), Some(Duration::from_nanos(50_000_050)));
    }

    #[test]
    fn a_failed_policy_start_counts_and_backs_off_further() {
        let cfg = BackoffConfig::default();
        let policy = RestartPolicy::OnFailure { max: Some(2) };
        let p = plan(&policy, &cfg);
        let mut s = ended(Some(1), 0);
        let AfterExit::Restart { delay, backoff } = after_exit(&p, &s, Duration::ZERO, || 0.0)
        else {
            panic!("no restart");
        };
        assert_eq!(delay, Duration::from_millis(100));
        s.restart_at(backoff, at(5));
        s.restart_failed("starting the command failed".into());
        assert_eq!(s.state, ContainerState::Exited);
        assert_eq!(s.restart_count, 1);
        assert_eq!(s.error, "starting the command failed");
        let AfterExit::Restart { delay, backoff } = after_exit(&p, &s, Duration::ZERO, || 0.0)
        else {
            panic!("no second restart");
        };
        assert_eq!(delay, Duration::from_millis(200));
        s.restart_at(backoff, at(6));
        s.restart_failed("again".into());
        // Two attempts: on-failure:2 gives up.
        assert_eq!(after_exit(&p, &s, Duration::ZERO, || 0.0), AfterExit::Stay);
    }

    #[test]
    fn a_start_goes_ahead_only_from_the_right_states() {
        use ContainerState::*;
        // (who, state, stopped by user) -> gate
        let cases = [
            (StartBy::User, Created, false, StartGate::Go),
            (StartBy::User, Exited, true, StartGate::Go),
            (StartBy::User, Restarting, false, StartGate::Go),
            (StartBy::User, Running, false, StartGate::Running),
            (StartBy::User, Removed, false, StartGate::Removed),
            (StartBy::User, Unknown, false, StartGate::Running),
            // A policy start is for a pending restart only.
            (StartBy::Policy, Restarting, false, StartGate::Go),
            (StartBy::Policy, Exited, false, StartGate::Moot),
            (StartBy::Policy, Running, false, StartGate::Moot),
            (StartBy::Policy, Removed, false, StartGate::Moot),
            (StartBy::Policy, Created, false, StartGate::Moot),
            // A supervisor's: not over a user stop, nor twice.
            (StartBy::Supervisor, Exited, false, StartGate::Go),
            (StartBy::Supervisor, Restarting, false, StartGate::Go),
            (StartBy::Supervisor, Created, false, StartGate::Go),
            (StartBy::Supervisor, Exited, true, StartGate::Moot),
            (StartBy::Supervisor, Running, false, StartGate::Moot),
            (StartBy::Supervisor, Removed, false, StartGate::Moot),
        ];
        for (by, state, stopped, want) in cases {
            let mut s = Status::fresh(state, at(0));
            s.stopped_by_user = stopped;
            assert_eq!(
                start_gate(by, &s),
                want,
                "{by:?} from {state:?} (stopped {stopped})"
            );
        }
    }

    #[test]
    fn a_user_stop_calls_off_a_pending_restart() {
        let mut s = ended(Some(1), 0);
        s.restart_at(Backoff::default(), at(9));
        s.stop_by_user();
        assert_eq!(s.state, ContainerState::Exited);
        assert_eq!(s.next_start_at, None);
        assert!(s.stopped_by_user);
        // The timer that fires anyway finds nothing to do.
        assert_eq!(start_gate(StartBy::Policy, &s), StartGate::Moot);
    }

    #[test]
    fn a_failed_start_keeps_the_last_exit_unless_the_command_could_not_run() {
        let mut s = ended(Some(3), 0);
        s.start_failed("cgroup: no space".into(), None);
        assert_eq!(s.error, "cgroup: no space");
        assert_eq!(s.exit.map(|e| e.code), Some(3));
        let not_found = ExitInfo {
            code: 127,
            signal: 0,
            finished_at: at(4),
        };
        s.start_failed("not found".into(), Some(not_found));
        assert_eq!(s.exit, Some(not_found));
        assert_eq!(s.state, ContainerState::Exited);
    }

    #[test]
    fn an_exit_without_a_record_says_so() {
        let mut s = Status::fresh(ContainerState::Created, at(0));
        s.started(StartBy::User, pids(), 0, at(1));
        assert_eq!(s.pids(), pids());
        s.exited(None, None);
        assert_eq!(s.state, ContainerState::Exited);
        assert_eq!(s.exit, None);
        assert_eq!(s.error, "the shim ended without recording an exit status");
        assert_eq!((s.shim_pid, s.init_pid), (0, 0));
        // The next start clears the error.
        s.started(StartBy::User, pids(), 0, at(2));
        assert!(s.error.is_empty());
        assert_eq!(s.start_count, 2);
    }

    #[test]
    fn at_rsupd_start_each_container_gets_its_policy() {
        let now = at(100);
        let always = RestartPolicy::Always;
        let unless = RestartPolicy::UnlessStopped;
        let on_failure = RestartPolicy::OnFailure { max: None };
        let no = RestartPolicy::No;
        let exited = |stopped| {
            let mut s = ended(Some(0), 0);
            s.stopped_by_user = stopped;
            s
        };
        // Died while rsupd was down: decided as an exit, whatever the policy.
        for p in [&always, &no] {
            assert_eq!(on_open(p, &exited(false), true, now), OnOpen::Exited);
        }
        // Exited: started with the daemon by always, and by unless-stopped
        // unless the user stopped it.
        assert_eq!(
            on_open(&always, &exited(true), false, now),
            OnOpen::StartIn(Duration::ZERO)
        );
        assert_eq!(
            on_open(&unless, &exited(false), false, now),
            OnOpen::StartIn(Duration::ZERO)
        );
        assert_eq!(on_open(&unless, &exited(true), false, now), OnOpen::Leave);
        assert_eq!(
            on_open(&on_failure, &exited(false), false, now),
            OnOpen::Leave
        );
        assert_eq!(on_open(&no, &exited(false), false, now), OnOpen::Leave);
        // A pending restart keeps its due time; an overdue one starts now.
        let mut s = ended(Some(1), 0);
        s.restart_at(Backoff::default(), at(103));
        assert_eq!(
            on_open(&no, &s, false, now),
            OnOpen::StartIn(Duration::from_secs(3))
        );
        s.restart_at(Backoff::default(), at(90));
        assert_eq!(
            on_open(&no, &s, false, now),
            OnOpen::StartIn(Duration::ZERO)
        );
        // Running (re-adopted) or created: left alone.
        let mut s = Status::fresh(ContainerState::Created, at(0));
        assert_eq!(on_open(&always, &s, false, now), OnOpen::Leave);
        s.started(StartBy::User, pids(), 0, at(1));
        assert_eq!(on_open(&always, &s, false, now), OnOpen::Leave);
    }
}
