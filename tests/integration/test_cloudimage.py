"""Cloud image import, with real qemu-img and a real HTTP server on loopback."""

import functools
import hashlib
import http.server
import subprocess
import threading
import time

import pytest

from labctl import cloudimage
from labctl.errors import HostError, UsageError, WaitTimeout


def make_image(path, fmt="qcow2", backing=None):
    argv = ["qemu-img", "create", "-q", "-f", fmt]
    if backing:
        argv += ["-b", str(backing), "-F", "qcow2"]
    subprocess.run([*argv, str(path), "64M"], check=True)
    return path


def sha(path, algorithm="sha256"):
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def cache_files(state):
    d = cloudimage.cache_dir(state)
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_a_url_with_the_right_sha512_is_cached_by_sha256_and_reused(tmp_path, served):
    www, base = served
    img = make_image(www / "c.qcow2")
    state = tmp_path / "state"
    check = cloudimage.parse_checksum("sha512:" + sha(img, "sha512"))
    got = cloudimage.import_image(state, f"{base}/c.qcow2", check)
    assert (got.sha256, got.virtual_size, got.source) == (sha(img), 64 << 20, f"{base}/c.qcow2")
    assert got.path.read_bytes() == img.read_bytes()
    assert got.path.stat().st_mode & 0o777 == 0o644
    assert cloudimage.list_cached(state) == [got]
    # By sha256 the cache answers without the source.
    img.unlink()
    again = cloudimage.import_image(state, f"{base}/c.qcow2", cloudimage.parse_checksum(got.sha256))
    assert again == got


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(tmp_path, served):
    www, base = served
    make_image(www / "c.qcow2")
    state = tmp_path / "state"
    with pytest.raises(UsageError, match="not " + "0" * 64):
        cloudimage.import_image(state, f"{base}/c.qcow2", cloudimage.parse_checksum("0" * 64))
    assert cache_files(state) == []


def test_a_missing_url_and_a_missing_path_say_so(tmp_path, served):
    _www, base = served
    with pytest.raises(HostError, match="could not fetch"):
        cloudimage.import_image(tmp_path, f"{base}/none.qcow2", None)
    with pytest.raises(UsageError, match="no such file"):
        cloudimage.import_image(tmp_path, str(tmp_path / "none.qcow2"), None)
    assert cache_files(tmp_path) == []


def test_raw_images_and_images_with_a_backing_file_are_refused(tmp_path):
    raw = make_image(tmp_path / "r.img", fmt="raw")
    with pytest.raises(UsageError, match="is raw, not qcow2"):
        cloudimage.import_image(tmp_path / "s", str(raw), None)
    over = make_image(tmp_path / "o.qcow2", backing=make_image(tmp_path / "b.qcow2"))
    with pytest.raises(UsageError, match="backing file of its own"):
        cloudimage.import_image(tmp_path / "s", str(over), None)
    assert cache_files(tmp_path / "s") == []


def test_a_cached_image_is_not_removed_while_a_lab_volume_uses_it(tmp_path):
    state = tmp_path / "state"
    got = cloudimage.import_image(state, str(make_image(tmp_path / "c.qcow2")), None)
    disks = state / "labs" / "demo" / "disks"
    disks.mkdir(parents=True)
    make_image(disks / "demo-r1.qcow2", backing=got.path)
    with pytest.raises(UsageError, match="take that lab down first"):
        cloudimage.remove_cached(state, got.sha256[:8])
    (disks / "demo-r1.qcow2").unlink()
    with pytest.raises(UsageError, match="no cached cloud image"):
        cloudimage.remove_cached(state, "ffffffff" if not got.sha256.startswith("f") else "0000")
    assert cloudimage.remove_cached(state, got.sha256[:8]) == got
    assert cache_files(state) == []


def test_a_signed_url_is_fetched_whole_but_its_query_is_neither_stored_nor_printed(
    tmp_path, served
):
    www, base = served
    img = make_image(www / "c.qcow2")
    state = tmp_path / "state"
    url = f"{base}/c.qcow2?X-Amz-Signature=s3cr3t&token=t0k3n"
    said: list[str] = []
    got = cloudimage.import_image(
        state, url, cloudimage.parse_checksum("sha256:" + sha(img)), said.append
    )
    assert got.source == f"{base}/c.qcow2"
    for f in cloudimage.cache_dir(state).iterdir():
        assert b"s3cr3t" not in f.read_bytes()[:4096] and b"t0k3n" not in f.read_bytes()[:4096]
    assert said and not any("s3cr3t" in m or "t0k3n" in m for m in said)
    assert cloudimage.list_cached(state) == [got]
    with pytest.raises(UsageError) as e:
        cloudimage.import_image(
            tmp_path / "s2", url, cloudimage.parse_checksum("sha256:" + "0" * 64), said.append
        )
    assert "s3cr3t" not in str(e.value)


def test_an_image_with_an_external_data_file_is_refused(tmp_path):
    img = tmp_path / "d.qcow2"
    data_file = f"data_file={tmp_path / 'd.raw'}"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", data_file, str(img), "64M"], check=True
    )
    with pytest.raises(UsageError, match="external data file"):
        cloudimage.import_image(tmp_path / "s", str(img), None)
    assert cache_files(tmp_path / "s") == []


class _Endless(http.server.BaseHTTPRequestHandler):
    """Bytes without end and without a Content-Length; every DELAY seconds a few."""

    delay = 0.0
    size = 1 << 20

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.path.endswith("announced"):
            self.send_header("Content-Length", str(64 << 20))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * (16 if self.delay else self.size))
                self.wfile.flush()
                if self.delay:
                    time.sleep(self.delay)
        except OSError:
            pass

    def log_message(self, *_a):
        pass


@pytest.fixture
def endless():
    servers = []

    def serve(delay):
        handler = type("H", (_Endless,), {"delay": delay})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


def test_a_download_larger_than_the_limit_is_stopped_and_nothing_is_kept(tmp_path, endless):
    base = endless(0.0)
    state = tmp_path / "state"
    with pytest.raises(UsageError, match="is larger than 4 MiB"):
        cloudimage.import_image(state, f"{base}/big.qcow2", None, max_bytes=4 << 20)
    with pytest.raises(UsageError, match="is larger than 4 MiB"):  # refused from its header
        cloudimage.import_image(state, f"{base}/announced", None, max_bytes=4 << 20)
    assert cache_files(state) == []


def test_a_trickling_download_is_stopped_at_its_overall_deadline(tmp_path, endless):
    # 16 bytes every 0.05 s: no single read waits long, the whole never ends.
    base = endless(0.05)
    state = tmp_path / "state"
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"did not finish within 0\.5 s"):
        cloudimage.import_image(state, f"{base}/slow.qcow2", None, timeout=0.5)
    assert time.monotonic() - start < 3
    assert cache_files(state) == []
