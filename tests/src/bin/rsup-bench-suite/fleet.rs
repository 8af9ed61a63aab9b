//! `fleet`: many running containers. For each count of `--counts`:
//! `/metrics` scrape time, one-shot Stats RPC latency, `rsupctl ps` and
//! `rsupctl stats --no-stream`, rsupd's memory and the memory each container
//! costs (shim and init, RSS and PSS), then crash safety: SIGKILL rsupd and
//! time a new one until it is SERVING and lists every container running.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rsup_client::{Client, proto};

use rsup_tests::{Daemon, concurrently, force_remove_all, proc_stat, pss_kb, status_kb};

use crate::common::{
    Common, Ctx, REMOVE_CONCURRENCY, Row, http_get, ms, spec, start_daemon, time_command,
};

/// How long a re-adoption may take before the bench gives up.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(clap::Args)]
pub struct Args {
    /// Container counts to measure at, ascending (FLEET_COUNTS in bench.sh).
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    counts: Vec<usize>,
    /// Concurrent create+start requests while starting the containers.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Network of the containers: `default` (rsup's default: a bridge with
    /// DNS; what a container gets without --network) or `none`.
    #[arg(long, default_value = "default")]
    network: String,
    /// Memory limit of each container, in MiB (`-m 64m`).
    #[arg(long, default_value_t = 64)]
    memory_mib: i64,
    /// Timed `/metrics` scrapes per count (after 3 untimed).
    #[arg(long, default_value_t = 50)]
    scrapes: usize,
    /// Timed one-shot Stats RPCs per count (after 3 untimed).
    #[arg(long, default_value_t = 50)]
    stats_calls: usize,
    /// Timed runs of `rsupctl ps` and `rsupctl stats --no-stream` per count.
    #[arg(long, default_value_t = 10)]
    cli_runs: usize,
    /// SIGKILL + restart cycles of rsupd per count.
    #[arg(long, default_value_t = 3)]
    adopt_runs: usize,
    /// Window over which rsupd's CPU use with the idle containers is read, in
    /// seconds.
    #[arg(long, default_value_t = 5.0)]
    cpu_window_secs: f64,
    /// Skip the CPU, scrape, Stats and CLI figures.
    #[arg(long)]
    skip_resources: bool,
    /// Skip the rsupd crash / re-adoption timings.
    #[arg(long)]
    skip_adopt: bool,
    /// Seconds to wait after starting the containers, before measuring (the
    /// usage sampler runs every second).
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// The scrape goal at the largest count, in ms (reported, not asserted).
    #[arg(long, default_value_t = 50.0)]
    scrape_goal_ms: f64,
}

pub async fn run(common: &Common, args: Args) -> anyhow::Result<()> {
    let ctx = Ctx::new(common)?;
    if args.counts.is_empty() || args.counts.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--counts must be ascending, e.g. 100,500");
    }
    if !matches!(args.network.as_str(), "default" | "none") {
        bail!("--network must be `default` or `none`");
    }
    let (mut daemon, client) = start_daemon(&ctx, "fleet").await?;
    let result = measure(&ctx, &args, &mut daemon, client).await;
    let teardown = daemon.shutdown().await;
    result.and(teardown)
}

async fn measure(
    ctx: &Ctx,
    args: &Args,
    daemon: &mut Daemon,
    mut client: Client,
) -> anyhow::Result<()> {
    let net = args.network.as_str();
    let max = *args.counts.last().context("no counts")?;
    let specs: Arc<Vec<proto::ContainerSpec>> = Arc::new(
        (0..max)
            .map(|i| {
                let mut s = spec(ctx, &format!("f-{i}"), &["sleep", "100000"]);
                // As an operator runs a fleet (and as issue 16 measures it).
                s.restart = Some(proto::RestartPolicy {
                    policy: "always".into(),
                    ..Default::default()
                });
                s.resources = Some(proto::Resources {
                    memory_bytes: Some(args.memory_mib << 20),
                    ..Default::default()
                });
                if net == "none" {
                    s.networks = vec!["none".into()];
                }
                s
            })
            .collect(),
    );
    let mut each = Vec::new();
    let mut have = 0;
    for &n in &args.counts {
        // ---------------------------------------------------------- start
        let t0 = Instant::now();
        let c = client.clone();
        let s = specs.clone();
        let base = have;
        let results = concurrently(n - have, args.concurrency, move |i| {
            let c = c.clone();
            let spec = s[base + i].clone();
            async move {
                let name = spec.name.clone();
                let started = Instant::now();
                c.create(spec).await?;
                c.start(&name).await?;
                Ok::<_, rsup_client::Error>(ms(started.elapsed()))
            }
        })
        .await;
        let total = t0.elapsed();
        for (i, r) in results.into_iter().enumerate() {
            each.push(r.with_context(|| format!("starting f-{}", base + i))?);
        }
        have = n;
        ctx.rec.single(
            Row {
                id: &format!("rsup-start-{base}-to-{n}-{net}"),
                what: &format!(
                    "rsup: create+start containers {base}..{n} (sleep 100000, -m {}m, --restart always, network {net}) \
                     through the client library, {} at a time (total)",
                    args.memory_mib, args.concurrency
                ),
                cmd: "rsup-bench-suite fleet: Client::create+start, bounded concurrency",
                unit: "s",
                notes: &format!("{:.1} containers/s", (n - base) as f64 / total.as_secs_f64()),
            },
            total.as_secs_f64(),
        )?;
        let running = client.list(false).await?.len();
        if running != n {
            bail!("{running} containers running, expected {n}");
        }
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;

        // ---------------------------------------------------------- memory
        memory(ctx, daemon, &client, n).await?;

        // ---------------------------------------------------------- resources
        if !args.skip_resources {
            idle_cpu(ctx, daemon, n, args.cpu_window_secs).await?;
            let goal = (n == max).then_some(args.scrape_goal_ms);
            scrape(ctx, daemon, n, args.scrapes, goal).await?;
            stats_rpc(ctx, &client, n, args.stats_calls).await?;
            cli(ctx, daemon, n, args.cli_runs)?;
        }

        // ---------------------------------------------------------- crash safety
        if !args.skip_adopt && args.adopt_runs > 0 {
            client = readopt(ctx, daemon, client, n, args.adopt_runs).await?;
        }
    }
    ctx.rec.values(
        Row {
            id: &format!("rsup-create-start-each-{net}"),
            what: &format!(
                "rsup: create+start of one container (sleep 100000, -m {}m, network {net}) while \
                 filling to {max}, {} requests at a time",
                args.memory_mib, args.concurrency
            ),
            cmd: "Client::create + Client::start",
            unit: "ms",
            notes: "latency under concurrency: not a sequential figure",
        },
        &each,
    )?;

    // ------------------------------------------------------------------ remove
    let t0 = Instant::now();
    force_remove_all(&client, REMOVE_CONCURRENCY).await?;
    ctx.rec.single(
        Row {
            id: &format!("rsup-rm-{max}-{net}"),
            what: &format!("rsup: force-remove all {max} running containers, 8 requests at a time"),
            cmd: "Client::remove(force) x N",
            unit: "s",
            notes: "",
        },
        t0.elapsed().as_secs_f64(),
    )?;
    Ok(())
}

/// rsupd's memory, and each container's shim and init (the per-container
/// cost of keeping it supervised), from /proc.
async fn memory(ctx: &Ctx, daemon: &Daemon, client: &Client, n: usize) -> anyhow::Result<()> {
    let mut shim_rss = Vec::new();
    let mut shim_pss = Vec::new();
    let mut init_rss = Vec::new();
    let mut init_pss = Vec::new();
    for c in client.list(false).await? {
        let (shim, init) = daemon
            .recorded_pids(&c.id)
            .with_context(|| format!("no pids in the state.json of {}", c.name))?;
        for (pid, rss, pss) in [
            (shim, &mut shim_rss, &mut shim_pss),
            (init, &mut init_rss, &mut init_pss),
        ] {
            if !daemon.owns(pid) {
                bail!("pid {pid} of {} is not one of the bench daemon's", c.name);
            }
            rss.push(status_kb(pid, "VmRSS").context("VmRSS")? as f64);
            pss.push(pss_kb(pid).context("Pss")? as f64);
        }
    }
    let pid = daemon.pid();
    let (d_rss, d_pss) = (
        status_kb(pid, "VmRSS").unwrap_or(0),
        pss_kb(pid).unwrap_or(0),
    );
    ctx.rec.single(
        Row {
            id: &format!("rsup-rsupd-rss-{n}"),
            what: &format!("rsup: VmRSS of rsupd with {n} running containers"),
            cmd: "grep VmRSS /proc/<rsupd>/status",
            unit: "kB",
            notes: &format!("Pss {d_pss} kB"),
        },
        d_rss as f64,
    )?;
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    for (who, rss, pss) in [
        ("shim", &shim_rss, &shim_pss),
        ("init", &init_rss, &init_pss),
    ] {
        let what_proc = match who {
            "shim" => "shim (rsup-shim __rsup-shim: owns the container's output and exit status)",
            _ => "init (the container's PID 1, rsup's own code: reaps, forwards signals)",
        };
        ctx.rec.values(
            Row {
                id: &format!("rsup-{who}-rss-each-{n}"),
                what: &format!("rsup: VmRSS of one {what_proc}, {n} running"),
                cmd: "grep VmRSS /proc/<pid>/status (pids from state.json)",
                unit: "kB",
                notes: &format!("sum {:.2} MiB", sum(rss) / 1024.0),
            },
            rss,
        )?;
        ctx.rec.values(
            Row {
                id: &format!("rsup-{who}-pss-each-{n}"),
                what: &format!("rsup: Pss of one {who} (shared pages split), {n} running"),
                cmd: "grep Pss /proc/<pid>/smaps_rollup",
                unit: "kB",
                notes: &format!("sum {:.2} MiB", sum(pss) / 1024.0),
            },
            pss,
        )?;
    }
    ctx.rec.single(
        Row {
            id: &format!("rsup-keepalive-pss-per-container-{n}"),
            what: &format!(
                "rsup: memory spent per container on keeping it supervised: (sum of Pss of \
                 shims + inits) / {n}"
            ),
            cmd: "/proc/<shim_pid,init_pid>/smaps_rollup",
            unit: "kB",
            notes: &format!(
                "RSS per container (shim+init): {:.0} kB; rsupd Pss / {n}: {:.0} kB",
                (sum(&shim_rss) + sum(&init_rss)) / n as f64,
                d_pss as f64 / n as f64
            ),
        },
        (sum(&shim_pss) + sum(&init_pss)) / n as f64,
    )?;
    Ok(())
}

/// rsupd's CPU time (user + system) over `secs` with `n` idle containers
/// and no client: the cost of sampling their cgroups every --stats-interval.
async fn idle_cpu(ctx: &Ctx, daemon: &Daemon, n: usize, secs: f64) -> anyhow::Result<()> {
    // /proc/<pid>/stat counts in USER_HZ, which Linux fixes at 100.
    const TICKS_PER_SEC: f64 = 100.0;
    let ticks = |pid: i32| -> anyhow::Result<u64> {
        let stat = proc_stat(pid).with_context(|| format!("no /proc/{pid}/stat"))?;
        Ok(stat.utime + stat.stime)
    };
    let pid = daemon.pid();
    let a = ticks(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let b = ticks(pid)?;
    let pct = (b - a) as f64 / TICKS_PER_SEC / t0.elapsed().as_secs_f64() * 100.0;
    ctx.rec.single(
        Row {
            id: &format!("rsup-rsupd-cpu-idle-{n}"),
            what: &format!(
                "rsup: CPU used by rsupd with {n} idle running containers and no client                  (sampling their cgroups every second), % of one core"
            ),
            cmd: "utime+stime of /proc/<rsupd>/stat over the window",
            unit: "%",
            notes: &format!("over {secs} s"),
        },
        pct,
    )
}

/// GET /metrics over loopback: 3 untimed, then `runs` timed scrapes.
async fn scrape(
    ctx: &Ctx,
    daemon: &Daemon,
    n: usize,
    runs: usize,
    goal: Option<f64>,
) -> anyhow::Result<()> {
    let metrics = daemon
        .metrics_addr()
        .context("the bench daemon serves no /metrics")?;
    let mut samples = Vec::with_capacity(runs);
    let mut last = (0, String::new());
    for i in 0..3 + runs {
        let t0 = Instant::now();
        let (code, len, body) = http_get(metrics, "/metrics").await?;
        let elapsed = t0.elapsed();
        if code != 200 {
            bail!("GET /metrics: HTTP {code}");
        }
        if i >= 3 {
            samples.push(ms(elapsed));
        }
        last = (len, body);
    }
    let (len, body) = last;
    let lines = body.lines().filter(|l| !l.starts_with('#')).count();
    let mem_series = body
        .lines()
        .filter(|l| l.starts_with("container_memory_usage_bytes{"))
        .count();
    let s = crate::common::Summary::of(&samples);
    let mut notes = format!(
        "body {:.0} KiB, {lines} samples, {mem_series} container_memory_usage_bytes series",
        len as f64 / 1024.0
    );
    if let Some(goal) = goal {
        let verdict = if s.median < goal && s.p95 < goal {
            "HOLDS (median and p95 below)"
        } else if s.median < goal {
            "holds for the median only (p95 above)"
        } else {
            "DOES NOT HOLD"
        };
        let line = format!("goal: a scrape at {n} containers under {goal} ms: {verdict}");
        println!("{line}");
        notes = format!("{notes}; {line}");
    }
    ctx.rec.values(
        Row {
            id: &format!("rsup-metrics-scrape-{n}"),
            what: &format!(
                "rsup: GET /metrics over loopback (new TCP connection, whole body read), {n} \
                 running containers"
            ),
            cmd: &format!("curl -s http://{metrics}/metrics"),
            unit: "ms",
            notes: &notes,
        },
        &samples,
    )?;
    Ok(())
}

/// One-shot Stats RPC for every running container.
async fn stats_rpc(ctx: &Ctx, client: &Client, n: usize, runs: usize) -> anyhow::Result<()> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..3 + runs {
        let t0 = Instant::now();
        let mut stream = client.stats(&[], false).await?;
        let mut got = 0;
        while let Some(msg) = stream.message().await? {
            got += msg.stats.len();
        }
        let elapsed = t0.elapsed();
        if got != n {
            bail!("Stats returned {got} containers, expected {n}");
        }
        if i >= 3 {
            samples.push(ms(elapsed));
        }
    }
    ctx.rec.values(
        Row {
            id: &format!("rsup-stats-rpc-{n}"),
            what: &format!(
                "rsup: one-shot Stats RPC for all {n} running containers (client library, open \
                 channel)"
            ),
            cmd: "Client::stats(&[], stream=false)",
            unit: "ms",
            notes: "",
        },
        &samples,
    )?;
    Ok(())
}

/// `rsupctl ps` and `rsupctl stats --no-stream`, whole processes.
fn cli(ctx: &Ctx, daemon: &Daemon, n: usize, runs: usize) -> anyhow::Result<()> {
    if runs == 0 {
        return Ok(());
    }
    for (id, args, what) in [
        ("ps", vec!["ps"], "rsupctl ps"),
        (
            "stats",
            vec!["stats", "--no-stream"],
            "rsupctl stats --no-stream",
        ),
    ] {
        let samples = time_command(
            || {
                let mut c = Command::new(ctx.rsupctl());
                c.arg("--socket").arg(daemon.socket()).args(&args);
                c
            },
            2,
            runs,
        )?;
        ctx.rec.values(
            Row {
                id: &format!("rsup-cli-{id}-{n}"),
                what: &format!("rsup: {what} with {n} running (whole process)"),
                cmd: &format!("rsupctl --socket S {}", args.join(" ")),
                unit: "ms",
                notes: "",
            },
            &samples,
        )?;
    }
    Ok(())
}

/// SIGKILL rsupd, start it again, time until SERVING and until `list`
/// shows all `n` running; the containers' init pids must not change.
async fn readopt(
    ctx: &Ctx,
    daemon: &mut Daemon,
    mut client: Client,
    n: usize,
    runs: usize,
) -> anyhow::Result<Client> {
    let mut serving = Vec::new();
    let mut all = Vec::new();
    let mut restarted = 0;
    for _ in 0..runs {
        let before: HashMap<String, i32> = client
            .list(false)
            .await?
            .into_iter()
            .map(|c| (c.id, c.pid))
            .collect();
        drop(client);
        let t0 = Instant::now();
        daemon.kill_hard()?;
        daemon.launch()?;
        client = daemon.serving().await?;
        serving.push(ms(t0.elapsed()));
        loop {
            let list = client.list(false).await?;
            let ok = list
                .iter()
                .filter(|c| c.state == proto::ContainerState::Running as i32)
                .count();
            if ok == n {
                all.push(ms(t0.elapsed()));
                restarted += list
                    .iter()
                    .filter(|c| before.get(&c.id) != Some(&c.pid))
                    .count();
                break;
            }
            if t0.elapsed() > ADOPT_TIMEOUT {
                bail!("only {ok}/{n} running {ADOPT_TIMEOUT:?} after restarting rsupd");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let notes = format!(
        "{runs} cycles; containers whose init pid changed (i.e. were restarted, not re-adopted): \
         {restarted}"
    );
    ctx.rec.values(
        Row {
            id: &format!("rsup-readopt-serving-{n}"),
            what: &format!(
                "rsup crash safety: SIGKILL rsupd with {n} running, start it again: until \
                 grpc.health SERVING"
            ),
            cmd: "kill -9 <rsupd>; rsupd ...; poll grpc.health.v1 every 5 ms",
            unit: "ms",
            notes: &notes,
        },
        &serving,
    )?;
    ctx.rec.values(
        Row {
            id: &format!("rsup-readopt-all-running-{n}"),
            what: &format!(
                "rsup crash safety: SIGKILL rsupd with {n} running, start it again: until List \
                 shows all {n} running"
            ),
            cmd: "... then poll Client::list every 5 ms",
            unit: "ms",
            notes: &notes,
        },
        &all,
    )?;
    Ok(client)
}
