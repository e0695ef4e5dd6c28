"""Whether the host can carry a lab: its free memory, and the kernel limits that all
of a host's containers share. `up` asks before it creates anything."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import HostError
from labctl.plan import LabPlan
from labctl.render import templates_dir

# Idle memory of a node (PSS of its processes, scripts/bench), rounded up: a
# container node runs no kernel of its own, so this is what it costs the host.
CONTAINER_MIB = {"cluster": 170, "remote": 24, "guest": 24, "qnetd": 24}
VM_OVERHEAD_MIB = 64  # QEMU itself, over the guest's memory
HOST_RESERVE_MIB = 1024  # left to the host and labctl's own work

# What one container adds to the host's per-user counts (measured: systemd,
# journald, networkd and dbus hold about 6 inotify instances and 14 watches per
# node; the nodes' service users each hold a key).
PER_CONTAINER = {
    "fs.inotify.max_user_instances": 8,
    "fs.inotify.max_user_watches": 64,
    "kernel.keys.maxkeys": 2,
    "kernel.keys.maxbytes": 64,
}
WHAT = {
    "fs.inotify.max_user_instances": "inotify instances per user",
    "fs.inotify.max_user_watches": "inotify watches per user",
    "kernel.keys.maxkeys": "kernel keys per user",
    "kernel.keys.maxbytes": "kernel key bytes per user",
}


@dataclass(frozen=True)
class Sysctl:
    key: str
    want: int  # what scripts/setup-host raises it to


def recommended(text: str | None = None) -> list[Sysctl]:
    """templates/host-sysctl.conf: the limits scripts/setup-host raises; pure given TEXT."""
    if text is None:
        text = (templates_dir() / "host-sysctl.conf").read_text()
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"\s*([a-z0-9_.]+)\s*=\s*(\d+)\s*", line)
        if m:
            out.append(Sysctl(m.group(1), int(m.group(2))))
    return out


def node_mib(plan: LabPlan) -> dict[str, int]:
    """Memory each node of PLAN is expected to take from the host, MiB."""
    return {
        n.name: plan.spec.memory_mib + VM_OVERHEAD_MIB
        if n.backend == "vm"
        else CONTAINER_MIB[n.role]
        for n in plan.all_nodes
    }


def memory_shortfall(plan: LabPlan, available_mib: int) -> str | None:
    """Why PLAN does not fit in AVAILABLE_MIB of host memory, or None; pure."""
    cost = node_mib(plan)
    need = sum(cost.values())
    usable = available_mib - HOST_RESERVE_MIB
    if need <= usable:
        return None
    spec = plan.spec
    fixed = sum(
        c
        for n, c in zip(plan.all_nodes, cost.values(), strict=True)
        if n.role != "remote" and n.role != "guest"
    )
    if spec.mode == "cluster":
        fits, what = max(0, usable // max(cost.values())), "cluster nodes"
    else:
        each = max(
            c
            for n, c in zip(plan.all_nodes, cost.values(), strict=True)
            if n.role in ("remote", "guest")
        )
        fits, what = max(0, (usable - fixed) // each), f"{spec.mode} nodes"
    return (
        f"lab {spec.name} needs about {need / 1024:.1f} GiB of memory and the host has "
        f"{available_mib / 1024:.1f} GiB available ({HOST_RESERVE_MIB} MiB kept for the host): "
        f"{fits} {what} would fit; ask for fewer, or free memory"
    )


def limit_shortfalls(containers: int, limits: dict[str, int], in_use: dict[str, int]) -> list[str]:
    """Each shared kernel limit that CONTAINERS more containers would exceed; pure."""
    out = []
    for key, per in PER_CONTAINER.items():
        if key not in limits:
            continue
        need = in_use.get(key, 0) + per * containers
        if need > limits[key]:
            out.append(
                f"the host allows {limits[key]} {WHAT[key]} ({key}), {in_use.get(key, 0)} are "
                f"in use and {containers} more containers need about {per * containers}"
            )
    return out


def parse_key_users(text: str) -> dict[int, tuple[int, int]]:
    """/proc/key-users: uid -> (keys, bytes) held; pure."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\d+):\s+\d+\s+\S+\s+(\d+)/\d+\s+(\d+)/\d+", line)
        if m:
            out[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
    return out


def read_sysctl(key: str) -> int | None:
    try:
        return int(Path("/proc/sys", *key.split(".")).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def inotify_in_use(uid: int = 0) -> tuple[int, int]:
    """Inotify instances and watches held by UID's processes (every container's
    systemd counts as the host's root)."""
    instances = watches = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                    instances += 1
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        watches += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return instances, watches


def available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise HostError("cannot read MemAvailable from /proc/meminfo")


def host_in_use() -> dict[str, int]:
    instances, watches = inotify_in_use()
    try:
        users = parse_key_users(Path("/proc/key-users").read_text())
    except OSError:
        users = {}
    # root's keys have their own, much higher limit (kernel.keys.root_maxkeys)
    others = [v for uid, v in users.items() if uid != 0] or [(0, 0)]
    return {
        "fs.inotify.max_user_instances": instances,
        "fs.inotify.max_user_watches": watches,
        "kernel.keys.maxkeys": max(k for k, _ in others),
        "kernel.keys.maxbytes": max(b for _, b in others),
    }


def check(plan: LabPlan) -> None:
    """Refuse, in one line, a lab the host cannot carry; before anything is created."""
    problem = memory_shortfall(plan, available_mib())
    if problem:
        raise HostError(problem)
    containers = sum(1 for n in plan.all_nodes if n.backend == "lxc")
    limits = {k: v for k in PER_CONTAINER if (v := read_sysctl(k)) is not None}
    short = limit_shortfalls(containers, limits, host_in_use()) if containers else []
    if short:
        raise HostError(
            f"{short[0]}: run scripts/setup-host (it raises the limits templates/host-sysctl.conf "
            "lists), or raise it with sysctl -w"
        )
