//! Quarantine: a container whose record (`config.json` or `state.json`)
//! cannot be read when rsupd starts is never acted on.
//!
//! Its record is emptied or filled with garbage while rsupd is down; the
//! restarted rsupd lists it in state "unknown" with the reason (and by name
//! when its config was readable), shows the pid of its live init, renames
//! the bad file aside, and leaves its processes, veths, leases, cgroup and
//! netns mount alone, across further restarts; every verb but list,
//! inspect, stats and rm is FAILED_PRECONDITION. `rm -f` then kills its
//! processes and removes everything it held. A chaos test does the same
//! under churn and twenty `kill -9`s of rsupd (reusing crash.rs' churn and
//! its store-versus-kernel check, which knows quarantined containers).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rsup_client::proto::{self, ContainerState};
use rsup_tests::{
    Daemon, ProcId, blocking, cgroup_subtree, code_of, describe, eventually, host_links, http_get,
    mounts_mentioning, net_identity, pids_mentioning, proc_stat, stdout,
};
use tonic::Code;

use crate::crash::{
    CONVERGE, Churn, ChurnConfig, IDLE, Long, WAIT, XorShift, attachments, cgroup_children,
    cgroup_parents, disagreements, run_detached,
};

/// How a record is damaged while rsupd is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    EmptyState,
    GarbageState,
    EmptyConfig,
    GarbageConfig,
}

impl Damage {
    const ALL: [Damage; 4] = [
        Damage::EmptyState,
        Damage::GarbageState,
        Damage::EmptyConfig,
        Damage::GarbageConfig,
    ];

    fn file(self) -> &'static str {
        match self {
            Damage::EmptyState | Damage::GarbageState => "state.json",
            Damage::EmptyConfig | Damage::GarbageConfig => "config.json",
        }
    }

    /// Whether the container keeps its name (its config is readable).
    fn keeps_name(self) -> bool {
        self.file() == "state.json"
    }

    fn apply(self, dir: &Path) {
        let content: &[u8] = match self {
            Damage::EmptyState | Damage::EmptyConfig => b"",
            Damage::GarbageState | Damage::GarbageConfig => b"{\"version\": 1, \x00\xff garbage",
        };
        let path = dir.join(self.file());
        fs::write(&path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Whether `p` runs (a zombie waiting for its new parent to reap it does
/// not).
fn runs(p: &ProcId) -> bool {
    proc_stat(p.pid).is_some_and(|s| s.start_time == p.start_time && s.state != 'Z')
}

/// What a running container holds on the host.
#[derive(Debug)]
struct Held {
    name: String,
    id: String,
    dir: PathBuf,
    /// Its init and shim.
    procs: Vec<ProcId>,
    init: i32,
    /// (network, address) of its leases.
    leases: Vec<(String, String)>,
    veths: Vec<String>,
    /// Its cgroup in every hierarchy.
    cgroups: Vec<PathBuf>,
}

impl Held {
    async fn of(d: &Daemon, name: &str, cgroup_parents: &[PathBuf]) -> Held {
        let c = d.wait_state(name, ContainerState::Running, WAIT).await;
        let procs = d.recorded_procs(&c.id);
        assert_eq!(procs.len(), 2, "{name}: {:?}", d.state_json(&c.id));
        let addrs = attachments(&c);
        assert!(!addrs.is_empty(), "{name} has no network: {c:?}");
        let held = Held {
            name: name.to_owned(),
            dir: d.container_dir(&c.id),
            procs,
            init: c.pid,
            leases: addrs
                .iter()
                .map(|(n, a)| (n.clone(), a.ip.to_string()))
                .collect(),
            veths: addrs.values().map(|a| a.host_ifname.clone()).collect(),
            cgroups: cgroup_parents.iter().map(|p| p.join(&c.id)).collect(),
            id: c.id,
        };
        assert!(held.problems(d, true).await.is_empty(), "{held:?}");
        held
    }

    /// What of it is not there (`present`), or is still there (not
    /// `present`): processes, veths, leases, cgroups, netns mount and, when
    /// gone, its directory.
    async fn problems(&self, d: &Daemon, present: bool) -> Vec<String> {
        let mut bad = Vec::new();
        let mut check = |what: String, there: bool| {
            if there != present {
                bad.push(format!(
                    "{}: {what} is {}",
                    self.name,
                    if there { "still there" } else { "gone" }
                ));
            }
        };
        for p in &self.procs {
            check(format!("process {}", p.pid), runs(p));
        }
        for v in &self.veths {
            check(
                format!("veth {v}"),
                Path::new("/sys/class/net").join(v).exists(),
            );
        }
        for cg in &self.cgroups {
            check(format!("cgroup {}", cg.display()), cg.exists());
        }
        let netns = self.dir.join("netns");
        check(
            format!("the netns mount {}", netns.display()),
            !mounts_mentioning(&netns).is_empty(),
        );
        for (network, ip) in &self.leases {
            let n = d
                .client()
                .inspect_network(network)
                .await
                .expect("inspect network");
            let leased = n
                .containers
                .iter()
                .any(|l| l.ip == *ip && (l.container == self.name || l.container == self.id));
            check(format!("the lease of {ip} on {network}"), leased);
        }
        if !present {
            check(
                format!("directory {}", self.dir.display()),
                self.dir.exists(),
            );
        }
        bad
    }
}

/// The container listed with id `id`.
async fn listed(d: &Daemon, id: &str) -> Option<proto::Container> {
    d.client()
        .list(true)
        .await
        .expect("list")
        .into_iter()
        .find(|c| c.id == id)
}

/// `/metrics`' value of `rsup_containers_quarantined`.
async fn quarantined_gauge(metrics: std::net::SocketAddr) -> f64 {
    let (code, body) = http_get(metrics, "/metrics").await.expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("rsup_containers_quarantined "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rsup_containers_quarantined in:\n{body}"))
}

/// Checks that the damaged containers are quarantined as they ran:
/// listed "unknown" with the reason and their init's pid, holding all they
/// held.
async fn assert_quarantined(d: &Daemon, held: &[(Damage, Held)]) {
    for (damage, h) in held {
        let c = listed(d, &h.id)
            .await
            .unwrap_or_else(|| panic!("{damage:?}: {} is not listed", h.name));
        assert_eq!(c.state, ContainerState::Unknown as i32, "{damage:?}: {c:?}");
        assert_eq!(c.pid, h.init, "{damage:?}: not the live init's pid: {c:?}");
        assert!(
            c.quarantine_reason.contains(damage.file()),
            "{damage:?}: {:?}",
            c.quarantine_reason
        );
        let expected_name = if damage.keeps_name() {
            h.name.as_str()
        } else {
            ""
        };
        assert_eq!(c.name, expected_name, "{damage:?}: {c:?}");
        let bad = h.problems(d, true).await;
        assert!(bad.is_empty(), "{damage:?}: {}", bad.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_records_are_quarantined_and_rm_f_cleans_them_up() {
    let (mut d, metrics) = Daemon::start_with_metrics(&[]).await;
    let since = SystemTime::now();
    let parents = cgroup_parents(d.pid(), &cgroup_subtree(d.state_dir()));
    let mut held = Vec::new();
    for (i, damage) in Damage::ALL.into_iter().enumerate() {
        let name = format!("q{i}");
        run_detached(&d, &name, &[], IDLE);
        held.push((damage, Held::of(&d, &name, &parents).await));
    }
    // An exited container with an unreadable record, and one left intact.
    let exited = run_detached(&d, "qexited", &[], &["true"]);
    d.wait_state("qexited", ContainerState::Exited, WAIT).await;
    run_detached(&d, "bystander", &[], IDLE);
    let bystander = Held::of(&d, "bystander", &parents).await;

    d.stop();
    for (damage, h) in &held {
        damage.apply(&h.dir);
    }
    Damage::GarbageState.apply(&d.container_dir(&exited));
    d.start_again().await;

    assert_quarantined(&d, &held).await;
    let c = listed(&d, &exited).await.expect("qexited is listed");
    assert_eq!(
        (c.state, c.pid),
        (ContainerState::Unknown as i32, 0),
        "{c:?}"
    );
    let c = d.client().inspect("bystander").await.expect("bystander");
    assert_eq!(
        (c.state, c.pid),
        (ContainerState::Running as i32, bystander.init)
    );
    assert!(bystander.problems(&d, true).await.is_empty());
    assert_eq!(quarantined_gauge(metrics).await, 5.0);

    // The bad file is renamed aside, with the reason beside it.
    for (damage, h) in &held {
        let names: Vec<String> = fs::read_dir(&h.dir)
            .expect("container dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let aside = format!("{}.quarantined-", damage.file());
        assert!(
            names.iter().any(|n| n.starts_with(&aside))
                && names.iter().any(|n| n == "quarantine.json")
                && !names.iter().any(|n| n == damage.file()),
            "{damage:?}: {names:?}"
        );
        let c = listed(&d, &h.id).await.expect("listed");
        assert!(
            c.quarantine_reason.contains(&aside),
            "{}",
            c.quarantine_reason
        );
    }

    // Addressed by id prefix (and by name when its config was readable),
    // shown by rsupctl with the reason.
    let (damage, h) = &held[0];
    let short = &h.id[..12];
    let c = d
        .client()
        .inspect(short)
        .await
        .expect("inspect by id prefix");
    assert_eq!(c.id, h.id);
    assert!(damage.keeps_name());
    assert_eq!(d.client().inspect(&h.name).await.expect("by name").id, h.id);
    let config_damaged = &held[2].1;
    assert_eq!(
        code_of(
            "by a lost name",
            d.client().inspect(&config_damaged.name).await
        ),
        Code::NotFound
    );
    let j = d.inspect_json(short);
    assert_eq!(j["State"]["Status"], "unknown", "{j}");
    assert_eq!(j["State"]["Pid"], h.init, "{j}");
    assert!(
        j["State"]["Error"]
            .as_str()
            .is_some_and(|e| e.contains("state.json")),
        "{j}"
    );
    let ps = d.ps_json();
    let row = ps
        .iter()
        .find(|r| r["id"] == h.id.as_str())
        .expect("ps -a row");
    assert_eq!(row["state"], "unknown", "{row}");
    assert!(d.ctl_ok(["ps", "-a"]).contains("Unknown (quarantined)"));

    // No verb but rm acts on it.
    let c = d.client();
    let exec = proto::ExecRequest {
        container: h.id.clone(),
        command: vec!["true".into()],
        ..Default::default()
    };
    let refused = [
        ("start", c.start(short).await.err()),
        ("stop", c.stop(short, Some(1)).await.err()),
        ("kill", c.kill(short, "KILL").await.err()),
        (
            "update",
            c.update(
                short,
                proto::Resources {
                    pids_limit: Some(10),
                    ..Default::default()
                },
            )
            .await
            .err(),
        ),
        ("exec", c.exec(exec).await.err()),
        ("wait", c.wait(short).await.err()),
        ("logs", c.logs(short, false, None).await.err()),
        ("rm", c.remove(short, false).await.err()),
    ];
    for (verb, err) in refused {
        let err = err.unwrap_or_else(|| panic!("{verb} of a quarantined container succeeded"));
        assert_eq!(err.code(), Some(Code::FailedPrecondition), "{verb}: {err}");
        assert!(err.to_string().contains("rm -f"), "{verb}: {err}");
    }
    let out = d.ctl(["stop", short]);
    assert!(!out.status.success(), "{}", describe(&out));

    // An event said so, with the reason.
    let mut events = c
        .events(proto::EventsRequest {
            types: vec!["quarantine".into()],
            containers: Vec::new(),
            since: Some(since.into()),
        })
        .await
        .expect("events");
    let mut seen = BTreeMap::new();
    while seen.len() < 5 {
        let e = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("a quarantine event in time")
            .expect("event stream")
            .expect("an event");
        assert!(
            e.attributes.get("reason").is_some_and(|r| !r.is_empty()),
            "{e:?}"
        );
        seen.insert(e.id.clone(), e);
    }
    drop(events);

    // A further restart keeps them quarantined, and still untouched.
    d.restart().await;
    assert_quarantined(&d, &held).await;
    let log = fs::read_to_string(d.log_path()).unwrap_or_default();
    assert!(
        !log.contains("skipping a container whose state cannot be read"),
        "rsupd skipped a record"
    );

    // rm -f removes everything each held.
    let c = d.client();
    for (damage, h) in &held {
        c.remove(&h.id[..12], true)
            .await
            .unwrap_or_else(|e| panic!("{damage:?}: rm -f: {e}"));
        eventually(&format!("{damage:?}: everything to go"), WAIT, async || {
            let bad = h.problems(&d, false).await;
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join("\n"))
            }
        })
        .await;
        assert!(listed(&d, &h.id).await.is_none());
    }
    // A quarantined container whose processes ended needs no force.
    c.remove(&exited, false)
        .await
        .expect("rm of the exited one");
    assert!(!d.container_dir(&exited).exists());
    assert_eq!(quarantined_gauge(metrics).await, 0.0);
    let left: Vec<_> = held
        .iter()
        .flat_map(|(_, h)| pids_mentioning(&h.dir))
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    let c = d.client().inspect("bystander").await.expect("bystander");
    assert_eq!(
        (c.state, c.pid),
        (ContainerState::Running as i32, bystander.init)
    );
    assert!(bystander.problems(&d, true).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_kill_9_rounds_with_unreadable_records_kill_nothing_and_leak_nothing() {
    const ROUNDS: usize = 20;
    let test_start = Instant::now();
    let (mut rng, seed) = XorShift::seeded();
    println!("seed {seed} (replay with RSUP_CRASH_SEED={seed})");
    let mut d = Daemon::start().await;
    let state_dir = d.state_dir().to_path_buf();
    let (prefix, default_subnet) = net_identity(&state_dir);
    let cgroups = cgroup_parents(d.pid(), &cgroup_subtree(&state_dir));
    // A user network in this daemon's own block, as crash.rs makes it.
    let octets: Vec<u8> = default_subnet
        .split(['.', '/'])
        .filter_map(|p| p.parse().ok())
        .collect();
    d.client()
        .create_network(proto::CreateNetworkRequest {
            name: "qnet".into(),
            subnet: format!("10.{}.{}.0/24", octets[1] + 64, octets[2]),
            gateway: String::new(),
            internal: false,
        })
        .await
        .expect("create qnet");
    let networks = ["default", "qnet"];

    // Long-running containers: one is damaged (while rsupd is down) in
    // every fourth round, in turn.
    let names: [&'static str; 6] = ["l0", "l1", "l2", "l3", "l4", "l5"];
    let mut longs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let flags: &[&str] = if i % 2 == 0 {
            &["--network", "default", "--network", "qnet"]
        } else {
            &[]
        };
        let id = run_detached(&d, name, flags, IDLE);
        let c = d.wait_state(name, ContainerState::Running, WAIT).await;
        longs.push(Long {
            name,
            id,
            addrs: attachments(&c),
            looping: false,
        });
    }
    let template = d.spec("", &["true"]);
    let churns: Vec<Churn> = ["qchurn-a", "qchurn-b"]
        .into_iter()
        .map(|prefix| {
            let config = ChurnConfig {
                prefix,
                socket: d.socket().to_path_buf(),
                template: template.clone(),
                networks: vec![Vec::new(), vec!["qnet".into()], vec!["none".into()]],
                victims: Vec::new(),
            };
            Churn::spawn(config, rng.next())
        })
        .collect();

    // The init of every long container, as it ran before the first crash.
    let mut inits: BTreeMap<&str, ProcId> = BTreeMap::new();
    for l in &longs {
        let c = d.client().inspect(l.name).await.expect("inspect");
        inits.insert(l.name, ProcId::of(c.pid).expect("its init runs"));
    }
    let mut damaged: Vec<(usize, Damage)> = Vec::new();
    for round in 1..=ROUNDS {
        for c in &churns {
            c.resume();
        }
        let nap = rng.between(100, 800);
        tokio::time::sleep(Duration::from_millis(nap)).await;
        d.kill9();
        let ctx = |what: &str| format!("round {round} (seed {seed}): {what}");
        if round % 4 == 0 {
            let i = damaged.len();
            let damage = Damage::ALL[i % Damage::ALL.len()];
            damage.apply(&d.container_dir(&longs[i].id));
            println!("round {round}: {damage:?} on {}", longs[i].name);
            damaged.push((i, damage));
        }
        // Down for a moment, or restarted at once.
        tokio::time::sleep(Duration::from_millis(rng.between(0, 300))).await;
        d.start_again().await;
        for c in &churns {
            c.pause().await;
        }

        // Nothing that ran was killed: each long container runs (or is
        // quarantined) with the init it had.
        for (i, l) in longs.iter().enumerate() {
            let quarantined = damaged.iter().any(|(j, _)| *j == i);
            let c = listed(&d, &l.id)
                .await
                .unwrap_or_else(|| panic!("{}", ctx(&format!("{} is not listed", l.name))));
            let want = if quarantined {
                ContainerState::Unknown
            } else {
                ContainerState::Running
            };
            assert_eq!(c.state, want as i32, "{}", ctx(&format!("{c:?}")));
            let init = inits[l.name];
            assert!(
                runs(&init),
                "{}",
                ctx(&format!("{}'s init {} died", l.name, init.pid))
            );
            assert_eq!(c.pid, init.pid, "{}", ctx(&format!("{c:?}")));
        }
        // Nothing leaks: leases, links, cgroups, netns mounts and processes
        // only of listed (or quarantined) containers.
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
        println!(
            "round {round:2}: ran {nap:3} ms; churn: {}",
            churns
                .iter()
                .map(Churn::summary)
                .collect::<Vec<_>>()
                .join(" + ")
        );
    }
    for c in churns {
        let left = c.stop().await;
        println!("churn stopped; could not remove {left:?}");
    }
    assert_eq!(damaged.len(), ROUNDS / 4);

    // rm -f of everything leaves nothing.
    for c in d.client().list(true).await.expect("list") {
        d.client()
            .remove(&c.id, true)
            .await
            .unwrap_or_else(|e| panic!("rm -f {} {}: {e}", c.id, c.name));
    }
    d.client()
        .remove_network("qnet")
        .await
        .expect("remove qnet");
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
        let procs: Vec<i32> = blocking(|| pids_mentioning(&state_dir))
            .into_iter()
            .filter(|&p| p != rsupd && rsup_tests::cmdline(p).is_some_and(|c| !c.is_empty()))
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
    for (_, init) in inits {
        assert!(!runs(&init), "init {} survived rm -f", init.pid);
    }
    let out = stdout(&d.ctl(["ps", "-a", "-q"]));
    assert!(out.trim().is_empty(), "{out}");
    println!(
        "{ROUNDS} rounds in {:.1} s (seed {seed})",
        test_start.elapsed().as_secs_f64()
    );
}
