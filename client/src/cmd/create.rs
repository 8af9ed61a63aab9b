//! `rsupctl create`: record a container without starting it. Also home of the
//! container flags shared with `run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rsup_client::Client;
use rsup_client::proto::{ContainerSpec, HealthCheck, LogConfig, Resources, RestartPolicy};

use super::say;
use crate::{duration, size};

/// Create a container from an image (or a root filesystem) and print its id
#[derive(Args)]
pub struct Create {
    #[command(flatten)]
    spec: SpecArgs,
}

impl Create {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let pull = self.spec.pull;
        let container = create_pulling(client, self.spec.into_spec()?, pull).await?;
        say(container.id)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// When `create` and `run` pull the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// Creates the container, pulling its image first (`always`) or when the
/// daemon does not have it (`missing`, Docker's way: "Unable to find image
/// locally"); progress goes to stderr.
pub async fn create_pulling(
    client: &Client,
    spec: ContainerSpec,
    pull: PullPolicy,
) -> anyhow::Result<rsup_client::proto::Container> {
    let image = spec.image.clone();
    if image.is_empty() {
        return Ok(client.create(spec).await?);
    }
    if pull == PullPolicy::Always {
        super::registry::pull(client, &image, true, super::registry::Output::Stderr).await?;
    }
    match client.create(spec.clone()).await {
        Err(rsup_client::Error::Status(s))
            if pull == PullPolicy::Missing
                && s.code() == tonic::Code::NotFound
                && s.message().starts_with("no such image") =>
        {
            eprintln!("Unable to find image '{image}' locally");
            super::registry::pull(client, &image, true, super::registry::Output::Stderr).await?;
            Ok(client.create(spec).await?)
        }
        r => Ok(r?),
    }
}

/// What a container is made of: the flags of `create` and `run`.
#[derive(Args)]
pub struct SpecArgs {
    /// Name of the container ([a-zA-Z0-9][a-zA-Z0-9_.-]*; default: generated)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Host directory to use as the container's read-only root instead of
    /// an image (then every argument is the command)
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,

    /// Overwrite the image's entrypoint ("" clears it; the image's CMD is
    /// then dropped too)
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,

    /// Set metadata on the container (KEY=VALUE, or KEY for an empty value)
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,

    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Hostname inside the container (default: its name)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Working directory inside the container
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// User to run as: uid, uid:gid, name or name:group
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,

    /// Remove the container once it has exited
    #[arg(long)]
    pub rm: bool,

    /// Pull the image: "missing" (when it is not here, as docker run),
    /// "always", or "never"
    #[arg(long, value_enum, default_value = "missing", value_name = "WHEN")]
    pub pull: PullPolicy,

    /// Rotate the log file when it grows beyond this many bytes
    #[arg(long, value_name = "BYTES")]
    pub log_max_size: Option<u64>,

    /// Number of log files (current and rotated) to keep
    #[arg(long, value_name = "N")]
    pub log_max_files: Option<u32>,

    /// Supervisor to join (children start in the order they joined)
    #[arg(long, value_name = "NAME")]
    pub supervisor: Option<String>,

    #[command(flatten)]
    pub network: NetworkArgs,

    #[command(flatten)]
    pub resources: ResourceArgs,

    #[command(flatten)]
    pub restart: RestartArgs,

    #[command(flatten)]
    pub health: HealthArgs,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// IMAGE [COMMAND [ARG...]], or with --rootfs: COMMAND [ARG...]. The
    /// command and its arguments replace the image's CMD.
    #[arg(
        value_name = "IMAGE [COMMAND]",
        num_args = 0..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

impl SpecArgs {
    /// The request's spec. The rootfs is made absolute here, since the daemon
    /// does not share our working directory.
    pub fn into_spec(mut self) -> anyhow::Result<ContainerSpec> {
        let (rootfs, image) = match &self.rootfs {
            Some(dir) => {
                let rootfs = std::path::absolute(dir)
                    .with_context(|| format!("--rootfs {}", dir.display()))?;
                let Some(rootfs) = rootfs.to_str() else {
                    bail!("--rootfs {}: path is not valid UTF-8", rootfs.display());
                };
                if self.command.is_empty() && self.entrypoint.as_deref().unwrap_or("").is_empty() {
                    bail!("a command is required after --rootfs DIR");
                }
                (rootfs.to_owned(), String::new())
            }
            None => {
                if self.command.is_empty() {
                    bail!("an image is required (or --rootfs DIR and a command)");
                }
                // Flags go before the image: an unknown one lands here.
                if self.command[0].starts_with('-') {
                    bail!(
                        "unknown flag {:?} (flags go before the image; `rsupctl run --help`)",
                        self.command[0]
                    );
                }
                (String::new(), self.command.remove(0))
            }
        };
        let log =
            (self.log_max_size.is_some() || self.log_max_files.is_some()).then(|| LogConfig {
                max_size_bytes: self.log_max_size.unwrap_or(0),
                max_files: self.log_max_files.unwrap_or(0),
            });
        let (security_opt, seccomp_profile) = seccomp_profile(self.security.security_opt)?;
        Ok(ContainerSpec {
            name: self.name.unwrap_or_default(),
            rootfs,
            image,
            entrypoint: self.entrypoint,
            labels: self
                .label
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l.clone(), String::new()),
                })
                .collect(),
            command: self.command,
            env: environment(self.env, |key| std::env::var(key).ok())?,
            working_dir: self.workdir.unwrap_or_default(),
            user: self.user.unwrap_or_default(),
            hostname: self.hostname.unwrap_or_default(),
            auto_remove: self.rm,
            log,
            resources: self.resources.to_resources(),
            restart: self.restart.to_policy(),
            supervisor: self.supervisor.unwrap_or_default(),
            health: self.health.to_health_check(),
            networks: self.network.networks,
            network_aliases: self.network.aliases,
            ip: self.network.ip.unwrap_or_default(),
            ports: self.network.publish,
            cap_add: self.security.cap_add,
            cap_drop: self.security.cap_drop,
            privileged: self.security.privileged,
            security_opt,
            seccomp_profile,
            userns: self.security.userns.unwrap_or_default(),
            uid_map: self.security.uid_map,
            gid_map: self.security.gid_map,
            volumes: self.storage.volumes,
            tmpfs: self.storage.tmpfs,
            read_only: self.storage.read_only,
        })
    }
}

/// Takes `seccomp=FILE` out of the security options and reads the file:
/// the daemon may be on another machine, so the profile travels as text.
/// The last seccomp option wins, as in Docker.
fn seccomp_profile(options: Vec<String>) -> anyhow::Result<(Vec<String>, String)> {
    let mut kept = Vec::new();
    let mut profile = String::new();
    for opt in options {
        let value = opt
            .strip_prefix("seccomp=")
            .or_else(|| opt.strip_prefix("seccomp:"));
        match value {
            Some("default" | "unconfined") => {
                profile.clear();
                kept.retain(|o: &String| !o.starts_with("seccomp"));
                kept.push(opt);
            }
            Some(path) => {
                profile = std::fs::read_to_string(path)
                    .with_context(|| format!("--security-opt {opt}: reading the profile"))?;
                if profile.is_empty() {
                    bail!("--security-opt {opt}: the profile file is empty");
                }
                kept.retain(|o: &String| !o.starts_with("seccomp"));
            }
            None => kept.push(opt),
        }
    }
    Ok((kept, profile))
}

/// Networking, with Docker's flag names. Values go to the daemon as given:
/// it alone knows the networks, and judges aliases, addresses and ports.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct NetworkArgs {
    /// Network to join, repeatable (eth0, eth1, ... in this order; default:
    /// "default"; "none": only the loopback interface)
    #[arg(long = "network", visible_alias = "net", value_name = "NAME")]
    pub networks: Vec<String>,

    /// Extra DNS name of the container on its networks, repeatable
    #[arg(long = "network-alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,

    /// Fixed IPv4 address on the first network (default: allocated)
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,

    /// Publish a container port on the host, repeatable ([IP:]HOSTPORT:PORT[/tcp])
    #[arg(short, long, value_name = "[IP:]HOSTPORT:PORT")]
    pub publish: Vec<String>,
}

/// Capabilities and confinement, with Docker's flag names. Values go to the
/// daemon as given: it alone knows the capability names and options.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct SecurityArgs {
    /// Add a capability to Docker's default set, repeatable (NET_ADMIN,
    /// CAP_SYS_TIME, or ALL)
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,

    /// Drop a capability, repeatable (ALL: every one)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,

    /// Give the container every capability, every device, and no masked
    /// paths, seccomp profile or no_new_privs
    #[arg(long)]
    pub privileged: bool,

    /// Security option, repeatable (seccomp=unconfined, seccomp=default,
    /// seccomp=FILE with a profile in Docker's JSON format, no-new-privileges)
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,

    /// User namespace: host (none, the default) or remap (container root
    /// becomes an unprivileged uid of rsupd's subuid range)
    #[arg(long, value_name = "MODE")]
    pub userns: Option<String>,

    /// Map container uids to host uids, repeatable
    /// (CONTAINER_ID:HOST_ID:SIZE, inside rsupd's subuid range; implies a
    /// user namespace)
    #[arg(long = "uidmap", value_name = "C:H:SIZE")]
    pub uid_map: Vec<String>,

    /// Map container gids to host gids, repeatable (as --uidmap; default:
    /// the uid map)
    #[arg(long = "gidmap", value_name = "C:H:SIZE")]
    pub gid_map: Vec<String>,
}

/// Volumes, tmpfs mounts and a read-only root, with Docker's flag names.
/// Values go to the daemon as given: it alone judges names, paths and options.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StorageArgs {
    /// Mount a volume, repeatable (NAME:/path[:ro] for a named volume,
    /// /host/dir:/path[:ro] for a bind mount)
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    pub volumes: Vec<String>,

    /// Mount a tmpfs, repeatable (PATH[:OPTIONS], Docker's: ro, exec, size=64m,
    /// mode=1777, ...; default rw,noexec,nosuid,nodev)
    #[arg(long = "tmpfs", value_name = "SPEC")]
    pub tmpfs: Vec<String>,

    /// Mount the container's root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
}

/// The restart policy and its backoff. Values go to the daemon as given; it
/// alone judges the policy name and the ranges. Durations are sent in whole
/// milliseconds (a fraction of one is cut off); negative ones are refused
/// here, since the wire cannot carry them.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct RestartArgs {
    /// Restart policy: no, on-failure[:MAX], always or unless-stopped
    #[arg(long = "restart", value_name = "POLICY")]
    pub policy: Option<String>,

    /// First restart delay, doubled on each further restart (e.g. 100ms, 1.5s)
    #[arg(
        long,
        value_name = "DUR",
        value_parser = duration::parse,
        allow_hyphen_values = true
    )]
    pub restart_delay: Option<Duration>,

    /// Cap of the restart delay (e.g. 1m)
    #[arg(
        long,
        value_name = "DUR",
        value_parser = duration::parse,
        allow_hyphen_values = true
    )]
    pub restart_max_delay: Option<Duration>,

    /// A run at least this long resets the restart delay (e.g. 10s)
    #[arg(
        long,
        value_name = "DUR",
        value_parser = duration::parse,
        allow_hyphen_values = true
    )]
    pub restart_reset_after: Option<Duration>,

    /// Scale each delay by a random factor in [1 - JITTER, 1] (0 to 1)
    #[arg(
        long,
        value_name = "FLOAT",
        value_parser = parse_jitter,
        allow_hyphen_values = true
    )]
    pub restart_jitter: Option<f64>,
}

impl RestartArgs {
    /// The policy; `None` when no restart flag was given, so the daemon's
    /// defaults apply.
    pub fn to_policy(&self) -> Option<RestartPolicy> {
        if *self == RestartArgs::default() {
            return None;
        }
        Some(RestartPolicy {
            policy: self.policy.clone().unwrap_or_default(),
            delay_ms: self.restart_delay.map(duration::millis),
            max_delay_ms: self.restart_max_delay.map(duration::millis),
            reset_after_ms: self.restart_reset_after.map(duration::millis),
            jitter: self.restart_jitter,
        })
    }
}

/// Docker's `--health-*` flags. As with the restart flags, values go to the
/// daemon as given (it refuses a zero interval or retries, and
/// `--restart-on-unhealthy` without a command or a restart policy);
/// durations are sent in whole milliseconds.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct HealthArgs {
    /// Command to run to check health (with /bin/sh -c inside the container)
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,

    /// Time between two checks (default 30s)
    #[arg(
        long,
        value_name = "DUR",
        value_parser = duration::parse,
        allow_hyphen_values = true
    )]
    pub health_interval: Option<Duration>,

    /// Maximum time one check may take (default 30s)
    #[arg(
        long,
        value_name = "DUR",
        value_parser = duration::parse,
        allow_hyphen_values = true
    )]
    pub health_timeout: Option<Duration>,

    /// Consecutive failures needed to report unhealthy (default 3)
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,

    /// Time after the start during which failures do not count (default 0s)
    #[arg(
        long,
        value_name = "DUR",
        value_parser = duration::parse,
        allow_hyphen_values = true
    )]
    pub health_start_period: Option<Duration>,

    /// Kill the container when it turns unhealthy, for its restart policy to
    /// restart it
    #[arg(long)]
    pub restart_on_unhealthy: bool,
}

impl HealthArgs {
    /// The health check; `None` when no health flag was given.
    pub fn to_health_check(&self) -> Option<HealthCheck> {
        if *self == HealthArgs::default() {
            return None;
        }
        Some(HealthCheck {
            cmd: self.health_cmd.clone().unwrap_or_default(),
            interval_ms: self.health_interval.map(duration::millis),
            timeout_ms: self.health_timeout.map(duration::millis),
            retries: self.health_retries,
            start_period_ms: self.health_start_period.map(duration::millis),
            restart_on_unhealthy: self.restart_on_unhealthy,
        })
    }
}

/// `--restart-jitter`: any finite number; the daemon checks the range.
fn parse_jitter(value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|jitter| jitter.is_finite())
        .ok_or_else(|| "expected a fraction such as 0.1".to_owned())
}

/// Resource limits, with Docker's flag names: shared by `create`, `run` and
/// `update`. Values go to the daemon as given; it alone judges their range,
/// so negative numbers are accepted here.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct ResourceArgs {
    /// Memory limit (e.g. 256m, 1g; b, k, m, g, t are powers of 1024)
    #[arg(
        short,
        long,
        value_name = "SIZE",
        value_parser = size::parse,
        allow_hyphen_values = true
    )]
    pub memory: Option<i64>,

    /// Memory plus swap limit (SIZE, or -1 for unlimited swap)
    #[arg(
        long,
        value_name = "SIZE",
        value_parser = parse_memory_swap,
        allow_hyphen_values = true
    )]
    pub memory_swap: Option<i64>,

    /// Number of CPUs (fractional, e.g. 1.5)
    #[arg(
        long,
        value_name = "CPUS",
        value_parser = parse_cpus,
        allow_hyphen_values = true
    )]
    pub cpus: Option<f64>,

    /// CPU shares (relative weight)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub cpu_shares: Option<i64>,

    /// Maximum number of processes (0: unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

impl ResourceArgs {
    /// The limits that were given; `None` when no flag was.
    pub fn to_resources(&self) -> Option<Resources> {
        let resources = Resources {
            memory_bytes: self.memory,
            memory_swap_bytes: self.memory_swap,
            cpus: self.cpus,
            cpu_shares: self.cpu_shares,
            pids_limit: self.pids_limit,
        };
        (resources != Resources::default()).then_some(resources)
    }
}

/// `--memory-swap`: a size, or -1 for unlimited swap.
fn parse_memory_swap(value: &str) -> Result<i64, String> {
    size::parse(value).map_err(|_| format!("{}, or -1 for unlimited swap", size::EXPECTED))
}

/// `--cpus`: any finite number; the daemon checks the range.
fn parse_cpus(value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|cpus| cpus.is_finite())
        .ok_or_else(|| "expected a number of CPUs such as 0.5 or 2".to_owned())
}

/// `-e` values as KEY=VALUE pairs. Like Docker, a bare KEY takes its value
/// from `lookup` (our environment) and is dropped when unset there.
pub fn environment(
    vars: Vec<String>,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let mut env = Vec::with_capacity(vars.len());
    for var in vars {
        if var.is_empty() || var.starts_with('=') {
            bail!("--env {var:?}: variable name is empty");
        }
        if var.contains('=') {
            env.push(var);
        } else if let Some(value) = lookup(&var) {
            env.push(format!("{var}={value}"));
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        spec: SpecArgs,
    }

    fn parse(args: &[&str]) -> SpecArgs {
        let argv = std::iter::once("rsupctl").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("valid flags").spec
    }

    #[test]
    fn first_argument_is_the_image_without_rootfs() {
        let spec = parse(&["--entrypoint", "", "busybox:1.36", "sh", "-c", "echo"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(spec.image, "busybox:1.36");
        assert_eq!(spec.rootfs, "");
        assert_eq!(spec.command, ["sh", "-c", "echo"]);
        assert_eq!(spec.entrypoint.as_deref(), Some(""));
        let spec = parse(&["busybox"]).into_spec().expect("valid spec");
        assert_eq!(spec.image, "busybox");
        assert!(spec.command.is_empty());
        assert_eq!(spec.entrypoint, None);
        assert!(parse(&["--rm"]).into_spec().is_err(), "no image, no rootfs");
        let err = parse(&["--netwrok", "host", "busybox"])
            .into_spec()
            .expect_err("a mistyped flag is not an image");
        assert!(err.to_string().contains("unknown flag"), "{err}");
        let spec = parse(&["--rootfs", "/r", "--entrypoint", "/bin/sh"])
            .into_spec()
            .expect("an entrypoint is a command");
        assert_eq!(spec.entrypoint.as_deref(), Some("/bin/sh"));
        assert!(
            parse(&["--rootfs", "/r"]).into_spec().is_err(),
            "no command"
        );
    }

    #[test]
    fn command_keeps_its_own_flags() {
        let spec = parse(&["--rootfs", "r", "-e", "A=1", "sh", "-c", "echo -e --rm"]);
        assert_eq!(spec.command, ["sh", "-c", "echo -e --rm"]);
        assert_eq!(spec.env, ["A=1"]);
        assert!(!spec.rm);
    }

    #[test]
    fn spec_has_an_absolute_rootfs_and_log_config() {
        let spec = parse(&["--rootfs", "r", "--log-max-files", "3", "--rm", "true"])
            .into_spec()
            .expect("valid spec");
        assert!(
            spec.rootfs.starts_with('/') && spec.rootfs.ends_with("/r"),
            "{}",
            spec.rootfs
        );
        assert!(spec.auto_remove);
        assert_eq!(
            spec.log,
            Some(LogConfig {
                max_size_bytes: 0,
                max_files: 3
            })
        );
        let spec = parse(&["--rootfs", "/r", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(spec.rootfs, "/r");
        assert_eq!(spec.log, None);
    }

    #[test]
    fn resource_flags_use_docker_names() {
        let spec = parse(&[
            "--rootfs",
            "/r",
            "-m",
            "256m",
            "--memory-swap",
            "1.5g",
            "--cpus",
            "1.5",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "100",
            "sh",
            "-m",
        ])
        .into_spec()
        .expect("valid spec");
        assert_eq!(spec.command, ["sh", "-m"]);
        assert_eq!(
            spec.resources,
            Some(Resources {
                memory_bytes: Some(256 << 20),
                memory_swap_bytes: Some(1_610_612_736),
                cpus: Some(1.5),
                cpu_shares: Some(512),
                pids_limit: Some(100),
            })
        );
    }

    #[test]
    fn unset_resource_flags_stay_unset() {
        let spec = parse(&["--rootfs", "/r", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(spec.resources, None);
        let spec = parse(&["--rootfs", "/r", "--memory", "0", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(
            spec.resources,
            Some(Resources {
                memory_bytes: Some(0),
                ..Default::default()
            })
        );
    }

    #[test]
    fn out_of_range_values_are_left_to_the_daemon() {
        let spec = parse(&[
            "--rootfs",
            "/r",
            "--memory",
            "-1",
            "--memory-swap",
            "-1",
            "--cpus",
            "0",
            "--cpu-shares",
            "-2",
            "--pids-limit",
            "-5",
            "true",
        ]);
        assert_eq!(
            spec.resources.to_resources(),
            Some(Resources {
                memory_bytes: Some(-1),
                memory_swap_bytes: Some(-1),
                cpus: Some(0.0),
                cpu_shares: Some(-2),
                pids_limit: Some(-5),
            })
        );
        let spec = parse(&["--rootfs", "/r", "-m", "-1", "--cpus", "-0.5", "true"]);
        assert_eq!(spec.resources.memory, Some(-1));
        assert_eq!(spec.resources.cpus, Some(-0.5));
    }

    #[test]
    fn bad_sizes_name_the_flag_and_the_form() {
        for (flag, value) in [
            ("--memory", "abc"),
            ("--memory", "12x"),
            ("--memory", ""),
            ("--memory-swap", "1q"),
        ] {
            let err = Cli::try_parse_from(["rsupctl", "--rootfs", "r", flag, value, "true"])
                .err()
                .expect("a bad size");
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
            let text = err.to_string();
            assert!(text.contains(flag), "{text}");
            assert!(
                text.contains("expected a size such as 256m, 1g or a number of bytes"),
                "{text}"
            );
        }
        for cpus in ["x", "nan", "inf"] {
            assert!(
                Cli::try_parse_from(["rsupctl", "--rootfs", "r", "--cpus", cpus, "true"]).is_err()
            );
        }
    }

    #[test]
    fn restart_flags_make_a_policy() {
        let spec = parse(&[
            "--rootfs",
            "/r",
            "--restart",
            "on-failure:3",
            "--restart-delay",
            "250ms",
            "--restart-max-delay",
            "1m30s",
            "--restart-reset-after",
            "10",
            "--restart-jitter",
            "0.25",
            "true",
        ])
        .into_spec()
        .expect("valid spec");
        assert_eq!(
            spec.restart,
            Some(RestartPolicy {
                policy: "on-failure:3".to_owned(),
                delay_ms: Some(250),
                max_delay_ms: Some(90_000),
                reset_after_ms: Some(10_000),
                jitter: Some(0.25),
            })
        );
    }

    #[test]
    fn restart_policy_is_sent_only_when_asked_for() {
        let spec = parse(&["--rootfs", "/r", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(spec.restart, None);
        let spec = parse(&["--rootfs", "/r", "--restart-delay", "0", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(
            spec.restart,
            Some(RestartPolicy {
                delay_ms: Some(0),
                ..Default::default()
            })
        );
        // The policy name is the daemon's to judge.
        let spec = parse(&["--rootfs", "/r", "--restart", "sometimes", "true"]);
        assert_eq!(spec.restart.policy.as_deref(), Some("sometimes"));
        let spec = parse(&["--rootfs", "/r", "--restart-jitter", "-1", "true"]);
        assert_eq!(spec.restart.restart_jitter, Some(-1.0));
    }

    #[test]
    fn bad_durations_name_the_flag_and_the_form() {
        for (flag, value) in [
            ("--restart-delay", "-1s"),
            ("--restart-max-delay", "soon"),
            ("--restart-reset-after", "10x"),
        ] {
            let err = Cli::try_parse_from(["rsupctl", "--rootfs", "r", flag, value, "true"])
                .err()
                .expect("a bad duration");
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
            let text = err.to_string();
            assert!(text.contains(flag), "{text}");
            assert!(text.contains(duration::EXPECTED), "{text}");
        }
        for jitter in ["x", "nan", "inf"] {
            assert!(
                Cli::try_parse_from([
                    "rsupctl",
                    "--rootfs",
                    "r",
                    "--restart-jitter",
                    jitter,
                    "true"
                ])
                .is_err()
            );
        }
    }

    #[test]
    fn health_flags_use_docker_names() {
        let spec = parse(&[
            "--rootfs",
            "/r",
            "--health-cmd",
            "test -e /tmp/ok",
            "--health-interval",
            "300ms",
            "--health-timeout",
            "2s",
            "--health-retries",
            "2",
            "--health-start-period",
            "1m",
            "--restart-on-unhealthy",
            "sleep",
            "9",
        ])
        .into_spec()
        .expect("valid spec");
        assert_eq!(spec.command, ["sleep", "9"]);
        assert_eq!(
            spec.health,
            Some(HealthCheck {
                cmd: "test -e /tmp/ok".to_owned(),
                interval_ms: Some(300),
                timeout_ms: Some(2000),
                retries: Some(2),
                start_period_ms: Some(60_000),
                restart_on_unhealthy: true,
            })
        );
    }

    #[test]
    fn health_check_is_sent_only_when_asked_for() {
        let spec = parse(&["--rootfs", "/r", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(spec.health, None);
        let spec = parse(&["--rootfs", "/r", "--health-cmd", "true", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(
            spec.health,
            Some(HealthCheck {
                cmd: "true".to_owned(),
                ..Default::default()
            })
        );
        // Without a command it is the daemon's to refuse.
        let spec = parse(&["--rootfs", "/r", "--restart-on-unhealthy", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(
            spec.health,
            Some(HealthCheck {
                restart_on_unhealthy: true,
                ..Default::default()
            })
        );
        let err = Cli::try_parse_from([
            "rsupctl",
            "--rootfs",
            "r",
            "--health-interval",
            "-1s",
            "true",
        ])
        .err()
        .expect("a bad duration");
        assert!(err.to_string().contains("--health-interval"), "{err}");
    }

    #[test]
    fn supervisor_is_sent_when_given() {
        let spec = parse(&["--rootfs", "/r", "--supervisor", "app", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(spec.supervisor, "app");
        let spec = parse(&["--rootfs", "/r", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(spec.supervisor, "");
    }

    #[test]
    fn network_flags_use_docker_names() {
        let spec = parse(&[
            "--rootfs",
            "/r",
            "--network",
            "front",
            "--net",
            "back",
            "--network-alias",
            "db",
            "--network-alias",
            "primary",
            "--ip",
            "10.90.0.7",
            "-p",
            "127.0.0.1:8080:80",
            "--publish",
            "9090:90/tcp",
            "sh",
            "-p",
        ])
        .into_spec()
        .expect("valid spec");
        assert_eq!(spec.command, ["sh", "-p"]);
        assert_eq!(spec.networks, ["front", "back"]);
        assert_eq!(spec.network_aliases, ["db", "primary"]);
        assert_eq!(spec.ip, "10.90.0.7");
        assert_eq!(spec.ports, ["127.0.0.1:8080:80", "9090:90/tcp"]);
    }

    #[test]
    fn no_network_flags_leave_the_daemon_defaults() {
        let spec = parse(&["--rootfs", "/r", "true"])
            .into_spec()
            .expect("valid spec");
        assert!(spec.networks.is_empty());
        assert!(spec.network_aliases.is_empty());
        assert_eq!(spec.ip, "");
        assert!(spec.ports.is_empty());
        // Values are the daemon's to judge.
        let spec = parse(&["--rootfs", "/r", "--network", "none", "--ip", "x", "true"])
            .into_spec()
            .expect("valid spec");
        assert_eq!(spec.networks, ["none"]);
        assert_eq!(spec.ip, "x");
    }

    #[test]
    fn security_flags_use_docker_names() {
        let spec = parse(&[
            "--rootfs",
            "/r",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "cap_sys_time",
            "--cap-drop",
            "ALL",
            "--privileged",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "no-new-privileges",
            "sh",
            "--privileged",
        ])
        .into_spec()
        .expect("valid spec");
        assert_eq!(spec.command, ["sh", "--privileged"]);
        assert_eq!(spec.cap_add, ["NET_ADMIN", "cap_sys_time"]);
        assert_eq!(spec.cap_drop, ["ALL"]);
        assert!(spec.privileged);
        assert_eq!(
            spec.security_opt,
            ["seccomp=unconfined", "no-new-privileges"]
        );
    }

    #[test]
    fn seccomp_file_is_read_by_the_client() {
        let dir = std::env::temp_dir().join(format!("rsupctl-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("profile.json");
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
        std::fs::write(&path, json).expect("write");
        let opt = format!("seccomp={}", path.display());
        let spec = parse(&[
            "--rootfs",
            "/r",
            "--security-opt",
            "no-new-privileges",
            "--security-opt",
            &opt,
            "true",
        ])
        .into_spec()
        .expect("valid spec");
        assert_eq!(spec.seccomp_profile, json);
        assert_eq!(spec.security_opt, ["no-new-privileges"]);
        // The last seccomp option wins.
        let spec = parse(&[
            "--rootfs",
            "/r",
            "--security-opt",
            &opt,
            "--security-opt",
            "seccomp=unconfined",
            "true",
        ])
        .into_spec()
        .expect("valid spec");
        assert_eq!(spec.seccomp_profile, "");
        assert_eq!(spec.security_opt, ["seccomp=unconfined"]);
        // A file that is not there: refused here, with its name.
        let missing = format!("seccomp={}", dir.join("nope.json").display());
        let err = parse(&["--rootfs", "/r", "--security-opt", &missing, "true"])
            .into_spec()
            .expect_err("missing file");
        assert!(format!("{err:#}").contains("nope.json"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_security_flags_leave_the_daemon_defaults() {
        let spec = parse(&["--rootfs", "/r", "true"])
            .into_spec()
            .expect("valid spec");
        assert!(spec.cap_add.is_empty() && spec.cap_drop.is_empty());
        assert!(!spec.privileged);
        assert!(spec.security_opt.is_empty());
        // Names and options are the daemon's to judge.
        let spec = parse(&[
            "--rootfs",
            "/r",
            "--cap-add",
            "FLY",
            "--security-opt",
            "x",
            "true",
        ]);
        assert_eq!(spec.security.cap_add, ["FLY"]);
        assert_eq!(spec.security.security_opt, ["x"]);
    }

    #[test]
    fn storage_flags_use_docker_names() {
        let spec = parse(&[
            "--rootfs",
            "/r",
            "-v",
            "data:/data",
            "--volume",
            "/srv:/host:ro",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/run:size=1m,mode=700",
            "--read-only",
            "sh",
            "-v",
        ])
        .into_spec()
        .expect("valid spec");
        assert_eq!(spec.command, ["sh", "-v"]);
        assert_eq!(spec.volumes, ["data:/data", "/srv:/host:ro"]);
        assert_eq!(spec.tmpfs, ["/tmp", "/run:size=1m,mode=700"]);
        assert!(spec.read_only);
        let spec = parse(&["--rootfs", "/r", "true"])
            .into_spec()
            .expect("valid spec");
        assert!(spec.volumes.is_empty() && spec.tmpfs.is_empty());
        assert!(!spec.read_only);
    }

    #[test]
    fn command_is_required() {
        let spec = Cli::try_parse_from(["rsupctl", "--rootfs", "r"]).expect("parses");
        assert!(spec.spec.into_spec().is_err());
    }

    #[test]
    fn bare_env_keys_are_copied_or_dropped() {
        let lookup = |key: &str| (key == "HOME").then(|| "/root".to_owned());
        let vars = ["A=1", "HOME", "UNSET", "B="].map(str::to_owned).to_vec();
        let env = environment(vars, lookup).expect("valid env");
        assert_eq!(env, ["A=1", "HOME=/root", "B="]);
        assert!(environment(vec!["=x".to_owned()], lookup).is_err());
    }
}
