//! Isolation between networks when the host forwards IP: an nftables
//! table of rsupd's (see [`Networks::install_isolation`]).

use tracing::{info, warn};

use super::Networks;
use crate::lock::lock;

impl Networks {
    /// Networks are separate bridges; with IP forwarding off (the default,
    /// rsupd never turns it on) nothing crosses between them. When the host
    /// forwards, an nftables table `inet rsup_<prefix>` drops forwarded
    /// traffic between two of our bridges, and from `--internal` networks to
    /// anywhere else.
    pub(super) fn install_isolation(&self) {
        let forwarding =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1");
        if !forwarding {
            return;
        }
        let prefix = self.net_prefix();
        let table = format!("rsup_{prefix}");
        let mut rules = format!(
            "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    iifname \"{prefix}b*\" oifname \"{prefix}b*\" iifname != oifname drop\n"
        );
        for n in lock(&self.inner.list).iter().filter(|n| n.spec.internal) {
            rules.push_str(&format!(
                "    iifname \"{0}\" oifname != \"{0}\" drop\n",
                n.spec.bridge
            ));
        }
        rules.push_str("  }\n}\n");
        let run = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                if let Some(mut i) = c.stdin.take() {
                    i.write_all(rules.as_bytes())?;
                }
                c.wait_with_output()
            });
        match run {
            Ok(o) if o.status.success() => info!(%table, "network isolation rules installed"),
            Ok(o) => {
                warn!(stderr = %String::from_utf8_lossy(&o.stderr), "nft refused the isolation rules")
            }
            Err(e) => {
                warn!(error = %e, "IP forwarding is on but nft is not usable: networks are not isolated")
            }
        }
    }
}
