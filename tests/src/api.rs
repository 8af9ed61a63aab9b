//! The gRPC API as the tests use it through the client library: specs on
//! the busybox rootfs, waiting for a container state, the status code of a
//! call that must fail, what containers exist, and a Networks stub.
//!
//! Invariant: waits poll with a bound ([`eventually`]); a helper that
//! expects an error panics, naming the call, when there is none.

use std::collections::BTreeSet;
use std::time::Duration;

use rsup_client::{Client, proto};

use crate::daemon::Daemon;
use crate::rootfs::busybox_rootfs;
use crate::wait::eventually;

impl Daemon {
    /// A spec running `command` on the busybox rootfs.
    pub fn spec(&self, name: &str, command: &[&str]) -> proto::ContainerSpec {
        proto::ContainerSpec {
            name: name.to_owned(),
            rootfs: busybox_rootfs().to_string_lossy().into_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    /// Polls the container until its state is `state`, and returns it.
    pub async fn wait_state(
        &self,
        name: &str,
        state: proto::ContainerState,
        timeout: Duration,
    ) -> proto::Container {
        eventually(&format!("{name} to be {state:?}"), timeout, async || {
            let c = self
                .client()
                .inspect(name)
                .await
                .map_err(|e| format!("inspect: {e}"))?;
            if c.state == state as i32 {
                Ok(c)
            } else {
                Err(format!(
                    "state is {:?}",
                    proto::ContainerState::try_from(c.state)
                ))
            }
        })
        .await
    }
}

/// The gRPC status code of a call that must fail; panics (naming `what`) if
/// it succeeded or failed without a status.
pub fn code_of<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, rsup_client::Error>,
) -> tonic::Code {
    match result {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("{what}: not a gRPC status: {e}")),
    }
}

/// The ids of every container the daemon knows (`list(all)`), to check that
/// a rejected request left nothing behind.
pub async fn container_ids(client: &Client) -> BTreeSet<String> {
    client
        .list(true)
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// A Networks stub on the client's channel (the proto's own, so that this
/// does not depend on the client library's convenience methods).
pub fn networks_stub(
    client: &Client,
) -> proto::networks_client::NetworksClient<tonic::transport::Channel> {
    proto::networks_client::NetworksClient::new(client.channel())
}
