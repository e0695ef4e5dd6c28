"""Cgroups a lab's containers leave on a hybrid-cgroup host, and their removal.

On such a host libvirt places a container in its own group of the cpu, cpuacct,
cpuset, memory, devices, freezer and blkio hierarchies, but not of pids and
name=systemd; labctl's init wrapper (templates/labctl-init) joins a group of the
same path there, so that the container's systemd keeps to its own subtree.
libvirt removes the groups it made when the container stops; nobody removes the
other two. `down` does, for the lab's node names: rmdir only, deepest first,
so that a group that still has processes is left as it is (the kernel refuses).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

# libvirt_lxc's group of a container: machine/lxc-PID-NAME.libvirt-lxc.
_GROUP = re.compile(r"lxc-[0-9]+-(?P<name>[A-Za-z0-9-]+)\.libvirt-lxc")
# Below a hierarchy's root, libvirt's partition is at most a few levels down (the
# cgroup namespace libvirtd runs in may itself sit deeper in the host's tree).
_MAX_DEPTH = 6


def v1_mounts(mounts_text: str) -> list[Path]:
    """Mount points of the cgroup v1 hierarchies in /proc/self/mounts' text."""
    out = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup":
            out.append(Path(fields[1]))
    return out


def container_groups(root: Path, names: set[str] | None) -> list[Path]:
    """The groups below hierarchy ROOT of containers called one of NAMES (None: any).

    A container's group is not walked into, nor is anything deeper than libvirt
    places its partition."""
    found: list[Path] = []
    for top, dirs, _files in os.walk(root):
        depth = len(Path(top).relative_to(root).parts)
        keep = []
        for d in dirs:
            m = _GROUP.fullmatch(d)
            if m is None:
                if depth < _MAX_DEPTH:
                    keep.append(d)
            elif (names is None or m["name"] in names) and Path(top).name == "machine":
                found.append(Path(top) / d)
        dirs[:] = keep
    return found


def remove_group(group: Path) -> bool:
    """rmdir GROUP and every group below it, deepest first; False if any stayed
    (still has processes, or vanished under us: both are fine to leave)."""
    ok = True
    for top, dirs, _files in os.walk(group, topdown=False):
        for d in dirs:
            ok = _rmdir(Path(top) / d) and ok
    return _rmdir(group) and ok


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def remove_leftovers(names: Iterable[str], mounts_text: str | None = None) -> int:
    """Remove the groups the containers called NAMES left in every v1 hierarchy;
    how many were removed. On a host without v1 hierarchies: nothing to do."""
    wanted = set(names)
    if not wanted:
        return 0
    if mounts_text is None:
        mounts_text = Path("/proc/self/mounts").read_text()
    removed = 0
    for root in v1_mounts(mounts_text):
        for group in container_groups(root, wanted):
            removed += remove_group(group)
    return removed
