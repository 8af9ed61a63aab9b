//! Supervision: restart policies and their backoff, what survives an rsupd
//! restart, user stop versus crash, OTP supervisor strategies and
//! escalation, health checks, exec, and the event stream that records it all.
//!
//! Timing is observed, never assumed: every wait polls a condition or reads
//! the event stream with a deadline. The few sleeps only let time pass for a
//! "nothing happens" check, or past a restart that is due while rsupd is down.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use rsup_client::proto::{ContainerState, Event, EventsRequest, ExecRequest};
use rsup_tests::{Daemon, KillOnDrop, describe, eventually, stderr, stdout, unique_name};

/// Bound of any wait for something rsupd does within a few seconds.
const WAIT: Duration = Duration::from_secs(30);
/// Bound of the waits that span many backoff delays (escalation).
const LONG_WAIT: Duration = Duration::from_secs(90);

/// A command that fails on its first run and sleeps on every later one (the
/// marker file lives in the container's upper layer, kept across restarts).
const FAIL_ONCE: &str = "test -e /tmp/ran && exec sleep 1000; touch /tmp/ran; exit 1";

// ---------------------------------------------------------------------------
// Helpers

/// Events for `subjects` (containers or supervisors; empty: all) from `since`
/// on, the remembered ones first and then live ones, read until `done` holds
/// for what was read. Panics with what was seen once `timeout` has passed.
async fn events_until(
    d: &Daemon,
    since: SystemTime,
    subjects: &[&str],
    what: &str,
    timeout: Duration,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let request = EventsRequest {
        types: Vec::new(),
        containers: subjects.iter().map(|s| (*s).to_owned()).collect(),
        since: Some(since.into()),
    };
    let mut stream = d.client().events(request).await.expect("events");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        if done(&seen) {
            return seen;
        }
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(e))) => seen.push(e),
            Ok(Ok(None)) => panic!(
                "the event stream ended while waiting for {what}; seen:\n{}",
                summary(&seen)
            ),
            Ok(Err(status)) => panic!(
                "the event stream failed while waiting for {what}: {status}; seen:\n{}",
                summary(&seen)
            ),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what}; seen:\n{}",
                summary(&seen)
            ),
        }
    }
}

/// Every event for `subjects` since `since`, up to now: a marker container is
/// created, and its `create` event (published after everything before it)
/// ends the read. The marker is removed again.
async fn history(d: &Daemon, since: SystemTime, subjects: &[&str]) -> Vec<Event> {
    let marker = unique_name("marker");
    let mut with_marker = subjects.to_vec();
    with_marker.push(&marker);
    let spec = d.spec(&marker, &["true"]);
    let created = d.client().create(spec).await.expect("create the marker");
    let events = events_until(
        d,
        since,
        &with_marker,
        "the marker's create event",
        WAIT,
        |ev| {
            ev.iter()
                .any(|e| e.subject == marker && e.r#type == "create")
        },
    )
    .await;
    d.client()
        .remove(&created.id, true)
        .await
        .expect("remove the marker");
    events.into_iter().filter(|e| e.subject != marker).collect()
}

/// One line per event, for assertion messages.
fn summary(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| {
            let mut attrs: Vec<String> = e
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attrs.sort();
            format!(
                "{:?} {} {} {} {}",
                e.time.map(|t| (t.seconds, t.nanos)),
                e.subject_type,
                e.r#type,
                e.subject,
                attrs.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn time_of(e: &Event) -> SystemTime {
    let ts = e
        .time
        .unwrap_or_else(|| panic!("event without a time: {e:?}"));
    SystemTime::try_from(ts).unwrap_or_else(|err| panic!("event time {ts:?}: {err}"))
}

fn attr<'a>(e: &'a Event, key: &str) -> &'a str {
    e.attributes
        .get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("event without {key}: {e:?}"))
}

/// Events of `kind` for `subject`.
fn of<'a>(events: &'a [Event], subject: &str, kind: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.subject == subject && e.r#type == kind)
        .collect()
}

fn count(events: &[Event], subject: &str, kind: &str) -> usize {
    of(events, subject, kind).len()
}

/// `(type, subject)` of each event, in order.
fn steps(events: &[Event]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|e| (e.r#type.as_str(), e.subject.as_str()))
        .collect()
}

/// `rsupctl run -d` that must succeed.
fn run_detached(d: &Daemon, name: &str, flags: &[&str], command: &[&str]) {
    let mut all = vec!["-d", "--name", name];
    all.extend_from_slice(flags);
    let out = d.run(&all, command);
    assert!(out.status.success(), "run {name}: {}", describe(&out));
}

/// Polls `inspect` until `ok` holds for the container, and returns it.
async fn wait_for(
    d: &Daemon,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&rsup_client::proto::Container) -> bool,
) -> rsup_client::proto::Container {
    eventually(&format!("{name}: {what}"), timeout, async || {
        let c = d
            .client()
            .inspect(name)
            .await
            .map_err(|e| format!("inspect: {e}"))?;
        if ok(&c) {
            Ok(c)
        } else {
            Err(format!(
                "state {:?}, pid {}, starts {}, restarts {}, health {:?}",
                ContainerState::try_from(c.state),
                c.pid,
                c.start_count,
                c.restart_count,
                c.health
            ))
        }
    })
    .await
}

fn running(c: &rsup_client::proto::Container) -> bool {
    c.state == ContainerState::Running as i32 && c.pid > 0
}

/// `rsupctl events --format json ARGS...` read line by line (in a thread)
/// until `done` holds for the parsed lines; the process is killed after.
fn ctl_events_until(
    d: &Daemon,
    args: &[&str],
    what: &str,
    timeout: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut cmd = d.ctl_command();
    cmd.args(["events", "--format", "json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn rsupctl events"));
    let pipe = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<serde_json::Value> = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("event line {line:?}: {e}")),
            ),
            Err(err) => panic!(
                "no more events from rsupctl ({err}) while waiting for {what}; seen:\n{}",
                seen.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
    seen
}

/// Parses `rsupctl tree --format json` (one root per line).
fn tree_json(d: &Daemon) -> Vec<serde_json::Value> {
    d.ctl_ok(["tree", "--format", "json"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("tree line {l:?}: {e}")))
        .collect()
}

/// The `rsupctl supervisor ls` row of `name`, split on whitespace.
fn supervisor_row(d: &Daemon, name: &str) -> Vec<String> {
    let text = d.ctl_ok(["supervisor", "ls"]);
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.first().is_some_and(|c| c == name))
        .unwrap_or_else(|| panic!("{name} not in supervisor ls:\n{text}"))
}

// ---------------------------------------------------------------------------
// Restart policies

#[tokio::test(flavor = "multi_thread")]
async fn always_restarts_on_the_backoff_schedule() {
    let d = Daemon::start().await;
    let since = SystemTime::now();
    let name = unique_name("backoff");
    run_detached(
        &d,
        &name,
        &[
            "--restart",
            "always",
            "--restart-delay",
            "200ms",
            "--restart-max-delay",
            "800ms",
        ],
        &["sh", "-c", "exit 1"],
    );
    // The first start and four policy restarts.
    let events = events_until(&d, since, &[&name], "five starts", WAIT, |ev| {
        count(ev, &name, "start") >= 5
    })
    .await;
    let restarts = of(&events, &name, "restart");
    let delays: Vec<&str> = restarts.iter().map(|e| attr(e, "delay_ms")).collect();
    assert_eq!(delays, ["200", "400", "800", "800"], "{}", summary(&events));
    let attempts: Vec<&str> = restarts.iter().map(|e| attr(e, "attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3", "4"], "{}", summary(&events));

    // Each die -> start gap is the announced delay (plus the start itself).
    for (i, restart) in events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.r#type == "restart")
    {
        let delay = Duration::from_millis(attr(restart, "delay_ms").parse().expect("a number"));
        let died = events[..i]
            .iter()
            .rev()
            .find(|e| e.r#type == "die")
            .unwrap_or_else(|| panic!("no die before restart {i}:\n{}", summary(&events)));
        let started = events[i..]
            .iter()
            .find(|e| e.r#type == "start")
            .unwrap_or_else(|| panic!("no start after restart {i}:\n{}", summary(&events)));
        let gap = time_of(started)
            .duration_since(time_of(died))
            .unwrap_or_else(|_| panic!("start before die:\n{}", summary(&events)));
        assert!(
            gap + Duration::from_millis(20) >= delay && gap < delay + Duration::from_millis(400),
            "restart {i}: delay {delay:?}, but {gap:?} from die to start:\n{}",
            summary(&events)
        );
    }
    let j = d.inspect_json(&name);
    assert!(j["RestartCount"].as_u64() >= Some(4), "{j}");
    assert_eq!(j["State"]["RestartDelayMs"], 800, "{j}");
    assert_eq!(j["HostConfig"]["RestartPolicy"]["Name"], "always", "{j}");
    d.ctl_ok(["rm", "-f", &name]);

    // A run longer than --restart-reset-after starts the schedule over.
    let since = SystemTime::now();
    let steady = unique_name("steady");
    run_detached(
        &d,
        &steady,
        &[
            "--restart",
            "always",
            "--restart-delay",
            "100ms",
            "--restart-reset-after",
            "1s",
        ],
        &["sh", "-c", "sleep 1.5; exit 1"],
    );
    let events = events_until(&d, since, &[&steady], "three restarts", WAIT, |ev| {
        count(ev, &steady, "restart") >= 3
    })
    .await;
    let delays: Vec<&str> = of(&events, &steady, "restart")
        .iter()
        .map(|e| attr(e, "delay_ms"))
        .collect();
    assert_eq!(delays, ["100", "100", "100"], "{}", summary(&events));
}

#[tokio::test(flavor = "multi_thread")]
async fn on_failure_3_stops_after_three_restarts_with_its_last_exit_code() {
    let d = Daemon::start().await;
    let since = SystemTime::now();
    let name = unique_name("thrice");
    run_detached(
        &d,
        &name,
        &["--restart", "on-failure:3", "--restart-delay", "50ms"],
        &["sh", "-c", "exit 7"],
    );
    let c = wait_for(&d, &name, "exited after 3 restarts", WAIT, |c| {
        c.state == ContainerState::Exited as i32 && c.restart_count == 3
    })
    .await;
    assert_eq!(c.exit.as_ref().map(|e| e.exit_code), Some(7), "{c:?}");
    // That no fourth restart comes, however long one waits, is the
    // lifecycle's (runtime containers::tests, on the paused clock).
    let j = d.inspect_json(&name);
    assert_eq!(j["State"]["Status"], "exited", "{j}");
    assert_eq!(j["State"]["ExitCode"], 7, "{j}");
    assert_eq!(j["RestartCount"], 3, "{j}");
    assert_eq!(j["StartCount"], 4, "{j}");
    assert_eq!(
        j["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 3}),
        "{j}"
    );
    let events = history(&d, since, &[&name]).await;
    assert_eq!(count(&events, &name, "start"), 4, "{}", summary(&events));
    assert_eq!(count(&events, &name, "die"), 4, "{}", summary(&events));
    assert_eq!(count(&events, &name, "restart"), 3, "{}", summary(&events));
    for die in of(&events, &name, "die") {
        assert_eq!(attr(die, "exit_code"), "7", "{}", summary(&events));
    }
    let out = d.ctl(["wait", &name]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn unless_stopped_across_an_rsupd_restart() {
    let mut d = Daemon::start().await;
    let stopped = unique_name("stopped");
    run_detached(
        &d,
        &stopped,
        &["--restart", "unless-stopped"],
        &["sleep", "1000"],
    );
    // Fails once, then waits 3 s for its restart: rsupd is down meanwhile.
    let back = unique_name("back");
    run_detached(
        &d,
        &back,
        &[
            "--restart",
            "unless-stopped",
            "--restart-delay",
            "3s",
            "--restart-max-delay",
            "3s",
        ],
        &["sh", "-c", FAIL_ONCE],
    );
    d.wait_state(&stopped, ContainerState::Running, WAIT).await;
    d.ctl_ok(["stop", "-t", "1", &stopped]);
    let waiting = d.wait_state(&back, ContainerState::Restarting, WAIT).await;
    assert_eq!(waiting.start_count, 1, "{waiting:?}");
    let due = waiting
        .next_start_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or_else(|| panic!("a restarting container has NextStartAt: {waiting:?}"));
    let j = d.inspect_json(&back);
    assert_eq!(j["State"]["Status"], "restarting", "{j}");
    assert_eq!(j["State"]["Restarting"], true, "{j}");
    assert_eq!(j["State"]["RestartDelayMs"], 3000, "{j}");
    assert_ne!(j["State"]["NextStartAt"], "0001-01-01T00:00:00Z", "{j}");
    assert_eq!(j["RestartCount"], 0, "{j}");

    d.stop();
    // Let the restart come due while nobody can perform it.
    if let Ok(left) = due.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(300)).await;
    }
    let restarted_at = SystemTime::now();
    d.start_again().await;

    let c = wait_for(&d, &back, "running again", WAIT, running).await;
    assert_eq!(c.start_count, 2, "{c:?}");
    assert_eq!(c.restart_count, 1, "{c:?}");
    let started = c
        .started_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .expect("StartedAt");
    assert!(
        started >= restarted_at,
        "{back} started before rsupd came back: {c:?}"
    );
    // The user-stopped one is left alone (that it stays so is
    // lifecycle::container::tests::at_rsupd_start_each_container_gets_its_policy).
    let s = d.client().inspect(&stopped).await.expect("inspect");
    assert_eq!(s.state, ContainerState::Exited as i32, "{s:?}");
    assert_eq!(s.start_count, 1, "{s:?}");
    let j = d.inspect_json(&stopped);
    assert_eq!(j["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn always_comes_back_when_rsupd_starts() {
    let mut d = Daemon::start().await;
    // `always`, even after a user stop; `on-failure` and `no` stay down.
    let always = unique_name("always");
    let on_failure = unique_name("onfail");
    let plain = unique_name("plain");
    run_detached(&d, &always, &["--restart", "always"], &["sleep", "1000"]);
    run_detached(
        &d,
        &on_failure,
        &["--restart", "on-failure"],
        &["sleep", "1000"],
    );
    run_detached(&d, &plain, &[], &["sleep", "1000"]);
    for name in [&always, &on_failure, &plain] {
        d.wait_state(name, ContainerState::Running, WAIT).await;
        d.ctl_ok(["stop", "-t", "1", name]);
    }
    let before = d.client().inspect(&always).await.expect("inspect");
    assert_eq!(before.state, ContainerState::Exited as i32, "{before:?}");
    assert_eq!(
        before.start_count, 1,
        "a user stop suspends restarts: {before:?}"
    );

    let since = SystemTime::now();
    d.restart().await;
    let c = wait_for(&d, &always, "started with rsupd", WAIT, running).await;
    assert_eq!(c.start_count, 2, "{c:?}");
    let events = history(&d, since, &[&always, &on_failure, &plain]).await;
    assert_eq!(
        steps(&events),
        [("start", always.as_str())],
        "{}",
        summary(&events)
    );
    for name in [&on_failure, &plain] {
        let c = d.client().inspect(name).await.expect("inspect");
        assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
        assert_eq!(c.start_count, 1, "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_stop_suspends_restarts() {
    let d = Daemon::start().await;
    let since = SystemTime::now();
    let name = unique_name("suspend");
    run_detached(
        &d,
        &name,
        &["--restart", "always", "--restart-delay", "100ms"],
        &["sleep", "1000"],
    );
    let first = d.wait_state(&name, ContainerState::Running, WAIT).await;

    // kill is a crash, not a user stop: the policy restarts it.
    d.ctl_ok(["kill", "-s", "KILL", &name]);
    let second = wait_for(&d, &name, "restarted after kill", WAIT, |c| {
        running(c) && c.pid != first.pid
    })
    .await;
    assert_eq!(second.restart_count, 1, "{second:?}");
    assert_eq!(second.start_count, 2, "{second:?}");

    // stop is: nothing restarts it (however long one waits: the
    // lifecycle's unit tests, on the paused clock).
    d.ctl_ok(["stop", "-t", "1", &name]);
    let c = d.client().inspect(&name).await.expect("inspect");
    assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
    assert_eq!(c.start_count, 2, "{c:?}");

    // A user start resets the count and the backoff: the next crash waits
    // the first delay again (200 ms otherwise).
    d.ctl_ok(["start", &name]);
    let third = d.wait_state(&name, ContainerState::Running, WAIT).await;
    assert_eq!(third.restart_count, 0, "{third:?}");
    assert_eq!(d.inspect_json(&name)["RestartCount"], 0);
    d.ctl_ok(["kill", "-s", "KILL", &name]);
    let fourth = wait_for(&d, &name, "restarted after kill", WAIT, |c| {
        running(c) && c.pid != third.pid
    })
    .await;
    assert_eq!(fourth.restart_count, 1, "{fourth:?}");
    let events = history(&d, since, &[&name]).await;
    let delays: Vec<&str> = of(&events, &name, "restart")
        .iter()
        .map(|e| attr(e, "delay_ms"))
        .collect();
    assert_eq!(delays, ["100", "100"], "{}", summary(&events));
    let kinds: Vec<&str> = steps(&events).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "create", "start", "die", "restart", "start", "stop", "die", "start", "die", "restart",
            "start"
        ],
        "{}",
        summary(&events)
    );

    // A stop while a restart is pending cancels it.
    let pending = unique_name("pending");
    run_detached(
        &d,
        &pending,
        &["--restart", "always", "--restart-delay", "1s"],
        &["sh", "-c", "exit 1"],
    );
    d.wait_state(&pending, ContainerState::Restarting, WAIT)
        .await;
    d.ctl_ok(["stop", &pending]);
    let c = d.client().inspect(&pending).await.expect("inspect");
    assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
    // That the cancelled restart never runs is
    // containers::tests::a_user_stop_during_the_backoff_calls_off_the_restart.
    assert_eq!(c.start_count, 1, "the cancelled restart ran: {c:?}");
}

// ---------------------------------------------------------------------------
// Supervisors

/// A supervisor with `strategy` and three `always` children a, b, c (joined
/// in that order), all running; returns the supervisor's and the children's
/// names and the children's pids.
async fn three_children(d: &Daemon, strategy: &str) -> (String, [String; 3], [i32; 3]) {
    let sup = unique_name("sup");
    d.ctl_ok([
        "supervisor",
        "create",
        &sup,
        "--strategy",
        strategy,
        "--intensity",
        "5",
        "--period",
        "60s",
    ]);
    let names = ["a", "b", "c"].map(unique_name);
    for name in &names {
        run_detached(
            d,
            name,
            &["--supervisor", &sup, "--restart", "always"],
            &["sleep", "1000"],
        );
    }
    let mut pids = [0; 3];
    for (i, name) in names.iter().enumerate() {
        pids[i] = d.wait_state(name, ContainerState::Running, WAIT).await.pid;
    }
    let tree = tree_json(d);
    let children: Vec<&str> = tree[0]["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(children, names.each_ref().map(String::as_str), "{tree:?}");
    (sup, names, pids)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_for_all_restarts_every_sibling() {
    let d = Daemon::start().await;
    let (sup, [a, b, c], pids) = three_children(&d, "one_for_all").await;
    let since = SystemTime::now();
    d.ctl_ok(["kill", "-s", "KILL", &b]);
    let mut after = Vec::new();
    for (name, old) in [&a, &b, &c].into_iter().zip(pids) {
        let now = wait_for(&d, name, "restarted by the strategy", WAIT, |c| {
            running(c) && c.pid != old
        })
        .await;
        assert_eq!(now.restart_count, 1, "{now:?}");
        assert_eq!(d.inspect_json(name)["State"]["Pid"], now.pid);
        after.push(now);
    }

    let events = history(&d, since, &[&sup, &a, &b, &c]).await;
    let applied = of(&events, &sup, "supervisor_restart");
    assert_eq!(applied.len(), 1, "{}", summary(&events));
    assert_eq!(attr(applied[0], "strategy"), "one_for_all");
    assert_eq!(attr(applied[0], "child"), b);
    assert_eq!(attr(applied[0], "restarting"), format!("{a},{b},{c}"));
    // b crashed; the others are stopped in reverse order, then all three
    // start in order.
    let order: Vec<(&str, &str)> = steps(&events)
        .into_iter()
        .filter(|(k, _)| matches!(*k, "die" | "start"))
        .collect();
    assert_eq!(
        order,
        [
            ("die", b.as_str()),
            ("die", c.as_str()),
            ("die", a.as_str()),
            ("start", a.as_str()),
            ("start", b.as_str()),
            ("start", c.as_str()),
        ],
        "{}",
        summary(&events)
    );
    let tree = tree_json(&d);
    assert_eq!(tree[0]["state"], "running", "{tree:?}");
    assert_eq!(tree[0]["restarts"], 1, "{tree:?}");
    let row = supervisor_row(&d, &sup);
    assert_eq!(
        row[1..],
        ["one_for_all", "5", "1m", "-", "running", "1", "3"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_for_one_restarts_exactly_the_later_siblings() {
    let d = Daemon::start().await;
    let (sup, [a, b, c], pids) = three_children(&d, "rest_for_one").await;
    let since = SystemTime::now();
    d.ctl_ok(["kill", "-s", "KILL", &b]);
    for (name, old) in [(&b, pids[1]), (&c, pids[2])] {
        let now = wait_for(&d, name, "restarted by the strategy", WAIT, |c| {
            running(c) && c.pid != old
        })
        .await;
        assert_eq!(now.restart_count, 1, "{now:?}");
    }
    let events = history(&d, since, &[&sup, &a, &b, &c]).await;
    let applied = of(&events, &sup, "supervisor_restart");
    assert_eq!(applied.len(), 1, "{}", summary(&events));
    assert_eq!(attr(applied[0], "strategy"), "rest_for_one");
    assert_eq!(attr(applied[0], "child"), b);
    assert_eq!(attr(applied[0], "restarting"), format!("{b},{c}"));
    assert!(of(&events, &a, "die").is_empty(), "{}", summary(&events));
    assert!(of(&events, &a, "start").is_empty(), "{}", summary(&events));

    let first = d.client().inspect(&a).await.expect("inspect");
    assert!(running(&first), "{first:?}");
    assert_eq!(first.pid, pids[0], "a joined before b: untouched");
    assert_eq!(first.restart_count, 0, "{first:?}");
    assert_eq!(first.start_count, 1, "{first:?}");
    assert_eq!(tree_json(&d)[0]["restarts"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn exceeding_intensity_escalates_to_the_parent() {
    let d = Daemon::start().await;
    let parent = unique_name("parent");
    let child = unique_name("child");
    let worker = unique_name("worker");
    let since = SystemTime::now();
    d.ctl_ok([
        "supervisor",
        "create",
        &parent,
        "--strategy",
        "one_for_one",
        "--intensity",
        "5",
        "--period",
        "60s",
    ]);
    d.ctl_ok([
        "supervisor",
        "create",
        &child,
        "--parent",
        &parent,
        "--intensity",
        "1",
        "--period",
        "60s",
    ]);
    run_detached(
        &d,
        &worker,
        &[
            "--supervisor",
            &child,
            "--restart",
            "always",
            "--restart-delay",
            "50ms",
        ],
        &["sh", "-c", "sleep 0.3; exit 1"],
    );
    // The child supervisor gives up on every second crash; the parent
    // restarts it five times, then gives up itself: the root has failed.
    let events = events_until(
        &d,
        since,
        &[&parent, &child, &worker],
        "supervisor_fail of the root",
        LONG_WAIT,
        |ev| count(ev, &parent, "supervisor_fail") >= 1,
    )
    .await;
    let escalations = of(&events, &child, "supervisor_escalate");
    assert_eq!(escalations.len(), 6, "{}", summary(&events));
    for e in &escalations {
        assert_eq!(attr(e, "parent"), parent, "{}", summary(&events));
    }
    let parent_restarts = of(&events, &parent, "supervisor_restart");
    assert_eq!(parent_restarts.len(), 5, "{}", summary(&events));
    for e in &parent_restarts {
        assert_eq!(attr(e, "child"), child, "{}", summary(&events));
        assert_eq!(attr(e, "restarting"), child, "{}", summary(&events));
        assert_eq!(attr(e, "strategy"), "one_for_one", "{}", summary(&events));
    }
    let child_restarts = of(&events, &child, "supervisor_restart");
    assert!(!child_restarts.is_empty(), "{}", summary(&events));
    assert!(
        child_restarts.iter().all(|e| attr(e, "child") == worker),
        "{}",
        summary(&events)
    );
    // The root gives up after its last child escalation.
    let fail_at = events
        .iter()
        .position(|e| e.r#type == "supervisor_fail")
        .expect("seen");
    assert_eq!(events[fail_at].subject, parent);
    assert!(
        events[..fail_at]
            .iter()
            .rev()
            .find(|e| e.subject_type == "supervisor")
            .is_some_and(|e| e.r#type == "supervisor_escalate" && e.subject == child),
        "{}",
        summary(&events)
    );

    let row = supervisor_row(&d, &parent);
    assert_eq!(row[5], "failed", "{row:?}");
    let tree = tree_json(&d);
    assert_eq!(tree.len(), 1, "{tree:?}");
    assert_eq!(tree[0]["name"], parent.as_str(), "{tree:?}");
    assert_eq!(tree[0]["state"], "failed", "{tree:?}");
    assert_eq!(tree[0]["children"][0]["name"], child.as_str(), "{tree:?}");
    assert_eq!(
        tree[0]["children"][0]["children"][0]["name"],
        worker.as_str(),
        "{tree:?}"
    );
    // Nothing restarts the worker any more.
    let c = wait_for(&d, &worker, "stopped for good", WAIT, |c| {
        c.state == ContainerState::Exited as i32
    })
    .await;
    // That it stays stopped is runtime containers::tests' (paused clock).
    let later = d.client().inspect(&worker).await.expect("inspect");
    assert_eq!(later.state, ContainerState::Exited as i32, "{later:?}");
    assert_eq!(later.start_count, c.start_count, "{later:?}");
}

// ---------------------------------------------------------------------------
// Health checks and exec

#[tokio::test(flavor = "multi_thread")]
async fn unhealthy_container_is_restarted() {
    let d = Daemon::start().await;
    let since = SystemTime::now();
    let sick = unique_name("sick");
    run_detached(
        &d,
        &sick,
        &[
            "--restart",
            "always",
            "--health-cmd",
            "test -e /tmp/ok",
            "--health-interval",
            "300ms",
            "--health-retries",
            "2",
            "--restart-on-unhealthy",
        ],
        &["sh", "-c", "sleep 1000"],
    );
    let events = events_until(&d, since, &[&sick], "two health kills", WAIT, |ev| {
        count(ev, &sick, "start") >= 3
    })
    .await;
    let statuses: Vec<&str> = of(&events, &sick, "health_status")
        .iter()
        .map(|e| attr(e, "status"))
        .collect();
    assert!(
        statuses.len() >= 2 && statuses.iter().all(|s| *s == "unhealthy"),
        "{}",
        summary(&events)
    );
    // Each unhealthy report is followed by a SIGKILL death and a restart.
    let kinds: Vec<&str> = steps(&events).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds[..8],
        [
            "create",
            "start",
            "health_status",
            "die",
            "restart",
            "start",
            "health_status",
            "die"
        ],
        "{}",
        summary(&events)
    );
    for die in of(&events, &sick, "die") {
        assert_eq!(attr(die, "signal"), "9", "{}", summary(&events));
    }
    let j = d.inspect_json(&sick);
    assert_eq!(
        j["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "test -e /tmp/ok"]),
        "{j}"
    );
    assert_eq!(
        j["Config"]["Healthcheck"]["Interval"], 300_000_000u64,
        "{j}"
    );
    assert_eq!(j["Config"]["Healthcheck"]["Retries"], 2, "{j}");

    // Once the check passes (the file is in the container's own layer, kept
    // across restarts) it turns healthy and stays up.
    eventually("touch /tmp/ok in a running moment", WAIT, async || {
        let out = d.ctl(["exec", &sick, "touch", "/tmp/ok"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(describe(&out))
        }
    })
    .await;
    let c = wait_for(&d, &sick, "healthy", WAIT, |c| {
        running(c) && c.health.as_ref().is_some_and(|h| h.status == "healthy")
    })
    .await;
    // That it is left alone while healthy, check after check, is
    // containers::tests::an_unhealthy_container_is_killed_... (paused clock).
    let later = d.client().inspect(&sick).await.expect("inspect");
    assert_eq!(later.pid, c.pid, "a healthy container is left alone");

    // A healthy one from the start, as ps and inspect show it.
    let since = SystemTime::now();
    let fine = unique_name("fine");
    run_detached(
        &d,
        &fine,
        &["--health-cmd", "echo fine", "--health-interval", "200ms"],
        &["sleep", "1000"],
    );
    wait_for(&d, &fine, "healthy", WAIT, |c| {
        c.health.as_ref().is_some_and(|h| h.status == "healthy")
    })
    .await;
    let ps = d.ps_json();
    let line = ps
        .iter()
        .find(|c| c["name"] == fine.as_str())
        .unwrap_or_else(|| panic!("{fine} not in {ps:?}"));
    assert_eq!(line["health"], "healthy", "{line}");
    let table = d.ctl_ok(["ps"]);
    let row = table
        .lines()
        .find(|l| l.contains(&fine))
        .unwrap_or_else(|| panic!("{fine} not in\n{table}"));
    assert!(row.ends_with(" (healthy)"), "{row}");
    let j = d.inspect_json(&fine);
    let health = &j["State"]["Health"];
    assert_eq!(health["Status"], "healthy", "{j}");
    assert_eq!(health["FailingStreak"], 0, "{j}");
    assert_eq!(health["Log"].as_array().map(Vec::len), Some(1), "{j}");
    assert_eq!(health["Log"][0]["Output"], "fine\n", "{j}");
    let events = history(&d, since, &[&fine]).await;
    let statuses: Vec<&str> = of(&events, &fine, "health_status")
        .iter()
        .map(|e| attr(e, "status"))
        .collect();
    assert_eq!(statuses, ["healthy"], "{}", summary(&events));

    // Not checked yet: starting.
    let slow = unique_name("slow");
    run_detached(
        &d,
        &slow,
        &["--health-cmd", "true", "--health-interval", "1h"],
        &["sleep", "1000"],
    );
    d.wait_state(&slow, ContainerState::Running, WAIT).await;
    let table = d.ctl_ok(["ps"]);
    let row = table
        .lines()
        .find(|l| l.contains(&slow))
        .unwrap_or_else(|| panic!("{slow} not in\n{table}"));
    assert!(row.ends_with(" (health: starting)"), "{row}");
    assert_eq!(
        d.inspect_json(&slow)["State"]["Health"]["Status"],
        "starting"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_inside_the_container() {
    let d = Daemon::start().await;
    let name = unique_name("exec");
    run_detached(&d, &name, &["-e", "FROM_SPEC=1"], &["sleep", "1000"]);
    d.wait_state(&name, ContainerState::Running, WAIT).await;

    let out = d.ctl(["exec", &name, "hostname"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), format!("{name}\n"));

    let out = d.ctl(["exec", &name, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));

    let out = d.ctl(["exec", &name, "sh", "-c", "echo out; echo err >&2; exit 1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");

    // The container's processes only: its init, its command, and ps.
    let out = d.ctl(["exec", &name, "ps", "-o", "pid,args"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].trim_start().starts_with("1 "), "{text}");
    assert!(rows.iter().any(|r| r.ends_with("sleep 1000")), "{text}");
    assert!(rows.iter().any(|r| r.ends_with("ps -o pid,args")), "{text}");

    // Environment, working directory and user.
    let out = d.ctl([
        "exec",
        "-e",
        "EXTRA=two",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        &name,
        "sh",
        "-c",
        "echo $FROM_SPEC $EXTRA; pwd; id -u; id -g",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "1 two\n/tmp\n1000\n1000\n");

    let out = d.ctl(["exec", &name, "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));

    // Through the library: the exit code and the raw output.
    let reply = d
        .client()
        .exec(ExecRequest {
            container: name.clone(),
            command: vec![
                "sh".to_owned(),
                "-c".to_owned(),
                "echo lib; exit 4".to_owned(),
            ],
            ..Default::default()
        })
        .await
        .expect("exec");
    assert_eq!(reply.exit_code, 4, "{reply:?}");
    assert_eq!(reply.stdout, b"lib\n", "{reply:?}");
    assert!(!reply.timed_out, "{reply:?}");

    // Not running: refused, with one error line.
    d.ctl_ok(["stop", "-t", "1", &name]);
    let out = d.ctl(["exec", &name, "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("error: container {name} is not running\n")
    );
    let err = d
        .client()
        .exec(ExecRequest {
            container: name.clone(),
            command: vec!["true".to_owned()],
            ..Default::default()
        })
        .await
        .expect_err("not running");
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
    let out = d.ctl(["exec", "no-such-container", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        stderr(&out),
        "error: no such container: no-such-container\n"
    );
}

// ---------------------------------------------------------------------------
// Events

#[tokio::test(flavor = "multi_thread")]
async fn events_stream_shows_each_step_in_order() {
    let d = Daemon::start().await;
    let name = unique_name("steps");
    let other = unique_name("other");
    run_detached(&d, &other, &[], &["true"]);
    run_detached(
        &d,
        &name,
        &["--restart", "on-failure:1", "--restart-delay", "100ms"],
        &["sh", "-c", "exit 2"],
    );
    wait_for(&d, &name, "exited after its one restart", WAIT, |c| {
        c.state == ContainerState::Exited as i32 && c.restart_count == 1
    })
    .await;
    d.ctl_ok(["rm", &name]);
    let lines = ctl_events_until(
        &d,
        &["--since", "10m", "--filter", &format!("container={name}")],
        "the destroy event",
        WAIT,
        |ev| ev.iter().any(|e| e["type"] == "destroy"),
    );
    let kinds: Vec<&str> = lines.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "create", "start", "die", "restart", "start", "die", "destroy"
        ],
        "{lines:?}"
    );
    let id = lines[0]["id"].as_str().expect("an id");
    let mut times = Vec::new();
    for e in &lines {
        assert_eq!(e["subject"], name.as_str(), "{e}");
        assert_eq!(e["subject_type"], "container", "{e}");
        assert_eq!(e["id"], id, "{e}");
        times.push(e["time"].as_str().expect("a time").to_owned());
    }
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "times go forward");
    assert_eq!(lines[2]["attributes"]["exit_code"], "2", "{lines:?}");
    assert_eq!(lines[2]["attributes"]["signal"], "0", "{lines:?}");
    assert_eq!(lines[2]["attributes"]["oom_killed"], "false", "{lines:?}");
    assert_eq!(lines[3]["attributes"]["attempt"], "1", "{lines:?}");
    assert_eq!(lines[3]["attributes"]["delay_ms"], "100", "{lines:?}");

    // Type filters, over every container.
    let since = SystemTime::now();
    let live = unique_name("live");
    run_detached(&d, &live, &[], &["true"]);
    let lines = ctl_events_until(
        &d,
        &[
            "--since",
            "10m",
            "--filter",
            "type=die",
            "--filter",
            "type=destroy",
        ],
        "the die of the live container",
        WAIT,
        |ev| {
            ev.iter()
                .any(|e| e["type"] == "die" && e["subject"] == live.as_str())
        },
    );
    let seen: HashSet<(&str, &str)> = lines
        .iter()
        .filter_map(|e| Some((e["type"].as_str()?, e["subject"].as_str()?)))
        .collect();
    assert!(seen.contains(&("destroy", name.as_str())), "{lines:?}");
    assert!(seen.contains(&("die", other.as_str())), "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|e| e["type"] == "die" || e["type"] == "destroy"),
        "{lines:?}"
    );
    let events = history(&d, since, &[&live]).await;
    assert_eq!(
        steps(&events),
        [
            ("create", live.as_str()),
            ("start", live.as_str()),
            ("die", live.as_str())
        ],
        "{}",
        summary(&events)
    );
}

// ---------------------------------------------------------------------------
// Bad input

#[tokio::test(flavor = "multi_thread")]
async fn supervision_bad_input_is_rejected() {
    let d = Daemon::start().await;
    let sup = unique_name("sup");
    d.ctl_ok(["supervisor", "create", &sup]);
    let ps_before = d.ctl_ok(["ps", "-a", "-q"]);
    let sups_before = d.ctl_ok(["supervisor", "ls"]);

    let name = unique_name("bad");
    for (flags, message) in [
        (
            vec!["--restart", "sometimes"],
            "\"sometimes\" is not a restart policy",
        ),
        (vec!["--restart", "on-failure:-1"], "on-failure:-1"),
        (
            vec!["--restart", "always", "--restart-jitter", "2"],
            "restart.jitter",
        ),
        (
            vec![
                "--restart",
                "always",
                "--restart-delay",
                "2s",
                "--restart-max-delay",
                "1s",
            ],
            "restart.max_delay_ms",
        ),
        (vec!["--supervisor", "no-such-sup"], "no such supervisor"),
        (
            vec!["--health-cmd", "true", "--restart-on-unhealthy"],
            "needs a restart policy",
        ),
        (
            vec!["--health-cmd", "true", "--health-retries", "0"],
            "retries",
        ),
    ] {
        let mut all = vec!["-d", "--name", name.as_str()];
        all.extend(flags.iter().copied());
        let out = d.run(&all, &["true"]);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{flags:?}: {}",
            describe(&out)
        );
        let err = stderr(&out);
        assert!(
            err.starts_with("error: ") && err.contains(message) && err.lines().count() == 1,
            "{flags:?}: {err}"
        );
        assert_eq!(stdout(&out), "", "{flags:?}");
    }

    // The codes, through the library.
    let mut spec = d.spec(&name, &["true"]);
    spec.restart = Some(rsup_client::proto::RestartPolicy {
        policy: "sometimes".to_owned(),
        ..Default::default()
    });
    let err = d.client().create(spec).await.expect_err("bad policy");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    let mut spec = d.spec(&name, &["true"]);
    spec.supervisor = "no-such-sup".to_owned();
    let err = d.client().create(spec).await.expect_err("no supervisor");
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");

    let other = unique_name("sup");
    for (args, message) in [
        (vec!["--strategy", "one_for_some"], "is not a strategy"),
        (vec!["--intensity", "0"], "must be at least 1"),
        (vec!["--parent", other.as_str()], "makes a cycle"),
        (vec!["--parent", "no-such-sup"], "no such supervisor"),
    ] {
        let mut all = vec!["supervisor", "create", other.as_str()];
        all.extend(args.iter().copied());
        let out = d.ctl(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("error: ") && err.contains(message),
            "{args:?}: {err}"
        );
    }
    let request =
        |strategy: &str, intensity, parent: &str| rsup_client::proto::CreateSupervisorRequest {
            name: other.clone(),
            strategy: strategy.to_owned(),
            intensity,
            period_ms: 5_000,
            parent: parent.to_owned(),
        };
    for (req, code) in [
        (request("one_for_some", 1, ""), tonic::Code::InvalidArgument),
        (request("one_for_one", 0, ""), tonic::Code::InvalidArgument),
        (
            request("one_for_one", 1, &other),
            tonic::Code::InvalidArgument,
        ),
        (
            request("one_for_one", 1, "no-such-sup"),
            tonic::Code::NotFound,
        ),
    ] {
        let err = d
            .client()
            .create_supervisor(req.clone())
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Some(code), "{req:?}: {err}");
    }
    // A duplicate name.
    let out = d.ctl(["supervisor", "create", &sup]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // Nothing was created.
    assert_eq!(d.ctl_ok(["ps", "-a", "-q"]), ps_before);
    assert_eq!(d.ctl_ok(["supervisor", "ls"]), sups_before);
    let tree = tree_json(&d);
    assert_eq!(tree.len(), 1, "{tree:?}");
    assert_eq!(tree[0]["children"], serde_json::json!([]), "{tree:?}");
}
