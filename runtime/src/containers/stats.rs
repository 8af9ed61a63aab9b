//! Usage of the containers: a sampler reads their cgroups on an interval
//! (CPU %, OOM kills), `stats` and the metrics read the samples; `update`
//! changes the limits; a flusher saves states a full disk held back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, instrument, warn};

use super::Containers;
use super::entry::{ContainerInfo, ContainerState, Entry};
use crate::cgroups::{Manager, Stats};
use crate::error::Error;
use crate::lifecycle::EventKind;
use crate::lock::lock;
use crate::names::ContainerRef;
use crate::spec::ResourcesRequest;
use crate::store;

/// Resource usage of one container, as `stats` shows it.
#[derive(Debug, Clone)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    pub state: ContainerState,
    /// CPU use over the last sampling interval; 100 is one full CPU.
    pub cpu_percent: f64,
    /// Working set against the memory limit, or the host's memory when
    /// there is none (see [`memory_percent`]).
    pub memory_percent: f64,
    pub usage: Stats,
    /// Whether `usage` was read from a cgroup (false: never started, or no cgroups).
    pub sampled: bool,
    /// Restarts by policy or supervisor over the container's whole life.
    pub restarts: u64,
}

/// Total memory of the host (`MemTotal` in `/proc/meminfo`); 0 when
/// unknown.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// MEM % as `stats` shows it (Docker's): the working set against the
/// memory limit, or against the host's memory `host_mem` for a container
/// without one; a limit above the host's memory counts as the host's.
pub fn memory_percent(working_set: u64, limit: Option<u64>, host_mem: u64) -> f64 {
    let limit = limit.unwrap_or(0);
    let base = if limit > 0 {
        limit.min(host_mem.max(1))
    } else {
        host_mem
    };
    if base > 0 {
        working_set as f64 / base as f64 * 100.0
    } else {
        0.0
    }
}

impl Containers {
    /// Changes the limits of a container; a running one gets them at once.
    #[instrument(skip_all, fields(container = %key))]
    pub async fn update(
        &self,
        key: &ContainerRef,
        req: ResourcesRequest,
    ) -> Result<ContainerInfo, Error> {
        let entry = self.find(key)?;
        let _op = entry.op.lock().await;
        let current = *lock(&entry.resources);
        let next = req.merge(current)?;
        if entry.status().state == ContainerState::Running
            && let Some(cg) = &self.inner.cgroups
        {
            cg.apply(&entry.id, &next).map_err(|source| Error::Cgroup {
                op: "applying the limits",
                container: entry.spec.name.clone(),
                source: Box::new(source),
            })?;
        }
        let mut spec = entry.current_spec();
        spec.resources = next;
        store::write_json(&entry.dir.join("config.json"), &spec)?;
        *lock(&entry.resources) = next;
        info!(?next, "updated");
        self.event(&entry, EventKind::Update, &[]);
        Ok(entry.info())
    }

    /// Reads a container's cgroup now and records the sample.
    pub(super) fn sample(&self, entry: &Entry) -> Option<Stats> {
        let cg = self.inner.cgroups.as_ref()?;
        let stats = cg.stats(&entry.id).ok()?;
        let mut s = lock(&entry.samples);
        s.prev = s.last.take();
        s.last = Some((Instant::now(), stats));
        Some(stats)
    }

    /// Samples every running container once per `stats_interval`: keeps CPU %
    /// current and notices OOM kills (the kernel's counter) within an
    /// interval.
    pub(super) fn spawn_sampler(&self) {
        if self.inner.cgroups.is_none() {
            return;
        }
        let rt = self.clone();
        let shutdown = self.inner.shutdown.clone();
        let period = self
            .inner
            .config
            .stats_interval
            .max(Duration::from_millis(100));
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let rt2 = rt.clone();
                let _ = tokio::task::spawn_blocking(move || rt2.sample_all()).await;
            }
        });
    }

    /// Every second, writes the state of containers whose last
    /// `state.json` write failed (a full disk): the file catches up as soon
    /// as there is space, even if nothing else changes.
    pub(super) fn spawn_flusher(&self) {
        let rt = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let unsaved: Vec<Arc<Entry>> = lock(&rt.inner.containers)
                    .iter()
                    .filter(|e| lock(&e.unsaved).is_some())
                    .cloned()
                    .collect();
                if unsaved.is_empty() {
                    continue;
                }
                let _ = tokio::task::spawn_blocking(move || {
                    for e in unsaved {
                        if e.save() {
                            info!(container = %e.spec.name, "its state is saved again");
                        }
                    }
                })
                .await;
            }
        });
    }

    fn sample_all(&self) {
        let list = lock(&self.inner.containers).clone();
        for e in list
            .iter()
            .filter(|e| e.status.borrow().state == ContainerState::Running)
        {
            let Some(stats) = self.sample(e) else {
                continue;
            };
            let known = e.status.borrow().oom_kills;
            if stats.oom_kills > known {
                warn!(container = %e.spec.name, kills = stats.oom_kills - known, "OOM kill in the container");
                let _ = e.set_status(|s| s.oom_kills = stats.oom_kills);
                self.event(
                    e,
                    EventKind::Oom,
                    &[("oom_kills", stats.oom_kills.to_string())],
                );
            }
        }
    }

    /// Usage of the given containers (all running ones when `keys` is empty).
    pub fn stats(&self, keys: &[ContainerRef]) -> Result<Vec<ContainerStats>, Error> {
        let entries: Vec<Arc<Entry>> = if keys.is_empty() {
            lock(&self.inner.containers)
                .iter()
                .filter(|e| e.status.borrow().state == ContainerState::Running)
                .cloned()
                .collect()
        } else {
            keys.iter()
                .map(|k| self.find_any(k))
                .collect::<Result<_, _>>()?
        };
        Ok(self.stats_of(&entries))
    }

    /// Usage of every container, running or not (for metrics).
    pub fn stats_all(&self) -> Vec<ContainerStats> {
        let entries = lock(&self.inner.containers).clone();
        self.stats_of(&entries)
    }

    fn stats_of(&self, entries: &[Arc<Entry>]) -> Vec<ContainerStats> {
        let host_mem = host_memory();
        entries
            .iter()
            .map(|e| {
                let (prev, last) = {
                    let s = lock(&e.samples);
                    (s.prev, s.last)
                };
                let running = e.status.borrow().state == ContainerState::Running;
                // A container never sampled yet is read now.
                let last = match last {
                    Some(l) => Some(l),
                    None if running => self.sample(e).map(|s| (Instant::now(), s)),
                    None => None,
                };
                let cpu_percent = match (prev, last) {
                    (Some((t0, a)), Some((t1, b))) if running && t1 > t0 => {
                        let dt = (t1 - t0).as_nanos() as f64;
                        b.cpu_usage_ns.saturating_sub(a.cpu_usage_ns) as f64 / dt * 100.0
                    }
                    _ => 0.0,
                };
                let status = e.status();
                let sampled = last.is_some();
                let mut usage = last.map(|(_, s)| s).unwrap_or_default();
                usage.oom_kills = usage.oom_kills.max(status.oom_kills);
                if !running {
                    usage.pids = 0;
                }
                ContainerStats {
                    id: e.id.clone(),
                    name: e.spec.name.clone(),
                    state: status.state,
                    cpu_percent,
                    memory_percent: memory_percent(
                        usage.memory_working_set,
                        usage.memory_limit,
                        host_mem,
                    ),
                    usage,
                    sampled,
                    restarts: status.restarts_total,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_percent_is_of_the_limit_or_the_host() {
        let gib = 1 << 30;
        assert_eq!(memory_percent(gib / 2, Some(gib), 8 * gib), 50.0);
        // No limit (or 0): the host's memory.
        assert_eq!(memory_percent(gib, None, 4 * gib), 25.0);
        assert_eq!(memory_percent(gib, Some(0), 4 * gib), 25.0);
        // A limit above the host's memory counts as the host's.
        assert_eq!(memory_percent(gib, Some(64 * gib), 4 * gib), 25.0);
        // The host's memory unknown and no limit: nothing to show.
        assert_eq!(memory_percent(gib, None, 0), 0.0);
        assert!(host_memory() > 0, "/proc/meminfo has MemTotal");
    }
}
