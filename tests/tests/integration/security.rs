//! Least privilege inside containers, checked the way runc's and Docker's
//! security tests do it: from the process's own `/proc/self/status`
//! (capability sets, NoNewPrivs, Seccomp) and by trying what a container
//! must not be able to do (mount, namespaces, kernel tunables, raw block
//! devices). Also `--cap-add`/`--cap-drop`, `--privileged`, `-u` and
//! `--security-opt` end to end, and the bad input they refuse.
//!
//! The seccomp profile: `unshare`/`setns` and a handmade static probe (a
//! 200-byte x86_64 ELF that makes one system call and exits with its errno)
//! for the calls busybox has no applet for (`keyctl`, `add_key`); custom
//! profiles in Docker's format through `--security-opt seccomp=FILE`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rsup_client::proto;
use rsup_tests::{
    CgroupMount, Daemon, NamedCgroup, cgroup_mounts, cgroup_subtree, code_of, container_ids,
    describe, run_named, run_named_ok, stderr, stdout, unique_name,
};
use tonic::Code;

/// Docker's default capabilities, by number (linux/capability.h).
const DEFAULT_CAPS: [(&str, u32); 14] = [
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_RAW", 13),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_MKNOD", 27),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// The capability mask `/proc/PID/status` shows for Docker's defaults.
fn default_mask() -> u64 {
    DEFAULT_CAPS
        .iter()
        .fold(0, |mask, (_, bit)| mask | 1 << bit)
}

/// `rsupctl run FLAGS... -- COMMAND...` (with a unique `--name` unless
/// FLAGS has one), any outcome.
fn run(d: &Daemon, flags: &[&str], command: &[&str]) -> Output {
    run_named(d, "sec", flags, command)
}

/// [`run`] that must exit 0; returns stdout.
fn run_ok(d: &Daemon, flags: &[&str], command: &[&str]) -> String {
    run_named_ok(d, "sec", flags, command)
}

/// Fields of `/proc/self/status` as the container's command sees them.
fn status_of(d: &Daemon, flags: &[&str]) -> BTreeMap<String, String> {
    parse_status(&run_ok(d, flags, &["cat", "/proc/self/status"]))
}

fn parse_status(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// A capability mask field (`CapEff`, ...) of a parsed status.
fn mask(status: &BTreeMap<String, String>, field: &str) -> u64 {
    let text = status
        .get(field)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status: {status:?}"));
    u64::from_str_radix(text, 16).unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
}

fn field<'a>(status: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    status
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status: {status:?}"))
}

/// This test process's own status (rsupd inherits its bounding set).
fn host_status() -> BTreeMap<String, String> {
    parse_status(&fs::read_to_string("/proc/self/status").expect("read /proc/self/status"))
}

/// The lines of `text` that start with `key=`, as the value after it.
fn marker<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread")]
async fn default_container_has_exactly_the_default_capabilities() {
    let d = Daemon::start().await;
    let want = default_mask();
    assert_eq!(want, 0x0000_0000_a804_25fb, "Docker's default mask");
    let status = status_of(&d, &[]);
    for set in ["CapBnd", "CapPrm", "CapEff", "CapInh"] {
        assert_eq!(
            mask(&status, set),
            want,
            "{set} is {:#018x}, want {want:#018x}",
            mask(&status, set)
        );
    }
    assert_eq!(mask(&status, "CapAmb"), 0);
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(field(&status, "Seccomp"), "2", "a seccomp filter is on");

    // inspect shows the same set, and the defaults of the other settings.
    let name = unique_name("sec");
    run_ok(&d, &["--name", &name], &["true"]);
    let host = &d.inspect_json(&name)["HostConfig"];
    let caps: BTreeSet<&str> = host["CapAdd"]
        .as_array()
        .unwrap_or_else(|| panic!("CapAdd: {host}"))
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let want: BTreeSet<&str> = DEFAULT_CAPS.iter().map(|(n, _)| *n).collect();
    assert_eq!(caps, want, "{host}");
    assert_eq!(host["Privileged"], false, "{host}");
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["seccomp=default"]),
        "{host}"
    );
}

/// The host's root block device as (major, minor), or why there is none.
fn host_root_disk() -> Result<(u64, u64), String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    // "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,..."
    let line = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .ok_or("no / in /proc/self/mountinfo")?;
    let source = line
        .split_once(" - ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .unwrap_or_default();
    if let Ok(meta) = fs::metadata(source)
        && meta.file_type().is_block_device()
    {
        let rdev = meta.rdev();
        return Ok((libc::major(rdev).into(), libc::minor(rdev).into()));
    }
    let dev = fs::metadata("/").map_err(|e| e.to_string())?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        return Err(format!(
            "/ is on {source:?}, not a block device ({major}:{minor})"
        ));
    }
    Ok((major.into(), minor.into()))
}

#[tokio::test(flavor = "multi_thread")]
async fn dangerous_operations_fail() {
    let d = Daemon::start().await;
    let script = "\
        mkdir -p /mnt; mount -t tmpfs x /mnt 2>&1; echo mount=$?; \
        echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c); \
        echo keys=$(cat /proc/keys 2>/dev/null | wc -c); \
        echo keys_dev=$(stat -c %t:%T /proc/keys); \
        echo timer_list=$(cat /proc/timer_list 2>/dev/null | wc -c); \
        (echo pwned > /proc/sys/kernel/domainname) 2>&1; echo domainname=$?; \
        echo proc_sys=$(grep -c ' /proc/sys proc ro[ ,]' /proc/mounts); \
        echo sysrq=$(grep -c ' /proc/sysrq-trigger proc ro[ ,]' /proc/mounts); \
        unshare -U true 2>&1; echo unshare_user=$?; \
        unshare -n true 2>&1; echo unshare_net=$?; \
        nsenter -t 1 -n true 2>&1; echo nsenter=$?; \
        echo done=1";
    let out = run_ok(&d, &[], &["sh", "-c", script]);
    let failed = |key: &str| {
        let code = marker(&out, key).unwrap_or_else(|| panic!("no {key}= in\n{out}"));
        assert_ne!(
            code, "0",
            "{key} succeeded inside a default container:\n{out}"
        );
    };
    failed("mount");
    failed("domainname");
    failed("unshare_user");
    failed("unshare_net");
    failed("nsenter");
    assert_eq!(marker(&out, "done"), Some("1"), "{out}");
    // Masked: nothing to read (or not there at all).
    assert_eq!(marker(&out, "kcore"), Some("0"), "{out}");
    assert_eq!(
        marker(&out, "keys"),
        Some("0"),
        "/proc/keys is not masked:\n{out}"
    );
    assert_eq!(
        marker(&out, "keys_dev"),
        Some("1:3"),
        "/proc/keys is not /dev/null:\n{out}"
    );
    assert_eq!(marker(&out, "timer_list"), Some("0"), "{out}");
    assert_eq!(
        marker(&out, "proc_sys"),
        Some("1"),
        "/proc/sys is not a read-only mount:\n{out}"
    );
    if Path::new("/proc/sysrq-trigger").exists() {
        assert_eq!(
            marker(&out, "sysrq"),
            Some("1"),
            "/proc/sysrq-trigger is not a read-only mount:\n{out}"
        );
    }
    // The seccomp profile says EPERM, not ENOSYS.
    assert!(
        out.contains("Operation not permitted"),
        "no EPERM among the failures:\n{out}"
    );

    // The host's root disk (or /dev/sda's numbers where the host has none,
    // as in the v2 VM whose root is 9p, or cannot read its own, so that an
    // EPERM would not be rsup's doing): CAP_MKNOD makes the node, the device
    // filter (v1 devices cgroup, v2 eBPF program) refuses to open it.
    let (major, minor) = host_root_disk()
        .and_then(|(major, minor)| host_reads_block_device(major, minor).map(|()| (major, minor)))
        .unwrap_or_else(|why| {
            eprintln!("no readable host disk ({why}): checking b 8:0 instead");
            (8, 0)
        });
    if !device_filter_expected(&d).await {
        return;
    }
    let script = format!(
        "mknod /tmp/hostdisk b {major} {minor} 2>&1; echo mknod=$?; \
         head -c 512 /tmp/hostdisk 2>&1 >/dev/null; echo read=$?"
    );
    let out = run_ok(&d, &[], &["sh", "-c", &script]);
    assert_eq!(marker(&out, "mknod"), Some("0"), "mknod failed:\n{out}");
    assert_ne!(
        marker(&out, "read"),
        Some("0"),
        "the host's disk {major}:{minor} is readable inside:\n{out}"
    );
    assert!(out.contains("Operation not permitted"), "{out}");
}

/// Whether this process (outside any container) can read a byte of the
/// block device `major:minor`: not where the test itself runs confined.
fn host_reads_block_device(major: u64, minor: u64) -> Result<(), String> {
    use std::io::Read;
    let dir = rsup_tests::TempDir::new();
    let node = dir.path().join("disk");
    let dev = libc::makedev(
        u32::try_from(major).map_err(|e| e.to_string())?,
        u32::try_from(minor).map_err(|e| e.to_string())?,
    );
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        dev,
    )
    .map_err(|e| format!("mknod {major}:{minor}: {e}"))?;
    let mut byte = [0u8; 1];
    fs::File::open(&node)
        .and_then(|mut f| f.read_exact(&mut byte))
        .map_err(|e| format!("the host itself cannot read {major}:{minor}: {e}"))
}

/// Whether rsupd enforces a device filter: always on cgroup v2 (an eBPF
/// program); on v1 only where the devices controller is mounted (the test
/// says so and is skipped otherwise).
async fn device_filter_expected(d: &Daemon) -> bool {
    let driver = d.client().info().await.expect("info").cgroup_driver;
    if driver == "v1" && !Path::new("/sys/fs/cgroup/devices/devices.list").exists() {
        eprintln!("skipping the device checks: cgroup v1 without the devices controller");
        return false;
    }
    true
}

/// `e=$(COMMAND 2>&1 >/dev/null); echo "KEY=$?:$e"`: the exit code and the
/// error message of COMMAND as one marker line.
fn attempt(key: &str, command: &str) -> String {
    format!("e=$({command} 2>&1 >/dev/null); echo \"{key}=$?:$e\"; ")
}

/// The (exit code, message) of an [`attempt`] in `out`.
fn outcome<'a>(out: &'a str, key: &str) -> (&'a str, &'a str) {
    marker(out, key)
        .and_then(|v| v.split_once(':'))
        .unwrap_or_else(|| panic!("no {key}= in\n{out}"))
}

/// Only the standard devices can be opened in a default container (the
/// same list on v1's devices cgroup and v2's eBPF program), nodes for
/// others can be made but not opened; a privileged container has no filter.
/// 8:0 is /dev/sda and 10:200 /dev/net/tun, denied whether or not they
/// exist here (without the filter, a missing one fails with ENXIO or
/// ENODEV, not EPERM).
#[tokio::test(flavor = "multi_thread")]
async fn devices_only_the_standard_ones_unless_privileged() {
    let d = Daemon::start().await;
    if !device_filter_expected(&d).await {
        return;
    }
    let nodes = "mknod /tmp/sda b 8 0 && mknod /tmp/tun c 10 200 && mknod /tmp/zero2 c 1 5 \
                 && echo nodes=ok; ";
    let mut script = nodes.to_owned();
    script += &attempt("read_sda", "head -c1 /tmp/sda");
    script += &attempt("write_sda", "sh -c 'echo x > /tmp/sda'");
    script += &attempt("open_tun", "sh -c ': < /tmp/tun'");
    script += &attempt("write_full", "sh -c 'echo x > /dev/full'");
    script += &attempt("write_null", "sh -c 'echo x > /dev/null'");
    script += "echo zero=$(head -c3 /dev/zero | wc -c); \
               echo zero2=$(head -c3 /tmp/zero2 | wc -c); \
               echo urandom=$(head -c4 /dev/urandom | wc -c); \
               echo random=$(head -c4 /dev/random | wc -c); \
               echo stdio=ok; echo stdio=err >&2";
    let out = run(&d, &[], &["sh", "-c", &script]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(marker(&text, "nodes"), Some("ok"), "mknod failed:\n{text}");
    for key in ["read_sda", "write_sda", "open_tun"] {
        let (code, message) = outcome(&text, key);
        assert_ne!(code, "0", "{key} succeeded in a default container:\n{text}");
        assert!(
            message.contains("Operation not permitted"),
            "{key} failed, but not with EPERM:\n{text}"
        );
    }
    // /dev/full opens (the write then fails with ENOSPC), /dev/null takes it.
    let (code, message) = outcome(&text, "write_full");
    assert!(
        code != "0" && message.contains("No space left on device"),
        "{text}"
    );
    assert_eq!(outcome(&text, "write_null"), ("0", ""), "{text}");
    assert_eq!(marker(&text, "zero"), Some("3"), "{text}");
    assert_eq!(
        marker(&text, "zero2"),
        Some("3"),
        "a made node of an allowed device:\n{text}"
    );
    assert_eq!(marker(&text, "urandom"), Some("4"), "{text}");
    assert_eq!(marker(&text, "random"), Some("4"), "{text}");
    assert_eq!(marker(&text, "stdio"), Some("ok"), "{text}");
    assert!(stderr(&out).contains("stdio=err"), "{}", describe(&out));

    // Privileged: nothing is refused for being a device.
    let mut script = nodes.to_owned();
    script += &attempt("read_sda", "head -c1 /tmp/sda");
    script += &attempt("open_tun", "sh -c ': < /tmp/tun'");
    let host_disk = host_root_disk()
        .and_then(|(major, minor)| host_reads_block_device(major, minor).map(|()| (major, minor)));
    if let Ok((major, minor)) = host_disk {
        script += &format!(
            "mknod /tmp/root b {major} {minor}; echo root=$(head -c1 /tmp/root | wc -c); "
        );
    }
    let text = run_ok(&d, &["--privileged"], &["sh", "-c", &script]);
    assert_eq!(marker(&text, "nodes"), Some("ok"), "mknod failed:\n{text}");
    for key in ["read_sda", "open_tun"] {
        let (_, message) = outcome(&text, key);
        assert!(
            !message.contains("Operation not permitted"),
            "{key} refused in a privileged container:\n{text}"
        );
    }
    match host_disk {
        Ok(_) => assert_eq!(marker(&text, "root"), Some("1"), "{text}"),
        Err(why) => eprintln!("no read of the host's disk: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_runs_as_1000_with_no_extra_groups() {
    let d = Daemon::start().await;
    let out = run_ok(&d, &["-u", "1000:1000"], &["id"]);
    // "uid=1000(app) gid=1000(app) groups=1000(app)"; groups= may be absent.
    let fields: BTreeMap<&str, &str> = out
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    let number = |v: &str| v.split('(').next().unwrap_or_default().to_owned();
    assert_eq!(
        fields.get("uid").map(|v| number(v)).as_deref(),
        Some("1000"),
        "{out}"
    );
    assert_eq!(
        fields.get("gid").map(|v| number(v)).as_deref(),
        Some("1000"),
        "{out}"
    );
    if let Some(groups) = fields.get("groups") {
        let groups: Vec<String> = groups.split(',').map(number).collect();
        assert!(
            groups.iter().all(|g| g == "1000"),
            "supplementary groups besides 1000: {out}"
        );
    }

    let status = status_of(&d, &["-u", "1000:1000"]);
    assert_eq!(mask(&status, "CapEff"), 0, "{status:?}");
    assert_eq!(mask(&status, "CapPrm"), 0, "{status:?}");
    assert_eq!(mask(&status, "CapAmb"), 0, "{status:?}");
    assert_eq!(mask(&status, "CapBnd"), default_mask(), "{status:?}");
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(
        field(&status, "Uid").split_whitespace().next(),
        Some("1000")
    );
    assert_eq!(field(&status, "Groups"), "", "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cap_drop_all_leaves_none() {
    let d = Daemon::start().await;
    let status = status_of(&d, &["--cap-drop", "ALL"]);
    for set in ["CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert_eq!(mask(&status, set), 0, "{set}: {status:?}");
    }
    // Dropping one, by either spelling.
    let status = status_of(&d, &["--cap-drop", "chown", "--cap-drop", "CAP_KILL"]);
    assert_eq!(
        mask(&status, "CapEff"),
        default_mask() & !(1 << 0) & !(1 << 5),
        "{status:?}"
    );
    // Even root cannot chown without CAP_CHOWN.
    let out = run(
        &d,
        &["--cap-drop", "ALL"],
        &["sh", "-c", "touch /tmp/f && chown 1000 /tmp/f"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cap_add_adds() {
    let d = Daemon::start().await;
    let status = status_of(&d, &["--cap-add", "NET_ADMIN"]);
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(
            mask(&status, set),
            default_mask() | 1 << CAP_NET_ADMIN,
            "{set}: {status:?}"
        );
    }

    let mtu = ["ip", "link", "set", "lo", "mtu", "60000"];
    let out = run(&d, &["--network", "none"], &mtu);
    assert_ne!(
        out.status.code(),
        Some(0),
        "changed lo's MTU without NET_ADMIN\n{}",
        describe(&out)
    );
    let out = run_ok(
        &d,
        &["--network", "none", "--cap-add", "CAP_NET_ADMIN"],
        &["sh", "-c", "ip link set lo mtu 60000 && ip link show lo"],
    );
    assert!(out.contains("mtu 60000"), "{out}");

    let name = unique_name("sec");
    run_ok(&d, &["--name", &name, "--cap-add", "net_admin"], &["true"]);
    let caps = d.inspect_json(&name)["HostConfig"]["CapAdd"].clone();
    let caps = caps.as_array().cloned().unwrap_or_default();
    assert_eq!(caps.len(), DEFAULT_CAPS.len() + 1, "{caps:?}");
    assert!(caps.iter().any(|c| c == "CAP_NET_ADMIN"), "{caps:?}");
}

/// Every capability, by number (linux/capability.h).
const ALL_CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities both this kernel and this list know, as a mask.
fn known_caps() -> u64 {
    let last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok())
        .unwrap_or(ALL_CAPS.len() - 1)
        .min(ALL_CAPS.len() - 1);
    (1u64 << (last + 1)) - 1
}

/// Known capabilities missing from this process's bounding set, which rsupd
/// (its child) can therefore not hand out either.
fn caps_the_host_lacks() -> Vec<&'static str> {
    let bounding = mask(&host_status(), "CapBnd");
    let known = known_caps();
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| known & 1 << bit != 0 && bounding & 1 << bit == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// `--privileged` plus `extra` flags: every capability the host allows, no
/// seccomp filter, no no_new_privs, and mount works.
fn check_privileged(d: &Daemon, extra: &[&str]) {
    let host = host_status();
    let want = mask(&host, "CapBnd") & known_caps();
    let mut flags = vec!["--privileged"];
    flags.extend_from_slice(extra);
    let status = status_of(d, &flags);
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(
            mask(&status, set),
            want,
            "{set} is {:#x}, want every capability the host has, {want:#x}",
            mask(&status, set)
        );
    }
    assert_eq!(field(&status, "Seccomp"), "0", "{status:?}");
    assert_eq!(field(&status, "NoNewPrivs"), "0", "{status:?}");

    let mut script = flags.clone();
    script.extend(["--network", "none"]);
    let out = run_ok(
        d,
        &script,
        &[
            "sh",
            "-c",
            "mkdir -p /mnt && mount -t tmpfs x /mnt && grep ' /mnt ' /proc/mounts",
        ],
    );
    assert!(out.contains("tmpfs"), "{out}");

    let name = unique_name("sec");
    let mut named = vec!["--name", name.as_str()];
    named.extend_from_slice(&flags);
    run_ok(d, &named, &["true"]);
    let host_config = &d.inspect_json(&name)["HostConfig"];
    assert_eq!(host_config["Privileged"], true, "{host_config}");
    assert_eq!(
        host_config["SecurityOpt"],
        serde_json::json!(["seccomp=unconfined"]),
        "{host_config}"
    );
    let caps = host_config["CapAdd"].as_array().map_or(0, Vec::len);
    assert_eq!(caps as u32, want.count_ones(), "{host_config}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs an rsupd that holds every capability (this machine's lacks CAP_SYS_RESOURCE, \
            so a privileged container gets all of rsupd's but not that one); \
            privileged_minus_what_the_host_lacks checks the same on any machine"]
async fn privileged_has_all_and_no_seccomp() {
    let d = Daemon::start().await;
    check_privileged(&d, &[]);
}

/// [`privileged_has_all_and_no_seccomp`] with `--cap-drop` of what the host
/// cannot give anyway (nothing, on a machine with every capability).
#[tokio::test(flavor = "multi_thread")]
async fn privileged_minus_what_the_host_lacks() {
    let d = Daemon::start().await;
    let lacking = caps_the_host_lacks();
    if !lacking.is_empty() {
        eprintln!("the host lacks {lacking:?}: dropping them");
    }
    let flags: Vec<&str> = lacking.iter().flat_map(|c| ["--cap-drop", *c]).collect();
    check_privileged(&d, &flags);
}

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_unconfined_allows_unshare() {
    let d = Daemon::start().await;
    let script = "grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo unshare_user=$?";
    let out = run_ok(
        &d,
        &["--security-opt", "seccomp=unconfined"],
        &["sh", "-c", script],
    );
    let status = parse_status(&out);
    assert_eq!(field(&status, "Seccomp"), "0", "{out}");
    // A user namespace needs no capability: only the profile refused it. If
    // the host itself cannot make one, the Seccomp field has to do.
    let host_can = std::process::Command::new("/bin/busybox")
        .args(["unshare", "-U", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if host_can {
        assert_eq!(marker(&out, "unshare_user"), Some("0"), "{out}");
    } else {
        eprintln!("the host cannot create user namespaces; checked Seccomp only");
    }

    // The default profile lets unshare through for a container with
    // CAP_SYS_ADMIN, which then can make a network namespace.
    let out = run_ok(
        &d,
        &["--cap-add", "SYS_ADMIN"],
        &[
            "sh",
            "-c",
            "grep -E 'Seccomp:|CapEff:' /proc/self/status; unshare -n true 2>&1; echo unshare_net=$?",
        ],
    );
    let status = parse_status(&out);
    assert_eq!(field(&status, "Seccomp"), "2", "{out}");
    assert_ne!(mask(&status, "CapEff") & 1 << CAP_SYS_ADMIN, 0, "{out}");
    assert_eq!(marker(&out, "unshare_net"), Some("0"), "{out}");

    // seccomp=default and no-new-privileges are accepted and change nothing.
    let status = status_of(
        &d,
        &[
            "--security-opt",
            "seccomp=default",
            "--security-opt",
            "no-new-privileges",
        ],
    );
    assert_eq!(field(&status, "Seccomp"), "2", "{status:?}");
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status:?}");
    assert_eq!(mask(&status, "CapEff"), default_mask());
}

#[tokio::test(flavor = "multi_thread")]
async fn security_bad_input() {
    let d = Daemon::start().await;
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let cases: [(&str, proto::ContainerSpec); 5] = [
        (
            "cap_add FLY",
            proto::ContainerSpec {
                cap_add: strings(&["FLY"]),
                ..d.spec(&unique_name("bad"), &["true"])
            },
        ),
        (
            "cap_drop CAP_FLY",
            proto::ContainerSpec {
                cap_drop: strings(&["CAP_FLY"]),
                ..d.spec(&unique_name("bad"), &["true"])
            },
        ),
        (
            "seccomp profile file",
            proto::ContainerSpec {
                security_opt: strings(&["seccomp=/nonexistent.json"]),
                ..d.spec(&unique_name("bad"), &["true"])
            },
        ),
        (
            "apparmor",
            proto::ContainerSpec {
                security_opt: strings(&["apparmor=x"]),
                ..d.spec(&unique_name("bad"), &["true"])
            },
        ),
        (
            "label=disable",
            proto::ContainerSpec {
                security_opt: strings(&["label=disable"]),
                ..d.spec(&unique_name("bad"), &["true"])
            },
        ),
    ];
    let before = container_ids(d.client()).await;
    for (what, spec) in cases {
        let code = code_of(what, d.client().create(spec).await);
        assert_eq!(code, Code::InvalidArgument, "{what}");
        assert_eq!(
            container_ids(d.client()).await,
            before,
            "{what}: a rejected create left a container"
        );
    }

    // Through rsupctl: refused before anything runs, with the reason.
    let out = run(&d, &["--cap-add", "FLY"], &["true"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr(&out).contains("FLY"), "{}", describe(&out));
    let out = run(
        &d,
        &["--security-opt", "seccomp=/nonexistent.json"],
        &["true"],
    );
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert_eq!(
        container_ids(d.client()).await,
        before,
        "rsupctl left a container"
    );
}

/// Writes `json` as a profile file in the daemon's directory; returns its
/// `--security-opt` value.
fn profile_opt(d: &Daemon, name: &str, json: &str) -> String {
    let path = d.dir().join(format!("{name}.json"));
    fs::write(&path, json).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    format!("seccomp={}", path.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_profile_denies_mkdir_and_survives_a_restart() {
    let mut d = Daemon::start().await;
    // ENOSPC, so the failure cannot be anything but this profile.
    let opt = profile_opt(
        &d,
        "no-mkdir",
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28,
                 "comment": "no new directories", "args": [], "includes": {}, "excludes": {}}
            ]
        }"#,
    );
    let script = "mkdir /tmp/x 2>&1; echo mkdir=$?; \
                  touch /tmp/f; echo touch=$?; ls /bin >/dev/null; echo ls=$?; \
                  unshare -U true 2>/dev/null; echo unshare=$?; \
                  grep Seccomp /proc/self/status";
    let name = unique_name("sec");
    let out = run_ok(
        &d,
        &["--name", &name, "--security-opt", &opt],
        &["sh", "-c", script],
    );
    assert_ne!(marker(&out, "mkdir"), Some("0"), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert_eq!(marker(&out, "touch"), Some("0"), "{out}");
    assert_eq!(marker(&out, "ls"), Some("0"), "{out}");
    let status = parse_status(&out);
    assert_eq!(field(&status, "Seccomp"), "2", "{out}");
    // One program, not one per action (the field exists since Linux 5.9).
    if let Some(filters) = status.get("Seccomp_filters") {
        assert_eq!(filters, "1", "{out}");
    }
    // The profile replaces the default one: a user namespace is allowed
    // (where the host can make one).
    let host_can = std::process::Command::new("/bin/busybox")
        .args(["unshare", "-U", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if host_can {
        assert_eq!(marker(&out, "unshare"), Some("0"), "{out}");
    }
    let host = &d.inspect_json(&name)["HostConfig"];
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["seccomp=custom"]),
        "{host}"
    );

    // The daemon keeps the profile (not the file): a restart of the daemon
    // and of the container applies it again.
    fs::remove_file(opt.trim_start_matches("seccomp=")).expect("remove the profile file");
    d.restart().await;
    d.ctl_ok(["start", name.as_str()]);
    d.ctl_ok(["wait", name.as_str()]);
    let logs = d.ctl_ok(["logs", name.as_str()]);
    assert_eq!(
        logs.matches("No space left on device").count(),
        2,
        "the second start ran without the profile:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_profile_argument_conditions() {
    let d = Daemon::start().await;
    // personality(PER_LINUX32) fails with EACCES, personality(PER_LINUX)
    // works; socket(AF_INET, ...) fails with EAFNOSUPPORT, netlink works.
    let opt = profile_opt(
        &d,
        "args",
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
                {"name": "socket", "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
                 "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}
            ]
        }"#,
    );
    let script = "linux32 uname -m 2>&1; echo linux32=$?; \
                  linux64 uname -m 2>&1; echo linux64=$?; \
                  ip link show lo >/dev/null 2>&1; echo netlink=$?; \
                  nc 127.0.0.1 1 </dev/null 2>&1; echo inet=$?";
    let out = run_ok(
        &d,
        &["--network", "none", "--security-opt", &opt],
        &["sh", "-c", script],
    );
    assert_ne!(marker(&out, "linux32"), Some("0"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert_eq!(marker(&out, "linux64"), Some("0"), "{out}");
    assert_eq!(marker(&out, "netlink"), Some("0"), "{out}");
    assert_ne!(marker(&out, "inet"), Some("0"), "{out}");
    assert!(
        out.contains("Address family not supported"),
        "socket(AF_INET) did not fail with EAFNOSUPPORT:\n{out}"
    );

    // The same commands under the default profile: all allowed but nc,
    // which finds no listener.
    let out = run_ok(&d, &["--network", "none"], &["sh", "-c", script]);
    assert_eq!(marker(&out, "linux32"), Some("0"), "{out}");
    assert_eq!(marker(&out, "linux64"), Some("0"), "{out}");
    assert_eq!(marker(&out, "netlink"), Some("0"), "{out}");
    assert!(!out.contains("Address family not supported"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_seccomp_profiles_are_refused() {
    let d = Daemon::start().await;
    let cases: [(&str, &str); 6] = [
        ("{\"defaultAction\": ", "not a valid profile"),
        (r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#, "SCMP_ACT_MAYBE"),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            "index 7",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_SOMETIMES"}]}]}"#,
            "SCMP_CMP_SOMETIMES",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}"#,
            "no system call names",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["rm -rf"],"action":"SCMP_ACT_ERRNO"}]}"#,
            "is not a system call name",
        ),
    ];
    let before = container_ids(d.client()).await;
    for (i, (json, reason)) in cases.iter().enumerate() {
        // Through rsupctl: exit 125, the reason on stderr.
        let opt = profile_opt(&d, &format!("bad{i}"), json);
        let out = run(&d, &["--security-opt", &opt], &["true"]);
        assert_eq!(out.status.code(), Some(125), "{json}\n{}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains(reason) && err.contains("seccomp"),
            "{json}: stderr does not say {reason:?}:\n{}",
            describe(&out)
        );
        // Over gRPC: INVALID_ARGUMENT with the reason.
        let spec = proto::ContainerSpec {
            seccomp_profile: (*json).to_owned(),
            ..d.spec(&unique_name("bad"), &["true"])
        };
        match d.client().create(spec).await {
            Ok(c) => panic!("{json}: created {c:?}"),
            Err(e) => {
                assert_eq!(e.code(), Some(Code::InvalidArgument), "{json}: {e}");
                assert!(e.to_string().contains(reason), "{json}: {e}");
            }
        }
        assert_eq!(
            container_ids(d.client()).await,
            before,
            "{json}: a refused create left a container"
        );
    }
    // A profile with --privileged, or with seccomp=unconfined: refused.
    let good = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
    for spec in [
        proto::ContainerSpec {
            seccomp_profile: good.to_owned(),
            privileged: true,
            ..d.spec(&unique_name("bad"), &["true"])
        },
        proto::ContainerSpec {
            seccomp_profile: good.to_owned(),
            security_opt: vec!["seccomp=unconfined".to_owned()],
            ..d.spec(&unique_name("bad"), &["true"])
        },
    ] {
        let code = code_of("profile conflict", d.client().create(spec).await);
        assert_eq!(code, Code::InvalidArgument);
    }
    assert_eq!(container_ids(d.client()).await, before);
}

/// A static x86_64 ELF that calls `nr` with three arguments and exits
/// with the errno it got (0 on success).
fn syscall_probe(nr: u32, args: [i32; 3]) -> Vec<u8> {
    let mut code = vec![0xb8];
    code.extend(nr.to_le_bytes()); // mov eax, nr
    for (arg, reg) in args.iter().zip([0xc7u8, 0xc6, 0xc2]) {
        code.extend([0x48, 0xc7, reg]); // mov rdi/rsi/rdx, imm32 (sign-extended)
        code.extend(arg.to_le_bytes());
    }
    code.extend([0x0f, 0x05]); // syscall
    code.extend([0x31, 0xff]); // xor edi, edi
    code.extend([0x48, 0x85, 0xc0]); // test rax, rax
    code.extend([0x79, 0x04]); // jns +4
    code.extend([0xf7, 0xd8]); // neg eax
    code.extend([0x89, 0xc7]); // mov edi, eax
    code.extend([0xb8, 60, 0, 0, 0]); // mov eax, SYS_exit
    code.extend([0x0f, 0x05]); // syscall
    rsup_tests::static_x86_64_elf(&code)
}

#[tokio::test(flavor = "multi_thread")]
async fn default_profile_refuses_the_keyring() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipping: the probe is an x86_64 program");
        return;
    }
    let d = Daemon::start().await;
    let dir = d.dir().join("probes");
    fs::create_dir_all(&dir).expect("probe dir");
    // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): no
    // capability needed; add_key(NULL, ...): EFAULT when allowed.
    for (name, nr, args) in [
        ("keyctl", libc::SYS_keyctl, [0, -3, 0]),
        ("add_key", libc::SYS_add_key, [0, 0, 0]),
    ] {
        let path = dir.join(name);
        fs::write(&path, syscall_probe(nr as u32, args)).expect("write probe");
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod probe");
    }
    let volume = format!("{}:/probe:ro", dir.display());
    let errno = |flags: &[&str], probe: &str| -> i32 {
        let mut all = vec!["--network", "none", "-v", volume.as_str()];
        all.extend_from_slice(flags);
        // Through sh: the daemon looks the command up in the rootfs only.
        let out = run(&d, &all, &["sh", "-c", &format!("exec /probe/{probe}")]);
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("{probe} {flags:?}: {}", describe(&out)));
        assert!(
            code < 125,
            "{probe} {flags:?} did not run:\n{}",
            describe(&out)
        );
        code
    };
    for probe in ["keyctl", "add_key"] {
        let unconfined = errno(&["--security-opt", "seccomp=unconfined"], probe);
        assert_ne!(
            unconfined,
            libc::EPERM,
            "{probe} fails with EPERM even unconfined: the check proves nothing"
        );
        assert_eq!(
            errno(&[], probe),
            libc::EPERM,
            "{probe} under the default profile"
        );
        // No capability opens the keyring.
        assert_eq!(
            errno(&["--cap-add", "ALL"], probe),
            libc::EPERM,
            "{probe} with every capability"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn busybox_works_under_the_default_profile() {
    let d = Daemon::start().await;
    // Each command reports its own exit status; the allow-list must let
    // everyday tools through (files, processes, sockets, time, IPC).
    let commands: [(&str, &str); 20] = [
        ("ls", "ls -la / /proc/self/"),
        ("cat", "cat /proc/self/status"),
        ("mkdir", "mkdir -p /tmp/a/b && rmdir /tmp/a/b"),
        (
            "files",
            "echo x > /tmp/f && cp /tmp/f /tmp/g && mv /tmp/g /tmp/h && ln -s /tmp/h /tmp/l && cat /tmp/l && rm /tmp/f /tmp/h /tmp/l",
        ),
        (
            "chmod",
            "touch /tmp/m && chmod 600 /tmp/m && chown 1000:1000 /tmp/m && stat -c %a /tmp/m",
        ),
        ("ps", "ps"),
        ("top", "top -b -n 1"),
        ("sleep", "sleep 0.1"),
        ("timeout", "timeout 1 sleep 0.1"),
        ("date", "date && uptime && free && df /"),
        ("id", "id && whoami && hostname"),
        ("pipes", "seq 1 1000 | sort -n | tail -1 | grep -q 1000"),
        ("bg", "sleep 5 & kill $! && wait $!; test $? -ne 0"),
        ("nice", "renice -n 1 -p $$ && ionice -c 3 true"),
        ("taskset", "taskset -p $$"),
        ("chroot", "chroot / true"),
        (
            "su",
            "su -s /bin/sh nobody -c true 2>/dev/null || setpriv --reuid 1000 --regid 1000 --clear-groups true",
        ),
        ("linux32", "linux32 uname -m"),
        (
            "http",
            "mkdir -p /tmp/www && echo page-ok > /tmp/www/i && \
                  (httpd -f -p 127.0.0.1:8080 -h /tmp/www & pid=$!; sleep 0.3; \
                   wget -q -O- http://127.0.0.1:8080/i; r=$?; kill $pid; exit $r)",
        ),
        (
            "nc",
            "(nc -l -p 9090 -e echo nc-ok &) ; sleep 0.3; nc 127.0.0.1 9090 </dev/null",
        ),
    ];
    let script: String = commands
        .iter()
        .map(|(name, cmd)| format!("( {cmd} ) >/tmp/out.{name} 2>&1; echo {name}=$?; "))
        .chain(
            commands
                .iter()
                .map(|(name, _)| format!("echo '--- {name}'; cat /tmp/out.{name}; ")),
        )
        .collect();
    let out = run_ok(&d, &["--network", "none"], &["sh", "-c", &script]);
    for (name, _) in commands {
        assert_eq!(marker(&out, name), Some("0"), "{name} failed:\n{out}");
    }
    assert!(out.contains("page-ok"), "{out}");
    let status = parse_status(&out);
    assert_eq!(field(&status, "Seccomp"), "2", "{out}");
    if let Some(filters) = status.get("Seccomp_filters") {
        assert_eq!(filters, "1", "one filter, installed once:\n{out}");
    }
    assert!(out.contains("nc-ok"), "{out}");
}

/// Lines of `/proc/self/cgroup` (as printed by a container) whose path is
/// not `/`.
fn cgroup_paths_not_root(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains(':'))
        .filter(|l| l.splitn(3, ':').nth(2) != Some("/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rsupd_binary_is_out_of_reach_of_the_container() {
    let d = Daemon::start().await;
    // PID 1 is rsup's init: rsupd's binary, made non-dumpable before it
    // forked, so container root (default capabilities) can neither resolve
    // nor open its /proc/1/exe (runc's CVE-2019-5736 class).
    let script = "readlink /proc/1/exe 2>&1; echo readlink=$?; \
                  cat /proc/1/exe 2>&1 >/dev/null; echo open=$?; \
                  cat /proc/1/environ 2>&1 >/dev/null; echo environ=$?; \
                  readlink /proc/self/exe; echo self=$?";
    let out = run_ok(&d, &[], &["sh", "-c", script]);
    for key in ["readlink", "open", "environ"] {
        assert_ne!(marker(&out, key), Some("0"), "{key} of /proc/1:\n{out}");
    }
    assert!(out.contains("Permission denied"), "{out}");
    // The command itself is dumpable again after its execve.
    assert_eq!(marker(&out, "self"), Some("0"), "{out}");
    assert!(out.contains("/bin/busybox"), "{out}");

    // During a long exec: the exec'd process runs normally (its execve
    // made it dumpable) and is seen as busybox from another exec, while
    // PID 1 stays closed.
    let name = unique_name("dumpable");
    let out = d.run(&["-d", "--name", &name], &["sleep", "1000"]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut long = d.ctl_command();
    long.args([
        "exec",
        &name,
        "sh",
        "-c",
        "echo $$ > /tmp/long.pid; exec sleep 30",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut long = long.spawn().expect("spawning rsupctl exec");
    let probe = "while [ ! -s /tmp/long.pid ]; do sleep 0.1; done; p=$(cat /tmp/long.pid); \
                 echo long=$(readlink /proc/$p/exe); \
                 readlink /proc/1/exe >/dev/null 2>&1; echo init=$?";
    let out = d.ctl(["exec", &name, "sh", "-c", probe]);
    // Our own child, not yet reaped: its pid is ours to kill.
    let _ = long.kill();
    let _ = long.wait();
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert_eq!(marker(&text, "long"), Some("/bin/busybox"), "{text}");
    assert_ne!(marker(&text, "init"), Some("0"), "{text}");
    d.ctl_ok(["rm", "-f", &name]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cgroupns_shows_the_container_its_own_cgroup_as_root() {
    let d = Daemon::start().await;
    // The command and an exec'd process see "/" in every hierarchy.
    let text = run_ok(&d, &[], &["cat", "/proc/self/cgroup"]);
    assert!(!text.trim().is_empty(), "empty /proc/self/cgroup");
    let outside = cgroup_paths_not_root(&text);
    assert!(
        outside.is_empty(),
        "paths outside the namespace: {outside:?}\n{text}"
    );
    let name = unique_name("cgns");
    let out = d.run(
        &["-d", "--name", &name, "--pids-limit", "77"],
        &["sleep", "1000"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = d.ctl_ok(["exec", &name, "cat", "/proc/self/cgroup"]);
    let outside = cgroup_paths_not_root(&text);
    assert!(
        outside.is_empty(),
        "exec: paths outside: {outside:?}\n{text}"
    );
    d.ctl_ok(["rm", "-f", &name]);

    // With CAP_SYS_ADMIN a container may mount a cgroup filesystem: it
    // shows the container's own cgroup as its root (its pids limit and its
    // own processes), never the host's hierarchy.
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    let mount = if v2 {
        "mount -t cgroup2 none /tmp/cg"
    } else {
        "mount -t cgroup -o pids none /tmp/cg"
    };
    let script = format!(
        "mkdir /tmp/cg && {mount} 2>&1; echo mount=$?; \
         echo max=$(cat /tmp/cg/pids.max); \
         grep -qx $$ /tmp/cg/cgroup.procs; echo mine=$?; \
         echo subdirs=$(find /tmp/cg -mindepth 1 -type d | wc -l); \
         echo procs=$(wc -l < /tmp/cg/cgroup.procs)"
    );
    let out = run_ok(
        &d,
        &["--cap-add", "SYS_ADMIN", "--pids-limit", "77"],
        &["sh", "-c", &script],
    );
    assert_eq!(marker(&out, "mount"), Some("0"), "{out}");
    assert_eq!(
        marker(&out, "max"),
        Some("77"),
        "not the container's cgroup:\n{out}"
    );
    assert_eq!(marker(&out, "mine"), Some("0"), "{out}");
    assert_eq!(
        marker(&out, "subdirs"),
        Some("0"),
        "the host's hierarchy shows:\n{out}"
    );
    let procs: u32 = marker(&out, "procs")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no procs= in\n{out}"));
    assert!(
        procs <= 5,
        "{procs} processes in the container's cgroup:\n{out}"
    );
}

/// The `mount -o` options that mount (again) the v1 hierarchy of `m`: its
/// controllers and its name (`none` when it has only a name).
fn v1_mount_options(m: &CgroupMount) -> String {
    let mut opts: Vec<&str> = m
        .options
        .iter()
        .map(String::as_str)
        .filter(|o| !matches!(*o, "rw" | "ro") && (!o.contains('=') || o.starts_with("name=")))
        .collect();
    if opts.iter().all(|o| o.starts_with("name=") || *o == "xattr") {
        opts.insert(0, "none");
    }
    opts.join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn cgroupns_no_hierarchy_root_in_reach_with_sys_admin() {
    // A named v1 hierarchy of this test only: mounted in the mount
    // namespace of its rsupd (so no other daemon of the run places
    // containers in it) before the daemon starts any container.
    let named = NamedCgroup::new();
    let (name, point) = (named.name().to_owned(), named.mount_point());
    let d = Daemon::start_in_mount_namespace::<&str>(&named.mount_command(), &[]).await;

    // Every hierarchy the daemon sees, as a container mounts it again:
    // the host's v1 ones, the named one, and cgroup2 (the driver's on v2,
    // the unused "unified" one of a hybrid host).
    let mut hierarchies: Vec<String> = cgroup_mounts()
        .iter()
        .filter(|m| !m.unified)
        .map(v1_mount_options)
        .collect();
    hierarchies.sort();
    hierarchies.dedup();
    hierarchies.push(format!("none,name={name}"));
    if cgroup_mounts().iter().any(|m| m.unified) {
        hierarchies.push("cgroup2".to_owned());
    }
    let mut script = String::from(
        "i=0; for o in \"$@\"; do i=$((i+1)); d=/tmp/cg$i; mkdir $d; \
         if [ $o = cgroup2 ]; then mount -t cgroup2 none $d; else mount -t cgroup -o $o cgroup $d; fi; \
         echo \"$o mount=$? ra=$(ls $d | grep -c release_agent) \
         dirs=$(find $d -mindepth 1 -type d | wc -l) mine=$(grep -cx $$ $d/cgroup.procs)\"; done",
    );
    script.push_str("; cat /proc/self/cgroup");
    let mut command = vec!["sh", "-c", &script, "sh"];
    command.extend(hierarchies.iter().map(String::as_str));
    let out = run_ok(&d, &["--cap-add", "SYS_ADMIN"], &command);
    for h in &hierarchies {
        let line = out
            .lines()
            .find(|l| l.split(' ').next() == Some(h.as_str()))
            .unwrap_or_else(|| panic!("no line for {h}:\n{out}"));
        // The container's own leaf: no release_agent (only a hierarchy's
        // root has one), no cgroups below, the shell itself in it.
        assert_eq!(
            line.split(' ').skip(1).collect::<Vec<_>>(),
            ["mount=0", "ra=0", "dirs=0", "mine=1"],
            "{h}: the container sees more than its own cgroup:\n{out}"
        );
    }
    let outside = cgroup_paths_not_root(&out);
    assert!(
        outside.is_empty(),
        "outside the namespace: {outside:?}\n{out}"
    );

    // On the daemon's side: the container's cgroup in the named hierarchy
    // holds its processes, an exec'd process sees "/" there too, and rm
    // removes it.
    let cname = unique_name("cgx");
    let leaf = run_in_named_leaf(&d, &cname, &point);
    let text = d.ctl_ok(["exec", &cname, "cat", "/proc/self/cgroup"]);
    assert!(text.contains(&format!("name={name}:/")), "{text}");
    let outside = cgroup_paths_not_root(&text);
    assert!(outside.is_empty(), "exec: outside: {outside:?}\n{text}");
    d.ctl_ok(["rm", "-f", &cname]);
    assert!(!leaf.exists(), "{} left after rm", leaf.display());
    // The daemon's teardown removes its subtree in the named hierarchy
    // while its namespace lives; then the hierarchy goes.
    drop(d);
    drop(named);
    let own = fs::read_to_string("/proc/self/cgroup").expect("read");
    assert!(
        !own.contains(&format!(":name={name}:")),
        "hierarchy left:\n{own}"
    );
}

/// Runs `sleep 1000` as `cname` and returns its cgroup in the named
/// hierarchy mounted at `point` in the daemon's mount namespace, after
/// checking that it holds the container's processes.
fn run_in_named_leaf(d: &Daemon, cname: &str, point: &Path) -> PathBuf {
    let started = d.run(&["-d", "--name", cname], &["sleep", "1000"]);
    assert!(started.status.success(), "{}", describe(&started));
    let id = d.inspect_json(cname)["Id"].as_str().expect("Id").to_owned();
    let leaf = PathBuf::from(format!("/proc/{}/root", d.pid()))
        .join(point.strip_prefix("/").expect("absolute"))
        .join(cgroup_subtree(d.state_dir()))
        .join(&id);
    let procs = fs::read_to_string(leaf.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("not placed in the hierarchy: {}: {e}", leaf.display()));
    assert!(!procs.trim().is_empty(), "no process in {}", leaf.display());
    leaf
}

/// A hierarchy mounted while rsupd runs (after it has placed containers,
/// so after it has read the mount table) holds the next container's leaf:
/// rsupd reads the mount table again when the kernel reports a change.
#[tokio::test(flavor = "multi_thread")]
async fn cgroupns_a_hierarchy_mounted_while_rsupd_runs_holds_the_next_container() {
    let named = NamedCgroup::new();
    let point = named.mount_point();
    let d = Daemon::start_in_mount_namespace::<&str>("true", &[]).await;
    run_ok(&d, &[], &["true"]);
    let mounted = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", d.pid()))
        .args(["sh", "-c", &named.mount_command()])
        .output()
        .expect("nsenter");
    assert!(mounted.status.success(), "{}", describe(&mounted));

    let cname = unique_name("cgm");
    let leaf = run_in_named_leaf(&d, &cname, &point);
    d.ctl_ok(["rm", "-f", &cname]);
    assert!(!leaf.exists(), "{} left after rm", leaf.display());
    drop(d);
    drop(named);
}

/// What a container with `CAP_SYS_PTRACE` could take over by ptracing its
/// PID 1 (rsup's init, rsupd's binary that never execs): its capability
/// sets and its open files, read from inside the container.
#[tokio::test(flavor = "multi_thread")]
async fn the_init_holds_nothing_a_ptracing_container_could_use() {
    let d = Daemon::start().await;
    let script = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/1/status | sed 's/^/init./'; \
                  grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status | sed 's/^/self./'; \
                  for f in /proc/1/fd/*; do echo \"fd $f $(readlink $f)\"; done";
    for flags in [
        &["--cap-add", "SYS_PTRACE"][..],
        &["--cap-add", "SYS_PTRACE", "--cap-drop", "KILL"][..],
        &["--cap-add", "SYS_PTRACE", "-u", "1000"][..],
    ] {
        let out = run_ok(&d, flags, &["sh", "-c", script]);
        let of = |prefix: &str| {
            parse_status(
                &out.lines()
                    .filter_map(|l| l.strip_prefix(prefix))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        };
        let (init, me) = (of("init."), of("self."));
        // The container's set is the command's bounding set.
        let container = mask(&me, "CapBnd");
        for set in ["CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"] {
            let m = mask(&init, set);
            assert_eq!(
                m & !container & !(1 << 5),
                0,
                "{flags:?}: the init's {set} {m:#x} exceeds the container's {container:#x}\n{out}"
            );
        }
        // After the start the init keeps at most CAP_KILL (to forward
        // signals to a command of another uid).
        assert_eq!(mask(&init, "CapPrm") & !(1 << 5), 0, "{flags:?}\n{out}");
        assert_eq!(mask(&init, "CapEff") & !(1 << 5), 0, "{flags:?}\n{out}");
        assert_eq!(field(&init, "NoNewPrivs"), "1", "{flags:?}\n{out}");
        assert_eq!(field(&init, "Seccomp"), "2", "{flags:?}\n{out}");
        if flags.contains(&"-u") {
            continue; // uid 1000 without capabilities cannot list them
        }
        // Its files: /dev/null for stdio, and the status pipe to its shim.
        let fds: Vec<&str> = out.lines().filter(|l| l.starts_with("fd ")).collect();
        assert!(!fds.is_empty(), "{flags:?}: cannot list /proc/1/fd\n{out}");
        let mut pipes = 0;
        for l in &fds {
            let target = l.rsplit(' ').next().unwrap_or_default();
            if target.starts_with("pipe:") {
                pipes += 1;
            } else {
                assert_eq!(target, "/dev/null", "{flags:?}: the init holds {l}\n{out}");
            }
        }
        assert!(pipes <= 1, "{flags:?}: more than the status pipe:\n{out}");
    }
}

/// The confined init still forwards signals to a command that runs as
/// another uid in a container without `CAP_KILL` (it keeps that one).
#[tokio::test(flavor = "multi_thread")]
async fn the_confined_init_still_forwards_signals() {
    let d = Daemon::start().await;
    let name = unique_name("sec");
    let script = "trap 'echo got-usr1' USR1; echo ready; while true; do sleep 1; done";
    let out = d.run(
        &["-d", "--name", &name, "-u", "1000", "--cap-drop", "ALL"],
        &["sh", "-c", script],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    d.wait_log_line(&name, "ready", std::time::Duration::from_secs(10))
        .await;
    let out = d.ctl(["kill", "-s", "USR1", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    d.wait_log_line(&name, "got-usr1", std::time::Duration::from_secs(10))
        .await;
    d.ctl_ok(["rm", "-f", &name]);
}

/// An exec'd process has no parent inside the container (the exec helper
/// forks it into the container's PID namespace from outside), and its own
/// sets are the container's.
#[tokio::test(flavor = "multi_thread")]
async fn an_exec_has_no_privileged_parent_in_the_container() {
    let d = Daemon::start().await;
    let name = unique_name("sec");
    let started = d.run(
        &["-d", "--name", &name, "--cap-add", "SYS_PTRACE"],
        &["sleep", "100000"],
    );
    assert_eq!(started.status.code(), Some(0), "{}", describe(&started));
    let out = d.ctl_ok(["exec", &name, "cat", "/proc/self/status"]);
    let status = parse_status(&out);
    assert_eq!(field(&status, "PPid"), "0", "{out}");
    let want = default_mask() | 1 << 19;
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(mask(&status, set), want, "{set}\n{out}");
    }
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{out}");
    assert_eq!(field(&status, "Seccomp"), "2", "{out}");
    d.ctl_ok(["rm", "-f", &name]);
}

/// CPU time (user + system, in clock ticks) of process `pid`.
fn cpu_ticks(pid: i64) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name, which ends at the last ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// With `CAP_SYS_PTRACE` a container can open its init's status pipe
/// through `/proc/1/fd/N` and write into it. The shim reads that pipe
/// outside the container's cgroup: it must stop at the protocol's bounds
/// (no CPU spent on the flood) and still record the command's real exit.
#[tokio::test(flavor = "multi_thread")]
async fn a_flooded_status_pipe_costs_the_shim_nothing() {
    let d = Daemon::start().await;
    let name = unique_name("flood");
    // The flood starts once the container runs (a flood before the init's
    // `started` line fails the container's own start instead).
    let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; \
                  for f in /proc/1/fd/*; do \
                    if [ -p \"$f\" ]; then head -c 268435456 /dev/zero > \"$f\" & fi; \
                  done; touch /tmp/flooding; \
                  while [ ! -e /tmp/stop ]; do sleep 0.1; done; exit 7";
    let out = d.run(
        &["-d", "--name", &name, "--cap-add", "SYS_PTRACE"],
        &["sh", "-c", script],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let id = stdout(&out).trim().to_owned();
    let shim = d
        .state_json(&id)
        .and_then(|v| v["shim_pid"].as_i64())
        .filter(|&p| p > 0)
        .expect("shim pid in state.json");
    d.ctl_ok(["exec", &name, "touch", "/tmp/go"]);
    rsup_tests::eventually(
        "the flood to start",
        std::time::Duration::from_secs(20),
        async || {
            let out = d.ctl(["exec", &name, "test", "-e", "/tmp/flooding"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(describe(&out))
            }
        },
    )
    .await;
    // Two seconds of flood: the old reader (unbounded, quadratic) spent
    // whole seconds of CPU on each megabyte; the bounded one stops reading.
    let before = cpu_ticks(shim);
    let mut spent = 0;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        spent = cpu_ticks(shim) - before;
    }
    assert!(spent < 30, "the shim spent {spent} ticks on the flood");
    // The real exit is recorded although the pipe is full and unread.
    d.ctl_ok(["exec", &name, "touch", "/tmp/stop"]);
    let out = d.ctl(["wait", &name]);
    assert_eq!(stdout(&out).trim(), "7", "{}", describe(&out));
    let shim_log = fs::read_to_string(d.container_dir(&id).join("shim.log")).unwrap_or_default();
    assert!(
        shim_log.contains("status pipe: a status line longer than 8 KiB"),
        "{shim_log}"
    );
    d.ctl_ok(["rm", "-f", &name]);
}
