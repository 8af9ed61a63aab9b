//! Container specs: what a user asks for, validated once into what rsup runs.
//!
//! [`SpecRequest`] is the raw request (as it comes over gRPC, names already
//! parsed); [`ContainerSpec`] is the validated, resolved form stored in
//! `config.json`. This module is data at the bottom of the runtime: it
//! imports no service (containers, networks, volumes, images,
//! supervisors), only the layers below them, and every check a create makes
//! without side effects is in its one [`validate()`] step, `security_opt`
//! included; the daemon only translates protobuf into these types.
//!
//! * [`validate`](mod@validate): the validate step, with the daemon's
//!   defaults and the resolved image as its [`Context`];
//! * [`lookup`]: the rootfs lookups (command, user) through
//!   [`crate::paths`];
//! * [`restart`], [`resources`], [`security`]: the restart and health,
//!   cgroup limit, and capability and seccomp parts (the log part is two
//!   numbers, checked in the validate step; its type is the log writer's
//!   [`LogConfig`]);
//! * [`mounts`], [`ports`], [`net`]: volumes, binds and tmpfs mounts
//!   (with [`tmpfs`], Docker's tmpfs options), published ports, and
//!   network attachments.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Limits;
use crate::error::Error;
use crate::names::{ContainerName, SupervisorName};

pub mod lookup;
pub mod mounts;
pub mod net;
pub mod ports;
pub mod resources;
pub mod restart;
pub mod security;
pub mod tmpfs;
pub mod validate;

pub use crate::logs::LogConfig;
pub use crate::names::is_dns_label;
pub use lookup::{DEFAULT_PATH, resolve_user_in_container};
pub use mounts::{MountKind, MountSpec, parse_mounts, parse_tmpfs, parse_volume};
pub use net::{NetAttach, NetPlan, NetRequest};
pub use ports::PortMap;
pub use resources::{MIN_MEMORY, ResourcesRequest, host_cpus};
pub use restart::{HealthRequest, HealthSpec, RestartRequest, RestartSpec};
pub use security::SecurityRequest;
pub use tmpfs::{TmpfsOptions, TmpfsSize};
pub use validate::{Context, Validated, validate};

/// A container as the user asked for it, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct SpecRequest {
    /// None: a generated name.
    pub name: Option<ContainerName>,
    pub rootfs: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub auto_remove: bool,
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub resources: ResourcesRequest,
    pub restart: RestartRequest,
    /// Supervisor to join.
    pub supervisor: Option<SupervisorName>,
    pub health: HealthRequest,
    pub net: NetRequest,
    /// Capabilities, privileged, `security_opt` and a seccomp profile.
    pub security: SecurityRequest,
    /// `-v` specs: `NAME:/path[:ro]` or `/host/dir:/path[:ro]`.
    pub volumes: Vec<String>,
    /// `--tmpfs PATH[:OPTIONS]`.
    pub tmpfs: Vec<String>,
    /// `--read-only`: the root filesystem is read-only.
    pub read_only: bool,
    /// An imported image as the root filesystem (instead of `rootfs`).
    pub image: Option<crate::names::ImageRef>,
    /// `--entrypoint`: replaces the image's Entrypoint ("" clears it).
    pub entrypoint: Option<String>,
    /// `--userns`, `--uidmap`, `--gidmap` (resolved by the runtime, which
    /// knows the daemon's subordinate id ranges).
    pub userns: crate::userns::UsernsRequest,
    /// `--label KEY=VALUE`: added to (and overriding) the image's labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// An image resolved for a create: its layers and the defaults of its config.
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// The reference as the user gave it.
    pub reference: String,
    pub id: String,
    /// Layer diff ids, bottom first.
    pub layers: Vec<String>,
    /// The layers' host directories, top first (overlay's lowerdir order).
    pub lowerdirs: Vec<PathBuf>,
    pub config: crate::imagestore::ImageConfig,
    /// A directory showing the merged layers, where the command and the user
    /// are looked up.
    pub view: PathBuf,
}

/// The image a container runs, as recorded in its spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    pub reference: String,
    pub id: String,
    /// Layer diff ids, bottom first.
    pub layers: Vec<String>,
    /// The layers' host directories, top first.
    pub lowerdirs: Vec<PathBuf>,
}

/// Who the command runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// A validated container spec: everything the shim needs to build the
/// container. Stored as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// Absolute host path of the read-only lower layer (`--rootfs`); empty
    /// for a container made from an image.
    pub rootfs: PathBuf,
    /// The image whose layers are the lower layers, if any.
    #[serde(default)]
    pub image: Option<ImageRef>,
    /// argv as given.
    pub command: Vec<String>,
    /// Path of argv\[0\] as found at create time in the image or rootfs
    /// (argv\[0\] as given when a mount may provide it). Informational:
    /// the init looks the command up again inside the container, after the
    /// mounts, as Docker does.
    pub executable: String,
    /// Final environment (PATH, HOSTNAME and HOME added when missing).
    pub env: Vec<String>,
    pub working_dir: String,
    /// The user as given ("" when none).
    pub user_spec: String,
    pub user: User,
    /// The user (and HOME) is resolved at start inside the container
    /// ([`resolve_user_in_container`]), because `/etc/passwd` or `/etc/group`
    /// may come from a mount; `user` is then only the image's guess.
    #[serde(default)]
    pub user_at_start: bool,
    pub hostname: String,
    pub auto_remove: bool,
    pub log: LogConfig,
    /// cgroup limits (changed later by `update`).
    #[serde(default)]
    pub resources: Limits,
    #[serde(default)]
    pub restart: RestartSpec,
    /// The supervisor it joined, if any.
    #[serde(default)]
    pub supervisor: Option<SupervisorName>,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// Network attachments (leased at create; empty: only `lo`).
    #[serde(default)]
    pub networks: Vec<NetAttach>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortMap>,
    /// Capabilities, no_new_privs, privileged.
    #[serde(default)]
    pub security: crate::security::SecuritySpec,
    /// Volumes, bind mounts and tmpfs mounts, in mount order.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub read_only: bool,
    /// The user namespace's id maps; `None`: the host's user namespace.
    #[serde(default)]
    pub userns: Option<crate::userns::IdMap>,
    /// The image's labels overridden by the request's (Docker's rule).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

impl ContainerSpec {
    /// The overlay lower dirs of the root filesystem, top first.
    pub fn lowerdirs(&self) -> Vec<PathBuf> {
        match &self.image {
            Some(img) => img.lowerdirs.clone(),
            None => vec![self.rootfs.clone()],
        }
    }
}

/// The options of an overlay mount of `lowers` (top first) with, if given,
/// an upper and a work dir. Refused when longer than the page the kernel
/// copies (it would cut the string silently): about 38 image layers at the
/// default state dir.
pub fn overlay_options(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
) -> Result<String, String> {
    let lowerdir = lowers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let opts = match upper_work {
        Some((upper, work)) => format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        ),
        None => format!("lowerdir={lowerdir}"),
    };
    if opts.len() >= 4096 {
        return Err(format!(
            "the overlay mount options of {} layers exceed a page ({} bytes)",
            lowers.len(),
            opts.len()
        ));
    }
    Ok(opts)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// A root filesystem: busybox as `sh` in `/bin` (and `/usr/bin`, a
    /// symlink to it), a non-executable `/bin/data`, users `root` and `app`
    /// (1000:1001), groups `root` and `staff` (50).
    pub(crate) fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        std::fs::create_dir_all(r.join("bin")).expect("mkdir");
        std::fs::create_dir_all(r.join("usr")).expect("mkdir");
        std::fs::create_dir_all(r.join("etc")).expect("mkdir");
        std::fs::write(r.join("bin/busybox"), b"x").expect("write");
        std::fs::set_permissions(
            r.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        symlink("busybox", r.join("bin/sh")).expect("ln");
        symlink("/bin", r.join("usr/bin")).expect("ln");
        std::fs::write(r.join("bin/data"), b"x").expect("write");
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
        )
        .expect("write");
        std::fs::write(r.join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("write");
        d
    }

    pub(crate) fn req(root: &Path, cmd: &[&str]) -> SpecRequest {
        SpecRequest {
            rootfs: root.display().to_string(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The field an invalid request names.
    pub(crate) fn invalid_field<T: std::fmt::Debug>(r: Result<T, Error>) -> &'static str {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "db", "web-1", "0abc", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Bad_Name",
            "UP",
            "a.b",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
