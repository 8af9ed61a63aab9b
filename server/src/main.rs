#![recursion_limit = "256"]
//! rsupd: the rsup daemon.
//!
//! `config -> tracing -> Runtime::open -> serve`. The same binary is also the
//! per-container shim (`rsupd __rsup-shim DIR`, see `rsup_runtime::process`):
//! that check comes first, before any thread is started, because the shim
//! must stay single-threaded.

mod config;
mod docker;
mod exposition;
mod grpc;
mod listeners;
mod metrics;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use rsup_proto::v1::containers_server::ContainersServer;
use rsup_proto::v1::images_server::ImagesServer;
use rsup_proto::v1::networks_server::NetworksServer;
use rsup_proto::v1::supervisors_server::SupervisorsServer;
use rsup_proto::v1::system_server::SystemServer;
use rsup_proto::v1::volumes_server::VolumesServer;
use rsup_runtime::{Runtime, RuntimeConfig};

use crate::config::{Cli, Config};

fn main() -> ExitCode {
    if let Some(code) = rsup_runtime::process::helper_main(std::env::args_os()) {
        return ExitCode::from(code);
    }
    // Before any thread: rsupd's own descriptor limit up to the hard one
    // (containers keep the one it started with; see the function).
    let nofile = rsup_runtime::process::raise_nofile_limit();
    // Defence in depth: whatever rsupd creates without an explicit mode is
    // root's alone. Files and directories that others must reach (the
    // socket, what containers see) get their modes explicitly.
    rsup_runtime::sys::set_umask(0o077);
    let config = match Cli::parse().resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match nofile {
        Ok((before, now)) if before < now => {
            info!(
                before,
                now, "open-file limit raised (containers keep {before})"
            )
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
    listeners::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The binary rsupd runs as every container's shim and exec helper:
/// `rsup-shim` beside rsupd's own binary (see `shim.rs`), opened once here
/// and run through that open file (`/proc/self/fd/N`) for rsupd's whole
/// life, so a later rename or replacement of the file by another changes
/// nothing. It must be a regular file owned by rsupd's user and writable by
/// nobody else, in a directory of the same kind, and of rsupd's own build
/// (it says which with `__rsup-build-id`; every start checks it again, so
/// a file overwritten in place with another build fails the start instead
/// of running a shim that may not know a newer confinement setting).
/// Otherwise, or when it is missing, rsupd runs its own binary in the
/// shim's mode (the same code, slower to start and heavier per container).
fn shim_exe() -> std::path::PathBuf {
    use std::os::fd::IntoRawFd;
    match open_shim() {
        Ok((path, file)) => {
            info!(shim = %path.display(), "containers run under this shim");
            // Kept open (close-on-exec) until rsupd exits.
            format!("/proc/self/fd/{}", file.into_raw_fd()).into()
        }
        Err(why) => {
            warn!("{why}: containers run under rsupd's own binary as their shim");
            "/proc/self/exe".into()
        }
    }
}

fn open_shim() -> Result<(std::path::PathBuf, std::fs::File), String> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let exe = std::env::current_exe().map_err(|e| format!("rsupd's own path: {e}"))?;
    let path = exe.with_file_name("rsup-shim");
    let dir = exe.parent().unwrap_or(std::path::Path::new("/"));
    fn at(p: &std::path::Path) -> impl Fn(std::io::Error) -> String + '_ {
        move |e| format!("{}: {e}", p.display())
    }
    // Only rsupd's user may change it, or the directory it is in.
    let private = |meta: &std::fs::Metadata, p: &std::path::Path| {
        if meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0 {
            Ok(())
        } else {
            Err(format!(
                "{} is not owned by rsupd's user or is writable by others",
                p.display()
            ))
        }
    };
    private(&std::fs::metadata(dir).map_err(at(dir))?, dir)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(at(&path))?;
    let meta = file.metadata().map_err(at(&path))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    private(&meta, &path)?;
    if meta.mode() & 0o111 == 0 {
        return Err(format!("{} is not executable", path.display()));
    }
    // Above the standard fds: a spawn's stdin/stdout/stderr never land on it.
    let high = nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else
    // owns; the File takes it over (and the first one is closed here).
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(high) };
    let run = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
    let out = std::process::Command::new(&run)
        .arg(rsup_runtime::process::BUILD_ID_ARG)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(at(&path))?;
    let theirs = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || theirs.trim() != rsup_runtime::process::BUILD_ID {
        return Err(format!(
            "{} is of another build ({:?}, rsupd is {})",
            path.display(),
            theirs.trim(),
            rsup_runtime::process::BUILD_ID
        ));
    }
    Ok((path, file))
}

/// Tells systemd (Type=notify) that rsupd is ready, when started by it.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => return warn!(error = %e, "sd_notify"),
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", &path)
    };
    if let Err(e) = r {
        warn!(error = %e, "sd_notify READY=1");
    }
}

async fn shutdown_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop rsupd with SIGKILL");
        return token.cancelled().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
        _ = token.cancelled() => {}
    }
}

/// Binds the Unix socket: refuses a socket another live daemon answers on,
/// replaces a stale one, and sets the mode (and group) afterwards.
async fn bind(config: &Config) -> anyhow::Result<UnixListener> {
    bind_unix(&config.socket, config.socket_gid).await
}

/// Binds a Unix socket at `path` (see [`bind`]), 0660, group `gid`.
pub(crate) async fn bind_unix(
    path: &std::path::Path,
    socket_gid: Option<u32>,
) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent()
        && !parent.exists()
    {
        // Group members of --socket-group must reach the socket: 0755, not
        // what rsupd's umask (0077) would give.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
            })
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("{} is in use by another process", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Some(gid) = socket_gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(listener)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // The TCP listeners come first, before the state is opened or the Unix
    // socket made: a taken port or a bad certificate or key stops rsupd
    // before it has touched anything.
    let tls = match &config.tcp {
        Some(tcp) => {
            let (incoming, addr) = listeners::bind_tcp("--tcp", tcp.addr).await?;
            let server = tonic::transport::Server::builder()
                .tls_config(listeners::server_tls(tcp))
                .context("--tcp: loading --tls-cert, --tls-key and --tls-ca")?;
            Some((incoming, addr, server))
        }
        None => None,
    };
    let insecure = match config.insecure_tcp {
        Some(addr) => Some(listeners::bind_tcp("--insecure-tcp", addr).await?),
        None => None,
    };
    // One cancellation tree: the daemon's token is the runtime's parent.
    let token = CancellationToken::new();
    let runtime = Runtime::open_under(
        RuntimeConfig {
            state_dir: config.state_dir.clone(),
            shim_exe: shim_exe(),
            log: config.log,
            cgroup_subtree: (!config.no_cgroups).then(|| config.cgroup_subtree.clone()),
            stats_interval: config.stats_interval,
            net: config.net.clone(),
            userns: config.userns.clone(),
            default_pids_limit: config.default_pids_limit,
            image_limits: config.image_limits,
            registries: config.registries.clone(),
        },
        &token,
    )
    .await
    .with_context(|| format!("opening state directory {}", config.state_dir.display()))?;
    let listener = bind(&config).await?;
    let docker_listener = match &config.docker_socket {
        Some(path) => Some(
            docker::bind(path, config.socket_gid)
                .await
                .context("--docker-socket")?,
        ),
        None => None,
    };
    let tracker = tokio_util::task::TaskTracker::new();
    if let Some(l) = docker_listener {
        info!(socket = %config.docker_socket.as_deref().unwrap_or(std::path::Path::new("")).display(), "serving Docker's Engine API (v1.41 subset)");
        tracker.spawn(docker::serve(l, runtime.clone(), token.clone()));
    }
    if let Some(addr) = config.metrics_addr {
        let handle = metrics::install()?;
        metrics::serve(
            addr,
            runtime.clone(),
            handle,
            token.clone(),
            tracker.clone(),
        )
        .await?;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ContainersServer<grpc::containers::Service>>()
        .await;
    health
        .set_serving::<SystemServer<grpc::system::Service>>()
        .await;
    health
        .set_serving::<SupervisorsServer<grpc::supervisors::Service>>()
        .await;
    health
        .set_serving::<NetworksServer<grpc::networks::Service>>()
        .await;
    health
        .set_serving::<VolumesServer<grpc::volumes::Service>>()
        .await;
    health
        .set_serving::<ImagesServer<grpc::images::Service>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rsup_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rsup_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building the reflection service")?;

    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ContainersServer::new(grpc::containers::Service::new(
            runtime.clone(),
        )))
        .add_service(SystemServer::new(grpc::system::Service::new(
            runtime.clone(),
        )))
        .add_service(SupervisorsServer::new(grpc::supervisors::Service::new(
            runtime.clone(),
        )))
        .add_service(NetworksServer::new(grpc::networks::Service::new(
            runtime.clone(),
        )))
        .add_service(VolumesServer::new(grpc::volumes::Service::new(
            runtime.clone(),
        )))
        .add_service(ImagesServer::new(grpc::images::Service::new(
            runtime.clone(),
        )));
    let routes = routes.routes();

    // Watches for SIGTERM/SIGINT (or a listener that stopped on its own),
    // ends long-lived streams (wait, logs -f, events) so that the graceful
    // shutdown does not wait on clients, then stops every listener.
    let stopper = tracker.spawn({
        let token = token.clone();
        async move {
            shutdown_signal(token.clone()).await;
            // The runtime's token is a child: its streams end too.
            token.cancel();
        }
    });

    info!(socket = %config.socket.display(), state_dir = %config.state_dir.display(), "rsupd serving");
    let unix = until_stopped(&token, "the Unix socket", {
        tonic::transport::Server::builder()
            .layer(metrics::GrpcMetricsLayer)
            .add_routes(routes.clone())
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                token.clone().cancelled_owned(),
            )
    });
    let tls = async {
        let Some((incoming, addr, server)) = tls else {
            return Ok(());
        };
        info!(%addr, "rsupd serving gRPC over TCP with mutual TLS (client certificates required)");
        until_stopped(&token, "the --tcp listener", {
            server
                .layer(metrics::GrpcMetricsLayer)
                .add_routes(routes.clone())
                .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned())
        })
        .await
    };
    let insecure = async {
        let Some((incoming, addr)) = insecure else {
            return Ok(());
        };
        warn!(
            %addr,
            "rsupd serving gRPC over TCP WITHOUT TLS or authentication (--insecure-tcp): \
             every local user and process that can connect to it controls rsupd"
        );
        until_stopped(&token, "the --insecure-tcp listener", {
            tonic::transport::Server::builder()
                .layer(metrics::GrpcMetricsLayer)
                .add_routes(routes.clone())
                .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned())
        })
        .await
    };
    notify_ready();
    let (unix, tls, insecure) = tokio::join!(unix, tls, insecure);
    token.cancel();
    let _ = stopper.await;
    let result = unix.and(tls).and(insecure);
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    runtime.shutdown().await;
    let _ = std::fs::remove_file(&config.socket);
    if let Some(p) = &config.docker_socket {
        let _ = std::fs::remove_file(p);
    }
    info!("rsupd stopped; running containers keep running and are re-adopted at the next start");
    result
}

/// Runs one listener's server; when it ends, for any reason, the others
/// stop too.
async fn until_stopped(
    token: &CancellationToken,
    what: &str,
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
) -> anyhow::Result<()> {
    let result = server.await;
    token.cancel();
    result.with_context(|| format!("serving gRPC on {what}"))
}
