//! Hostile names and references against every unary RPC that takes one:
//! `/`, `..`, `.`, empty, absolute and relative paths to a canary directory
//! outside the state dir, `x/../../..`, 100 KB strings, NUL. Each call must
//! be INVALID_ARGUMENT or NOT_FOUND with a message of at most 4 KiB, and
//! afterwards the canary is unchanged and the daemon's own volume,
//! container and state are intact.
//!
//! If the fix regressed, these calls would delete or create host paths
//! (`volume rm /` starts deleting the whole filesystem). So the test runs
//! only inside the throwaway VM (`scripts/test.sh` runs it there, with only
//! a scratch directory writable); on the host it is skipped. The canary is
//! a directory the test makes under its own temporary directory, never a
//! system path.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rsup_client::proto::{self, ContainerState};
use rsup_tests::{Daemon, TempDir, unique_name};
use tonic::{Code, Status};

/// The longest status message a client may see.
const MAX_MESSAGE: usize = 4096;
/// Bound of one call (the VM emulates its CPU and is slow).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Every entry below `root`: relative path -> (kind, mode, content).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (String, u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (String, u32, Vec<u8>)>) {
        let meta = fs::symlink_metadata(dir).expect("stat canary");
        let rel = dir.strip_prefix(root).expect("below root").to_path_buf();
        let mode = meta.permissions().mode();
        if meta.is_dir() {
            out.insert(rel, ("dir".into(), mode, Vec::new()));
            let mut entries: Vec<PathBuf> = fs::read_dir(dir)
                .expect("read canary")
                .map(|e| e.expect("entry").path())
                .collect();
            entries.sort();
            for e in entries {
                walk(root, &e, out);
            }
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(dir).expect("readlink");
            let bytes = target.to_string_lossy().into_owned().into_bytes();
            out.insert(rel, ("symlink".into(), mode, bytes));
        } else {
            out.insert(rel, ("file".into(), mode, fs::read(dir).expect("read")));
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The hostile values, each with a label for messages (the values
/// themselves can be 100 KB).
fn hostile(canary: &Path) -> Vec<(String, String)> {
    let abs = canary.to_string_lossy().into_owned();
    let mut v: Vec<(String, String)> = [
        "/",
        "..",
        ".",
        "",
        "../../canary",
        "../canary",
        "canary/..",
        "x/../../..",
        "a/../..",
        "/etc",
        "x\0y",
        "\0",
        "-rf",
    ]
    .iter()
    .map(|s| (format!("{s:?}"), (*s).to_string()))
    .collect();
    v.push((format!("absolute canary {abs:?}"), abs.clone()));
    v.push((format!("{abs:?} + NUL"), format!("{abs}\0")));
    v.push((format!("{abs:?}/.."), format!("{abs}/..")));
    v.push(("100 KB of 'a'".into(), "a".repeat(100 * 1024)));
    v.push((
        "100 KB path climbing out".into(),
        format!("{}/../../canary", "x".repeat(100 * 1024)),
    ));
    v.push(("50 K of 'é'".into(), "é".repeat(50 * 1024)));
    v
}

/// Checks a refusal: INVALID_ARGUMENT or NOT_FOUND, a bounded message.
/// `label` names the hostile value (which can be 100 KB).
fn refused<T: std::fmt::Debug>(what: &str, label: &str, r: Result<T, Status>) {
    match r {
        Ok(v) => panic!("{what} with {label} succeeded: {v:?}"),
        Err(s) => {
            let msg: String = s.message().chars().take(300).collect();
            assert!(
                matches!(s.code(), Code::InvalidArgument | Code::NotFound),
                "{what} with {label}: {:?} {msg}",
                s.code(),
            );
            assert!(
                s.message().len() <= MAX_MESSAGE,
                "{what} with {label}: a message of {} bytes",
                s.message().len()
            );
        }
    }
}

/// Runs one call with a time bound.
async fn call<T>(what: &str, f: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {CALL_TIMEOUT:?}"))
}

/// The status of a server-streaming call: on the call or its first message.
async fn first<T: std::fmt::Debug>(
    what: &str,
    f: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, Status>>,
) -> Result<Option<T>, Status> {
    let mut stream = call(what, f).await?.into_inner();
    call(what, stream.message()).await
}

struct World {
    canary: PathBuf,
    canary_before: BTreeMap<PathBuf, (String, u32, Vec<u8>)>,
    volume_file: PathBuf,
    keeper: String,
    keeper_id: String,
}

impl World {
    /// Everything the hostile calls must not have touched.
    async fn check(&self, d: &Daemon, after: &str) {
        assert!(self.canary.is_dir(), "after {after}: the canary is gone");
        assert_eq!(
            snapshot(&self.canary),
            self.canary_before,
            "after {after}: the canary changed"
        );
        assert_eq!(
            fs::read(&self.volume_file).ok().as_deref(),
            Some(&b"kept\n"[..]),
            "after {after}: the volume's data changed"
        );
        let c = d.client();
        let v = c.inspect_volume("keep").await.expect("the volume is there");
        assert_eq!(v.name, "keep", "after {after}");
        let volumes: Vec<String> = c
            .list_volumes()
            .await
            .expect("volumes")
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(volumes, ["keep"], "after {after}: volumes");
        let networks: Vec<String> = c
            .list_networks()
            .await
            .expect("networks")
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(networks, ["default"], "after {after}: networks");
        let sups = c.list_supervisors().await.expect("supervisors");
        assert!(sups.is_empty(), "after {after}: {sups:?}");
        let k = c
            .inspect(&self.keeper)
            .await
            .expect("the container is there");
        assert_eq!(k.id, self.keeper_id, "after {after}");
        assert_eq!(k.state, ContainerState::Running as i32, "after {after}");
        let ids: Vec<String> = c
            .list(true)
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, [self.keeper_id.as_str()], "after {after}: containers");
        assert!(
            d.container_dir(&self.keeper_id)
                .join("config.json")
                .is_file(),
            "after {after}: the container's state"
        );
        assert!(
            d.state_dir().join("volumes").is_dir(),
            "after {after}: the volumes dir"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_reach_no_host_path() {
    if !crate::common::in_throwaway_vm() {
        return;
    }
    let d = Daemon::start().await;
    // The canary: outside the state dir (<tmp>/state), next to it, so that
    // "../../canary" from <tmp>/state/volumes names it.
    let canary = d.dir().join("canary");
    fs::create_dir_all(canary.join("sub")).expect("mkdir canary");
    fs::write(canary.join("file"), "canary\n").expect("write canary");
    fs::write(canary.join("sub/deep"), "deep\n").expect("write canary");
    fs::write(canary.join("..json"), "not a network\n").expect("write canary");
    std::os::unix::fs::symlink("file", canary.join("link")).expect("symlink");
    let canary_before = snapshot(&canary);
    // An unrelated file elsewhere in the test dir must stay too.
    let archive = TempDir::new();
    let junk = archive.path().join("not-an-image.tar");
    fs::write(&junk, b"not an archive").expect("write");

    // The daemon's own things: a volume with data, a running container
    // that mounts it.
    let c = d.client();
    let v = c.create_volume("keep").await.expect("create volume");
    let volume_file = PathBuf::from(&v.mountpoint).join("data");
    fs::write(&volume_file, "kept\n").expect("write volume");
    let keeper = unique_name("keeper");
    let mut spec = d.spec(&keeper, &["sleep", "1000"]);
    spec.volumes = vec!["keep:/data".into()];
    spec.networks = vec!["none".into()];
    let created = c.create(spec).await.expect("create container");
    c.start(&keeper).await.expect("start container");
    let world = World {
        canary: canary.clone(),
        canary_before,
        volume_file,
        keeper: keeper.clone(),
        keeper_id: created.id,
    };
    world.check(&d, "setup").await;

    let mut containers = c.containers();
    let mut volumes = c.volumes();
    let mut networks = c.networks();
    let mut supervisors = c.supervisors();
    let mut images = c.images();
    let one = |s: &str| s.to_string();

    for (label, v) in hostile(&canary) {
        let v = v.as_str();
        // Containers: every verb that addresses one.
        let container = one(v);
        refused(
            "Containers.Start",
            &label,
            call(
                "start",
                containers.start(proto::StartRequest {
                    container: container.clone(),
                }),
            )
            .await,
        );
        refused(
            "Containers.Stop",
            &label,
            call(
                "stop",
                containers.stop(proto::StopRequest {
                    container: container.clone(),
                    timeout_seconds: Some(0),
                }),
            )
            .await,
        );
        refused(
            "Containers.Kill",
            &label,
            call(
                "kill",
                containers.kill(proto::KillRequest {
                    container: container.clone(),
                    signal: "KILL".into(),
                }),
            )
            .await,
        );
        for force in [false, true] {
            refused(
                "Containers.Remove",
                &label,
                call(
                    "remove",
                    containers.remove(proto::RemoveRequest {
                        container: container.clone(),
                        force,
                    }),
                )
                .await,
            );
        }
        refused(
            "Containers.Inspect",
            &label,
            call(
                "inspect",
                containers.inspect(proto::InspectRequest {
                    container: container.clone(),
                }),
            )
            .await,
        );
        refused(
            "Containers.Wait",
            &label,
            call(
                "wait",
                containers.wait(proto::WaitRequest {
                    container: container.clone(),
                }),
            )
            .await,
        );
        refused(
            "Containers.Update",
            &label,
            call(
                "update",
                containers.update(proto::UpdateRequest {
                    container: container.clone(),
                    resources: Some(proto::Resources {
                        pids_limit: Some(100),
                        ..Default::default()
                    }),
                }),
            )
            .await,
        );
        refused(
            "Containers.Exec",
            &label,
            call(
                "exec",
                containers.exec(proto::ExecRequest {
                    container: container.clone(),
                    command: vec!["touch".into(), "/tmp/x".into()],
                    ..Default::default()
                }),
            )
            .await,
        );
        refused(
            "Containers.Logs",
            &label,
            first(
                "logs",
                containers.logs(proto::LogsRequest {
                    container: container.clone(),
                    follow: false,
                    tail: None,
                }),
            )
            .await,
        );
        refused(
            "Containers.Stats",
            &label,
            first(
                "stats",
                containers.stats(proto::StatsRequest {
                    containers: vec![container.clone()],
                    stream: false,
                }),
            )
            .await,
        );
        // Containers.Create: each name field alone (an empty name, image
        // or supervisor means none: those are not hostile there).
        let create = async |what: &str, f: &dyn Fn(&mut proto::ContainerSpec)| {
            let mut spec = d.spec(&unique_name("hostile"), &["true"]);
            spec.networks = vec!["none".into()];
            f(&mut spec);
            refused(
                what,
                &label,
                call(
                    what,
                    c.containers()
                        .create(proto::CreateRequest { spec: Some(spec) }),
                )
                .await,
            );
        };
        if !v.is_empty() {
            create("Containers.Create name", &|s| s.name = v.into()).await;
            create("Containers.Create supervisor", &|s| s.supervisor = v.into()).await;
            create("Containers.Create image", &|s| {
                s.image = v.into();
                s.rootfs.clear();
            })
            .await;
        }
        create("Containers.Create networks", &|s| {
            s.networks = vec![v.into()]
        })
        .await;
        if !v.starts_with('/') {
            // A NAME:/path volume (an absolute source is a bind mount by
            // design: clients are root-equivalent).
            create("Containers.Create volumes", &|s| {
                s.volumes = vec![format!("{v}:/data")]
            })
            .await;
        }
        // ...and all of them at once.
        create("Containers.Create (all names)", &|s| {
            s.name = format!("{v}x");
            s.supervisor = format!("{v}y");
            s.networks = vec![v.into()];
            s.image = format!("{v}z");
            s.rootfs.clear();
            if !v.starts_with('/') {
                s.volumes = vec![format!("{v}:/data")];
            }
        })
        .await;

        // Volumes.
        let name = one(v);
        refused(
            "Volumes.Create",
            &label,
            call(
                "volume create",
                volumes.create(proto::CreateVolumeRequest { name: name.clone() }),
            )
            .await,
        );
        refused(
            "Volumes.Inspect",
            &label,
            call(
                "volume inspect",
                volumes.inspect(proto::InspectVolumeRequest { name: name.clone() }),
            )
            .await,
        );
        refused(
            "Volumes.Remove",
            &label,
            call(
                "volume rm",
                volumes.remove(proto::RemoveVolumeRequest { name: name.clone() }),
            )
            .await,
        );
        // Networks.
        refused(
            "Networks.Create",
            &label,
            call(
                "network create",
                networks.create(proto::CreateNetworkRequest {
                    name: name.clone(),
                    ..Default::default()
                }),
            )
            .await,
        );
        refused(
            "Networks.Inspect",
            &label,
            call(
                "network inspect",
                networks.inspect(proto::InspectNetworkRequest { name: name.clone() }),
            )
            .await,
        );
        refused(
            "Networks.Remove",
            &label,
            call(
                "network rm",
                networks.remove(proto::RemoveNetworkRequest { name: name.clone() }),
            )
            .await,
        );
        // Supervisors: the name, and the parent of a valid name.
        let sup = |name: String, parent: String| proto::CreateSupervisorRequest {
            name,
            strategy: "one_for_one".into(),
            intensity: 1,
            period_ms: 1000,
            parent,
        };
        refused(
            "Supervisors.Create name",
            &label,
            call(
                "supervisor create",
                supervisors.create(sup(name.clone(), String::new())),
            )
            .await,
        );
        if !v.is_empty() {
            refused(
                "Supervisors.Create parent",
                &label,
                call(
                    "supervisor create",
                    supervisors.create(sup(unique_name("sup"), name.clone())),
                )
                .await,
            );
        }
        refused(
            "Supervisors.Remove",
            &label,
            call(
                "supervisor rm",
                supervisors.remove(proto::RemoveSupervisorRequest { name: name.clone() }),
            )
            .await,
        );
        // Images.
        refused(
            "Images.Inspect",
            &label,
            call(
                "image inspect",
                images.inspect(proto::InspectImageRequest {
                    image: name.clone(),
                }),
            )
            .await,
        );
        for force in [false, true] {
            refused(
                "Images.Remove",
                &label,
                call(
                    "image rm",
                    images.remove(proto::RemoveImageRequest {
                        image: name.clone(),
                        force,
                    }),
                )
                .await,
            );
        }
        if !v.is_empty() {
            let r = call("image import", async {
                c.import_image(&junk, Some(v)).await.map_err(|e| match e {
                    rsup_client::Error::Status(s) => s,
                    other => Status::unknown(other.to_string()),
                })
            })
            .await;
            // A malformed name is refused before the archive is read; the
            // archive itself is not one either.
            match &r {
                Err(s) => assert_eq!(
                    s.code(),
                    Code::InvalidArgument,
                    "Images.Import with {label}: {}",
                    s.message().chars().take(300).collect::<String>()
                ),
                Ok(i) => panic!("Images.Import with {label}: {i:?}"),
            }
            refused("Images.Import name", &label, r);
        }

        world.check(&d, &label).await;
    }
    assert!(junk.is_file());
}
