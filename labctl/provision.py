"""What labctl writes into a node's own layer before it first boots. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from labctl import fencing
from labctl import pacemaker as pcmk
from labctl.plan import LabPlan, NodePlan
from labctl.render import template_text
from labctl.xml import LXC_INIT, Mount

HOST_LIBVIRT_RUN = "/run/libvirt"
# Where a cluster node sees the host's /run/libvirt. Not /run/libvirt itself:
# systemd mounts a fresh tmpfs on /run at boot, hiding anything mounted there.
NODE_HOST_LIBVIRT = "/var/lib/host-libvirt"


COROSYNC_DROPIN = "/etc/systemd/system/corosync.service.d/labctl-rejoin-delay.conf"
# A fenced node is back within a second (fence_xvm's reboot is destroy + create).
# Rejoining that fast, it would hear of its own fencing after rejoining and shut
# its stack down ("We were allegedly just fenced"). So the first corosync start
# after a boot waits, but only once the lab's cluster has formed (labctl then
# writes the marker): first boots and restarts within one boot are not slowed.
FORMED_MARKER = "/etc/labctl/cluster-formed"
REJOIN_DELAY_S = 12
COROSYNC_AFTER_FENCING = f"""[Service]
ExecStartPre=/bin/sh -c 'if [ -e {FORMED_MARKER} ] && [ ! -e /run/labctl-booted ]; \\
then sleep {REJOIN_DELAY_S}; fi; touch /run/labctl-booted'
TimeoutStartSec=120
"""

# glibc raises its heap trim threshold to twice the largest block it has freed
# back to mmap; after start-up the daemons then keep megabytes of freed heap
# resident for good. Pinned at glibc's own default (128 KiB), an idle cluster
# node's corosync and Pacemaker daemons hold about 12 MiB less, for a few more
# brk/mmap calls. The allocator's behaviour is otherwise the same.
MALLOC_DROPIN = "labctl-malloc.conf"
MALLOC_ENV = """[Service]
Environment=MALLOC_TRIM_THRESHOLD_=131072
"""
# Not pacemaker_remote: measured, pacemaker-remoted's heap is the same either way.
MALLOC_UNITS = ("corosync.service", "pacemaker.service")


def drives_guests(plan: LabPlan, node: NodePlan) -> bool:
    """Cluster nodes of a guest lab run VirtualDomain against the host's libvirtd."""
    return plan.spec.mode == "guest" and node.role == "cluster"


def host_mounts(plan: LabPlan, node: NodePlan) -> tuple[Mount, ...]:
    """Host directories a node sees: for guest-driving nodes, libvirt's socket
    directory and the lab's domain XML (read-only, at the same path as on the host,
    since VirtualDomain's `config` names it)."""
    if not drives_guests(plan, node):
        return ()
    return (
        Mount(HOST_LIBVIRT_RUN, NODE_HOST_LIBVIRT),
        Mount(str(plan.xml_dir), str(plan.xml_dir), readonly=True),
    )


# Modes of the directories labctl makes for node files: an ssh directory that
# other users can list is sloppy, and a VM's seed copies these modes over its root.
DIR_MODES = {"/": 0o755, "/root": 0o700, "/root/.ssh": 0o700}
DEFAULT_DIR_MODE = 0o755


@dataclass(frozen=True)
class NodeFile:
    path: str  # absolute, inside the node
    data: bytes
    mode: int = 0o644


def lxc_init_file() -> NodeFile:
    """A container's PID 1 on a hybrid-cgroup host (xml.LXC_INIT)."""
    return NodeFile(LXC_INIT, template_text("labctl-init").encode(), 0o755)


def hosts_file(plan: LabPlan, host_name: str) -> str:
    """/etc/hosts of every node: all lab nodes, and the host itself on the lab bridge.

    CTS makes nodes reach the machine that runs it by name.
    """
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", ""]
    lines += [f"{n.ip}\t{n.name}" for n in plan.all_nodes]
    lines.append(f"{plan.network.gateway}\t{host_name}")
    return "\n".join(lines) + "\n"


def known_hosts_lines(plan: LabPlan, host_keys: dict[str, str]) -> str:
    """OpenSSH known_hosts: each node by name and by address, with its pinned key."""
    out = []
    for n in plan.all_nodes:
        keytype, key = host_keys[n.name].split()[:2]
        names = ",".join([n.name, str(n.ip), *map(str, n.link_ips)])
        out.append(f"{names} {keytype} {key}")
    return "\n".join(out) + "\n"


def link_network_file(plan: LabPlan, link: int, ip: ipaddress.IPv4Address, mac: str) -> str:
    """systemd-networkd's config of a node's NIC on corosync link LINK: a fixed address,
    matched by MAC (the image's own config asks link 0's DHCP, by interface name)."""
    net = plan.links[link - 1]
    return (
        f"# labctl: corosync link {link} of lab {plan.name}\n"
        f"[Match]\nMACAddress={mac}\n\n"
        f"[Network]\nAddress={ip}/{net.subnet.prefixlen}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )


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
    files = [
        NodeFile("/etc/hostname", f"{node.name}\n".encode()),
        NodeFile("/etc/hosts", hosts_file(plan, host_name).encode()),
        NodeFile("/etc/ssh/ssh_host_ed25519_key", host_key_private, 0o600),
        NodeFile("/etc/ssh/ssh_host_ed25519_key.pub", f"{host_key_public}\n".encode()),
        NodeFile("/root/.ssh/authorized_keys", f"{lab_key_public}\n".encode(), 0o600),
        # Node-to-node root SSH without prompts, as CTS and cluster tools expect.
        NodeFile("/root/.ssh/id_ed25519", lab_key_private, 0o600),
        NodeFile("/root/.ssh/known_hosts", known_hosts.encode(), 0o600),
    ]
    if node.backend == "lxc":
        files.append(lxc_init_file())
    for k, (ip, mac) in enumerate(zip(node.link_ips, node.link_macs, strict=True), start=1):
        files.append(
            NodeFile(
                f"/etc/systemd/network/81-labctl-link{k}.network",
                link_network_file(plan, k, ip, mac).encode(),
            )
        )
    if node.role == "cluster":
        files.append(NodeFile(COROSYNC_DROPIN, COROSYNC_AFTER_FENCING.encode()))
        files += [
            NodeFile(f"/etc/systemd/system/{unit}.d/{MALLOC_DROPIN}", MALLOC_ENV.encode())
            for unit in MALLOC_UNITS
        ]
    if drives_guests(plan, node):
        # virsh inside the node then talks to the host's libvirtd.
        files.append(
            NodeFile(
                "/etc/tmpfiles.d/labctl-host-libvirt.conf",
                f"L {HOST_LIBVIRT_RUN} - - - - {NODE_HOST_LIBVIRT}\n".encode(),
            )
        )
    return files


# A container cluster node's stack starts at boot: labctl writes these into its
# root before it first boots (lab.preseed_cluster_node), and enables the units.
BOOT_UNITS = ("corosync.service", "pacemaker.service")


def preseeded(node: NodePlan) -> bool:
    """Whether NODE gets its cluster stack before it boots: container cluster nodes.
    A VM copies its seed disk's files at boot, too late for units starting with it."""
    return node.role == "cluster" and node.backend == "lxc"


def cluster_boot_files(
    corosync_conf: str, corosync_key: bytes, fence_key: bytes | None
) -> list[NodeFile]:
    """What corosync and fence_xvm need on a cluster node before its first start.
    Not Pacemaker's authkey: only remote connections use it, and it goes over SSH."""
    files = [
        NodeFile(pcmk.COROSYNC_CONF, corosync_conf.encode()),
        NodeFile(pcmk.COROSYNC_AUTHKEY, corosync_key, 0o400),
    ]
    if fence_key is not None:
        files.append(NodeFile(fencing.NODE_KEY_PATH, fence_key, 0o600))
    return files
