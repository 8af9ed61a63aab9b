//! The one validate step of a create: a [`SpecRequest`] checked and
//! resolved into the [`ContainerSpec`] that rsup records, and the networks
//! it leases ([`NetPlan`]).
//!
//! It checks everything that can be checked without starting a process or
//! taking anything, so that bad input never leaves a half-created
//! container: the name is a DNS label, the rootfs is a directory, the
//! command exists in it and the user resolves through it (see
//! [`super::lookup`]), every part is in range (restart, health, resources,
//! log, security options with `security_opt`), the user fits the user
//! namespace's maps, the overlay mount's options fit a page, the mounts
//! and ports parse and published ports have a network. It reads (the
//! rootfs or the image's view, bind sources, the subordinate id files) but
//! writes nothing: the create's side effects (the image gate, named
//! volumes, leases, the container's directory and records) come after it,
//! in the runtime.

use std::path::PathBuf;

use super::lookup::{DEFAULT_PATH, MountLandings, check_rootfs, resolve_command, resolve_user};
use super::mounts::parse_mounts;
use super::net::NetPlan;
use super::ports::PortMap;
use super::{
    ContainerSpec, ImageRef, ImageSource, LogConfig, SpecRequest, User, invalid, overlay_options,
};
use crate::bounds;
use crate::cgroups::Limits;
use crate::error::Error;
use crate::names::{ContainerName, quote};
use crate::userns::{IdMap, UsernsConfig, UsernsRequest};

/// What the validate step takes besides the request: the daemon's defaults
/// and what the runtime resolved for this create.
#[derive(Debug, Clone)]
pub struct Context {
    /// The name of a request that gives none.
    pub default_name: String,
    /// The host name when the request gives none and the name is not a
    /// valid host name (Docker's: the short id).
    pub default_hostname: String,
    /// Log rotation where the request sets none.
    pub log: LogConfig,
    /// The pids limit of a request without one (`None`: unlimited; a
    /// request's 0 is unlimited too).
    pub default_pids_limit: Option<u64>,
    /// The remap user and its subordinate id files (`--userns remap`).
    pub userns: UsernsConfig,
    /// Where named volumes live (`-v NAME:/path`).
    pub volumes_dir: PathBuf,
    /// The container's directory to be: its upper and work dirs are part of
    /// the overlay mount's options.
    pub dir: PathBuf,
    /// The image the request names, resolved (its view mounted while the
    /// step runs).
    pub image: Option<ImageSource>,
}

/// A create request, validated.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The spec to record; its `networks` are filled by the lease.
    pub spec: ContainerSpec,
    /// The networks to lease.
    pub net: NetPlan,
}

/// Validates a create request (see the module's documentation).
pub fn validate(req: SpecRequest, cx: Context) -> Result<Validated, Error> {
    let userns_req = req.userns.clone();
    let (volumes, tmpfs) = (req.volumes.clone(), req.tmpfs.clone());
    let net_req = req.net.clone();
    let pids_given = req.resources.pids_limit.is_some();
    let mut spec = container_spec(
        req,
        &cx.default_name,
        &cx.default_hostname,
        cx.log,
        cx.image,
    )?;
    spec.userns = user_namespace(&userns_req, &cx.userns, &spec)?;
    // The shim's overlay mount must fit the kernel's page: refuse now
    // rather than at every start.
    overlay_options(
        &spec.lowerdirs(),
        Some((&cx.dir.join("upper"), &cx.dir.join("work"))),
    )
    .map_err(Error::FailedPrecondition)?;
    // No pids_limit given: the daemon's default (0 given: unlimited).
    if !pids_given {
        spec.resources.pids = cx.default_pids_limit;
    }
    spec.mounts = parse_mounts(&volumes, &tmpfs, &cx.volumes_dir)?;
    spec.ports = net_req
        .ports
        .iter()
        .map(|p| PortMap::parse(p))
        .collect::<Result<_, _>>()?;
    let net = net_req.validate()?;
    if !spec.ports.is_empty() && net.networks.is_empty() {
        return Err(invalid(
            "ports",
            "publishing a port needs a network (not --network none)",
        ));
    }
    Ok(Validated { spec, net })
}

/// The user namespace of a request (`None`: the host's), which must map
/// the container's user; a user resolved at start is checked by the init's
/// setuid instead.
fn user_namespace(
    req: &UsernsRequest,
    cfg: &UsernsConfig,
    spec: &ContainerSpec,
) -> Result<Option<IdMap>, Error> {
    let userns = crate::userns::resolve(req, cfg)?;
    if let Some(map) = userns.as_ref().filter(|_| !spec.user_at_start) {
        if map.host_uid(spec.user.uid).is_none() {
            return Err(invalid(
                "user",
                format!("uid {} is not in the uid_map", spec.user.uid),
            ));
        }
        if map.host_gid(spec.user.gid).is_none() {
            return Err(invalid(
                "user",
                format!("gid {} is not in the gid_map", spec.user.gid),
            ));
        }
    }
    Ok(userns)
}

/// The spec of `req` without its mounts, ports, networks and user
/// namespace: `default_name` is used when the request has none and
/// `default_log` fills zero log settings. `image` is the resolved image
/// when the request names one: its config gives the defaults of the
/// command (Entrypoint + Cmd), env, working dir and user, which the
/// request's fields override as Docker's flags do.
fn container_spec(
    mut req: SpecRequest,
    default_name: &str,
    default_hostname: &str,
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
        if is_hostname(&name) {
            name.clone()
        } else {
            default_hostname.to_string()
        }
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
    // The image's labels, then the request's over them.
    let mut labels = image
        .as_ref()
        .map(|i| i.config.labels.clone())
        .unwrap_or_default();
    labels.extend(std::mem::take(&mut req.labels));
    let labels = crate::names::labels(labels)?;
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
        labels,
    })
}

impl SpecRequest {
    /// Fills what the request leaves unset from an image's config, as
    /// Docker does: the command is Entrypoint + Cmd, where `--entrypoint`
    /// replaces the Entrypoint (and drops the image's Cmd) and a command
    /// given replaces the Cmd; the image's env comes first and the
    /// request's variables override it; working dir and user apply when the
    /// request has none.
    fn apply_image_defaults(&mut self, config: &crate::imagestore::ImageConfig) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::{invalid_field, req, rootfs};
    use std::path::Path;

    /// A daemon's context for a create named `x` (no image).
    fn cx() -> Context {
        Context {
            default_name: "x".into(),
            default_hostname: "0123456789ab".into(),
            log: LogConfig::default(),
            default_pids_limit: None,
            userns: UsernsConfig::default(),
            volumes_dir: "/state/volumes".into(),
            dir: "/state/containers/x".into(),
            image: None,
        }
    }

    fn check(q: SpecRequest) -> Result<ContainerSpec, Error> {
        validate(q, cx()).map(|v| v.spec)
    }

    fn with_image(q: SpecRequest, image: ImageSource) -> Result<ContainerSpec, Error> {
        validate(
            q,
            Context {
                image: Some(image),
                ..cx()
            },
        )
        .map(|v| v.spec)
    }

    #[test]
    fn log_options_have_ranges() {
        let root = rootfs();
        let default = LogConfig::default();
        let spec = |size: u64, files: u32| {
            let mut r = req(root.path(), &["sh"]);
            r.log_max_size = size;
            r.log_max_files = files;
            validate(
                r,
                Context {
                    default_name: "c".into(),
                    default_hostname: "0123456789ab".into(),
                    log: default,
                    ..cx()
                },
            )
            .map(|v| v.spec)
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
    fn command_is_found_through_symlinks_inside_root() {
        let r = rootfs();
        let s = check(req(r.path(), &["sh", "-c", "true"])).expect("ok");
        assert_eq!(s.executable, "/usr/bin/sh");
        assert!(s.env.iter().any(|e| e == &format!("PATH={DEFAULT_PATH}")));
        assert!(s.env.iter().any(|e| e == "HOSTNAME=x"));
        assert!(check(req(r.path(), &["/bin/sh"])).is_ok());
        for bad in [
            &["nosuch"][..],
            &["/nonexistent"],
            &["/bin/data"],
            &[""],
            &[],
        ] {
            let e = check(req(r.path(), bad)).expect_err("bad");
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
    fn users_and_commands_a_mount_could_change_are_left_to_the_init() {
        let r = rootfs();
        let mut q = req(r.path(), &["sh"]);
        q.user = "nobody".into();
        assert!(check(q.clone()).is_err());
        q.volumes = vec!["/etc/passwd:/etc/passwd:ro".into()];
        let s = check(q).expect("deferred user");
        assert!(s.user_at_start);
        assert!(!s.env.iter().any(|e| e.starts_with("HOME=")));
        let mut q = req(r.path(), &["redis-server"]);
        q.volumes = vec!["/usr:/usr:ro".into()];
        let s = check(q).expect("deferred command");
        assert_eq!(s.executable, "redis-server");
        assert!(!s.user_at_start);
    }

    #[test]
    fn bad_fields_are_named() {
        let r = rootfs();
        let field = |mut q: SpecRequest, f: &dyn Fn(&mut SpecRequest)| {
            f(&mut q);
            match check(q) {
                Err(Error::InvalidArgument { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        let base = req(r.path(), &["sh"]);
        assert!(matches!(
            validate(
                base.clone(),
                Context {
                    default_name: "-Bad_Name".into(),
                    default_hostname: "0123456789ab".into(),
                    ..cx()
                }
            ),
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
        assert!(matches!(check(missing), Err(Error::FailedPrecondition(_))));
    }

    fn image_config() -> crate::imagestore::ImageConfig {
        crate::imagestore::ImageConfig {
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
            config: crate::imagestore::ImageConfig {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
            view: view.to_path_buf(),
        };
        let q = SpecRequest::default();
        let s = with_image(q.clone(), source(r.path())).expect("valid");
        assert_eq!(s.executable, "/usr/bin/sh", "found in the view's PATH");
        assert_eq!(s.rootfs, PathBuf::new());
        assert_eq!(s.lowerdirs(), [r.path().to_path_buf()]);
        assert_eq!(s.image.as_ref().map(|i| i.id.as_str()), Some("sha256:00"));
        let mut both = q;
        both.rootfs = r.path().display().to_string();
        assert!(matches!(
            with_image(both, source(r.path())),
            Err(Error::InvalidArgument {
                field: "rootfs",
                ..
            })
        ));
        let mut no_cmd = source(r.path());
        no_cmd.config.cmd.clear();
        let e = with_image(SpecRequest::default(), no_cmd).expect_err("no command");
        assert!(e.to_string().contains("no Entrypoint or Cmd"), "{e}");
    }

    #[test]
    fn the_user_must_be_in_the_user_namespace() {
        let r = rootfs();
        let ids = tempfile::tempdir().expect("tempdir");
        for f in ["subuid", "subgid"] {
            std::fs::write(ids.path().join(f), "rsup:100000:65536\n").expect("write");
        }
        let check = |q: SpecRequest| {
            validate(
                q,
                Context {
                    userns: UsernsConfig {
                        user: "rsup".into(),
                        subuid_file: ids.path().join("subuid"),
                        subgid_file: ids.path().join("subgid"),
                    },
                    ..cx()
                },
            )
            .map(|v| v.spec)
        };
        let mut q = req(r.path(), &["sh"]);
        q.userns.uid_map = vec!["0:100000:65536".into()];
        let s = check(q.clone()).expect("uid 0 is mapped");
        assert!(s.userns.is_some());
        q.user = "70000".into();
        let e = check(q.clone()).expect_err("unmapped uid");
        assert!(e.to_string().contains("not in the uid_map"), "{e}");
        q.user = "0:70000".into();
        let e = check(q.clone()).expect_err("unmapped gid");
        assert!(e.to_string().contains("not in the gid_map"), "{e}");
        // /etc/passwd from a mount: the init's setuid checks it.
        q.user = "app".into();
        q.volumes = vec!["/etc/passwd:/etc/passwd:ro".into()];
        assert!(check(q).expect("checked at start").user_at_start);
    }

    #[test]
    fn the_daemons_pids_limit_applies_when_none_is_given() {
        let r = rootfs();
        let with_default = |pids: Option<i64>| {
            let mut q = req(r.path(), &["sh"]);
            q.resources.pids_limit = pids;
            validate(
                q,
                Context {
                    default_pids_limit: Some(512),
                    ..cx()
                },
            )
            .map(|v| v.spec.resources.pids)
        };
        assert_eq!(with_default(None).expect("valid"), Some(512));
        assert_eq!(with_default(Some(0)).expect("valid"), None, "0: unlimited");
        assert_eq!(with_default(Some(64)).expect("valid"), Some(64));
    }

    #[test]
    fn mounts_ports_and_networks_are_checked_together() {
        let r = rootfs();
        let base = req(r.path(), &["sh"]);
        let field = |f: &dyn Fn(&mut SpecRequest)| {
            let mut q = base.clone();
            f(&mut q);
            invalid_field(check(q))
        };
        assert_eq!(
            field(&|q| {
                q.volumes = vec!["data:/data".into()];
                q.tmpfs = vec!["/data/".into()];
            }),
            "volumes"
        );
        for bad in ["/run:mpol=default", "/run:noexec,bogus", "/run:size=1x"] {
            assert_eq!(field(&|q| q.tmpfs = vec![bad.into()]), "tmpfs", "{bad}");
        }
        assert_eq!(field(&|q| q.net.ports = vec!["80".into()]), "ports");
        assert_eq!(
            field(&|q| {
                q.net.ports = vec!["8080:80".into()];
                q.net.networks = vec![crate::names::NetworkName::parse("none").expect("name")];
            }),
            "ports"
        );
        assert_eq!(field(&|q| q.net.ip = "x".into()), "ip");
        let mut q = base;
        q.volumes = vec!["data:/data:ro".into()];
        q.tmpfs = vec!["/run".into()];
        q.net.ports = vec!["127.0.0.1:8080:80".into()];
        let v = validate(q, cx()).expect("valid");
        assert_eq!(v.spec.mounts.len(), 2);
        assert_eq!(v.spec.mounts[0].target, "/data");
        assert_eq!(v.spec.ports[0].host_port, 8080);
        assert_eq!(v.net.networks.len(), 1, "the default network");
        assert!(v.spec.networks.is_empty(), "leased by the runtime");
    }

    #[test]
    fn security_opt_is_interpreted_here() {
        let r = rootfs();
        let opts = |o: &[&str]| {
            let mut q = req(r.path(), &["sh"]);
            q.security.security_opt = o.iter().map(|s| s.to_string()).collect();
            check(q)
        };
        let unconfined = opts(&["no-new-privileges", "seccomp=unconfined"]).expect("valid");
        assert_eq!(
            unconfined.security.seccomp,
            crate::seccomp::Seccomp::Unconfined
        );
        for bad in ["apparmor=x", "label=disable", "seccomp=/nonexistent.json"] {
            let e = opts(&[bad]).expect_err(bad);
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument {
                        field: "security_opt",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn an_overlay_too_long_for_a_page_is_refused() {
        let r = rootfs();
        let e = validate(
            req(r.path(), &["sh"]),
            Context {
                dir: PathBuf::from(format!("/{}", "d".repeat(4096))),
                ..cx()
            },
        )
        .expect_err("too long");
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    }
}
