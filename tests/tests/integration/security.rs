//! Least privilege inside containers, checked the way runc's and Docker's
//! security tests do it: from the process's own `/proc/self/status`
//! (capability sets, NoNewPrivs, Seccomp) and by trying what a container
//! must not be able to do (mount, namespaces, kernel tunables, raw block
//! devices). Also `--cap-add`/`--cap-drop`, `--privileged`, `-u` and
//! `--security-opt` end to end, and the bad input they refuse.
//!
//! The `keyctl`/`add_key` denials of the seccomp profile have no busybox
//! applet to exercise them; the profile's unit tests in the runtime cover
//! them, and `unshare`/`setns` stand in for the profile here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Output;

use rsup_client::proto;
use rsup_tests::{
    Daemon, code_of, container_ids, describe, run_named, run_named_ok, stderr, unique_name,
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
