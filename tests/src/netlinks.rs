//! Host network links of test and bench daemons: the link prefix and
//! default subnet each daemon gets, the links of the host with a prefix, and
//! their removal when a daemon is torn down.
//!
//! Invariant: a daemon's links are named `<prefix>b…` (bridges) and
//! `<prefix>v…` (veths), and a test daemon's prefix is `z` + 3 hex digits
//! from its state dir (swept by `scripts/test.sh`), the bench's `bx`: cleanup
//! deletes by that exact prefix and never another daemon's links.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// Link prefix and default subnet of the daemon on `state_dir`: `z` + 3
/// hex digits, and a /24 in 10.100.0.0-10.163.255.0, from a hash of the path.
pub fn net_identity(state_dir: &Path) -> (String, String) {
    let mut h: u32 = 0x811c_9dc5;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (
        format!("z{:03x}", h & 0xfff),
        format!("10.{}.{}.0/24", 100 + ((h >> 12) & 0x3f), (h >> 18) & 0xff),
    )
}

/// Links of the host whose name starts with `prefix`, sorted.
pub fn host_links(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Deletes every link whose name starts with `prefix` followed by `b`
/// (bridge) or `v` (veth): what a daemon with that prefix made. A link that
/// cannot be deleted (and is still there: a veth goes with its peer) is
/// reported, not raised.
pub fn remove_links(prefix: &str) {
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('b') || rest.starts_with('v'));
        if !ours {
            continue;
        }
        let status = Command::new("ip")
            .args(["link", "del", &name])
            .stderr(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success())
            && Path::new("/sys/class/net").join(&name).exists()
        {
            eprintln!("warning: cannot delete link {name}");
        }
    }
}

/// The start of the host-side names of container `id`'s veths on a daemon
/// whose link prefix is `link_prefix` (rsupd names them
/// `<prefix>v<8 hex of an FNV-1a hash of the id><n>`): how a test tells the
/// veths of a container whose spec it cannot see.
pub fn veth_prefix(link_prefix: &str, id: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{link_prefix}v{h:08x}")
}
