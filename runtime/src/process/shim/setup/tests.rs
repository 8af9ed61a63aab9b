//! The setup steps on the recording fake ([`crate::sys::setup::fake`]): the
//! order, flags and targets of a container's mounts, and who owns what,
//! without root. Paths are real in a temporary directory; the rootfs there
//! stands for the overlay's view (the fake mounts nothing).

use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use serde_json::{Value, json};

use super::*;
use crate::sys::setup::fake::{Call, MountCall, RecordingSys};

struct Fixture {
    _tmp: tempfile::TempDir,
    /// The temporary directory, as the fake shows it: `<tmp>`.
    base: PathBuf,
    /// `<tmp>/state/containers/c1`, shown as `@` by [`Fixture::render`].
    dir: PathBuf,
    rootfs: PathBuf,
}

impl Fixture {
    /// A container directory whose rootfs has `/etc`, `/bin` and, in its
    /// `proc` and `sys`, a few of the paths Docker masks.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().canonicalize().expect("canonical");
        let dir = base.join("state/containers/c1");
        let rootfs = dir.join("rootfs");
        for d in ["etc", "bin", "proc/acpi", "proc/sys", "sys/firmware", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
        }
        for f in ["proc/kcore", "proc/keys", "proc/sysrq-trigger"] {
            std::fs::write(rootfs.join(f), "").expect("write");
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("write");
        Fixture {
            _tmp: tmp,
            base,
            dir,
            rootfs,
        }
    }

    /// A plain container's config.json, changed by `edit`.
    fn spec(&self, edit: impl FnOnce(&mut Value)) -> ContainerSpec {
        let mut v = json!({
            "name": "c1",
            "rootfs": self.base.join("lower"),
            "command": ["/bin/true"],
            "executable": "/bin/true",
            "env": ["PATH=/bin"],
            "working_dir": "/",
            "user_spec": "",
            "user": {"uid": 0, "gid": 0},
            "hostname": "c1host",
            "auto_remove": false,
            "log": {"max_size": 1000, "max_files": 1},
        });
        edit(&mut v);
        serde_json::from_value(v).expect("spec")
    }

    fn fake(&self) -> RecordingSys {
        RecordingSys::new(&self.base)
    }

    fn build(&self, sys: &RecordingSys, spec: &ContainerSpec) -> Result<(), SetupError> {
        Setup::new(sys, spec, &self.dir).build(&[self.base.join("lower")])
    }

    /// Builds a container that must succeed and returns its calls, rendered.
    fn calls(&self, spec: &ContainerSpec) -> Vec<String> {
        let sys = self.fake();
        self.build(&sys, spec).expect("setup");
        self.render(&sys.calls())
    }

    /// The calls as short lines, the container directory shown as `@`.
    fn render(&self, calls: &[Call]) -> Vec<String> {
        let base = self.base.display().to_string();
        calls
            .iter()
            .map(|c| {
                render(c)
                    .replace(&base, "<tmp>")
                    .replace("<tmp>/state/containers/c1", "@")
            })
            .collect()
    }
}

fn ms_names(f: MsFlags) -> String {
    let names = [
        (MsFlags::MS_RDONLY, "rdonly"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_REMOUNT, "remount"),
        (MsFlags::MS_BIND, "bind"),
        (MsFlags::MS_REC, "rec"),
        (MsFlags::MS_PRIVATE, "private"),
        (MsFlags::MS_STRICTATIME, "strictatime"),
        (MsFlags::MS_SYNCHRONOUS, "sync"),
        (MsFlags::MS_DIRSYNC, "dirsync"),
        (MsFlags::MS_NOATIME, "noatime"),
        (MsFlags::MS_NODIRATIME, "nodiratime"),
    ];
    let all = names.iter().fold(MsFlags::empty(), |a, (f, _)| a | *f);
    assert!(all.contains(f), "flags the test does not name: {f:?}");
    names
        .iter()
        .filter(|(n, _)| f.contains(*n))
        .map(|(_, s)| *s)
        .collect::<Vec<_>>()
        .join(",")
}

fn clone_names(f: CloneFlags) -> String {
    let names = [
        (CloneFlags::CLONE_NEWNS, "mnt"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWNET, "net"),
        (CloneFlags::CLONE_NEWUSER, "user"),
        (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
    ];
    names
        .iter()
        .filter(|(n, _)| f.contains(*n))
        .map(|(_, s)| *s)
        .collect::<Vec<_>>()
        .join(",")
}

fn render(c: &Call) -> String {
    match c {
        Call::Umask(m) => format!("umask {m:o}"),
        Call::Unshare(f) => format!("unshare {}", clone_names(*f)),
        Call::Setns { ns, flags } => format!("setns {ns} {}", clone_names(*flags)),
        Call::Mount(m) => render_mount(m),
        Call::CloneTree(p) => format!("open_tree {p} (clone,recursive)"),
        Call::TreeReadOnly(p) => format!("mount_setattr tree of {p} (rdonly,recursive)"),
        Call::AttachTree { source, target } => format!("move_mount tree of {source} on {target}"),
        Call::UmountDetach(t) => format!("umount -l {t}"),
        Call::PivotRoot { new_root, put_old } => format!("pivot_root {new_root} {put_old}"),
        Call::Fchdir(p) => format!("fchdir {p}"),
        Call::Chdir(p) => format!("chdir {p}"),
        Call::Sethostname(h) => format!("sethostname {h}"),
        Call::LinkUp(l) => format!("link up {l}"),
        Call::Mknod {
            path,
            major,
            minor,
            mode,
        } => format!("mknod {path} c {major} {minor} {mode:o}"),
        Call::Symlink { path, target } => format!("symlink {path} -> {target}"),
        Call::Chown { path, uid, gid } => format!("chown {path} {uid}:{gid}"),
        Call::ClearGroups => "setgroups []".into(),
        Call::Setresgid(g) => format!("setresgid {g}"),
        Call::Setresuid(u) => format!("setresuid {u}"),
        Call::ParentDeathSignal(s) => format!("pdeathsig {s}"),
    }
}

/// `mount SOURCE on TARGET [type FS] (FLAGS) [DATA]`, with the places the
/// source and target led to.
fn render_mount(m: &MountCall) -> String {
    let mut s = format!(
        "mount {} on {}",
        m.source_at.as_deref().unwrap_or("-"),
        m.target_at
    );
    if let Some(t) = &m.fstype {
        s.push_str(&format!(" type {t}"));
    }
    s.push_str(&format!(" ({})", ms_names(m.flags)));
    if let Some(d) = &m.data {
        s.push_str(&format!(" {d}"));
    }
    s
}

const DEV: [&str; 14] = [
    "mknod @/rootfs/dev/null c 1 3 666",
    "mknod @/rootfs/dev/zero c 1 5 666",
    "mknod @/rootfs/dev/full c 1 7 666",
    "mknod @/rootfs/dev/random c 1 8 666",
    "mknod @/rootfs/dev/urandom c 1 9 666",
    "mknod @/rootfs/dev/tty c 5 0 666",
    "mount devpts on @/rootfs/dev/pts type devpts (nosuid,noexec) newinstance,ptmxmode=0666,mode=0620",
    "mount shm on @/rootfs/dev/shm type tmpfs (nosuid,nodev,noexec) mode=1777,size=65536k",
    "symlink @/rootfs/dev/ptmx -> pts/ptmx",
    "symlink @/rootfs/dev/fd -> /proc/self/fd",
    "symlink @/rootfs/dev/stdin -> /proc/self/fd/0",
    "symlink @/rootfs/dev/stdout -> /proc/self/fd/1",
    "symlink @/rootfs/dev/stderr -> /proc/self/fd/2",
    "mount sysfs on @/rootfs/sys type sysfs (rdonly,nosuid,nodev,noexec)",
];

/// The masks of the fixture's /proc and /sys (those that exist there).
const MASKS: [&str; 6] = [
    "mount @/rootfs/dev/null on @/rootfs/proc/kcore (bind)",
    "mount @/rootfs/dev/null on @/rootfs/proc/keys (bind)",
    "mount tmpfs on @/rootfs/proc/acpi type tmpfs (rdonly) size=0",
    "mount tmpfs on @/rootfs/sys/firmware type tmpfs (rdonly) size=0",
    "mount @/rootfs/proc/sys on @/rootfs/proc/sys (bind,rec)",
    "mount - on @/rootfs/proc/sys (rdonly,nosuid,nodev,noexec,remount,bind)",
];

const MASKS_TAIL: [&str; 2] = [
    "mount @/rootfs/proc/sysrq-trigger on @/rootfs/proc/sysrq-trigger (bind,rec)",
    "mount - on @/rootfs/proc/sysrq-trigger (rdonly,nosuid,nodev,noexec,remount,bind)",
];

/// Where the calls of a plain container go, in order.
fn plain_calls() -> Vec<String> {
    let mut want: Vec<String> = [
        "umask 0",
        "unshare mnt,uts,ipc,net",
        "mount - on / (rec,private)",
        "mount overlay on @/rootfs type overlay () lowerdir=<tmp>/lower,upperdir=@/upper,workdir=@/work",
        "mount proc on @/rootfs/proc type proc (nosuid,nodev,noexec)",
        "mount tmpfs on @/rootfs/dev type tmpfs (nosuid,strictatime) mode=755,size=65536k",
    ]
    .iter()
    .chain(DEV.iter())
    .chain(
        [
            "mount @/hostname on @/rootfs/etc/hostname (bind)",
            "mount @/hosts on @/rootfs/etc/hosts (bind)",
            "sethostname c1host",
            "link up lo",
            "fchdir @/rootfs",
            "pivot_root . .",
            "umount -l .",
            "chdir /",
        ]
        .iter(),
    )
    .chain(MASKS.iter())
    .chain(MASKS_TAIL.iter())
    .map(|s| s.to_string())
    .collect();
    want.push("umask 22".into());
    want
}

#[test]
fn a_plain_container_is_set_up_in_order() {
    let f = Fixture::new();
    let calls = f.calls(&f.spec(|_| {}));
    assert_eq!(calls, plain_calls());
    // The /etc files are rsup's own, in the container's directory.
    let read = |n: &str| std::fs::read_to_string(f.dir.join(n)).expect("read");
    assert_eq!(read("hostname"), "c1host\n");
    assert_eq!(
        read("hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tc1host\n"
    );
    assert!(!f.dir.join("resolv.conf").exists());
    // The image's files are only mount targets: left empty.
    assert_eq!(
        std::fs::read(f.rootfs.join("etc/hosts")).expect("read"),
        b""
    );
}

#[test]
fn every_mount_target_in_the_root_is_a_resolved_fd_and_pivot_root_comes_after_them() {
    let f = Fixture::new();
    let host = f.base.join("host/src");
    std::fs::create_dir_all(&host).expect("mkdir");
    std::fs::create_dir_all(f.base.join("state/volumes/v1/_data")).expect("mkdir");
    let spec = f.spec(|v| {
        v["mounts"] = json!([
            {"kind": {"type": "volume", "name": "v1", "source": ""}, "target": "/data", "read_only": true},
            {"kind": {"type": "bind", "source": host}, "target": "/data/sub", "read_only": false},
            {"kind": {"type": "tmpfs", "options": "size=1m"}, "target": "/scratch", "read_only": false},
        ]);
        v["userns"] = json!({
            "uids": [{"container": 0, "host": 100000, "size": 65536}],
            "gids": [{"container": 0, "host": 100000, "size": 65536}],
        });
    });
    let sys = f.fake();
    f.build(&sys, &spec).expect("setup");
    let calls = sys.calls();
    let pivot = calls
        .iter()
        .position(|c| matches!(c, Call::PivotRoot { .. }))
        .expect("pivot_root");
    assert_eq!(
        calls[pivot - 1],
        Call::Fchdir("<tmp>/state/containers/c1/rootfs".into())
    );
    let rootfs = f.rootfs.display().to_string();
    let mut by_fd = 0;
    for (i, c) in calls.iter().enumerate() {
        if let Call::AttachTree { target, .. } = c {
            assert!(i < pivot, "attach after the pivot: {c:?}");
            assert!(
                target.starts_with("<tmp>/state/containers/c1/rootfs/"),
                "attach outside the root: {c:?}"
            );
            by_fd += 1;
            continue;
        }
        let Call::Mount(m) = c else { continue };
        let in_root = m.target_at.starts_with("<tmp>/state/containers/c1/rootfs/");
        if i < pivot {
            // Before the pivot, only the host's / (made private) and rsup's
            // own rootfs directory are named by path.
            if m.target == "/" || m.target == rootfs {
                continue;
            }
            assert!(
                m.target.starts_with("/proc/self/fd/"),
                "mount {i} by path: {m:?}"
            );
            assert!(in_root, "mount {i} outside the root: {m:?}");
            if let Some(src) = m.source.as_deref().filter(|s| s.starts_with('/')) {
                assert!(src.starts_with("/proc/self/fd/"), "source by path: {m:?}");
            }
            by_fd += 1;
        } else {
            // After it: the container's own paths, none of rsup's fds.
            assert!(!m.target.starts_with("/proc/self/fd/"), "{m:?}");
            assert!(m.target.starts_with('/') && in_root, "{m:?}");
        }
    }
    // proc, dev, devpts, shm, sys, 3 volumes (the read-only one attached
    // by fd), 2 /etc files.
    assert_eq!(by_fd, 10);
}

#[test]
fn read_only_remounts_the_root_last() {
    let f = Fixture::new();
    let calls = f.calls(&f.spec(|v| v["read_only"] = json!(true)));
    let mut want = plain_calls();
    want.insert(
        want.len() - 1,
        "mount - on @/rootfs (rdonly,remount,bind)".into(),
    );
    assert_eq!(calls, want);
}

#[test]
fn volumes_mount_parent_first_and_read_only_ones_are_made_so_before_they_are_attached() {
    let f = Fixture::new();
    let host = f.base.join("host");
    std::fs::create_dir_all(host.join("src")).expect("mkdir");
    std::fs::write(host.join("app.conf"), "x=1\n").expect("write");
    std::fs::create_dir_all(f.base.join("state/volumes/v1/_data")).expect("mkdir");
    let spec = f.spec(|v| {
        v["mounts"] = json!([
            {"kind": {"type": "tmpfs", "options": "size=1m,mode=1777"}, "target": "/data/sub/tmp", "read_only": true},
            {"kind": {"type": "bind", "source": host.join("src")}, "target": "/data/sub", "read_only": false},
            {"kind": {"type": "bind", "source": host.join("app.conf")}, "target": "/etc/app.conf", "read_only": true},
            {"kind": {"type": "volume", "name": "v1", "source": ""}, "target": "/data", "read_only": true},
            {"kind": {"type": "tmpfs", "options": "size=64m"}, "target": "/run", "read_only": false},
        ]);
    });
    let calls = f.calls(&spec);
    let sys_at = calls
        .iter()
        .position(|c| c.starts_with("mount sysfs"))
        .expect("sysfs");
    assert_eq!(
        calls[sys_at + 1..sys_at + 11],
        [
            "open_tree <tmp>/state/volumes/v1/_data (clone,recursive)",
            "mount_setattr tree of <tmp>/state/volumes/v1/_data (rdonly,recursive)",
            "move_mount tree of <tmp>/state/volumes/v1/_data on @/rootfs/data",
            // Specs written before tmpfs options were typed: exec allowed.
            "mount tmpfs on @/rootfs/run type tmpfs (nosuid,nodev) size=67108864",
            "mount <tmp>/host/src on @/rootfs/data/sub (bind,rec)",
            "open_tree <tmp>/host/app.conf (clone,recursive)",
            "mount_setattr tree of <tmp>/host/app.conf (rdonly,recursive)",
            "move_mount tree of <tmp>/host/app.conf on @/rootfs/etc/app.conf",
            "mount tmpfs on @/rootfs/data/sub/tmp type tmpfs (rdonly,nosuid,nodev) size=1048576,mode=1777",
            "mount @/hostname on @/rootfs/etc/hostname (bind)",
        ]
    );
    // A file source gets a file as its target, made in the root.
    assert!(f.rootfs.join("etc/app.conf").is_file());
    assert!(f.rootfs.join("data/sub/tmp").is_dir());
}

#[test]
fn tmpfs_options_become_the_mount_flags_and_data() {
    for (opt, want) in [
        // Docker's defaults.
        ("/t", "(nosuid,nodev,noexec)"),
        ("/t:rw,defaults", "(nosuid,nodev,noexec)"),
        ("/t:exec", "(nosuid,nodev)"),
        ("/t:noexec,exec,noexec", "(nosuid,nodev,noexec)"),
        ("/t:suid,dev", "(noexec)"),
        (
            "/t:ro,size=1m,mode=700,uid=5,gid=6",
            "(rdonly,nosuid,nodev,noexec) size=1048576,mode=700,uid=5,gid=6",
        ),
        (
            "/t:exec,suid,dev,sync,dirsync,noatime,nodiratime,size=10%,nr_inodes=1k",
            "(sync,dirsync,noatime,nodiratime) size=10%,nr_inodes=1024",
        ),
        (
            "/t:nr_blocks=16,async,atime,diratime",
            "(nosuid,nodev,noexec) nr_blocks=16",
        ),
    ] {
        let f = Fixture::new();
        let m = crate::spec::parse_tmpfs(opt).expect(opt);
        let spec = f.spec(|v| v["mounts"] = json!([m]));
        let calls = f.calls(&spec);
        let tmpfs: Vec<&String> = calls
            .iter()
            .filter(|c| c.starts_with("mount tmpfs on @/rootfs/t "))
            .collect();
        assert_eq!(
            tmpfs,
            [&format!("mount tmpfs on @/rootfs/t type tmpfs {want}")],
            "{opt}"
        );
    }
}

#[test]
fn without_the_new_mount_api_a_read_only_bind_is_remounted_once_checked() {
    // A fixture builds once (the fake really makes directories).
    let fixture = || {
        let f = Fixture::new();
        let host = f.base.join("host");
        std::fs::write(host_file(&host), "x=1\n").expect("write");
        std::fs::create_dir_all(f.base.join("state/volumes/v1/_data")).expect("mkdir");
        let spec = f.spec(|v| {
            v["mounts"] = json!([
                {"kind": {"type": "volume", "name": "v1", "source": ""}, "target": "/data", "read_only": true},
                {"kind": {"type": "bind", "source": host.join("app.conf")}, "target": "/etc/app.conf", "read_only": true},
            ]);
        });
        (f, spec)
    };
    // A kernel before 5.2 (open_tree) and one before 5.12 (mount_setattr).
    for missing in ["open_tree", "mount_setattr"] {
        let (f, spec) = fixture();
        let sys = f.fake().fail_when(
            move |c| match c {
                Call::CloneTree(_) => missing == "open_tree",
                Call::TreeReadOnly(_) => missing == "mount_setattr",
                _ => false,
            },
            Errno::ENOSYS,
        );
        f.build(&sys, &spec).expect(missing);
        let calls = f.render(&sys.calls());
        let sys_at = calls
            .iter()
            .position(|c| c.starts_with("mount sysfs"))
            .expect("sysfs");
        let tried = |what: &str| {
            let mut t = vec![format!("open_tree {what} (clone,recursive)")];
            if missing == "mount_setattr" {
                t.push(format!("mount_setattr tree of {what} (rdonly,recursive)"));
            }
            t
        };
        let mut want = tried("<tmp>/state/volumes/v1/_data");
        want.extend([
            "mount <tmp>/state/volumes/v1/_data on @/rootfs/data (bind,rec)".to_string(),
            "mount - on @/rootfs/data (rdonly,remount,bind,rec)".to_string(),
        ]);
        want.extend(tried("<tmp>/host/app.conf"));
        want.extend([
            "mount <tmp>/host/app.conf on @/rootfs/etc/app.conf (bind,rec)".to_string(),
            "mount - on @/rootfs/etc/app.conf (rdonly,remount,bind,rec)".to_string(),
        ]);
        assert_eq!(
            calls[sys_at + 1..sys_at + 1 + want.len()],
            want,
            "{missing}"
        );
    }
    // Any other error of the new API fails the mount; nothing is attached.
    let (f, spec) = fixture();
    let sys = f
        .fake()
        .fail_when(|c| matches!(c, Call::TreeReadOnly(_)), Errno::EPERM);
    let e = f.build(&sys, &spec).expect_err("EPERM");
    assert_eq!(
        (e.step(), e.to_string().as_str()),
        (
            Step::Volumes,
            "mount a read-only volume on /data: EPERM: Operation not permitted"
        )
    );
    assert!(
        !sys.calls()
            .iter()
            .any(|c| matches!(c, Call::AttachTree { .. }))
    );
}

fn host_file(host: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(host).expect("mkdir");
    host.join("app.conf")
}

#[test]
fn a_read_only_volume_whose_target_changed_is_refused() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.base.join("state/volumes/v1/_data")).expect("mkdir");
    let spec = f.spec(|v| {
        v["mounts"] = json!([
            {"kind": {"type": "volume", "name": "v1", "source": ""}, "target": "/data", "read_only": true},
        ]);
    });
    // Right after the bind mount, the target is swapped for a symlink to
    // another directory of the root: resolved again, it is not the volume.
    // (The fallback of a kernel without the new mount API: with it, no
    // path is resolved again.)
    let rootfs = f.rootfs.clone();
    let sys = f.fake().with_hook(move |c| {
        if matches!(c, Call::CloneTree(_)) {
            return Some(Errno::ENOSYS);
        }
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        if matches!(c, Call::Mount(m) if m.flags == bind) {
            std::fs::create_dir(rootfs.join("other")).expect("mkdir");
            std::fs::rename(rootfs.join("data"), rootfs.join("old")).expect("mv");
            std::os::unix::fs::symlink("/other", rootfs.join("data")).expect("ln");
        }
        None
    });
    let e = f.build(&sys, &spec).expect_err("refused");
    assert_eq!(e.step(), Step::Volumes);
    assert_eq!(
        e.to_string(),
        "mount target /data changed while it was mounted"
    );
    assert!(
        !sys.mounts()
            .iter()
            .any(|m| m.flags.contains(MsFlags::MS_REMOUNT))
    );
    // A failed bind mount says so.
    let f = Fixture::new();
    std::fs::create_dir_all(f.base.join("state/volumes/v1/_data")).expect("mkdir");
    let sys = f
        .fake()
        .fail_when(|c| matches!(c, Call::CloneTree(_)), Errno::ENOSYS)
        .fail_when(
            |c| matches!(c, Call::Mount(m) if m.target_at.ends_with("rootfs/data")),
            Errno::EPERM,
        );
    let e = f.build(&sys, &spec).expect_err("refused");
    assert_eq!(
        (e.step(), e.to_string().as_str()),
        (
            Step::Volumes,
            "mount a volume on /data: EPERM: Operation not permitted"
        )
    );
    // So does a failed attach.
    let f = Fixture::new();
    std::fs::create_dir_all(f.base.join("state/volumes/v1/_data")).expect("mkdir");
    let sys = f.fake().fail_when(
        |c| matches!(c, Call::AttachTree { target, .. } if target.ends_with("rootfs/data")),
        Errno::EPERM,
    );
    let e = f.build(&sys, &spec).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "mount a read-only volume on /data: EPERM: Operation not permitted"
    );
}

#[test]
fn mount_targets_on_procfs_or_sysfs_are_refused() {
    for (target, fs) in [
        ("/proc/x", "procfs"),
        ("/sys/x", "sysfs"),
        ("/proc", "procfs"),
    ] {
        let f = Fixture::new();
        let spec = f.spec(|v| {
            v["mounts"] = json!([
                {"kind": {"type": "tmpfs", "options": ""}, "target": target, "read_only": false},
            ]);
        });
        let sys = f.fake();
        let e = f.build(&sys, &spec).expect_err(target);
        assert_eq!(e.step(), Step::Volumes, "{target}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("mount target {target}: ")) && msg.contains(fs),
            "{msg}"
        );
        // Nothing was mounted onto it, and nothing after it.
        let last = f.render(&sys.calls()).pop().expect("calls");
        assert_eq!(last, "umask 22", "{target}");
        assert!(
            !sys.mounts()
                .iter()
                .any(|m| m.target_at.ends_with(&format!("rootfs{target}"))
                    && m.fstype.as_deref() == Some("tmpfs")),
            "{target}"
        );
    }
}

#[test]
fn userns_remap_gives_rsups_files_to_container_root_before_the_user_namespace() {
    let f = Fixture::new();
    let spec = f.spec(|v| {
        v["working_dir"] = json!("/work/dir");
        v["userns"] = json!({
            "uids": [{"container": 0, "host": 100000, "size": 65536}],
            "gids": [{"container": 0, "host": 200000, "size": 65536}],
        });
    });
    let sys = f.fake();
    f.build(&sys, &spec).expect("setup");
    namespaces::enter_userns(&sys, || {
        // The shim writes the maps now: the init is in its user namespace,
        // every mount and owner already made.
        assert_eq!(
            sys.calls().last(),
            Some(&Call::Unshare(CloneFlags::CLONE_NEWUSER))
        );
        Ok(())
    })
    .expect("userns");
    let calls = f.render(&sys.calls());
    let want_in_order = [
        "mount tmpfs on @/rootfs/dev type tmpfs (nosuid,strictatime) mode=755,size=65536k,uid=100000,gid=200000",
        "mknod @/rootfs/dev/null c 1 3 666",
        "chown @/rootfs/dev/null 100000:200000",
        "mknod @/rootfs/dev/tty c 5 0 666",
        "chown @/rootfs/dev/tty 100000:200000",
        "mount shm on @/rootfs/dev/shm type tmpfs (nosuid,nodev,noexec) mode=1777,size=65536k,uid=100000,gid=200000",
        "chown @/hostname 100000:200000",
        "mount @/hostname on @/rootfs/etc/hostname (bind)",
        "chown @/hosts 100000:200000",
        "pivot_root . .",
        "chown @/rootfs/work/dir 100000:200000",
        "umask 22",
        "unshare user",
        "setgroups []",
        "setresgid 0",
        "setresuid 0",
        "pdeathsig 9",
    ];
    let mut at = 0;
    for w in want_in_order {
        match calls[at..].iter().position(|c| c == w) {
            Some(i) => at += i + 1,
            None => panic!("{w:?} missing or out of order in {calls:#?}"),
        }
    }
    assert_eq!(at, calls.len(), "calls after becoming root: {calls:#?}");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("chown @/rootfs/dev/"))
            .count(),
        6
    );
    // The user namespace comes after every mount, device node and owner.
    let user = calls
        .iter()
        .position(|c| c == "unshare user")
        .expect("unshare");
    assert!(
        !calls[user..]
            .iter()
            .any(|c| c.starts_with("mount") || c.starts_with("mknod") || c.starts_with("chown")),
        "{calls:#?}"
    );
}

#[test]
fn a_refused_mknod_binds_the_hosts_nodes() {
    let f = Fixture::new();
    let sys = f.fake().without_mknod();
    f.build(&sys, &f.spec(|_| {})).expect("setup");
    let calls = f.render(&sys.calls());
    for (name, _, _) in devices::DEV_NODES {
        let mknod = calls
            .iter()
            .position(|c| c.starts_with(&format!("mknod @/rootfs/dev/{name} ")))
            .expect("mknod");
        assert_eq!(
            calls[mknod + 1],
            format!("mount /dev/{name} on @/rootfs/dev/{name} (bind)")
        );
    }
    assert!(!calls.iter().any(|c| c.starts_with("chown")));
}

#[test]
fn etc_files_are_mounted_where_the_image_has_them() {
    // No /etc: nothing mounted, nothing written.
    let f = Fixture::new();
    std::fs::remove_dir_all(f.rootfs.join("etc")).expect("rm");
    let calls = f.calls(&f.spec(|_| {}));
    assert!(!calls.iter().any(|c| c.contains("/etc/")), "{calls:#?}");
    assert!(!f.dir.join("hosts").exists());

    // With a network: its netns is joined, and resolv.conf is wanted too.
    // /etc/hosts is a symlink inside the root (followed, inside it);
    // /etc/hostname a directory and /etc/resolv.conf a dangling symlink
    // (both left alone).
    let f = Fixture::new();
    std::fs::write(f.dir.join("netns"), "").expect("netns");
    std::fs::create_dir_all(f.rootfs.join("data")).expect("mkdir");
    std::fs::write(f.rootfs.join("data/hosts"), "").expect("write");
    std::os::unix::fs::symlink("/../data/hosts", f.rootfs.join("etc/hosts")).expect("ln");
    std::fs::create_dir(f.rootfs.join("etc/hostname")).expect("mkdir");
    std::os::unix::fs::symlink("/nowhere", f.rootfs.join("etc/resolv.conf")).expect("ln");
    let spec = f.spec(|v| {
        v["networks"] = json!([{
            "network": "n1", "ifname": "eth0", "host_ifname": "vx1",
            "ip": "10.0.0.2", "prefix": 24, "gateway": "10.0.0.1", "aliases": [],
        }]);
    });
    let calls = f.calls(&spec);
    assert_eq!(calls[1], "setns @/netns net");
    assert_eq!(calls[2], "unshare mnt,uts,ipc");
    let etc: Vec<&String> = calls
        .iter()
        .filter(|c| c.contains("/hosts") || c.contains("hostname on") || c.contains("resolv"))
        .collect();
    assert_eq!(etc, ["mount @/hosts on @/rootfs/data/hosts (bind)"]);
    assert_eq!(
        std::fs::read_to_string(f.dir.join("hosts")).expect("read"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.2\tc1host c1\n"
    );
    assert!(!f.rootfs.join("nowhere").exists());

    // A file the user mounts there is not rsup's to mount.
    let f = Fixture::new();
    let host = f.base.join("my-hosts");
    std::fs::write(&host, "").expect("write");
    let spec = f.spec(|v| {
        v["mounts"] = json!([
            {"kind": {"type": "bind", "source": host}, "target": "/etc/hosts", "read_only": false},
        ]);
    });
    let calls = f.calls(&spec);
    let onto_hosts: Vec<&String> = calls
        .iter()
        .filter(|c| c.contains("on @/rootfs/etc/hosts"))
        .collect();
    assert_eq!(
        onto_hosts,
        ["mount <tmp>/my-hosts on @/rootfs/etc/hosts (bind,rec)"]
    );
}

#[test]
fn privileged_containers_get_no_masks() {
    let f = Fixture::new();
    let calls =
        f.calls(&f.spec(|v| {
            v["security"] = json!({"caps": [], "privileged": true, "no_new_privs": false})
        }));
    let chdir = calls.iter().position(|c| c == "chdir /").expect("chdir");
    assert_eq!(calls[chdir + 1..], ["umask 22"]);
    // And a plain one gets exactly those of its /proc and /sys that exist.
    let f = Fixture::new();
    let calls = f.calls(&f.spec(|_| {}));
    let chdir = calls.iter().position(|c| c == "chdir /").expect("chdir");
    let masks: Vec<&str> = MASKS.iter().chain(MASKS_TAIL.iter()).copied().collect();
    assert_eq!(calls[chdir + 1..calls.len() - 1], masks[..]);
}

#[test]
fn errors_name_their_step_and_read_as_before() {
    type When = Box<dyn Fn(&Call) -> bool>;
    let cases: [(When, Errno, Step, &str); 6] = [
        (
            Box::new(|c| matches!(c, Call::Mount(m) if m.fstype.as_deref() == Some("proc"))),
            Errno::EPERM,
            Step::Proc,
            "mount proc on proc: EPERM: Operation not permitted",
        ),
        (
            Box::new(|c| matches!(c, Call::Unshare(_))),
            Errno::EINVAL,
            Step::Namespaces,
            "unshare: EINVAL: Invalid argument",
        ),
        (
            Box::new(|c| matches!(c, Call::Mount(m) if m.target == "/")),
            Errno::EACCES,
            Step::Namespaces,
            "making / private: EACCES: Permission denied",
        ),
        (
            Box::new(|c| matches!(c, Call::PivotRoot { .. })),
            Errno::EINVAL,
            Step::Pivot,
            "pivot_root: EINVAL: Invalid argument",
        ),
        (
            Box::new(|c| matches!(c, Call::Mount(m) if m.target == "/proc/kcore")),
            Errno::EPERM,
            Step::MaskedPaths,
            "masking /proc/kcore: EPERM: Operation not permitted",
        ),
        (
            Box::new(|c| matches!(c, Call::LinkUp(_))),
            Errno::ENODEV,
            Step::Hostname,
            "setting lo up: ENODEV: No such device",
        ),
    ];
    for (when, errno, step, msg) in cases {
        let f = Fixture::new();
        let sys = f.fake().fail_when(when, errno);
        let e = f.build(&sys, &f.spec(|_| {})).expect_err(msg);
        assert_eq!((e.step(), e.to_string().as_str()), (step, msg));
        // The umask is restored after a failure too.
        assert_eq!(sys.calls().last(), Some(&Call::Umask(0o022)));
    }
    // A kernel without cgroup namespaces is fine; a refusal is not.
    let f = Fixture::new();
    let einval = f
        .fake()
        .fail_when(|c| matches!(c, Call::Unshare(_)), Errno::EINVAL);
    namespaces::enter_cgroupns(&einval).expect("no cgroup namespaces");
    let eperm = f
        .fake()
        .fail_when(|c| matches!(c, Call::Unshare(_)), Errno::EPERM);
    let e = namespaces::enter_cgroupns(&eperm).expect_err("refused");
    assert_eq!(
        (e.step(), e.to_string().as_str()),
        (
            Step::Start,
            "unshare(CLONE_NEWCGROUP): EPERM: Operation not permitted"
        )
    );
}
