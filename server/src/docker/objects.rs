//! System (`_ping`, `version`, `info`, `events`), network and volume
//! endpoints.

use std::time::SystemTime;

use hyper::{Method, StatusCode};
use rsup_runtime::lifecycle::EventFilter;
use rsup_runtime::names::{NetworkName, VolumeName};
use rsup_runtime::networks::{NetworkInfo, NetworkRequest};
use rsup_runtime::volumes::VolumeInfo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::json::string_map;
use super::stream::{self, json_line};
use super::{API_VERSION, Api, ApiError, ApiResult, MIN_API_VERSION, Query, json, ok_json};

pub fn ping(method: &Method) -> ApiResult {
    let mut r = super::empty(StatusCode::OK);
    if method == Method::GET {
        *r.body_mut() = super::full("OK");
    }
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(
        "Pragma",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn version(_: &Api) -> ApiResult {
    let v = env!("CARGO_PKG_VERSION");
    ok_json(&json!({
        "Platform": {"Name": "rsup"},
        "Components": [{
            "Name": "Engine",
            "Version": v,
            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": "amd64"},
        }],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    }))
}

pub async fn info(api: &Api) -> ApiResult {
    let counts = api.runtime.counts();
    let images = api.runtime.images().await.map(|i| i.len()).unwrap_or(0);
    let driver = api.runtime.cgroup_driver();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_total = json::host_memory();
    ok_json(&json!({
        "ID": "",
        "Containers": counts.total,
        "ContainersRunning": counts.running,
        "ContainersPaused": 0,
        "ContainersStopped": counts.total - counts.running,
        "Images": images,
        "Driver": "overlay",
        "DriverStatus": [],
        "Plugins": {"Volume": ["local"], "Network": ["bridge"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": driver.is_some(),
        "SwapLimit": driver.is_some(),
        "CpuCfsPeriod": driver.is_some(),
        "CpuCfsQuota": driver.is_some(),
        "CPUShares": driver.is_some(),
        "CPUSet": false,
        "PidsLimit": driver.is_some(),
        "IPv4Forwarding": true,
        "BridgeNfIptables": false,
        "BridgeNfIp6tables": false,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": rsup_runtime::logs::format_rfc3339_nanos(SystemTime::now()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": match driver { Some(d) if d.as_str() == "v2" => "2", _ => "1" },
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": "rsup",
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": "x86_64",
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": []},
        "NCPU": std::thread::available_parallelism().map_or(1, usize::from),
        "MemTotal": mem_total,
        "GenericResources": null,
        "DockerRootDir": api.runtime.state_dir().display().to_string(),
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": {"rsup": {"path": "rsup-shim"}},
        "DefaultRuntime": "rsup",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false,
            "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": [],
    }))
}

/// `GET /events`: Docker's event objects for rsup's container events.
pub fn events(api: &Api, q: &Query) -> ApiResult {
    let f = q.filters(&["type", "container", "event", "label"])?;
    let since = match q.get("since").filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_time(s)?),
        None => None,
    };
    let until = match q.get("until").filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_time(s)?),
        None => None,
    };
    let filter = EventFilter {
        types: f
            .values("event")
            .map(<[String]>::to_vec)
            .unwrap_or_default(),
        subjects: f
            .values("container")
            .map(<[String]>::to_vec)
            .unwrap_or_default(),
    };
    let types: Option<Vec<String>> = f.values("type").map(<[String]>::to_vec);
    let mut watch = api.runtime.events().watch(since, filter);
    let (tx, rx) = mpsc::channel(64);
    let shutdown = api.shutdown.clone();
    let runtime = api.runtime.clone();
    tokio::spawn(async move {
        let wanted = |e: &rsup_runtime::lifecycle::Event| {
            types
                .as_ref()
                .is_none_or(|t| t.iter().any(|x| x == e.subject_type))
        };
        let past = std::mem::take(&mut watch.past);
        for e in past {
            if until.is_some_and(|u| e.time > u) {
                return;
            }
            if wanted(&e) && tx.send(json_line(&event(&runtime, &e))).await.is_err() {
                return;
            }
        }
        loop {
            let sleep_until = async {
                match until {
                    Some(u) => {
                        let d = u.duration_since(SystemTime::now()).unwrap_or_default();
                        tokio::time::sleep(d).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = watch.recv() => match r {
                    Ok(e) => if wanted(&e) && tx.send(json_line(&event(&runtime, &e))).await.is_err() {
                        return;
                    },
                    Err(_) => return,
                },
                _ = sleep_until => return,
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            }
        }
    });
    Ok(stream::json_lines(rx))
}

fn parse_time(s: &str) -> Result<SystemTime, ApiError> {
    if let Some(t) = rsup_runtime::logs::parse_rfc3339(s) {
        return Ok(t);
    }
    let secs: f64 = s
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid time {}", json::short(s))))?;
    super::epoch_plus(secs)
        .ok_or_else(|| ApiError::bad_request(format!("invalid time {}", json::short(s))))
}

fn event(rt: &rsup_runtime::Runtime, e: &rsup_runtime::lifecycle::Event) -> Value {
    let nanos = e
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut attrs = e.attributes.clone();
    attrs.insert("name".into(), e.subject.clone());
    // Docker's name for the exit code of a `die`.
    if let Some(code) = e.attributes.get("exit_code") {
        attrs.insert("exitCode".into(), code.clone());
    }
    let mut from = String::new();
    if e.subject_type == "container"
        && let Ok(key) = rsup_runtime::names::ContainerRef::parse(&e.id)
        && let Ok(c) = rt.inspect(&key)
    {
        if let Some(i) = &c.spec.image {
            from = i.reference.clone();
            attrs.insert("image".into(), from.clone());
        }
        for (k, v) in &c.spec.labels {
            attrs.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let action = e.kind.as_str();
    json!({
        "status": action,
        "id": e.id,
        "from": from,
        "Type": e.subject_type,
        "Action": action,
        "Actor": {"ID": e.id, "Attributes": attrs},
        "scope": "local",
        "time": json::unix_secs(e.time),
        "timeNano": u64::try_from(nanos).unwrap_or(u64::MAX),
    })
}

// Networks.

fn network_json(n: &NetworkInfo, containers: &[rsup_runtime::ContainerInfo]) -> Value {
    let name = n.spec.name.as_str();
    let shown = json::docker_network(name);
    let mut members = serde_json::Map::new();
    for (cname, ip) in &n.containers {
        let c = containers.iter().find(|c| &c.name == cname);
        let id = c.map_or_else(|| cname.clone(), |c| c.id.clone());
        members.insert(
            id,
            json!({
                "Name": cname,
                "EndpointID": c.and_then(|c| c.spec.networks.iter().find(|a| a.network.as_str() == name))
                    .map(|a| a.host_ifname.clone()).unwrap_or_default(),
                "MacAddress": "",
                "IPv4Address": format!("{ip}/{}", n.spec.subnet.prefix),
                "IPv6Address": "",
            }),
        );
    }
    json!({
        "Name": shown,
        "Id": json::network_id(name),
        "Created": json::time(Some(n.created_at)),
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null,
                 "Config": [{"Subnet": n.spec.subnet.to_string(), "Gateway": n.spec.gateway.to_string()}]},
        "Internal": n.spec.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": members,
        "Options": {"com.docker.network.bridge.name": n.spec.bridge},
        "Labels": n.spec.labels,
    })
}

/// A network by name, full id or id prefix.
fn find_network(api: &Api, id: &str) -> Result<NetworkInfo, ApiError> {
    if let Ok(name) = NetworkName::parse_as(json::rsup_network(id), "network")
        && let Ok(n) = api.runtime.inspect_network(&name)
    {
        return Ok(n);
    }
    let hex = id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if hex {
        let found: Vec<NetworkInfo> = api
            .runtime
            .networks()
            .into_iter()
            .filter(|n| json::network_id(n.spec.name.as_str()).starts_with(id))
            .collect();
        if found.len() == 1
            && let Some(n) = found.into_iter().next()
        {
            return Ok(n);
        }
    }
    // Docker's words; a name that is not a valid one is quoted (bounded).
    let shown = match NetworkName::parse_as(id, "network") {
        Ok(n) => n.to_string(),
        Err(_) => json::short(id),
    };
    Err(ApiError::not_found(format!("network {shown} not found")))
}

pub fn networks(api: &Api, q: &Query) -> ApiResult {
    let f = q.filters(&["name", "id", "driver", "type", "label", "scope"])?;
    let containers = api.runtime.list(true);
    let out: Vec<Value> = api
        .runtime
        .networks()
        .iter()
        .filter(|n| {
            let name = n.spec.name.as_str();
            let shown = json::docker_network(name);
            f.any("name", |x| shown.contains(x))
                && f.any("id", |x| json::network_id(name).starts_with(x))
                && f.any("driver", |x| x == "bridge")
                && f.any("scope", |x| x == "local")
                && f.any("type", |x| {
                    (x == "builtin") == (name == rsup_runtime::networks::DEFAULT_NETWORK)
                })
                && f.labels(&n.spec.labels)
        })
        .map(|n| network_json(n, &containers))
        .collect();
    ok_json(&Value::Array(out))
}

pub fn inspect_network(api: &Api, id: &str) -> ApiResult {
    let n = find_network(api, id)?;
    ok_json(&network_json(&n, &api.runtime.list(true)))
}

pub async fn create_network(api: &Api, body: Value) -> ApiResult {
    let name = body.get("Name").and_then(Value::as_str).unwrap_or("");
    if matches!(name, "bridge" | "host" | "none" | "default") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{name} is a pre-defined network and cannot be created"),
        ));
    }
    let name = NetworkName::parse_as(name, "name")?;
    let labels = string_map(&body, "Labels")?;
    match body.get("Driver").and_then(Value::as_str).unwrap_or("") {
        "" | "bridge" => {}
        d => {
            return Err(ApiError::unsupported_field(format!(
                "the {} network driver",
                json::short(d)
            )));
        }
    }
    if body.get("EnableIPv6").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::unsupported_field("IPv6 networks"));
    }
    if body
        .get("Options")
        .and_then(Value::as_object)
        .is_some_and(|o| !o.is_empty())
    {
        return Err(ApiError::unsupported_field("network driver options"));
    }
    let configs = body
        .pointer("/IPAM/Config")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::unsupported_field("more than one subnet"));
    }
    let pick = |k: &str| {
        configs
            .first()
            .and_then(|c| c.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if !pick("IPRange").is_empty() {
        return Err(ApiError::unsupported_field("IPAM IPRange"));
    }
    let info = api
        .runtime
        .create_network(NetworkRequest {
            name,
            subnet: pick("Subnet"),
            gateway: pick("Gateway"),
            internal: body
                .get("Internal")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            labels,
        })
        .await?;
    Ok(super::json_response(
        StatusCode::CREATED,
        &json!({"Id": json::network_id(info.spec.name.as_str()), "Warning": ""}),
    ))
}

pub async fn remove_network(api: &Api, id: &str) -> ApiResult {
    let n = find_network(api, id)?;
    api.runtime.remove_network(&n.spec.name).await?;
    Ok(super::empty(StatusCode::NO_CONTENT))
}

pub async fn connect(api: &Api, id: &str, body: Value) -> ApiResult {
    let n = find_network(api, id)?;
    let container = body.get("Container").and_then(Value::as_str).unwrap_or("");
    let key = super::container_ref(container)?;
    let config = body.get("EndpointConfig").cloned().unwrap_or(Value::Null);
    if config
        .pointer("/IPAMConfig/IPv4Address")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::unsupported_field(
            "a fixed address when connecting (give it at create)",
        ));
    }
    let aliases: Vec<String> = match config.get("Aliases") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("Aliases: a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let c = api.runtime.inspect(&key)?;
    // Docker's clients send the short id as an alias; rsup adds it itself.
    let short = &c.id[..c.id.len().min(12)];
    let aliases = aliases.into_iter().filter(|a| a != short).collect();
    api.runtime
        .connect_network(&key, &n.spec.name, aliases)
        .await?;
    Ok(super::empty(StatusCode::OK))
}

pub async fn disconnect(api: &Api, id: &str, body: Value) -> ApiResult {
    let n = find_network(api, id)?;
    let container = body.get("Container").and_then(Value::as_str).unwrap_or("");
    let key = super::container_ref(container)?;
    api.runtime.disconnect_network(&key, &n.spec.name).await?;
    Ok(super::empty(StatusCode::OK))
}

// Volumes.

fn volume_json(v: &VolumeInfo) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": v.mountpoint.display().to_string(),
        "CreatedAt": json::time(Some(v.created_at)),
        "Labels": v.labels,
        "Scope": "local",
        "Options": {},
        "UsageData": {"Size": -1, "RefCount": v.users.len()},
    })
}

pub fn volumes(api: &Api, q: &Query) -> ApiResult {
    let f = q.filters(&["name", "dangling", "driver", "label"])?;
    let out: Vec<Value> = api
        .runtime
        .volumes()
        .iter()
        .filter(|v| {
            f.any("name", |x| v.name.contains(x))
                && f.any("dangling", |d| {
                    (d == "true" || d == "1") == v.users.is_empty()
                })
                && f.any("driver", |d| d == "local")
                && f.labels(&v.labels)
        })
        .map(volume_json)
        .collect();
    ok_json(&json!({"Volumes": out, "Warnings": null}))
}

pub fn create_volume(api: &Api, body: Value) -> ApiResult {
    match body.get("Driver").and_then(Value::as_str).unwrap_or("") {
        "" | "local" => {}
        d => {
            return Err(ApiError::unsupported_field(format!(
                "the {} volume driver",
                json::short(d)
            )));
        }
    }
    if body
        .get("DriverOpts")
        .and_then(Value::as_object)
        .is_some_and(|o| !o.is_empty())
    {
        return Err(ApiError::unsupported_field("volume driver options"));
    }
    let name = match body.get("Name") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ApiError::bad_request("Name: a string")),
    };
    let name = match name {
        // Docker names an anonymous volume with 64 random hex digits.
        "" => json::random_id()?,
        n => n.to_string(),
    };
    let name = VolumeName::parse_as(&name, "name")?;
    let v = api
        .runtime
        .create_volume(&name, string_map(&body, "Labels")?)?;
    Ok(super::json_response(StatusCode::CREATED, &volume_json(&v)))
}

pub fn inspect_volume(api: &Api, name: &str) -> ApiResult {
    let missing = |shown: String| ApiError::not_found(format!("get {shown}: no such volume"));
    let name = VolumeName::parse_as(name, "name").map_err(|_| missing(json::short(name)))?;
    let v = api
        .runtime
        .inspect_volume(&name)
        .map_err(|e| match ApiError::from(e) {
            e if e.status == StatusCode::NOT_FOUND => missing(name.to_string()),
            e => e,
        })?;
    ok_json(&volume_json(&v))
}

pub fn remove_volume(api: &Api, name: &str, q: &Query) -> ApiResult {
    let _ = q;
    let name = VolumeName::parse_as(name, "name")?;
    api.runtime.remove_volume(&name)?;
    Ok(super::empty(StatusCode::NO_CONTENT))
}
