"""Turn a LabSpec into concrete names, roles, addresses and paths. Pure: no I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import UsageError
from labctl.spec import DEFAULT_IMAGE, LabSpec, NodeRole, Role

# Labs take /24s out of this block, one each, skipping any in use on the host.
SUPERNET = ipaddress.IPv4Network("10.213.0.0/16")
NETWORK_PREFIX = "labctl-"
BRIDGE_PREFIX = "lcbr"
# A second corosync link (`up --links 2`) is a network of its own, at the same place
# in the next /16: lab subnet 10.213.7.0/24 has link 1 on 10.214.7.0/24. Its name
# does not start with NETWORK_PREFIX, which names labs ("labctl-LAB").
LINK_SUPERNETS = (SUPERNET, ipaddress.IPv4Network("10.214.0.0/16"))
LINK_NETWORK_PREFIX = "lclink"
LINK_BRIDGE_PREFIX = "lclk"
CLUSTER_HOST_BASE = 10  # cluster node i gets .10+i
QNETD_HOST = 9  # the quorum device's node (`up --qdevice`), just below the cluster nodes
OTHER_HOST_BASE = 30  # remote/guest node i gets .30+i (.50+i past 19 cluster nodes)
CTS_IP_RESERVE = 55  # the subnet's last addresses, for CTS's IPaddr resources (.200 up in a /24)
LAB_PREFIXES = (24, 23, 22)  # a lab takes the smallest of these its nodes fit in


def other_host_base(cluster_nodes: int) -> int:
    return OTHER_HOST_BASE if CLUSTER_HOST_BASE + cluster_nodes < OTHER_HOST_BASE else 50


def other_capacity(prefix: int, cluster_nodes: int) -> int:
    """How many remote or guest nodes a lab subnet of PREFIX holds."""
    first_cts = 2 ** (32 - prefix) - 1 - CTS_IP_RESERVE
    return first_cts - 1 - other_host_base(cluster_nodes)


def lab_prefix(spec: LabSpec) -> int:
    """The smallest subnet (largest prefix) that holds SPEC's nodes."""
    if spec.mode == "cluster":
        return LAB_PREFIXES[0]
    for prefix in LAB_PREFIXES:
        if spec.nodes <= other_capacity(prefix, spec.cluster_nodes):
            return prefix
    raise UsageError(f"{spec.nodes} {spec.mode} nodes do not fit in one lab's subnet")


ROLE_LETTER: dict[str, str] = {"cluster": "c", "remote": "r", "guest": "g", "qnetd": "q"}
# The qnetd node is made from the cluster layer: corosync's tools, and no daemon of
# Pacemaker's started at boot (the remote layer would start pacemaker_remote).
ROLE_LAYER: dict[str, str] = {
    "cluster": "cluster",
    "remote": "remote",
    "guest": "remote",
    "qnetd": "cluster",
}
QNETD_PACKAGE = "corosync-qnetd"
QDEVICE_PACKAGE = "corosync-qdevice"


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    bridge: str
    index: int
    subnet: ipaddress.IPv4Network
    nat: bool

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @property
    def cts_ip_base(self) -> ipaddress.IPv4Address:
        return self.subnet.broadcast_address - CTS_IP_RESERVE


@dataclass(frozen=True)
class NodePlan:
    name: str
    role: NodeRole
    index: int  # 1-based within its role
    ip: ipaddress.IPv4Address
    mac: str
    layer: str  # image layer: "cluster" or "remote"
    dir: Path  # per-node state: upper/work dirs, root mount point
    backend: str = "lxc"  # "lxc" (container) or "vm"
    image: str = DEFAULT_IMAGE  # the built image its lower layers come from
    # Its address and MAC on each further corosync link (link 1, ...): cluster nodes
    # of a lab with --links 2 only.
    link_ips: tuple[ipaddress.IPv4Address, ...] = ()
    link_macs: tuple[str, ...] = ()
    # Debian packages in a layer over its image's role layer (--packages, the qdevice's)
    packages: tuple[str, ...] = ()
    build: str = ""  # IMAGE/NAME of the Pacemaker build over its image ("" none)

    @property
    def volume(self) -> str:
        return f"{self.name}.qcow2"

    @property
    def seed(self) -> Path:
        return self.dir / "seed.img"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def root(self) -> Path:
        return self.dir / "root"


@dataclass(frozen=True)
class LabPlan:
    spec: LabSpec
    network: NetworkPlan
    nodes: tuple[NodePlan, ...]
    dir: Path
    links: tuple[NetworkPlan, ...] = ()  # the networks of corosync links 1, ...
    # The corosync-qnetd node (`up --qdevice`). Not in NODES, which are Pacemaker's
    # nodes: it is no cluster member, and only what every node gets (a domain, a
    # root, an address, SSH) is its. ALL_NODES has it too.
    qnetd: NodePlan | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cluster_nodes(self) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if n.role == "cluster")

    @property
    def all_nodes(self) -> tuple[NodePlan, ...]:
        """Every domain of the lab: Pacemaker's nodes and the qnetd node, if any."""
        return self.nodes if self.qnetd is None else (*self.nodes, self.qnetd)

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def private_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def authkey(self) -> Path:
        return self.dir / "authkey"

    @property
    def xml_dir(self) -> Path:
        return self.dir / "xml"

    @property
    def disks_dir(self) -> Path:
        return self.dir / "disks"

    @property
    def pool(self) -> str:
        return NETWORK_PREFIX + self.spec.name

    @property
    def images(self) -> tuple[str, ...]:
        """The built images the lab's nodes are made from, cluster nodes' first."""
        return tuple(dict.fromkeys(n.image for n in self.nodes))

    @property
    def mixed(self) -> bool:
        """Whether the nodes are made from more than one image (a mixed-version lab)."""
        return len(self.images) > 1

    @property
    def vm_nodes(self) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if n.backend == "vm")

    @property
    def record(self) -> Path:
        return self.dir / "lab.json"

    def node(self, name: str) -> NodePlan:
        for n in self.all_nodes:
            if n.name == name:
                return n
        raise UsageError(
            f"lab {self.name!r} has no node {name!r}: its nodes are "
            + ", ".join(n.name for n in self.all_nodes)
        )


def network_name(lab: str) -> str:
    return NETWORK_PREFIX + lab


def lab_of_network(name: str) -> str | None:
    return name[len(NETWORK_PREFIX) :] if name.startswith(NETWORK_PREFIX) else None


def link_network_name(lab: str, link: int) -> str:
    return f"{LINK_NETWORK_PREFIX}{link}-{lab}"


def link_network_names(lab: str) -> tuple[str, ...]:
    """Every name a further link's network of LAB may have (teardown looks for all)."""
    return tuple(link_network_name(lab, k) for k in range(1, len(LINK_SUPERNETS)))


def pick_subnet_index(
    used: Iterable[ipaddress.IPv4Network], prefix: int = 24, links: int = 1
) -> int:
    """The /24 index in SUPERNET where the lowest free subnet of PREFIX starts: one
    that overlaps none of USED (host routes, other networks), nor does its place
    on any of the further LINKS."""
    used = list(used)
    per = 2 ** (24 - prefix)
    for i, _subnet in enumerate(SUPERNET.subnets(new_prefix=prefix)):
        if i == 0:
            continue  # keep .0.0 out: too easy to confuse with a network address
        wanted = [lab_subnet(i * per, prefix, link) for link in range(links)]
        if not any(w.overlaps(u) for w in wanted for u in used):
            return i * per
    raise UsageError(f"no free /{prefix} left in {SUPERNET}: take some labs down first")


def lab_subnet(index: int, prefix: int, link: int = 0) -> ipaddress.IPv4Network:
    supernet = LINK_SUPERNETS[link]
    return list(supernet.subnets(new_prefix=24))[index].supernet(new_prefix=prefix)


def node_mac(index: int, host: int, link: int = 0) -> str:
    """A locally administered MAC (QEMU/KVM OUI) unique per lab subnet, host number
    and link."""
    return f"52:54:00:{0xD5 + 0x10 * link + (host >> 8):02x}:{index:02x}:{host & 0xFF:02x}"


def make_plan(
    spec: LabSpec,
    subnet_index: int,
    state_dir: Path,
    node_images: Mapping[str, str] | None = None,
    build: str = "",
    node_builds: Mapping[str, str] | None = None,
) -> LabPlan:
    """The full, deterministic layout of a lab: same inputs, same plan. NODE_IMAGES
    (node name -> image, from the lab's record) overrides what SPEC says per role;
    NODE_BUILDS (node -> build label) overrides BUILD, the one every node runs."""
    node_images = node_images or {}
    node_builds = node_builds or {}
    subnet = lab_subnet(subnet_index, lab_prefix(spec))
    network = NetworkPlan(
        name=network_name(spec.name),
        bridge=f"{BRIDGE_PREFIX}{subnet_index}",
        index=subnet_index,
        subnet=subnet,
        nat=spec.network == "nat",
    )
    links = tuple(
        NetworkPlan(
            name=link_network_name(spec.name, k),
            bridge=f"{LINK_BRIDGE_PREFIX}{k}x{subnet_index}",
            index=subnet_index,
            subnet=lab_subnet(subnet_index, lab_prefix(spec), k),
            nat=False,
        )
        for k in range(1, spec.links)
    )
    lab_dir = state_dir / "labs" / spec.name
    roles: list[tuple[Role, int, int]] = []
    if spec.mode == "cluster":
        roles.append(("cluster", spec.nodes, CLUSTER_HOST_BASE))
    else:
        roles.append(("cluster", spec.cluster_nodes, CLUSTER_HOST_BASE))
        roles.append((spec.mode, spec.nodes, other_host_base(spec.cluster_nodes)))
    nodes = []
    for role, count, base in roles:
        # With --backend vm, remote and guest nodes are VMs and the cluster nodes
        # that run them stay containers (guest VMs are started by the cluster
        # nodes through the host's libvirtd); in cluster mode every node is a VM.
        vm = spec.backend == "vm" and (role != "cluster" or spec.mode == "cluster")
        for i in range(1, count + 1):
            host = base + i
            name = f"{spec.name}-{ROLE_LETTER[role]}{i}"
            nodes.append(
                NodePlan(
                    name=name,
                    role=role,
                    index=i,
                    ip=subnet.network_address + host,
                    mac=node_mac(subnet_index, host),
                    layer=ROLE_LAYER[role],
                    dir=lab_dir / "nodes" / name,
                    backend="vm" if vm else "lxc",
                    image=node_images.get(name, spec.image_of(role)),
                    # corosync's links are the cluster nodes' only
                    link_ips=tuple(
                        net.subnet.network_address + host for net in links if role == "cluster"
                    ),
                    link_macs=tuple(
                        node_mac(subnet_index, host, k)
                        for k, _net in enumerate(links, start=1)
                        if role == "cluster"
                    ),
                    packages=node_packages(spec, role),
                    build=node_builds.get(name, build),
                )
            )
    qnetd = None
    if spec.qdevice:
        name = f"{spec.name}-{ROLE_LETTER['qnetd']}1"
        qnetd = NodePlan(
            name=name,
            role="qnetd",
            index=1,
            ip=subnet.network_address + QNETD_HOST,
            mac=node_mac(subnet_index, QNETD_HOST),
            layer=ROLE_LAYER["qnetd"],
            dir=lab_dir / "nodes" / name,
            image=node_images.get(name, spec.image),
            packages=node_packages(spec, "qnetd"),
        )
    return LabPlan(
        spec=spec, network=network, nodes=tuple(nodes), dir=lab_dir, links=links, qnetd=qnetd
    )


def node_packages(spec: LabSpec, role: NodeRole) -> tuple[str, ...]:
    """The packages layered over a node's image: the lab's --packages, and with a
    quorum device corosync-qnetd on its node and corosync-qdevice on cluster nodes."""
    extra: tuple[str, ...] = ()
    if spec.qdevice and role == "qnetd":
        extra = (QNETD_PACKAGE,)
    elif spec.qdevice and role == "cluster":
        extra = (QDEVICE_PACKAGE,)
    return tuple(sorted({*spec.packages, *extra}))
