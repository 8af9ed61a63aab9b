"""A busybox image as a `docker save` tarball, made from the host's busybox-static.

Used by tests/python/test_docker_api.py (loaded with the Docker SDK's
images.load) and by scripts/bench.sh docker-run (loaded into rsupd's Docker
socket and into podman from the same file):

    python3 tests/python/busybox_image.py OUT.tar [--tag rsuptest/busybox:1]

The archive is Docker's `docker save` format (before Docker 25, no
index.json): one layer, `<layer id>/layer.tar`, holding /bin/busybox (the
host's, $RSUP_BUSYBOX or /bin/busybox), a symlink /bin/<applet> -> busybox
per applet of `busybox --list`, /etc/passwd and /etc/group (root only) and
the usual empty directories; a config `<sha256>.json` whose rootfs.diff_ids
is the sha256 of that layer tar; and manifest.json naming the config, the
layer and the RepoTags (plus the legacy `repositories` file). The image's
id is therefore "sha256:" + the config's sha256. Entries have fixed times and
owners, so the same busybox gives the same image id every time.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

DEFAULT_TAG = "rsuptest/busybox:1"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MTIME = 1700000000  # fixed: the same input gives the same digests


def _add(tar, name, *, data=None, mode=0o644, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = mode
    info.type = kind
    info.linkname = link
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def layer_tar(busybox=None):
    """The layer's tar bytes."""
    busybox = busybox or os.environ.get("RSUP_BUSYBOX", "/bin/busybox")
    applets = subprocess.run(
        [busybox, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    with open(busybox, "rb") as f:
        binary = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode in (("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o555),
                        ("root", 0o700), ("sys", 0o555), ("tmp", 0o1777), ("var", 0o755),
                        ("var/www", 0o755)):
            _add(tar, d, mode=mode, kind=tarfile.DIRTYPE)
        _add(tar, "bin/busybox", data=binary, mode=0o755)
        for applet in sorted(set(applets)):
            # the list names busybox itself: a link would replace the binary
            if applet != "busybox" and "/" not in applet:
                _add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        _add(tar, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
        _add(tar, "etc/group", data=b"root:x:0:\n")
    return buf.getvalue()


def save_tarball(tags=(DEFAULT_TAG,), *, busybox=None, labels=None, cmd=("sh",), layer=None):
    """(tarball bytes, image id) of a `docker save` archive of the busybox image
    tagged `tags`; `labels` go into the config (a different image id)."""
    layer = layer if layer is not None else layer_tar(busybox)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": [PATH_ENV],
            "Cmd": list(cmd),
            "Labels": dict(labels or {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2023-11-14T22:13:20Z",
                     "created_by": "tests/python/busybox_image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    layer_dir = hashlib.sha256(diff_id.encode() + config_bytes).hexdigest()
    manifest = [{
        "Config": f"{config_hex}.json",
        "RepoTags": list(tags),
        "Layers": [f"{layer_dir}/layer.tar"],
    }]
    repositories = {}
    for tag in tags:
        repo, _, t = tag.rpartition(":")
        repositories.setdefault(repo, {})[t] = layer_dir
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, layer_dir, mode=0o755, kind=tarfile.DIRTYPE)
        _add(tar, f"{layer_dir}/VERSION", data=b"1.0")
        _add(tar, f"{layer_dir}/json", data=json.dumps({"id": layer_dir}).encode())
        _add(tar, f"{layer_dir}/layer.tar", data=layer)
        _add(tar, f"{config_hex}.json", data=config_bytes)
        _add(tar, "manifest.json", data=json.dumps(manifest).encode())
        _add(tar, "repositories", data=json.dumps(repositories).encode())
    return buf.getvalue(), "sha256:" + config_hex


def main(argv):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--tag", action="append", help=f"RepoTags entry (default {DEFAULT_TAG})")
    a = p.parse_args(argv)
    data, image_id = save_tarball(tuple(a.tag or [DEFAULT_TAG]))
    with open(a.out, "wb") as f:
        f.write(data)
    print(image_id)


if __name__ == "__main__":
    main(sys.argv[1:])
