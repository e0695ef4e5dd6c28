"""Overlay roots for LXC nodes: mount, find, unmount (mount(2) through libc)."""

from __future__ import annotations

import ctypes
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import HostError
from labctl.safety import is_strictly_under, is_under

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class MountEntry:
    target: str
    fstype: str
    options: str  # super block options (for overlay: lowerdir=..., upperdir=...)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Entries of /proc/self/mountinfo (see proc(5)); pure."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        entries.append(MountEntry(_unescape(fields[4]), rfields[0], _unescape(rfields[2])))
    return entries


def current_mounts() -> list[MountEntry]:
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text())


def mounts_under(directory: Path, entries: list[MountEntry] | None = None) -> list[str]:
    """Mount points below DIRECTORY, deepest first (the order to unmount them).

    Paths are compared by their components, DIRECTORY with its symbolic links
    resolved (mountinfo holds resolved paths)."""
    entries = current_mounts() if entries is None else entries
    real = os.path.realpath(directory)
    found = {e.target for e in entries if is_strictly_under(e.target, real)}
    return sorted(found, key=lambda t: (-t.count("/"), t))


def overlay_lowerdirs(entries: list[MountEntry] | None = None) -> list[str]:
    """The lower directories of every overlay mount (resolved paths, as mountinfo has them)."""
    entries = current_mounts() if entries is None else entries
    dirs = []
    for e in entries:
        if e.fstype != "overlay":
            continue
        for opt in e.options.split(","):
            if opt.startswith("lowerdir="):
                dirs += opt[len("lowerdir=") :].split(":")
    return dirs


def used_by_overlay(directory: Path, entries: list[MountEntry] | None = None) -> bool:
    """Some overlay mount has a lower directory at or below DIRECTORY (compared as paths)."""
    real = os.path.realpath(directory)
    return any(is_under(d, real) for d in overlay_lowerdirs(entries))


def overlay_targets_over(directory: Path, entries: list[MountEntry] | None = None) -> list[str]:
    """Targets of the overlay mounts with a lower directory at or below DIRECTORY."""
    entries = current_mounts() if entries is None else entries
    real = os.path.realpath(directory)
    return sorted(
        {
            e.target
            for e in entries
            if e.fstype == "overlay"
            and any(
                is_under(d, real)
                for opt in e.options.split(",")
                if opt.startswith("lowerdir=")
                for d in opt[len("lowerdir=") :].split(":")
            )
        }
    )


def mount_overlay(lowers: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount an overlay of LOWERS (top first) with UPPER at TARGET."""
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise HostError(f"mounting the overlay root at {target} failed: {os.strerror(err)}")


def unmount(target: str) -> None:
    """Unmount TARGET; a busy mount is detached (lazy) rather than left behind."""
    if _libc.umount2(target.encode(), 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return  # not mounted (any more)
    if err == errno.EBUSY and _libc.umount2(target.encode(), MNT_DETACH) == 0:
        return
    raise HostError(f"unmounting {target} failed: {os.strerror(err)}")
