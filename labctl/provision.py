"""What labctl writes into a node's own layer before it first boots. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from labctl.plan import LabPlan, NodePlan


@dataclass(frozen=True)
class NodeFile:
    path: str  # absolute, inside the node
    data: bytes
    mode: int = 0o644


def hosts_file(plan: LabPlan, host_name: str) -> str:
    """/etc/hosts of every node: all lab nodes, and the host itself on the lab bridge.

    CTS makes nodes reach the machine that runs it by name.
    """
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", ""]
    lines += [f"{n.ip}\t{n.name}" for n in plan.nodes]
    lines.append(f"{plan.network.gateway}\t{host_name}")
    return "\n".join(lines) + "\n"


def known_hosts_lines(plan: LabPlan, host_keys: dict[str, str]) -> str:
    """OpenSSH known_hosts: each node by name and by address, with its pinned key."""
    out = []
    for n in plan.nodes:
        keytype, key = host_keys[n.name].split()[:2]
        out.append(f"{n.name},{n.ip} {keytype} {key}")
    return "\n".join(out) + "\n"


def node_files(
    plan: LabPlan,
    node: NodePlan,
    *,
    host_name: str,
    host_key_private: bytes,
    host_key_public: str,
    lab_key_private: bytes,
    lab_key_public: str,
    known_hosts: str,
) -> list[NodeFile]:
    """Files for NODE: identity, names, SSH trust (host -> node and node -> node)."""
    return [
        NodeFile("/etc/hostname", f"{node.name}\n".encode()),
        NodeFile("/etc/hosts", hosts_file(plan, host_name).encode()),
        NodeFile("/etc/ssh/ssh_host_ed25519_key", host_key_private, 0o600),
        NodeFile("/etc/ssh/ssh_host_ed25519_key.pub", f"{host_key_public}\n".encode()),
        NodeFile("/root/.ssh/authorized_keys", f"{lab_key_public}\n".encode(), 0o600),
        # Node-to-node root SSH without prompts, as CTS and cluster tools expect.
        NodeFile("/root/.ssh/id_ed25519", lab_key_private, 0o600),
        NodeFile("/root/.ssh/known_hosts", known_hosts.encode(), 0o600),
    ]
