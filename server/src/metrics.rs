//! Prometheus metrics: every metric rsupd exports is declared here.
//!
//! Two kinds, rendered together on `GET /metrics`:
//! * **Container metrics** come from the kernel counters the runtime samples
//!   (see `Runtime::stats_all`). They are written as text at every scrape
//!   ([`crate::exposition`]), so a removed container's series disappear at
//!   once. Where cAdvisor has a metric with the same meaning,
//!   rsupd uses its name, type and `name` label, so existing dashboards and
//!   alerts work.
//! * **Daemon metrics** (gRPC requests and latencies) are events recorded as
//!   they happen into the global recorder.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use metrics::{counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rsup_runtime::lifecycle::health::HealthStatus;
use rsup_runtime::{ContainerState, Runtime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codegen::http;
use tracing::{debug, warn};

use crate::exposition::{Exposition, Kind};

// cAdvisor-compatible container metrics.
pub const MEMORY_USAGE: &str = "container_memory_usage_bytes";
pub const MEMORY_WORKING_SET: &str = "container_memory_working_set_bytes";
pub const SPEC_MEMORY_LIMIT: &str = "container_spec_memory_limit_bytes";
pub const SPEC_CPU_QUOTA: &str = "container_spec_cpu_quota";
pub const SPEC_CPU_PERIOD: &str = "container_spec_cpu_period";
pub const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
pub const CFS_PERIODS: &str = "container_cpu_cfs_periods_total";
pub const CFS_THROTTLED_PERIODS: &str = "container_cpu_cfs_throttled_periods_total";
pub const CFS_THROTTLED_SECONDS: &str = "container_cpu_cfs_throttled_seconds_total";
pub const PROCESSES: &str = "container_processes";
pub const SPEC_PIDS_LIMIT: &str = "container_spec_pids_limit";
pub const OOM_EVENTS: &str = "container_oom_events_total";
// rsup's own.
pub const CONTAINER_STATE: &str = "rsup_container_state";
pub const CONTAINER_RESTARTS: &str = "rsup_container_restarts_total";
pub const CONTAINER_OOM_KILLED: &str = "rsup_container_last_exit_oom_killed";
pub const CONTAINERS: &str = "rsup_containers";
pub const CONTAINERS_QUARANTINED: &str = "rsup_containers_quarantined";
pub const CONTAINER_INFO: &str = "rsup_container_info";
pub const CONTAINER_BACKOFF: &str = "rsup_container_restart_backoff_seconds";
pub const CONTAINER_HEALTH: &str = "rsup_container_health_status";
pub const CONTAINER_LOG_DROPPED: &str = "rsup_container_log_dropped_bytes_total";
pub const NETWORK_LEASES: &str = "rsup_network_leases";
pub const NETWORK_CONTAINERS: &str = "rsup_network_containers";
pub const SUPERVISOR_STATE: &str = "rsup_supervisor_state";
pub const SUPERVISOR_RESTARTS: &str = "rsup_supervisor_restarts_total";
pub const SUPERVISOR_CHILDREN: &str = "rsup_supervisor_children";
pub const GRPC_REQUESTS: &str = "rsup_grpc_requests_total";
pub const GRPC_DURATION: &str = "rsup_grpc_request_duration_seconds";

const STATES: [(ContainerState, &str); 5] = [
    (ContainerState::Created, "created"),
    (ContainerState::Running, "running"),
    (ContainerState::Exited, "exited"),
    (ContainerState::Restarting, "restarting"),
    (ContainerState::Unknown, "unknown"),
];

/// Installs the global recorder for daemon metrics; returns its handle.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(GRPC_DURATION.into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ],
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC requests handled, by method and status code."
    );
    describe_histogram!(
        GRPC_DURATION,
        metrics::Unit::Seconds,
        "Time to answer a gRPC request (to the first response for streams)."
    );
    Ok(handle)
}

/// Renders every container metric from the runtime's current samples,
/// straight into the text format ([`Exposition`]).
pub fn render_containers(runtime: &Runtime) -> String {
    use Kind::{Counter, Gauge};
    let all = runtime.stats_all();
    // One lookup table, not a scan per container (500 containers would
    // make that 250 000 comparisons a scrape).
    let infos = runtime.list(true);
    let info_of: std::collections::HashMap<&str, &rsup_runtime::ContainerInfo> =
        infos.iter().map(|i| (i.id.as_str(), i)).collect();
    let info = |c: &rsup_runtime::ContainerStats| info_of.get(c.id.as_str()).copied();
    let mut e = Exposition::new();

    let networks = runtime.networks();
    e.family(
        NETWORK_LEASES,
        Gauge,
        "Addresses leased on the network.",
        |f| {
            for n in &networks {
                f.sample(
                    &[("network", n.spec.name.as_str())],
                    n.containers.len() as f64,
                );
            }
        },
    );
    e.family(
        NETWORK_CONTAINERS,
        Gauge,
        "Containers attached to the network; differs from its leases only if something leaked.",
        |f| {
            for n in &networks {
                f.sample(&[("network", n.spec.name.as_str())], n.attached as f64);
            }
        },
    );
    let supervisors = runtime.supervisors();
    e.family(
        SUPERVISOR_STATE,
        Gauge,
        "1 for the state the supervisor is in (running or failed), 0 for the other.",
        |f| {
            for sup in &supervisors {
                for state in ["running", "failed"] {
                    let v = f64::from(u8::from((state == "failed") == sup.failed));
                    f.sample(
                        &[("supervisor", sup.spec.name.as_str()), ("state", state)],
                        v,
                    );
                }
            }
        },
    );
    e.family(
        SUPERVISOR_RESTARTS,
        Counter,
        "Times the supervisor applied its restart strategy.",
        |f| {
            for sup in &supervisors {
                f.sample(
                    &[("supervisor", sup.spec.name.as_str())],
                    sup.restarts as f64,
                );
            }
        },
    );
    e.family(
        SUPERVISOR_CHILDREN,
        Gauge,
        "Children of the supervisor (containers and supervisors).",
        |f| {
            for sup in &supervisors {
                f.sample(
                    &[("supervisor", sup.spec.name.as_str())],
                    sup.children.len() as f64,
                );
            }
        },
    );

    e.family(CONTAINERS, Gauge, "Containers by state.", |f| {
        for (state, label) in STATES {
            let n = all.iter().filter(|c| c.state == state).count();
            f.sample(&[("state", label)], n as f64);
        }
    });
    e.family(
        CONTAINERS_QUARANTINED,
        Gauge,
        "Containers whose record could not be read at start (state unknown): nothing acts on them until rm -f.",
        |f| f.sample(&[], runtime.quarantined_ids().len() as f64),
    );
    e.family(
        CONTAINER_STATE,
        Gauge,
        "1 for the state the container is in, 0 for the others.",
        |f| {
            for c in &all {
                for (state, label) in STATES {
                    let v = f64::from(u8::from(c.state == state));
                    f.sample(&[("name", &c.name), ("id", &c.id), ("state", label)], v);
                }
            }
        },
    );
    e.family(
        CONTAINER_INFO,
        Gauge,
        "Always 1; labels: the container's name, id, supervisor, restart policy and first network.",
        |f| {
            for c in &all {
                let Some(i) = info(c) else { continue };
                let supervisor = i
                    .spec
                    .supervisor
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let policy = i.spec.restart.policy.to_string();
                let network = i
                    .spec
                    .networks
                    .first()
                    .map_or("none", |n| n.network.as_str());
                f.sample(
                    &[
                        ("name", &c.name),
                        ("id", &c.id),
                        ("supervisor", &supervisor),
                        ("restart_policy", &policy),
                        ("network", network),
                    ],
                    1.0,
                );
            }
        },
    );
    e.family(
        CONTAINER_HEALTH,
        Gauge,
        "1 for the container's health status (starting, healthy, unhealthy), 0 for the others; only containers with a health check.",
        |f| {
            for c in &all {
                let Some(i) = info(c) else { continue };
                let Some(h) = i.health.as_ref().filter(|_| i.spec.health.is_some()) else {
                    continue;
                };
                for st in HealthStatus::ALL {
                    let v = f64::from(u8::from(h.status == st));
                    f.sample(&[("name", &c.name), ("id", &c.id), ("status", st.as_str())], v);
                }
            }
        },
    );
    // One sample a container, labelled with its name and id, where the
    // value is known: rsup's own figures, then the kernel's counters (only
    // for the containers sampled from a cgroup).
    type Value<'a> = &'a dyn Fn(&rsup_runtime::ContainerStats) -> Option<f64>;
    let kernel = |c: &rsup_runtime::ContainerStats, v: f64| c.sampled.then_some(v);
    let per_container: [(&str, Kind, &str, Value<'_>); 16] = [
        (
            CONTAINER_RESTARTS,
            Counter,
            "Times the container was started again after its first start.",
            &|c| Some(c.restarts as f64),
        ),
        (
            CONTAINER_BACKOFF,
            Gauge,
            "Delay of the container's pending (or last) policy restart.",
            &|c| info(c).map(|i| i.restart_delay.map_or(0.0, |d| d.as_secs_f64())),
        ),
        (
            CONTAINER_OOM_KILLED,
            Gauge,
            "1 if the container's last run ended in an OOM kill.",
            &|c| Some(f64::from(u8::from(info(c).is_some_and(|i| i.oom_killed)))),
        ),
        (
            CONTAINER_LOG_DROPPED,
            Counter,
            "Log output the container's shim dropped because it could not write it (a full state device), in bytes of the dropped records, over the container's life.",
            &|c| info(c).map(|i| i.log_dropped.bytes as f64),
        ),
        (
            MEMORY_USAGE,
            Gauge,
            "Current memory usage, including all memory regardless of when it was accessed.",
            &|c| kernel(c, c.usage.memory_usage as f64),
        ),
        (
            MEMORY_WORKING_SET,
            Gauge,
            "Current working set (usage minus inactive file cache).",
            &|c| kernel(c, c.usage.memory_working_set as f64),
        ),
        (
            SPEC_MEMORY_LIMIT,
            Gauge,
            "Memory limit of the container (0: unlimited).",
            &|c| kernel(c, c.usage.memory_limit.unwrap_or(0) as f64),
        ),
        (
            SPEC_CPU_QUOTA,
            Gauge,
            "CPU quota of the container in microseconds per period (0: unlimited).",
            &|c| {
                let quota = info(c).and_then(|i| i.spec.resources.cfs_quota_us());
                kernel(c, quota.unwrap_or(0) as f64)
            },
        ),
        (
            SPEC_CPU_PERIOD,
            Gauge,
            "CPU period of the container in microseconds.",
            &|c| kernel(c, rsup_runtime::cgroups::CFS_PERIOD_US as f64),
        ),
        (
            PROCESSES,
            Gauge,
            "Number of processes running inside the container.",
            &|c| kernel(c, c.usage.pids as f64),
        ),
        (
            SPEC_PIDS_LIMIT,
            Gauge,
            "Maximum number of processes of the container (0: unlimited).",
            &|c| kernel(c, c.usage.pids_limit.unwrap_or(0) as f64),
        ),
        (
            CFS_PERIODS,
            Counter,
            "Number of elapsed enforcement period intervals.",
            &|c| kernel(c, c.usage.cpu_periods as f64),
        ),
        (
            CFS_THROTTLED_PERIODS,
            Counter,
            "Number of throttled period intervals.",
            &|c| kernel(c, c.usage.cpu_throttled_periods as f64),
        ),
        (
            OOM_EVENTS,
            Counter,
            "Count of out of memory kills in the container (the kernel's counter).",
            &|c| kernel(c, c.usage.oom_kills as f64),
        ),
        (
            CPU_USAGE,
            Counter,
            "Cumulative CPU time consumed in seconds.",
            &|c| kernel(c, c.usage.cpu_usage_ns as f64 / 1e9),
        ),
        (
            CFS_THROTTLED_SECONDS,
            Counter,
            "Total time duration the container has been throttled, in seconds.",
            &|c| kernel(c, c.usage.cpu_throttled_ns as f64 / 1e9),
        ),
    ];
    for (name, kind, help, value) in per_container {
        e.family(name, kind, help, |f| {
            for c in &all {
                if let Some(v) = value(c) {
                    f.sample(&[("name", &c.name), ("id", &c.id)], v);
                }
            }
        });
    }
    e.into_string()
}

/// Serves `GET /metrics` on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    runtime: Runtime,
    daemon: PrometheusHandle,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics endpoint {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics");
    let t = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => { warn!(error = %e, "metrics accept"); continue; }
                },
                _ = shutdown.cancelled() => return,
            };
            let runtime = runtime.clone();
            let daemon = daemon.clone();
            let stop = shutdown.clone();
            t.spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let runtime = runtime.clone();
                        let daemon = daemon.clone();
                        async move { Ok::<_, Infallible>(respond(&req, &runtime, &daemon)) }
                    },
                );
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::select! {
                    r = conn => if let Err(e) = r { debug!(error = %e, "metrics connection"); },
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(())
}

fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    runtime: &Runtime,
    daemon: &PrometheusHandle,
) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder();
    if req.method() != hyper::Method::GET || req.uri().path() != "/metrics" {
        builder = builder.status(404);
        return builder
            .body(Full::new(Bytes::from_static(b"only GET /metrics here\n")))
            .unwrap_or_default();
    }
    let mut body = render_containers(runtime);
    body.push_str(&daemon.render());
    builder
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// Tower layer recording gRPC request counts and latencies.
#[derive(Clone, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                // Errors are answered "trailers-only", with grpc-status in the
                // headers; a success carries it in the trailers (code 0).
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", code_name),
                Err(_) => "UNAVAILABLE",
            };
            counter!(GRPC_REQUESTS, "method" => method.clone(), "code" => code).increment(1);
            histogram!(GRPC_DURATION, "method" => method).record(start.elapsed().as_secs_f64());
            res
        })
    }
}

fn code_name(c: i32) -> &'static str {
    match c {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}
