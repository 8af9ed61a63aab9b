//! `/etc/hostname`, `/etc/hosts` and (with a network) `/etc/resolv.conf`,
//! as Docker does them: written into the container's own directory
//! (`containers/<id>/hostname|hosts|resolv.conf`, 0644, the container
//! root's with a user namespace) and bind-mounted, read-write, onto the files
//! in the root, which are resolved (or created) inside the root.
//!
//! Invariants: nothing is ever written through an image's symlink (the
//! content goes to rsup's own file; the image's file is only a mount
//! target), and a read-only root keeps them working. A file is left alone
//! (with a line in shim.log) when `/etc` is missing or its target is not a
//! regular file inside the root (a dangling symlink, a directory, something
//! on procfs or sysfs), and when the user mounts something there.

use nix::mount::MsFlags;

use super::{Mount, Setup, SetupError, Step, path_err};
use crate::paths::RootDir;

impl Setup<'_> {
    /// See the module documentation.
    pub(super) fn mount_etc_files(&self, root: &RootDir) -> Result<(), SetupError> {
        let step = Step::EtcFiles;
        let spec = self.spec;
        if !root.resolve("etc").is_ok_and(|t| t.is_dir()) {
            eprintln!(
                "rsup-init: no /etc directory in the rootfs: hostname, hosts and resolv.conf not mounted"
            );
            return Ok(());
        }
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        match spec.networks.first() {
            Some(a) => hosts.push_str(&format!("{}\t{} {}\n", a.ip, spec.hostname, spec.name)),
            None => hosts.push_str(&format!("127.0.1.1\t{}\n", spec.hostname)),
        }
        let mut files = vec![
            ("hostname", format!("{}\n", spec.hostname)),
            ("hosts", hosts),
        ];
        // The network's embedded DNS server answers on its gateway.
        if let Some(a) = spec.networks.first() {
            files.push((
                "resolv.conf",
                format!("nameserver {}\noptions ndots:0\n", a.gateway),
            ));
        }
        let state = RootDir::open(self.dir).map_err(path_err(step))?;
        for (name, content) in files {
            let target_path = format!("/etc/{name}");
            if spec.mounts.iter().any(|m| m.target == target_path) {
                continue;
            }
            let target = match root.create_file(&target_path, 0o644) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("rsup-init: {target_path} not mounted: {e}");
                    continue;
                }
            };
            let usable = match self.sys.stat(&target) {
                Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFREG => {
                    Err(format!("{target_path} is not a regular file"))
                }
                Ok(_) => self
                    .ensure_mountable(&target, root)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("stat {target_path}: {e}")),
            };
            if let Err(e) = usable {
                eprintln!("rsup-init: {target_path} not mounted: {e}");
                continue;
            }
            state
                .write_file(name, content.as_bytes(), 0o644, None)
                .map_err(path_err(step))?;
            let source = state.resolve_nofollow(name).map_err(path_err(step))?;
            if let Some((u, g)) = self.owner {
                self.sys
                    .chown(&source, u, g)
                    .map_err(|source| SetupError::Sys {
                        step,
                        what: format!("chown {}", self.dir.join(name).display()).into(),
                        source,
                    })?;
            }
            let from = source.proc_path();
            self.mount_on(step, name, &target, Mount::bind(&from, MsFlags::empty()))?;
        }
        Ok(())
    }
}
