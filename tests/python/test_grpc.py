"""Cross-language test: a Python gRPC client against a real rsupd.

Stubs are generated at test time from proto/rsup/v1/containers.proto with
grpc_tools.protoc (google/protobuf/timestamp.proto comes from grpc_tools'
bundled includes). grpc.health.v1 and grpc.reflection.v1 stubs are generated
from the small definitions below, so the test needs no package beyond grpcio,
grpcio-tools and pytest; the v1alpha reflection test also uses
grpcio-reflection's descriptor database when it is installed.

A session fixture starts `rsupd` (from $RSUP_BIN_DIR, default
<repo>/target/debug; run `cargo build --workspace` first) on a socket and
state dir under /tmp/rsup-test-<pid>-py*, waits (polled, bounded) until
grpc.health.v1 reports SERVING, and at the end force-removes every container
and stops the daemon with SIGTERM (SIGKILL after 10 s).

The daemon also serves `--tcp 127.0.0.1:<free port>` with mutual TLS, on
certificates made with the `openssl` CLI at session start: grpcio's
ssl_channel_credentials with a client certificate of the configured CA is
served, and one without a certificate, with one from another CA, or trusting
another CA for the server, is refused.

Run as root from the repository root:

    python3 -m pytest -q tests/python
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
CONTAINERS_PROTO = "rsup/v1/containers.proto"

HEALTH_TIMEOUT = 20.0  # seconds rsupd may take to report SERVING
NET_PREFIX = "zpy"  # rsupd's link prefix here: bridges zpyb..., veths zpyv...
CGROUP_SUBTREE = "rsup-zpy"  # rsupd's cgroup subtree here, in every hierarchy


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

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
RPC_TIMEOUT = 30.0  # deadline of every RPC but Wait
WAIT_TIMEOUT = 60.0  # deadline of Wait
POLL = 0.05
# grpcio >= 1.57 sends the %-encoded socket path as :authority on unix:
# targets; hyper/h2 (under tonic) rejects that with RST_STREAM PROTOCOL_ERROR
# (grpc/grpc#38142). Clients of rsupd must name an authority, as grpc-go,
# kubernetes and tonic's own client do for Unix sockets.
CHANNEL_OPTIONS = [("grpc.default_authority", "localhost")]

# Minimal copies of the standard service definitions: only field numbers and
# fully qualified names matter on the wire. Top-level file names keep the
# generated modules from colliding with the `grpc` package.
HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
}
"""

REFLECTION_V1_PROTO = """
syntax = "proto3";
package grpc.reflection.v1;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""


# ----------------------------------------------------------------- helpers


def _grpc_tools_include():
    """Directory of the .proto files bundled with grpc_tools (timestamp.proto)."""
    try:
        from importlib.resources import files

        return str(files("grpc_tools") / "_proto")
    except (ImportError, TypeError):  # Python < 3.9
        import pkg_resources

        return pkg_resources.resource_filename("grpc_tools", "_proto")


def _mount_points():
    """Mount points of this mount namespace (mountinfo field 5, unescaped)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            raw = line.split(" ")[4]
            points.append(raw.encode().decode("unicode_escape"))
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


def _build_rootfs(root):
    """A busybox-static rootfs: bin/busybox, one symlink per applet."""
    busybox = os.environ.get("RSUP_BUSYBOX", "/bin/busybox")
    applets = subprocess.run(
        [busybox, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "root"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
    os.chmod(os.path.join(root, "bin", "busybox"), 0o755)
    for applet in applets:
        # the list names busybox itself: a link would replace the binary
        if applet != "busybox" and "/" not in applet:
            os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")


def _openssl(*args):
    res = subprocess.run(["openssl", *args], capture_output=True, text=True)
    assert res.returncode == 0, f"openssl {' '.join(args)}:\n{res.stderr}"


def _make_pki(d):
    """CA A signs rsupd's certificate (localhost, 127.0.0.1) and a client's;
    CA B signs an intruder's. Returns {name: path} of the PEM files."""
    os.makedirs(d, exist_ok=True)
    p = {n: os.path.join(d, n + ".pem") for n in (
        "ca-a", "ca-a-key", "ca-b", "ca-b-key", "server", "server-key",
        "client-a", "client-a-key", "client-b", "client-b-key")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for ca in ("ca-a", "ca-b"):
        _openssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN=rsup test {ca}",
                 "-keyout", p[ca + "-key"], "-out", p[ca])
    for leaf, ca, ext in (
        ("server", "ca-a", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client-a", "ca-a", "extendedKeyUsage=clientAuth"),
        ("client-b", "ca-b", "extendedKeyUsage=clientAuth"),
    ):
        csr, extfile = os.path.join(d, leaf + ".csr"), os.path.join(d, leaf + ".ext")
        with open(extfile, "w") as f:
            f.write(ext + "\n")
        _openssl("req", *ec, "-subj", f"/CN={leaf}", "-keyout", p[leaf + "-key"], "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", p[ca], "-CAkey", p[ca + "-key"],
                 "-days", "2", "-extfile", extfile, "-out", p[leaf])
    return p


def _free_loopback_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stubs:
    """Modules generated by grpc_tools.protoc for this test session."""

    def __init__(self, out):
        (out / "health_v1.proto").write_text(HEALTH_PROTO)
        (out / "reflection_v1.proto").write_text(REFLECTION_V1_PROTO)
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc",
            "-I", str(PROTO_DIR),
            "-I", str(out),
            "-I", _grpc_tools_include(),
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            CONTAINERS_PROTO,
            "health_v1.proto",
            "reflection_v1.proto",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, f"protoc failed:\n{res.stderr}"
        sys.path.insert(0, str(out))
        import importlib

        self.pb = importlib.import_module("rsup.v1.containers_pb2")
        self.pb_grpc = importlib.import_module("rsup.v1.containers_pb2_grpc")
        self.health = importlib.import_module("health_v1_pb2")
        self.health_grpc = importlib.import_module("health_v1_pb2_grpc")
        self.refl = importlib.import_module("reflection_v1_pb2")
        self.refl_grpc = importlib.import_module("reflection_v1_pb2_grpc")


class Daemon:
    """A running rsupd and what it needs."""

    def __init__(self, stubs, tmp):
        self.stubs = stubs
        self.tmp = tmp
        self.socket = os.path.join(tmp, "rsupd.sock")
        self.target = "unix://" + self.socket
        self.state_dir = os.path.join(tmp, "state")
        self.rootfs = os.path.join(tmp, "rootfs")
        self.log_path = os.path.join(tmp, "rsupd.log")
        self.proc = None
        self.channel = None
        self.pki = None
        self.tcp = None  # "127.0.0.1:PORT" of --tcp (mutual TLS)

    def start(self):
        bin_dir = Path(os.environ.get("RSUP_BIN_DIR", REPO / "target" / "debug"))
        rsupd = bin_dir / "rsupd"
        if not rsupd.is_file():
            pytest.fail(f"{rsupd} not found: run `cargo build --workspace` (or set RSUP_BIN_DIR)")
        _build_rootfs(self.rootfs)
        self.pki = _make_pki(os.path.join(self.tmp, "pki"))
        self.tcp = f"127.0.0.1:{_free_loopback_port()}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(rsupd), "--socket", self.socket, "--state-dir", self.state_dir,
                    # No fixed TCP port, and links and subnets of its own
                    # (prefix "zpy", swept by scripts/test.sh), removed below.
                    "--metrics-addr", "", "--net-prefix", NET_PREFIX,
                    "--default-subnet", "10.99.231.0/24", "--cgroup-subtree", CGROUP_SUBTREE,
                    # gRPC over TCP with mutual TLS as well (test_mtls_*).
                    "--tcp", self.tcp, "--tls-cert", self.pki["server"],
                    "--tls-key", self.pki["server-key"], "--tls-ca", self.pki["ca-a"],
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.channel = self.open_channel()
        self._wait_serving()

    def open_channel(self):
        return grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)

    def tls_channel(self, ca, cert=None, key=None):
        """A grpcio channel to --tcp trusting `ca`, with a client certificate
        when `cert` and `key` are given."""

        def read(name):
            with open(self.pki[name], "rb") as f:
                return f.read()

        creds = grpc.ssl_channel_credentials(
            root_certificates=read(ca),
            private_key=read(key) if key else None,
            certificate_chain=read(cert) if cert else None,
        )
        return grpc.secure_channel(
            self.tcp, creds, options=[("grpc.ssl_target_name_override", "localhost")]
        )

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as e:
            return f"(no log: {e})"

    def _wait_serving(self):
        health = self.stubs.health_grpc.HealthStub(self.channel)
        request = self.stubs.health.HealthCheckRequest(service="")
        serving = self.stubs.health.HealthCheckResponse.SERVING
        deadline = time.monotonic() + HEALTH_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"rsupd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.socket):
                try:
                    if health.Check(request, timeout=1.0).status == serving:
                        return
                except grpc.RpcError as e:
                    last = e
            time.sleep(POLL)
        pytest.fail(f"rsupd not SERVING after {HEALTH_TIMEOUT}s (last: {last}):\n{self.log_tail()}")

    def stop(self):
        """Force-removes every container, then SIGTERM (SIGKILL after STOP_GRACE)."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.channel is not None:
            pb = self.stubs.pb
            stub = self.stubs.pb_grpc.ContainersStub(self.channel)
            try:
                listed = stub.List(pb.ListRequest(all=True), timeout=RPC_TIMEOUT).containers
            except grpc.RpcError as e:
                print(f"warning: List at teardown: {e}", file=sys.stderr)
                listed = []
            for c in listed:
                try:
                    stub.Remove(pb.RemoveRequest(container=c.id, force=True), timeout=RPC_TIMEOUT)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        print(f"warning: Remove {c.name} at teardown: {e}", file=sys.stderr)
        if self.channel is not None:
            self.channel.close()
        if self.proc.poll() is None:
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
def tmp_root():
    if os.geteuid() != 0:
        pytest.fail("run as root: rsupd creates namespaces and mounts")
    # /tmp/rsup-test-<pid>-...: the CI sweep spares directories of a live pid.
    path = tempfile.mkdtemp(prefix=f"rsup-test-{os.getpid()}-py", dir="/tmp")
    yield path
    if os.environ.get("RSUP_TEST_KEEP") == "1":
        print(f"RSUP_TEST_KEEP=1: keeping {path}", file=sys.stderr)
    else:
        _remove_tree(path)


@pytest.fixture(scope="session")
def stubs(tmp_root):
    out = Path(tmp_root) / "stubs"
    out.mkdir()
    return Stubs(out)


@pytest.fixture(scope="session")
def daemon(stubs, tmp_root):
    d = Daemon(stubs, tmp_root)
    try:
        d.start()
        yield d
    finally:
        d.stop()


@pytest.fixture
def containers(daemon):
    return daemon.stubs.pb_grpc.ContainersStub(daemon.channel)


# ----------------------------------------------------------------- tests


def test_health_serving(daemon):
    health = daemon.stubs.health
    assert daemon.target.startswith("unix:///")
    with daemon.open_channel() as channel:
        stub = daemon.stubs.health_grpc.HealthStub(channel)
        reply = stub.Check(health.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT)
    assert reply.status == health.HealthCheckResponse.SERVING


def test_reflection_v1_lists_services(daemon):
    refl = daemon.stubs.refl
    stub = daemon.stubs.refl_grpc.ServerReflectionStub(daemon.channel)
    replies = list(
        stub.ServerReflectionInfo(iter([refl.ServerReflectionRequest(list_services="")]),
                                  timeout=RPC_TIMEOUT)
    )
    assert len(replies) == 1
    assert replies[0].WhichOneof("message_response") == "list_services_response", replies[0]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"rsup.v1.Containers", "grpc.health.v1.Health"} <= names, names


def test_reflection_v1alpha_descriptor_database(daemon):
    db_mod = pytest.importorskip(
        "grpc_reflection.v1alpha.proto_reflection_descriptor_database",
        reason="pip install grpcio-reflection",
    )
    db = db_mod.ProtoReflectionDescriptorDatabase(daemon.channel)
    names = set(db.get_services())
    assert {"rsup.v1.Containers", "grpc.health.v1.Health"} <= names, names
    # The daemon also serves the file descriptors: the service resolves.
    from google.protobuf.descriptor_pool import DescriptorPool

    service = DescriptorPool(db).FindServiceByName("rsup.v1.Containers")
    assert {"Create", "Start", "Wait", "List", "Logs"} <= {m.name for m in service.methods}


def test_run_container_from_python(daemon, containers):
    pb = daemon.stubs.pb
    name = f"py-hi-{os.getpid()}"
    spec = pb.ContainerSpec(
        name=name, rootfs=daemon.rootfs, command=["sh", "-c", "echo hi-from-python"]
    )
    created = containers.Create(pb.CreateRequest(spec=spec), timeout=RPC_TIMEOUT).container
    try:
        assert created.name == name
        assert created.state == pb.CONTAINER_STATE_CREATED
        containers.Start(pb.StartRequest(container=name), timeout=RPC_TIMEOUT)
        status = containers.Wait(pb.WaitRequest(container=name), timeout=WAIT_TIMEOUT).status
        assert (status.exit_code, status.signal, status.error) == (0, 0, ""), status

        listed = containers.List(pb.ListRequest(all=True), timeout=RPC_TIMEOUT).containers
        mine = [c for c in listed if c.name == name]
        assert len(mine) == 1, [c.name for c in listed]
        assert mine[0].id == created.id
        assert mine[0].state == pb.CONTAINER_STATE_EXITED
        assert mine[0].exit.exit_code == 0

        # The line is in the log once the container has exited; poll (bounded)
        # in case the daemon flushes it just after Wait returns.
        deadline = time.monotonic() + 10.0
        while True:
            entries = list(
                containers.Logs(pb.LogsRequest(container=name, follow=False), timeout=RPC_TIMEOUT)
            )
            stdout = [e.line for e in entries if e.stream == pb.LOG_STREAM_STDOUT]
            if b"hi-from-python" in stdout or time.monotonic() > deadline:
                break
            time.sleep(POLL)
        assert stdout == [b"hi-from-python"], entries
        assert not [e for e in entries if e.stream == pb.LOG_STREAM_STDERR], entries
    finally:
        containers.Remove(pb.RemoveRequest(container=name, force=True), timeout=RPC_TIMEOUT)
    with pytest.raises(grpc.RpcError) as err:
        containers.Inspect(pb.InspectRequest(container=name), timeout=RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_name_is_invalid_argument(daemon, containers):
    pb = daemon.stubs.pb
    spec = pb.ContainerSpec(name="_bad/name", rootfs=daemon.rootfs, command=["true"])
    with pytest.raises(grpc.RpcError) as err:
        containers.Create(pb.CreateRequest(spec=spec), timeout=RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    listed = containers.List(pb.ListRequest(all=True), timeout=RPC_TIMEOUT).containers
    assert "_bad/name" not in {c.name for c in listed}


def test_inspect_unknown_is_not_found(daemon, containers):
    pb = daemon.stubs.pb
    with pytest.raises(grpc.RpcError) as err:
        containers.Inspect(pb.InspectRequest(container="no-such-container-py"),
                           timeout=RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()


def _health_over_tls(daemon, **files):
    health = daemon.stubs.health
    with daemon.tls_channel(**files) as channel:
        stub = daemon.stubs.health_grpc.HealthStub(channel)
        return stub.Check(health.HealthCheckRequest(service=""), timeout=10.0)


def test_mtls_client_with_certificate_of_the_ca_is_served(daemon, containers):
    reply = _health_over_tls(daemon, ca="ca-a", cert="client-a", key="client-a-key")
    assert reply.status == daemon.stubs.health.HealthCheckResponse.SERVING
    pb = daemon.stubs.pb
    with daemon.tls_channel(ca="ca-a", cert="client-a", key="client-a-key") as channel:
        stub = daemon.stubs.pb_grpc.ContainersStub(channel)
        stub.List(pb.ListRequest(all=True), timeout=RPC_TIMEOUT)


@pytest.mark.parametrize(
    "files",
    [
        {"ca": "ca-a"},  # no client certificate
        {"ca": "ca-a", "cert": "client-b", "key": "client-b-key"},  # from CA B
        {"ca": "ca-b", "cert": "client-a", "key": "client-a-key"},  # distrusts rsupd
    ],
    ids=["no-client-cert", "client-cert-from-other-ca", "server-from-untrusted-ca"],
)
def test_mtls_refuses_clients_without_a_certificate_of_the_ca(daemon, files):
    with pytest.raises(grpc.RpcError) as refused:
        _health_over_tls(daemon, **files)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value


def test_import_image_and_run_it_from_python(daemon, containers, tmp_path):
    """Images.Import is a client stream: options first, then the archive's bytes."""
    pb = daemon.stubs.pb
    bin_dir = Path(os.environ.get("RSUP_BIN_DIR", REPO / "target" / "debug"))
    maker = bin_dir / "rsup-image-archive"
    if not maker.is_file():
        pytest.fail(f"{maker} not found: run `cargo build --workspace` (or set RSUP_BIN_DIR)")
    archive = tmp_path / "image.tar"
    res = subprocess.run(
        [str(maker), str(archive), "--mb", "1", "--format", "oci", "--gzip"],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    ref = f"py-image-{os.getpid()}:1"

    def requests():
        yield pb.ImportImageRequest(options=pb.ImportOptions(name=ref))
        with open(archive, "rb") as f:
            while chunk := f.read(256 * 1024):
                yield pb.ImportImageRequest(chunk=chunk)

    images = daemon.stubs.pb_grpc.ImagesStub(daemon.channel)
    image = images.Import(requests(), timeout=WAIT_TIMEOUT)
    assert image.id.startswith("sha256:") and image.names == [ref], image
    assert len(image.layers) == 2 and image.config.cmd == ["sh"], image
    name = f"py-img-{os.getpid()}"
    try:
        spec = pb.ContainerSpec(
            name=name, image=ref, command=["sh", "-c", "ls /data | wc -l; echo $PATH"]
        )
        containers.Create(pb.CreateRequest(spec=spec), timeout=RPC_TIMEOUT)
        containers.Start(pb.StartRequest(container=name), timeout=RPC_TIMEOUT)
        status = containers.Wait(pb.WaitRequest(container=name), timeout=WAIT_TIMEOUT).status
        assert (status.exit_code, status.error) == (0, ""), status
        info = containers.Inspect(pb.InspectRequest(container=name), timeout=RPC_TIMEOUT).container
        assert info.image_id == image.id and info.spec.image == ref, info
        deadline = time.monotonic() + 10.0
        while True:
            entries = list(
                containers.Logs(pb.LogsRequest(container=name, follow=False), timeout=RPC_TIMEOUT)
            )
            lines = [e.line for e in entries if e.stream == pb.LOG_STREAM_STDOUT]
            if len(lines) == 2 or time.monotonic() > deadline:
                break
            time.sleep(POLL)
        assert [line.strip() for line in lines] == [b"1", b"/bin"], entries
        # In use: refused; the bad-input codes cross languages too.
        with pytest.raises(grpc.RpcError) as err:
            images.Remove(pb.RemoveImageRequest(image=ref), timeout=RPC_TIMEOUT)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value
        with pytest.raises(grpc.RpcError) as err:
            images.Inspect(pb.InspectImageRequest(image="no-such-image"), timeout=RPC_TIMEOUT)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value
    finally:
        containers.Remove(pb.RemoveRequest(container=name, force=True), timeout=RPC_TIMEOUT)
    images.Remove(pb.RemoveImageRequest(image=ref), timeout=RPC_TIMEOUT)
    listed = images.List(pb.ListImagesRequest(), timeout=RPC_TIMEOUT).images
    assert ref not in [n for i in listed for n in i.names], listed
