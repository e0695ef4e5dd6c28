"""Real fencing for a lab: one fence_virtd per lab on the host, fence_xvm on the nodes.

Each lab's fence_virtd has its own config, key, multicast address and port, and
listens on the lab's bridge only, so two labs never answer each other. Its life
follows the lab's: `up` starts it, `down` stops it (found by its config path
even when the lab record is gone).

A fence_virtd serves one libvirt driver. A mixed lab (container cluster nodes,
VM remote nodes) therefore gets a second daemon and a second fence_xvm device
for its VMs, on an address and port of their own, sharing the lab's key.

fence_virtd's libvirt backend acts on any domain its URI sees (every lab's, on
a shared host). Each daemon's config therefore has a static map ("groups"): a
request is carried out only for a domain named in its group, from an address
of the lab's subnet. So the lab's key fences the lab's own nodes, nothing else.
"""

from __future__ import annotations

import glob
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lxml import etree
from lxml.builder import E

from labctl.errors import HostError
from labctl.plan import LabPlan
from labctl.proc import run as run_cmd
from labctl.render import render

NODE_KEY_PATH = "/etc/cluster/fence_xvm.key"
KEY_BYTES = 4096
BASE_PORT = 1229  # fence_xvm's default; lab N uses BASE_PORT + N (+ 256 for its VMs)
STONITH_ID = "fence-xvm"
BACKENDS = ("lxc", "vm")


@dataclass(frozen=True)
class FencePlan:
    address: str
    port: int
    interface: str
    uri: str
    key_file: Path
    config: Path
    pidfile: Path
    stonith_id: str
    nodes: tuple[str, ...]  # what its fence_xvm device may fence


def fence_plans(plan: LabPlan, uri_of: Callable[[str], str]) -> list[FencePlan]:
    """One fence_virtd per backend of the lab's fenceable nodes, the cluster nodes'
    backend first (it keeps the plain names). Guest nodes are not fenced by a
    device: the cluster recovers them through their resource."""
    index = plan.network.index
    first = plan.cluster_nodes[0].backend
    fenceable = [n for n in plan.nodes if n.role != "guest"]
    used = {n.backend for n in fenceable}
    out = []
    for k, backend in enumerate([first, *sorted(used - {first})]):
        suffix = "" if k == 0 else f"-{backend}"
        out.append(
            FencePlan(
                address=f"225.0.{213 + k}.{index}",
                port=BASE_PORT + 256 * k + index,
                interface=plan.network.bridge,
                uri=uri_of(backend),
                key_file=plan.dir / "fence_xvm.key",
                config=plan.dir / f"fence_virtd{suffix}.conf",
                pidfile=plan.dir / f"fence_virtd{suffix}.pid",
                stonith_id=STONITH_ID + suffix,
                nodes=tuple(n.name for n in fenceable if n.backend == backend),
            )
        )
    return out


def config_paths(lab_dir: Path) -> list[Path]:
    """Every config a lab's fence_virtd may have been started with."""
    return [lab_dir / "fence_virtd.conf"] + [lab_dir / f"fence_virtd-{b}.conf" for b in BACKENDS]


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


def group_members(plan: LabPlan, fp: FencePlan) -> list[tuple[str, str]]:
    """The static map entries of FP's daemon: who may ask (`ip`), and what it may
    fence (`uuid`, which fence_virtd also matches against domain names).

    fence_xvm sends one request per address of the node, each claiming that
    address (CTS adds test addresses from .200 up), so every address of the
    lab's subnet but the host's may ask. The address is a claim inside a
    request signed with the lab's key, not a boundary of its own: what narrows
    the key is the target list.
    """
    subnet = plan.network.subnet
    gateway = plan.network.gateway
    ips = [("ip", str(a)) for a in subnet.hosts() if a != gateway]
    return ips + [("uuid", name) for name in fp.nodes]


def virtd_config(plan: LabPlan, fp: FencePlan, modules: str) -> str:
    members = "\n".join(f'        {k} = "{v}";' for k, v in group_members(plan, fp))
    return render(
        "fence_virtd.conf",
        lab=plan.name,
        module_path=modules,
        key_file=fp.key_file,
        address=fp.address,
        port=fp.port,
        interface=fp.interface,
        uri=fp.uri,
        members=members,
    )


def stonith_primitive(fp: FencePlan) -> etree._Element:
    """A fence_xvm device able to fence exactly FP's nodes, through FP's fence_virtd."""
    params = {
        "multicast_address": fp.address,
        "ipport": str(fp.port),
        "key_file": NODE_KEY_PATH,
        # fence_xvm -o list shows every domain of the host, other labs' too:
        # pin the device to this lab's nodes (domain names are node names).
        "pcmk_host_list": " ".join(fp.nodes),
        "pcmk_host_check": "static-list",
    }
    sid = fp.stonith_id
    return E.primitive(
        E.instance_attributes(
            *[E.nvpair(id=f"{sid}-{k}", name=k, value=v) for k, v in params.items()],
            id=f"{sid}-instance_attributes",
        ),
        E.operations(
            E.op(id=f"{sid}-monitor-60s", name="monitor", interval="60s", timeout="20s"),
        ),
        id=sid,
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


FENCE_VIRTD_START_TIMEOUT = 30.0


def start(plan: LabPlan, fp: FencePlan) -> int:
    """Start the lab's fence_virtd (it daemonizes); return its PID."""
    fp.config.write_text(virtd_config(plan, fp, module_path()))
    log = fp.config.with_suffix(".log")
    # The daemon keeps the descriptors it was given: a file, never our pipes.
    with open(log, "w") as out:
        proc = run_cmd(
            ["fence_virtd", "-f", str(fp.config), "-p", str(fp.pidfile), "-w"],
            where=f"fencing of lab {plan.name}",
            timeout=FENCE_VIRTD_START_TIMEOUT,
            check=False,
            stdout=out,
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
