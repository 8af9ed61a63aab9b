//! Container endpoints: create (Docker's config, host config and
//! networking config into the runtime's `SpecRequest`), start, stop, kill,
//! restart, wait, remove, inspect, list, logs, attach and stats.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use rsup_runtime::logs::{Stream as LogStream, format_rfc3339_nanos};
use rsup_runtime::names::{ContainerName, ImageRef, NetworkName};
use rsup_runtime::spec::{HealthRequest, NetRequest, RestartRequest, SecurityRequest};
use rsup_runtime::userns::UsernsRequest;
use rsup_runtime::{ContainerState, ResourcesRequest, SpecRequest};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::json::{string_map, strings};
use super::stream::{self, STDERR, STDOUT};
use super::{Api, ApiError, ApiResult, Query, container_ref, empty, json, ok_json};

/// Docker's default stop timeout.
const DEFAULT_STOP_TIMEOUT: u64 = 10;

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn bool_field(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// True when `key` holds anything but its zero value.
fn is_set(v: &Value, key: &str) -> bool {
    match v.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Fields of a create that rsupd does not do: refused (400) rather than
/// ignored, so that nothing runs differently from what was asked.
fn refuse_unsupported(body: &Value, host: &Value) -> Result<(), ApiError> {
    if bool_field(body, "Tty") {
        return Err(ApiError::unsupported_field("a TTY (docker run -t)"));
    }
    if bool_field(body, "OpenStdin") || bool_field(body, "AttachStdin") {
        return Err(ApiError::unsupported_field("stdin (docker run -i)"));
    }
    for key in ["MacAddress", "Domainname", "StopSignal", "OnBuild", "Shell"] {
        if is_set(body, key) {
            return Err(ApiError::unsupported_field(key));
        }
    }
    if bool_field(body, "NetworkDisabled") {
        return Err(ApiError::unsupported_field("NetworkDisabled"));
    }
    for key in [
        "Devices",
        "DeviceRequests",
        "DeviceCgroupRules",
        "VolumesFrom",
        "Links",
        "Dns",
        "DnsOptions",
        "DnsSearch",
        "ExtraHosts",
        "GroupAdd",
        "Sysctls",
        "Ulimits",
        "StorageOpt",
        "Mounts",
        "PublishAllPorts",
        "Init",
        "OomKillDisable",
        "CpusetCpus",
        "CpusetMems",
        "CpuQuota",
        "CpuPeriod",
        "CpuRealtimePeriod",
        "CpuRealtimeRuntime",
        "BlkioWeight",
        "BlkioWeightDevice",
        "BlkioDeviceReadBps",
        "BlkioDeviceWriteBps",
        "BlkioDeviceReadIOps",
        "BlkioDeviceWriteIOps",
        "MemoryReservation",
        "KernelMemory",
        "CgroupParent",
        "VolumeDriver",
        "Isolation",
    ] {
        if is_set(host, key) {
            return Err(ApiError::unsupported_field(format!("HostConfig.{key}")));
        }
    }
    for (key, allowed) in [
        ("PidMode", &["", "private"][..]),
        ("IpcMode", &["", "private", "shareable"][..]),
        ("UTSMode", &["", "private"][..]),
        ("CgroupnsMode", &["", "private"][..]),
        ("Runtime", &["", "runc", "rsup"][..]),
    ] {
        let v = str_field(host, key);
        if !allowed.contains(&v) {
            return Err(ApiError::unsupported_field(format!(
                "HostConfig.{key}={}",
                json::short(v)
            )));
        }
    }
    if let Some(t) = host.pointer("/LogConfig/Type").and_then(Value::as_str)
        && !matches!(t, "" | "json-file" | "local")
    {
        return Err(ApiError::unsupported_field(format!(
            "the {} log driver",
            json::short(t)
        )));
    }
    Ok(())
}

/// `-v` binds in Docker's form (`SRC:DST[:OPTS]`) into rsup's
/// (`SRC:DST[:ro]`); SELinux relabelling and propagation other than
/// private are refused.
fn bind_spec(b: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = b.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid bind {}: use SOURCE:TARGET[:OPTIONS]",
                json::short(b)
            )));
        }
    };
    let mut ro = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" | "private" | "rprivate" | "nocopy" => {}
            other => {
                return Err(ApiError::unsupported_field(format!(
                    "the bind option {}",
                    json::short(other)
                )));
            }
        }
    }
    Ok(format!("{src}:{dst}{}", if ro { ":ro" } else { "" }))
}

fn port_specs(host: &Value) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let Some(Value::Object(m)) = host.get("PortBindings") else {
        return Ok(out);
    };
    for (port, bindings) in m {
        let (num, proto) = port.split_once('/').unwrap_or((port.as_str(), "tcp"));
        if proto != "tcp" {
            return Err(ApiError::unsupported_field(format!(
                "publishing {} ports",
                json::short(proto)
            )));
        }
        let list = match bindings {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            _ => return Err(ApiError::bad_request("PortBindings: a list of bindings")),
        };
        for b in list {
            let ip = str_field(&b, "HostIp");
            let hp = str_field(&b, "HostPort");
            if hp.is_empty() || hp == "0" {
                return Err(ApiError::unsupported_field(format!(
                    "publishing port {} on a random host port (give one: -p HOSTPORT:{})",
                    json::short(num),
                    json::short(num)
                )));
            }
            let ip = if ip.is_empty() { "0.0.0.0" } else { ip };
            out.push(format!("{ip}:{hp}:{num}"));
        }
    }
    Ok(out)
}

fn health(body: &Value) -> Result<HealthRequest, ApiError> {
    let Some(h) = body.get("Healthcheck").filter(|h| !h.is_null()) else {
        return Ok(HealthRequest::default());
    };
    let test = strings(h, "Test")?;
    let cmd = match test.first().map(String::as_str) {
        None | Some("NONE") => return Ok(HealthRequest::default()),
        Some("CMD-SHELL") => test.get(1).cloned().unwrap_or_default(),
        Some("CMD") => {
            return Err(ApiError::unsupported_field(
                "a health check in exec form (use CMD-SHELL)",
            ));
        }
        Some(_) => test.join(" "),
    };
    let dur = |k: &str| {
        int(h, k)
            .filter(|n| *n > 0)
            .map(|n| Duration::from_nanos(n.unsigned_abs()))
    };
    Ok(HealthRequest {
        cmd,
        interval: dur("Interval"),
        timeout: dur("Timeout"),
        retries: int(h, "Retries")
            .filter(|n| *n > 0)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        start_period: dur("StartPeriod"),
        restart_on_unhealthy: false,
    })
}

/// Docker's NetworkMode and NetworkingConfig into rsup's networks and
/// aliases: `bridge`/`default` is rsup's default network.
fn net_request(host: &Value, body: &Value, ports: Vec<String>) -> Result<NetRequest, ApiError> {
    let mode = str_field(host, "NetworkMode");
    let endpoints = body
        .pointer("/NetworkingConfig/EndpointsConfig")
        .and_then(Value::as_object);
    let mut networks = Vec::new();
    let mut aliases = Vec::new();
    let mut ip = String::new();
    let primary = match mode {
        "" | "default" | "bridge" => None,
        "none" => Some("none".to_string()),
        "host" => return Err(ApiError::unsupported_field("the host network")),
        m if m.starts_with("container:") => {
            return Err(ApiError::unsupported_field(
                "sharing another container's network",
            ));
        }
        m => Some(json::rsup_network(m).to_string()),
    };
    if let Some(p) = &primary {
        networks.push(NetworkName::parse_as(p, "networks")?);
    }
    if let Some(eps) = endpoints {
        for (name, ep) in eps {
            let wanted = match &primary {
                Some(p) => p == json::rsup_network(name),
                None => matches!(name.as_str(), "bridge" | "default"),
            };
            if !wanted {
                return Err(ApiError::unsupported_field(
                    "more than one network at create (connect the others after)",
                ));
            }
            for a in strings(ep, "Aliases")? {
                if !aliases.contains(&a) {
                    aliases.push(a);
                }
            }
            if let Some(v4) = ep
                .pointer("/IPAMConfig/IPv4Address")
                .and_then(Value::as_str)
            {
                ip = v4.to_string();
            }
        }
    }
    Ok(NetRequest {
        networks,
        aliases,
        ip,
        ports,
    })
}

/// Docker's `Volumes` (the targets of `-v /path`, an anonymous volume):
/// compose lists every volume target there, which its binds mount; a
/// target nothing mounts would be an anonymous volume, which rsupd does not
/// make: refused rather than ignored.
fn anonymous_volumes(body: &Value, binds: &[String], host: &Value) -> Result<(), ApiError> {
    let Some(Value::Object(targets)) = body.get("Volumes") else {
        return Ok(());
    };
    let tmpfs = string_map(host, "Tmpfs")?;
    for target in targets.keys() {
        let t = target.trim_end_matches('/');
        let mounted = binds
            .iter()
            .any(|b| b.split(':').nth(1).map(|d| d.trim_end_matches('/')) == Some(t))
            || tmpfs.keys().any(|p| p.trim_end_matches('/') == t);
        if !mounted {
            return Err(ApiError::unsupported_field(format!(
                "an anonymous volume at {} (name it: -v NAME:{})",
                json::short(target),
                json::short(target)
            )));
        }
    }
    Ok(())
}

/// `POST /containers/create?name=`.
pub async fn create(api: &Api, q: &Query, body: Value) -> ApiResult {
    let null = Value::Null;
    let host = body.get("HostConfig").unwrap_or(&null);
    refuse_unsupported(&body, host)?;
    let name = match q.get("name").filter(|n| !n.is_empty()) {
        Some(n) => Some(ContainerName::parse_as(
            n.strip_prefix('/').unwrap_or(n),
            "name",
        )?),
        None => None,
    };
    let image = str_field(&body, "Image");
    if image.is_empty() {
        return Err(ApiError::bad_request("an image is required"));
    }
    let image = ImageRef::parse_as(image, "image")?;
    let entry = strings(&body, "Entrypoint")?;
    // Docker's Entrypoint is a list; rsup's is one string: the rest of a
    // longer one goes before the command.
    let (entrypoint, mut command) = match body.get("Entrypoint") {
        None | Some(Value::Null) => (None, Vec::new()),
        _ => match entry.split_first() {
            Some((first, rest)) => (Some(first.clone()), rest.to_vec()),
            None => (Some(String::new()), Vec::new()),
        },
    };
    command.extend(strings(&body, "Cmd")?);
    let binds = strings(host, "Binds")?
        .iter()
        .map(|b| bind_spec(b))
        .collect::<Result<Vec<_>, _>>()?;
    anonymous_volumes(&body, &binds, host)?;
    let tmpfs = string_map(host, "Tmpfs")?
        .into_iter()
        .map(|(path, opts)| {
            if opts.is_empty() {
                path
            } else {
                format!("{path}:{opts}")
            }
        })
        .collect();
    let restart = host.get("RestartPolicy").unwrap_or(&null);
    let policy = match (
        str_field(restart, "Name"),
        int(restart, "MaximumRetryCount"),
    ) {
        ("", _) => String::new(),
        ("on-failure", Some(n)) if n > 0 => format!("on-failure:{n}"),
        (p, _) => p.to_string(),
    };
    let pids = int(host, "PidsLimit").map(|n| if n < 0 { 0 } else { n });
    // The docker CLI sends a seccomp profile file's content inline
    // (`seccomp=<JSON>`); rsup takes it as the profile.
    let (security_opt, seccomp_profile): (Vec<String>, Vec<String>) = strings(host, "SecurityOpt")?
        .into_iter()
        .partition(|o| !o.starts_with("seccomp={") && !o.starts_with("seccomp:{"));
    let seccomp_profile = match seccomp_profile.as_slice() {
        [] => String::new(),
        [one] => one["seccomp=".len()..].to_string(),
        _ => return Err(ApiError::bad_request("more than one seccomp profile")),
    };
    let memory_swap = int(host, "MemorySwap").filter(|n| *n != 0);
    let req = SpecRequest {
        name,
        rootfs: String::new(),
        command,
        env: strings(&body, "Env")?,
        working_dir: str_field(&body, "WorkingDir").to_string(),
        user: str_field(&body, "User").to_string(),
        hostname: str_field(&body, "Hostname").to_string(),
        auto_remove: bool_field(host, "AutoRemove"),
        log_max_size: 0,
        log_max_files: 0,
        resources: ResourcesRequest {
            memory: int(host, "Memory").filter(|n| *n > 0),
            memory_swap,
            cpus: int(host, "NanoCpus")
                .filter(|n| *n > 0)
                .map(|n| n as f64 / 1e9),
            cpu_shares: int(host, "CpuShares").filter(|n| *n > 0),
            pids_limit: pids,
        },
        restart: RestartRequest {
            policy,
            ..Default::default()
        },
        supervisor: None,
        health: health(&body)?,
        net: net_request(host, &body, port_specs(host)?)?,
        security: SecurityRequest {
            cap_add: strings(host, "CapAdd")?,
            cap_drop: strings(host, "CapDrop")?,
            privileged: bool_field(host, "Privileged"),
            security_opt,
            seccomp_profile,
        },
        volumes: binds,
        tmpfs,
        read_only: bool_field(host, "ReadonlyRootfs"),
        image: Some(image),
        entrypoint,
        userns: UsernsRequest {
            mode: match str_field(host, "UsernsMode") {
                "" | "host" => String::new(),
                other => {
                    return Err(ApiError::unsupported_field(format!(
                        "UsernsMode {}",
                        json::short(other)
                    )));
                }
            },
            uid_map: Vec::new(),
            gid_map: Vec::new(),
        },
        labels: string_map(&body, "Labels")?,
    };
    let c = api.runtime.create(req).await?;
    Ok(super::json_response(
        StatusCode::CREATED,
        &json!({"Id": c.id, "Warnings": []}),
    ))
}

pub fn inspect(api: &Api, id: &str) -> ApiResult {
    let c = api.runtime.inspect(&container_ref(id)?)?;
    ok_json(&json::inspect(&c))
}

pub fn list(api: &Api, q: &Query) -> ApiResult {
    let f = q.filters(&["name", "label", "status", "id", "ancestor", "network"])?;
    let all = q.flag("all");
    let names = NameFilter::new(f.values("name").unwrap_or_default())?;
    let mut out: Vec<(SystemTime, Value)> = api
        .runtime
        .list(true)
        .into_iter()
        .filter(|c| {
            // Without all, only running ones (a status filter implies all).
            (all || f.values("status").is_some()
                || matches!(
                    c.state,
                    ContainerState::Running | ContainerState::Restarting
                ))
                && names.matches(&format!("/{}", c.name))
                && f.any("id", |i| c.id.starts_with(i))
                && f.any("status", |s| s == json::state(c.state))
                && f.any("ancestor", |a| {
                    c.spec
                        .image
                        .as_ref()
                        .is_some_and(|i| i.reference == a || i.id.contains(a))
                })
                && f.any("network", |n| {
                    c.spec
                        .networks
                        .iter()
                        .any(|x| x.network.as_str() == json::rsup_network(n))
                })
                && f.labels(&c.spec.labels)
        })
        .map(|c| (c.created_at, json::list_entry(&c)))
        .collect();
    // Newest first, as Docker lists them.
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    if let Some(n) = q.get("limit").and_then(|l| l.parse::<usize>().ok())
        && n > 0
    {
        out.truncate(n);
    }
    ok_json(&Value::Array(out.into_iter().map(|(_, v)| v).collect()))
}

/// Docker's `name` filter: each value is a regular expression matched
/// anywhere in `/name` (any of them may match). Rust's regex engine runs in
/// time linear in the input; the compiled size is bounded.
struct NameFilter(Vec<regex::Regex>);

impl NameFilter {
    fn new(patterns: &[String]) -> Result<NameFilter, ApiError> {
        patterns
            .iter()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(1 << 20)
                    .dfa_size_limit(1 << 20)
                    .build()
                    .map_err(|_| {
                        ApiError::bad_request(format!(
                            "invalid name filter {}: not a regular expression",
                            json::short(p)
                        ))
                    })
            })
            .collect::<Result<_, _>>()
            .map(NameFilter)
    }

    fn matches(&self, slash_name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|r| r.is_match(slash_name))
    }
}

pub async fn start(api: &Api, id: &str) -> ApiResult {
    let key = container_ref(id)?;
    let c = api.runtime.inspect(&key)?;
    if c.state == ContainerState::Running {
        return Ok(empty(StatusCode::NOT_MODIFIED));
    }
    api.runtime.start(&key).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn stop_timeout(q: &Query) -> Result<Duration, ApiError> {
    match q.get("t").filter(|t| !t.is_empty()) {
        None => Ok(Duration::from_secs(DEFAULT_STOP_TIMEOUT)),
        Some(t) => match t.parse::<i64>() {
            Ok(n) if n < 0 => Ok(Duration::from_secs(0)),
            Ok(n) => Ok(Duration::from_secs(n.unsigned_abs())),
            Err(_) => Err(ApiError::bad_request(format!(
                "invalid stop timeout {}",
                json::short(t)
            ))),
        },
    }
}

pub async fn stop(api: &Api, id: &str, q: &Query) -> ApiResult {
    let key = container_ref(id)?;
    let timeout = stop_timeout(q)?;
    let c = api.runtime.inspect(&key)?;
    if matches!(c.state, ContainerState::Created | ContainerState::Exited) {
        return Ok(empty(StatusCode::NOT_MODIFIED));
    }
    api.runtime.stop(&key, timeout).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn restart(api: &Api, id: &str, q: &Query) -> ApiResult {
    let key = container_ref(id)?;
    let timeout = stop_timeout(q)?;
    let c = api.runtime.inspect(&key)?;
    if matches!(
        c.state,
        ContainerState::Running | ContainerState::Restarting
    ) {
        api.runtime.stop(&key, timeout).await?;
    }
    api.runtime.start(&key).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn kill(api: &Api, id: &str, q: &Query) -> ApiResult {
    let key = container_ref(id)?;
    let c = api.runtime.inspect(&key)?;
    if c.state != ContainerState::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Container {} is not running", c.id),
        ));
    }
    let sig = q.get("signal").filter(|s| !s.is_empty()).unwrap_or("KILL");
    api.runtime.kill(&key, sig).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`.
pub async fn wait(api: &Api, id: &str, q: &Query) -> ApiResult {
    let key = container_ref(id)?;
    let condition = q.get("condition").unwrap_or("not-running");
    if !matches!(condition, "" | "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition {}",
            json::short(condition)
        )));
    }
    let c = api.runtime.inspect(&key)?;
    // Docker answers the headers at once and the body at the exit: the
    // docker CLI starts a container only once its wait is answered.
    let (tx, rx) = mpsc::channel(1);
    let api = api.clone();
    let condition = condition.to_string();
    tokio::spawn(async move {
        // A client that goes away ends the wait (and its event watch): it
        // does not stay until the container exits.
        tokio::select! {
            body = wait_body(&api, &key, &c, &condition) => {
                let _ = tx.send(stream::json_line(&body)).await;
            }
            _ = tx.closed() => {}
        }
    });
    Ok(stream::json_lines(rx))
}

async fn wait_body(
    api: &Api,
    key: &rsup_runtime::names::ContainerRef,
    c: &rsup_runtime::ContainerInfo,
    condition: &str,
) -> Value {
    let failed = |e: rsup_runtime::Error| json!({"StatusCode": -1, "Error": {"Message": ApiError::from(e).message}});
    if condition == "next-exit" && c.state != ContainerState::Created {
        // The next exit after now: wait until it runs again first.
        let mut events = api.runtime.events().watch(
            None,
            rsup_runtime::lifecycle::EventFilter {
                types: vec!["die".into()],
                subjects: vec![c.id.clone()],
            },
        );
        tokio::select! {
            _ = events.recv() => {}
            _ = api.shutdown.cancelled() => return failed(rsup_runtime::Error::ShuttingDown),
        }
    }
    let (exit, error) = match api.runtime.wait(key).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    if condition == "removed" {
        // Until the container is gone (an auto-removed one goes just
        // after its exit): bounded, as a client waits on it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while api.runtime.inspect(key).is_ok() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let code = exit.map_or(-1, |e| {
        if e.signal != 0 {
            128 + i64::from(e.signal)
        } else {
            i64::from(e.code)
        }
    });
    let err = if error.is_empty() {
        Value::Null
    } else {
        json!({"Message": error})
    };
    json!({"StatusCode": code, "Error": err})
}

pub async fn remove(api: &Api, id: &str, q: &Query) -> ApiResult {
    let key = container_ref(id)?;
    if q.flag("link") {
        return Err(ApiError::unsupported_field("removing links"));
    }
    let force = q.flag("force");
    let c = api.runtime.inspect(&key)?;
    if !force
        && matches!(
            c.state,
            ContainerState::Running | ContainerState::Restarting
        )
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                c.id
            ),
        ));
    }
    api.runtime.remove(&key, force).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// What a log or attach stream carries.
struct LogOptions {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

fn unix_time(s: &str) -> Result<Option<SystemTime>, ApiError> {
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    let secs: f64 = s
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid time {}", json::short(s))))?;
    super::epoch_plus(secs)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("invalid time {}", json::short(s))))
}

/// Forwards the log records of `rx` as frames until either side ends.
fn pump(
    api: &Api,
    mut rx: mpsc::Receiver<rsup_runtime::logs::LogRecord>,
    opts: LogOptions,
) -> mpsc::Receiver<Bytes> {
    let (tx, out) = mpsc::channel(64);
    let shutdown = api.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let rec = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            };
            if opts.since.is_some_and(|s| rec.time < s) {
                continue;
            }
            if opts.until.is_some_and(|u| rec.time > u) {
                return;
            }
            let which = match rec.stream {
                LogStream::Stdout if opts.stdout => STDOUT,
                LogStream::Stderr if opts.stderr => STDERR,
                _ => continue,
            };
            let mut payload = Vec::with_capacity(rec.line.len() + 40);
            if opts.timestamps {
                payload.extend_from_slice(format_rfc3339_nanos(rec.time).as_bytes());
                payload.push(b' ');
            }
            payload.extend_from_slice(&rec.line);
            if !rec.partial {
                payload.push(b'\n');
            }
            if tx.send(stream::frame(which, &payload)).await.is_err() {
                return;
            }
        }
    });
    out
}

/// `GET /containers/{id}/logs`.
pub fn logs(api: &Api, id: &str, q: &Query) -> ApiResult {
    let key = container_ref(id)?;
    let opts = LogOptions {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        timestamps: q.flag("timestamps"),
        since: unix_time(q.get("since").unwrap_or(""))?,
        until: unix_time(q.get("until").unwrap_or(""))?,
    };
    if !opts.stdout && !opts.stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail = match q.get("tail").unwrap_or("all") {
        "all" | "" => None,
        n => Some(
            n.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid tail {}", json::short(n))))?,
        )
        .filter(|n| *n >= 0)
        .map(i64::unsigned_abs),
    };
    let rx = api.runtime.logs(&key, q.flag("follow"), tail)?;
    Ok(stream::raw_body(pump(api, rx, opts)))
}

/// `POST /containers/{id}/attach`: the output from now on (with `logs`,
/// what came before too) until the container stops. Stdin is refused.
pub fn attach(api: &Api, req: Request<Incoming>, id: &str, q: &Query) -> ApiResult {
    let key = container_ref(id)?;
    if q.flag("stdin") {
        return Err(ApiError::unsupported_field("attaching stdin"));
    }
    let opts = LogOptions {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        timestamps: false,
        since: None,
        until: None,
    };
    let tail = if q.flag("logs") { None } else { Some(0) };
    let follow = q.flag_or("stream", true);
    let rx = api.runtime.logs(&key, follow, tail)?;
    Ok(stream::hijack(req, pump(api, rx, opts)))
}

/// The host's CPU time in nanoseconds (`/proc/stat`'s first line), which
/// Docker's clients divide a container's CPU time by.
fn system_cpu_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks.saturating_mul(10_000_000)
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn stats_json(s: &rsup_runtime::ContainerStats, pre: &Value, now: SystemTime) -> Value {
    let u = &s.usage;
    json!({
        "read": format_rfc3339_nanos(now),
        "preread": pre.get("read").cloned().unwrap_or_else(|| json!(json::ZERO_TIME)),
        "id": s.id,
        "name": format!("/{}", s.name),
        "pids_stats": {"current": u.pids, "limit": u.pids_limit},
        "num_procs": 0,
        "cpu_stats": {
            "cpu_usage": {"total_usage": u.cpu_usage_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": system_cpu_ns(),
            "online_cpus": online_cpus(),
            "throttling_data": {
                "periods": u.cpu_periods,
                "throttled_periods": u.cpu_throttled_periods,
                "throttled_time": u.cpu_throttled_ns,
            },
        },
        "precpu_stats": pre.get("cpu_stats").cloned().unwrap_or_else(|| json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}})),
        "memory_stats": {
            "usage": u.memory_usage,
            "limit": u.memory_limit.unwrap_or_else(json::host_memory),
            "stats": {"inactive_file": u.memory_usage.saturating_sub(u.memory_working_set)},
            "failcnt": u.oom_kills,
        },
        "networks": {},
        "blkio_stats": {},
        "storage_stats": {},
    })
}

/// `GET /containers/{id}/stats?stream=`: one sample, or one a second.
pub fn stats(api: &Api, id: &str, q: &Query) -> ApiResult {
    let key = container_ref(id)?;
    let first = api.runtime.stats(std::slice::from_ref(&key))?;
    let Some(first) = first.into_iter().next() else {
        return Err(ApiError::not_found(format!(
            "No such container: {}",
            json::short(id)
        )));
    };
    let now = SystemTime::now();
    let first = stats_json(&first, &Value::Null, now);
    let streaming = q.flag_or("stream", true) && !q.flag("one-shot");
    if !streaming {
        return ok_json(&first);
    }
    let (tx, rx) = mpsc::channel(4);
    let runtime = api.runtime.clone();
    let shutdown = api.shutdown.clone();
    tokio::spawn(async move {
        let mut pre = first;
        loop {
            if tx.send(stream::json_line(&pre)).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            }
            let Ok(list) = runtime.stats(std::slice::from_ref(&key)) else {
                return;
            };
            let Some(s) = list.into_iter().next() else {
                return;
            };
            pre = stats_json(&s, &pre, SystemTime::now());
        }
    });
    Ok(stream::json_lines(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_become_rsup_volume_specs() {
        assert_eq!(bind_spec("data:/data").ok().as_deref(), Some("data:/data"));
        assert_eq!(
            bind_spec("data:/data:rw").ok().as_deref(),
            Some("data:/data")
        );
        assert_eq!(
            bind_spec("/h:/c:ro,rprivate").ok().as_deref(),
            Some("/h:/c:ro")
        );
        assert_eq!(
            bind_spec("/h:/c:Z").map_err(|e| e.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert!(bind_spec("/h").is_err());
    }

    #[test]
    fn anonymous_volumes_are_refused_and_compose_volumes_pass() {
        let host = json!({});
        let binds = vec!["data:/data".to_string()];
        // compose: every target in Volumes is mounted by a bind.
        assert!(anonymous_volumes(&json!({"Volumes": {"/data": {}}}), &binds, &host).is_ok());
        assert!(anonymous_volumes(&json!({"Volumes": {"/data/": {}}}), &binds, &host).is_ok());
        // docker run -v /cache: nothing mounts it.
        assert!(anonymous_volumes(&json!({"Volumes": {"/cache": {}}}), &binds, &host).is_err());
        let tmp = json!({"Tmpfs": {"/cache": ""}});
        assert!(anonymous_volumes(&json!({"Volumes": {"/cache": {}}}), &[], &tmp).is_ok());
        assert!(anonymous_volumes(&json!({}), &[], &host).is_ok());
    }

    #[test]
    fn port_bindings_become_rsup_ports() {
        let host =
            json!({"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}});
        assert_eq!(
            port_specs(&host).ok(),
            Some(vec!["127.0.0.1:8080:80".to_string()])
        );
        let random = json!({"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]}});
        assert!(port_specs(&random).is_err());
        let udp = json!({"PortBindings": {"53/udp": [{"HostPort": "53"}]}});
        assert!(port_specs(&udp).is_err());
    }

    #[test]
    fn unsupported_fields_are_refused_not_ignored() {
        let null = Value::Null;
        assert!(refuse_unsupported(&json!({"Tty": true}), &null).is_err());
        assert!(refuse_unsupported(&json!({"OpenStdin": true}), &null).is_err());
        assert!(
            refuse_unsupported(
                &json!({}),
                &json!({"Devices": [{"PathOnHost": "/dev/sda"}]})
            )
            .is_err()
        );
        assert!(refuse_unsupported(&json!({}), &json!({"PidMode": "host"})).is_err());
        // What the docker CLI sends by default passes.
        let cli =
            json!({"Tty": false, "OpenStdin": false, "Env": [], "Cmd": ["true"], "Image": "x"});
        let cli_host = json!({"Binds": null, "NetworkMode": "default", "PidMode": "", "IpcMode": "",
            "Devices": [], "Dns": [], "LogConfig": {"Type": "", "Config": {}}, "CpuShares": 0});
        assert!(refuse_unsupported(&cli, &cli_host).is_ok());
    }

    #[test]
    fn name_filters_are_regular_expressions() {
        let f = NameFilter::new(&["web-[bc]$".to_string()]).expect("regex");
        assert!(f.matches("/web-b"));
        assert!(!f.matches("/web-a"));
        assert!(!f.matches("/web-bc"));
        let anchored = NameFilter::new(&["^/?db$".to_string()]).expect("regex");
        assert!(anchored.matches("/db"));
        assert!(!anchored.matches("/db2"));
        assert!(NameFilter::new(&[]).expect("none").matches("/x"));
        assert!(NameFilter::new(&["(".to_string()]).is_err());
    }

    #[test]
    fn network_modes() {
        let none = net_request(&json!({"NetworkMode": "none"}), &json!({}), vec![]).expect("none");
        assert_eq!(none.networks.len(), 1);
        let default =
            net_request(&json!({"NetworkMode": "bridge"}), &json!({}), vec![]).expect("b");
        assert!(default.networks.is_empty());
        assert!(net_request(&json!({"NetworkMode": "host"}), &json!({}), vec![]).is_err());
        let compose = net_request(
            &json!({"NetworkMode": "p_default"}),
            &json!({"NetworkingConfig": {"EndpointsConfig": {"p_default": {"Aliases": ["db", "db"]}}}}),
            vec![],
        )
        .expect("compose");
        assert_eq!(compose.aliases, vec!["db".to_string()]);
        assert!(
            net_request(&json!({"NetworkMode": "../x"}), &json!({}), vec![]).is_err(),
            "a hostile network name is refused at the edge"
        );
    }
}
