"""Facts about the host, and `labctl host check`: what is ready, what is missing, how to fix it."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from labctl import capacity, mounts, virt
from labctl.errors import HostError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise HostError(
            f"{what} needs root (libvirt LXC, mounts): run it as root, e.g. sudo labctl ..."
        )


def parse_proc_net_route(text: str) -> list[ipaddress.IPv4Network]:
    """Destinations of the host's IPv4 routes, default route excluded; pure."""
    nets = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        dest = ipaddress.IPv4Address(struct.pack("<I", int(f[1], 16)))
        mask = ipaddress.IPv4Address(struct.pack("<I", int(f[7], 16)))
        if int(mask) == 0:
            continue
        nets.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    return nets


def host_subnets() -> list[ipaddress.IPv4Network]:
    try:
        return parse_proc_net_route(Path("/proc/net/route").read_text())
    except OSError:
        return []


def host_name() -> str:
    return socket.gethostname().split(".")[0]


def cgroup_layout(mount_entries: list[mounts.MountEntry] | None = None) -> str:
    """'unified' (cgroup2 only), 'hybrid' (v1 controllers + cgroup2) or 'legacy' (v1 only)."""
    entries = mounts.current_mounts() if mount_entries is None else mount_entries
    v1 = any(e.fstype == "cgroup" for e in entries)
    v2 = any(e.fstype == "cgroup2" for e in entries)
    if v2 and not v1:
        return "unified"
    return "hybrid" if v2 else "legacy"


def kvm_status() -> tuple[bool, str]:
    """Whether KVM can really run a Linux guest here; /dev/kvm alone is not enough.

    A paravirtual KVM (kvm_pvm, as in some cloud sandboxes) exposes /dev/kvm but
    a stock kernel hangs in it; such hosts must use TCG (domain type 'qemu').
    """
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm: VMs use TCG software emulation (slow)"
    modules = Path("/proc/modules").read_text() if os.path.exists("/proc/modules") else ""
    loaded = {line.split()[0] for line in modules.splitlines() if line}
    if "kvm_pvm" in loaded:
        return (
            False,
            "/dev/kvm is paravirtual KVM (kvm_pvm), which cannot boot a stock kernel: VMs use TCG",
        )
    if loaded & {"kvm_intel", "kvm_amd"}:
        return True, "KVM usable (" + ", ".join(sorted(loaded & {"kvm_intel", "kvm_amd"})) + ")"
    return False, "/dev/kvm present but no kvm_intel/kvm_amd module: VMs use TCG"


def checks(state_dir: Path) -> list[Check]:
    """Each line of `labctl host check`."""
    out = [
        Check(
            "root",
            os.geteuid() == 0,
            "running as root" if os.geteuid() == 0 else "not root",
            "run labctl as root (sudo)",
        )
    ]
    for label, uri in (
        ("LXC driver", virt.default_uri("lxc")),
        ("QEMU driver", virt.default_uri("vm")),
    ):
        ok, detail = virt.driver_ok(uri)
        out.append(Check(f"libvirtd {label} ({uri})", ok, detail, "scripts/setup-host"))
    ok, detail = kvm_status()
    out.append(Check("KVM", True, detail))
    for tool, pkg in (
        ("debootstrap", "debootstrap"),
        ("qemu-img", "qemu-utils"),
        ("ssh", "openssh-client"),
        # `labctl net`: its bridge rules, and the delayer's queueing rules.
        ("nft", "nftables"),
        ("iptables", "iptables"),
    ):
        found = shutil.which(tool)
        out.append(Check(tool, bool(found), found or "missing", f"apt-get install {pkg}"))
    nss = Path("/etc/nsswitch.conf")
    hosts_line = (
        next((ln for ln in nss.read_text().splitlines() if ln.startswith("hosts:")), "")
        if nss.exists()
        else ""
    )
    out.append(
        Check(
            "node names resolve on the host (libnss-libvirt)",
            " libvirt" in hosts_line
            and os.path.exists("/lib/x86_64-linux-gnu/libnss_libvirt.so.2"),
            hosts_line.strip() or "no hosts: line",
            "scripts/setup-host (installs libnss-libvirt, adds 'libvirt' to hosts: in /etc/nsswitch.conf)",
        )
    )
    layout = cgroup_layout()
    out.append(
        Check(
            "cgroup layout",
            True,
            layout + (": containers' systemd kept on cgroup v1" if layout == "hybrid" else ""),
        )
    )
    for want in capacity.recommended():
        have = capacity.read_sysctl(want.key)
        out.append(
            Check(
                want.key,
                have is None or have >= want.want,
                f"{have} (large labs want {want.want})" if have is not None else "not settable",
                "scripts/setup-host (raises it; --revert restores)",
            )
        )
    probe = state_dir if state_dir.exists() else state_dir.parent
    free = shutil.disk_usage(probe).free
    out.append(
        Check(
            f"free disk at {state_dir}",
            free >= 4 << 30,
            f"{free / (1 << 30):.1f} GiB",
            "free some space: an image takes about 0.6 GiB, a node a few MiB",
        )
    )
    return out
