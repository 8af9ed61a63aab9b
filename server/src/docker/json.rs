//! rsup's runtime values in Docker's JSON shapes (inspect and list of
//! containers, times, states).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rsup_runtime::logs::format_rfc3339_nanos;
use rsup_runtime::spec::MountKind;
use rsup_runtime::{ContainerInfo, ContainerState};
use serde_json::{Map, Value, json};

/// A list of strings, or null/absent as empty; anything else is refused.
pub fn strings(v: &Value, key: &str) -> Result<Vec<String>, super::ApiError> {
    let bad = || super::ApiError::bad_request(format!("{key}: a list of strings"));
    match v.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        // Docker takes a single string for Cmd and Entrypoint too.
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(_) => Err(bad()),
    }
}

/// An object of strings (labels, tmpfs), or null/absent as empty.
pub fn string_map(
    v: &Value,
    key: &str,
) -> Result<std::collections::BTreeMap<String, String>, super::ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(super::ApiError::bad_request(format!(
                    "{key}: values must be strings"
                ))),
            })
            .collect(),
        Some(_) => Err(super::ApiError::bad_request(format!(
            "{key}: an object of strings"
        ))),
    }
}

/// 64 random hex digits (exec ids, anonymous volume names).
pub fn random_id() -> Result<String, super::ApiError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| {
            super::ApiError::new(
                hyper::StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading /dev/urandom: {e}"),
            )
        })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The host's memory (`MemTotal`), in bytes; 0 when unknown.
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Docker's zero time, for a time that has not happened.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// At most 64 bytes of a client's string, for a message.
pub fn short(s: &str) -> String {
    rsup_runtime::names::quote(s)
}

pub fn time(t: Option<SystemTime>) -> String {
    t.map_or_else(|| ZERO_TIME.to_string(), format_rfc3339_nanos)
}

pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Docker's state names.
pub fn state(s: ContainerState) -> &'static str {
    match s {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Restarting => "restarting",
        ContainerState::Removed => "removing",
        ContainerState::Unknown => "dead",
    }
}

/// A container's exit code as Docker reports it (128 + signal for a kill).
pub fn exit_code(c: &ContainerInfo) -> i64 {
    match &c.exit {
        Some(e) if e.signal != 0 => 128 + i64::from(e.signal),
        Some(e) => i64::from(e.code),
        None => 0,
    }
}

/// "Up 3 minutes", "Exited (0) 2 seconds ago", as `docker ps` shows.
pub fn status_text(c: &ContainerInfo) -> String {
    let now = SystemTime::now();
    let ago = |t: Option<SystemTime>| {
        t.and_then(|t| now.duration_since(t).ok())
            .map_or_else(|| "Less than a second".to_string(), human)
    };
    match c.state {
        ContainerState::Created => "Created".into(),
        ContainerState::Running => format!("Up {}", ago(c.started_at)),
        ContainerState::Restarting => {
            format!("Restarting ({}) {} ago", exit_code(c), ago(finished(c)))
        }
        ContainerState::Exited => format!("Exited ({}) {} ago", exit_code(c), ago(finished(c))),
        ContainerState::Removed => "Removal In Progress".into(),
        ContainerState::Unknown => "Dead".into(),
    }
}

fn finished(c: &ContainerInfo) -> Option<SystemTime> {
    c.exit.as_ref().map(|e| e.finished_at)
}

/// Docker's `units.HumanDuration`, roughly.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..60 => format!("{s} seconds"),
        60..120 => "About a minute".into(),
        120..3600 => format!("{} minutes", s / 60),
        3600..7200 => "About an hour".into(),
        7200..172_800 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// `/name`, as Docker names containers.
pub fn slash_name(c: &ContainerInfo) -> String {
    format!("/{}", c.name)
}

fn restart_policy(p: &str) -> Value {
    match p.split_once(':') {
        Some((name, max)) => {
            json!({"Name": name, "MaximumRetryCount": max.parse::<u64>().unwrap_or(0)})
        }
        None => json!({"Name": p, "MaximumRetryCount": 0}),
    }
}

fn ports(c: &ContainerInfo) -> Value {
    let mut m = Map::new();
    for p in &c.spec.ports {
        let key = format!("{}/tcp", p.container_port);
        let entry = m.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            a.push(json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}));
        }
    }
    Value::Object(m)
}

fn mounts(c: &ContainerInfo) -> Value {
    c.spec
        .mounts
        .iter()
        .filter_map(|m| {
            let mode = if m.read_only { "ro" } else { "" };
            match &m.kind {
                MountKind::Volume { name, source } => Some(json!({
                    "Type": "volume", "Name": name.as_str(), "Source": source.display().to_string(),
                    "Destination": m.target, "Driver": "local", "Mode": mode, "RW": !m.read_only,
                    "Propagation": "",
                })),
                MountKind::Bind { source } => Some(json!({
                    "Type": "bind", "Source": source.display().to_string(),
                    "Destination": m.target, "Mode": mode, "RW": !m.read_only,
                    "Propagation": "rprivate",
                })),
                MountKind::Tmpfs { .. } => None,
            }
        })
        .collect()
}

fn binds(c: &ContainerInfo) -> Value {
    c.spec
        .mounts
        .iter()
        .filter_map(|m| {
            let ro = if m.read_only { ":ro" } else { "" };
            match &m.kind {
                MountKind::Volume { name, .. } => Some(format!("{name}:{}{ro}", m.target)),
                MountKind::Bind { source } => {
                    Some(format!("{}:{}{ro}", source.display(), m.target))
                }
                MountKind::Tmpfs { .. } => None,
            }
        })
        .map(Value::String)
        .collect()
}

fn tmpfs(c: &ContainerInfo) -> Value {
    let mut m = Map::new();
    for mount in &c.spec.mounts {
        if let MountKind::Tmpfs { options } = &mount.kind {
            m.insert(
                mount.target.clone(),
                Value::String(options.to_docker(mount.read_only)),
            );
        }
    }
    Value::Object(m)
}

/// The network Docker's HostConfig.NetworkMode names.
fn network_mode(c: &ContainerInfo) -> String {
    c.spec.networks.first().map_or_else(
        || "none".to_string(),
        |a| docker_network(a.network.as_str()).to_string(),
    )
}

/// The name Docker's clients see for an rsup network: rsup's `default`
/// is Docker's `bridge`.
pub fn docker_network(name: &str) -> &str {
    if name == rsup_runtime::networks::DEFAULT_NETWORK {
        "bridge"
    } else {
        name
    }
}

/// rsup's network for a name a Docker client gives.
pub fn rsup_network(name: &str) -> &str {
    match name {
        "bridge" => rsup_runtime::networks::DEFAULT_NETWORK,
        n => n,
    }
}

pub fn network_id(name: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("rsup network {name}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn networks(c: &ContainerInfo) -> Value {
    let mut m = Map::new();
    let short_id = &c.id[..c.id.len().min(12)];
    for a in &c.spec.networks {
        // Docker adds the short id as an alias on user networks (compose
        // checks for it before it reconnects a container).
        let mut aliases = a.aliases.clone();
        if !aliases.iter().any(|x| x == short_id) {
            aliases.push(short_id.to_string());
        }
        m.insert(
            docker_network(a.network.as_str()).to_string(),
            json!({
                "IPAMConfig": null,
                "Links": null,
                "Aliases": aliases,
                "NetworkID": network_id(a.network.as_str()),
                "EndpointID": a.host_ifname,
                "Gateway": a.gateway.to_string(),
                "IPAddress": a.ip.to_string(),
                "IPPrefixLen": a.prefix,
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "MacAddress": "",
                "DriverOpts": null,
            }),
        );
    }
    Value::Object(m)
}

fn memory_swap(v: Option<u64>) -> i64 {
    match v {
        Some(u64::MAX) => -1,
        Some(n) => i64::try_from(n).unwrap_or(i64::MAX),
        None => 0,
    }
}

fn num(v: Option<u64>) -> i64 {
    v.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

fn host_config(c: &ContainerInfo) -> Value {
    let s = &c.spec;
    json!({
        "Binds": binds(c),
        "ContainerIDFile": "",
        "LogConfig": {"Type": "json-file", "Config": {}},
        "NetworkMode": network_mode(c),
        "PortBindings": ports(c),
        "RestartPolicy": restart_policy(&s.restart.policy.to_string()),
        "AutoRemove": s.auto_remove,
        "VolumeDriver": "",
        "VolumesFrom": null,
        "CapAdd": s.security.caps,
        "CapDrop": null,
        "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": null,
        "IpcMode": "private", "PidMode": "", "UTSMode": "", "Cgroup": "",
        "UsernsMode": if s.userns.is_some() { "remap" } else { "" },
        "Privileged": s.security.privileged,
        "PublishAllPorts": false,
        "ReadonlyRootfs": s.read_only,
        "SecurityOpt": null,
        "Tmpfs": tmpfs(c),
        "Runtime": "rsup",
        "Memory": num(s.resources.memory),
        "MemorySwap": memory_swap(s.resources.memory_swap),
        "NanoCpus": s.resources.cpus.map_or(0, |c| (c * 1e9) as i64),
        "CpuShares": num(s.resources.cpu_shares),
        "PidsLimit": s.resources.pids.map(|p| i64::try_from(p).unwrap_or(i64::MAX)),
        "Devices": [],
        "Init": false,
    })
}

/// `GET /containers/{id}/json`.
pub fn inspect(c: &ContainerInfo) -> Value {
    let s = &c.spec;
    let first = s.networks.first();
    let image = s.image.as_ref();
    let health = c.health.as_ref().map(|h| {
        json!({
            "Status": h.status.as_str(),
            "FailingStreak": h.failing_streak,
            "Log": h.last_check.map(|t| vec![json!({
                "Start": time(Some(t)), "End": time(Some(t)), "ExitCode": 0, "Output": h.last_output,
            })]).unwrap_or_default(),
        })
    });
    let mut state = json!({
        "Status": state(c.state),
        "Running": c.state == ContainerState::Running,
        "Paused": false,
        "Restarting": c.state == ContainerState::Restarting,
        "OOMKilled": c.oom_killed,
        "Dead": c.state == ContainerState::Unknown,
        "Pid": c.pid,
        "ExitCode": exit_code(c),
        "Error": c.error,
        "StartedAt": time(c.started_at),
        "FinishedAt": time(finished(c)),
    });
    if let (Some(h), Value::Object(m)) = (health, &mut state) {
        m.insert("Health".into(), h);
    }
    json!({
        "Id": c.id,
        "Created": time(Some(c.created_at)),
        "Path": s.command.first().cloned().unwrap_or_default(),
        "Args": s.command.iter().skip(1).collect::<Vec<_>>(),
        "State": state,
        "Image": image.map(|i| i.id.clone()).unwrap_or_default(),
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": c.log_path.display().to_string(),
        "Name": slash_name(c),
        "RestartCount": c.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": host_config(c),
        "GraphDriver": {"Name": "overlay", "Data": null},
        "Mounts": mounts(c),
        "Config": {
            "Hostname": s.hostname,
            "Domainname": "",
            "User": s.user_spec,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "ExposedPorts": image.map(|_| Value::Null).unwrap_or(Value::Null),
            "Tty": false,
            "OpenStdin": false,
            "StdinOnce": false,
            "Env": s.env,
            "Cmd": s.command,
            "Image": image.map(|i| i.reference.clone()).unwrap_or_default(),
            "Volumes": null,
            "WorkingDir": s.working_dir,
            "Entrypoint": null,
            "OnBuild": null,
            "Labels": s.labels,
        },
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "HairpinMode": false,
            "Ports": ports(c),
            "SandboxKey": "",
            "IPAddress": first.map(|a| a.ip.to_string()).unwrap_or_default(),
            "IPPrefixLen": first.map_or(0, |a| a.prefix),
            "Gateway": first.map(|a| a.gateway.to_string()).unwrap_or_default(),
            "MacAddress": "",
            "Networks": networks(c),
        },
        "Rsup": {
            "Supervisor": s.supervisor.as_ref().map(ToString::to_string),
            "StartCount": c.start_count,
            "RestartDelayMs": c.restart_delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            "NextStartAt": c.next_start_at.map(|t| time(Some(t))),
            "OomKills": c.oom_kills,
        },
    })
}

/// An entry of `GET /containers/json`.
pub fn list_entry(c: &ContainerInfo) -> Value {
    let s = &c.spec;
    let ports: Vec<Value> = s
        .ports
        .iter()
        .map(|p| {
            json!({"IP": p.host_ip.to_string(), "PrivatePort": p.container_port,
                   "PublicPort": p.host_port, "Type": "tcp"})
        })
        .collect();
    json!({
        "Id": c.id,
        "Names": [slash_name(c)],
        "Image": s.image.as_ref().map(|i| i.reference.clone()).unwrap_or_default(),
        "ImageID": s.image.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
        "Command": s.command.join(" "),
        "Created": unix_secs(c.created_at),
        "Ports": ports,
        "Labels": s.labels,
        "State": state(c.state),
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": network_mode(c)},
        "NetworkSettings": {"Networks": networks(c)},
        "Mounts": mounts(c),
    })
}
