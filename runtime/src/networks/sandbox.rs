//! A container's sandbox: its persistent network namespace, bound to a
//! file of its directory, with one veth per attachment (see the module
//! above). Made at the first start, kept across restarts, dropped at
//! remove.

use std::os::fd::AsFd;
use std::path::Path;

use tracing::warn;

use super::{NetworkError, Networks, veth_prefix};
use crate::error::Error;
use crate::netstack::Attachment;
use crate::spec::net::NetAttach;
use crate::sys;

impl Networks {
    /// Whether the sandbox bound at `netns` with the veths of
    /// `attachments` is all there; a container without networks needs none.
    pub async fn sandbox_complete(
        &self,
        netns: &Path,
        attachments: &[NetAttach],
    ) -> Result<bool, Error> {
        if attachments.is_empty() {
            return Ok(true);
        }
        let nl = self.netlink().await?;
        let mut all_there = is_netns_mount(netns);
        for a in attachments {
            all_there &= nl.link_index(&a.host_ifname).await.ok().flatten().is_some();
        }
        Ok(all_there)
    }

    /// Makes the sandbox from scratch (a half-made one is dropped first).
    /// On error, what it made is left for the caller's undo
    /// ([`Networks::drop_sandbox`]).
    pub async fn make_sandbox(&self, netns: &Path, attachments: &[NetAttach]) -> Result<(), Error> {
        let nl = self.netlink().await?;
        // Start over: drop a half-made sandbox.
        self.drop_sandbox(netns, attachments).await;
        let p = netns.to_path_buf();
        tokio::task::spawn_blocking(move || make_netns(&p))
            .await
            .map_err(|e| NetworkError::NetnsTask(e.to_string()))?
            .map_err(NetworkError::Netns)?;
        let fd = open_netns(netns)?;
        for (i, a) in attachments.iter().enumerate() {
            // The default route goes through the first network's gateway.
            self.attach_one(nl, &fd, a, i == 0).await?;
        }
        Ok(())
    }

    /// One veth of attachment `a` into the sandbox `fd` (its network
    /// brought up first); `default_route` through its gateway unless the
    /// network is internal.
    async fn attach_one(
        &self,
        nl: &crate::netstack::Netlink,
        fd: &std::fs::File,
        a: &NetAttach,
        default_route: bool,
    ) -> Result<(), Error> {
        let n = self
            .find_network(&a.network)
            .ok_or_else(|| Error::NotFound(format!("no such network: {}", a.network)))?;
        self.bring_up(&n).await?;
        let att = Attachment {
            host_name: &a.host_ifname,
            bridge: &n.spec.bridge,
            netns: fd.as_fd(),
            ifname: &a.ifname,
            addr: a.ip,
            prefix: a.prefix,
            gateway: (default_route && !n.spec.internal).then_some(a.gateway),
        };
        nl.attach(&att)
            .await
            .map_err(|source| NetworkError::Attach {
                network: a.network.to_string(),
                source,
            })?;
        Ok(())
    }

    /// Adds one attachment to the live sandbox bound at `netns` (a running
    /// container joining a network): a veth into it, no default route.
    pub async fn attach_live(&self, netns: &Path, a: &NetAttach) -> Result<(), Error> {
        let nl = self.netlink().await?;
        if !is_netns_mount(netns) {
            return Err(Error::FailedPrecondition(
                "the container has no network namespace of its own (--network none): \
                 connect it while it is stopped"
                    .into(),
            ));
        }
        let fd = open_netns(netns)?;
        self.attach_one(nl, &fd, a, false).await
    }

    /// Removes one attachment's veth from a live sandbox (`network
    /// disconnect`); a missing veth is fine.
    pub async fn detach_live(&self, a: &NetAttach) -> Result<(), Error> {
        let nl = self.netlink().await?;
        nl.delete_link(&a.host_ifname)
            .await
            .map_err(|e| Error::FailedPrecondition(format!("veth {}: {e}", a.host_ifname)))
    }

    /// Deletes the veths of `attachments` and unmounts the netns; missing
    /// parts are fine. Returns what could not be removed (also logged).
    pub async fn drop_sandbox(&self, netns: &Path, attachments: &[NetAttach]) -> Vec<String> {
        let mut failures = Vec::new();
        if attachments.is_empty() {
            return failures;
        }
        match self.netlink().await {
            Ok(nl) => {
                for a in attachments {
                    if let Err(e) = nl.delete_link(&a.host_ifname).await {
                        warn!(link = %a.host_ifname, error = %e, "cannot delete the veth");
                        failures.push(format!("veth {}: {e}", a.host_ifname));
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
        if let Err(e) = unmount_netns(netns) {
            failures.push(e);
        }
        failures
    }

    /// Deletes the host ends of container `id`'s veths when its attachments
    /// may not be known: those of `attachments` and every link named after
    /// its id. Returns what could not be deleted.
    pub async fn delete_veths_of(&self, id: &str, attachments: &[NetAttach]) -> Vec<String> {
        let nl = match self.netlink().await {
            Ok(nl) => nl,
            Err(e) => return vec![e.to_string()],
        };
        let prefix = veth_prefix(self.net_prefix(), id);
        let mut failures = Vec::new();
        let mut links: Vec<String> = match nl.links_with_prefix(&prefix).await {
            Ok(l) => l,
            Err(e) => {
                failures.push(e.to_string());
                Vec::new()
            }
        };
        for a in attachments {
            if !links.contains(&a.host_ifname) {
                links.push(a.host_ifname.clone());
            }
        }
        for l in links {
            if let Err(e) = nl.delete_link(&l).await {
                warn!(link = %l, error = %e, "cannot delete the veth");
                failures.push(format!("veth {l}: {e}"));
            }
        }
        failures
    }

    /// Whether `link` is one of container `id`'s veths (the host end of a
    /// veth is named after its container's id, see [`Networks::lease`]).
    pub fn is_veth_of(&self, link: &str, id: &str) -> bool {
        link.starts_with(&veth_prefix(self.net_prefix(), id))
    }
}

/// Unmounts and deletes a container's netns file; missing is fine. The
/// error says what is left (also logged).
/// The sandbox bound at `netns`, opened to move veths into it.
fn open_netns(netns: &Path) -> Result<std::fs::File, Error> {
    std::fs::File::open(netns).map_err(|source| {
        NetworkError::OpenNetns {
            path: netns.to_path_buf(),
            source,
        }
        .into()
    })
}

pub(crate) fn unmount_netns(path: &Path) -> Result<(), String> {
    if is_netns_mount(path)
        && let Err(e) = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
    {
        warn!(path = %path.display(), error = %e, "cannot unmount the netns");
        return Err(format!("unmounting {}: {e}", path.display()));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

/// Whether `path` is a bind-mounted network namespace.
fn is_netns_mount(path: &Path) -> bool {
    // An nsfs file reports st_dev of nsfs; a plain file does not have the
    // inode of a namespace. Compare with the magic via statfs.
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Creates a network namespace and binds it to `path`, on a thread of its
/// own (unshare only affects that thread; the daemon's threads keep theirs).
fn make_netns(path: &Path) -> std::io::Result<()> {
    let p = path.to_path_buf();
    std::thread::Builder::new()
        .name("rsup-mknetns".into())
        .spawn(move || -> std::io::Result<()> {
            // The mount point: root's alone, like every file of the state dir.
            {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(crate::store::PRIVATE_FILE_MODE)
                    .open(&p)?;
            }
            sys::unshare_net().map_err(std::io::Error::from)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(std::io::Error::from)?;
            // Bring lo up inside, once.
            let _ = sys::set_link_up("lo");
            Ok(())
        })?
        .join()
        .map_err(|_| std::io::Error::other("the netns thread panicked"))?
}
