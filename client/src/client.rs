//! [`Client`]: one gRPC channel to rsupd (its Unix socket, or TCP with or
//! without mutual TLS) and a method per RPC.
//!
//! The channel is connected eagerly, so a missing or dead socket, or a server
//! certificate the client does not trust, is reported by [`Client::connect`]
//! (or [`Client::connect_host`]) as [`Error::Connect`] instead of surfacing on
//! the first call. (With TLS 1.3 a server that refuses the client's
//! certificate can only say so after the client's side of the handshake has
//! finished: that shows on the first call, as an `Unavailable` status.) Clones share the channel; tonic multiplexes concurrent calls over it.

use std::path::Path;

use hyper_util::rt::TokioIo;
use rsup_proto::v1 as proto;
use rsup_proto::v1::containers_client::ContainersClient;
use rsup_proto::v1::networks_client::NetworksClient;
use rsup_proto::v1::supervisors_client::SupervisorsClient;
use rsup_proto::v1::system_client::SystemClient;
use rsup_proto::v1::volumes_client::VolumesClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::tls::Tls;
use crate::{Error, Host, TlsFiles};

/// How long a TCP connect plus TLS handshake may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The authority is ignored: every connection goes to the Unix socket.
const PLACEHOLDER_URI: &str = "http://[::]:50051";

/// A connection to rsupd.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to the daemon listening on the Unix socket `socket`.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Client, Error> {
        let path = socket.as_ref().to_path_buf();
        let dial = path.clone();
        let channel =
            Endpoint::from_static(PLACEHOLDER_URI)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let dial = dial.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(dial).await?))
                    }
                }))
                .await
                .map_err(|source| Error::Connect {
                    target: path.display().to_string(),
                    source,
                })?;
        Ok(Client { channel })
    }

    /// Connects to `host`: its Unix socket, or TCP, with TLS when `tls` is
    /// given and in plaintext (rsupd's `--insecure-tcp`) when not. `tls` is
    /// ignored for a Unix socket. With TLS, a refused handshake or client
    /// certificate is reported here, as [`Error::Tls`].
    pub async fn connect_host(host: &Host, tls: Option<&TlsFiles>) -> Result<Client, Error> {
        let (name, port) = match host {
            Host::Unix(path) => return Client::connect(path).await,
            Host::Tcp { host, port } => (host, *port),
        };
        let authority = Host::authority(name, port);
        let target = host.to_string();
        let connect_err = |source| Error::Connect {
            target: target.clone(),
            source,
        };
        // The scheme only names the authority: TLS, when asked for, is done
        // by the connector below, not by tonic.
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(connect_err)?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = match tls {
            None => endpoint.connect().await.map_err(connect_err)?,
            Some(files) => {
                let tls = Tls::new(files, name)?;
                tls.preflight(&authority, &target, CONNECT_TIMEOUT).await?;
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let (tls, authority) = (tls.clone(), authority.clone());
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(tls.connect(&authority).await?))
                        }
                    }))
                    .await
                    .map_err(connect_err)?
            }
        };
        Ok(Client { channel })
    }

    /// The underlying channel, e.g. for a health-check client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated stub of the `Containers` service.
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel())
    }

    /// The generated stub of the `Supervisors` service.
    pub fn supervisors(&self) -> SupervisorsClient<Channel> {
        SupervisorsClient::new(self.channel())
    }

    /// The generated stub of the `Networks` service.
    pub fn networks(&self) -> NetworksClient<Channel> {
        NetworksClient::new(self.channel())
    }

    /// The generated stub of the `Volumes` service.
    pub fn volumes(&self) -> VolumesClient<Channel> {
        VolumesClient::new(self.channel())
    }

    /// The generated stub of the `System` service.
    pub fn system(&self) -> SystemClient<Channel> {
        SystemClient::new(self.channel())
    }

    /// Records a container from `spec`; nothing runs until [`Client::start`].
    pub async fn create(&self, spec: proto::ContainerSpec) -> Result<proto::Container, Error> {
        let request = proto::CreateRequest { spec: Some(spec) };
        let reply = self.containers().create(request).await?.into_inner();
        present(reply.container)
    }

    /// Starts a created or exited container.
    pub async fn start(&self, container: &str) -> Result<proto::Container, Error> {
        let request = proto::StartRequest {
            container: container.to_owned(),
        };
        let reply = self.containers().start(request).await?.into_inner();
        present(reply.container)
    }

    /// Sends SIGTERM, then SIGKILL after `timeout_seconds` (daemon default: 10).
    pub async fn stop(
        &self,
        container: &str,
        timeout_seconds: Option<u32>,
    ) -> Result<proto::Container, Error> {
        Ok(self.stop_with_warnings(container, timeout_seconds).await?.0)
    }

    /// [`Client::stop`], with the daemon's warnings (a state it could not
    /// save, ...).
    pub async fn stop_with_warnings(
        &self,
        container: &str,
        timeout_seconds: Option<u32>,
    ) -> Result<(proto::Container, Vec<String>), Error> {
        let request = proto::StopRequest {
            container: container.to_owned(),
            timeout_seconds,
        };
        let reply = self.containers().stop(request).await?.into_inner();
        Ok((present(reply.container)?, reply.warnings))
    }

    /// Sends `signal` ("KILL", "SIGTERM", "15"; empty means SIGKILL).
    pub async fn kill(&self, container: &str, signal: &str) -> Result<(), Error> {
        self.kill_with_warnings(container, signal).await?;
        Ok(())
    }

    /// [`Client::kill`], returning the daemon's warnings.
    pub async fn kill_with_warnings(
        &self,
        container: &str,
        signal: &str,
    ) -> Result<Vec<String>, Error> {
        let request = proto::KillRequest {
            container: container.to_owned(),
            signal: signal.to_owned(),
        };
        Ok(self.containers().kill(request).await?.into_inner().warnings)
    }

    /// Deletes a container; `force` kills a running one first.
    pub async fn remove(&self, container: &str, force: bool) -> Result<(), Error> {
        self.remove_with_warnings(container, force).await?;
        Ok(())
    }

    /// [`Client::remove`], returning the daemon's warnings (parts of the
    /// container it could not remove, ...).
    pub async fn remove_with_warnings(
        &self,
        container: &str,
        force: bool,
    ) -> Result<Vec<String>, Error> {
        let request = proto::RemoveRequest {
            container: container.to_owned(),
            force,
        };
        Ok(self
            .containers()
            .remove(request)
            .await?
            .into_inner()
            .warnings)
    }

    /// Running containers, or every container with `all`.
    pub async fn list(&self, all: bool) -> Result<Vec<proto::Container>, Error> {
        let reply = self
            .containers()
            .list(proto::ListRequest { all })
            .await?
            .into_inner();
        Ok(reply.containers)
    }

    /// Everything the daemon knows of one container.
    pub async fn inspect(&self, container: &str) -> Result<proto::Container, Error> {
        let request = proto::InspectRequest {
            container: container.to_owned(),
        };
        let reply = self.containers().inspect(request).await?.into_inner();
        present(reply.container)
    }

    /// Blocks until the container is not running and returns how it ended.
    pub async fn wait(&self, container: &str) -> Result<proto::ExitStatus, Error> {
        let request = proto::WaitRequest {
            container: container.to_owned(),
        };
        let reply = self.containers().wait(request).await?.into_inner();
        present(reply.status)
    }

    /// The container's log lines; with `follow` the stream stays open until
    /// the container stops, with `tail` it starts at the last `tail` lines.
    pub async fn logs(
        &self,
        container: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<tonic::Streaming<proto::LogEntry>, Error> {
        let request = proto::LogsRequest {
            container: container.to_owned(),
            follow,
            tail,
        };
        Ok(self.containers().logs(request).await?.into_inner())
    }

    /// Changes the resource limits of a container, running or not; only the
    /// fields set in `resources` change. Returns the updated container.
    pub async fn update(
        &self,
        container: &str,
        resources: proto::Resources,
    ) -> Result<proto::Container, Error> {
        let request = proto::UpdateRequest {
            container: container.to_owned(),
            resources: Some(resources),
        };
        let reply = self.containers().update(request).await?.into_inner();
        present(reply.container)
    }

    /// Resource usage of `containers` (every running one when empty): one
    /// sample, or with `stream` a sample every second until the stream is
    /// dropped.
    pub async fn stats(
        &self,
        containers: &[String],
        stream: bool,
    ) -> Result<tonic::Streaming<proto::StatsResponse>, Error> {
        let request = proto::StatsRequest {
            containers: containers.to_vec(),
            stream,
        };
        Ok(self.containers().stats(request).await?.into_inner())
    }

    /// Lifecycle events matching `request` (types and containers; empty
    /// means all), as they happen. With `since` set, the remembered events at
    /// or after that time come first. The stream ends only when the daemon
    /// closes it or it is dropped.
    pub async fn events(
        &self,
        request: proto::EventsRequest,
    ) -> Result<tonic::Streaming<proto::Event>, Error> {
        Ok(self.containers().events(request).await?.into_inner())
    }

    /// Runs a command inside a running container (its namespaces, cgroup,
    /// environment plus `request.env`, user and working directory unless
    /// overridden) and returns its exit code and output once it ended. A
    /// container that is not running is `FailedPrecondition`.
    pub async fn exec(&self, request: proto::ExecRequest) -> Result<proto::ExecResponse, Error> {
        Ok(self.containers().exec(request).await?.into_inner())
    }

    /// Creates a supervisor (a root when `request.parent` is empty) and
    /// returns it. Strategy, intensity and period are the daemon's to judge.
    pub async fn create_supervisor(
        &self,
        request: proto::CreateSupervisorRequest,
    ) -> Result<proto::Supervisor, Error> {
        Ok(self.supervisors().create(request).await?.into_inner())
    }

    /// Deletes a supervisor that has no children.
    pub async fn remove_supervisor(&self, name: &str) -> Result<(), Error> {
        let request = proto::RemoveSupervisorRequest {
            name: name.to_owned(),
        };
        self.supervisors().remove(request).await?;
        Ok(())
    }

    /// Every supervisor with its children (in start order), in creation order.
    pub async fn list_supervisors(&self) -> Result<Vec<proto::Supervisor>, Error> {
        let reply = self
            .supervisors()
            .list(proto::ListSupervisorsRequest {})
            .await?
            .into_inner();
        Ok(reply.supervisors)
    }

    /// Creates a network (bridge, address pool and DNS server) and returns
    /// it. An empty `request.subnet` lets the daemon pick a free /24, an
    /// empty gateway means the subnet's first address; the daemon judges the
    /// values.
    pub async fn create_network(
        &self,
        request: proto::CreateNetworkRequest,
    ) -> Result<proto::Network, Error> {
        Ok(self.networks().create(request).await?.into_inner())
    }

    /// Deletes a network no container uses (`FailedPrecondition` otherwise).
    pub async fn remove_network(&self, name: &str) -> Result<(), Error> {
        let request = proto::RemoveNetworkRequest {
            name: name.to_owned(),
        };
        self.networks().remove(request).await?;
        Ok(())
    }

    /// Every network, in creation order, with its leases.
    pub async fn list_networks(&self) -> Result<Vec<proto::Network>, Error> {
        let reply = self
            .networks()
            .list(proto::ListNetworksRequest {})
            .await?
            .into_inner();
        Ok(reply.networks)
    }

    /// One network with the addresses leased to containers on it.
    pub async fn inspect_network(&self, name: &str) -> Result<proto::Network, Error> {
        let request = proto::InspectNetworkRequest {
            name: name.to_owned(),
        };
        Ok(self.networks().inspect(request).await?.into_inner())
    }

    /// Creates a named volume and returns it; the daemon judges the name.
    pub async fn create_volume(&self, name: &str) -> Result<proto::Volume, Error> {
        let request = proto::CreateVolumeRequest {
            name: name.to_owned(),
        };
        Ok(self.volumes().create(request).await?.into_inner())
    }

    /// Deletes a volume no container uses (`FailedPrecondition` otherwise).
    pub async fn remove_volume(&self, name: &str) -> Result<(), Error> {
        let request = proto::RemoveVolumeRequest {
            name: name.to_owned(),
        };
        self.volumes().remove(request).await?;
        Ok(())
    }

    /// Every volume, with the containers that mount it.
    pub async fn list_volumes(&self) -> Result<Vec<proto::Volume>, Error> {
        let reply = self
            .volumes()
            .list(proto::ListVolumesRequest {})
            .await?
            .into_inner();
        Ok(reply.volumes)
    }

    /// One volume: its host directory, creation time and users.
    pub async fn inspect_volume(&self, name: &str) -> Result<proto::Volume, Error> {
        let request = proto::InspectVolumeRequest {
            name: name.to_owned(),
        };
        Ok(self.volumes().inspect(request).await?.into_inner())
    }

    /// Facts about the daemon: version, state directory, counts, cgroup driver.
    pub async fn info(&self) -> Result<proto::InfoResponse, Error> {
        Ok(self
            .system()
            .info(proto::InfoRequest {})
            .await?
            .into_inner())
    }
}

/// Unwraps a reply field the daemon must always set.
fn present<T>(field: Option<T>) -> Result<T, Error> {
    field.ok_or_else(|| Error::Status(tonic::Status::internal("empty reply")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_reply_field_is_an_internal_status() {
        let err = present::<proto::Container>(None).expect_err("None is an error");
        assert_eq!(err.code(), Some(tonic::Code::Internal));
        assert_eq!(err.to_string(), "empty reply");
    }

    #[tokio::test]
    async fn missing_socket_fails_at_connect() {
        let err = Client::connect("/nonexistent/rsupd.sock")
            .await
            .expect_err("no socket there");
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert_eq!(err.code(), None);
        assert!(
            err.to_string()
                .starts_with("cannot connect to rsupd at /nonexistent/rsupd.sock: ")
        );
    }
}
