//! Container specs: what a user asks for, validated once into what rsup runs.
//!
//! [`SpecRequest`] is the raw request (as it comes over gRPC); [`ContainerSpec`]
//! is the validated, resolved form stored in `config.json`. Validation checks
//! everything that can be checked without starting a process, so that bad
//! input never leaves a half-created container: the name is a DNS label, the
//! rootfs is a directory, the command exists in it (looked up in PATH inside the
//! rootfs, following symlinks without leaving the rootfs), the user resolves
//! through the rootfs' `/etc/passwd` and `/etc/group`.
//!
//! Lookups in the image or rootfs go through [`crate::paths`] (rsupd reads them
//! as root in its own namespace: no symlink in them may lead out). They are
//! decided at create only where they cannot be wrong: when a `-v` or `--tmpfs`
//! target lands on or above a path a lookup looked at, a mount may provide (or
//! hide) the command or `/etc/passwd`, so the command is left to the init
//! (which always looks it up inside the container after the mounts, as runc
//! does: a missing command then fails the start with exit code 127) and the
//! user is resolved there too ([`ContainerSpec::user_at_start`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Limits;
use crate::names::{ContainerName, SupervisorName, quote};
use crate::supervise::{BackoffConfig, RestartPolicy};
use crate::{Error, bounds};
use std::time::Duration;

pub use crate::logs::LogConfig;

/// PATH used when the spec's env has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    pub net: crate::network::NetRequest,
    pub security: crate::security::SecurityRequest,
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
    pub config: crate::image::ImageConfig,
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

/// A health check as requested (Docker's --health-* flags).
#[derive(Debug, Clone, Default)]
pub struct HealthRequest {
    /// Shell command run with `/bin/sh -c` inside the container ("" = none).
    pub cmd: String,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
    /// Kill the container when it turns unhealthy, so that its restart
    /// policy restarts it (a liveness probe).
    pub restart_on_unhealthy: bool,
}

/// Interval and timeout of a health check that does not set them (Docker's).
const HEALTH_DEFAULT_PERIOD: Duration = Duration::from_secs(30);

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// argv run inside the container.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    pub restart_on_unhealthy: bool,
}

impl HealthRequest {
    fn validate(&self, restart: &RestartSpec) -> Result<Option<HealthSpec>, Error> {
        if self.cmd.is_empty() {
            if self.restart_on_unhealthy {
                return Err(invalid(
                    "health.restart_on_unhealthy",
                    "needs a health command",
                ));
            }
            return Ok(None);
        }
        let period = |d: Option<Duration>, field: &'static str| {
            bounds::duration(
                field,
                d.unwrap_or(HEALTH_DEFAULT_PERIOD),
                &bounds::HEALTH_PERIOD,
            )
        };
        let retries = bounds::count(
            "health.retries",
            self.retries.map_or(3, u64::from),
            &bounds::HEALTH_RETRIES,
            "retries",
        )?;
        let spec = HealthSpec {
            test: vec!["/bin/sh".into(), "-c".into(), self.cmd.clone()],
            interval: period(self.interval, "health.interval_ms")?,
            timeout: period(self.timeout, "health.timeout_ms")?,
            // In range: at most 1000.
            retries: u32::try_from(retries).unwrap_or(u32::MAX),
            start_period: bounds::duration(
                "health.start_period_ms",
                self.start_period.unwrap_or_default(),
                &bounds::HEALTH_START_PERIOD,
            )?,
            restart_on_unhealthy: self.restart_on_unhealthy,
        };
        if spec.restart_on_unhealthy && restart.policy.is_no() {
            return Err(invalid(
                "health.restart_on_unhealthy",
                "needs a restart policy (on-failure or always) to restart the killed container",
            ));
        }
        Ok(Some(spec))
    }
}

/// Restart policy and backoff as requested (unset fields: defaults).
#[derive(Debug, Clone, Default)]
pub struct RestartRequest {
    /// "no", "on-failure[:N]", "always", "unless-stopped" ("" = no).
    pub policy: String,
    pub delay: Option<Duration>,
    pub max_delay: Option<Duration>,
    pub reset_after: Option<Duration>,
    pub jitter: Option<f64>,
}

/// The validated restart settings of a container.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub backoff: BackoffConfig,
}

impl RestartRequest {
    pub fn validate(&self) -> Result<RestartSpec, Error> {
        let policy: RestartPolicy = self
            .policy
            .parse()
            .map_err(|e| invalid("restart_policy", e))?;
        let d = BackoffConfig::default();
        let mut backoff = BackoffConfig {
            initial: bounds::duration(
                "restart.delay_ms",
                self.delay.unwrap_or(d.initial),
                &bounds::RESTART_DELAY,
            )?,
            max: bounds::duration(
                "restart.max_delay_ms",
                self.max_delay.unwrap_or(d.max),
                &bounds::RESTART_DELAY,
            )?,
            reset_after: bounds::duration(
                "restart.reset_after_ms",
                self.reset_after.unwrap_or(d.reset_after),
                &bounds::RESTART_RESET_AFTER,
            )?,
            jitter: bounds::fraction(
                "restart.jitter",
                self.jitter.unwrap_or(d.jitter),
                &bounds::RESTART_JITTER,
            )?,
        };
        // A delay above the default cap raises the cap with it.
        if self.max_delay.is_none() && backoff.initial > backoff.max {
            backoff.max = backoff.initial;
        }
        backoff
            .validate()
            .map_err(|(field, reason)| invalid(field, reason))?;
        Ok(RestartSpec { policy, backoff })
    }
}

/// Resource limits as requested: `None` leaves a field as it is (unlimited
/// at create).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResourcesRequest {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Docker's lowest memory limit.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// CPUs of this host, the upper bound of `cpus`.
pub fn host_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl ResourcesRequest {
    /// Applies the set fields over `base` and validates the result.
    pub fn merge(&self, base: Limits) -> Result<Limits, Error> {
        let mut l = base;
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(invalid(
                    "resources.memory_bytes",
                    format!(
                        "{m} is below the minimum of 6 MiB ({MIN_MEMORY} bytes); give bytes or a size such as 256m or 1g"
                    ),
                ));
            }
            l.memory = Some(m as u64);
        }
        if let Some(s) = self.memory_swap {
            l.memory_swap = match s {
                -1 => Some(u64::MAX),
                s if s < 0 => {
                    return Err(invalid(
                        "resources.memory_swap_bytes",
                        format!(
                            "{s} is negative; give -1 for unlimited swap or bytes of memory+swap"
                        ),
                    ));
                }
                s => Some(s as u64),
            };
        }
        if let (Some(swap), mem) = (l.memory_swap, l.memory)
            && swap != u64::MAX
        {
            match mem {
                None => {
                    return Err(invalid(
                        "resources.memory_swap_bytes",
                        "a memory+swap limit needs a memory limit too",
                    ));
                }
                Some(m) if swap < m => {
                    return Err(invalid(
                        "resources.memory_swap_bytes",
                        format!(
                            "{swap} is below the memory limit {m}: memory-swap is memory plus swap"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(c) = self.cpus {
            let max = host_cpus();
            if !(c > 0.0 && c <= max as f64) {
                return Err(invalid(
                    "resources.cpus",
                    format!(
                        "{c} is out of range: give a number of CPUs above 0 and at most {max} (this host's CPUs), e.g. 0.5"
                    ),
                ));
            }
            l.cpus = Some(c);
        }
        if let Some(sh) = self.cpu_shares {
            l.cpu_shares = match sh {
                0 => None,
                2..=262_144 => Some(sh as u64),
                _ => {
                    return Err(invalid(
                        "resources.cpu_shares",
                        format!("{sh} is out of range: give 2-262144 (1024 is the default weight)"),
                    ));
                }
            };
        }
        if let Some(p) = self.pids_limit {
            l.pids = match p {
                0 => None,
                p if p < 0 => {
                    return Err(invalid(
                        "resources.pids_limit",
                        format!("{p} is negative; give a number of processes, or 0 for no limit"),
                    ));
                }
                p => Some(bounds::count(
                    "resources.pids_limit",
                    p as u64,
                    &bounds::PIDS_LIMIT,
                    "processes",
                )?),
            };
        }
        Ok(l)
    }
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
    pub networks: Vec<crate::network::NetAttach>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<crate::ports::PortMap>,
    /// Capabilities, no_new_privs, privileged.
    #[serde(default)]
    pub security: crate::security::SecuritySpec,
    /// Volumes, bind mounts and tmpfs mounts, in mount order.
    #[serde(default)]
    pub mounts: Vec<crate::volumes::MountSpec>,
    #[serde(default)]
    pub read_only: bool,
    /// The user namespace's id maps; `None`: the host's user namespace.
    #[serde(default)]
    pub userns: Option<crate::userns::IdMap>,
}

pub use crate::names::is_dns_label;

fn is_hostname(s: &str) -> bool {
    s.len() <= 64
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
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

    /// Validates a request with a `--rootfs` (see [`Self::validate_with_image`]).
    pub fn validate(
        req: SpecRequest,
        default_name: &str,
        default_log: LogConfig,
    ) -> Result<ContainerSpec, Error> {
        Self::validate_with_image(req, default_name, default_log, None)
    }

    /// Validates `req`; `default_name` is used when the request has none and
    /// `default_log` fills zero log settings. `image` is the resolved image
    /// when the request names one: its config gives the defaults of the
    /// command (Entrypoint + Cmd), env, working dir and user, which the
    /// request's fields override as Docker's flags do.
    pub fn validate_with_image(
        mut req: SpecRequest,
        default_name: &str,
        default_log: LogConfig,
        image: Option<ImageSource>,
    ) -> Result<ContainerSpec, Error> {
        if let Some(img) = &image {
            if !req.rootfs.is_empty() {
                return Err(invalid(
                    "rootfs",
                    "give either a root filesystem directory or an image, not both",
                ));
            }
            req.apply_image_defaults(&img.config);
        } else if let Some(e) = req.entrypoint.take()
            && !e.is_empty()
        {
            req.command.insert(0, e);
        }
        let name = match req.name {
            Some(n) => n,
            None => ContainerName::parse(default_name)?,
        }
        .into_string();
        let hostname = if req.hostname.is_empty() {
            name.clone()
        } else {
            req.hostname
        };
        if !is_hostname(&hostname) {
            return Err(invalid(
                "hostname",
                format!("{} is not a valid hostname", quote(&hostname)),
            ));
        }
        let (rootfs, lookup_root, root_label) = match &image {
            Some(img) => (
                PathBuf::new(),
                img.view.clone(),
                format!("image {}", img.reference),
            ),
            None => {
                let rootfs = check_rootfs(&req.rootfs)?;
                let label = format!("the rootfs {}", rootfs.display());
                (rootfs.clone(), rootfs, label)
            }
        };

        for kv in &req.env {
            match kv.split_once('=') {
                Some((k, _)) if !k.is_empty() && !k.contains('\0') => {}
                _ => return Err(invalid("env", format!("{} is not KEY=VALUE", quote(kv)))),
            }
        }
        let working_dir = if req.working_dir.is_empty() {
            "/".to_string()
        } else {
            req.working_dir
        };
        if !working_dir.starts_with('/') || working_dir.contains('\0') {
            return Err(invalid(
                "working_dir",
                format!("{} is not an absolute path", quote(&working_dir)),
            ));
        }

        // The image view and a --rootfs are read as root in rsupd's own
        // namespace: every lookup goes through the path module, so no
        // symlink in them leads out.
        let lookup = crate::paths::RootDir::open(&lookup_root)
            .map_err(|e| Error::FailedPrecondition(format!("{root_label}: {}", e)))?;
        let landings = MountLandings::of(&lookup, &req.volumes, &req.tmpfs);
        let user_at_start = landings.affects_any(&lookup, &["/etc/passwd", "/etc/group"]);
        let (user, home) = if user_at_start {
            // /etc/passwd or /etc/group may come from a mount: the init
            // resolves the user inside the container at start. Until then
            // the image's answer, if it has one, stands in.
            resolve_user(&lookup, &req.user).unwrap_or((User { uid: 0, gid: 0 }, String::new()))
        } else {
            resolve_user(&lookup, &req.user)?
        };

        if req.command.is_empty() || req.command[0].is_empty() {
            return Err(invalid(
                "command",
                if image.is_some() {
                    "a command is required: the image has no Entrypoint or Cmd"
                } else {
                    "a command is required"
                },
            ));
        }
        if req.command.iter().any(|a| a.contains('\0')) {
            return Err(invalid("command", "arguments must not contain NUL bytes"));
        }
        let mut env = req.env;
        let path_var = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let executable = resolve_command(
            &lookup,
            &root_label,
            &req.command[0],
            &path_var,
            &working_dir,
            &landings,
        )?;
        let has = |env: &[String], k: &str| {
            env.iter()
                .any(|kv| kv.split_once('=').is_some_and(|(key, _)| key == k))
        };
        if !has(&env, "PATH") {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        if !has(&env, "HOSTNAME") {
            env.push(format!("HOSTNAME={hostname}"));
        }
        if !has(&env, "HOME") && !user_at_start {
            env.push(format!("HOME={home}"));
        }
        let log = LogConfig {
            max_size: match req.log_max_size {
                0 => default_log.max_size,
                n => bounds::count("log.max_size_bytes", n, &bounds::LOG_MAX_SIZE, "bytes")?,
            },
            max_files: match req.log_max_files {
                0 => default_log.max_files,
                n => {
                    bounds::count("log.max_files", n.into(), &bounds::LOG_MAX_FILES, "files")?;
                    n
                }
            },
        };
        let resources = req.resources.merge(Limits::default())?;
        let restart = req.restart.validate()?;
        let health = req.health.validate(&restart)?;
        let security = req.security.validate()?;
        if req.auto_remove && !restart.policy.is_no() {
            return Err(invalid(
                "restart_policy",
                "--rm cannot be combined with a restart policy",
            ));
        }
        Ok(ContainerSpec {
            name,
            rootfs,
            image: image.map(|img| ImageRef {
                reference: img.reference,
                id: img.id,
                layers: img.layers,
                lowerdirs: img.lowerdirs,
            }),
            command: req.command,
            executable,
            env,
            working_dir,
            user_spec: req.user,
            user,
            user_at_start,
            hostname,
            auto_remove: req.auto_remove,
            log,
            resources,
            restart,
            supervisor: req.supervisor,
            health,
            networks: Vec::new(),
            ports: Vec::new(),
            security,
            mounts: Vec::new(),
            read_only: req.read_only,
            userns: None,
        })
    }
}

impl SpecRequest {
    /// Fills what the request leaves unset from an image's config, as
    /// Docker does: the command is Entrypoint + Cmd, where `--entrypoint`
    /// replaces the Entrypoint (and drops the image's Cmd) and a command
    /// given replaces the Cmd; the image's env comes first and the
    /// request's variables override it; working dir and user apply when the
    /// request has none.
    fn apply_image_defaults(&mut self, config: &crate::image::ImageConfig) {
        let entrypoint_overridden = self.entrypoint.is_some();
        let entrypoint = match self.entrypoint.take() {
            Some(e) if e.is_empty() => Vec::new(),
            Some(e) => vec![e],
            None => config.entrypoint.clone(),
        };
        let cmd = if !self.command.is_empty() {
            std::mem::take(&mut self.command)
        } else if entrypoint_overridden {
            Vec::new()
        } else {
            config.cmd.clone()
        };
        self.command = entrypoint.into_iter().chain(cmd).collect();
        let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
        let mut env: Vec<String> = config
            .env
            .iter()
            .filter(|kv| !self.env.iter().any(|o| key(o) == key(kv)))
            .cloned()
            .collect();
        env.append(&mut self.env);
        self.env = env;
        if self.working_dir.is_empty() {
            self.working_dir = config.working_dir.clone();
        }
        if self.user.is_empty() {
            self.user = config.user.clone();
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

/// Checks a `--rootfs` directory and returns its canonical path.
fn check_rootfs(given: &str) -> Result<PathBuf, Error> {
    if given.is_empty() {
        return Err(invalid(
            "rootfs",
            "a root filesystem is required: an image or a directory (--rootfs)",
        ));
    }
    let rootfs = PathBuf::from(given);
    if !rootfs.is_absolute() {
        return Err(invalid(
            "rootfs",
            format!("{} is not an absolute path", quote(given)),
        ));
    }
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::FailedPrecondition(format!(
                "rootfs {} is not a directory",
                quote(given)
            )));
        }
        Err(e) => {
            return Err(Error::FailedPrecondition(format!(
                "rootfs {}: {e}",
                quote(given)
            )));
        }
    }
    rootfs
        .canonicalize()
        .map_err(|e| Error::FailedPrecondition(format!("rootfs {}: {e}", quote(given))))
}

/// Largest `/etc/passwd` or `/etc/group` read (a bigger one is ignored).
const MAX_DB_FILE: usize = 4 << 20;

/// Where the mounts of a request land in the image or rootfs, to tell which
/// lookups at create a mount could change. A lookup is decided at create
/// only when no mount lands on (or above) any path it looked at; otherwise
/// it is left to the init, which does it inside the container after the
/// mounts (Docker's semantics).
struct MountLandings {
    /// Each mount's target with the symlinks of the image resolved, as the
    /// init will mount it; `None` when that cannot be told (a target through
    /// a symlink loop, or reached through another mount).
    landings: Option<Vec<String>>,
}

/// A `-v` or `--tmpfs` target, normalised; `None` if it is not a plain
/// absolute path (such a spec is refused later anyway).
fn normal_target(t: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in t.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return None;
        }
        parts.push(c);
    }
    (t.starts_with('/') && !parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

impl MountLandings {
    fn of(root: &crate::paths::RootDir, volumes: &[String], tmpfs: &[String]) -> Self {
        use crate::paths::{WalkEnd, is_ancestor_or_self};
        let targets = volumes
            .iter()
            .map(|v| v.split(':').nth(1).unwrap_or(""))
            .chain(
                tmpfs
                    .iter()
                    .map(|t| t.split_once(':').map_or(t.as_str(), |(p, _)| p)),
            );
        let mut walks = Vec::new();
        for t in targets {
            let Some(t) = normal_target(t) else {
                return MountLandings { landings: None };
            };
            let w = root.walk(&t);
            let landing = match &w.end {
                WalkEnd::Found(p) => p.clone(),
                WalkEnd::Missing { full, .. } => full.clone(),
                WalkEnd::Unknown(_) => return MountLandings { landings: None },
            };
            walks.push((w, landing));
        }
        // A target reached through another mount lands where that mount's
        // content says: unknown here.
        for (i, (w, _)) in walks.iter().enumerate() {
            for (j, (_, l)) in walks.iter().enumerate() {
                if i != j && w.visited.iter().any(|v| is_ancestor_or_self(l, v)) {
                    return MountLandings { landings: None };
                }
            }
        }
        MountLandings {
            landings: Some(walks.into_iter().map(|(_, l)| l).collect()),
        }
    }

    /// True if a mount could change where `walk` leads.
    fn affects(&self, walk: &crate::paths::Walk) -> bool {
        let Some(landings) = &self.landings else {
            return true;
        };
        if landings.is_empty() {
            return false;
        }
        matches!(walk.end, crate::paths::WalkEnd::Unknown(_))
            || landings.iter().any(|l| {
                walk.visited
                    .iter()
                    .any(|v| crate::paths::is_ancestor_or_self(l, v))
            })
    }

    /// True if a mount could change where any of `paths` leads (no walk
    /// at all when there is no mount).
    fn affects_any(&self, root: &crate::paths::RootDir, paths: &[&str]) -> bool {
        if matches!(&self.landings, Some(l) if l.is_empty()) {
            return false;
        }
        paths.iter().any(|p| self.affects(&root.walk(p)))
    }
}

/// Finds `cmd` inside the rootfs: a path with a '/' is taken as is (relative
/// to the working directory), a bare name is searched in `path_var`. A
/// command that is not there is refused only when no mount could provide
/// it; otherwise it is returned as given and the init looks it up at start.
fn resolve_command(
    root: &crate::paths::RootDir,
    root_label: &str,
    cmd: &str,
    path_var: &str,
    working_dir: &str,
    landings: &MountLandings,
) -> Result<String, Error> {
    let candidates: Vec<String> = if cmd.contains('/') {
        if cmd.starts_with('/') {
            vec![cmd.to_string()]
        } else {
            vec![format!("{}/{cmd}", working_dir.trim_end_matches('/'))]
        }
    } else {
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
            .collect()
    };
    let mut deferred = false;
    for c in &candidates {
        let w = root.walk(c);
        if let crate::paths::WalkEnd::Found(p) = &w.end
            && root.stat(p).is_ok_and(|st| {
                st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0
            })
        {
            return Ok(c.clone());
        }
        deferred = deferred || landings.affects(&w);
    }
    if deferred {
        return Ok(cmd.to_string());
    }
    Err(invalid(
        "command",
        format!(
            "{}: executable file not found in {root_label} (PATH {})",
            quote(cmd),
            quote(path_var)
        ),
    ))
}

/// The lines of a passwd- or group-style file under `root`, split into
/// fields; empty when it is missing or not a readable regular file.
fn read_db(root: &crate::paths::RootDir, file: &str) -> Vec<Vec<String>> {
    let Ok(bytes) = root.read_file(file, MAX_DB_FILE) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| l.split(':').map(String::from).collect())
        .collect()
}

/// Looks `name` up in a passwd- or group-style file: returns the fields of
/// the first line whose first field is `name`.
fn lookup_db(root: &crate::paths::RootDir, file: &str, name: &str) -> Option<Vec<String>> {
    read_db(root, file)
        .into_iter()
        .find(|f| f.first().is_some_and(|n| n == name))
}

fn lookup_uid(root: &crate::paths::RootDir, uid: u32) -> Option<Vec<String>> {
    read_db(root, "/etc/passwd")
        .into_iter()
        .find(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
}

/// Resolves a user inside the container, from its own `/etc/passwd` and
/// `/etc/group` (for the init, after `pivot_root`, and for exec, after
/// joining the container's mount namespace): the user and its HOME.
pub fn resolve_user_in_container(spec: &str) -> Result<(User, String), Error> {
    let root = crate::paths::RootDir::open(Path::new("/"))
        .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    resolve_user(&root, spec)
}

/// Resolves "", "uid", "uid:gid", "name" or "name:group" against the rootfs;
/// returns the user and its home directory. Like Docker, a numeric uid not in
/// /etc/passwd runs with gid 0 and HOME=/.
fn resolve_user(root: &crate::paths::RootDir, spec: &str) -> Result<(User, String), Error> {
    if spec.is_empty() {
        let home = lookup_uid(root, 0)
            .and_then(|f| f.get(5).cloned())
            .unwrap_or_else(|| "/root".into());
        return Ok((User { uid: 0, gid: 0 }, home));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(invalid(
            "user",
            format!("{} is not USER[:GROUP]", quote(spec)),
        ));
    }
    let entry = match u.parse::<u32>() {
        Ok(uid) => lookup_uid(root, uid),
        Err(_) => Some(lookup_db(root, "/etc/passwd", u).ok_or_else(|| {
            invalid(
                "user",
                format!("user {} not found in the rootfs' /etc/passwd", quote(u)),
            )
        })?),
    };
    let uid = match u.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f.get(2))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                invalid(
                    "user",
                    format!("malformed /etc/passwd entry for {}", quote(u)),
                )
            })?,
    };
    let primary_gid = entry
        .as_ref()
        .and_then(|f| f.get(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_db(root, "/etc/group", g)
                .and_then(|f| f.get(2).and_then(|v| v.parse().ok()))
                .ok_or_else(|| {
                    invalid(
                        "user",
                        format!("group {} not found in the rootfs' /etc/group", quote(g)),
                    )
                })?,
        },
    };
    let home = entry
        .and_then(|f| f.get(5).cloned())
        .unwrap_or_else(|| "/".into());
    Ok((User { uid, gid }, home))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn rootfs() -> tempfile::TempDir {
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

    fn req(root: &Path, cmd: &[&str]) -> SpecRequest {
        SpecRequest {
            rootfs: root.display().to_string(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The field an invalid request names.
    fn invalid_field<T: std::fmt::Debug>(r: Result<T, Error>) -> &'static str {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn restart_durations_and_jitter_have_ranges() {
        let ms = Duration::from_millis;
        let r = RestartRequest::default;
        let ok = |req: RestartRequest| req.validate().expect("in range").backoff;
        // The largest values in range are taken as given.
        let b = ok(RestartRequest {
            delay: Some(bounds::DAY),
            max_delay: Some(bounds::DAY),
            reset_after: Some(ms(7 * 24 * 3600 * 1000)),
            jitter: Some(1.0),
            ..r()
        });
        assert_eq!(
            (b.initial, b.max, b.jitter),
            (bounds::DAY, bounds::DAY, 1.0)
        );
        // A delay of 0 is fine (an immediate restart).
        assert_eq!(
            ok(RestartRequest {
                delay: Some(ms(0)),
                ..r()
            })
            .initial,
            ms(0)
        );
        let field = |req: RestartRequest| invalid_field(req.validate());
        for huge in [bounds::DAY + ms(1), ms(u64::MAX)] {
            assert_eq!(
                field(RestartRequest {
                    delay: Some(huge),
                    ..r()
                }),
                "restart.delay_ms"
            );
            assert_eq!(
                field(RestartRequest {
                    max_delay: Some(huge),
                    ..r()
                }),
                "restart.max_delay_ms"
            );
        }
        assert_eq!(
            field(RestartRequest {
                reset_after: Some(ms(7 * 24 * 3600 * 1000 + 1)),
                ..r()
            }),
            "restart.reset_after_ms"
        );
        for j in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            assert_eq!(
                field(RestartRequest {
                    jitter: Some(j),
                    ..r()
                }),
                "restart.jitter"
            );
        }
        assert_eq!(
            field(RestartRequest {
                delay: Some(ms(2000)),
                max_delay: Some(ms(1000)),
                ..r()
            }),
            "restart.max_delay_ms"
        );
    }

    #[test]
    fn health_durations_and_retries_have_ranges() {
        let ms = Duration::from_millis;
        let restart = RestartSpec::default();
        let h = || HealthRequest {
            cmd: "true".into(),
            ..Default::default()
        };
        let ok = |req: HealthRequest| {
            req.validate(&restart)
                .expect("in range")
                .expect("a health check")
        };
        let spec = ok(HealthRequest {
            interval: Some(ms(1)),
            timeout: Some(bounds::DAY),
            start_period: Some(bounds::DAY),
            retries: Some(1000),
            ..h()
        });
        assert_eq!(
            (spec.interval, spec.timeout, spec.retries),
            (ms(1), bounds::DAY, 1000)
        );
        assert_eq!(ok(h()).interval, Duration::from_secs(30));
        assert_eq!(
            ok(HealthRequest {
                start_period: Some(ms(0)),
                ..h()
            })
            .start_period,
            ms(0)
        );
        let field = |req: HealthRequest| invalid_field(req.validate(&restart));
        for bad in [ms(0), bounds::DAY + ms(1), ms(u64::MAX)] {
            assert_eq!(
                field(HealthRequest {
                    interval: Some(bad),
                    ..h()
                }),
                "health.interval_ms"
            );
            assert_eq!(
                field(HealthRequest {
                    timeout: Some(bad),
                    ..h()
                }),
                "health.timeout_ms"
            );
        }
        assert_eq!(
            field(HealthRequest {
                start_period: Some(ms(u64::MAX)),
                ..h()
            }),
            "health.start_period_ms"
        );
        for bad in [0, 1001, u32::MAX] {
            assert_eq!(
                field(HealthRequest {
                    retries: Some(bad),
                    ..h()
                }),
                "health.retries"
            );
        }
    }

    #[test]
    fn log_options_have_ranges() {
        let root = rootfs();
        let default = LogConfig::default();
        let spec = |size: u64, files: u32| {
            let mut r = req(root.path(), &["sh"]);
            r.log_max_size = size;
            r.log_max_files = files;
            ContainerSpec::validate(r, "c", default)
        };
        // 0 is the daemon's default.
        assert_eq!(spec(0, 0).expect("defaults").log, default);
        let max = spec(1 << 40, 100).expect("largest").log;
        assert_eq!((max.max_size, max.max_files), (1 << 40, 100));
        assert_eq!(spec(1024, 1).expect("smallest").log.max_size, 1024);
        for size in [1, 1023, (1 << 40) + 1, u64::MAX] {
            assert_eq!(invalid_field(spec(size, 0)), "log.max_size_bytes", "{size}");
        }
        for files in [101, u32::MAX] {
            assert_eq!(invalid_field(spec(0, files)), "log.max_files", "{files}");
        }
    }

    #[test]
    fn pids_limit_has_the_kernels_range() {
        let l = |p: i64| {
            ResourcesRequest {
                pids_limit: Some(p),
                ..Default::default()
            }
            .merge(Limits::default())
        };
        assert_eq!(l(0).expect("unlimited").pids, None);
        assert_eq!(l(4_194_304).expect("largest").pids, Some(4_194_304));
        for bad in [-1, 4_194_305, i64::MAX] {
            assert_eq!(invalid_field(l(bad)), "resources.pids_limit", "{bad}");
        }
    }

    #[test]
    fn resources_are_validated_with_their_field() {
        let field = |r: ResourcesRequest| match r.merge(Limits::default()) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let r = ResourcesRequest::default;
        assert_eq!(
            field(ResourcesRequest {
                memory: Some(-1),
                ..r()
            }),
            "resources.memory_bytes"
        );
        assert_eq!(
            field(ResourcesRequest {
                memory: Some(1024),
                ..r()
            }),
            "resources.memory_bytes"
        );
        assert_eq!(
            field(ResourcesRequest {
                cpus: Some(0.0),
                ..r()
            }),
            "resources.cpus"
        );
        assert_eq!(
            field(ResourcesRequest {
                cpus: Some(f64::NAN),
                ..r()
            }),
            "resources.cpus"
        );
        assert_eq!(
            field(ResourcesRequest {
                cpus: Some(host_cpus() as f64 + 1.0),
                ..r()
            }),
            "resources.cpus"
        );
        assert_eq!(
            field(ResourcesRequest {
                pids_limit: Some(-5),
                ..r()
            }),
            "resources.pids_limit"
        );
        assert_eq!(
            field(ResourcesRequest {
                cpu_shares: Some(1),
                ..r()
            }),
            "resources.cpu_shares"
        );
        assert_eq!(
            field(ResourcesRequest {
                memory_swap: Some(1 << 30),
                ..r()
            }),
            "resources.memory_swap_bytes"
        );
        assert_eq!(
            field(ResourcesRequest {
                memory: Some(64 << 20),
                memory_swap: Some(32 << 20),
                ..r()
            }),
            "resources.memory_swap_bytes"
        );
        let ok = ResourcesRequest {
            memory: Some(32 << 20),
            cpus: Some(0.5),
            pids_limit: Some(64),
            memory_swap: Some(-1),
            ..r()
        }
        .merge(Limits::default())
        .expect("valid");
        assert_eq!(ok.memory, Some(32 << 20));
        assert_eq!(ok.memory_swap, Some(u64::MAX));
        // An update changes only what it sets.
        let up = ResourcesRequest {
            memory: Some(64 << 20),
            ..r()
        }
        .merge(ok)
        .expect("update");
        assert_eq!(
            (up.memory, up.cpus, up.pids),
            (Some(64 << 20), Some(0.5), Some(64))
        );
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

    #[test]
    fn command_is_found_through_symlinks_inside_root() {
        let r = rootfs();
        let s = ContainerSpec::validate(
            req(r.path(), &["sh", "-c", "true"]),
            "x",
            LogConfig::default(),
        )
        .expect("ok");
        assert_eq!(s.executable, "/usr/bin/sh");
        assert!(s.env.iter().any(|e| e == &format!("PATH={DEFAULT_PATH}")));
        assert!(s.env.iter().any(|e| e == "HOSTNAME=x"));
        assert!(
            ContainerSpec::validate(req(r.path(), &["/bin/sh"]), "x", LogConfig::default()).is_ok()
        );
        for bad in [
            &["nosuch"][..],
            &["/nonexistent"],
            &["/bin/data"],
            &[""],
            &[],
        ] {
            let e = ContainerSpec::validate(req(r.path(), bad), "x", LogConfig::default())
                .expect_err("bad");
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument {
                        field: "command",
                        ..
                    }
                ),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn lookups_never_leave_root() {
        let r = rootfs();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            outside.path().join("passwd"),
            "evil:x:4242:4242::/evil:/bin/sh\n",
        )
        .expect("write");
        let exe = outside.path().join("evil");
        std::fs::write(&exe, b"x").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        symlink("/../../../../etc", r.path().join("escape")).expect("ln");
        symlink(outside.path(), r.path().join("out")).expect("ln");
        let root = crate::paths::RootDir::open(r.path()).expect("open");
        assert_eq!(
            lookup_db(&root, "/escape/passwd", "app").and_then(|f| f.get(2).cloned()),
            Some("1000".to_string())
        );
        assert!(lookup_db(&root, "/out/passwd", "evil").is_none());
        let cmd = |c: &str| {
            resolve_command(
                &root,
                "rootfs",
                c,
                DEFAULT_PATH,
                "/",
                &MountLandings {
                    landings: Some(Vec::new()),
                },
            )
        };
        assert_eq!(cmd("/../../bin/sh").expect("found"), "/../../bin/sh");
        let evil = format!("/out/{}", "evil");
        assert!(
            cmd(&evil).is_err(),
            "a symlink out of the root is not followed"
        );
    }

    #[test]
    fn lookups_a_mount_could_change_are_left_to_the_init() {
        let r = rootfs();
        let root = crate::paths::RootDir::open(r.path()).expect("open");
        let landings = |vols: &[&str], tmpfs: &[&str]| {
            let v: Vec<String> = vols.iter().map(|s| s.to_string()).collect();
            let t: Vec<String> = tmpfs.iter().map(|s| s.to_string()).collect();
            MountLandings::of(&root, &v, &t)
        };
        let cmd =
            |c: &str, l: &MountLandings| resolve_command(&root, "rootfs", c, DEFAULT_PATH, "/", l);
        // No mount: a missing command is refused at create.
        assert!(cmd("redis-server", &landings(&[], &[])).is_err());
        // A mount on /usr may provide /usr/bin/redis-server (and, through
        // the image's usr/bin -> /bin symlink, /bin too): left to the init.
        let usr = landings(&["/usr:/usr:ro"], &[]);
        assert_eq!(cmd("redis-server", &usr).expect("deferred"), "redis-server");
        assert_eq!(
            cmd("/usr/bin/redis-server", &usr).expect("deferred"),
            "/usr/bin/redis-server"
        );
        // usr/bin is a symlink to /bin: a mount on /bin lands where
        // /usr/bin leads.
        let bin = landings(&[], &["/bin"]);
        assert!(cmd("/usr/bin/redis-server", &bin).is_ok());
        // A mount elsewhere changes nothing: still refused at create.
        let data = landings(&["data:/data", "/srv:/srv"], &["/tmp"]);
        assert!(cmd("redis-server", &data).is_err());
        assert!(cmd("/opt/x", &data).is_err());
        assert!(cmd("/data/x", &data).is_ok(), "under a mount");
        // A found command is found whatever the mounts.
        assert_eq!(cmd("sh", &data).expect("found"), "/usr/bin/sh");
        // Nested mounts: where the inner one lands depends on the outer
        // one's content: every lookup is left to the init.
        let nested = landings(&["a:/data", "b:/data/sub"], &[]);
        assert!(cmd("redis-server", &nested).is_ok());
        // Users: /etc/passwd from a mount is read at start.
        assert!(
            landings(&["/etc/passwd:/etc/passwd:ro"], &[]).affects_any(&root, &["/etc/passwd"])
        );
        assert!(landings(&[], &["/etc"]).affects_any(&root, &["/etc/group"]));
        assert!(!landings(&["/srv:/srv"], &[]).affects_any(&root, &["/etc/passwd", "/etc/group"]));
        let mut q = req(r.path(), &["sh"]);
        q.user = "nobody".into();
        assert!(ContainerSpec::validate(q.clone(), "x", LogConfig::default()).is_err());
        q.volumes = vec!["/etc/passwd:/etc/passwd:ro".into()];
        let s = ContainerSpec::validate(q, "x", LogConfig::default()).expect("deferred user");
        assert!(s.user_at_start);
        assert!(!s.env.iter().any(|e| e.starts_with("HOME=")));
        let mut q = req(r.path(), &["redis-server"]);
        q.volumes = vec!["/usr:/usr:ro".into()];
        let s = ContainerSpec::validate(q, "x", LogConfig::default()).expect("deferred command");
        assert_eq!(s.executable, "redis-server");
        assert!(!s.user_at_start);
    }

    #[test]
    fn users_resolve_from_rootfs() {
        let r = rootfs();
        let root = crate::paths::RootDir::open(r.path()).expect("open");
        let u = |s: &str| resolve_user(&root, s);
        assert_eq!(u("").expect("root").0, User { uid: 0, gid: 0 });
        assert_eq!(
            u("1000").expect("uid").0,
            User {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(u("app").expect("name").1, "/home/app");
        assert_eq!(
            u("1000:1000").expect("uid:gid").0,
            User {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(
            u("app:staff").expect("names").0,
            User { uid: 1000, gid: 50 }
        );
        assert_eq!(
            u("4242").expect("unknown uid").0,
            User { uid: 4242, gid: 0 }
        );
        for bad in ["nobody", "app:nogroup", ":1", "1:"] {
            assert!(u(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let r = rootfs();
        let field = |mut q: SpecRequest, f: &dyn Fn(&mut SpecRequest)| {
            f(&mut q);
            match ContainerSpec::validate(q, "x", LogConfig::default()) {
                Err(Error::InvalidArgument { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        let base = req(r.path(), &["sh"]);
        assert!(matches!(
            ContainerSpec::validate(base.clone(), "Bad_Name", LogConfig::default()),
            Err(Error::InvalidArgument { field: "name", .. })
        ));
        assert_eq!(
            field(base.clone(), &|q| q.env = vec!["NOEQUALS".into()]),
            "env"
        );
        assert_eq!(
            field(base.clone(), &|q| q.working_dir = "rel".into()),
            "working_dir"
        );
        assert_eq!(
            field(base.clone(), &|q| q.hostname = "bad_host".into()),
            "hostname"
        );
        assert_eq!(
            field(base.clone(), &|q| q.rootfs = "relative".into()),
            "rootfs"
        );
        let mut missing = base;
        missing.rootfs = "/nonexistent-rsup-rootfs".into();
        assert!(matches!(
            ContainerSpec::validate(missing, "x", LogConfig::default()),
            Err(Error::FailedPrecondition(_))
        ));
    }

    fn image_config() -> crate::image::ImageConfig {
        crate::image::ImageConfig {
            entrypoint: vec!["/bin/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/opt/bin:/bin".into(), "MODE=prod".into()],
            working_dir: "/srv".into(),
            user: "nobody".into(),
            ..Default::default()
        }
    }

    #[test]
    fn image_config_gives_the_defaults_that_flags_override() {
        let apply = |f: &dyn Fn(&mut SpecRequest)| {
            let mut q = SpecRequest::default();
            f(&mut q);
            q.apply_image_defaults(&image_config());
            q
        };
        let q = apply(&|_| {});
        assert_eq!(q.command, ["/bin/entry", "serve", "--port=80"]);
        assert_eq!(q.env, ["PATH=/opt/bin:/bin", "MODE=prod"]);
        assert_eq!(
            (q.working_dir.as_str(), q.user.as_str()),
            ("/srv", "nobody")
        );

        // A command replaces Cmd and keeps the Entrypoint.
        let q = apply(&|q| q.command = vec!["debug".into()]);
        assert_eq!(q.command, ["/bin/entry", "debug"]);
        // --entrypoint replaces the Entrypoint and drops Cmd.
        let q = apply(&|q| q.entrypoint = Some("/bin/sh".into()));
        assert_eq!(q.command, ["/bin/sh"]);
        let q = apply(&|q| {
            q.entrypoint = Some(String::new());
            q.command = vec!["ls".into(), "-l".into()];
        });
        assert_eq!(q.command, ["ls", "-l"]);
        // Variables given override the image's by key; the rest stay.
        let q = apply(&|q| {
            q.env = vec!["MODE=dev".into(), "X=1".into()];
            q.working_dir = "/".into();
            q.user = "0:0".into();
        });
        assert_eq!(q.env, ["PATH=/opt/bin:/bin", "MODE=dev", "X=1"]);
        assert_eq!((q.working_dir.as_str(), q.user.as_str()), ("/", "0:0"));
    }

    #[test]
    fn an_image_excludes_a_rootfs_and_looks_up_in_its_view() {
        let r = rootfs();
        let source = |view: &Path| ImageSource {
            reference: "app:1".into(),
            id: "sha256:00".into(),
            layers: vec!["sha256:11".into()],
            lowerdirs: vec![view.to_path_buf()],
            config: crate::image::ImageConfig {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
            view: view.to_path_buf(),
        };
        let q = SpecRequest::default();
        let s = ContainerSpec::validate_with_image(
            q.clone(),
            "x",
            LogConfig::default(),
            Some(source(r.path())),
        )
        .expect("valid");
        assert_eq!(s.executable, "/usr/bin/sh", "found in the view's PATH");
        assert_eq!(s.rootfs, PathBuf::new());
        assert_eq!(s.lowerdirs(), [r.path().to_path_buf()]);
        assert_eq!(s.image.as_ref().map(|i| i.id.as_str()), Some("sha256:00"));
        let mut both = q;
        both.rootfs = r.path().display().to_string();
        assert!(matches!(
            ContainerSpec::validate_with_image(
                both,
                "x",
                LogConfig::default(),
                Some(source(r.path()))
            ),
            Err(Error::InvalidArgument {
                field: "rootfs",
                ..
            })
        ));
        let mut no_cmd = source(r.path());
        no_cmd.config.cmd.clear();
        let e = ContainerSpec::validate_with_image(
            SpecRequest::default(),
            "x",
            LogConfig::default(),
            Some(no_cmd),
        )
        .expect_err("no command");
        assert!(e.to_string().contains("no Entrypoint or Cmd"), "{e}");
    }
}
