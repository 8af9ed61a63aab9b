//! A scripted, in-process fake of rsupd on a temporary Unix socket, for the
//! tests of the client library and rsupctl: it answers every RPC from a
//! script keyed on names and records the requests the tests check, so that
//! they see what goes over the wire and what the user sees, not container
//! behaviour.
//!
//! The fake knows these container names: "ghost" does not exist, "broken"
//! fails to start, "killed" ends by SIGKILL, anything else exits with 3.
//! "flappy" is waiting for a policy restart. Created specs, update and events
//! requests are recorded for the test to check; `events` sends two canned
//! events and ends. Containers are addressed by name, or by the id `create`
//! made from it; a stop, kill or rm of "full" (a container on a full disk)
//! warns.
//!
//! Exec requests are recorded; "ghost" does not exist, "stopped" is not
//! running, "slow" times out; elsewhere the command writes its argv (joined by
//! spaces, then a byte that is not UTF-8) on stdout and "err" on stderr, and
//! `exit N` exits with N.
//!
//! Supervisors: `list` returns a two-level tree, "app" (db, web and the
//! supervisor "workers") over "workers" (w1). `create` records its request and
//! refuses intensity 0, `remove` knows no "ghost".
//!
//! Networks: `list` returns "default" (empty) and "back" (db and app);
//! `create` records its request and refuses a subnet ending in "/33";
//! `inspect` knows those two only; `remove` refuses "ghost" (not found) and
//! "back" (in use). The container "wired" is on two networks and publishes
//! two ports. The container "hardened" reports a capability set, privileged
//! and an unconfined seccomp.
//!
//! Volumes: `list` returns "data" (used by db); `create` echoes the name;
//! `inspect` knows "data" only; `remove` refuses "ghost" (not found) and
//! "data" (in use).
//!
//! Invariants: the fake never touches the host beyond its socket's
//! directory (removed when the [`FakeDaemon`] is dropped), and its answers
//! depend only on the request, never on earlier calls.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prost_types::Timestamp;
use rsup_client::proto::containers_server::{Containers, ContainersServer};
use rsup_client::proto::networks_server::{Networks, NetworksServer};
use rsup_client::proto::supervisors_server::{Supervisors, SupervisorsServer};
use rsup_client::proto::system_server::{System, SystemServer};
use rsup_client::proto::volumes_server::{Volumes, VolumesServer};
use rsup_client::proto::*;
use tokio::net::UnixListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// The id of every container (`create` appends `-<name>`).
pub const ID: &str = "c0ffee0123456789abcdef";
/// The fake's "now", in seconds since the epoch.
const NOW: i64 = 1_700_000_000;

/// Implements a service trait for [`Fake`] from one plain function per RPC:
/// `fn rpc(&self, request: Message) -> Reply { body }`, where the body
/// returns `Result<Reply, Status>`; `stream fn rpc(...) -> Name<Item>`
/// returns the items of a server stream `Name` instead. The macro adds what
/// tonic asks of every RPC: the `Request`/`Response` wrappers and the boxed
/// stream types.
macro_rules! fake_service {
    ($service:ident { $($rpcs:tt)* }) => {
        fake_service!(@rpcs $service [] $($rpcs)*);
    };
    (@rpcs $service:ident [$($done:tt)*]
        $(#[$meta:meta])*
        fn $rpc:ident(&$s:ident, $req:tt: $Req:ty) -> $Reply:ty $body:block
        $($rest:tt)*
    ) => {
        fake_service!(@rpcs $service [$($done)*
            $(#[$meta])*
            async fn $rpc(&$s, request: Request<$Req>) -> Result<Response<$Reply>, Status> {
                let $req = request.into_inner();
                reply(|| -> Result<$Reply, Status> { $body })
            }
        ] $($rest)*);
    };
    (@rpcs $service:ident [$($done:tt)*]
        $(#[$meta:meta])*
        stream fn $rpc:ident(&$s:ident, $req:tt: $Req:ty) -> $Stream:ident<$Item:ty> $body:block
        $($rest:tt)*
    ) => {
        fake_service!(@rpcs $service [$($done)*
            type $Stream = Streamed<$Item>;

            $(#[$meta])*
            async fn $rpc(&$s, request: Request<$Req>) -> Result<Response<Self::$Stream>, Status> {
                let $req = request.into_inner();
                reply_stream(|| -> Result<Vec<$Item>, Status> { $body })
            }
        ] $($rest)*);
    };
    (@rpcs $service:ident [$($done:tt)*]) => {
        #[tonic::async_trait]
        impl $service for Fake {
            $($done)*
        }
    };
}

/// The reply of an RPC whose answer `answer` computes.
fn reply<T>(answer: impl FnOnce() -> Result<T, Status>) -> Result<Response<T>, Status> {
    answer().map(Response::new)
}

/// The stream a streaming RPC answers with: its items, then its end.
type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The reply of a streaming RPC whose items `items` computes.
fn reply_stream<T: Send + 'static>(
    items: impl FnOnce() -> Result<Vec<T>, Status>,
) -> Result<Response<Streamed<T>>, Status> {
    let items: Vec<Result<T, Status>> = items()?.into_iter().map(Ok).collect();
    Ok(Response::new(Box::pin(tokio_stream::iter(items))))
}

/// The requests of one kind the fake received, in order; clones share them.
#[derive(Debug)]
pub struct Recorded<T>(Arc<Mutex<Vec<T>>>);

impl<T> Default for Recorded<T> {
    fn default() -> Self {
        Recorded(Arc::default())
    }
}

impl<T> Clone for Recorded<T> {
    fn clone(&self) -> Self {
        Recorded(self.0.clone())
    }
}

impl<T: Clone> Recorded<T> {
    fn push(&self, request: &T) {
        self.lock().push(request.clone());
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<T> {
        self.lock().clone()
    }

    /// The last request, taken out.
    pub fn pop(&self) -> Option<T> {
        self.lock().pop()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.0.lock().expect("not poisoned")
    }
}

/// The fake daemon; clones share the record of requests.
#[derive(Clone, Default)]
pub struct Fake {
    pub specs: Recorded<ContainerSpec>,
    pub updates: Recorded<UpdateRequest>,
    pub events: Recorded<EventsRequest>,
    pub supervisors: Recorded<CreateSupervisorRequest>,
    pub execs: Recorded<ExecRequest>,
    pub networks: Recorded<CreateNetworkRequest>,
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn container(name: &str, state: ContainerState) -> Result<Container, Status> {
    if name == "ghost" {
        return Err(Status::not_found(format!("no such container: {name}")));
    }
    let mut c = Container {
        id: ID.to_owned(),
        name: name.to_owned(),
        spec: Some(ContainerSpec {
            rootfs: "/srv/rootfs".to_owned(),
            command: vec!["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()],
            ..Default::default()
        }),
        created_at: ts(NOW),
        log_path: format!("/var/lib/rsup/{name}/log"),
        ..Default::default()
    };
    c.set_state(state);
    if state == ContainerState::Running {
        c.pid = 4242;
        c.started_at = ts(NOW + 1);
    }
    Ok(c)
}

fn exit_of(name: &str) -> ExitStatus {
    let (exit_code, signal) = if name == "killed" { (137, 9) } else { (3, 0) };
    ExitStatus {
        exit_code,
        signal,
        finished_at: ts(NOW + 2),
        error: String::new(),
        oom_killed: name == "killed",
    }
}

/// What a stop, kill or rm of `name` warns: something for "full" (a
/// container on a full disk) only.
fn warnings_for(name: &str) -> Vec<String> {
    if name == "full" {
        vec!["container full: its state is not saved (no space left)".to_owned()]
    } else {
        Vec::new()
    }
}

/// The name a container reference stands for: the name itself, or the one
/// `create` encoded in the id.
fn script_name(container: &str) -> &str {
    container
        .strip_prefix(ID)
        .and_then(|rest| rest.strip_prefix('-'))
        .unwrap_or(container)
}

/// The scripted inspection of a running `name`: health, networks, security
/// settings or a pending restart for the names that have them.
fn inspected(name: &str) -> Result<Option<Container>, Status> {
    let mut c = match name {
        "empty" => return Ok(None),
        "flappy" => container(name, ContainerState::Restarting)?,
        _ => container(name, ContainerState::Running)?,
    };
    match name {
        "checked" => {
            c.spec.get_or_insert_default().health = Some(HealthCheck {
                cmd: "true".to_owned(),
                interval_ms: Some(1_500),
                ..Default::default()
            });
            c.health = Some(Health {
                status: "healthy".to_owned(),
                failing_streak: 0,
                last_output: "ok\n".to_owned(),
                last_check: ts(NOW + 2),
            });
        }
        "wired" => {
            c.spec.get_or_insert_default().ports = vec![
                "127.0.0.1:8080:80".to_owned(),
                "0.0.0.0:8443:443".to_owned(),
            ];
            let attach = |network: &str, i: u8, ip: &str, aliases: &[&str]| NetworkAttachment {
                network: network.to_owned(),
                ifname: format!("eth{i}"),
                ip: ip.to_owned(),
                prefix: 24,
                gateway: ip
                    .rsplit_once('.')
                    .map(|(net, _)| format!("{net}.1"))
                    .unwrap_or_default(),
                aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
                host_ifname: format!("rsvc0ffee01{i}"),
            };
            c.networks = vec![
                attach("default", 0, "10.88.0.7", &["web"]),
                attach("back", 1, "10.90.0.4", &[]),
            ];
        }
        "hardened" => {
            let spec = c.spec.get_or_insert_default();
            spec.cap_add = vec!["CAP_CHOWN".to_owned(), "CAP_NET_ADMIN".to_owned()];
            spec.privileged = true;
            spec.security_opt = vec!["seccomp=unconfined".to_owned()];
        }
        "flappy" => {
            c.exit = Some(exit_of(name));
            c.spec.get_or_insert_default().restart = Some(RestartPolicy {
                policy: "on-failure:5".to_owned(),
                ..Default::default()
            });
            c.restart_count = 2;
            c.restart_delay_ms = 400;
            c.next_start_at = ts(NOW + 3);
        }
        _ => {}
    }
    Ok(Some(c))
}

fake_service!(Containers {
    fn create(&self, r: CreateRequest) -> CreateResponse {
        let spec = r.spec.ok_or_else(|| Status::invalid_argument("no spec"))?;
        if !spec.rootfs.starts_with('/') {
            return Err(Status::invalid_argument("rootfs must be absolute"));
        }
        self.specs.push(&spec);
        let mut c = container(&spec.name, ContainerState::Created)?;
        // The id encodes the name so later calls made by id keep the script.
        c.id = format!("{}-{}", ID, spec.name);
        c.spec = Some(spec);
        Ok(CreateResponse { container: Some(c) })
    }

    fn start(&self, r: StartRequest) -> StartResponse {
        let name = script_name(&r.container);
        if name == "broken" {
            return Err(Status::failed_precondition("exec: \"nope\" not found"));
        }
        let c = container(name, ContainerState::Running)?;
        Ok(StartResponse { container: Some(c) })
    }

    fn stop(&self, r: StopRequest) -> StopResponse {
        let name = script_name(&r.container);
        let c = container(name, ContainerState::Exited)?;
        Ok(StopResponse {
            container: Some(c),
            warnings: warnings_for(name),
        })
    }

    fn kill(&self, r: KillRequest) -> KillResponse {
        container(script_name(&r.container), ContainerState::Running)?;
        if r.signal != "KILL" {
            return Err(Status::invalid_argument(format!(
                "expected KILL, got {}",
                r.signal
            )));
        }
        Ok(KillResponse {
            warnings: warnings_for(&r.container),
        })
    }

    fn remove(&self, r: RemoveRequest) -> RemoveResponse {
        let name = script_name(&r.container);
        container(name, ContainerState::Removed)?;
        Ok(RemoveResponse {
            warnings: warnings_for(name),
        })
    }

    fn list(&self, r: ListRequest) -> ListResponse {
        let mut containers = vec![container("web", ContainerState::Running)?];
        if r.all {
            let mut job = container("job", ContainerState::Exited)?;
            job.exit = Some(exit_of("job"));
            containers.push(job);
        }
        Ok(ListResponse { containers })
    }

    fn inspect(&self, r: InspectRequest) -> InspectResponse {
        let container = inspected(script_name(&r.container))?;
        Ok(InspectResponse { container })
    }

    fn wait(&self, r: WaitRequest) -> WaitResponse {
        let name = script_name(&r.container);
        container(name, ContainerState::Exited)?;
        Ok(WaitResponse {
            status: Some(exit_of(name)),
        })
    }

    stream fn logs(&self, r: LogsRequest) -> LogsStream<LogEntry> {
        container(script_name(&r.container), ContainerState::Running)?;
        let entry = |stream: LogStream, line: &[u8], partial| LogEntry {
            stream: stream.into(),
            time: Some(Timestamp {
                seconds: NOW,
                nanos: 7,
            }),
            line: line.to_vec(),
            partial,
        };
        let mut entries = vec![
            entry(LogStream::Stdout, b"out1", false),
            entry(LogStream::Stderr, b"err1", false),
            entry(LogStream::Stdout, b"part", true),
        ];
        if let Some(tail) = r.tail {
            let skip = entries
                .len()
                .saturating_sub(usize::try_from(tail).expect("small"));
            entries.drain(..skip);
        }
        Ok(entries)
    }

    fn update(&self, r: UpdateRequest) -> UpdateResponse {
        self.updates.push(&r);
        let mut c = container(script_name(&r.container), ContainerState::Running)?;
        if let Some(spec) = c.spec.as_mut() {
            spec.resources = r.resources;
        }
        Ok(UpdateResponse { container: Some(c) })
    }

    /// One sample of "web" (or of the named containers), two with `stream`.
    stream fn stats(&self, r: StatsRequest) -> StatsStream<StatsResponse> {
        let names = if r.containers.is_empty() {
            vec!["web".to_owned()]
        } else {
            r.containers
        };
        let mut stats = Vec::new();
        for name in &names {
            let c = container(script_name(name), ContainerState::Running)?;
            stats.push(ContainerStats {
                id: c.id,
                name: c.name,
                state: c.state,
                cpu_percent: 50.0,
                memory_working_set_bytes: 3 << 20,
                memory_usage_bytes: 4 << 20,
                memory_limit_bytes: 64 << 20,
                memory_percent: 4.6875,
                pids: 2,
                oom_kills: 1,
                ..Default::default()
            });
        }
        let sample = StatsResponse {
            stats,
            time: ts(NOW),
        };
        let count = if r.stream { 2 } else { 1 };
        Ok(vec![sample; count])
    }

    /// A start and a die of "web", whatever the filters, then the end.
    stream fn events(&self, r: EventsRequest) -> EventsStream<Event> {
        self.events.push(&r);
        let event = |kind: &str, nanos, attributes: &[(&str, &str)]| Event {
            time: Some(Timestamp {
                seconds: NOW,
                nanos,
            }),
            r#type: kind.to_owned(),
            subject_type: "container".to_owned(),
            subject: "web".to_owned(),
            id: ID.to_owned(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        Ok(vec![
            event("start", 5, &[]),
            event(
                "die",
                123_456_789,
                &[("signal", "0"), ("exit_code", "1"), ("oom_killed", "false")],
            ),
        ])
    }

    fn exec(&self, r: ExecRequest) -> ExecResponse {
        self.execs.push(&r);
        let name = script_name(&r.container);
        container(name, ContainerState::Running)?;
        if name == "stopped" {
            return Err(Status::failed_precondition(
                "container stopped is not running",
            ));
        }
        if name == "slow" {
            return Ok(ExecResponse {
                exit_code: -1,
                timed_out: true,
                ..Default::default()
            });
        }
        let exit_code = match r.command.as_slice() {
            [exit, code] if exit == "exit" => code.parse().unwrap_or(255),
            _ => 0,
        };
        let mut stdout = r.command.join(" ").into_bytes();
        stdout.extend_from_slice(b"\xff\n");
        Ok(ExecResponse {
            exit_code,
            stdout,
            stderr: b"err\n".to_vec(),
            timed_out: false,
        })
    }
});

/// The supervisor tree `list` returns.
pub fn tree() -> Vec<Supervisor> {
    let child = |kind: &str, name: &str, state: &str| SupervisorChild {
        kind: kind.to_owned(),
        name: name.to_owned(),
        state: state.to_owned(),
    };
    vec![
        Supervisor {
            name: "app".to_owned(),
            strategy: "one_for_all".to_owned(),
            intensity: 3,
            period_ms: 10_000,
            parent: String::new(),
            state: "running".to_owned(),
            restarts: 2,
            children: vec![
                child("container", "db", "running"),
                child("container", "web", "running"),
                child("supervisor", "workers", "running"),
            ],
        },
        Supervisor {
            name: "workers".to_owned(),
            strategy: "one_for_one".to_owned(),
            intensity: 5,
            period_ms: 30_000,
            parent: "app".to_owned(),
            state: "running".to_owned(),
            restarts: 0,
            children: vec![child("container", "w1", "restarting")],
        },
    ]
}

fake_service!(Supervisors {
    fn create(&self, r: CreateSupervisorRequest) -> Supervisor {
        self.supervisors.push(&r);
        if r.intensity == 0 {
            return Err(Status::invalid_argument("intensity must be at least 1"));
        }
        Ok(Supervisor {
            name: r.name,
            strategy: r.strategy,
            intensity: r.intensity,
            period_ms: r.period_ms,
            parent: r.parent,
            state: "running".to_owned(),
            restarts: 0,
            children: Vec::new(),
        })
    }

    fn remove(&self, r: RemoveSupervisorRequest) -> RemoveSupervisorResponse {
        if r.name == "ghost" {
            return Err(Status::not_found(format!("no such supervisor: {}", r.name)));
        }
        Ok(RemoveSupervisorResponse {})
    }

    fn list(&self, _: ListSupervisorsRequest) -> ListSupervisorsResponse {
        Ok(ListSupervisorsResponse {
            supervisors: tree(),
        })
    }
});

fn networks() -> Vec<Network> {
    let lease = |container: &str, ip: &str| NetworkLease {
        container: container.to_owned(),
        ip: ip.to_owned(),
    };
    vec![
        Network {
            name: "default".to_owned(),
            subnet: "10.88.0.0/16".to_owned(),
            gateway: "10.88.0.1".to_owned(),
            internal: false,
            bridge: "rsb1e2d3c4b".to_owned(),
            created_at: ts(NOW),
            containers: Vec::new(),
            dns: "10.88.0.1:53".to_owned(),
        },
        Network {
            name: "back".to_owned(),
            subnet: "10.90.0.0/24".to_owned(),
            gateway: "10.90.0.1".to_owned(),
            internal: true,
            bridge: "rsb5a6b7c8d".to_owned(),
            created_at: ts(NOW + 1),
            containers: vec![lease("db", "10.90.0.2"), lease("app", "10.90.0.3")],
            dns: "10.90.0.1:53".to_owned(),
        },
    ]
}

/// The answer to the removal of network or volume `name`: refused when it
/// is "ghost" (not found) or `in_use` (used by `users`).
fn removal(kind: &str, name: &str, in_use: &str, users: &str) -> Result<(), Status> {
    if name == in_use {
        return Err(Status::failed_precondition(format!(
            "{kind} {name} is in use by {users}: remove {} first",
            if users.contains(',') { "them" } else { "it" }
        )));
    }
    if name == "ghost" {
        return Err(Status::not_found(format!("no such {kind}: {name}")));
    }
    Ok(())
}

fake_service!(Networks {
    fn create(&self, r: CreateNetworkRequest) -> Network {
        self.networks.push(&r);
        if r.subnet.ends_with("/33") {
            return Err(Status::invalid_argument(format!(
                "{:?}: prefix length above 32",
                r.subnet
            )));
        }
        Ok(Network {
            name: r.name,
            subnet: if r.subnet.is_empty() {
                "10.89.0.0/24".to_owned()
            } else {
                r.subnet
            },
            gateway: r.gateway,
            internal: r.internal,
            bridge: "rsb00000000".to_owned(),
            created_at: ts(NOW),
            containers: Vec::new(),
            dns: String::new(),
        })
    }

    fn remove(&self, r: RemoveNetworkRequest) -> RemoveNetworkResponse {
        removal("network", &r.name, "back", "db, app")?;
        Ok(RemoveNetworkResponse {})
    }

    fn list(&self, _: ListNetworksRequest) -> ListNetworksResponse {
        Ok(ListNetworksResponse {
            networks: networks(),
        })
    }

    fn inspect(&self, r: InspectNetworkRequest) -> Network {
        networks()
            .into_iter()
            .find(|n| n.name == r.name)
            .ok_or_else(|| Status::not_found(format!("no such network: {}", r.name)))
    }
});

/// The one volume there is.
pub fn data_volume() -> Volume {
    Volume {
        name: "data".to_owned(),
        mountpoint: "/var/lib/rsup/volumes/data".to_owned(),
        created_at: ts(NOW),
        containers: vec!["db".to_owned()],
    }
}

fake_service!(Volumes {
    fn create(&self, r: CreateVolumeRequest) -> Volume {
        Ok(Volume {
            mountpoint: format!("/var/lib/rsup/volumes/{}", r.name),
            name: r.name,
            created_at: ts(NOW),
            containers: Vec::new(),
        })
    }

    fn remove(&self, r: RemoveVolumeRequest) -> RemoveVolumeResponse {
        removal("volume", &r.name, "data", "db")?;
        Ok(RemoveVolumeResponse {})
    }

    fn list(&self, _: ListVolumesRequest) -> ListVolumesResponse {
        Ok(ListVolumesResponse {
            volumes: vec![data_volume()],
        })
    }

    fn inspect(&self, r: InspectVolumeRequest) -> Volume {
        if r.name == "data" {
            Ok(data_volume())
        } else {
            Err(Status::not_found(format!("no such volume: {}", r.name)))
        }
    }
});

fake_service!(System {
    fn info(&self, _: InfoRequest) -> InfoResponse {
        Ok(InfoResponse {
            version: "9.9.9".to_owned(),
            state_dir: "/var/lib/rsup".to_owned(),
            containers: 2,
            running: 1,
            cgroup_driver: "v2".to_owned(),
        })
    }
});

/// The fake serving on its own socket; its directory is removed when the
/// test ends.
pub struct FakeDaemon {
    dir: PathBuf,
    pub socket: PathBuf,
    pub fake: Fake,
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves the fake on a fresh socket for the rest of the test.
pub async fn serve() -> FakeDaemon {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rsup-client-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("rsupd.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind");
    let fake = Fake::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ContainersServer::new(fake.clone()))
            .add_service(SupervisorsServer::new(fake.clone()))
            .add_service(NetworksServer::new(fake.clone()))
            .add_service(VolumesServer::new(fake.clone()))
            .add_service(SystemServer::new(fake.clone()))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    FakeDaemon { dir, socket, fake }
}
