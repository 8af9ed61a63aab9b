//! Fifty concurrent create/start/wait/remove cycles through the client
//! library, after which nothing of them is left: no shim or init process, no
//! process mentioning the state dir but rsupd itself, no child of rsupd, no
//! container directory (state, config, log files), no mount, no list entry.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rsup_client::{Client, proto};
use rsup_tests::{
    Daemon, ProcId, children_of, eventually, mounts_mentioning, pids_mentioning, recorded_procs,
    unique_name,
};
use tokio::task::JoinSet;

const CYCLES: usize = 50;

/// One lifecycle; returns the id and the processes seen while it ran.
async fn cycle(
    client: Client,
    spec: proto::ContainerSpec,
    expect_code: i32,
    state_dir: PathBuf,
) -> Result<(String, Vec<ProcId>), String> {
    let name = spec.name.clone();
    let c = client
        .create(spec)
        .await
        .map_err(|e| format!("create {name}: {e}"))?;
    client
        .start(&name)
        .await
        .map_err(|e| format!("start {name}: {e}"))?;
    // Usually still running (it sleeps): note its shim and init.
    let procs = recorded_procs(&state_dir, &c.id);
    let status = client
        .wait(&name)
        .await
        .map_err(|e| format!("wait {name}: {e}"))?;
    if status.exit_code != expect_code {
        return Err(format!("{name} exited with {status:?}, want {expect_code}"));
    }
    let mut logs = client
        .logs(&name, false, None)
        .await
        .map_err(|e| format!("logs {name}: {e}"))?;
    let mut lines = Vec::new();
    while let Some(entry) = logs
        .message()
        .await
        .map_err(|e| format!("logs {name}: {e}"))?
    {
        lines.push(String::from_utf8_lossy(&entry.line).into_owned());
    }
    if lines != [format!("cycle {name}")] {
        return Err(format!("{name} logged {lines:?}"));
    }
    client
        .remove(&name, false)
        .await
        .map_err(|e| format!("remove {name}: {e}"))?;
    Ok((c.id, procs))
}

/// Every path under `dir` whose name contains one of `ids`.
fn paths_naming(dir: &Path, ids: &[String], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if ids.iter().any(|id| name.contains(id.as_str())) {
            out.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            paths_naming(&path, ids, out);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_lifecycles_leave_nothing_behind() {
    let d = Daemon::start().await;
    let mut tasks = JoinSet::new();
    for i in 0..CYCLES {
        let name = unique_name("cycle");
        let code = (i % 5) as i32;
        let script = format!("echo cycle {name}; sleep 0.3; exit {code}");
        let spec = d.spec(&name, &["sh", "-c", &script]);
        tasks.spawn(cycle(
            d.client().clone(),
            spec,
            code,
            d.state_dir().to_owned(),
        ));
    }
    let results = tokio::time::timeout(Duration::from_secs(240), tasks.join_all())
        .await
        .expect("50 cycles finish within 240 s");
    let mut ids = Vec::new();
    let mut procs = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok((id, p)) => {
                ids.push(id);
                procs.extend(p);
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cycles failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(!procs.is_empty(), "no state.json ever named a shim or init");

    let left = d.client().list(true).await.expect("list");
    assert!(left.is_empty(), "containers left: {left:?}");
    let info = d.client().info().await.expect("info");
    assert_eq!((info.containers, info.running), (0, 0), "{info:?}");

    let rsupd = d.pid();
    let state_dir = d.state_dir().to_owned();
    eventually("no leftovers", Duration::from_secs(15), async || {
        let mut problems = Vec::new();
        let alive: Vec<&ProcId> = procs.iter().filter(|p| p.exists()).collect();
        if !alive.is_empty() {
            problems.push(format!("shims or inits alive: {alive:?}"));
        }
        let mentioning: Vec<(i32, String)> = pids_mentioning(&state_dir)
            .into_iter()
            .filter(|&p| p != rsupd)
            .map(|p| (p, rsup_tests::cmdline(p).unwrap_or_default()))
            .collect();
        if !mentioning.is_empty() {
            problems.push(format!(
                "processes mentioning the state dir: {mentioning:?}"
            ));
        }
        let children = children_of(rsupd);
        if !children.is_empty() {
            problems.push(format!("children of rsupd: {children:?}"));
        }
        let dirs: Vec<PathBuf> = fs::read_dir(state_dir.join("containers"))
            .map(|e| e.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if !dirs.is_empty() {
            problems.push(format!("container dirs: {dirs:?}"));
        }
        let mut named = Vec::new();
        paths_naming(&state_dir, &ids, &mut named);
        if !named.is_empty() {
            problems.push(format!("files naming a container: {named:?}"));
        }
        let mounts = mounts_mentioning(&state_dir);
        if !mounts.is_empty() {
            problems.push(format!("mounts: {mounts:?}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    })
    .await;
}
