//! Supervisor trees as in Erlang/OTP, the pure part: strategies, restart
//! intensity, child restart types, cycle checks. The runtime
//! (`crate::supervisors`) applies them to real containers.
//!
//! A supervisor's children are containers (joined with `--supervisor`) and
//! other supervisors (created with `--parent`), in the order they joined.
//! When a child fails and its restart type says it should be restarted:
//! * `one_for_one`: only that child is restarted;
//! * `one_for_all`: every child is stopped (in reverse order) and all are
//!   started again in order;
//! * `rest_for_one`: the failed child and those that joined after it.
//!
//! More than `intensity` restarts within `period` make the supervisor stop
//! all its children and fail; its parent then treats it as a failed child
//! (escalation). A root supervisor that fails stays failed.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::RestartPolicy;
use crate::names::SupervisorName;

/// Which children a failure restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "one_for_one" => Ok(Strategy::OneForOne),
            "one_for_all" => Ok(Strategy::OneForAll),
            "rest_for_one" => Ok(Strategy::RestForOne),
            _ => Err(format!(
                "{} is not a strategy: use one_for_one, one_for_all or rest_for_one",
                crate::names::quote(s)
            )),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        })
    }
}

/// OTP's child restart types, mapped onto restart policies: `permanent` =
/// always/unless-stopped, `transient` = on-failure, `temporary` = no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildRestart {
    Permanent,
    Transient,
    Temporary,
}

impl ChildRestart {
    pub fn of(policy: &RestartPolicy) -> ChildRestart {
        match policy {
            RestartPolicy::Always | RestartPolicy::UnlessStopped => ChildRestart::Permanent,
            RestartPolicy::OnFailure { .. } => ChildRestart::Transient,
            RestartPolicy::No => ChildRestart::Temporary,
        }
    }

    /// Whether a child that ended with `exit_code` (OOM: `oom_killed`) is
    /// restarted by its supervisor.
    pub fn restarts(self, exit_code: i32, oom_killed: bool) -> bool {
        match self {
            ChildRestart::Permanent => true,
            ChildRestart::Transient => exit_code != 0 || oom_killed,
            ChildRestart::Temporary => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChildRestart::Permanent => "permanent",
            ChildRestart::Transient => "transient",
            ChildRestart::Temporary => "temporary",
        }
    }
}

/// A supervisor as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorSpec {
    pub name: SupervisorName,
    pub strategy: Strategy,
    /// At most this many restarts...
    pub intensity: u32,
    /// ...within this period.
    pub period: Duration,
    pub parent: Option<SupervisorName>,
}

/// The children to restart, in start order, when `failed` fails.
pub fn affected<'a>(strategy: Strategy, children: &'a [String], failed: &str) -> Vec<&'a String> {
    let pos = children.iter().position(|c| c == failed);
    match (strategy, pos) {
        (_, None) => Vec::new(),
        (Strategy::OneForOne, Some(i)) => vec![&children[i]],
        (Strategy::OneForAll, Some(_)) => children.iter().collect(),
        (Strategy::RestForOne, Some(i)) => children[i..].iter().collect(),
    }
}

/// The restarts a supervisor made recently.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartWindow {
    times: VecDeque<SystemTime>,
}

impl RestartWindow {
    /// Records a restart at `now`; false when that makes more than
    /// `intensity` restarts within `period` (the supervisor must give up).
    pub fn record(&mut self, now: SystemTime, intensity: u32, period: Duration) -> bool {
        while let Some(&t) = self.times.front() {
            if now.duration_since(t).unwrap_or_default() >= period {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.push_back(now);
        self.times.len() <= intensity as usize
    }

    pub fn clear(&mut self) {
        self.times.clear();
    }
}

/// Persisted state of a supervisor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SupState {
    /// It gave up (too many restarts) and its children are stopped.
    pub failed: bool,
    pub window: RestartWindow,
    /// Strategy applications so far.
    pub restarts: u64,
}

/// What a supervisor does when one of its children fails (and its
/// restart type says it should be restarted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure<'a> {
    /// It has failed already: its children are stopped, nothing more.
    Ignore,
    /// That restart would be more than `intensity` within `period`: stop
    /// every child (in reverse order), fail, and hand the failure to the
    /// parent supervisor (a failed root: the tree failed).
    Escalate,
    /// Stop `stop` (the others the strategy takes down, in reverse start
    /// order), then start `start` (in start order, the failed one among
    /// them).
    Restart {
        stop: Vec<&'a String>,
        start: Vec<&'a String>,
    },
}

/// Decides what supervisor `spec` in state `state` does at `now` when
/// `failed`, one of its `children` (in start order), fails; records the
/// restart in `state`.
pub fn on_child_failure<'a>(
    spec: &SupervisorSpec,
    state: &mut SupState,
    now: SystemTime,
    children: &'a [String],
    failed: &str,
) -> OnFailure<'a> {
    if state.failed {
        return OnFailure::Ignore;
    }
    if !state.window.record(now, spec.intensity, spec.period) {
        return OnFailure::Escalate;
    }
    state.restarts += 1;
    let start = affected(spec.strategy, children, failed);
    let stop = start
        .iter()
        .rev()
        .filter(|c| **c != failed)
        .copied()
        .collect();
    OnFailure::Restart { stop, start }
}

/// Whether making `parent` the parent of `name` creates a cycle, given a
/// lookup of each supervisor's parent.
pub fn creates_cycle(name: &str, parent: &str, parent_of: impl Fn(&str) -> Option<String>) -> bool {
    let mut cur = Some(parent.to_string());
    let mut hops = 0;
    while let Some(p) = cur {
        if p == name || hops > 1000 {
            return true;
        }
        cur = parent_of(&p);
        hops += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Vec<&String>) -> Vec<&str> {
        v.into_iter().map(String::as_str).collect()
    }

    #[test]
    fn strategies_pick_the_right_children() {
        let kids: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(names(affected(Strategy::OneForOne, &kids, "b")), ["b"]);
        assert_eq!(
            names(affected(Strategy::OneForAll, &kids, "b")),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            names(affected(Strategy::RestForOne, &kids, "b")),
            ["b", "c", "d"]
        );
        assert_eq!(names(affected(Strategy::RestForOne, &kids, "d")), ["d"]);
        assert!(affected(Strategy::OneForAll, &kids, "x").is_empty());
        assert_eq!("rest_for_one".parse(), Ok(Strategy::RestForOne));
        assert!("one_for_some".parse::<Strategy>().is_err());
    }

    #[test]
    fn intensity_window_slides() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let s = Duration::from_secs;
        let mut w = RestartWindow::default();
        assert!(w.record(t0, 2, s(10)));
        assert!(w.record(t0 + s(1), 2, s(10)));
        assert!(
            !w.record(t0 + s(2), 2, s(10)),
            "third restart within 10 s exceeds 2"
        );
        let mut w = RestartWindow::default();
        assert!(w.record(t0, 2, s(10)));
        assert!(w.record(t0 + s(5), 2, s(10)));
        assert!(
            w.record(t0 + s(11), 2, s(10)),
            "the first one left the window"
        );
    }

    #[test]
    fn restart_types_follow_policies() {
        assert_eq!(
            ChildRestart::of(&RestartPolicy::Always),
            ChildRestart::Permanent
        );
        assert_eq!(
            ChildRestart::of(&RestartPolicy::OnFailure { max: None }),
            ChildRestart::Transient
        );
        assert_eq!(
            ChildRestart::of(&RestartPolicy::No),
            ChildRestart::Temporary
        );
        assert!(ChildRestart::Permanent.restarts(0, false));
        assert!(!ChildRestart::Transient.restarts(0, false));
        assert!(ChildRestart::Transient.restarts(0, true));
        assert!(!ChildRestart::Temporary.restarts(1, false));
    }

    #[test]
    fn cycles_are_found() {
        let parents = |n: &str| match n {
            "b" => Some("a".to_string()),
            "c" => Some("b".to_string()),
            _ => None,
        };
        assert!(creates_cycle("a", "c", parents));
        assert!(creates_cycle("a", "a", parents));
        assert!(!creates_cycle("d", "c", parents));
    }

    fn spec(strategy: Strategy, intensity: u32, period_s: u64) -> SupervisorSpec {
        SupervisorSpec {
            name: SupervisorName::parse("sup").expect("name"),
            strategy,
            intensity,
            period: Duration::from_secs(period_s),
            parent: None,
        }
    }

    fn restart_of<'a>(d: OnFailure<'a>) -> (Vec<&'a str>, Vec<&'a str>) {
        match d {
            OnFailure::Restart { stop, start } => (
                stop.iter().map(|s| s.as_str()).collect(),
                start.iter().map(|s| s.as_str()).collect(),
            ),
            other => panic!("not a restart: {other:?}"),
        }
    }

    #[test]
    fn each_strategy_stops_the_others_in_reverse_and_starts_in_order() {
        let kids: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let cases = [
            (Strategy::OneForOne, "c", vec![], vec!["c"]),
            (
                Strategy::OneForAll,
                "b",
                vec!["d", "c", "a"],
                vec!["a", "b", "c", "d"],
            ),
            (
                Strategy::RestForOne,
                "b",
                vec!["d", "c"],
                vec!["b", "c", "d"],
            ),
            (Strategy::RestForOne, "d", vec![], vec!["d"]),
        ];
        for (strategy, failed, stop, start) in cases {
            let mut st = SupState::default();
            let d = on_child_failure(&spec(strategy, 3, 5), &mut st, t, &kids, failed);
            assert_eq!(restart_of(d), (stop, start), "{strategy} after {failed}");
            assert_eq!(st.restarts, 1);
            assert!(!st.failed);
        }
        // A child it does not know (gone meanwhile): nothing to restart.
        let mut st = SupState::default();
        let d = on_child_failure(&spec(Strategy::OneForAll, 3, 5), &mut st, t, &kids, "x");
        assert_eq!(restart_of(d), (vec![], vec![]));
    }

    #[test]
    fn more_than_intensity_restarts_within_the_period_escalate() {
        for strategy in [
            Strategy::OneForOne,
            Strategy::OneForAll,
            Strategy::RestForOne,
        ] {
            let kids: Vec<String> = ["a", "b"].map(String::from).to_vec();
            let sp = spec(strategy, 2, 10);
            let mut st = SupState::default();
            let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + s);
            assert!(matches!(
                on_child_failure(&sp, &mut st, t(0), &kids, "a"),
                OnFailure::Restart { .. }
            ));
            assert!(matches!(
                on_child_failure(&sp, &mut st, t(4), &kids, "b"),
                OnFailure::Restart { .. }
            ));
            // A third within 10 s of the first: the supervisor gives up.
            assert_eq!(
                on_child_failure(&sp, &mut st, t(9), &kids, "a"),
                OnFailure::Escalate,
                "{strategy}"
            );
            assert_eq!(st.restarts, 2);
            // The driver stops the children and marks it failed: later
            // failures are ignored until its parent restarts it.
            st.failed = true;
            assert_eq!(
                on_child_failure(&sp, &mut st, t(60), &kids, "a"),
                OnFailure::Ignore
            );
            // Restarted by its parent: a fresh window.
            st.failed = false;
            st.window.clear();
            assert!(matches!(
                on_child_failure(&sp, &mut st, t(61), &kids, "a"),
                OnFailure::Restart { .. }
            ));
        }
    }

    #[test]
    fn restarts_spread_over_more_than_the_period_never_escalate() {
        let kids: Vec<String> = vec!["a".into()];
        let sp = spec(Strategy::OneForOne, 1, 10);
        let mut st = SupState::default();
        for i in 0..20u64 {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + i * 10);
            let d = on_child_failure(&sp, &mut st, now, &kids, "a");
            assert_eq!(restart_of(d), (vec![], vec!["a"]), "restart {i}");
        }
        assert_eq!(st.restarts, 20);
    }
}
