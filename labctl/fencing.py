"""Real fencing for a lab: one fence_virtd per lab on the host, fence_xvm on the nodes.

Each lab's fence_virtd has its own config, key, multicast address and port, and
listens on the lab's bridge only, so two labs never answer each other. Its life
follows the lab's: `up` starts it, `down` stops it (found by its config path
even when the lab record is gone).
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lxml import etree
from lxml.builder import E

from labctl.errors import HostError
from labctl.plan import LabPlan
from labctl.render import render

NODE_KEY_PATH = "/etc/cluster/fence_xvm.key"
KEY_BYTES = 4096
BASE_PORT = 1229  # fence_xvm's default; lab N uses BASE_PORT + N
STONITH_ID = "fence-xvm"


@dataclass(frozen=True)
class FencePlan:
    address: str
    port: int
    interface: str
    uri: str
    key_file: Path
    config: Path
    pidfile: Path


def fence_plan(plan: LabPlan, uri: str) -> FencePlan:
    index = plan.network.index
    return FencePlan(
        address=f"225.0.213.{index}",
        port=BASE_PORT + index,
        interface=plan.network.bridge,
        uri=uri,
        key_file=plan.dir / "fence_xvm.key",
        config=plan.dir / "fence_virtd.conf",
        pidfile=plan.dir / "fence_virtd.pid",
    )


def module_path() -> str:
    found = sorted(
        glob.glob("/usr/lib/*/fence-virt/multicast.so")
        + glob.glob("/usr/lib*/fence-virt/multicast.so")
    )
    if not found:
        raise HostError(
            "fence_virtd's plugins are missing: run scripts/setup-host "
            "(apt-get install fence-virtd)"
        )
    return str(Path(found[0]).parent)


def virtd_config(plan: LabPlan, fp: FencePlan, modules: str) -> str:
    return render(
        "fence_virtd.conf",
        lab=plan.name,
        module_path=modules,
        key_file=fp.key_file,
        address=fp.address,
        port=fp.port,
        interface=fp.interface,
        uri=fp.uri,
    )


def fenceable(plan: LabPlan) -> list:
    """Nodes this lab's fence_virtd can reboot: cluster and remote nodes on the
    cluster nodes' backend (guest nodes are recovered through their resource)."""
    backend = plan.cluster_nodes[0].backend
    return [n for n in plan.nodes if n.role != "guest" and n.backend == backend]


def stonith_primitive(plan: LabPlan, fp: FencePlan) -> etree._Element:
    """One fence_xvm device able to fence exactly the lab's cluster nodes."""
    params = {
        "multicast_address": fp.address,
        "ipport": str(fp.port),
        "key_file": NODE_KEY_PATH,
        # fence_xvm -o list shows every domain of the host, other labs' too:
        # pin the device to this lab's nodes (domain names are node names).
        "pcmk_host_list": " ".join(n.name for n in fenceable(plan)),
        "pcmk_host_check": "static-list",
    }
    return E.primitive(
        E.instance_attributes(
            *[E.nvpair(id=f"{STONITH_ID}-{k}", name=k, value=v) for k, v in params.items()],
            id=f"{STONITH_ID}-instance_attributes",
        ),
        E.operations(
            E.op(id=f"{STONITH_ID}-monitor-60s", name="monitor", interval="60s", timeout="20s"),
        ),
        id=STONITH_ID,
        type="fence_xvm",
        **{"class": "stonith"},
    )


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _is_ours(pid: int, config: Path) -> bool:
    args = _cmdline(pid)
    return bool(args) and args[0].endswith("fence_virtd") and str(config) in args


def find_daemons(config: Path) -> list[int]:
    """PIDs of fence_virtd processes started with CONFIG."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _is_ours(int(entry), config):
            pids.append(int(entry))
    return pids


def start(plan: LabPlan, fp: FencePlan) -> int:
    """Start the lab's fence_virtd (it daemonizes); return its PID."""
    fp.config.write_text(virtd_config(plan, fp, module_path()))
    log = fp.config.with_suffix(".log")
    # The daemon keeps the descriptors it was given: a file, never our pipes.
    with open(log, "w") as out:
        proc = subprocess.run(
            ["fence_virtd", "-f", str(fp.config), "-p", str(fp.pidfile), "-w"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            timeout=30,
        )
    if proc.returncode != 0:
        raise HostError(f"fence_virtd failed to start: {log.read_text().strip()[-300:]}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = find_daemons(fp.config)
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise HostError("fence_virtd did not stay up: see the host's syslog")


def stop(config: Path, timeout: float = 10.0) -> int:
    """Stop every fence_virtd started with CONFIG (ours only); return how many."""
    pids = find_daemons(config)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_is_ours(p, config) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _is_ours(pid, config):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
