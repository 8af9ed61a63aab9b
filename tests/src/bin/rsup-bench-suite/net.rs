//! `net`: container DNS and reachability by name across crashes, on a user
//! network with `db` (`--restart always --restart-delay 0`, a `nc -l` loop on
//! port 8080) and `app` (`sleep`).
//!
//! * DNS latency, as the peers' 04 script measures aardvark-dns: raw UDP A
//!   queries for `db` from app's network namespace (the peers'
//!   `dns_probe.py`), `busybox nslookup` under `nsenter -t <app> -n -m`, and
//!   `rsupctl exec app nslookup`.
//! * Crash cycles, as 04 runs its "crash" mode: a prober in app's netns asks
//!   for `db` every 5 ms while db's PID 1 gets SIGKILL from the host; the
//!   peers' `dns_restart_analyze.py` turns its log into the outage.
//! * Reconnect cycles: `kill db` through the API, then, once rsupd reported
//!   the death, an exec in app polls `nc db 8080` every 10 ms until it
//!   connects by name.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rsup_client::{Client, proto};
use rsup_tests::{Daemon, networks_stub};

use crate::common::{
    Common, Ctx, Events, Row, drain, event_ns, ms, next_event, now_ns, restart_always_now, spec,
    start_daemon, subscribe, time_command, wait_running,
};

/// The db container's command: answers `ok` to every connection on 8080.
const DB_LOOP: &str = "while true; do echo ok | nc -l -p 8080; done";
/// Polls db:8080 by name from inside app until a connection succeeds.
const POLL_DB: &str = "until echo | nc -w 1 db 8080 >/dev/null 2>&1; do usleep 10000; done";
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(clap::Args)]
pub struct Args {
    /// The peer harness (for dns_probe.py and dns_restart_analyze.py).
    #[arg(long, value_name = "DIR")]
    peers: PathBuf,
    /// Python interpreter for the probes (a real one, not a pyenv shim).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Name of the user network.
    #[arg(long, default_value = "bxnet")]
    network: String,
    /// Its subnet; dns_probe.py only queries addresses in 10.88.0.0/14.
    #[arg(long, default_value = "10.90.77.0/24")]
    subnet: String,
    /// Sequential raw DNS queries for the latency figure.
    #[arg(long, default_value_t = 2000)]
    dns_queries: usize,
    /// Timed runs of nsenter + busybox nslookup (and of the nsenter baseline).
    #[arg(long, default_value_t = 200)]
    nslookup_runs: usize,
    /// Timed runs of `rsupctl exec app ...`.
    #[arg(long, default_value_t = 20)]
    exec_runs: usize,
    /// Crash cycles with the DNS prober (peers' 04: CYCLES, 10).
    #[arg(long, default_value_t = 20)]
    crash_cycles: usize,
    /// How long the prober watches each crash, in seconds (04: WATCH_SECS).
    #[arg(long, default_value_t = 5.0)]
    watch_secs: f64,
    /// Kill -> reconnect-by-name cycles.
    #[arg(long, default_value_t = 20)]
    reconnect_cycles: usize,
}

pub async fn run(common: &Common, args: Args) -> anyhow::Result<()> {
    let ctx = Ctx::new(common)?;
    for f in ["dns_probe.py", "dns_restart_analyze.py"] {
        if !args.peers.join(f).is_file() {
            bail!("{}/{f} not found (--peers)", args.peers.display());
        }
    }
    let (daemon, client) = start_daemon(&ctx, "net").await?;
    let result = measure(&ctx, &args, &daemon, &client).await;
    let teardown = daemon.shutdown().await;
    result.and(teardown)
}

/// What the measures need to know about the setup.
struct Setup {
    gateway: String,
    app_pid: i32,
    app_netns: PathBuf,
}

async fn measure(ctx: &Ctx, args: &Args, daemon: &Daemon, client: &Client) -> anyhow::Result<()> {
    let net = networks_stub(client)
        .create(proto::CreateNetworkRequest {
            name: args.network.clone(),
            subnet: args.subnet.clone(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating network {}", args.network))?
        .into_inner();
    let mut events = subscribe(client, &["start", "die"]).await?;

    let mut db = spec(ctx, "db", &["sh", "-c", DB_LOOP]);
    db.networks = vec![args.network.clone()];
    db.restart = Some(restart_always_now());
    let mut app = spec(ctx, "app", &["sleep", "100000"]);
    app.networks = vec![args.network.clone()];
    for s in [db, app] {
        let name = s.name.clone();
        client.create(s).await?;
        client.start(&name).await?;
    }
    let app = wait_running(client, "app", EVENT_TIMEOUT).await?;
    wait_running(client, "db", EVENT_TIMEOUT).await?;
    let setup = Setup {
        gateway: net.gateway.clone(),
        app_pid: app.pid,
        app_netns: daemon.container_dir(&app.id).join("netns"),
    };
    reachable(client, Duration::from_secs(20)).await?;
    println!(
        "network {} ({}, gateway and DNS {}), app pid {}",
        net.name, net.subnet, net.gateway, app.pid
    );

    latency(ctx, args, daemon, &setup)?;
    crash_cycles(ctx, args, daemon, client, &setup, &mut events).await?;
    reconnect_cycles(ctx, args, client, &mut events).await?;
    Ok(())
}

/// Exec in app: poll db:8080 by name until it answers.
async fn reachable(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let out = client
        .exec(proto::ExecRequest {
            container: "app".into(),
            command: vec!["sh".into(), "-c".into(), POLL_DB.into()],
            timeout_ms: Some(timeout.as_millis() as u64),
            ..Default::default()
        })
        .await?;
    if out.timed_out || out.exit_code != 0 {
        bail!(
            "app could not connect to db:8080 within {timeout:?} (exit {}, {})",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// DNS latency: raw queries, nsenter + nslookup, rsupctl exec nslookup.
fn latency(ctx: &Ctx, args: &Args, daemon: &Daemon, s: &Setup) -> anyhow::Result<()> {
    let gw = s.gateway.as_str();
    let out = daemon.dir().join("dns-rtt.txt");
    let probe = Command::new("nsenter")
        .arg(format!("--net={}", s.app_netns.display()))
        .arg(&args.python)
        .arg(args.peers.join("dns_probe.py"))
        .args(["latency", "--server", gw, "--name", "db", "--count"])
        .arg(args.dns_queries.to_string())
        .arg("--out")
        .arg(&out)
        .output()
        .context("running dns_probe.py latency")?;
    if !probe.status.success() {
        bail!(
            "dns_probe.py latency: {}: {}",
            probe.status,
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }
    let rtts = read_numbers(&out)?;
    ctx.rec.values(
        Row {
            id: "rsup-dns-query-rtt",
            what: &format!(
                "DNS A query for 'db' -> rsupd's embedded DNS server, raw UDP RTT from app's \
                 netns ({} sequential)",
                args.dns_queries
            ),
            cmd: &format!(
                "nsenter --net=<state>/containers/<app>/netns python3 dns_probe.py latency \
                 --server {gw} --name db --count {}",
                args.dns_queries
            ),
            unit: "ms",
            notes: String::from_utf8_lossy(&probe.stderr).trim(),
        },
        &rtts,
    )?;

    let pid = s.app_pid.to_string();
    let nsenter = |argv: &'static [&'static str]| {
        let pid = pid.clone();
        let gw = gw.to_owned();
        move || {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid, "-n", "-m"]);
            for a in argv {
                c.arg(if *a == "GW" { gw.as_str() } else { *a });
            }
            c
        }
    };
    let runs = args.nslookup_runs;
    let v = time_command(
        nsenter(&["/bin/busybox", "nslookup", "-type=a", "db", "GW"]),
        10,
        runs,
    )?;
    ctx.rec.values(
        Row {
            id: "rsup-busybox-nslookup-db",
            what: "busybox nslookup -type=a db (inside app: nsenter net+mnt), whole process",
            cmd: &format!("nsenter -t <app pid 1> -n -m /bin/busybox nslookup -type=a db {gw}"),
            unit: "ms",
            notes: "",
        },
        &v,
    )?;
    let v = time_command(nsenter(&["/bin/true"]), 10, runs)?;
    ctx.rec.values(
        Row {
            id: "rsup-nsenter-true-baseline",
            what: "baseline for the row above: nsenter net+mnt of app + exec /bin/true",
            cmd: "nsenter -t <app pid 1> -n -m /bin/true",
            unit: "ms",
            notes: "",
        },
        &v,
    )?;
    let ctl = |argv: &'static [&'static str]| {
        let rsupctl = ctx.rsupctl();
        let socket = daemon.socket().to_owned();
        let gw = gw.to_owned();
        move || {
            let mut c = Command::new(&rsupctl);
            c.arg("--socket").arg(&socket).args(["exec", "app"]);
            for a in argv {
                c.arg(if *a == "GW" { gw.as_str() } else { *a });
            }
            c
        }
    };
    let v = time_command(ctl(&["nslookup", "-type=a", "db", "GW"]), 2, args.exec_runs)?;
    ctx.rec.values(
        Row {
            id: "rsup-exec-nslookup-db",
            what: "rsupctl exec app nslookup -type=a db (includes rsupctl exec overhead)",
            cmd: &format!("rsupctl exec app nslookup -type=a db {gw}"),
            unit: "ms",
            notes: "",
        },
        &v,
    )?;
    let v = time_command(ctl(&["true"]), 2, args.exec_runs)?;
    ctx.rec.values(
        Row {
            id: "rsup-exec-true",
            what: "baseline: rsupctl exec app true (whole process)",
            cmd: "rsupctl exec app true",
            unit: "ms",
            notes: "",
        },
        &v,
    )?;
    Ok(())
}

/// A child process killed (it is ours) and reaped when dropped.
struct Reaped(Option<Child>);

impl Reaped {
    fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut c = self.0.take().context("already reaped")?;
        Ok(c.wait()?)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The peers' 04 "crash" mode: SIGKILL db's PID 1 from the host while a
/// prober in app's netns asks for `db` every 5 ms.
async fn crash_cycles(
    ctx: &Ctx,
    args: &Args,
    daemon: &Daemon,
    client: &Client,
    s: &Setup,
    events: &mut Events,
) -> anyhow::Result<()> {
    if args.crash_cycles == 0 {
        return Ok(());
    }
    let mut outage = Vec::new();
    let mut nx = Vec::new();
    let mut restart = Vec::new();
    let mut ip_changed = 0;
    let mut not_recovered = 0;
    let mut answers: Vec<serde_json::Value> = Vec::new();
    for k in 1..=args.crash_cycles {
        let db = wait_running(client, "db", EVENT_TIMEOUT).await?;
        let ip_before = db
            .networks
            .first()
            .map(|a| a.ip.clone())
            .context("db has no address")?;
        if !daemon.owns(db.pid) {
            bail!("db's pid {} is not one of the bench daemon's", db.pid);
        }
        let log = daemon.dir().join(format!("watch-crash-{k}.log"));
        let mut prober = Command::new("nsenter");
        prober
            .arg(format!("--net={}", s.app_netns.display()))
            .arg(&args.python)
            .arg(args.peers.join("dns_probe.py"))
            .args(["watch", "--server", &s.gateway, "--name", "db"])
            .arg("--duration")
            .arg(args.watch_secs.to_string())
            .args(["--interval", "0.005", "--timeout", "0.25", "--out"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = prober.spawn().context("spawning dns_probe.py watch")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut prober = Reaped(Some(child));
        // "ready" once the first answer came back.
        let ready = tokio::task::spawn_blocking(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("ready"))
        });
        match tokio::time::timeout(Duration::from_secs(10), ready).await {
            Ok(Ok(true)) => {}
            _ => bail!("the DNS prober never got an answer for db"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drain(events);
        let t_kill = now_ns();
        kill(Pid::from_raw(db.pid), Signal::SIGKILL).context("SIGKILL to db's pid 1")?;
        let (start, _) = next_event(events, "db", "start", EVENT_TIMEOUT).await?;
        let status = tokio::task::spawn_blocking(move || prober.wait()).await??;
        if !status.success() {
            bail!("dns_probe.py watch: {status}");
        }
        let analysis = Command::new(&args.python)
            .arg(args.peers.join("dns_restart_analyze.py"))
            .arg(&log)
            .arg(t_kill.to_string())
            .arg(&ip_before)
            .arg(event_ns(&start).to_string())
            .output()
            .context("running dns_restart_analyze.py")?;
        if !analysis.status.success() {
            bail!(
                "dns_restart_analyze.py: {}",
                String::from_utf8_lossy(&analysis.stderr).trim()
            );
        }
        let r: serde_json::Value = serde_json::from_slice(&analysis.stdout)
            .context("dns_restart_analyze.py printed no JSON")?;
        println!("crash #{k}: {r}");
        match r["outage_ms"].as_f64() {
            Some(v) => outage.push(v),
            None => not_recovered += 1,
        }
        if let Some(v) = r["unresolvable_ms"].as_f64() {
            nx.push(v);
        }
        if let Some(v) = r["restart_start_event_ms"].as_f64() {
            restart.push(v);
        }
        if r["ip_changed"].as_bool() == Some(true) {
            ip_changed += 1;
        }
        answers.push(r["results"].clone());
        wait_running(client, "db", EVENT_TIMEOUT).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let n = args.crash_cycles;
    let how = "kill -9 <db pid 1> from host (restart=always, delay 0, restarts it)";
    ctx.rec.values(
        Row {
            id: "rsup-dns-outage-crash",
            what: &format!("{how}: kill -> app resolves db again"),
            cmd: how,
            unit: "ms",
            notes: &format!(
                "IP changed in {ip_changed}/{n} cycles; not recovered within window: \
                 {not_recovered}; 0 = every answer after the kill was the old, still valid IP"
            ),
        },
        &outage,
    )?;
    ctx.rec.values(
        Row {
            id: "rsup-dns-nxwindow-crash",
            what: &format!("{how}: first failed answer -> first good answer"),
            cmd: how,
            unit: "ms",
            notes: &format!("answers per cycle: {}", serde_json::Value::Array(answers)),
        },
        &nx,
    )?;
    ctx.rec.values(
        Row {
            id: "rsup-restart-event-crash",
            what: &format!("{how}: kill -> rsupd's 'start' event of db"),
            cmd: how,
            unit: "ms",
            notes: "event time is rsupd's clock (same host clock as the kill)",
        },
        &restart,
    )?;
    Ok(())
}

/// `kill db` through the API; once rsupd reported the death, an exec in app
/// polls db:8080 by name every 10 ms. Timed from the kill call to the
/// exec's return.
async fn reconnect_cycles(
    ctx: &Ctx,
    args: &Args,
    client: &Client,
    events: &mut Events,
) -> anyhow::Result<()> {
    if args.reconnect_cycles == 0 {
        return Ok(());
    }
    let mut reconnect = Vec::new();
    let mut start_seen = Vec::new();
    // One untimed cycle first.
    for k in 0..=args.reconnect_cycles {
        wait_running(client, "db", EVENT_TIMEOUT).await?;
        reachable(client, Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drain(events);
        let t0 = Instant::now();
        client.kill("db", "KILL").await?;
        next_event(events, "db", "die", EVENT_TIMEOUT).await?;
        reachable(client, Duration::from_secs(30)).await?;
        let elapsed = t0.elapsed();
        let (_, start_at) = next_event(events, "db", "start", EVENT_TIMEOUT).await?;
        if k > 0 {
            reconnect.push(ms(elapsed));
            start_seen.push(ms(start_at.saturating_duration_since(t0)));
        }
    }
    let how = "Client::kill(db, KILL) (= rsupctl kill db), restart=always delay 0";
    ctx.rec.values(
        Row {
            id: "rsup-reconnect-crash",
            what: &format!(
                "{how}: kill call -> app connects to db:8080 by name again (after the die \
                 event, rsupctl exec app polls `nc db 8080` every 10 ms; T1 = exec returned)"
            ),
            cmd: &format!("rsupctl kill db; rsupctl exec app sh -c '{POLL_DB}'"),
            unit: "ms",
            notes: "includes one exec (see rsup-exec-true) and up to 10 ms of polling",
        },
        &reconnect,
    )?;
    ctx.rec.values(
        Row {
            id: "rsup-reconnect-kill-to-start",
            what: &format!("{how}: kill call -> db's 'start' event received by the bench"),
            cmd: "Client::kill; Client::events",
            unit: "ms",
            notes: "",
        },
        &start_seen,
    )?;
    Ok(())
}

fn read_numbers(path: &Path) -> anyhow::Result<Vec<f64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.split_whitespace()
        .map(|t| {
            t.parse::<f64>()
                .with_context(|| format!("{t:?} in {}", path.display()))
        })
        .collect()
}
