//! `rsup.v1.Containers`: each method converts its request, makes one runtime
//! call and encodes the reply.

use std::pin::Pin;
use std::time::Duration;

use rsup_proto::v1 as pb;
use rsup_proto::v1::containers_server::Containers;
use rsup_runtime::cgroups::Limits;
use rsup_runtime::containers::exec::ExecRequest;
use rsup_runtime::lifecycle::{Event, EventFilter};
use rsup_runtime::logs::Stream as LogStream;
use rsup_runtime::names::{ContainerName, ContainerRef, ImageRef, NetworkName, SupervisorName};
use rsup_runtime::seccomp::Seccomp;
use rsup_runtime::spec::{HealthRequest, MountKind, NetRequest, RestartRequest, SecurityRequest};
use rsup_runtime::userns::UsernsRequest;
use rsup_runtime::{
    ContainerInfo, ContainerState, ContainerStats, ResourcesRequest, Runtime, SpecRequest,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{parse, parse_opt, status};

/// Stop timeout when the request does not set one (Docker's default).
const DEFAULT_STOP_TIMEOUT: u32 = 10;

pub struct Service {
    runtime: Runtime,
}

impl Service {
    pub fn new(runtime: Runtime) -> Self {
        Service { runtime }
    }
}

/// The create request, with its names parsed (INVALID_ARGUMENT naming the
/// field for a malformed one).
fn spec_request(spec: Option<pb::ContainerSpec>) -> Result<SpecRequest, Status> {
    let s = spec.unwrap_or_default();
    let log = s.log.unwrap_or_default();
    let networks = s
        .networks
        .iter()
        .map(|n| parse(n, "networks", NetworkName::parse_as))
        .collect::<Result<_, _>>()?;
    Ok(SpecRequest {
        name: parse_opt(&s.name, "name", ContainerName::parse_as)?,
        rootfs: s.rootfs,
        command: s.command,
        env: s.env,
        working_dir: s.working_dir,
        user: s.user,
        hostname: s.hostname,
        auto_remove: s.auto_remove,
        log_max_size: log.max_size_bytes,
        log_max_files: log.max_files,
        resources: resources_request(s.resources),
        restart: restart_request(s.restart),
        supervisor: parse_opt(&s.supervisor, "supervisor", SupervisorName::parse_as)?,
        health: health_request(s.health),
        net: NetRequest {
            networks,
            aliases: s.network_aliases,
            ip: s.ip,
            ports: s.ports,
        },
        volumes: s.volumes,
        tmpfs: s.tmpfs,
        read_only: s.read_only,
        image: parse_opt(&s.image, "image", ImageRef::parse_as)?,
        entrypoint: s.entrypoint,
        userns: UsernsRequest {
            mode: s.userns,
            uid_map: s.uid_map,
            gid_map: s.gid_map,
        },
        security: SecurityRequest {
            cap_add: s.cap_add,
            cap_drop: s.cap_drop,
            privileged: s.privileged,
            security_opt: s.security_opt,
            seccomp_profile: s.seccomp_profile,
        },
        labels: s.labels.into_iter().collect(),
    })
}

/// The container a request addresses.
fn container_ref(value: &str) -> Result<ContainerRef, Status> {
    parse(value, "container", ContainerRef::parse_as)
}

fn health_request(h: Option<pb::HealthCheck>) -> HealthRequest {
    let h = h.unwrap_or_default();
    HealthRequest {
        cmd: h.cmd,
        interval: h.interval_ms.map(Duration::from_millis),
        timeout: h.timeout_ms.map(Duration::from_millis),
        retries: h.retries,
        start_period: h.start_period_ms.map(Duration::from_millis),
        restart_on_unhealthy: h.restart_on_unhealthy,
    }
}

fn restart_request(r: Option<pb::RestartPolicy>) -> RestartRequest {
    let r = r.unwrap_or_default();
    RestartRequest {
        policy: r.policy,
        delay: r.delay_ms.map(Duration::from_millis),
        max_delay: r.max_delay_ms.map(Duration::from_millis),
        reset_after: r.reset_after_ms.map(Duration::from_millis),
        jitter: r.jitter,
    }
}

fn resources_request(r: Option<pb::Resources>) -> ResourcesRequest {
    let r = r.unwrap_or_default();
    ResourcesRequest {
        memory: r.memory_bytes,
        memory_swap: r.memory_swap_bytes,
        cpus: r.cpus,
        cpu_shares: r.cpu_shares,
        pids_limit: r.pids_limit,
    }
}

fn resources(l: &Limits) -> pb::Resources {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::Resources {
        memory_bytes: l.memory.map(i),
        memory_swap_bytes: l.memory_swap.map(|s| if s == u64::MAX { -1 } else { i(s) }),
        cpus: l.cpus,
        cpu_shares: l.cpu_shares.map(i),
        pids_limit: l.pids.map(i),
    }
}

fn state(s: ContainerState) -> pb::ContainerState {
    match s {
        ContainerState::Created => pb::ContainerState::Created,
        ContainerState::Running => pb::ContainerState::Running,
        ContainerState::Exited => pb::ContainerState::Exited,
        ContainerState::Removed => pb::ContainerState::Removed,
        ContainerState::Restarting => pb::ContainerState::Restarting,
        ContainerState::Unknown => pb::ContainerState::Unknown,
    }
}

fn exit_status(exit: Option<rsup_runtime::ExitInfo>, error: &str) -> Option<pb::ExitStatus> {
    match exit {
        Some(e) => Some(pb::ExitStatus {
            exit_code: e.code,
            signal: e.signal,
            finished_at: Some(e.finished_at.into()),
            error: error.to_string(),
            oom_killed: false,
        }),
        None if !error.is_empty() => Some(pb::ExitStatus {
            exit_code: -1,
            signal: 0,
            finished_at: None,
            error: error.to_string(),
            oom_killed: false,
        }),
        None => None,
    }
}

fn container(c: ContainerInfo) -> pb::Container {
    let s = &c.spec;
    pb::Container {
        spec: Some(pb::ContainerSpec {
            name: s.name.clone(),
            rootfs: s.rootfs.display().to_string(),
            command: s.command.clone(),
            env: s.env.clone(),
            working_dir: s.working_dir.clone(),
            user: s.user_spec.clone(),
            hostname: s.hostname.clone(),
            auto_remove: s.auto_remove,
            log: Some(pb::LogConfig {
                max_size_bytes: s.log.max_size,
                max_files: s.log.max_files,
            }),
            resources: Some(resources(&s.resources)),
            restart: Some(pb::RestartPolicy {
                policy: s.restart.policy.to_string(),
                delay_ms: Some(millis(s.restart.backoff.initial)),
                max_delay_ms: Some(millis(s.restart.backoff.max)),
                reset_after_ms: Some(millis(s.restart.backoff.reset_after)),
                jitter: Some(s.restart.backoff.jitter),
            }),
            supervisor: s
                .supervisor
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            networks: if s.networks.is_empty() {
                vec!["none".into()]
            } else {
                s.networks.iter().map(|a| a.network.to_string()).collect()
            },
            network_aliases: s
                .networks
                .first()
                .map(|a| a.aliases.clone())
                .unwrap_or_default(),
            ip: String::new(),
            ports: s
                .ports
                .iter()
                .map(|p| format!("{}:{}:{}", p.host_ip, p.host_port, p.container_port))
                .collect(),
            cap_add: s.security.caps.clone(),
            cap_drop: Vec::new(),
            privileged: s.security.privileged,
            volumes: s
                .mounts
                .iter()
                .filter_map(|m| match &m.kind {
                    MountKind::Volume { name, .. } => {
                        Some(format!("{name}:{}{}", m.target, ro(m.read_only)))
                    }
                    MountKind::Bind { source } => Some(format!(
                        "{}:{}{}",
                        source.display(),
                        m.target,
                        ro(m.read_only)
                    )),
                    MountKind::Tmpfs { .. } => None,
                })
                .collect(),
            tmpfs: s
                .mounts
                .iter()
                .filter_map(|m| match &m.kind {
                    MountKind::Tmpfs { options } => {
                        Some(format!("{}:{}", m.target, options.to_docker(m.read_only)))
                    }
                    _ => None,
                })
                .collect(),
            read_only: s.read_only,
            userns: if s.userns.is_some() {
                "remap".into()
            } else {
                String::new()
            },
            uid_map: s
                .userns
                .iter()
                .flat_map(|m| m.uids.iter().map(|r| r.to_string()))
                .collect(),
            gid_map: s
                .userns
                .iter()
                .flat_map(|m| m.gids.iter().map(|r| r.to_string()))
                .collect(),
            security_opt: vec![format!("seccomp={}", s.security.seccomp.kind())],
            seccomp_profile: match &s.security.seccomp {
                Seccomp::Custom(json) => json.clone(),
                _ => String::new(),
            },
            health: s.health.as_ref().map(|h| pb::HealthCheck {
                cmd: h.test.last().cloned().unwrap_or_default(),
                interval_ms: Some(millis(h.interval)),
                timeout_ms: Some(millis(h.timeout)),
                retries: Some(h.retries),
                start_period_ms: Some(millis(h.start_period)),
                restart_on_unhealthy: h.restart_on_unhealthy,
            }),
            image: s
                .image
                .as_ref()
                .map(|i| i.reference.clone())
                .unwrap_or_default(),
            // The command is the whole argv (Entrypoint + Cmd): an empty
            // entrypoint keeps a spec read back from adding the image's
            // Entrypoint again when it is sent as a new create.
            entrypoint: s.image.as_ref().map(|_| String::new()),
            labels: s.labels.clone().into_iter().collect(),
        }),
        image_id: s.image.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
        state: state(c.state).into(),
        pid: c.pid,
        created_at: Some(c.created_at.into()),
        started_at: c.started_at.map(Into::into),
        // A quarantined container's reason is not an exit.
        quarantine_reason: if c.state == ContainerState::Unknown {
            c.error.clone()
        } else {
            String::new()
        },
        exit: if matches!(c.state, ContainerState::Running | ContainerState::Unknown) {
            None
        } else {
            exit_status(c.exit, &c.error).map(|mut e| {
                e.oom_killed = c.oom_killed;
                e
            })
        },
        oom_kills: c.oom_kills,
        restart_count: c.restart_count,
        restart_delay_ms: c.restart_delay.map_or(0, millis),
        next_start_at: c.next_start_at.map(Into::into),
        networks: s_networks(&c),
        health: c.health.map(|h| pb::Health {
            status: h.status.as_str().into(),
            failing_streak: h.failing_streak,
            last_output: h.last_output,
            last_check: h.last_check.map(Into::into),
        }),
        log_path: c.log_path.display().to_string(),
        start_count: c.start_count,
        log_dropped_bytes: c.log_dropped.bytes,
        log_dropped_records: c.log_dropped.records,
        id: c.id,
        name: c.name,
    }
}

fn stats(c: ContainerStats) -> pb::ContainerStats {
    let u = c.usage;
    pb::ContainerStats {
        state: state(c.state).into(),
        cpu_percent: c.cpu_percent,
        cpu_usage_ns: u.cpu_usage_ns,
        memory_working_set_bytes: u.memory_working_set,
        memory_usage_bytes: u.memory_usage,
        memory_limit_bytes: u.memory_limit.unwrap_or(0),
        memory_percent: c.memory_percent,
        pids: u.pids,
        pids_limit: u.pids_limit.unwrap_or(0),
        oom_kills: u.oom_kills,
        restarts: u32::try_from(c.restarts).unwrap_or(u32::MAX),
        cpu_periods: u.cpu_periods,
        cpu_throttled_periods: u.cpu_throttled_periods,
        cpu_throttled_ns: u.cpu_throttled_ns,
        id: c.id,
        name: c.name,
    }
}

fn s_networks(c: &ContainerInfo) -> Vec<pb::NetworkAttachment> {
    c.spec
        .networks
        .iter()
        .map(|a| pb::NetworkAttachment {
            network: a.network.to_string(),
            ifname: a.ifname.clone(),
            ip: a.ip.to_string(),
            prefix: u32::from(a.prefix),
            gateway: a.gateway.to_string(),
            aliases: a.aliases.clone(),
            host_ifname: a.host_ifname.clone(),
        })
        .collect()
}

fn ro(read_only: bool) -> &'static str {
    if read_only { ":ro" } else { "" }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn event(e: &Event) -> pb::Event {
    pb::Event {
        time: Some(e.time.into()),
        r#type: e.kind.as_str().into(),
        subject_type: e.subject_type.into(),
        subject: e.subject.clone(),
        id: e.id.clone(),
        attributes: e.attributes.clone().into_iter().collect(),
    }
}

type EventStreamOut = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

type StatsStreamOut = Pin<Box<dyn Stream<Item = Result<pb::StatsResponse, Status>> + Send>>;

type LogStreamOut = Pin<Box<dyn Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for Service {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let spec = req.into_inner().spec;
        let c = self
            .runtime
            .create(spec_request(spec)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateResponse {
            container: Some(container(c)),
        }))
    }

    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let key = container_ref(&req.into_inner().container)?;
        let c = self.runtime.start(&key).await.map_err(status)?;
        Ok(Response::new(pb::StartResponse {
            container: Some(container(c)),
        }))
    }

    async fn stop(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        let r = req.into_inner();
        let timeout = Duration::from_secs(r.timeout_seconds.unwrap_or(DEFAULT_STOP_TIMEOUT).into());
        let key = container_ref(&r.container)?;
        let (c, report) = self.runtime.stop(&key, timeout).await.map_err(status)?;
        Ok(Response::new(pb::StopResponse {
            container: Some(container(c)),
            warnings: report.warnings,
        }))
    }

    async fn kill(
        &self,
        req: Request<pb::KillRequest>,
    ) -> Result<Response<pb::KillResponse>, Status> {
        let r = req.into_inner();
        let key = container_ref(&r.container)?;
        let report = self.runtime.kill(&key, &r.signal).await.map_err(status)?;
        Ok(Response::new(pb::KillResponse {
            warnings: report.warnings,
        }))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let r = req.into_inner();
        let key = container_ref(&r.container)?;
        let report = self.runtime.remove(&key, r.force).await.map_err(status)?;
        Ok(Response::new(pb::RemoveResponse {
            warnings: report.warnings,
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let containers = self
            .runtime
            .list(req.into_inner().all)
            .into_iter()
            .map(|c| {
                // A custom seccomp profile can be tens of KB: List carries
                // only "seccomp=custom", Inspect the profile itself.
                let mut c = container(c);
                if let Some(spec) = c.spec.as_mut() {
                    spec.seccomp_profile.clear();
                }
                c
            })
            .collect();
        Ok(Response::new(pb::ListResponse { containers }))
    }

    async fn inspect(
        &self,
        req: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        let key = container_ref(&req.into_inner().container)?;
        let c = self.runtime.inspect(&key).map_err(status)?;
        Ok(Response::new(pb::InspectResponse {
            container: Some(container(c)),
        }))
    }

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let key = container_ref(&req.into_inner().container)?;
        let (exit, error) = self.runtime.wait(&key).await.map_err(status)?;
        Ok(Response::new(pb::WaitResponse {
            status: exit_status(exit, &error),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let r = req.into_inner();
        let key = container_ref(&r.container)?;
        let c = self
            .runtime
            .update(&key, resources_request(r.resources))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UpdateResponse {
            container: Some(container(c)),
        }))
    }

    type StatsStream = StatsStreamOut;

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<Self::StatsStream>, Status> {
        let r = req.into_inner();
        let keys: Vec<ContainerRef> = r
            .containers
            .iter()
            .map(|c| parse(c, "containers", ContainerRef::parse_as))
            .collect::<Result<_, _>>()?;
        let sample = {
            let runtime = self.runtime.clone();
            move |keys: &[ContainerRef]| -> Result<pb::StatsResponse, Status> {
                let list = runtime.stats(keys).map_err(status)?;
                Ok(pb::StatsResponse {
                    stats: list.into_iter().map(stats).collect(),
                    time: Some(std::time::SystemTime::now().into()),
                })
            }
        };
        let first = sample(&keys)?;
        if !r.stream {
            return Ok(Response::new(Box::pin(tokio_stream::once(Ok(first)))));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let shutdown = self.runtime.shutdown_token();
        self.runtime.spawn(async move {
            let mut next = Ok(first);
            loop {
                let failed = next.is_err();
                if !send_or_stop(&tx, next, &shutdown).await || failed {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
                next = sample(&keys);
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn exec(
        &self,
        req: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let r = req.into_inner();
        let key = container_ref(&r.container)?;
        let out = self
            .runtime
            .exec(
                &key,
                ExecRequest {
                    argv: r.command,
                    env: r.env,
                    user: r.user,
                    workdir: r.working_dir,
                    timeout: r.timeout_ms.map(Duration::from_millis),
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ExecResponse {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: out.timed_out,
        }))
    }

    type EventsStream = EventStreamOut;

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let r = req.into_inner();
        let since = r
            .since
            .map(|t| {
                std::time::SystemTime::try_from(t)
                    .map_err(|e| Status::invalid_argument(format!("invalid since: {e}")))
            })
            .transpose()?;
        let filter = EventFilter {
            types: r.types,
            subjects: r.containers,
        };
        let mut watch = self.runtime.events().watch(since, filter);
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let shutdown = self.runtime.shutdown_token();
        self.runtime.spawn(async move {
            for e in std::mem::take(&mut watch.past) {
                if !send_or_stop(&tx, Ok(event(&e)), &shutdown).await {
                    return;
                }
            }
            loop {
                tokio::select! {
                    r = watch.recv() => match r {
                        Ok(e) => {
                            if !send_or_stop(&tx, Ok(event(&e)), &shutdown).await {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let lost = Err(Status::data_loss(format!("{n} events were dropped: the client is too slow")));
                            send_or_stop(&tx, lost, &shutdown).await;
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    type LogsStream = LogStreamOut;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let key = container_ref(&r.container)?;
        let rx = self.runtime.logs(&key, r.follow, r.tail).map_err(status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let stream = tokio_stream::StreamExt::map(stream, |rec| {
            Ok(pb::LogEntry {
                stream: match rec.stream {
                    LogStream::Stdout => pb::LogStream::Stdout,
                    LogStream::Stderr => pb::LogStream::Stderr,
                }
                .into(),
                time: Some(rec.time.into()),
                line: rec.line,
                partial: rec.partial,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Sends `item` on a stream's channel unless the runtime shuts down first
/// (a client that stops reading must not hold up rsupd's shutdown); false
/// when the stream should end.
async fn send_or_stop<T>(
    tx: &tokio::sync::mpsc::Sender<T>,
    item: T,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        r = tx.send(item) => r.is_ok(),
        _ = shutdown.cancelled() => false,
    }
}
