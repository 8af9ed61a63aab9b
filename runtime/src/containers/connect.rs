//! `network connect` and `network disconnect`: a container joins or leaves
//! one network after it was created. The lease and the spec on disk change
//! first; a running container also gets (or loses) the veth in its
//! sandbox at once, and its DNS names follow. A stopped one gets the
//! change at its next start (its sandbox is then incomplete and made
//! again).

use tracing::{info, warn};

use super::Containers;
use super::entry::ContainerState;
use crate::error::Error;
use crate::lock::lock;
use crate::names::{ContainerRef, NetworkName};
use crate::spec::net::NetPlan;
use crate::store;

impl Containers {
    /// Attaches container `key` to `network` with extra DNS `aliases`.
    pub async fn connect(
        &self,
        key: &ContainerRef,
        network: &NetworkName,
        aliases: Vec<String>,
    ) -> Result<(), Error> {
        let entry = self.find(key)?;
        let _op = entry.op.lock().await;
        let current = entry.attachments();
        if network == "none" {
            return Err(Error::InvalidArgument {
                field: "network",
                reason: "a container cannot join \"none\"".into(),
            });
        }
        if current.iter().any(|a| a.network == *network) {
            return Err(Error::AlreadyExists(format!(
                "container {} is already attached to network {network}",
                entry.spec.name
            )));
        }
        let plan = NetRequestPlan::new(network, aliases)?;
        let mut leased =
            self.inner
                .networks
                .lease_from(&entry.id, &plan.0, next_index(&current))?;
        let Some(attach) = leased.pop() else {
            return Err(Error::FailedPrecondition("no lease was made".into()));
        };
        let running = entry.status().state == ContainerState::Running;
        if running
            && let Err(e) = self
                .inner
                .networks
                .attach_live(&entry.dir.join("netns"), &attach)
                .await
        {
            self.inner
                .networks
                .release(&entry.id, std::slice::from_ref(&attach));
            return Err(e);
        }
        let mut next = current.clone();
        next.push(attach.clone());
        let mut spec = entry.current_spec();
        spec.networks = next.clone();
        if let Err(e) = store::write_json(&entry.dir.join("config.json"), &spec) {
            if running {
                let _ = self.inner.networks.detach_live(&attach).await;
            }
            self.inner
                .networks
                .release(&entry.id, std::slice::from_ref(&attach));
            return Err(e.into());
        }
        *lock(&entry.networks) = next.clone();
        if current.is_empty() {
            // Its first network: from now on its names follow its state.
            self.spawn_dns_sync(&entry);
        }
        let live = running || entry.status().state == ContainerState::Restarting;
        self.inner
            .networks
            .set_names(&entry.id, &entry.spec.name, &next, live);
        info!(container = %entry.spec.name, %network, ip = %attach.ip, "connected");
        Ok(())
    }

    /// Detaches container `key` from `network`.
    pub async fn disconnect(&self, key: &ContainerRef, network: &NetworkName) -> Result<(), Error> {
        let entry = self.find(key)?;
        let _op = entry.op.lock().await;
        let current = entry.attachments();
        let Some(gone) = current.iter().find(|a| a.network == *network).cloned() else {
            return Err(Error::NotFound(format!(
                "container {} is not connected to network {network}",
                entry.spec.name
            )));
        };
        let next: Vec<_> = current
            .iter()
            .filter(|a| a.network != *network)
            .cloned()
            .collect();
        let config = entry.dir.join("config.json");
        let mut spec = entry.current_spec();
        spec.networks = next.clone();
        store::write_json(&config, &spec)?;
        // Then the live veth: if it cannot go, nothing changes (its address
        // must not be leased again while an interface holds it).
        if entry.status().state == ContainerState::Running
            && let Err(e) = self.inner.networks.detach_live(&gone).await
        {
            spec.networks = current;
            if let Err(w) = store::write_json(&config, &spec) {
                warn!(container = %entry.spec.name, error = %w, "cannot restore the spec");
            }
            return Err(e);
        }
        *lock(&entry.networks) = next.clone();
        self.inner.networks.set_names(
            &entry.id,
            &entry.spec.name,
            std::slice::from_ref(&gone),
            false,
        );
        let state = entry.status().state;
        let live = matches!(state, ContainerState::Running | ContainerState::Restarting);
        self.inner
            .networks
            .set_names(&entry.id, &entry.spec.name, &next, live);
        for f in self
            .inner
            .networks
            .release(&entry.id, std::slice::from_ref(&gone))
        {
            warn!(container = %entry.spec.name, %network, failure = %f, "release not saved");
        }
        info!(container = %entry.spec.name, %network, "disconnected");
        Ok(())
    }
}

/// The plan of one more network, its aliases checked as at create.
struct NetRequestPlan(NetPlan);

impl NetRequestPlan {
    fn new(network: &NetworkName, aliases: Vec<String>) -> Result<Self, Error> {
        let req = crate::spec::NetRequest {
            networks: vec![network.clone()],
            aliases,
            ip: String::new(),
            ports: Vec::new(),
        };
        Ok(NetRequestPlan(req.validate()?))
    }
}

/// The interface number of one more attachment: past every one in use
/// (`eth<n>`, after a disconnect too).
fn next_index(current: &[crate::spec::net::NetAttach]) -> usize {
    current
        .iter()
        .filter_map(|a| a.ifname.strip_prefix("eth")?.parse::<usize>().ok())
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::net::NetAttach;

    fn attach(ifname: &str) -> NetAttach {
        NetAttach {
            network: NetworkName::parse("n").expect("n"),
            ifname: ifname.into(),
            host_ifname: String::new(),
            ip: std::net::Ipv4Addr::LOCALHOST,
            prefix: 24,
            gateway: std::net::Ipv4Addr::LOCALHOST,
            aliases: Vec::new(),
        }
    }

    #[test]
    fn new_attachments_are_numbered_past_the_others() {
        assert_eq!(next_index(&[]), 0);
        assert_eq!(next_index(&[attach("eth0")]), 1);
        // eth1 left: the next is eth3, never a name still in use.
        assert_eq!(next_index(&[attach("eth0"), attach("eth2")]), 3);
    }

    #[test]
    fn aliases_are_checked_as_at_create() {
        let n = NetworkName::parse("n").expect("n");
        assert!(NetRequestPlan::new(&n, vec!["db".into()]).is_ok());
        assert!(NetRequestPlan::new(&n, vec!["Bad_Alias".into()]).is_err());
    }
}
