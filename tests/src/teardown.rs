//! The end of a [`Daemon`]: what dropping it does (also while a test
//! panics), and [`Daemon::shutdown`], the benchmarks' explicit form that
//! removes containers and networks through the API first and reports.
//!
//! Invariants: teardown never panics (it reports and goes on); it signals
//! only processes it has matched by pid *and* start time and whose command
//! line names this daemon's state dir or directory (or whose parent is such
//! a shim); it deletes only links with the daemon's prefix and only empty
//! cgroups (rmdir) of the daemon's subtree; it runs once.

use std::fs;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rsup_client::{Client, proto};

use crate::api::networks_stub;
use crate::cgroupfs::{remove_cgroup_subtree_seen_by, remove_cgroup_subtree_under};
use crate::daemon::{Daemon, log_tail, state_pids};
use crate::netlinks::remove_links;
use crate::process::{describe, output_with_timeout, stdout};
use crate::procfs::{ProcId, cmdline, pids_mentioning, proc_stat};
use crate::wait::{blocking, concurrently, wait_until};

/// Concurrent requests when [`Daemon::shutdown`] removes containers.
const SHUTDOWN_CONCURRENCY: usize = 8;

/// Force-removes every container of the daemon behind `client`,
/// `concurrency` requests at a time; an error names those that failed.
pub async fn force_remove_all(client: &Client, concurrency: usize) -> anyhow::Result<()> {
    let ids: Vec<String> = client
        .list(true)
        .await
        .context("listing containers")?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let ids = std::sync::Arc::new(ids);
    let c = client.clone();
    let list = ids.clone();
    let results = concurrently(ids.len(), concurrency, move |i| {
        let c = c.clone();
        let id = list[i].clone();
        async move { c.remove(&id, true).await.map_err(|e| format!("{id}: {e}")) }
    })
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{} removals failed: {}", failed.len(), failed.join("; "))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- rsupd log ({}), last lines ---\n{}\n--- end of rsupd log ---",
                self.log.display(),
                log_tail(&self.log, 80)
            );
        }
        // Close our connection first: its task needs the runtime, which the
        // blocking teardown below may be holding up.
        self.client = None;
        if !self.torn_down {
            for problem in blocking(|| self.teardown()) {
                eprintln!("warning: teardown: {problem}");
            }
        }
    }
}

impl Daemon {
    /// Removes every container and user network through the API
    /// ([`SHUTDOWN_CONCURRENCY`] requests at a time), starting `rsupd` again
    /// first if it is down (containers outlive it), then tears down as a
    /// drop does. Unlike a drop it returns what went wrong, and then keeps
    /// the daemon's directory for its log.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.rsupd.is_none()
            && let Err(e) = self.launch()
        {
            problems.push(format!("restarting rsupd for the teardown: {e:#}"));
        }
        match self.serving().await {
            Ok(client) => problems.extend(remove_through_api(&client).await),
            Err(e) => problems.push(format!("{e:#}")),
        }
        self.client = None;
        problems.extend(blocking(|| self.teardown()));
        if problems.is_empty() {
            Ok(())
        } else {
            self.dir.keep();
            bail!("teardown: {}", problems.join("; "))
        }
    }

    /// Stops everything the daemon started, as the module says; returns the
    /// problems met on the way.
    pub(crate) fn teardown(&mut self) -> Vec<String> {
        self.torn_down = true;
        let mut problems = Vec::new();
        let running = self
            .rsupd
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)));
        if running {
            self.remove_all_containers(&mut problems);
            self.remove_private_cgroups();
        } else if !self.container_dir_ids().is_empty() {
            problems.push("rsupd is not running; containers cannot be removed".into());
        }
        if let Some(mut rsupd) = self.rsupd.take() {
            match rsupd.terminate() {
                Ok(s) if s.success() => {}
                Ok(s) => problems.push(format!("rsupd exited with {s}")),
                Err(e) => problems.push(e),
            }
        }
        self.kill_leftovers(&mut problems);
        remove_links(&self.cfg.net_prefix);
        remove_cgroup_subtree_under(&self.rsupd_cgroups, &self.cfg.cgroup_subtree);
        problems
    }

    /// For a daemon in a mount namespace of its own (one with a
    /// [`DaemonOptions::wrapper`](crate::DaemonOptions::wrapper)): removes
    /// its cgroup subtree in every hierarchy it sees, while it still runs
    /// (hierarchies only its namespace mounts are out of the host's reach
    /// once it is gone).
    pub(crate) fn remove_private_cgroups(&self) {
        if let (false, Some(p)) = (self.cfg.wrapper.is_empty(), &self.rsupd) {
            remove_cgroup_subtree_seen_by(p.pid(), &self.cfg.cgroup_subtree);
        }
    }

    /// Ids of the containers that have a directory in the state dir.
    fn container_dir_ids(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.state_dir.join("containers")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect()
    }

    /// Ids of every container, from `rsupctl ps -a` and the state dir.
    fn known_container_ids(&self, problems: &mut Vec<String>) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cmd = self.ctl_command_at(self.cfg.bin_dir.join("rsupctl"));
        cmd.args(["ps", "-a", "--format", "json"]);
        match output_with_timeout(cmd, Duration::from_secs(30)) {
            Ok(out) if out.status.success() => {
                for line in stdout(&out).lines().filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str::<serde_json::Value>(line) {
                        Ok(v) => ids.extend(v["id"].as_str().map(str::to_owned)),
                        Err(e) => problems.push(format!("ps line {line:?}: {e}")),
                    }
                }
            }
            Ok(out) => problems.push(format!("rsupctl ps failed\n{}", describe(&out))),
            Err(e) => problems.push(e),
        }
        for id in self.container_dir_ids() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    fn remove_all_containers(&self, problems: &mut Vec<String>) {
        for id in self.known_container_ids(problems) {
            let mut cmd = self.ctl_command_at(self.cfg.bin_dir.join("rsupctl"));
            cmd.args(["rm", "-f", &id]);
            match output_with_timeout(cmd, Duration::from_secs(30)) {
                Ok(out) if out.status.success() => {}
                Ok(out) => problems.push(format!("rsupctl rm -f {id} failed\n{}", describe(&out))),
                Err(e) => problems.push(e),
            }
        }
    }

    /// Kills, by pid, shims and inits recorded in `state.json` files and any
    /// other process whose command line mentions this daemon's directory.
    fn kill_leftovers(&self, problems: &mut Vec<String>) {
        let mut victims: Vec<ProcId> = Vec::new();
        for id in self.container_dir_ids() {
            let Some(state) = self.state_json(&id) else {
                continue;
            };
            let (shim, init) = state_pids(&state);
            let shim = shim.filter(|&p| self.owns(p));
            let init = init.filter(|&p| {
                self.owns(p) || shim.is_some_and(|s| proc_stat(p).is_some_and(|st| st.ppid == s))
            });
            // The init first: once its shim is gone it would be reparented
            // and could no longer be recognised.
            victims.extend(init.and_then(ProcId::of));
            victims.extend(shim.and_then(ProcId::of));
        }
        for pid in pids_mentioning(self.dir.path()) {
            if !victims.iter().any(|v| v.pid == pid) {
                victims.extend(ProcId::of(pid));
            }
        }
        for victim in &victims {
            problems.push(format!(
                "killing leftover pid {} ({})",
                victim.pid,
                cmdline(victim.pid).unwrap_or_default()
            ));
            if victim.exists() {
                let _ = kill(Pid::from_raw(victim.pid), Signal::SIGKILL);
            }
        }
        let gone = wait_until(Duration::from_secs(5), || {
            victims
                .iter()
                .all(|v| !v.exists() || proc_stat(v.pid).is_some_and(|s| s.state == 'Z'))
        });
        if !gone {
            problems.push(format!("leftover processes survived SIGKILL: {victims:?}"));
        }
    }
}

/// Force-removes every container, then every network but `default`;
/// returns what failed.
async fn remove_through_api(client: &Client) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = force_remove_all(client, SHUTDOWN_CONCURRENCY).await {
        problems.push(format!("removing containers: {e:#}"));
    }
    let mut nets = networks_stub(client);
    if let Ok(list) = nets.list(proto::ListNetworksRequest {}).await {
        for n in list.into_inner().networks {
            if n.name == "default" {
                continue;
            }
            let removed = nets
                .remove(proto::RemoveNetworkRequest {
                    name: n.name.clone(),
                })
                .await;
            if let Err(e) = removed {
                problems.push(format!("removing network {}: {}", n.name, e.message()));
            }
        }
    }
    problems
}
