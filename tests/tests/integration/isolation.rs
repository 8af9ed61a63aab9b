//! What a process inside a container sees: its own hostname (UTS namespace),
//! only its own processes (PID namespace, fresh /proc), only `lo` with
//! `--network none` and `lo` plus `eth0` on the default network (network
//! namespace), only the rootfs and never the host's files (mount namespace
//! over an overlay whose lower layer is never written), and the environment,
//! working directory and user it was given.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rsup_tests::{
    Daemon, ROOTFS_MARKER, TempDir, busybox_rootfs, describe, net_identity, run_named_ok, stdout,
    unique_name,
};

/// Runs `command` in a new container (named `iso-...`) and returns its
/// stdout; it must exit 0.
fn run_ok(d: &Daemon, flags: &[&str], command: &[&str]) -> String {
    run_named_ok(d, "iso", flags, command)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostname_is_the_container_name_unless_overridden() {
    let d = Daemon::start().await;
    let name = unique_name("host");
    let out = d.run(&["--name", &name], &["hostname"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out).trim(), name, "{}", describe(&out));

    let out = run_ok(&d, &["--hostname", "custom-host"], &["hostname"]);
    assert_eq!(out.trim(), "custom-host");

    // Without CAP_SYS_ADMIN (Docker's default set) the container cannot
    // change it, and the host's never changes.
    let host_before = nix::unistd::gethostname().expect("gethostname");
    let name = unique_name("iso");
    let out = d.run(
        &["--name", &name],
        &["sh", "-c", "hostname changed-inside 2>&1; hostname"],
    );
    let text = stdout(&out);
    assert!(text.contains("not permitted"), "{}", describe(&out));
    assert_eq!(text.lines().last().map(str::trim), Some(name.as_str()));
    assert_eq!(
        nix::unistd::gethostname().expect("gethostname"),
        host_before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ps_sees_only_the_container_processes() {
    let d = Daemon::start().await;
    let out = run_ok(&d, &[], &["ps"]);
    let pids: Vec<u32> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(pids.contains(&1), "no PID 1 (rsup's init) in\n{out}");
    // rsup's init, the command (ps itself), at most one helper.
    assert!(
        (2..=3).contains(&pids.len()),
        "expected init + ps, got {} processes:\n{out}",
        pids.len()
    );
    assert!(pids.iter().all(|&p| p < 10), "host-sized pids:\n{out}");

    // /proc is the container's: PID 1 is not the host's init.
    let host_init = fs::read("/proc/1/cmdline").expect("host /proc/1/cmdline");
    let inside = run_ok(&d, &[], &["cat", "/proc/1/cmdline"]);
    assert_ne!(
        inside.as_bytes(),
        host_init.as_slice(),
        "PID 1 inside is the host's init"
    );
}

/// `ip link` output as (name, flags), e.g. "1: lo: <LOOPBACK,UP,LOWER_UP> ..."
/// or "2: eth0@if7: <BROADCAST,...> ...".
fn ip_links(out: &str) -> Vec<(String, Vec<String>)> {
    out.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| {
            let mut parts = l.splitn(3, ": ");
            parts.next()?;
            let name = parts.next()?.split('@').next()?.to_owned();
            let rest = parts.next()?;
            let flags = rest
                .strip_prefix('<')
                .and_then(|r| r.split('>').next())
                .map(|f| f.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            Some((name, flags))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_link_shows_only_lo_and_it_is_up() {
    let d = Daemon::start().await;
    let out = run_ok(&d, &["--network", "none"], &["ip", "link"]);
    let links = ip_links(&out);
    let names: Vec<&str> = links.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["lo"], "ip link:\n{out}");
    assert!(links[0].1.iter().any(|f| f == "UP"), "lo is not up:\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn default_network_gives_lo_and_eth0_with_an_address_in_its_subnet() {
    let d = Daemon::start().await;
    let out = run_ok(&d, &[], &["sh", "-c", "ip link; echo ---; ip -o -4 addr"]);
    let (links, addrs) = out.split_once("---\n").expect("both outputs");
    let links = ip_links(links);
    let names: Vec<&str> = links.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["lo", "eth0"], "ip link:\n{out}");
    assert!(
        links
            .iter()
            .all(|(_, flags)| flags.iter().any(|f| f == "UP")),
        "a link is down:\n{out}"
    );

    // "2: eth0    inet 10.120.7.2/24 brd ... scope global eth0 ..."
    let (_, subnet) = net_identity(d.state_dir());
    let (net, prefix) = subnet.split_once('/').expect("a CIDR");
    let net: std::net::Ipv4Addr = net.parse().expect("an address");
    let prefix: u32 = prefix.parse().expect("a prefix length");
    let mask = u32::MAX << (32 - prefix);
    let eth0: Vec<(std::net::Ipv4Addr, u32)> = addrs
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("eth0"))
        .filter_map(|l| {
            let cidr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
            let (ip, len) = cidr.split_once('/')?;
            Some((ip.parse().ok()?, len.parse().ok()?))
        })
        .collect();
    assert_eq!(eth0.len(), 1, "eth0 addresses:\n{out}");
    let (ip, len) = eth0[0];
    assert_eq!(len, prefix, "{out}");
    assert_eq!(
        u32::from(ip) & mask,
        u32::from(net),
        "{ip} is outside the default subnet {subnet}\n{out}"
    );
    assert_ne!(ip.octets()[3], 1, "eth0 has the gateway's address\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_files_are_not_visible() {
    let d = Daemon::start().await;
    let host = TempDir::new();
    let marker = host.path().join("host-only-marker");
    fs::write(&marker, "host secret\n").expect("write marker");
    let marker = marker.to_str().expect("utf-8 path");

    let name = unique_name("hidden");
    let out = d.run(&["--name", &name], &["ls", marker]);
    assert!(
        !out.status.success(),
        "the host's {marker} is visible inside\n{}",
        describe(&out)
    );
    assert!(
        !stdout(&out).contains("host-only-marker"),
        "{}",
        describe(&out)
    );

    // The rootfs is there, the marker and the host's top-level directories are not.
    let script = format!(
        "test -x /bin/busybox || exit 10; test -e {marker} && exit 11; \
         test -d /proc/self || exit 12; ls -a /"
    );
    let listing = run_ok(&d, &[], &["sh", "-c", &script]);
    let rootfs_entries = dir_names(&busybox_rootfs());
    let leaked: Vec<String> = dir_names(Path::new("/"))
        .into_iter()
        .filter(|n| !rootfs_entries.contains(n))
        // Mount points a runtime may legitimately create inside.
        .filter(|n| !["run", "mnt", "dev", "proc", "sys", "tmp"].contains(&n.as_str()))
        .filter(|n| listing.split_whitespace().any(|e| e == n))
        .collect();
    assert!(
        leaked.is_empty(),
        "host directories {leaked:?} are visible inside; `ls -a /`:\n{listing}"
    );
}

fn dir_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_owned()))
        .collect()
}

/// Type, mode, owner, size, mtime and content (or link target) of every entry.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let meta = fs::symlink_metadata(dir).expect("stat");
        let rel = dir
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        out.insert(
            rel,
            format!(
                "dir {:o} {}:{} {}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime()
            ),
        );
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            if meta.is_dir() {
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("readlink");
                out.insert(rel, format!("link {}", target.display()));
            } else {
                let content = if meta.len() < 4096 {
                    String::from_utf8_lossy(&fs::read(&path).expect("read")).into_owned()
                } else {
                    String::new()
                };
                out.insert(
                    rel,
                    format!(
                        "file {:o} {}:{} {} {} {content:?}",
                        meta.mode(),
                        meta.uid(),
                        meta.gid(),
                        meta.len(),
                        meta.mtime()
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_inside_do_not_touch_the_rootfs() {
    let d = Daemon::start().await;
    let rootfs = busybox_rootfs();
    let before = snapshot(&rootfs);

    let script = format!(
        "echo changed > /{ROOTFS_MARKER} && cat /{ROOTFS_MARKER} && \
         echo new > /etc/created-inside && rm /bin/yes && mkdir /made-inside && \
         echo x > /tmp/scratch && chmod 700 /home/app"
    );
    let out = run_ok(&d, &[], &["sh", "-c", &script]);
    assert_eq!(out, "changed\n");

    let after = snapshot(&rootfs);
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "the rootfs directory changed: {changed:?}"
    );

    // Another container starts from the pristine rootfs.
    let out = run_ok(
        &d,
        &[],
        &[
            "sh",
            "-c",
            &format!(
                "cat /{ROOTFS_MARKER}; test -e /etc/created-inside && echo leaked; test -e /bin/yes && echo kept"
            ),
        ],
    );
    assert_eq!(out, "lower\nkept\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn env_workdir_and_user_are_applied() {
    let d = Daemon::start().await;
    let out = run_ok(
        &d,
        &[
            "-e",
            "GREETING=hello world",
            "-e",
            "OTHER=2",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
        ],
        &["sh", "-c", "echo \"$GREETING/$OTHER\"; pwd; id -u; id -g"],
    );
    assert_eq!(out, "hello world/2\n/tmp\n1000\n1000\n");

    // A user name is looked up in the rootfs' /etc/passwd.
    let out = run_ok(&d, &["-u", "app"], &["sh", "-c", "id -u; id -g"]);
    assert_eq!(out, "1000\n1000\n");

    // Defaults: root, in /.
    let out = run_ok(&d, &[], &["sh", "-c", "id -u; id -g; pwd"]);
    assert_eq!(out, "0\n0\n/\n");
}
