"""lxml builders for the libvirt XML labctl defines. Pure: each returns a string.

Everything is pretty-printed: ocf:heartbeat:VirtualDomain finds a domain's name
with a line regex and needs `<name>` alone on its line.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree
from lxml.builder import E

from labctl.plan import LabPlan, NetworkPlan, NodePlan

METADATA_NS = "https://labctl.invalid/xmlns/lab/1"
METADATA_PREFIX = "labctl"
LXC_EMULATOR = "/usr/lib/libvirt/libvirt_lxc"
# The disks of labctl's VMs (qemu_domain_xml): the node's qcow2 volume, and its seed.
VM_DISK, SEED_DISK = "vda", "vdb"


@dataclass(frozen=True)
class Mount:
    """A host directory shown inside a container."""

    source: str
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class LabMetadata:
    """What labctl writes into every domain it owns, so libvirt alone can say what a lab has."""

    lab: str
    role: str
    node: str
    state_dir: str


def serialize(element: etree._Element) -> str:
    return etree.tostring(element, pretty_print=True, encoding="unicode")


def metadata_element(meta: LabMetadata) -> etree._Element:
    el = etree.Element(f"{{{METADATA_NS}}}lab", nsmap={METADATA_PREFIX: METADATA_NS})
    el.set("name", meta.lab)
    el.set("role", meta.role)
    el.set("node", meta.node)
    el.set("state-dir", meta.state_dir)
    return el


def parse_metadata(text: str) -> LabMetadata:
    """Read back what metadata_element wrote (libvirt returns it as a bare element)."""
    el = etree.fromstring(text.encode())
    # libvirt hands the element back without its namespace; it was selected by it.
    if el.tag not in ("lab", f"{{{METADATA_NS}}}lab"):
        raise ValueError(f"not labctl metadata: {el.tag}")
    return LabMetadata(
        lab=el.get("name", ""),
        role=el.get("role", ""),
        node=el.get("node", ""),
        state_dir=el.get("state-dir", ""),
    )


def network_xml(net: NetworkPlan, nodes: tuple[NodePlan, ...]) -> str:
    """A bridge with dnsmasq handing every node its fixed address; no <forward> unless NAT."""
    dhcp = E.dhcp(*[E.host(mac=n.mac, name=n.name, ip=str(n.ip)) for n in nodes])
    children: list[etree._Element] = [E.name(net.name)]
    if net.nat:
        children.append(E.forward(mode="nat"))
    children += [
        E.bridge(name=net.bridge, stp="off", delay="0"),
        E.ip(dhcp, address=str(net.gateway), netmask=str(net.subnet.netmask)),
    ]
    return serialize(E.network(*children))


def link_network_xml(net: NetworkPlan) -> str:
    """A further corosync link: a bridge and the host's address on it, nothing else
    (no DHCP, no DNS: the nodes have fixed addresses there, names come by link 0)."""
    return serialize(
        E.network(
            E.name(net.name),
            E.bridge(name=net.bridge, stp="off", delay="0"),
            E.dns(enable="no"),
            E.ip(address=str(net.gateway), netmask=str(net.subnet.netmask)),
        )
    )


def _identity(plan: LabPlan, node: NodePlan) -> list[etree._Element]:
    """Name, labctl metadata and size: what every lab domain starts with."""
    meta = LabMetadata(
        lab=plan.name, role=node.role, node=node.name, state_dir=str(plan.dir.parent.parent)
    )
    return [
        E.name(node.name),
        E.metadata(metadata_element(meta)),
        E.memory(str(plan.spec.memory_mib), unit="MiB"),
        E.vcpu(str(plan.spec.vcpus)),
    ]


def _lifecycle() -> list[etree._Element]:
    # on_reboot=restart: fence_xvm's reboot and a node's own reboot both come back.
    return [
        E.clock(offset="utc"),
        E.on_poweroff("destroy"),
        E.on_reboot("restart"),
        E.on_crash("destroy"),
    ]


# A container's PID 1 on a hybrid-cgroup host (templates/labctl-init, which
# provision writes into every container's root): it keeps the container's
# systemd in its own cgroups.
LXC_INIT = "/usr/local/sbin/labctl-init"


def lxc_domain_xml(
    plan: LabPlan,
    node: NodePlan,
    *,
    legacy_cgroups: bool,
    mounts: tuple[Mount, ...] = (),
) -> str:
    """An LXC system container booting systemd from the node's overlay root."""
    # On a hybrid-cgroup host init is labctl's wrapper, which first joins the
    # container's own groups.
    os_children = [E.type("exe"), E.init(LXC_INIT if legacy_cgroups else "/sbin/init")]
    if legacy_cgroups:
        # On a hybrid-cgroup host a container's systemd must not mount cgroup2:
        # it would create its units in the host's shared cgroup2 root.
        os_children += [
            E.initarg("systemd.unified_cgroup_hierarchy=0"),
            E.initarg("systemd.legacy_systemd_cgroup_controller=1"),
        ]
    fs = [
        E.filesystem(
            E.source(dir=str(node.root)), E.target(dir="/"), type="mount", accessmode="passthrough"
        )
    ]
    for m in mounts:
        el = E.filesystem(
            E.source(dir=m.source), E.target(dir=m.target), type="mount", accessmode="passthrough"
        )
        if m.readonly:
            el.append(E.readonly())
        fs.append(el)
    dom = E.domain(
        *_identity(plan, node),
        E.os(*os_children),
        E.features(E.privnet()),
        *_lifecycle(),
        E.devices(
            E.emulator(LXC_EMULATOR),
            *fs,
            E.interface(
                E.source(network=plan.network.name), E.mac(address=node.mac), type="network"
            ),
            # Further corosync links, in link order (eth1 is link 1).
            *(
                E.interface(E.source(network=net.name), E.mac(address=mac), type="network")
                for net, mac in zip(plan.links, node.link_macs, strict=False)
            ),
            E.console(E.target(type="lxc", port="0"), type="pty"),
        ),
        type="lxc",
    )
    return serialize(dom)


QEMU_EMULATOR = "/usr/bin/qemu-system-x86_64"


# QEMU gives TCG a 1 GiB translation cache by default, and a busy VM fills it:
# a 512 MiB node then costs 1-1.5 GiB of host memory. 128 MiB holds a lab
# node's working set (kernel, systemd, sshd, Pacemaker).
TCG_TB_CACHE_MIB = 128


def _tcg_features(domain_type: str) -> list[etree._Element]:
    if domain_type != "qemu":
        return []  # KVM runs guest code natively: no translation cache
    tb_cache = E("tb-cache", str(TCG_TB_CACHE_MIB), unit="MiB")
    return [E.tcg(tb_cache)]


def qemu_domain_xml(
    plan: LabPlan,
    node: NodePlan,
    *,
    domain_type: str,
    kernel: str | None,
    initrd: str | None,
    pool: str,
    volume: str,
    seed: str,
) -> str:
    """A VM on a copy-on-write volume, with a seed disk carrying its identity.

    With KERNEL (labctl's own images) it boots that kernel directly: under TCG
    every second of emulated firmware counts. Without it (a user's cloud image)
    the firmware boots the disk through the image's own boot loader.
    """
    if kernel:
        cmdline = f"root=/dev/vda rw console=ttyS0 systemd.hostname={node.name} quiet"
        boot = [E.kernel(kernel), E.initrd(initrd or ""), E.cmdline(cmdline)]
    else:
        boot = [E.boot(dev="hd")]
    dom = E.domain(
        *_identity(plan, node),
        E.os(
            E.type("hvm", arch="x86_64", machine="pc"),
            *boot,
        ),
        E.features(E.acpi(), *_tcg_features(domain_type)),
        *_lifecycle(),
        E.devices(
            E.emulator(QEMU_EMULATOR),
            E.disk(
                E.driver(name="qemu", type="qcow2"),
                E.source(pool=pool, volume=volume),
                E.target(dev=VM_DISK, bus="virtio"),
                type="volume",
                device="disk",
            ),
            E.disk(
                E.driver(name="qemu", type="raw"),
                E.source(file=seed),
                E.target(dev=SEED_DISK, bus="virtio"),
                E.readonly(),
                type="file",
                device="disk",
            ),
            E.interface(
                E.source(network=plan.network.name),
                E.mac(address=node.mac),
                E.model(type="virtio"),
                type="network",
            ),
            E.serial(E.target(port="0"), type="pty"),
            E.console(E.target(type="serial", port="0"), type="pty"),
            E.memballoon(model="none"),
        ),
        type=domain_type,
    )
    return serialize(dom)


def pool_xml(name: str, path: str) -> str:
    """A directory storage pool holding a lab's VM disks."""
    return serialize(
        E.pool(E.name(name), E.target(E.path(path), E.permissions(E.mode("0711"))), type="dir")
    )


def volume_xml(name: str, capacity_bytes: int, backing: str) -> str:
    """A qcow2 volume over BACKING (the image's disk): the node's own writes only."""
    return serialize(
        E.volume(
            E.name(name),
            E.capacity(str(capacity_bytes), unit="bytes"),
            E.target(E.format(type="qcow2")),
            E.backingStore(E.path(backing), E.format(type="qcow2")),
            type="file",
        )
    )


def domain_snapshot_xml(name: str, description: str, memory: bool = True) -> str:
    """A libvirt snapshot NAME of a labctl VM: an internal system checkpoint (disk and
    memory in the qcow2 volume itself, so it goes with the volume at `down`); of a VM
    that is not running (not MEMORY), its disk only. The seed disk is raw and
    read-only: nothing to keep, and raw cannot hold one."""
    return serialize(
        E.domainsnapshot(
            E.name(name),
            E.description(description),
            E.memory(snapshot="internal" if memory else "no"),
            E.disks(
                E.disk(name=VM_DISK, snapshot="internal"),
                E.disk(name=SEED_DISK, snapshot="no"),
            ),
        )
    )
