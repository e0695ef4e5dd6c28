"""Users' cloud images (`--image PATH|URL`) for VM nodes.

An image is copied or fetched once into a cache named by its SHA-256, checked
against the checksum the user gave, and then only ever used read-only, as the
backing file of each node's copy-on-write volume. Nodes booted from it take
their identity from a cloud-init NoCloud seed (labctl.cloudinit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from labctl import images
from labctl.errors import HostError, UsageError, WaitTimeout

Progress = Callable[[str], None]

ALGORITHMS = {"sha256": 64, "sha512": 128}
URL_SCHEMES = ("http", "https", "file")
CHUNK = 1024 * 1024
# Cloud images are a few hundred MiB (Debian's genericcloud qcow2: ~400 MiB);
# more than this is a wrong URL or a hostile server filling the disk.
MAX_IMAGE_BYTES = 8 << 30
# The whole copy or download, however slowly the bytes come; and per read.
IMPORT_TIMEOUT = 30 * 60.0
READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def is_url(ref: str) -> bool:
    return urllib.parse.urlsplit(ref).scheme in URL_SCHEMES


def redact(ref: str) -> str:
    """REF fit to store or print: a URL without its query string, fragment or
    password (signed download links carry their credentials there). Pure."""
    if not is_url(ref):
        return ref
    u = urllib.parse.urlsplit(ref)
    netloc = u.netloc.rpartition("@")[2]
    if u.username is not None:
        netloc = f"{u.username}@{netloc}"
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))


def is_image_ref(ref: str) -> bool:
    """Is --image a user's image (a path or a URL) rather than a built image's name?"""
    return is_url(ref) or "/" in ref or ref.endswith((".qcow2", ".img"))


def parse_checksum(text: str) -> Checksum:
    """'sha256:HEX', 'sha512:HEX', or a bare hex digest of either length."""
    algorithm, sep, digest = text.strip().lower().rpartition(":")
    if not sep:
        by_length = {n: a for a, n in ALGORITHMS.items()}
        algorithm = by_length.get(len(digest), "")
    if algorithm not in ALGORITHMS or not re.fullmatch(
        f"[0-9a-f]{{{ALGORITHMS[algorithm]}}}", digest
    ):
        raise UsageError(
            f"--image-checksum {text!r} is not a checksum: give sha256:HEX or sha512:HEX, "
            "as the image's publisher lists it"
        )
    return Checksum(algorithm, digest)


@dataclass(frozen=True)
class CloudImage:
    path: Path  # the cached qcow2, read-only backing file of every node volume
    sha256: str
    source: str
    virtual_size: int


def cache_dir(state_dir: Path) -> Path:
    return state_dir / "images" / "cloud"


def _cached(state_dir: Path, sha256: str) -> CloudImage | None:
    meta = cache_dir(state_dir) / f"{sha256}.json"
    path = meta.with_suffix(".qcow2")
    if not (meta.is_file() and path.is_file()):
        return None
    data = json.loads(meta.read_text())
    # redact: metadata written before labctl redacted URLs may hold a query string.
    return CloudImage(path, sha256, redact(data["source"]), int(data["virtual_size"]))


def list_cached(state_dir: Path) -> list[CloudImage]:
    d = cache_dir(state_dir)
    found = (_cached(state_dir, p.stem) for p in sorted(d.glob("*.json"))) if d.is_dir() else ()
    return [c for c in found if c is not None]


def check_info(info: dict, source: str) -> None:
    """Refuse what labctl cannot use as a backing file. Pure."""
    fmt = info.get("format")
    if fmt != "qcow2":
        raise UsageError(
            f"--image {source} is {fmt or 'not a disk image'}, not qcow2: "
            "convert it with `qemu-img convert -O qcow2 IN OUT`"
        )
    if info.get("backing-filename"):
        raise UsageError(
            f"--image {source} has a backing file of its own: flatten it with "
            "`qemu-img convert -O qcow2 IN OUT`"
        )
    specific = info.get("format-specific") or {}
    if (specific.get("data") or {}).get("data-file"):
        # Its guest data lives in another file, named inside it: the same
        # reach outside the cache as a backing file.
        raise UsageError(
            f"--image {source} keeps its data in an external data file: make one "
            "self-contained image with `qemu-img convert -O qcow2 IN OUT`"
        )


def _open_source(source: str, read_timeout: float = READ_TIMEOUT):
    if not is_url(source):
        try:
            return open(source, "rb")
        except FileNotFoundError:
            raise UsageError(f"--image {source}: no such file (give a path or a URL)") from None
        except OSError as e:
            raise UsageError(f"--image {source}: {e.strerror}") from None
    try:
        return urllib.request.urlopen(source, timeout=read_timeout)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise HostError(f"could not fetch --image {redact(source)}: {reason}") from None


def _announced_size(src: object) -> int:
    """The Content-Length a server announced (0 when none)."""
    headers = getattr(src, "headers", None)
    length = headers.get("Content-Length") if headers is not None else None
    return int(length) if length and length.isdigit() else 0


def _refuse_oversize(size: int, limit: int, shown: str) -> None:
    if size > limit:
        raise UsageError(
            f"--image {shown} is larger than {limit / (1 << 20):g} MiB, more than a cloud "
            "image should be: check the URL (nothing was kept)"
        )


def _read_some(src: BinaryIO, shown: str) -> bytes:
    """What SRC has now, up to CHUNK: read1 returns as soon as some bytes came (read
    would wait for the whole chunk, past any deadline, from a trickling server)."""
    try:
        read1 = getattr(src, "read1", None)
        return bytes(read1(CHUNK) if read1 else src.read(CHUNK))
    except OSError as e:
        raise HostError(f"reading --image {shown} failed: {e.strerror or e}") from None


def import_image(
    state_dir: Path,
    source: str,
    checksum: Checksum | None,
    progress: Progress = lambda _m: None,
    max_bytes: int | None = None,
    timeout: float | None = None,
) -> CloudImage:
    """SOURCE (a path or URL) in the cache, checked against CHECKSUM; a cached copy
    with the same SHA-256 is used without reading SOURCE again. At most MAX_BYTES
    (MAX_IMAGE_BYTES), read within TIMEOUT seconds (IMPORT_TIMEOUT) overall."""
    limit = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    seconds = IMPORT_TIMEOUT if timeout is None else timeout
    if checksum and checksum.algorithm == "sha256":
        hit = _cached(state_dir, checksum.hexdigest)
        if hit:
            return hit
    d = cache_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    part = d / f".import-{os.getpid()}.part"
    shown = redact(source)
    try:
        sha256 = hashlib.sha256()
        wanted = hashlib.new(checksum.algorithm) if checksum else None
        done, step = 0, 256 * CHUNK
        progress(f"reading {shown}")
        deadline = time.monotonic() + seconds
        with _open_source(source, min(READ_TIMEOUT, seconds)) as src, open(part, "wb") as out:
            _refuse_oversize(_announced_size(src), limit, shown)
            while chunk := _read_some(src, shown):
                _refuse_oversize(done + len(chunk), limit, shown)
                if time.monotonic() > deadline:
                    raise WaitTimeout(
                        f"reading --image {shown} did not finish within {seconds:g} s "
                        f"({done // CHUNK} MiB read): try a nearer mirror, or download "
                        "it yourself and give its path"
                    )
                out.write(chunk)
                sha256.update(chunk)
                if wanted:
                    wanted.update(chunk)
                done += len(chunk)
                if done % step < CHUNK:
                    progress(f"{done // CHUNK} MiB")
        if wanted and checksum and wanted.hexdigest() != checksum.hexdigest:
            raise UsageError(
                f"--image {shown} has {checksum.algorithm} {wanted.hexdigest()}, not "
                f"{checksum.hexdigest}: check --image-checksum and the download (nothing was kept)"
            )
        info = images.qemu_img_info(part)
        check_info(info, shown)
        digest = sha256.hexdigest()
        path = d / f"{digest}.qcow2"
        part.chmod(0o644)  # QEMU, as libvirt-qemu, reads it through each node's volume
        part.replace(path)
        (d / f"{digest}.json").write_text(
            json.dumps(
                {
                    "source": shown,
                    "sha256": digest,
                    "virtual_size": int(info["virtual-size"]),
                    "imported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                },
                indent=2,
            )
            + "\n"
        )
        progress(f"{done // CHUNK} MiB, sha256 {digest[:12]}…, cached")
        hit = _cached(state_dir, digest)
        assert hit is not None
        return hit
    finally:
        part.unlink(missing_ok=True)


def remove_cached(state_dir: Path, sha256_prefix: str) -> CloudImage:
    """Delete the one cached image whose SHA-256 starts with the prefix, unless a
    lab's volume is still backed by it."""
    matches = [c for c in list_cached(state_dir) if c.sha256.startswith(sha256_prefix.lower())]
    if len(matches) != 1:
        what = "no" if not matches else "more than one"
        raise UsageError(
            f"{what} cached cloud image starts with {sha256_prefix!r}: "
            "`labctl image list` shows their sha256"
        )
    img = matches[0]
    for volume in (state_dir / "labs").glob("*/**/*.qcow2"):
        if images.qemu_img_info(volume).get("backing-filename") == str(img.path):
            raise UsageError(
                f"cloud image {img.sha256[:12]}… backs {volume}: take that lab down first"
            )
    img.path.unlink(missing_ok=True)
    img.path.with_suffix(".json").unlink(missing_ok=True)
    return img
