"""Bringing Pacemaker up on a lab's nodes, over SSH, with Pacemaker's own CLI."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from labctl import pacemaker as pcmk
from labctl import ssh
from labctl.errors import CommandError, LabctlError, WaitTimeout
from labctl.plan import LabPlan, NodePlan

CLUSTER_TIMEOUT = 240.0

POLL = 0.5


def _group_id(c: ssh.Connection, group: str) -> int:
    out = c.run(f"getent group {shlex.quote(group)}").stdout
    return int(out.split(":")[2])


def push_authkey(c: ssh.Connection, key: bytes) -> None:
    """/etc/pacemaker/authkey: root:haclient 0640, checked by digest after the copy."""
    c.run("mkdir -p /etc/pacemaker")
    c.put(key, pcmk.AUTHKEY_PATH, mode=0o640, uid=0, gid=_group_id(c, "haclient"))
    remote = c.run(f"sha256sum {pcmk.AUTHKEY_PATH}").stdout.split()[0]
    if remote != pcmk.digest(key):
        raise LabctlError(
            f"{c.name}: the authkey on the node differs from the lab's after the copy"
        )


def push_secret(c: ssh.Connection, data: bytes, path: str) -> None:
    c.run(f"mkdir -p {shlex.quote(str(Path(path).parent))}")
    c.put(data, path, mode=0o600)


def setup_cluster_node(
    c: ssh.Connection,
    plan: LabPlan,
    authkey: bytes,
    corokey: bytes,
    realtime: bool = True,
    seed_cib: bool = True,
) -> None:
    """Config, keys and a first CIB on a cluster node; start_cluster_node starts it.
    Without SEED_CIB the node joins with none and takes the cluster's (a node
    rejoining a running cluster: its own would only be a rival to sync against)."""
    c.run(pcmk.ensure_package_command("pacemaker", "pacemakerd"))
    c.run(pcmk.ensure_package_command("corosync", "corosync"))
    push_authkey(c, authkey)
    c.put(corokey, pcmk.COROSYNC_AUTHKEY, mode=0o400)
    c.put(pcmk.corosync_conf(plan, realtime).encode(), pcmk.COROSYNC_CONF, mode=0o644)
    if seed_cib:
        props = pcmk.lab_properties(plan.spec.fencing, plan.spec.mode == "guest")
        c.run(pcmk.seed_cib_command(props))


def start_cluster_node(c: ssh.Connection) -> None:
    # Enabled at boot, as CTS expects of a cluster node (it checks).
    c.run("systemctl enable --now corosync.service pacemaker.service")


def setup_remote_node(
    c: ssh.Connection, authkey: bytes, port: int, lab_nodes: int = 1, vm: bool = False
) -> None:
    """pacemaker_remote installed, keyed, enabled, running and listening on PORT.

    LAB_NODES: how many nodes are set up at once; past 20 each adds a second to
    the wait (a hundred restarts at once on a busy 2-core host passed 30 s). VM:
    the node is a VM, which under TCG once took longer than 30 s after its boot."""
    c.run(pcmk.ensure_package_command("pacemaker-remote", "pacemaker-remoted"))
    push_authkey(c, authkey)
    if port != 3121:
        c.run(
            "f=/etc/default/pacemaker; [ -d /etc/sysconfig ] && f=/etc/sysconfig/pacemaker; "
            f"sed -i '/^PCMK_remote_port=/d' $f 2>/dev/null; echo PCMK_remote_port={port} >> $f"
        )
    # Restart: a daemon that started at boot before the key existed must read it.
    c.run("systemctl enable pacemaker_remote.service && systemctl restart pacemaker_remote.service")
    base = VM_LISTEN_TIMEOUT if vm else LISTEN_TIMEOUT
    wait_listening(c, port, base + max(0, lab_nodes - 20))


LISTEN_TIMEOUT = 30.0
VM_LISTEN_TIMEOUT = 120.0


def wait_listening(c: ssh.Connection, port: int, timeout: float = LISTEN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if c.run(f"ss -Hltn 'sport = :{port}'").stdout.strip():
            return
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{c.name}: pacemaker_remote is not listening on port {port}")
        time.sleep(0.2)


def crm_mon(c: ssh.Connection) -> pcmk.ClusterView:
    r = c.run("crm_mon --one-shot --inactive --output-as=xml", check=False)
    if r.status != 0 or not r.stdout.lstrip().startswith("<"):
        raise CommandError(c.name, "crm_mon", r.status, r.stdout, r.stderr)
    return pcmk.parse_crm_mon(r.stdout)


PER_NODE_WAIT = 2.0


def wait_online(
    c: ssh.Connection, expected: dict[str, str], timeout: float = CLUSTER_TIMEOUT
) -> pcmk.ClusterView:
    """Poll crm_mon on C until every EXPECTED node (name -> role) is online.

    TIMEOUT is for a lab of up to 20 nodes; each node past that adds
    PER_NODE_WAIT (a hundred guests came online in about 110 s on 2 cores)."""
    timeout += PER_NODE_WAIT * max(0, len(expected) - 20)
    deadline = time.monotonic() + timeout
    last: dict[str, str] = dict.fromkeys(expected, "no answer from crm_mon yet")
    while True:
        try:
            view = crm_mon(c)
        except CommandError as e:
            last = dict.fromkeys(expected, f"crm_mon on {c.name}: {e.stderr.strip() or e.status}")
        else:
            last = pcmk.not_ready(view, expected)
            if not last:
                return view
        if time.monotonic() > deadline:
            detail = "; ".join(f"{n}: {why}" for n, why in sorted(last.items()))
            raise WaitTimeout(f"not online after {timeout:.0f} s: {detail}")
        # crm_mon's XML of a hundred guests costs the node a CPU-second: ask less often.
        time.sleep(POLL if len(expected) <= 20 else 4 * POLL)


def wait_seen_down(c: ssh.Connection, node: str, role: str, timeout: float = 30.0) -> bool:
    """Poll crm_mon on C until NODE is seen not online; False if not within TIMEOUT.

    Right after a fence, crm_mon may still show the node as it was; waiting for
    "online" at once could return before the node ever left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pcmk.not_ready(crm_mon(c), {node: role}):
                return True
        except CommandError:
            pass
        time.sleep(POLL)
    return False


def properties(c: ssh.Connection) -> dict[str, str]:
    return pcmk.parse_properties(c.run("cibadmin --query --scope crm_config").stdout)


def wait_stopped(c: ssh.Connection, agent: str, timeout: float) -> None:
    """Poll crm_mon on C until no resource of AGENT is active."""
    deadline = time.monotonic() + timeout
    while True:
        active = [r.id for r in crm_mon(c).resources.values() if r.agent == agent and r.active]
        if not active:
            return
        if time.monotonic() > deadline:
            raise WaitTimeout(f"still active after {timeout:.0f} s: {', '.join(active)}")
        time.sleep(POLL)


def wait_started(c: ssh.Connection, ids: list[str], timeout: float) -> pcmk.ClusterView:
    """Poll crm_mon on C until every resource of IDS is active somewhere."""
    deadline = time.monotonic() + timeout
    while True:
        view = crm_mon(c)
        down = [i for i in ids if i not in view.resources or not view.resources[i].active]
        if not down:
            return view
        if time.monotonic() > deadline:
            raise WaitTimeout(f"not started after {timeout:.0f} s: {', '.join(down)}")
        time.sleep(POLL)


def set_properties(c: ssh.Connection, props: dict[str, str]) -> None:
    for name, value in props.items():
        c.run(
            "crm_attribute --type crm_config "
            f"--name {shlex.quote(name)} --update {shlex.quote(value)}"
        )


def delete_property(c: ssh.Connection, name: str) -> None:
    c.run(f"crm_attribute --type crm_config --name {shlex.quote(name)} --delete")


def create_many(c: ssh.Connection, xml_texts: list[str], scope: str = "resources") -> None:
    """Add or update many resources (or constraints) in one CIB change: one
    transition, not one each."""
    if not xml_texts:
        return
    # A file, not --xml-text: a hundred guests' resources exceed one argument's limit.
    path = f"/run/labctl-{scope}.xml"
    c.put((f"<{scope}>" + "".join(xml_texts) + f"</{scope}>").encode(), path, mode=0o600)
    c.run(f"cibadmin --modify --allow-create --scope {scope} --xml-file {path} && rm -f {path}")


def connection_resource(node: NodePlan) -> str:
    """The resource that connects the cluster to a remote or guest node."""
    return node.name if node.role == "remote" else f"vm-{node.name}"


def lab_keys(plan: LabPlan) -> tuple[bytes, bytes]:
    return plan.authkey.read_bytes(), (plan.dir / "corosync-authkey").read_bytes()


def corosync_key_path(plan: LabPlan) -> Path:
    return plan.dir / "corosync-authkey"
