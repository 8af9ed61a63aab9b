//! Settings of the runtime, as rsupd's flags and defaults give them.

use std::path::PathBuf;
use std::time::Duration;

use crate::imagestore::limits::UnpackLimits;
use crate::netstack::NetConfig;
use crate::spec::LogConfig;
use crate::userns::UsernsConfig;

/// Settings of a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Root of all state (`/var/lib/rsup`).
    pub state_dir: PathBuf,
    /// Binary started as the shim and the exec helper: `rsup-shim`, held
    /// open by the daemon (`/proc/self/fd/N`), or rsupd's own binary
    /// (`/proc/self/exe`).
    pub shim_exe: PathBuf,
    /// Log rotation for containers that do not set their own.
    pub log: LogConfig,
    /// Name of the cgroup subtree under rsupd's own cgroup (`rsup`); `None`
    /// runs containers without cgroups.
    pub cgroup_subtree: Option<String>,
    /// How often usage is sampled (CPU %, OOM kills, metrics).
    pub stats_interval: Duration,
    pub net: NetConfig,
    /// The remap user and its subordinate id files (`--userns remap`).
    pub userns: UsernsConfig,
    /// The pids limit of a container created without `pids_limit`
    /// (`None`: unlimited). rsupd's `--default-pids-limit`.
    pub default_pids_limit: Option<u64>,
    /// Limits of image imports: the per-image maximum and the state
    /// device's free-space reserve.
    pub image_limits: UnpackLimits,
    /// How pulls and pushes reach registries.
    pub registries: RegistryConfig,
}

/// How rsupd reaches registries (`--insecure-registry`, `--registry-ca`,
/// `--registry-certs-dir`).
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Hosts (`host[:port]`) that may be reached over plain HTTP when HTTPS
    /// fails, besides the loopback ones (`localhost`, 127.0.0.0/8, `[::1]`),
    /// which always may, as in Docker.
    pub insecure: Vec<String>,
    /// A CA certificate (PEM) to trust for one host, besides the system's
    /// roots: `(host[:port], file)`.
    pub ca_files: Vec<(String, PathBuf)>,
    /// A certs.d-style directory: `DIR/<host[:port]>/*.crt` are CAs trusted
    /// for that host (Docker's `/etc/docker/certs.d`).
    pub certs_dir: Option<PathBuf>,
}
