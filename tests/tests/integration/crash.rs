//! Crash safety: containers outlive a `kill -9` of rsupd, and a restarted
//! rsupd loses nothing.
//!
//! While rsupd is down its containers keep running, keep their network
//! namespace and their address, and keep logging (the shim writes the log).
//! DNS is served by rsupd itself, so names do not resolve while it is down (a
//! documented limitation): connectivity is checked by address then, from the
//! host through the container's persistent netns (`nsenter --net=...`) and from
//! inside a container (`nsenter -t INIT -n -m`). Once rsupd is back, running
//! containers are re-adopted (same pid, same address; logs, stats, exec,
//! health checks and supervision go on), ones that exited meanwhile report the
//! exit code and time their shim recorded and get their restart policy's
//! decision, and the state store agrees with the kernel: no address leased
//! twice, no veth, cgroup, netns mount or DNS record without an owner, no
//! half-created container. A second rsupd on the same state dir is refused.
//!
//! Every wait polls a condition with a deadline; the only sleeps are the
//! random delays before each `kill -9` (the point is to crash rsupd at an
//! arbitrary moment) and the churn task's pauses.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsup_client::proto::{self, ContainerState};
use rsup_client::{Client, Error};
use rsup_tests::{
    CgroupMount, Daemon, ProcId, blocking, cgroup_subtree, describe, eventually, host_links,
    mounts_mentioning, net_identity, output_with_timeout, parse_cgroup_mounts, parse_proc_cgroup,
    pids_mentioning, stderr, stdout,
};
use tonic::Code;

/// Bound of any wait for something rsupd does within a few seconds.
pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// Bound of the convergence waits after a restart of rsupd (policy restarts
/// that were due, DNS records, the sweeps' effects).
pub(crate) const CONVERGE: Duration = Duration::from_secs(15);
/// Bound of one gRPC call of the churn task (rsupd may be down).
const CALL: Duration = Duration::from_secs(10);

/// A server answering every connection on port 8080 with [`MARKER`], and
/// logging `served N` after the N-th connection.
const SERVER: &[&str] = &[
    "sh",
    "-c",
    "n=0; while true; do echo srv-marker | nc -l -p 8080; n=$((n+1)); echo \"served $n\"; done",
];
const MARKER: &str = "srv-marker";

/// A container that only sits there, to exec into.
pub(crate) const IDLE: &[&str] = &["sleep", "100000"];

/// A container that logs `tick <unix time>` five times a second.
const TICKER: &[&str] = &[
    "sh",
    "-c",
    "while true; do echo \"tick $(date +%s)\"; sleep 0.2; done",
];

// ---------------------------------------------------------------------------
// Helpers

/// `rsupctl run -d --name NAME FLAGS... -- COMMAND...`, which must succeed;
/// returns the id it printed.
pub(crate) fn run_detached(d: &Daemon, name: &str, flags: &[&str], command: &[&str]) -> String {
    let mut all = vec!["-d", "--name", name];
    all.extend_from_slice(flags);
    let out = d.run(&all, command);
    assert!(out.status.success(), "run {name}\n{}", describe(&out));
    let id = stdout(&out).trim().to_owned();
    assert!(!id.is_empty(), "run -d printed no id\n{}", describe(&out));
    id
}

/// `rsupctl exec CONTAINER COMMAND...`.
fn exec(d: &Daemon, container: &str, command: &[&str]) -> Output {
    let mut args = vec!["exec", container];
    args.extend_from_slice(command);
    d.ctl(args)
}

/// Where a container is on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addr {
    pub(crate) ip: Ipv4Addr,
    pub(crate) gateway: Ipv4Addr,
    pub(crate) host_ifname: String,
}

/// The container's attachments by network, from the client library.
pub(crate) fn attachments(c: &proto::Container) -> BTreeMap<String, Addr> {
    c.networks
        .iter()
        .map(|a| {
            let parse = |s: &str| {
                s.parse::<Ipv4Addr>()
                    .unwrap_or_else(|e| panic!("address {s:?} of {}: {e}", c.name))
            };
            (
                a.network.clone(),
                Addr {
                    ip: parse(&a.ip),
                    gateway: parse(&a.gateway),
                    host_ifname: a.host_ifname.clone(),
                },
            )
        })
        .collect()
}

async fn addresses(d: &Daemon, name: &str) -> BTreeMap<String, Addr> {
    let c = d.client().inspect(name).await.expect("inspect");
    let a = attachments(&c);
    assert!(!a.is_empty(), "{name} is on no network: {c:?}");
    a
}

/// `nslookup NAME SERVER` inside `from`: the addresses answered.
fn lookup(d: &Daemon, from: &str, name: &str, server: Ipv4Addr) -> Result<Vec<Ipv4Addr>, String> {
    let server = server.to_string();
    let out = exec(d, from, &["nslookup", name, &server]);
    if !out.status.success() {
        return Err(describe(&out));
    }
    // busybox prints the server first, then `Name:` and one `Address:` line
    // per answer.
    let found: Vec<Ipv4Addr> = stdout(&out)
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    if found.is_empty() {
        Err(describe(&out))
    } else {
        Ok(found)
    }
}

/// Polls [`lookup`] until it answers exactly `ip`.
async fn resolves(d: &Daemon, from: &str, name: &str, server: Ipv4Addr, ip: Ipv4Addr) {
    eventually(
        &format!("{name} to resolve to {ip} at {server} from {from}"),
        CONVERGE,
        async || match blocking(|| lookup(d, from, name, server)) {
            Ok(found) if found == [ip] => Ok(()),
            Ok(found) => Err(format!("answered {found:?}")),
            Err(e) => Err(e),
        },
    )
    .await;
}

/// Polls `nc -w 2 SERVER 8080` inside `from` until it gets [`MARKER`] (the
/// server's loop may be between two listens).
async fn reach_by_name(d: &Daemon, from: &str, server: &str) {
    eventually(
        &format!("{from} to reach {server} by name"),
        WAIT,
        async || {
            let out = blocking(|| exec(d, from, &["nc", "-w", "2", server, "8080"]));
            if out.status.success() && stdout(&out).contains(MARKER) {
                Ok(())
            } else {
                Err(describe(&out))
            }
        },
    )
    .await;
}

/// Where the host's busybox is (the one the rootfs is made of).
fn host_busybox() -> PathBuf {
    std::env::var_os("RSUP_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// `nsenter NSENTER_ARGS... -- COMMAND...` that must print [`MARKER`].
fn nsenter_ask(nsenter_args: &[&str], command: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("nsenter");
    cmd.args(nsenter_args).arg("--").args(command);
    let out = output_with_timeout(cmd, Duration::from_secs(10))?;
    if out.status.success() && stdout(&out).contains(MARKER) {
        Ok(stdout(&out))
    } else {
        Err(describe(&out))
    }
}

/// The `served N` numbers of the server's log, which must be 1, 2, 3, ...
/// (no line lost, none repeated); returns the last.
fn served(d: &Daemon, name: &str) -> u64 {
    let text = d.ctl_ok(["logs", name]);
    let numbers: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("served "))
        .map(|n| n.trim().parse().unwrap_or_else(|e| panic!("{n:?}: {e}")))
        .collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(
        numbers, expected,
        "the log of {name} lost or repeated lines:\n{text}"
    );
    numbers.last().copied().unwrap_or(0)
}

/// A protobuf timestamp of a reply as a `SystemTime`; it must be set.
fn system_time<T>(ts: Option<&T>, what: &str) -> SystemTime
where
    T: Clone + std::fmt::Debug,
    SystemTime: TryFrom<T>,
    <SystemTime as TryFrom<T>>::Error: std::fmt::Display,
{
    let ts = ts.unwrap_or_else(|| panic!("no {what}"));
    SystemTime::try_from(ts.clone()).unwrap_or_else(|e| panic!("{what} {ts:?}: {e}"))
}

/// The directories whose subdirectories are the daemon's container cgroups:
/// `<rsupd's own cgroup>/<subtree>` in every hierarchy rsupd uses (v1: the
/// memory, cpu, cpuacct and pids hierarchies; v2: the unified one). Read it
/// right after the first start: on v2 rsupd moves itself to a leaf at its
/// first create.
pub(crate) fn cgroup_parents(rsupd: i32, subtree: &str) -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mounts = parse_cgroup_mounts(&mountinfo);
    let path = format!("/proc/{rsupd}/cgroup");
    let own = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let own = parse_proc_cgroup(&own);
    let under = |m: &CgroupMount, own: &str| m.dir_of(own).join(subtree);
    let v2 = mounts
        .iter()
        .find(|m| m.unified && m.point == Path::new("/sys/fs/cgroup"));
    if let Some(m) = v2 {
        let line = own
            .iter()
            .find(|l| l.id == "0" && l.controllers.is_empty())
            .unwrap_or_else(|| panic!("no 0:: line in {path}"));
        return vec![under(m, line.path)];
    }
    let mut dirs = Vec::new();
    for ctrl in ["memory", "cpu", "cpuacct", "pids"] {
        let Some(m) = mounts
            .iter()
            .find(|m| !m.unified && m.options.iter().any(|o| o == ctrl))
        else {
            continue;
        };
        let Some(line) = own.iter().find(|l| l.controllers.contains(&ctrl)) else {
            continue;
        };
        let dir = under(m, line.path);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    assert!(!dirs.is_empty(), "no v1 hierarchy of rsupd found");
    dirs
}

/// Names of the subdirectories (container cgroups) of `parents`.
pub(crate) fn cgroup_children(parents: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for p in parents {
        let Ok(entries) = fs::read_dir(p) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((p.clone(), e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    out
}

/// A small xorshift64 generator: the test prints its seed, and
/// `RSUP_CRASH_SEED` replays a run.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn seeded() -> (XorShift, u64) {
        let seed = std::env::var("RSUP_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        (XorShift(seed.max(1)), seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread")]
async fn containers_outlive_a_kill_9_of_rsupd() {
    let mut d = Daemon::start().await;
    let srv_id = run_detached(
        &d,
        "srv",
        &["--restart", "always", "--restart-delay", "100ms"],
        SERVER,
    );
    let prober_id = run_detached(&d, "prober", &[], IDLE);
    let before = d.wait_state("srv", ContainerState::Running, WAIT).await;
    let prober = d.wait_state("prober", ContainerState::Running, WAIT).await;
    let srv_addr = addresses(&d, "srv").await;
    let default = srv_addr
        .get("default")
        .unwrap_or_else(|| panic!("srv is not on the default network: {srv_addr:?}"))
        .clone();
    resolves(&d, "prober", "srv", default.gateway, default.ip).await;
    let srv_ip = default.ip.to_string();
    reach_by_name(&d, "prober", "srv").await;
    let served_before = blocking(|| served(&d, "srv"));
    assert!(served_before >= 1, "srv logged no connection");

    let srv_procs = d.recorded_procs(&srv_id);
    assert_eq!(srv_procs.len(), 2, "{:?}", d.state_json(&srv_id));
    let srv_init = ProcId::of(before.pid).expect("srv's init runs");
    let prober_init = ProcId::of(prober.pid).expect("prober's init runs");
    let netns = d.container_dir(&prober_id).join("netns");

    d.kill9();
    let killed_at = SystemTime::now();

    // rsupd is down: the containers run on, with their network.
    assert!(
        srv_procs.iter().all(ProcId::exists) && prober_init.exists(),
        "a container's shim or init died with rsupd"
    );
    assert!(netns.exists(), "{} is gone", netns.display());
    let busybox = host_busybox();
    let busybox = busybox.to_str().expect("utf-8 path");
    let netns_arg = format!("--net={}", netns.display());
    let mut during = 0;
    for _ in 0..3 {
        eventually(
            "the host to reach srv by address through prober's netns",
            WAIT,
            async || {
                blocking(|| {
                    nsenter_ask(&[&netns_arg], &[busybox, "nc", "-w", "2", &srv_ip, "8080"])
                })
            },
        )
        .await;
        during += 1;
    }
    let target = prober_init.pid.to_string();
    eventually(
        "prober (entered with nsenter) to reach srv by address",
        WAIT,
        async || {
            blocking(|| {
                nsenter_ask(
                    &["-t", &target, "-n", "-m"],
                    &["/bin/nc", "-w", "2", &srv_ip, "8080"],
                )
            })
        },
    )
    .await;
    during += 1;
    assert!(srv_init.exists(), "srv's init died while rsupd was down");

    d.start_again().await;

    // Re-adopted: same process, same address.
    let ps = d.ps_json();
    let row = ps
        .iter()
        .find(|c| c["name"] == "srv")
        .unwrap_or_else(|| panic!("ps -a lost srv: {ps:?}"));
    assert_eq!(row["state"], "running", "{row}");
    assert_eq!(row["pid"], before.pid, "srv was not re-adopted: {row}");
    assert_eq!(addresses(&d, "srv").await, srv_addr, "srv's address moved");
    let c = d.client().inspect("srv").await.expect("inspect");
    assert_eq!(c.restart_count, 0, "{c:?}");

    // Logs: what the shim wrote while rsupd was down is there, and the log
    // goes on.
    // (The server logs a connection once its nc has exited: poll.)
    eventually(
        "the connections served while rsupd was down to be in srv's log",
        WAIT,
        async || {
            let after = blocking(|| served(&d, "srv"));
            if after >= served_before + during {
                Ok(())
            } else {
                Err(format!(
                    "srv served {during} connections while rsupd was down, but its log \
                     went from served {served_before} to served {after}"
                ))
            }
        },
    )
    .await;

    // Stats and exec work on the re-adopted container.
    let stats = d.ctl_ok(["stats", "--no-stream", "--format", "json", "srv"]);
    let line = stats
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("stats printed nothing"));
    let stats: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("stats {line:?}: {e}"));
    assert_eq!(stats["name"], "srv", "{stats}");
    assert!(
        stats["memory_usage_bytes"].as_u64().is_some_and(|m| m > 0),
        "no memory usage of the re-adopted srv: {stats}"
    );
    let out = exec(&d, "srv", &["echo", "exec-works"]);
    assert!(
        out.status.success() && stdout(&out) == "exec-works\n",
        "{}",
        describe(&out)
    );

    // DNS answers again, and by name the server is reachable.
    resolves(&d, "prober", "srv", default.gateway, default.ip).await;
    reach_by_name(&d, "prober", "srv").await;

    // Supervision goes on: a crash of the re-adopted server is restarted by
    // its policy, with the same address.
    d.ctl_ok(["kill", "srv"]);
    let restarted = eventually("srv to be restarted by its policy", WAIT, async || {
        let c = d.client().inspect("srv").await.map_err(|e| e.to_string())?;
        if c.state == ContainerState::Running as i32 && c.restart_count == 1 && c.pid != before.pid
        {
            Ok(c)
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    assert_eq!(attachments(&restarted), srv_addr);
    assert!(!srv_init.exists(), "the old init survived the kill");
    resolves(&d, "prober", "srv", default.gateway, default.ip).await;
    assert!(
        killed_at <= system_time(restarted.started_at.as_ref(), "StartedAt"),
        "{restarted:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_go_on_after_a_kill_9() {
    let mut d = Daemon::start().await;
    run_detached(
        &d,
        "checked",
        &["--health-cmd", "true", "--health-interval", "200ms"],
        IDLE,
    );
    let healthy = async |d: &Daemon, after: SystemTime| {
        eventually("checked's health checks to go on", WAIT, async || {
            let c = d
                .client()
                .inspect("checked")
                .await
                .map_err(|e| e.to_string())?;
            let h = c
                .health
                .clone()
                .ok_or_else(|| format!("no health: {c:?}"))?;
            let last = h.last_check.ok_or_else(|| format!("no check yet: {h:?}"))?;
            let last = SystemTime::try_from(last).map_err(|e| e.to_string())?;
            if h.status == "healthy" && last > after {
                Ok(())
            } else {
                Err(format!("{h:?}"))
            }
        })
        .await;
    };
    healthy(&d, SystemTime::now()).await;
    d.kill9();
    let restarting_at = SystemTime::now();
    d.start_again().await;
    healthy(&d, restarting_at).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_while_down_reports_the_real_exit_code_and_policy_applies() {
    let mut d = Daemon::start().await;
    run_detached(&d, "plain", &[], &["sh", "-c", "sleep 2; exit 42"]);
    run_detached(
        &d,
        "policy",
        &["--restart", "on-failure", "--restart-delay", "100ms"],
        &[
            "sh",
            "-c",
            "[ -e /tmp/ran ] && exec sleep 1000; touch /tmp/ran; sleep 2; exit 3",
        ],
    );
    let plain = d.wait_state("plain", ContainerState::Running, WAIT).await;
    let policy = d.wait_state("policy", ContainerState::Running, WAIT).await;
    let inits: Vec<ProcId> = [plain.pid, policy.pid]
        .into_iter()
        .map(|p| ProcId::of(p).expect("the init runs"))
        .collect();

    d.kill9();
    let killed_at = SystemTime::now();
    // Both commands end by themselves 2 s after their start, while rsupd is
    // down: polled (up to 20 s) rather than a fixed 3 s sleep.
    eventually(
        "both containers to exit while rsupd is down",
        Duration::from_secs(20),
        async || {
            let left: Vec<_> = inits.iter().filter(|p| p.exists()).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still running: {left:?}"))
            }
        },
    )
    .await;
    let restarting_at = SystemTime::now();
    d.start_again().await;

    // No policy: exited, with the code and time its shim recorded.
    let c = d.client().inspect("plain").await.expect("inspect");
    assert_eq!(c.state, ContainerState::Exited as i32, "{c:?}");
    let exit = c.exit.clone().expect("an exit status");
    assert_eq!((exit.exit_code, exit.signal), (42, 0), "{exit:?}");
    assert!(exit.error.is_empty(), "{exit:?}");
    let finished = system_time(exit.finished_at.as_ref(), "FinishedAt");
    assert!(
        killed_at <= finished && finished <= restarting_at,
        "plain's FinishedAt {finished:?} is not between the kill ({killed_at:?}) and the \
         restart ({restarting_at:?})"
    );
    let started = system_time(c.started_at.as_ref(), "StartedAt");
    let ran = finished.duration_since(started).unwrap_or_default();
    assert!(
        ran >= Duration::from_millis(1900) && ran < Duration::from_secs(10),
        "plain ran {ran:?} from StartedAt to FinishedAt, its command sleeps 2 s"
    );
    let j = d.inspect_json("plain");
    assert_eq!(j["State"]["ExitCode"], 42, "{j}");
    assert_eq!(j["State"]["Status"], "exited", "{j}");
    let ps = d.ps_json();
    let row = ps
        .iter()
        .find(|c| c["name"] == "plain")
        .unwrap_or_else(|| panic!("{ps:?}"));
    assert_eq!(row["exit_code"], 42, "{row}");

    // on-failure: restarted by its policy, as if rsupd had watched.
    let c = eventually("policy to be restarted", WAIT, async || {
        let c = d
            .client()
            .inspect("policy")
            .await
            .map_err(|e| e.to_string())?;
        if c.state == ContainerState::Running as i32 && c.pid != policy.pid {
            Ok(c)
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    assert_eq!(c.restart_count, 1, "{c:?}");
    assert_eq!(c.start_count, 2, "{c:?}");
    // (A running container reports no exit status: the first run's code is
    // not observable any more.)
    assert!(
        restarting_at <= system_time(c.started_at.as_ref(), "StartedAt"),
        "{c:?}"
    );
    // The second run stays up (the marker file is in its upper layer).
    let c = d.client().inspect("policy").await.expect("inspect");
    assert_eq!(c.state, ContainerState::Running as i32, "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_rsupd_on_the_same_state_dir_is_refused() {
    let d = Daemon::start().await;
    run_detached(&d, "solo", &[], IDLE);
    let before = d.wait_state("solo", ContainerState::Running, WAIT).await;
    let procs = d.recorded_procs(&before.id);

    // Its own socket, then the first one's: refused either way, before it
    // touches anything.
    let second = d.dir().join("second.sock");
    for socket in [second.as_path(), d.socket()] {
        let cmd = d.rsupd_command(socket);
        let out = blocking(|| output_with_timeout(cmd, Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("the second rsupd did not exit: {e}"));
        assert!(
            !out.status.success(),
            "a second rsupd on {} succeeded\n{}",
            d.state_dir().display(),
            describe(&out)
        );
        assert!(
            stderr(&out).contains("in use by another rsupd"),
            "{}",
            describe(&out)
        );
    }
    assert!(!second.exists(), "the refused rsupd bound its socket");

    // The first one is unaffected.
    let c = d.client().inspect("solo").await.expect("inspect");
    assert_eq!(c.state, ContainerState::Running as i32, "{c:?}");
    assert_eq!(c.pid, before.pid);
    assert!(procs.iter().all(ProcId::exists), "solo's processes died");
    let ps = d.ctl_ok(["ps"]);
    assert!(ps.contains("solo"), "{ps}");
    assert!(d.socket().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_restart_cut_short_by_kill_9_leaves_no_second_instance() {
    const ROUNDS: usize = 100;
    let (mut rng, seed) = XorShift::seeded();
    println!("seed {seed} (replay with RSUP_CRASH_SEED={seed})");
    let mut d = Daemon::start().await;
    // A constant 100 ms delay: rsupd spawns the next instance about 100 ms
    // after each kill, and the crash is aimed around that moment.
    let id = run_detached(
        &d,
        "victim",
        &[
            "--restart",
            "always",
            "--restart-delay",
            "100ms",
            "--restart-max-delay",
            "100ms",
        ],
        IDLE,
    );
    for round in 1..=ROUNDS {
        let c = d.wait_state("victim", ContainerState::Running, WAIT).await;
        d.client().kill("victim", "KILL").await.expect("kill");
        let aim = rng.between(90, 200);
        tokio::time::sleep(Duration::from_millis(aim)).await;
        d.kill9();
        d.start_again().await;
        let what = format!(
            "round {round} (seed {seed}, rsupd killed {aim} ms after the kill of pid {}): \
             victim to run exactly once",
            c.pid
        );
        eventually(&what, Duration::from_secs(10), async || {
            let c = d
                .client()
                .inspect("victim")
                .await
                .map_err(|e| e.to_string())?;
            if c.state != ContainerState::Running as i32 {
                return Err(format!("state {:?}", ContainerState::try_from(c.state)));
            }
            second_instance(&d, "victim", &id).map_or(Ok(()), Err)
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// Twenty crashes

/// A long-running container of the workload and its addresses at create.
#[derive(Debug)]
pub(crate) struct Long {
    pub(crate) name: &'static str,
    pub(crate) id: String,
    pub(crate) addrs: BTreeMap<String, Addr>,
    /// Crash-looping: running or restarting at any moment.
    pub(crate) looping: bool,
}

/// Counters of the churn task.
#[derive(Debug, Default)]
struct ChurnStats {
    cycles: AtomicU64,
    kills: AtomicU64,
    errors: AtomicU64,
}

/// The background task that creates, starts and removes short-lived
/// containers and now and then kills a long-running one, through the client
/// library; errors (rsupd down) only make it reconnect. It can be paused
/// (the invariants are checked on a quiet daemon) and stopped.
pub(crate) struct Churn {
    pause: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<ChurnStats>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

/// What a churn task does.
pub(crate) struct ChurnConfig {
    /// Its containers are `<prefix>-<n>`.
    pub(crate) prefix: &'static str,
    pub(crate) socket: PathBuf,
    /// The spec of its containers, but for the name and networks.
    pub(crate) template: proto::ContainerSpec,
    /// Networks of its containers, in turn.
    pub(crate) networks: Vec<Vec<String>>,
    /// Containers it kills now and then.
    pub(crate) victims: Vec<String>,
}

/// How the test steers a churn task.
struct ChurnControl {
    pause: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<ChurnStats>,
}

impl Churn {
    pub(crate) fn spawn(config: ChurnConfig, seed: u64) -> Churn {
        let pause = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ChurnStats::default());
        let control = ChurnControl {
            pause: pause.clone(),
            idle: idle.clone(),
            stop: stop.clone(),
            stats: stats.clone(),
        };
        let task = tokio::spawn(churn(config, XorShift(seed.max(1)), control));
        Churn {
            pause,
            idle,
            stop,
            stats,
            task,
        }
    }

    pub(crate) fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    /// Asks the task to pause and waits until it has finished its cycle.
    pub(crate) async fn pause(&self) {
        self.idle.store(false, Ordering::SeqCst);
        self.pause.store(true, Ordering::SeqCst);
        eventually(
            "the churn task to pause",
            Duration::from_secs(60),
            async || {
                if self.idle.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("busy".to_owned())
                }
            },
        )
        .await;
    }

    /// Stops the task; returns the names it could not remove.
    pub(crate) async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.resume();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the churn task stops")
            .expect("the churn task did not panic")
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} cycles, {} kills, {} errors",
            self.stats.cycles.load(Ordering::Relaxed),
            self.stats.kills.load(Ordering::Relaxed),
            self.stats.errors.load(Ordering::Relaxed)
        )
    }
}

async fn call<T>(f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(CALL, f)
        .await
        .unwrap_or_else(|_| Err(Error::Status(tonic::Status::deadline_exceeded("timed out"))))
}

async fn churn(config: ChurnConfig, mut rng: XorShift, control: ChurnControl) -> Vec<String> {
    let ChurnConfig {
        prefix,
        socket,
        template,
        networks,
        victims,
    } = config;
    let ChurnControl {
        pause,
        idle,
        stop,
        stats,
    } = control;
    let mut client: Option<Client> = None;
    // Containers that may exist and are still to be removed.
    let mut leftovers: Vec<String> = Vec::new();
    let mut n = 0u64;
    loop {
        if pause.load(Ordering::SeqCst) {
            idle.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            // One more try to remove what is left.
            if client.is_none() {
                client = call(Client::connect(&socket)).await.ok();
            }
            if let Some(c) = &client {
                let mut left = Vec::new();
                for name in leftovers {
                    match call(c.remove(&name, true)).await {
                        Ok(()) => {}
                        Err(e) if e.code() == Some(Code::NotFound) => {}
                        Err(_) => left.push(name),
                    }
                }
                return left;
            }
            return leftovers;
        }
        let c = match &client {
            Some(c) => c.clone(),
            None => {
                match tokio::time::timeout(Duration::from_secs(2), Client::connect(&socket)).await {
                    Ok(Ok(c)) => {
                        client = Some(c.clone());
                        c
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        let cycle = async {
            let mut still = Vec::new();
            for name in std::mem::take(&mut leftovers) {
                match call(c.remove(&name, true)).await {
                    Ok(()) => {}
                    Err(e) if e.code() == Some(Code::NotFound) => {}
                    Err(e) => {
                        still.push(name);
                        leftovers.extend(still);
                        return Err(e);
                    }
                }
            }
            n += 1;
            let name = format!("{prefix}-{n}");
            let spec = proto::ContainerSpec {
                name: name.clone(),
                networks: networks[(n as usize) % networks.len()].clone(),
                ..template.clone()
            };
            leftovers.push(name.clone());
            call(c.create(spec)).await?;
            call(c.start(&name)).await?;
            if rng.between(0, 1) == 0 {
                call(c.wait(&name)).await?;
            }
            call(c.remove(&name, true)).await?;
            leftovers.retain(|l| *l != name);
            if !victims.is_empty() && rng.between(0, 5) == 0 {
                let victim = &victims[rng.between(0, victims.len() as u64 - 1) as usize];
                match call(c.kill(victim, "KILL")).await {
                    Ok(()) => {
                        stats.kills.fetch_add(1, Ordering::Relaxed);
                    }
                    // Not running: restarting after an earlier kill.
                    Err(e) if e.code() == Some(Code::FailedPrecondition) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<(), Error>(())
        };
        match cycle.await {
            Ok(()) => {
                stats.cycles.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                client = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What disagrees between rsupd's answers, the state dir and the kernel
/// (empty when all is well): leases (unique, owned by listed containers, the
/// long-running ones' as recorded), veths with the daemon's prefix (each a
/// listed container's), the state dir (every directory a complete, listed
/// container), container cgroups and netns mounts (each a listed
/// container's), and every `ps -a` row a valid state. A quarantined
/// container (state "unknown", see quarantine.rs) is listed by id and may
/// have no spec: its leases are owned by its id, its veths are the links
/// named after its id, and its directory keeps the files renamed aside.
pub(crate) async fn disagreements(
    d: &Daemon,
    longs: &[Long],
    networks: &[&str],
    cgroups: &[PathBuf],
) -> Result<Vec<String>, String> {
    let mut bad = Vec::new();
    let veth_prefix = format!("{}v", net_identity(d.state_dir()).0);
    // The kernel and the disk first, then rsupd: what a listing misses was
    // made before it, not by a concurrent operation (the churn is paused).
    let links = host_links(&veth_prefix);
    let cgroup_dirs = cgroup_children(cgroups);
    let mounts = mounts_mentioning(d.state_dir());
    let rsupd = d.pid();
    let procs: Vec<(i32, String)> = blocking(|| {
        pids_mentioning(d.state_dir())
            .into_iter()
            .filter(|&p| p != rsupd)
            .filter_map(|p| Some((p, rsup_tests::cmdline(p)?)))
            // Zombies have no command line.
            .filter(|(_, c)| !c.is_empty())
            .collect()
    });
    let containers_dir = d.state_dir().join("containers");
    let dirs: Vec<String> = fs::read_dir(&containers_dir)
        .map_err(|e| format!("{}: {e}", containers_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let mut leases = Vec::new();
    for n in networks {
        let net = d
            .client()
            .inspect_network(n)
            .await
            .map_err(|e| format!("network inspect {n}: {e}"))?;
        leases.push(net);
    }
    let listed = d
        .client()
        .list(true)
        .await
        .map_err(|e| format!("list: {e}"))?;
    let ps = blocking(|| d.ps_json());

    let names: BTreeSet<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    let ids: BTreeSet<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    let quarantined: BTreeSet<&str> = listed
        .iter()
        .filter(|c| c.state == ContainerState::Unknown as i32)
        .map(|c| c.id.as_str())
        .collect();
    for row in &ps {
        let state = row["state"].as_str().unwrap_or_default();
        if !matches!(
            state,
            "created" | "running" | "exited" | "restarting" | "unknown"
        ) {
            bad.push(format!("ps -a row in state {state:?}: {row}"));
        }
        if !row["id"].as_str().is_some_and(|id| ids.contains(id)) {
            bad.push(format!("ps -a row not in the list: {row}"));
        }
    }
    for net in &leases {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for l in &net.containers {
            if let Some(other) = seen.insert(&l.ip, &l.container) {
                bad.push(format!(
                    "{} leased twice on {}: to {other} and {}",
                    l.ip, net.name, l.container
                ));
            }
            if !names.contains(l.container.as_str()) && !quarantined.contains(l.container.as_str())
            {
                bad.push(format!(
                    "lease {} on {} of {}, which ps -a does not list",
                    l.ip, net.name, l.container
                ));
            }
        }
        for long in longs {
            if let Some(a) = long.addrs.get(&net.name) {
                let ip = a.ip.to_string();
                if !net
                    .containers
                    .iter()
                    .any(|l| (l.container == long.name || l.container == long.id) && l.ip == ip)
                {
                    bad.push(format!(
                        "{} lost its lease of {ip} on {}",
                        long.name, net.name
                    ));
                }
            }
        }
    }
    let ifnames: BTreeSet<String> = listed
        .iter()
        .flat_map(|c| c.networks.iter().map(|a| a.host_ifname.clone()))
        .collect();
    let prefix = net_identity(d.state_dir()).0;
    for l in &links {
        let of_quarantined = quarantined
            .iter()
            .any(|id| l.starts_with(&rsup_tests::veth_prefix(&prefix, id)));
        if !ifnames.contains(l) && !of_quarantined {
            bad.push(format!("link {l} belongs to no listed container"));
        }
    }
    for long in longs {
        for a in long.addrs.values() {
            if !Path::new("/sys/class/net").join(&a.host_ifname).exists() {
                bad.push(format!("{}'s veth {} is gone", long.name, a.host_ifname));
            }
        }
    }
    for id in &dirs {
        let dir = containers_dir.join(id);
        for file in ["config.json", "state.json"] {
            if !dir.join(file).exists() && !quarantined.contains(id.as_str()) {
                bad.push(format!("{} has no {file} (half created)", dir.display()));
            }
        }
        if !ids.contains(id.as_str()) {
            bad.push(format!("{} is not a listed container", dir.display()));
        }
    }
    for (parent, name) in &cgroup_dirs {
        if !ids.contains(name.as_str()) {
            bad.push(format!(
                "cgroup {} of no listed container",
                parent.join(name).display()
            ));
        }
    }
    for m in &mounts {
        let owned = ids
            .iter()
            .any(|id| rsup_tests::mentions_path(m, &containers_dir.join(id).join("netns")));
        if !owned {
            bad.push(format!("mount of no listed container's netns: {m}"));
        }
    }
    // Shims and inits (see `instances`): each of a listed container.
    for (pid, cmd) in &procs {
        let owned = ids
            .iter()
            .any(|id| rsup_tests::mentions_path(cmd, &containers_dir.join(id)));
        if !owned {
            bad.push(format!("process {pid} of no listed container: {cmd}"));
        }
    }
    Ok(bad)
}

/// The processes of container `id` (its shim and init: the init is a fork
/// of the shim and keeps its command line, which names the container's
/// directory; zombies left out) and the pair its `state.json` names, both
/// sorted.
fn instances(d: &Daemon, id: &str) -> (Vec<i32>, Vec<i32>) {
    let mut found: Vec<i32> = pids_mentioning(&d.container_dir(id))
        .into_iter()
        .filter(|&p| p != d.pid())
        .filter(|&p| rsup_tests::cmdline(p).is_some_and(|c| !c.is_empty()))
        .collect();
    found.sort_unstable();
    let mut recorded: Vec<i32> = d.recorded_procs(id).iter().map(|p| p.pid).collect();
    recorded.sort_unstable();
    (found, recorded)
}

/// What is wrong with a running container's processes: none but the pair
/// its state.json names may run (not a second instance left behind by an
/// interrupted start).
fn second_instance(d: &Daemon, name: &str, id: &str) -> Option<String> {
    let (found, recorded) = blocking(|| instances(d, id));
    (found != recorded || found.len() != 2)
        .then(|| format!("{name} has processes {found:?}, its state.json names {recorded:?}"))
}

/// [`second_instance`] for a container that is running before and after
/// its processes are read, as the same instance (start count and pid): a
/// container that exits, restarts or is being started meanwhile is not
/// settled (`Err` to poll again). `Err` also when a settled container has
/// other processes than its state.json names: for a caller that polls,
/// only what persists fails.
async fn settled_single_instance(d: &Daemon, name: &str, id: &str) -> Result<(), String> {
    let inspect = async || {
        d.client()
            .inspect(name)
            .await
            .map_err(|e| format!("inspect {name}: {e}"))
    };
    let before = inspect().await?;
    if before.state != ContainerState::Running as i32 {
        return Err(format!(
            "{name} in state {:?}",
            ContainerState::try_from(before.state)
        ));
    }
    let bug = second_instance(d, name, id);
    let after = inspect().await?;
    if (after.state, after.start_count, after.pid) != (before.state, before.start_count, before.pid)
    {
        return Err(format!(
            "{name} changed while checked: {:?} start {} pid {} -> {:?} start {} pid {}",
            ContainerState::try_from(before.state),
            before.start_count,
            before.pid,
            ContainerState::try_from(after.state),
            after.start_count,
            after.pid
        ));
    }
    match bug {
        Some(bug) => Err(format!("{bug} (rsupd: running, pid {})", after.pid)),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_kill_9_rounds_lose_nothing() {
    const ROUNDS: usize = 20;
    let test_start = Instant::now();
    let (mut rng, seed) = XorShift::seeded();
    println!("seed {seed} (replay with RSUP_CRASH_SEED={seed})");

    let mut d = Daemon::start().await;
    let state_dir = d.state_dir().to_path_buf();
    let prefix = net_identity(&state_dir).0;
    let cgroups = cgroup_parents(d.pid(), &cgroup_subtree(&state_dir));

    // A user network in this daemon's own block (see networks.rs): the
    // default subnet's second octet moved up by 64.
    let (_, default_subnet) = net_identity(&state_dir);
    let octets: Vec<u8> = default_subnet
        .split(['.', '/'])
        .filter_map(|p| p.parse().ok())
        .collect();
    let user_subnet = format!("10.{}.{}.0/24", octets[1] + 64, octets[2]);
    d.client()
        .create_network(proto::CreateNetworkRequest {
            name: "crashnet".into(),
            subnet: user_subnet,
            gateway: String::new(),
            internal: false,
        })
        .await
        .expect("create crashnet");
    let networks = ["default", "crashnet"];

    let always = [
        "--restart",
        "always",
        "--restart-delay",
        "100ms",
        "--restart-max-delay",
        "1s",
    ];
    let with = |nets: &[&'static str]| -> Vec<&'static str> {
        let mut f: Vec<&str> = always.to_vec();
        for n in nets {
            f.extend(["--network", n]);
        }
        f
    };
    let specs: Vec<(&'static str, Vec<&'static str>, &[&str])> = vec![
        ("prober", with(&["default", "crashnet"]), IDLE),
        ("web", with(&["default"]), SERVER),
        ("api", with(&["default", "crashnet"]), IDLE),
        ("cache", with(&["crashnet"]), IDLE),
        ("ticker", with(&["default"]), TICKER),
    ];
    let mut longs = Vec::new();
    for (name, flags, command) in &specs {
        let id = run_detached(&d, name, flags, command);
        let c = d.wait_state(name, ContainerState::Running, WAIT).await;
        let joined = flags.iter().filter(|f| **f == "--network").count();
        assert_eq!(c.networks.len(), joined, "{c:?}");
        longs.push(Long {
            name,
            id,
            addrs: attachments(&c),
            looping: false,
        });
    }
    let looper_id = run_detached(
        &d,
        "looper",
        &[
            "--restart",
            "always",
            "--restart-delay",
            "200ms",
            "--restart-max-delay",
            "1s",
        ],
        &["sh", "-c", "sleep 0.3; exit 1"],
    );
    let looper = d.client().inspect("looper").await.expect("inspect looper");
    longs.push(Long {
        name: "looper",
        id: looper_id,
        addrs: attachments(&looper),
        looping: true,
    });
    assert_eq!(looper.networks.len(), 1, "{looper:?}");
    for l in &longs {
        println!("{} {}: {:?}", l.name, l.id, l.addrs);
    }

    let template = d.spec("", &["true"]);
    let churns: Vec<Churn> = ["churn-a", "churn-b"]
        .into_iter()
        .map(|prefix| {
            let config = ChurnConfig {
                prefix,
                socket: d.socket().to_path_buf(),
                template: template.clone(),
                networks: vec![Vec::new(), vec!["crashnet".into()], vec!["none".into()]],
                victims: ["web", "api", "cache", "ticker"].map(String::from).to_vec(),
            };
            Churn::spawn(config, rng.next())
        })
        .collect();
    let mut start_counts: BTreeMap<&str, u32> = BTreeMap::new();

    let mut ticks = 0usize;
    for round in 1..=ROUNDS {
        let round_start = Instant::now();
        for c in &churns {
            c.resume();
        }
        let nap = rng.between(100, 1500);
        tokio::time::sleep(Duration::from_millis(nap)).await;
        let old = d.pid();
        d.kill9();
        let killed = Instant::now();
        // Down for a while (at most 0.6 s): containers may exit meanwhile.
        let down = rng.between(0, 600);
        tokio::time::sleep(Duration::from_millis(down)).await;
        d.start_again().await;
        let restart = killed.elapsed();
        for c in &churns {
            c.pause().await;
        }
        let checks = Instant::now();
        let ctx = |what: &str| format!("round {round} (seed {seed}, rsupd {old} killed): {what}");

        // (a) every long-running container runs again, with its address,
        // and no start of it was forgotten.
        for l in &longs {
            let c = eventually(
                &ctx(&format!("{} to run with its address", l.name)),
                CONVERGE,
                async || {
                    let c = d
                        .client()
                        .inspect(l.name)
                        .await
                        .map_err(|e| format!("inspect: {e}"))?;
                    let ok_state = c.state == ContainerState::Running as i32
                        || (l.looping && c.state == ContainerState::Restarting as i32);
                    if !ok_state {
                        return Err(format!("state {:?}", ContainerState::try_from(c.state)));
                    }
                    if attachments(&c) != l.addrs {
                        return Err(format!(
                            "addresses {:?}, recorded {:?}",
                            attachments(&c),
                            l.addrs
                        ));
                    }
                    Ok(c)
                },
            )
            .await;
            let before = start_counts.insert(l.name, c.start_count).unwrap_or(0);
            assert!(
                c.start_count >= before,
                "{}",
                ctx(&format!(
                    "{}'s start count went back from {before} to {}",
                    l.name, c.start_count
                ))
            );
        }
        // (b) each name resolves to its address on each of its networks.
        for l in &longs {
            for a in l.addrs.values() {
                resolves(&d, "prober", l.name, a.gateway, a.ip).await;
            }
        }
        // (c)-(e) the store and the kernel agree (a short convergence wait).
        eventually(
            &ctx("the store and the kernel to agree"),
            CONVERGE,
            async || {
                let bad = disagreements(&d, &longs, &networks, &cgroups).await?;
                if bad.is_empty() {
                    Ok(())
                } else {
                    Err(bad.join("\n"))
                }
            },
        )
        .await;
        // No second, unrecorded instance of a long-running container (see
        // `a_policy_restart_cut_short_by_kill_9_leaves_no_second_instance`),
        // checked on a settled container: a kill the churn sent just before
        // its pause is fire-and-forget, and rsupd answers "running" until
        // the shim has reported the exit, so (a) may have seen a container
        // that was dying; its next instance then starts up to the 1 s
        // backoff later. A container that stays running with other
        // processes than its state.json names (or none) still fails.
        for l in longs.iter().filter(|l| !l.looping) {
            eventually(
                &ctx(&format!("{} to run exactly once", l.name)),
                CONVERGE,
                async || settled_single_instance(&d, l.name, &l.id).await,
            )
            .await;
        }
        // (f) the ticker's log only grows.
        let now = blocking(|| {
            d.ctl_ok(["logs", "ticker"])
                .lines()
                .filter(|l| l.starts_with("tick "))
                .count()
        });
        assert!(
            now > ticks,
            "{}",
            ctx(&format!(
                "the ticker's log went from {ticks} to {now} lines"
            ))
        );
        ticks = now;
        println!(
            "round {round:2}: ran {nap:4} ms, down {down:3} ms, SERVING {:4} ms after the \
             kill, checks {:4} ms, round {:4} ms; churn: {}; ticker {ticks} lines, looper \
             started {} times",
            restart.as_millis(),
            checks.elapsed().as_millis(),
            round_start.elapsed().as_millis(),
            churns
                .iter()
                .map(Churn::summary)
                .collect::<Vec<_>>()
                .join(" + "),
            start_counts["looper"]
        );
    }

    for c in churns {
        let left = c.stop().await;
        println!("churn stopped; could not remove {left:?}");
    }
    // The crash-looper's policy went on across the crashes.
    assert!(
        start_counts["looper"] >= 10,
        "looper started only {} times in {ROUNDS} rounds",
        start_counts["looper"]
    );
    // What the starts found and collected, as rsupd logged it.
    let log = fs::read_to_string(d.log_path()).unwrap_or_default();
    for what in [
        "re-adopted a running container",
        "exited while rsupd was down",
        "removing a half-created container",
        "finishing an interrupted remove",
        "releasing the lease of an unknown container",
        "removing the cgroup of an unknown container",
        "removing a leftover link",
    ] {
        println!("rsupd log: {:4} x {what}", log.matches(what).count());
    }

    // A removed container's name is gone from DNS.
    let web = longs[1].addrs["default"].clone();
    d.ctl_ok(["rm", "-f", "web"]);
    eventually(
        "web's DNS record to go",
        CONVERGE,
        async || match blocking(|| lookup(&d, "prober", "web", web.gateway)) {
            Ok(found) => Err(format!("still answered {found:?}")),
            Err(e) if e.contains("NXDOMAIN") => Ok(()),
            Err(e) => Err(e),
        },
    )
    .await;

    // Remove everything; nothing may remain.
    for c in d.client().list(true).await.expect("list") {
        d.client()
            .remove(&c.id, true)
            .await
            .unwrap_or_else(|e| panic!("rm -f {}: {e}", c.name));
    }
    d.client()
        .remove_network("crashnet")
        .await
        .expect("remove crashnet");
    let rsupd = d.pid();
    let containers_dir = state_dir.join("containers");
    eventually("nothing to remain", CONVERGE, async || {
        let mut bad = Vec::new();
        let veths = host_links(&format!("{prefix}v"));
        if !veths.is_empty() {
            bad.push(format!("veths: {veths:?}"));
        }
        let cg = cgroup_children(&cgroups);
        if !cg.is_empty() {
            bad.push(format!("cgroups: {cg:?}"));
        }
        let mounts = mounts_mentioning(&state_dir);
        if !mounts.is_empty() {
            bad.push(format!("mounts: {mounts:?}"));
        }
        let procs: Vec<(i32, String)> = pids_mentioning(&state_dir)
            .into_iter()
            .filter(|&p| p != rsupd)
            .map(|p| (p, rsup_tests::cmdline(p).unwrap_or_default()))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !procs.is_empty() {
            bad.push(format!("processes: {procs:?}"));
        }
        let dirs: Vec<_> = fs::read_dir(&containers_dir)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !dirs.is_empty() {
            bad.push(format!("container dirs: {dirs:?}"));
        }
        match d.client().inspect_network("default").await {
            Ok(n) if n.containers.is_empty() => {}
            Ok(n) => bad.push(format!("leases on default: {:?}", n.containers)),
            Err(e) => bad.push(format!("network inspect default: {e}")),
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("\n"))
        }
    })
    .await;
    println!(
        "{ROUNDS} rounds in {:.1} s (seed {seed})",
        test_start.elapsed().as_secs_f64()
    );
}
