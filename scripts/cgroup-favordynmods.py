#!/usr/bin/python3
"""Turn the kernel's cgroup `favordynmods` on or off, or show it (Linux 6.0+).

    sudo scripts/cgroup-favordynmods.py status|on|off [MOUNT]

MOUNT is a cgroup2 mount point (default: the first one in /proc/self/mountinfo, e.g.
/sys/fs/cgroup on a cgroup-v2 host, /sys/fs/cgroup/unified on a hybrid one).

Moving a process into a cgroup (a `cgroup.procs` write) takes the kernel's global
cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period unless another move
happened within one: 10-17 ms of every container start that does not follow another closely
(docs/benchmarks.md). `favordynmods` keeps that lock in the mode where writers do not wait, at a
small cost to every fork and exit on the host (the kernel's documentation: "reduce the latencies
of dynamic cgroup modifications such as task migrations and controller on/offs at the cost of
making hot path operations such as forks and exits more expensive"). The lock is global, so the
flag on the cgroup2 mount also speeds up moves in cgroup-v1 hierarchies. rsupd never sets it: it
is the operator's choice for the whole host, like `mount -o remount,favordynmods MOUNT` (which
util-linux cannot undo, as it carries the mount's current options into the remount).

**One way on Linux 6.17 and later**: there the flag also switches `cgroup.procs` writes to a lock
per thread group, and that switch cannot be turned back ("cgroup favordynmods: per threadgroup
rwsem mechanism can't be disabled" in the kernel log): `off` clears the mount option, but moves
stay fast until the next boot. Measured on this 6.18 machine: a cold start 26.75 -> 13.16 ms
(docs/benchmarks.md).

This reconfigures only the superblock (fspick + fsconfig, the new mount API): the mount's own
flags (nosuid, nodev, noexec, ...) are not touched, and the other cgroup2 options
(nsdelegate, memory_recursiveprot, ...) are given again as they are.
"""
import ctypes
import os
import sys

SYS_FSCONFIG, SYS_FSPICK = 431, 433  # x86_64 and aarch64 share these numbers
FSPICK_CLOEXEC = 1
FSCONFIG_SET_FLAG, FSCONFIG_CMD_RECONFIGURE = 0, 7
AT_FDCWD = -100

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.syscall.restype = ctypes.c_long


def cgroup2_mounts():
    """(mount point, super options) of every cgroup2 mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _source, sopts = right.split()[:3]
            if fstype == "cgroup2":
                point = left.split()[4].replace("\\040", " ")
                out.append((point, sopts.split(",")))
    return out


def check(r, what):
    if r < 0:
        e = ctypes.get_errno()
        sys.exit(f"{what}: {os.strerror(e)}")
    return r


def reconfigure(point, flags):
    fd = check(libc.syscall(SYS_FSPICK, AT_FDCWD, point.encode(), FSPICK_CLOEXEC), "fspick")
    try:
        for flag in flags:
            check(libc.syscall(SYS_FSCONFIG, fd, FSCONFIG_SET_FLAG, flag.encode(), None, 0),
                  f"fsconfig {flag}")
        check(libc.syscall(SYS_FSCONFIG, fd, FSCONFIG_CMD_RECONFIGURE, None, None, 0),
              "reconfigure")
    finally:
        os.close(fd)


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("status", "on", "off"):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    mounts = cgroup2_mounts()
    if len(sys.argv) == 3:
        mounts = [m for m in mounts if m[0] == sys.argv[2]]
    if not mounts:
        sys.exit("no cgroup2 mount")
    point, sopts = mounts[0]
    others = [o for o in sopts if o not in ("rw", "ro", "favordynmods")]
    on = "favordynmods" in sopts
    if sys.argv[1] == "on" and not on:
        reconfigure(point, others + ["favordynmods"])
    elif sys.argv[1] == "off" and on:
        reconfigure(point, others)
    now = dict(cgroup2_mounts()).get(point, [])
    print(f"{point}: favordynmods {'on' if 'favordynmods' in now else 'off'} ({','.join(now)})")


if __name__ == "__main__":
    main()
