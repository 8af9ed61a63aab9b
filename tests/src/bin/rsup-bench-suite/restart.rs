//! `restart`: supervision.
//!
//! * Crash loop: a `--restart always --restart-delay 0 sh -c 'sleep 1000'`
//!   container gets SIGKILL through the API `--crashes` times; per crash the
//!   bench times the kill call -> the `start` event received (end to end),
//!   and reads rsupd's own die -> start gap and kill -> die from the events.
//! * Schedule: a container that exits 1 at once, `--restart always`, for
//!   `--window-secs`, as the peers' 03 script watches podman's: restarts in
//!   the window and every die -> next start delay, with `--restart-delay 0`
//!   (podman 4.3 has no backoff) and with rsup's default backoff (Docker's:
//!   100 ms doubling up to 1 min).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rsup_client::{Client, proto};

use crate::common::{
    Common, Ctx, Events, Row, drain, event_ns, ms, next_event, now_ns, restart_always_now, spec,
    start_daemon, subscribe,
};

const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(clap::Args)]
pub struct Args {
    /// Timed crashes (SIGKILLs) of the crash loop.
    #[arg(long, default_value_t = 100)]
    crashes: usize,
    /// Untimed crashes before them.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Pause after each restart before the next kill, in ms (untimed).
    #[arg(long, default_value_t = 100)]
    pause_ms: u64,
    /// Window of each restart schedule, in seconds (peers' 03: RESTART_SECS).
    #[arg(long, default_value_t = 20.0)]
    window_secs: f64,
    /// Network of the containers (`none`, as in the peers' 03, or `default`).
    #[arg(long, default_value = "none")]
    network: String,
    /// Skip the crash loop.
    #[arg(long)]
    skip_crashes: bool,
    /// Skip the exit-1 schedules.
    #[arg(long)]
    skip_schedule: bool,
    /// Skip the schedule under rsup's default backoff.
    #[arg(long)]
    skip_default_backoff: bool,
}

pub async fn run(common: &Common, args: Args) -> anyhow::Result<()> {
    let ctx = Ctx::new(common)?;
    if !matches!(args.network.as_str(), "default" | "none") {
        bail!("--network must be `default` or `none`");
    }
    let (daemon, client) = start_daemon(&ctx, "restart").await?;
    let result = measure(&ctx, &args, &client).await;
    let teardown = daemon.shutdown().await;
    result.and(teardown)
}

async fn measure(ctx: &Ctx, args: &Args, client: &Client) -> anyhow::Result<()> {
    let mut events = subscribe(client, &["start", "die"]).await?;
    if !args.skip_crashes && args.crashes > 0 {
        crash_loop(ctx, args, client, &mut events).await?;
    }
    if !args.skip_schedule {
        schedule(ctx, args, client, &mut events, true).await?;
        if !args.skip_default_backoff {
            schedule(ctx, args, client, &mut events, false).await?;
        }
    }
    Ok(())
}

fn with_network(mut s: proto::ContainerSpec, network: &str) -> proto::ContainerSpec {
    if network == "none" {
        s.networks = vec!["none".into()];
    }
    s
}

async fn crash_loop(
    ctx: &Ctx,
    args: &Args,
    client: &Client,
    events: &mut Events,
) -> anyhow::Result<()> {
    let name = "crashy";
    let mut s = with_network(spec(ctx, name, &["sh", "-c", "sleep 1000"]), &args.network);
    s.restart = Some(restart_always_now());
    client.create(s).await?;
    drain(events);
    client.start(name).await?;
    next_event(events, name, "start", EVENT_TIMEOUT).await?;
    let mut e2e = Vec::new();
    let mut gap = Vec::new();
    let mut to_die = Vec::new();
    for i in 0..args.warmup + args.crashes {
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        drain(events);
        let t0_ns = now_ns();
        let t0 = Instant::now();
        client.kill(name, "KILL").await?;
        let (die, _) = next_event(events, name, "die", EVENT_TIMEOUT).await?;
        let (start, at) = next_event(events, name, "start", EVENT_TIMEOUT).await?;
        if i >= args.warmup {
            e2e.push(ms(at.saturating_duration_since(t0)));
            gap.push((event_ns(&start) - event_ns(&die)) as f64 / 1e6);
            to_die.push((event_ns(&die) - t0_ns) as f64 / 1e6);
        }
    }
    let c = client.inspect(name).await?;
    let notes = format!(
        "restart_count after {} kills: {}; network {}",
        args.warmup + args.crashes,
        c.restart_count,
        args.network
    );
    let how = "--restart always --restart-delay 0 sh -c 'sleep 1000'; Client::kill(KILL)";
    ctx.rec.values(
        Row {
            id: "rsup-restart-crash-e2e",
            what: "rsup restart latency, end to end: kill call -> the restarted container's \
                   'start' event received (command forked in fresh namespaces and cgroup)",
            cmd: how,
            unit: "ms",
            notes: &notes,
        },
        &e2e,
    )?;
    ctx.rec.values(
        Row {
            id: "rsup-restart-die-to-start",
            what: "rsup restart latency inside rsupd: 'die' event -> 'start' event (rsupd's \
                   timestamps), delay 0",
            cmd: how,
            unit: "ms",
            notes: &notes,
        },
        &gap,
    )?;
    ctx.rec.values(
        Row {
            id: "rsup-restart-kill-to-die",
            what: "kill call -> rsupd's 'die' event (signal delivery, exit of init and shim, \
                   exit recorded)",
            cmd: how,
            unit: "ms",
            notes: "",
        },
        &to_die,
    )?;
    client.remove(name, true).await?;
    Ok(())
}

/// The peers' 03 measure: a container that exits 1, --restart always, for
/// the window; restarts and die -> next start delays from the events.
async fn schedule(
    ctx: &Ctx,
    args: &Args,
    client: &Client,
    events: &mut Events,
    delay_zero: bool,
) -> anyhow::Result<()> {
    let name = if delay_zero { "exit1-d0" } else { "exit1" };
    let mut s = with_network(spec(ctx, name, &["sh", "-c", "exit 1"]), &args.network);
    s.restart = Some(if delay_zero {
        restart_always_now()
    } else {
        proto::RestartPolicy {
            policy: "always".into(),
            ..Default::default()
        }
    });
    client.create(s).await?;
    drain(events);
    let window = Duration::from_secs_f64(args.window_secs);
    let end = tokio::time::Instant::now() + window;
    client.start(name).await?;
    let mut seen: Vec<(i128, bool)> = Vec::new(); // (time, is_start)
    loop {
        match tokio::time::timeout_at(end, events.recv()).await {
            Err(_) => break,
            Ok(None) => bail!("the event stream ended"),
            Ok(Some((e, _))) if e.subject == name => {
                seen.push((event_ns(&e), e.r#type == "start"));
            }
            Ok(Some(_)) => {}
        }
    }
    client
        .stop(name, Some(0))
        .await
        .with_context(|| format!("stopping {name}"))?;
    seen.sort_by_key(|(t, _)| *t);
    let starts: Vec<i128> = seen.iter().filter(|(_, s)| *s).map(|(t, _)| *t).collect();
    let dies: Vec<i128> = seen.iter().filter(|(_, s)| !*s).map(|(t, _)| *t).collect();
    let delays: Vec<f64> = dies
        .iter()
        .filter_map(|d| starts.iter().find(|s| *s > d).map(|s| (s - d) as f64 / 1e6))
        .collect();
    let t0 = starts.first().copied().unwrap_or(0);
    let offsets: Vec<String> = starts
        .iter()
        .take(15)
        .map(|s| format!("{:.3}", (s - t0) as f64 / 1e9))
        .collect();
    let first: Vec<String> = delays.iter().take(15).map(|d| format!("{d:.1}")).collect();
    let secs = args.window_secs;
    let (suffix, policy) = if delay_zero {
        ("", "--restart always --restart-delay 0")
    } else {
        (
            "-default-backoff",
            "--restart always (default backoff: 100 ms, doubling, max 1 min)",
        )
    };
    let cmd = format!(
        "rsupctl run -d {policy} --network {} sh -c 'exit 1'",
        args.network
    );
    ctx.rec.single(
        Row {
            id: &format!("rsup-restarts-in-{secs}s{suffix}"),
            what: &format!("rsup {policy}, container exits 1: restarts within {secs}s"),
            cmd: &cmd,
            unit: "count",
            notes: &format!("start offsets (s): [{}]", offsets.join(", ")),
        },
        starts.len().saturating_sub(1) as f64,
    )?;
    ctx.rec.values(
        Row {
            id: &format!("rsup-restart-delay{suffix}"),
            what: &format!("rsup {policy}: delay die -> next start (rsupd's event times)"),
            cmd: &cmd,
            unit: "ms",
            notes: &format!("first delays (ms): [{}]", first.join(", ")),
        },
        &delays,
    )?;
    client.remove(name, true).await?;
    Ok(())
}
