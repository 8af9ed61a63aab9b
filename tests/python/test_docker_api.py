"""Docker's own clients against rsupd's Docker Engine API (issue #18).

rsupd serves a subset of the Docker Engine REST API (v1.41) on a Unix socket
of its own when started with `--docker-socket PATH`. Here Docker's Python SDK
(PyPI `docker` 7) and docker-compose 1.29 (Debian's /usr/bin/docker-compose)
drive it, and the tests check what they see against what Docker does.

Where the SDK comes from: scripts/test.sh installs it with
`pip install --target $RSUP_DOCKER_SDK_DIR` (default
/usr/local/lib/rsup-tests/docker-sdk), and only this module puts that
directory on sys.path (first). It must not be in site-packages: compose 1.29
runs on Debian's python3-docker 5 and calls kwargs_from_env(ssl_version=...),
which docker 7 removed, so a pip-installed docker 7 in
/usr/local/lib/python3.11/dist-packages breaks /usr/bin/docker-compose. When
the directory is absent, an importable `docker` >= 7 is used instead.

A session fixture starts `rsupd` (from $RSUP_BIN_DIR, default
<repo>/target/debug; run `cargo build --workspace` first) with its own gRPC
socket, state dir under /tmp/rsup-test-<pid>-dk*, link prefix `zdk`, subnet,
cgroup subtree `rsup-zdk` (both swept by scripts/test.sh) and
`--docker-socket <dir>/docker.sock`; it waits (polled, bounded) until
`GET /_ping` answers 200 "OK", loads a busybox image (tests/python/
busybox_image.py: a `docker save` tarball made from the host's busybox) with
`client.images.load`, and at the end force-removes every container, network
and volume (through rsupctl, which does not depend on the Docker API being
right), stops rsupd with SIGTERM (SIGKILL after 10 s) and removes its links
and cgroups.

Every HTTP request the SDK makes is logged (urllib3 at DEBUG), so a failing
test's "Captured log" shows the requests and their status codes; compose runs
with --verbose and its output is in the assertion message.

Run as root from the repository root:

    python3 -m pytest -q tests/python/test_docker_api.py
"""

import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SDK_DIR = os.environ.get("RSUP_DOCKER_SDK_DIR", "/usr/local/lib/rsup-tests/docker-sdk")
if os.path.isdir(SDK_DIR) and SDK_DIR not in sys.path:
    sys.path.insert(0, SDK_DIR)
try:
    import docker  # noqa: E402
    import docker.errors  # noqa: E402
except ImportError:  # pragma: no cover - reported by the fixture below
    docker = None

sys.path.insert(0, str(HERE))
import busybox_image  # noqa: E402

NET_PREFIX = "zdk"  # rsupd's link prefix here: bridges zdkb..., veths zdkv...
CGROUP_SUBTREE = "rsup-zdk"  # rsupd's cgroup subtree here, in every hierarchy
DEFAULT_SUBNET = "10.99.232.0/24"  # test_grpc.py's rsupd has 10.99.231.0/24
# Networks made here name their subnets: rsupd would otherwise take the first free /24 of
# 10.89.0.0/16, which another rsupd on this machine (another test run) may use as well.
NET_SUBNET = "10.99.233.0/24"  # test_networks
NET2_SUBNET = "10.99.235.0/24"  # test_network_connect_disconnect
COMPOSE_SUBNET = "10.99.234.0/24"  # the compose project's default network
IMAGE = busybox_image.DEFAULT_TAG  # rsuptest/busybox:1
API_VERSION = "1.41"
PING_TIMEOUT = 20.0  # seconds rsupd may take to answer /_ping
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
CLIENT_TIMEOUT = 60  # the SDK's per-request timeout
COMPOSE_TIMEOUT = 180.0
POLL = 0.1
PID = os.getpid()

# Every request the SDK (urllib3) makes, with its status, into pytest's captured log.
logging.getLogger("urllib3").setLevel(logging.DEBUG)
logging.getLogger("docker").setLevel(logging.DEBUG)


# ----------------------------------------------------------------- helpers


def _remove_cgroup_subtree(name):
    """Removes the (empty, once rsupd's containers are gone) cgroup
    directories `name` an rsupd made below its own cgroup, deepest first;
    rmdir leaves any cgroup that still has processes."""
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if root.count(os.sep) >= 11:
            dirs[:] = []
            continue
        if os.path.basename(root) == name:
            found.append(root)
            dirs[:] = []
    for top in found:
        for root, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count(os.sep)):
            try:
                os.rmdir(root)
            except OSError:
                pass


def _remove_links(prefix):
    """Deletes the bridges and veths an rsupd with `prefix` made."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split(": ")
        if len(parts) < 2:
            continue
        name = parts[1].split("@")[0]
        if name.startswith(prefix + "b") or name.startswith(prefix + "v"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def _mount_points():
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.append(line.split(" ")[4].encode().decode("unicode_escape"))
    return points


def _remove_tree(top):
    """Lazily unmounts anything below `top`, deepest first, then deletes it."""
    below = [p for p in _mount_points() if p == top or p.startswith(top + "/")]
    for point in sorted(below, key=lambda p: p.count("/"), reverse=True):
        if subprocess.run(["umount", "-l", point]).returncode != 0:
            print(f"warning: umount {point} failed", file=sys.stderr)
    if any(p == top or p.startswith(top + "/") for p in _mount_points()):
        print(f"warning: mounts remain under {top}; leaving it for the sweep", file=sys.stderr)
        return
    shutil.rmtree(top, ignore_errors=True)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (for the raw /_ping poll)."""

    def __init__(self, path, timeout=2.0):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def raw_request(sock, method, path, body=None, headers=None):
    """(status, headers (names lowercased), body bytes) of one request on Docker socket `sock`."""
    conn = UnixHTTPConnection(sock, timeout=10.0)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_for(what, check, timeout=20.0):
    """Polls `check()` until it returns a true value (returned) or `timeout`
    passes (the test fails, naming `what` and the last value)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Daemon:
    """A running rsupd with a Docker socket."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.socket = os.path.join(tmp, "rsupd.sock")
        self.docker_socket = os.path.join(tmp, "docker.sock")
        self.docker_host = "unix://" + self.docker_socket
        self.state_dir = os.path.join(tmp, "state")
        self.log_path = os.path.join(tmp, "rsupd.log")
        self.bin_dir = Path(os.environ.get("RSUP_BIN_DIR", REPO / "target" / "debug"))
        self.proc = None

    def start(self):
        rsupd = self.bin_dir / "rsupd"
        if not rsupd.is_file():
            pytest.fail(f"{rsupd} not found: run `cargo build --workspace` (or set RSUP_BIN_DIR)")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(rsupd), "--socket", self.socket, "--state-dir", self.state_dir,
                    # No fixed TCP port, and links, subnet and cgroups of its own
                    # (prefix "zdk", swept by scripts/test.sh), removed below.
                    "--metrics-addr", "", "--net-prefix", NET_PREFIX,
                    "--default-subnet", DEFAULT_SUBNET, "--cgroup-subtree", CGROUP_SUBTREE,
                    "--docker-socket", self.docker_socket,
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_ping()

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as e:
            return f"(no log: {e})"

    def _wait_ping(self):
        deadline = time.monotonic() + PING_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"rsupd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.docker_socket):
                try:
                    status, _, body = raw_request(self.docker_socket, "GET", "/_ping")
                    if status == 200:
                        return
                    last = (status, body)
                except OSError as e:
                    last = e
            time.sleep(0.05)
        pytest.fail(f"{self.docker_socket} did not answer GET /_ping with 200 after "
                    f"{PING_TIMEOUT}s (last: {last!r}):\n{self.log_tail()}")

    def rsupctl(self, *args):
        return subprocess.run([str(self.bin_dir / "rsupctl"), "--socket", self.socket, *args],
                              capture_output=True, text=True, timeout=120)

    def _names(self, *args):
        """First column of an rsupctl table (without the header)."""
        res = self.rsupctl(*args)
        if res.returncode != 0:
            print(f"warning: rsupctl {' '.join(args)}: {res.stderr}", file=sys.stderr)
            return []
        return [line.split()[0] for line in res.stdout.splitlines()[1:] if line.strip()]

    def stop(self):
        """Force-removes every container, network and volume (through rsupctl,
        not the Docker API under test), then SIGTERM (SIGKILL after STOP_GRACE)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            ids = self.rsupctl("ps", "-a", "-q").stdout.split()
            if ids:
                res = self.rsupctl("rm", "-f", *ids)
                if res.returncode != 0:
                    print(f"warning: rsupctl rm -f at teardown: {res.stderr}", file=sys.stderr)
            for net in self._names("network", "ls"):
                if net not in ("default", "none", "host", "bridge"):
                    self.rsupctl("network", "rm", net)
            for vol in self._names("volume", "ls"):
                self.rsupctl("volume", "rm", "-f", vol)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                print(f"warning: rsupd {self.proc.pid} ignored SIGTERM; SIGKILL", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        _remove_links(NET_PREFIX)
        _remove_cgroup_subtree(CGROUP_SUBTREE)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def dk_tmp():
    if os.geteuid() != 0:
        pytest.fail("run as root: rsupd creates namespaces and mounts")
    # /tmp/rsup-test-<pid>-...: the CI sweep spares directories of a live pid.
    path = tempfile.mkdtemp(prefix=f"rsup-test-{PID}-dk", dir="/tmp")
    yield path
    if os.environ.get("RSUP_TEST_KEEP") == "1":
        print(f"RSUP_TEST_KEEP=1: keeping {path}", file=sys.stderr)
    else:
        _remove_tree(path)


@pytest.fixture(scope="session")
def dk_daemon(dk_tmp):
    d = Daemon(dk_tmp)
    try:
        d.start()
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def client(dk_daemon):
    if docker is None or int(docker.__version__.split(".")[0]) < 7:
        pytest.fail(f"Docker's Python SDK >= 7 not found in {SDK_DIR} or on sys.path: run "
                    f"scripts/test.sh, or `pip install --target {SDK_DIR} "
                    "-r tests/python/requirements-docker-sdk.txt`")
    c = docker.DockerClient(base_url=dk_daemon.docker_host, version=API_VERSION,
                            timeout=CLIENT_TIMEOUT)
    yield c
    c.close()


@pytest.fixture(scope="session")
def image(client, dk_tmp):
    """The busybox image, loaded from a `docker save` tarball; its id."""
    data, image_id = busybox_image.save_tarball((IMAGE,))
    with open(os.path.join(dk_tmp, "busybox.tar"), "wb") as f:
        f.write(data)
    loaded = client.images.load(data)
    assert [i.id for i in loaded] == [image_id], loaded
    assert IMAGE in loaded[0].tags, loaded[0].attrs
    return image_id


def _name(what):
    return f"rsuptest-{what}-{PID}"


@pytest.fixture
def cleanup(client):
    """Names of containers, networks and volumes a test made; removed after it
    (through the Docker API; the session teardown catches what this misses)."""
    made = {"containers": [], "networks": [], "volumes": []}
    yield made
    for name in made["containers"]:
        try:
            client.api.remove_container(name, force=True)
        except docker.errors.APIError:
            pass
    for name in made["networks"]:
        try:
            client.api.remove_network(name)
        except docker.errors.APIError:
            pass
    for name in made["volumes"]:
        try:
            client.api.remove_volume(name, force=True)
        except docker.errors.APIError:
            pass


# ----------------------------------------------------------------- the SDK


def test_ping_version_info(client, dk_daemon):
    assert client.ping() is True
    status, headers, body = raw_request(dk_daemon.docker_socket, "GET", "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers.get("api-version") == API_VERSION, headers
    v = client.version()
    assert v["ApiVersion"] == API_VERSION, v
    assert v["Os"] == "linux" and v["Arch"] and v["Version"], v
    assert "MinAPIVersion" in v, v
    info = client.info()
    for key in ("Containers", "ContainersRunning", "ContainersStopped", "Images",
                "ServerVersion", "OperatingSystem", "NCPU", "MemTotal", "Name", "ID"):
        assert key in info, (key, info)
    assert info["NCPU"] >= 1 and info["MemTotal"] > 0, info


def test_images_list_get_remove(client, image):
    listed = client.images.list()
    mine = [i for i in listed if i.id == image]
    assert len(mine) == 1, [(i.id, i.tags) for i in listed]
    assert IMAGE in mine[0].tags
    got = client.images.get(IMAGE)
    assert got.id == image
    assert got.attrs["RepoTags"] == [IMAGE], got.attrs
    assert got.attrs["Config"]["Cmd"] == ["sh"], got.attrs
    assert got.attrs["RootFS"]["Type"] == "layers" and len(got.attrs["RootFS"]["Layers"]) == 1
    assert client.images.get(image).id == image  # by id
    assert [i.id for i in client.images.list(name="rsuptest/busybox")] == [image]
    # another image (other labels, the same layer), loaded and removed
    other_tag = f"rsuptest/other:{PID}"
    data, other_id = busybox_image.save_tarball((other_tag,), labels={"rsup.test": "rm"})
    assert other_id != image
    client.images.load(data)
    assert client.images.get(other_tag).labels == {"rsup.test": "rm"}
    deleted = client.api.remove_image(other_tag)
    assert {"Untagged": other_tag} in deleted, deleted
    assert {"Deleted": other_id} in deleted, deleted
    assert client.images.get(IMAGE).id == image  # the shared layer stayed usable
    # 404 with Docker's "No such image: REF", which the SDK (and compose, before a pull)
    # recognise as ImageNotFound rather than any NotFound
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(other_tag)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("rsuptest/no-such-image:1")


def test_run_attached_returns_output(client, image):
    out = client.containers.run(IMAGE, ["sh", "-c", "echo hello; echo to-stderr >&2"],
                                remove=True)
    assert out == b"hello\n"
    out = client.containers.run(IMAGE, ["sh", "-c", "echo out; echo err >&2"],
                                stdout=True, stderr=True, remove=True)
    assert sorted(out.splitlines()) == [b"err", b"out"], out
    with pytest.raises(docker.errors.ContainerError) as err:
        client.containers.run(IMAGE, ["sh", "-c", "echo bad >&2; exit 3"], remove=True)
    assert err.value.exit_status == 3
    assert b"bad" in err.value.stderr
    with pytest.raises(docker.errors.ImageNotFound):
        client.api.create_container("rsuptest/no-such-image:1", ["true"])


def test_detached_logs_exec_wait_stop(client, image, cleanup):
    name = _name("logs")
    cleanup["containers"].append(name)
    c = client.containers.run(IMAGE, ["sh", "-c", "echo one; echo two >&2; exec sleep 300"],
                              name=name, detach=True)
    assert c.name == name
    c.reload()
    assert c.status == "running", c.attrs["State"]
    wait_for("both lines in the logs", lambda: c.logs() == b"one\ntwo\n")
    assert c.logs() == b"one\ntwo\n"
    assert c.logs(stderr=False) == b"one\n"
    assert c.logs(stdout=False) == b"two\n"
    assert c.logs(timestamps=True).split(b" ", 1)[0].endswith(b"Z")
    assert c.logs(tail=1) == b"two\n"
    # stream=True, follow=True: the lines so far, then blocks until the container ends
    stream = c.logs(stream=True, follow=True)
    got = b""
    while got.count(b"\n") < 2:
        got += next(stream)
    assert got == b"one\ntwo\n"
    stream.close()

    res = c.exec_run(["sh", "-c", "echo from-exec; echo e >&2; exit 3"])
    assert res.exit_code == 3
    assert sorted(res.output.splitlines()) == [b"e", b"from-exec"], res.output
    res = c.exec_run("hostname", demux=True)  # (stdout, stderr)
    assert res.exit_code == 0 and res.output[0].strip() and res.output[1] is None, res
    res = c.exec_run(["sh", "-c", "echo $FOO; id -u"], environment={"FOO": "bar"})
    assert (res.exit_code, res.output) == (0, b"bar\n0\n")

    t0 = time.monotonic()
    c.stop(timeout=5)
    assert time.monotonic() - t0 < 5, "sleep dies of SIGTERM: stop must not wait for the kill"
    assert c.wait(timeout=30)["StatusCode"] == 143  # 128 + SIGTERM
    c.reload()
    state = c.attrs["State"]
    assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 143), state
    # docker stop of a stopped container: 304 Not Modified, which the SDK takes as success
    c.stop(timeout=1)


def test_wait_and_exit_code(client, image, cleanup):
    name = _name("wait")
    cleanup["containers"].append(name)
    c = client.containers.create(IMAGE, ["sh", "-c", "sleep 0.3; exit 7"], name=name)
    c.reload()
    assert c.status == "created", c.attrs["State"]
    c.start()
    assert c.wait(timeout=30)["StatusCode"] == 7
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 7 and c.status == "exited"


def test_kill_restart_remove(client, image, cleanup):
    name = _name("kill")
    cleanup["containers"].append(name)
    c = client.containers.run(IMAGE, ["sleep", "300"], name=name, detach=True)
    c.kill()
    assert c.wait(timeout=30)["StatusCode"] == 137  # 128 + SIGKILL
    c.reload()
    assert c.status == "exited"
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running", c.attrs["State"]
    started = c.attrs["State"]["StartedAt"]
    c.restart(timeout=1)  # a running container: stopped and started again
    c.reload()
    assert c.status == "running" and c.attrs["State"]["StartedAt"] != started, c.attrs["State"]
    c.kill(signal="SIGTERM")
    assert c.wait(timeout=30)["StatusCode"] == 143
    with pytest.raises(docker.errors.APIError) as err:
        c.kill()  # not running: Docker answers 409
    assert err.value.status_code == 409, err.value
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(name)
    # force-remove of a running one
    c = client.containers.run(IMAGE, ["sleep", "300"], name=name, detach=True)
    with pytest.raises(docker.errors.APIError) as err:
        c.remove()
    assert err.value.status_code == 409, err.value
    c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(name)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(_name("never-made"))


def test_list_filters(client, image, cleanup):
    group = f"rsuptest-{PID}"
    a, b, c = _name("list-a"), _name("list-b"), _name("list-c")
    cleanup["containers"] += [a, b, c]
    client.containers.run(IMAGE, ["sleep", "300"], name=a, detach=True,
                          labels={"rsuptest.group": group, "rsuptest.role": "a"})
    cb = client.containers.run(IMAGE, ["true"], name=b, detach=True,
                               labels={"rsuptest.group": group, "rsuptest.role": "b"})
    cb.wait(timeout=30)
    client.containers.run(IMAGE, ["sleep", "300"], name=c, detach=True,
                          labels={"rsuptest.group": group + "-other"})

    def names(**kw):
        return sorted(x.name for x in client.containers.list(**kw))

    assert names(filters={"label": f"rsuptest.group={group}"}) == [a]
    assert names(all=True, filters={"label": f"rsuptest.group={group}"}) == [a, b]
    assert names(all=True, filters={"label": ["rsuptest.group", "rsuptest.role"]}) == [a, b]
    assert names(all=True, filters={"label": [f"rsuptest.group={group}",
                                              "rsuptest.role=b"]}) == [b]
    assert names(all=True, filters={"name": a}) == [a]
    assert names(all=True, filters={"status": "exited", "label": "rsuptest.group"}) == [b]
    assert names(filters={"status": "running", "name": f"-{PID}"}) == [a, c]
    assert a in names() and b not in names() and b in names(all=True)
    assert names(all=True, filters={"id": cb.id}) == [b]
    assert names(all=True, filters={"label": "rsuptest.no-such-label"}) == []
    # the list's summary: Names with "/", Labels, State, Image
    summary = client.api.containers(all=True, filters={"name": b})
    assert len(summary) == 1, summary
    assert summary[0]["Names"] == ["/" + b], summary
    assert summary[0]["Labels"] == {"rsuptest.group": group, "rsuptest.role": "b"}, summary
    assert summary[0]["State"] == "exited" and summary[0]["Image"] == IMAGE, summary
    # Docker's name filter is a regular expression (matched anywhere in the name)
    assert names(all=True, filters={"name": f"rsuptest-list-[bc]-{PID}"}) == [b, c]
    assert names(all=True, filters={"name": f"^/?rsuptest-list-a-{PID}$"}) == [a]


def test_container_attrs(client, image, cleanup):
    name = _name("attrs")
    cleanup["containers"].append(name)
    c = client.containers.run(IMAGE, ["sleep", "300"], name=name, detach=True,
                              labels={"rsuptest.k": "v"}, environment={"A": "1"},
                              working_dir="/tmp")
    c.reload()
    a = c.attrs
    assert a["Id"] == c.id and len(c.id) == 64, a
    assert a["Name"] == "/" + name
    assert a["Image"] == image
    st = a["State"]
    assert (st["Status"], st["Running"], st["Paused"], st["Restarting"]) == \
        ("running", True, False, False), st
    assert st["Pid"] > 0 and st["StartedAt"].endswith("Z"), st
    cfg = a["Config"]
    assert cfg["Labels"] == {"rsuptest.k": "v"}, cfg
    assert cfg["Image"] == IMAGE and cfg["Cmd"] == ["sleep", "300"], cfg
    assert "A=1" in cfg["Env"] and cfg["WorkingDir"] == "/tmp", cfg
    assert a["HostConfig"]["LogConfig"]["Type"] == "json-file", a["HostConfig"]
    nets = a["NetworkSettings"]["Networks"]
    assert len(nets) == 1, nets
    (net_name, ep), = nets.items()
    assert ep["IPAddress"] and ep["NetworkID"], nets
    assert c.labels == {"rsuptest.k": "v"}
    # Docker names the default network "bridge" (HostConfig.NetworkMode "default" is it)
    assert net_name == "bridge", nets


def test_stats_no_stream(client, image, cleanup):
    name = _name("stats")
    cleanup["containers"].append(name)
    c = client.containers.run(IMAGE, ["sleep", "300"], name=name, detach=True)
    s = c.stats(stream=False)
    assert s["id"] == c.id and s["name"] == "/" + name, s
    assert s["read"].endswith("Z"), s
    assert s["memory_stats"]["usage"] > 0, s["memory_stats"]
    assert "limit" in s["memory_stats"], s["memory_stats"]
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] >= 0, s["cpu_stats"]
    assert "precpu_stats" in s
    assert s["pids_stats"]["current"] >= 1, s.get("pids_stats")


def _exec_ok(container, cmd):
    """The ExecResult of `cmd` in `container` if it exited 0, else None (for wait_for).
    (No `wget -T`: Debian 12's busybox 1.35 wget segfaults with it, on the host too.)"""
    res = container.exec_run(cmd)
    return res if res.exit_code == 0 else None


def test_networks(client, image, cleanup):
    net_name, web, cl = _name("net"), _name("web"), _name("client")
    cleanup["containers"] += [web, cl]
    cleanup["networks"].append(net_name)
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=NET_SUBNET)])
    net = client.networks.create(net_name, driver="bridge", labels={"rsuptest": "net"}, ipam=ipam,
                                 check_duplicate=True)
    assert net.name == net_name
    got = client.networks.get(net.id)
    assert got.name == net_name and got.attrs["Driver"] == "bridge", got.attrs
    assert [c["Subnet"] for c in got.attrs["IPAM"]["Config"]] == [NET_SUBNET], got.attrs["IPAM"]
    assert client.networks.get(net_name).id == net.id
    assert net_name in [n.name for n in client.networks.list()]
    assert [n.id for n in client.networks.list(names=[net_name])] == [net.id]
    with pytest.raises(docker.errors.APIError) as err:
        client.networks.create(net_name, check_duplicate=True)  # Docker: 409 Conflict
    assert err.value.status_code == 409, err.value

    client.containers.run(IMAGE, ["sh", "-c", "echo web-ok > /tmp/ok; exec httpd -f -p 80 -h /tmp"],
                          name=web, detach=True, network=net_name)
    c = client.containers.run(IMAGE, ["sleep", "300"], name=cl, detach=True, network=net_name)
    c.reload()
    assert list(c.attrs["NetworkSettings"]["Networks"]) == [net_name], c.attrs["NetworkSettings"]
    ip = c.attrs["NetworkSettings"]["Networks"][net_name]["IPAddress"]
    assert ip.startswith(NET_SUBNET.rsplit(".", 1)[0] + "."), ip
    net.reload()
    assert {x.name for x in net.containers} == {web, cl}, net.attrs.get("Containers")
    # one container reaches the other by name on the network
    res = wait_for("wget http://web/ok from the other container",
                   lambda: _exec_ok(c, ["wget", "-qO-", f"http://{web}/ok"]), timeout=20)
    assert res.output == b"web-ok\n"
    with pytest.raises(docker.errors.APIError) as err:
        net.remove()  # still in use: Docker answers 403 "... has active endpoints"
    assert err.value.status_code in (403, 409), err.value
    client.containers.get(web).remove(force=True)
    client.containers.get(cl).remove(force=True)
    # labels last (the rest runs even where they are missing)
    assert net.attrs["Labels"] == {"rsuptest": "net"}, net.attrs
    assert [n.name for n in client.networks.list(filters={"label": "rsuptest=net"})] == [net_name]
    net.remove()
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(net_name)


def test_network_connect_disconnect(client, image, cleanup):
    net_name, web, cl = _name("net2"), _name("web2"), _name("client2")
    cleanup["containers"] += [web, cl]
    cleanup["networks"].append(net_name)
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=NET2_SUBNET)])
    net = client.networks.create(net_name, ipam=ipam)
    client.containers.run(IMAGE, ["sh", "-c", "echo web-ok > /tmp/ok; exec httpd -f -p 80 -h /tmp"],
                          name=web, detach=True, network=net_name)
    c = client.containers.run(IMAGE, ["sleep", "300"], name=cl, detach=True)  # default network
    net.connect(c, aliases=["the-client"])
    c.reload()
    assert net_name in c.attrs["NetworkSettings"]["Networks"], c.attrs["NetworkSettings"]
    net.reload()
    assert {x.name for x in net.containers} == {web, cl}, net.attrs.get("Containers")
    w = client.containers.get(web)
    web_ip = w.attrs["NetworkSettings"]["Networks"][net_name]["IPAddress"]
    # the connected container reaches the network at once (by address)
    res = wait_for(f"wget http://{web_ip}/ok from the connected container",
                   lambda: _exec_ok(c, ["wget", "-qO-", f"http://{web_ip}/ok"]))
    assert res.output == b"web-ok\n"
    # the alias given at connect resolves on that network
    wait_for("nslookup the-client from web2", lambda: _exec_ok(w, ["nslookup", "the-client"]))
    # Docker's resolver also answers the connected container for names on the joined network
    # (checked after the rest: rsup asks only the first network's DNS, docs/docker-api.md)
    by_name = None
    deadline = time.monotonic() + 5
    while by_name is None and time.monotonic() < deadline:
        by_name = _exec_ok(c, ["wget", "-qO-", f"http://{web}/ok"])
    prefix = NET2_SUBNET.rsplit(".", 1)[0] + "."
    assert prefix in c.exec_run(["ip", "-o", "addr"]).output.decode()
    net.disconnect(c)
    c.reload()
    assert net_name not in (c.attrs["NetworkSettings"]["Networks"] or {}), c.attrs
    # the interface on that network is gone
    assert prefix not in c.exec_run(["ip", "-o", "addr"]).output.decode()
    assert by_name is not None and by_name.output == b"web-ok\n", \
        f"wget http://{web}/ok from the container connected to {net_name}: not resolved"


def test_volumes(client, image, cleanup):
    name = _name("vol")
    cleanup["volumes"].append(name)
    v = client.volumes.create(name, labels={"rsuptest": "vol"})
    assert v.name == name
    got = client.volumes.get(name)
    assert got.attrs["Driver"] == "local" and got.attrs["Mountpoint"], got.attrs
    assert name in [x.name for x in client.volumes.list()]
    assert [x.name for x in client.volumes.list(filters={"name": name})] == [name]
    client.containers.run(IMAGE, ["sh", "-c", "echo kept > /v/f"], remove=True,
                          volumes={name: {"bind": "/v", "mode": "rw"}})
    assert client.containers.run(IMAGE, ["cat", "/v/f"], remove=True,
                                 volumes=[f"{name}:/v:ro"]) == b"kept\n"
    # labels last (the rest runs even where they are missing)
    assert got.attrs["Labels"] == {"rsuptest": "vol"}, got.attrs
    assert [x.name for x in client.volumes.list(filters={"label": "rsuptest=vol"})] == [name]
    v.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(name)


def test_unsupported_call_is_501(client, image, cleanup):
    name = _name("pause")
    cleanup["containers"].append(name)
    c = client.containers.run(IMAGE, ["sleep", "300"], name=name, detach=True)
    with pytest.raises(docker.errors.APIError) as err:
        c.pause()
    assert err.value.status_code == 501, err.value
    msg = str(err.value.explanation)
    assert "rsupd" in msg and "not support" in msg, msg
    c.reload()
    assert c.status == "running"


# ----------------------------------------------------------------- compose

COMPOSE_FILE = """\
version: "3"
services:
  db:
    image: %(image)s
    restart: always
    volumes:
      - data:/data
    # a small "database": a token made on the first start, served over HTTP
    command:
      - sh
      - -c
      - >-
        [ -s /data/token ] ||
        { head -c 16 /dev/urandom | md5sum | cut -d' ' -f1 >/data/token.new &&
        mv /data/token.new /data/token; };
        exec httpd -f -p 80 -h /data
  app:
    image: %(image)s
    depends_on:
      - db
    command:
      - sh
      - -c
      - >-
        i=0; while [ $$i -lt 150 ]; do
        if t=$$(wget -qO- http://db/token); then echo "token=$$t"; exec sleep 3600; fi;
        i=$$((i+1)); sleep 0.2; done; echo no-token; exit 1
volumes:
  data: {}
networks:
  default:
    ipam:
      config:
        - subnet: %(subnet)s
"""


def _compose(dk_daemon, workdir, project, *args, check=True):
    """Runs /usr/bin/docker-compose --verbose -p PROJECT ARGS against rsupd's
    Docker socket; its output (requests and answers) on failure."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCKER_", "COMPOSE_", "PYTHON"))}
    env["DOCKER_HOST"] = dk_daemon.docker_host
    cmd = ["/usr/bin/docker-compose", "--verbose", "--ansi", "never", "-p", project, *args]
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                         timeout=COMPOSE_TIMEOUT)
    if check and res.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {res.returncode}:\n"
                    f"--- stdout\n{res.stdout[-3000:]}\n--- stderr (last 8000 chars)\n"
                    f"{res.stderr[-8000:]}\n--- rsupd log\n{dk_daemon.log_tail()}")
    return res


def _project_containers(client, project, service=None):
    labels = [f"com.docker.compose.project={project}"]
    if service:
        labels.append(f"com.docker.compose.service={service}")
    return client.containers.list(all=True, filters={"label": labels})


def _app_token(client, project):
    def token():
        apps = _project_containers(client, project, "app")
        if len(apps) != 1:
            return None
        for line in apps[0].logs().decode(errors="replace").splitlines():
            if line.startswith("token="):
                return line[len("token="):]
            if line == "no-token":
                pytest.fail(f"app could not reach db: {apps[0].logs()!r}")
        return None

    return wait_for("app's log line token=...", token, timeout=60)


@pytest.fixture
def compose_project(client, dk_daemon, dk_tmp):
    """(workdir, project name) with the compose file; `down -v` after the test."""
    if not os.access("/usr/bin/docker-compose", os.X_OK):
        pytest.fail("/usr/bin/docker-compose missing: apt-get install docker-compose (scripts/test.sh)")
    project = f"rsuptest{PID}"
    workdir = os.path.join(dk_tmp, "compose")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "docker-compose.yml"), "w") as f:
        f.write(COMPOSE_FILE % {"image": IMAGE, "subnet": COMPOSE_SUBNET})
    yield workdir, project
    _compose(dk_daemon, workdir, project, "down", "-v", "-t", "2", check=False)


def test_compose_up_down_keeps_the_volume(client, image, dk_daemon, compose_project):
    workdir, project = compose_project
    _compose(dk_daemon, workdir, project, "up", "-d")
    names = sorted(c.name for c in _project_containers(client, project))
    assert names == [f"{project}_app_1", f"{project}_db_1"], names
    db = _project_containers(client, project, "db")[0]
    assert db.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always", db.attrs["HostConfig"]
    assert f"{project}_default" in db.attrs["NetworkSettings"]["Networks"], db.attrs
    assert any(m.get("Name") == f"{project}_data" and m["Destination"] == "/data"
               for m in db.attrs["Mounts"]), db.attrs["Mounts"]
    token = _app_token(client, project)
    assert len(token) == 32, token

    _compose(dk_daemon, workdir, project, "down", "-t", "2")
    assert _project_containers(client, project) == []
    assert f"{project}_default" not in [n.name for n in client.networks.list()]
    assert client.volumes.get(f"{project}_data").name == f"{project}_data"

    _compose(dk_daemon, workdir, project, "up", "-d")
    assert _app_token(client, project) == token, "the volume's data did not survive down/up"

    _compose(dk_daemon, workdir, project, "down", "-v", "-t", "2")
    assert _project_containers(client, project) == []
    assert f"{project}_default" not in [n.name for n in client.networks.list()]
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(f"{project}_data")


def test_compose_ps_logs_restart(client, image, dk_daemon, compose_project):
    workdir, project = compose_project
    _compose(dk_daemon, workdir, project, "up", "-d")
    token = _app_token(client, project)
    res = _compose(dk_daemon, workdir, project, "ps")
    assert f"{project}_db_1" in res.stdout and f"{project}_app_1" in res.stdout, res.stdout
    assert "Up" in res.stdout, res.stdout
    res = _compose(dk_daemon, workdir, project, "logs", "--no-color", "app")
    assert f"token={token}" in res.stdout, res.stdout
    # restart: always brings db back after it dies (not after a stop)
    db = _project_containers(client, project, "db")[0]
    pid = db.attrs["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted():
        db.reload()
        st = db.attrs["State"]
        return st["Running"] and st["Pid"] != pid and db.attrs["RestartCount"] >= 1

    wait_for("db restarted by its policy", restarted, timeout=30)
    _compose(dk_daemon, workdir, project, "down", "-t", "2")
    assert _project_containers(client, project) == []
