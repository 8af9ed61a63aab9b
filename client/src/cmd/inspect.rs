//! `rsupctl inspect`: everything the daemon knows of containers, as a JSON
//! array shaped like `docker inspect` (Id, Name, State, Config, ...).

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use rsup_client::Client;
use rsup_client::proto::{
    Container, ContainerSpec, ContainerState, Health, HealthCheck, NetworkAttachment,
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::Batch;
use crate::format;
use crate::time::{self, Fraction};

/// Show detailed information on one or more containers, as JSON
#[derive(Args)]
pub struct Inspect {
    /// Container names or ids
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

impl Inspect {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let mut batch = Batch::default();
        let mut found = Vec::new();
        for name in &self.containers {
            if let Some(container) = batch.check(client.inspect(name).await) {
                found.push(to_json(&container));
            }
        }
        let mut out = io::stdout().lock();
        out.write_all(pretty(&Value::Array(found))?.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(batch.exit_code())
    }
}

/// Docker indents `inspect` output by four spaces.
pub fn pretty(value: &Value) -> serde_json::Result<String> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut buf, formatter,
    ))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn to_json(c: &Container) -> Value {
    let spec = c.spec.clone().unwrap_or_default();
    let exit = c.exit.clone().unwrap_or_default();
    let timestamp = |ts| time::rfc3339(ts, Fraction::Trimmed);
    let mut v = json!({
        "Id": c.id,
        "ImageId": c.image_id,
        "Name": c.name,
        "Created": timestamp(c.created_at.as_ref()),
        "State": {
            "Status": format::state_name(c.state()),
            "Running": c.state() == ContainerState::Running,
            "Restarting": c.state() == ContainerState::Restarting,
            "Pid": c.pid,
            "ExitCode": exit.exit_code,
            "Signal": exit.signal,
            "StartedAt": timestamp(c.started_at.as_ref()),
            "FinishedAt": timestamp(exit.finished_at.as_ref()),
            // A quarantined container's reason, else how it last ended.
            "Error": if c.quarantine_reason.is_empty() {
                exit.error
            } else {
                c.quarantine_reason.clone()
            },
            "OOMKilled": exit.oom_killed,
            "OomKills": c.oom_kills,
            "NextStartAt": timestamp(c.next_start_at.as_ref()),
            "RestartDelayMs": c.restart_delay_ms,
        },
        "HostConfig": host_config(&spec),
        "NetworkSettings": {"Networks": networks_json(&c.networks)},
        "Config": {
            "Cmd": spec.command,
            "Env": spec.env,
            "WorkingDir": spec.working_dir,
            "User": spec.user,
            "Hostname": spec.hostname,
            "Rootfs": spec.rootfs,
            "Image": spec.image,
            "AutoRemove": spec.auto_remove,
            "Supervisor": spec.supervisor,
        },
        "LogPath": c.log_path,
        // Output the shim dropped because it could not write it (a full
        // state device); rsup's own.
        "LogDropped": {"Bytes": c.log_dropped_bytes, "Records": c.log_dropped_records},
        "StartCount": c.start_count,
        "RestartCount": c.restart_count,
    });
    if !c.quarantine_reason.is_empty() {
        v["State"]["Quarantined"] = Value::Bool(true);
    }
    // Like Docker, both keys exist only for containers with a health check.
    if let Some(health) = &c.health {
        v["State"]["Health"] = health_json(health);
    }
    if let Some(check) = spec.health.as_ref().filter(|h| !h.cmd.is_empty()) {
        v["Config"]["Healthcheck"] = healthcheck_json(check);
    }
    v
}

/// Docker's `State.Health`; the daemon keeps the last check only, so `Log`
/// has at most one entry.
fn health_json(h: &Health) -> Value {
    let log: Vec<Value> = h
        .last_check
        .as_ref()
        .map(|end| {
            json!({
                "End": time::rfc3339(Some(end), Fraction::Trimmed),
                "Output": h.last_output,
            })
        })
        .into_iter()
        .collect();
    json!({
        "Status": h.status,
        "FailingStreak": h.failing_streak,
        "Log": log,
    })
}

/// Docker's `Config.Healthcheck`: the command as a `CMD-SHELL` test,
/// durations in nanoseconds, 0 for what was left to the defaults.
fn healthcheck_json(h: &HealthCheck) -> Value {
    let nanos = |ms: Option<u64>| ms.map_or(0, |ms| ms.saturating_mul(1_000_000));
    json!({
        "Test": ["CMD-SHELL", h.cmd],
        "Interval": nanos(h.interval_ms),
        "Timeout": nanos(h.timeout_ms),
        "StartPeriod": nanos(h.start_period_ms),
        "Retries": h.retries.unwrap_or(0),
    })
}

/// Docker's `NetworkSettings.Networks`: the container's address on each of
/// its networks (none for `--network none`), plus the host end of its veth.
fn networks_json(networks: &[NetworkAttachment]) -> Value {
    let networks: Map<String, Value> = networks
        .iter()
        .map(|a| {
            let settings = json!({
                "IPAddress": a.ip,
                "IPPrefixLen": a.prefix,
                "Gateway": a.gateway,
                "Aliases": a.aliases,
                "InterfaceName": a.ifname,
                "HostInterfaceName": a.host_ifname,
            });
            (a.network.clone(), settings)
        })
        .collect();
    Value::Object(networks)
}

/// Docker's `HostConfig.PortBindings`: `"PORT/PROTO": [{"HostIp",
/// "HostPort"}, ...]` from the `[IP:]HOSTPORT:PORT[/PROTO]` forms of the
/// spec (an IPv6 host address may carry brackets; they are dropped).
fn port_bindings(ports: &[String]) -> Value {
    let mut bindings = Map::new();
    for port in ports {
        let (body, proto) = port.rsplit_once('/').unwrap_or((port, "tcp"));
        let mut parts = body.rsplitn(3, ':');
        let container_port = parts.next().unwrap_or_default();
        let host_port = parts.next().unwrap_or_default();
        let host_ip = parts
            .next()
            .unwrap_or_default()
            .trim_matches(|c| c == '[' || c == ']');
        let binding = json!({"HostIp": host_ip, "HostPort": host_port});
        match bindings
            .entry(format!("{container_port}/{proto}"))
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(list) => list.push(binding),
            other => *other = Value::Array(vec![binding]),
        }
    }
    Value::Object(bindings)
}

/// Docker's `HostConfig` limits: 0 when unset, `MemorySwap` -1 for unlimited
/// swap, CPUs in billionths; its `RestartPolicy` and `PortBindings`; and the
/// security settings: `CapAdd` is the container's whole capability set as the
/// daemon reports it, `SecurityOpt` its options.
fn host_config(spec: &ContainerSpec) -> Value {
    let r = spec.resources.unwrap_or_default();
    let restart = spec.restart.clone().unwrap_or_default();
    let (name, max_retries) = restart_policy(&restart.policy);
    json!({
        "RestartPolicy": {"Name": name, "MaximumRetryCount": max_retries},
        "PortBindings": port_bindings(&spec.ports),
        "CapAdd": spec.cap_add,
        "Privileged": spec.privileged,
        "SecurityOpt": spec.security_opt,
        "Binds": spec.volumes,
        "Tmpfs": tmpfs(&spec.tmpfs),
        "ReadonlyRootfs": spec.read_only,
        "UsernsMode": spec.userns,
        "UIDMaps": spec.uid_map,
        "GIDMaps": spec.gid_map,
        "Memory": r.memory_bytes.unwrap_or(0),
        "MemorySwap": r.memory_swap_bytes.unwrap_or(0),
        "NanoCpus": r.cpus.map_or(0, nano_cpus),
        "CpuShares": r.cpu_shares.unwrap_or(0),
        "PidsLimit": r.pids_limit.unwrap_or(0),
    })
}

/// Docker's `HostConfig.Tmpfs`: each mount's path mapped to its options
/// ("" when it has none), from the `PATH[:OPTIONS]` forms of the spec.
fn tmpfs(mounts: &[String]) -> Value {
    let mounts: Map<String, Value> = mounts
        .iter()
        .map(|m| {
            let (path, options) = m.split_once(':').unwrap_or((m, ""));
            (path.to_owned(), Value::from(options))
        })
        .collect();
    Value::Object(mounts)
}

/// Docker's `RestartPolicy`: "on-failure:3" is Name "on-failure" with
/// MaximumRetryCount 3; no policy is "no".
fn restart_policy(policy: &str) -> (&str, u64) {
    match policy.split_once(':') {
        _ if policy.is_empty() => ("no", 0),
        Some((name, count)) => (name, count.parse().unwrap_or(0)),
        None => (policy, 0),
    }
}

/// `cpus * 1e9`, rounded (so 1.5 is exactly 1500000000); saturates at the
/// i64 range.
fn nano_cpus(cpus: f64) -> i64 {
    // A float-to-int `as` saturates (and maps NaN to 0), which is what we want.
    (cpus * 1e9).round() as i64
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use rsup_client::proto::{ExitStatus, Resources, RestartPolicy};

    use super::*;

    #[test]
    fn exited_container_has_docker_shape() {
        let mut c = Container {
            id: "abc".to_owned(),
            name: "job".to_owned(),
            spec: Some(ContainerSpec {
                rootfs: "/srv/root".to_owned(),
                command: vec!["false".to_owned()],
                env: vec!["A=1".to_owned()],
                auto_remove: true,
                ..Default::default()
            }),
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            started_at: Some(Timestamp {
                seconds: 1_700_000_001,
                nanos: 500_000_000,
            }),
            exit: Some(ExitStatus {
                exit_code: 1,
                signal: 0,
                finished_at: Some(Timestamp {
                    seconds: 1_700_000_002,
                    nanos: 0,
                }),
                error: String::new(),
                oom_killed: true,
            }),
            log_path: "/var/lib/rsup/abc/log".to_owned(),
            start_count: 1,
            oom_kills: 2,
            ..Default::default()
        };
        c.set_state(ContainerState::Exited);
        let v = to_json(&c);
        assert_eq!(v["Id"], "abc");
        assert_eq!(v["Created"], "2023-11-14T22:13:20Z");
        assert_eq!(
            v["State"],
            json!({"Status": "exited", "Running": false, "Restarting": false, "Pid": 0,
                   "ExitCode": 1, "Signal": 0, "StartedAt": "2023-11-14T22:13:21.5Z",
                   "FinishedAt": "2023-11-14T22:13:22Z", "Error": "", "OOMKilled": true,
                   "OomKills": 2, "NextStartAt": "0001-01-01T00:00:00Z", "RestartDelayMs": 0})
        );
        assert_eq!(v["Config"]["Cmd"], json!(["false"]));
        assert_eq!(v["Config"]["Rootfs"], "/srv/root");
        assert_eq!(v["Config"]["AutoRemove"], true);
        assert_eq!(v["StartCount"], 1);
        assert_eq!(v["RestartCount"], 0);
        assert_eq!(
            v["HostConfig"],
            json!({"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "PortBindings": {},
                   "CapAdd": [], "Privileged": false, "SecurityOpt": [],
                   "Binds": [], "Tmpfs": {}, "ReadonlyRootfs": false,
                   "UsernsMode": "", "UIDMaps": [], "GIDMaps": [],
                   "Memory": 0, "MemorySwap": 0, "NanoCpus": 0, "CpuShares": 0, "PidsLimit": 0})
        );
    }

    #[test]
    fn limits_show_in_host_config() {
        let c = Container {
            spec: Some(ContainerSpec {
                resources: Some(Resources {
                    memory_bytes: Some(256 << 20),
                    memory_swap_bytes: Some(-1),
                    cpus: Some(1.5),
                    cpu_shares: Some(512),
                    pids_limit: Some(100),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            to_json(&c)["HostConfig"],
            json!({"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "PortBindings": {},
                   "CapAdd": [], "Privileged": false, "SecurityOpt": [],
                   "Binds": [], "Tmpfs": {}, "ReadonlyRootfs": false,
                   "UsernsMode": "", "UIDMaps": [], "GIDMaps": [],
                   "Memory": 268435456, "MemorySwap": -1, "NanoCpus": 1500000000,
                   "CpuShares": 512, "PidsLimit": 100})
        );
        assert_eq!(nano_cpus(0.1), 100_000_000);
        assert_eq!(nano_cpus(0.000_000_000_4), 0);
        assert_eq!(nano_cpus(f64::MAX), i64::MAX);
    }

    #[test]
    fn restarting_container_shows_its_policy_and_next_start() {
        let mut c = Container {
            spec: Some(ContainerSpec {
                restart: Some(RestartPolicy {
                    policy: "on-failure:3".to_owned(),
                    delay_ms: Some(250),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_count: 2,
            restart_delay_ms: 500,
            next_start_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000,
            }),
            ..Default::default()
        };
        c.set_state(ContainerState::Restarting);
        let v = to_json(&c);
        assert_eq!(v["State"]["Status"], "restarting");
        assert_eq!(v["State"]["Restarting"], true);
        assert_eq!(v["State"]["Running"], false);
        assert_eq!(v["State"]["NextStartAt"], "2023-11-14T22:13:20.25Z");
        assert_eq!(v["State"]["RestartDelayMs"], 500);
        assert_eq!(v["RestartCount"], 2);
        assert_eq!(
            v["HostConfig"]["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
    }

    #[test]
    fn restart_policies_split_like_docker() {
        assert_eq!(restart_policy(""), ("no", 0));
        assert_eq!(restart_policy("no"), ("no", 0));
        assert_eq!(restart_policy("always"), ("always", 0));
        assert_eq!(restart_policy("unless-stopped"), ("unless-stopped", 0));
        assert_eq!(restart_policy("on-failure"), ("on-failure", 0));
        assert_eq!(restart_policy("on-failure:3"), ("on-failure", 3));
        assert_eq!(restart_policy("on-failure:x"), ("on-failure", 0));
    }

    #[test]
    fn health_shows_like_docker() {
        let mut c = Container {
            spec: Some(ContainerSpec {
                health: Some(HealthCheck {
                    cmd: "test -e /tmp/ok".to_owned(),
                    interval_ms: Some(300),
                    timeout_ms: Some(2_000),
                    retries: Some(2),
                    start_period_ms: None,
                    restart_on_unhealthy: true,
                }),
                ..Default::default()
            }),
            health: Some(Health {
                status: "unhealthy".to_owned(),
                failing_streak: 2,
                last_output: "no\n".to_owned(),
                last_check: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 500_000_000,
                }),
            }),
            ..Default::default()
        };
        c.set_state(ContainerState::Running);
        let v = to_json(&c);
        assert_eq!(
            v["State"]["Health"],
            json!({"Status": "unhealthy", "FailingStreak": 2,
                   "Log": [{"End": "2023-11-14T22:13:20.5Z", "Output": "no\n"}]})
        );
        assert_eq!(
            v["Config"]["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 300_000_000,
                   "Timeout": 2_000_000_000u64, "StartPeriod": 0, "Retries": 2})
        );

        // Not checked yet: no log entry.
        c.health = Some(Health {
            status: "starting".to_owned(),
            ..Default::default()
        });
        assert_eq!(
            to_json(&c)["State"]["Health"],
            json!({"Status": "starting", "FailingStreak": 0, "Log": []})
        );
    }

    #[test]
    fn no_health_keys_without_a_health_check() {
        let v = to_json(&Container::default());
        assert!(v["State"].get("Health").is_none(), "{v}");
        assert!(v["Config"].get("Healthcheck").is_none(), "{v}");
    }

    #[test]
    fn never_started_times_are_go_zero_time() {
        let v = to_json(&Container::default());
        assert_eq!(v["State"]["StartedAt"], "0001-01-01T00:00:00Z");
        assert_eq!(v["State"]["Status"], "unknown");
        assert_eq!(v["Config"]["Cmd"], json!([]));
    }

    #[test]
    fn networks_and_port_bindings_show_like_docker() {
        let c = Container {
            spec: Some(ContainerSpec {
                ports: vec![
                    "127.0.0.1:8080:80".to_owned(),
                    "0.0.0.0:8443:443/tcp".to_owned(),
                    "::1:8081:80".to_owned(),
                    "9090:90".to_owned(),
                ],
                ..Default::default()
            }),
            networks: vec![
                NetworkAttachment {
                    network: "front".to_owned(),
                    ifname: "eth0".to_owned(),
                    ip: "10.90.0.2".to_owned(),
                    prefix: 24,
                    gateway: "10.90.0.1".to_owned(),
                    aliases: vec!["db".to_owned()],
                    host_ifname: "rsv0123abcd0".to_owned(),
                },
                NetworkAttachment {
                    network: "back".to_owned(),
                    ifname: "eth1".to_owned(),
                    ip: "10.91.0.5".to_owned(),
                    prefix: 16,
                    gateway: "10.91.0.1".to_owned(),
                    aliases: Vec::new(),
                    host_ifname: "rsv0123abcd1".to_owned(),
                },
            ],
            ..Default::default()
        };
        let v = to_json(&c);
        assert_eq!(
            v["NetworkSettings"],
            json!({"Networks": {
                "front": {"IPAddress": "10.90.0.2", "IPPrefixLen": 24, "Gateway": "10.90.0.1",
                          "Aliases": ["db"], "InterfaceName": "eth0",
                          "HostInterfaceName": "rsv0123abcd0"},
                "back": {"IPAddress": "10.91.0.5", "IPPrefixLen": 16, "Gateway": "10.91.0.1",
                         "Aliases": [], "InterfaceName": "eth1",
                         "HostInterfaceName": "rsv0123abcd1"}}})
        );
        assert_eq!(
            v["HostConfig"]["PortBindings"],
            json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"},
                              {"HostIp": "::1", "HostPort": "8081"}],
                   "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8443"}],
                   "90/tcp": [{"HostIp": "", "HostPort": "9090"}]})
        );
    }

    #[test]
    fn a_container_without_networks_has_an_empty_map() {
        let v = to_json(&Container::default());
        assert_eq!(v["NetworkSettings"], json!({"Networks": {}}));
        assert_eq!(v["HostConfig"]["PortBindings"], json!({}));
    }

    #[test]
    fn security_settings_show_in_host_config() {
        let c = Container {
            spec: Some(ContainerSpec {
                cap_add: vec!["CAP_CHOWN".to_owned(), "CAP_NET_ADMIN".to_owned()],
                privileged: true,
                security_opt: vec!["seccomp=unconfined".to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = to_json(&c);
        assert_eq!(
            v["HostConfig"]["CapAdd"],
            json!(["CAP_CHOWN", "CAP_NET_ADMIN"])
        );
        assert_eq!(v["HostConfig"]["Privileged"], true);
        assert_eq!(
            v["HostConfig"]["SecurityOpt"],
            json!(["seccomp=unconfined"])
        );
    }

    #[test]
    fn storage_settings_show_in_host_config() {
        let c = Container {
            spec: Some(ContainerSpec {
                volumes: vec!["data:/data".to_owned(), "/srv:/host:ro".to_owned()],
                tmpfs: vec!["/tmp".to_owned(), "/run:size=1m,mode=700".to_owned()],
                read_only: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = to_json(&c);
        assert_eq!(
            v["HostConfig"]["Binds"],
            json!(["data:/data", "/srv:/host:ro"])
        );
        assert_eq!(
            v["HostConfig"]["Tmpfs"],
            json!({"/tmp": "", "/run": "size=1m,mode=700"})
        );
        assert_eq!(v["HostConfig"]["ReadonlyRootfs"], true);
        let v = to_json(&Container::default());
        assert_eq!(v["HostConfig"]["Binds"], json!([]));
        assert_eq!(v["HostConfig"]["Tmpfs"], json!({}));
        assert_eq!(v["HostConfig"]["ReadonlyRootfs"], false);
    }

    #[test]
    fn output_is_indented_by_four() {
        let text = pretty(&json!([{"Id": "abc"}])).expect("serializable");
        assert_eq!(text, "[\n    {\n        \"Id\": \"abc\"\n    }\n]");
    }
}
