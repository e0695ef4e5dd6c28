"""The only module that imports libvirt: connect, define/start/destroy, find a lab's objects."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import libvirt
from lxml import etree

from labctl.errors import HostError, LabctlError, VirtError
from labctl.plan import ROLE_LETTER, lab_of_network
from labctl.xml import METADATA_NS, LabMetadata, parse_metadata

T = TypeVar("T")

# libvirt prints every error to stderr by default; labctl reports them itself.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

LXC_URI = "lxc:///"
QEMU_URI = "qemu:///system"

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


# Each backend needs its own driver, so LIBVIRT_DEFAULT_URI (one URI, often
# qemu:///system for virsh users) cannot choose it; these can.
URI_VARIABLES = {"lxc": "LABCTL_LXC_URI", "vm": "LABCTL_QEMU_URI"}


def default_uri(backend: str) -> str:
    """The libvirt URI of BACKEND ("lxc" or "vm"): LABCTL_LXC_URI / LABCTL_QEMU_URI
    if set, else lxc:/// and qemu:///system. LIBVIRT_DEFAULT_URI is not used."""
    env = os.environ.get(URI_VARIABLES["lxc" if backend == "lxc" else "vm"])
    if env:
        return env
    return LXC_URI if backend == "lxc" else QEMU_URI


def connect(uri: str) -> libvirt.virConnect:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise HostError(
            f"cannot reach libvirtd at {uri} ({e.get_error_message()}): "
            "run scripts/setup-host to install and start it"
        ) from None


def close(conn: libvirt.virConnect) -> None:
    """Close CONN; a connection libvirtd already dropped cannot fail this (a close in a
    `finally` must not replace the error being raised)."""
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


@contextmanager
def connection(uri: str) -> Iterator[libvirt.virConnect]:
    conn = connect(uri)
    try:
        yield conn
    finally:
        close(conn)


def connection_lost(e: libvirt.libvirtError) -> bool:
    """Whether E says the connection to libvirtd is gone (libvirtd stopped or restarted):
    errors of the RPC layer ("End of file while reading data", "client socket is
    closed", "Cannot write data: Broken pipe") or of a closed connection."""
    return e.get_error_domain() == libvirt.VIR_FROM_RPC or e.get_error_code() in (
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
    )


def translate(e: libvirt.libvirtError, call: str, obj: str) -> VirtError:
    """E as one line naming the libvirt CALL, the OBJECT and what to do."""
    message = (e.get_error_message() or str(e)).strip()
    if connection_lost(e):
        return VirtError(
            f"libvirt {call} of {obj} failed: the connection to libvirtd was lost "
            f"({message}); check libvirtd runs (`labctl host check`), then run the "
            "command again (`labctl down LAB` removes what a lab left)",
            connection_lost=True,
        )
    return VirtError(f"libvirt {call} of {obj} failed: {message} (libvirtd's log may say more)")


@contextmanager
def _call(call: str, obj: str) -> Iterator[None]:
    """Inside it, a libvirt error becomes a VirtError naming CALL and OBJ."""
    try:
        yield
    except libvirt.libvirtError as e:
        raise translate(e, call, obj) from e


def as_labctl_error(e: BaseException) -> LabctlError | None:
    """A libvirt error that escaped every narrower translation, for the CLI."""
    if isinstance(e, libvirt.libvirtError):
        return translate(e, "call", "an object")
    return None


def _no_such(e: libvirt.libvirtError) -> bool:
    return e.get_error_code() in (
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_NO_NETWORK,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_OPERATION_INVALID,  # e.g. destroy of a domain that is not running
    )


def _lookup(lookup: Callable[[str], T], name: str) -> T | None:
    """LOOKUP(NAME), or None when libvirt has no such object."""
    try:
        return lookup(name)
    except libvirt.libvirtError as e:
        if _no_such(e):
            return None
        raise


@dataclass(frozen=True)
class DomainInfo:
    name: str
    state: str
    meta: LabMetadata
    persistent: bool
    memory_kib: int


def domain_meta(dom: libvirt.virDomain) -> LabMetadata | None:
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    except libvirt.libvirtError:
        return None
    try:
        return parse_metadata(text)
    except (ValueError, etree.XMLSyntaxError):
        return None


def lab_domains(conn: libvirt.virConnect, lab: str | None = None) -> list[DomainInfo]:
    """Every domain labctl made (of LAB, if given), running or not."""
    found = []
    with _call("listAllDomains", conn_name(conn)):
        doms = conn.listAllDomains()
    for dom in doms:
        meta = domain_meta(dom)
        if meta is None or (lab is not None and meta.lab != lab):
            continue
        try:
            state, _ = dom.state()
            mem = dom.info()[2]
            persistent = bool(dom.isPersistent())
        except libvirt.libvirtError as e:
            if _no_such(e):
                continue  # vanished while we looked
            raise translate(e, "state", f"domain {dom.name()}") from e
        found.append(
            DomainInfo(dom.name(), STATE_NAMES.get(state, str(state)), meta, persistent, mem)
        )
    return sorted(found, key=lambda d: d.name)


def lab_networks(conn: libvirt.virConnect) -> dict[str, str]:
    """labctl's networks: lab name -> network name."""
    out = {}
    with _call("listAllNetworks", conn_name(conn)):
        nets = conn.listAllNetworks()
    for net in nets:
        lab = lab_of_network(net.name())
        if lab:
            out[lab] = net.name()
    return out


def network_subnets(conn: libvirt.virConnect) -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets of every libvirt network, labctl's or not."""
    subnets = []
    with _call("listAllNetworks", conn_name(conn)):
        nets = conn.listAllNetworks()
    docs = []
    for net in nets:
        try:
            docs.append(net.XMLDesc())
        except libvirt.libvirtError as e:
            if _no_such(e):
                continue  # another lab's `down` removed it while we looked
            raise translate(e, "XMLDesc", f"network {net.name()}") from e
    for desc in docs:
        doc = etree.fromstring(desc.encode())
        for ip in doc.findall("ip"):
            addr = ip.get("address")
            if not addr or ":" in addr:
                continue
            mask = ip.get("netmask") or ip.get("prefix") or "24"
            subnets.append(ipaddress.IPv4Network(f"{addr}/{mask}", strict=False))
    return subnets


def create_network(conn: libvirt.virConnect, xml: str) -> None:
    with _call("networkDefineXML/create", f"network {_xml_name(xml)}"):
        net = conn.networkDefineXML(xml)
        net.create()


def remove_network(conn: libvirt.virConnect, name: str) -> bool:
    """Stop and undefine network NAME; False if there was none."""
    with _call("networkLookupByName", f"network {name}"):
        net = _lookup(conn.networkLookupByName, name)
    if net is None:
        return False
    try:
        if net.isActive():
            net.destroy()
        if net.isPersistent():
            net.undefine()
    except libvirt.libvirtError as e:
        if not _no_such(e):
            raise translate(e, "destroy/undefine", f"network {name}") from e
    return True


def define_and_start(conn: libvirt.virConnect, xml: str) -> None:
    with _call("defineXML", f"domain {_xml_name(xml)}"):
        dom = conn.defineXML(xml)
    _start_retrying(dom.create, f"domain {_xml_name(xml)}")


def _xml_name(xml: str) -> str:
    """The <name> of a libvirt XML document, for messages."""
    try:
        return etree.fromstring(xml.encode()).findtext("name") or "?"
    except etree.XMLSyntaxError:
        return "?"


def conn_name(conn: libvirt.virConnect) -> str:
    """A connection as messages name it: its URI."""
    try:
        return str(conn.getURI())
    except libvirt.libvirtError:
        return "the libvirt connection"


# libvirt_lxc fails to join a cgroup it has just made ("Unable to write to
# .../tasks") when a container's systemd at the shared cgroup root removes it
# first. labctl's own containers no longer do (templates/labctl-init); containers
# of an older labctl, or of anything else, still may (docs/host.md). A later try works.
_RETRYABLE = "Failure in libvirt_lxc startup"
START_ATTEMPTS = 4


def _start_retrying(start: Callable[[], object], what: str) -> None:
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            start()
            return
        except libvirt.libvirtError as e:
            if attempt < START_ATTEMPTS and _RETRYABLE in (e.get_error_message() or ""):
                time.sleep(0.5 * attempt)
                continue
            raise translate(e, "create", what) from e


def create_transient(conn: libvirt.virConnect, xml: str) -> None:
    _start_retrying(lambda: conn.createXML(xml), "a transient domain")


QEMU_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)


def domain_ids(conn: libvirt.virConnect, names: list[str]) -> dict[str, int | None]:
    """Each running domain's ID (a new one after every start), None if not running."""
    out: dict[str, int | None] = {}
    for name in names:
        with _call("lookupByName", f"domain {name}"):
            dom = _lookup(conn.lookupByName, name)
            out[name] = dom.ID() if dom is not None and dom.isActive() else None
    return out


def remove_domain(conn: libvirt.virConnect, name: str, kill_init: bool = False) -> bool:
    """Destroy (hard stop) and undefine domain NAME; False if there was none.

    KILL_INIT (teardown only): for a container, SIGKILL its init first."""
    with _call("lookupByName", f"domain {name}"):
        dom = _lookup(conn.lookupByName, name)
        if dom is None:
            return False
        kind = conn.getType()
        try:
            active = dom.isActive()
        except libvirt.libvirtError as e:
            # A transient guest the cluster stopped just now is gone already.
            if _no_such(e):
                return False
            raise
    if kill_init and active and kind == "LXC":
        # A container's systemd ignores SIGTERM, so libvirt's destroy would wait
        # ~1-2 s before its SIGKILL; killing init from the host ends the whole
        # container at once. Nothing in a lab node needs a graceful stop.
        # On failure, destroy below does it the slow way.
        with contextlib.suppress(libvirt.libvirtError):
            dom.sendProcessSignal(1, libvirt.VIR_DOMAIN_PROCESS_SIGNAL_KILL)
    undefine = dom.undefine
    if kind == "QEMU":
        # A VM may have NVRAM, a managed save image or snapshots (made by a user
        # poking at the lab): without these flags libvirt refuses to undefine it.
        undefine = partial(dom.undefineFlags, QEMU_UNDEFINE_FLAGS)
    for call, step in (("destroy", dom.destroy), ("undefine", undefine)):
        try:
            step()
        except libvirt.libvirtError as e:
            if not _no_such(e):
                raise translate(e, call, f"domain {name}") from e
    return True


def suspend_domain(conn: libvirt.virConnect, name: str) -> bool:
    """Pause domain NAME (a container: the cgroup freezer); False if it is not running."""
    with _call("lookupByName", f"domain {name}"):
        dom = _lookup(conn.lookupByName, name)
    if dom is None:
        return False
    try:
        if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            return False
        dom.suspend()
    except libvirt.libvirtError as e:
        if _no_such(e):
            return False  # a guest the cluster stopped just now
        raise translate(e, "suspend", f"domain {name}") from e
    return True


def resume_domain(conn: libvirt.virConnect, name: str) -> None:
    """Let a paused domain NAME run again; one that is gone or running is left as it is."""
    with _call("lookupByName", f"domain {name}"):
        dom = _lookup(conn.lookupByName, name)
    if dom is None:
        return
    try:
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
    except libvirt.libvirtError as e:
        if not _no_such(e):
            raise translate(e, "resume", f"domain {name}") from e


def create_snapshot(conn: libvirt.virConnect, name: str, xml: str) -> None:
    """Take libvirt snapshot XML (domainsnapshot) of domain NAME."""
    with _call("snapshotCreateXML", f"domain {name}"):
        conn.lookupByName(name).snapshotCreateXML(xml, 0)


def snapshot_names(conn: libvirt.virConnect, name: str) -> list[str]:
    """The libvirt snapshots domain NAME has; [] if there is no such domain."""
    with _call("listAllSnapshots", f"domain {name}"):
        dom = _lookup(conn.lookupByName, name)
        return [] if dom is None else sorted(s.getName() for s in dom.listAllSnapshots())


def domain_active(conn: libvirt.virConnect, name: str) -> bool:
    """Whether domain NAME runs (or is paused); False if there is no such domain."""
    with _call("isActive", f"domain {name}"):
        dom = _lookup(conn.lookupByName, name)
        return dom is not None and bool(dom.isActive())


def revert_snapshot(conn: libvirt.virConnect, name: str, snapshot: str) -> None:
    """Domain NAME back to its snapshot SNAPSHOT (whatever its state now: running,
    paused or shut off): left paused, so a whole lab can be resumed at once; or shut
    off, if it was when the snapshot was taken."""
    with _call("revertToSnapshot", f"domain {name} (snapshot {snapshot})"):
        dom = conn.lookupByName(name)
        snap = dom.snapshotLookupByName(snapshot)
        state = etree.fromstring(snap.getXMLDesc().encode()).findtext("state")
        flags = 0 if state == "shutoff" else libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
        dom.revertToSnapshot(snap, flags)


def delete_snapshot(conn: libvirt.virConnect, name: str, snapshot: str) -> bool:
    """Delete libvirt snapshot SNAPSHOT of domain NAME (its data in the disk too);
    False if either is not there."""
    try:
        dom = conn.lookupByName(name)
        snap = dom.snapshotLookupByName(snapshot)
        snap.delete(0)
    except libvirt.libvirtError as e:
        if _no_such(e) or e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return False
        raise translate(e, "snapshot delete", f"domain {name} (snapshot {snapshot})") from e
    return True


def crash_domain(conn: libvirt.virConnect, name: str) -> None:
    """Stop domain NAME as a crash or a power cut would: nothing in it gets to act.

    A VM's destroy is that. A container's is not: libvirt's LXC driver sends
    SIGTERM to every process in the container's cgroup and SIGKILL about 1.6 s later,
    so a guest's pacemaker_remote leaves the cluster cleanly. Of a paused
    container, libvirt SIGKILLs every process at once: pause, then destroy."""
    with _call("lookupByName", f"domain {name}"):
        dom = conn.lookupByName(name)
    with _call("destroy", f"domain {name}"):
        if conn.getType() == "LXC":
            dom.suspend()
        dom.destroy()


def driver_ok(uri: str) -> tuple[bool, str]:
    """Whether a connection to URI opens, and what it said."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        return False, e.get_error_message()
    try:
        return True, f"{conn.getType()} {conn.getVersion()}"
    finally:
        conn.close()


def memory_stats(conn: libvirt.virConnect, name: str) -> dict[str, int]:
    """libvirt's memory statistics of a running domain (KiB), or {} when it has none."""
    try:
        return dict(conn.lookupByName(name).memoryStats())
    except libvirt.libvirtError:
        return {}


def create_pool(conn: libvirt.virConnect, xml: str) -> None:
    """A transient directory pool (it goes with `down`, or with libvirtd)."""
    with _call("storagePoolCreateXML", f"pool {_xml_name(xml)}"):
        conn.storagePoolCreateXML(xml, 0)


def create_volume(conn: libvirt.virConnect, pool: str, xml: str) -> str:
    """Create a volume in POOL; return its path."""
    with _call("createXML", f"volume {_xml_name(xml)} in pool {pool}"):
        return str(conn.storagePoolLookupByName(pool).createXML(xml, 0).path())


def remove_volume(conn: libvirt.virConnect, pool: str, name: str) -> bool:
    """Delete volume NAME of POOL; False if there was none."""
    with _call("delete", f"volume {name} in pool {pool}"):
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)  # a volume made by another connection is listed only after this
        vol = _lookup(p.storageVolLookupByName, name)
        if vol is None:
            return False
        vol.delete(0)
    return True


def remove_pool(conn: libvirt.virConnect, name: str) -> bool:
    """Delete every volume of pool NAME and the pool itself; False if there was none."""
    with _call("remove (refresh, delete volumes, destroy, undefine)", f"pool {name}"):
        pool = _lookup(conn.storagePoolLookupByName, name)
        if pool is None:
            return False
        persistent = pool.isPersistent()  # a transient pool is gone once destroyed
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes():
                vol.delete(0)
            pool.destroy()
        if persistent:
            pool.undefine()
    return True


def lab_pools(conn: libvirt.virConnect) -> dict[str, str]:
    """labctl's storage pools: lab name -> pool name."""
    out = {}
    with _call("listAllStoragePools", conn_name(conn)):
        pools = conn.listAllStoragePools()
    for pool in pools:
        lab = lab_of_network(pool.name())  # same "labctl-" prefix as networks
        if lab:
            out[lab] = pool.name()
    return out


def try_connect(uri: str) -> libvirt.virConnect | None:
    """A connection to URI, or None where that driver is not there at all."""
    return open_or_why(uri)[0]


def open_or_why(uri: str) -> tuple[libvirt.virConnect | None, str]:
    """A connection to URI, or None and what libvirt said."""
    try:
        return libvirt.open(uri), ""
    except libvirt.libvirtError as e:
        return None, e.get_error_message() or "no answer"


def files_in_use(conn: libvirt.virConnect) -> dict[str, set[str]]:
    """Files (real paths) that CONN's domains boot or read, and its storage volumes
    are backed by -> who uses each: a lab's name, or `domain X` / `pool X`."""
    used: dict[str, set[str]] = {}

    def add(path: str | None, who: str) -> None:
        if path:
            used.setdefault(os.path.realpath(path), set()).add(who)

    for dom in conn.listAllDomains():
        try:
            doc = etree.fromstring(dom.XMLDesc(0).encode())
        except libvirt.libvirtError:
            continue  # vanished while we looked
        meta = domain_meta(dom)
        who = meta.lab if meta else f"domain {dom.name()}"
        for el in doc.iter("kernel", "initrd"):
            add(el.text, who)
        for el in doc.iter("source"):
            add(el.get("file"), who)
    for pool in conn.listAllStoragePools():
        who = lab_of_network(pool.name()) or f"pool {pool.name()}"
        try:
            if not pool.isActive():
                continue
            for vol in pool.listAllVolumes():
                doc = etree.fromstring(vol.XMLDesc(0).encode())
                add(vol.path(), who)
                for el in doc.iter("backingStore"):
                    add(el.findtext("path"), who)
        except libvirt.libvirtError:
            continue
    return used


# Where libvirtd (run by scripts/setup-host with its defaults) writes each domain's
# log: it keeps them after the domain is gone, one file per name ever started.
DOMAIN_LOG_DIRS = (Path("/var/log/libvirt/lxc"), Path("/var/log/libvirt/qemu"))


def domain_log_paths(
    lab: str, names: Iterable[str], dirs: Iterable[Path] = DOMAIN_LOG_DIRS
) -> list[Path]:
    """The domain logs of lab LAB's nodes NAMES that exist: only names of the lab's
    node form (LAB-c1, LAB-r2, LAB-q1, ...), only regular files (never what a link points to)."""
    node = re.compile(rf"^{re.escape(lab)}-[{''.join(ROLE_LETTER.values())}][0-9]+$")
    out = []
    for d in dirs:
        for n in sorted(set(names)):
            f = d / f"{n}.log"
            if node.match(n) and f.is_file() and not f.is_symlink():
                out.append(f)
    return out


def remove_domain_logs(
    lab: str, names: Iterable[str], dirs: Iterable[Path] = DOMAIN_LOG_DIRS
) -> int:
    """Remove what libvirtd logged for the lab's domains (`down` leaves no trace)."""
    removed = 0
    for f in domain_log_paths(lab, names, dirs):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
            removed += 1
    return removed


@dataclass(frozen=True)
class DomainLink:
    """One network interface of a domain as its live XML says (untrusted data)."""

    mac: str | None
    dev: str | None
    bridge: str | None


def domain_links(conn: libvirt.virConnect, name: str) -> list[DomainLink] | None:
    """Domain NAME's interfaces in order (link 0, 1, ...): MAC, host-side interface
    (`<target dev>`, running domains only) and bridge; None if there is no such domain."""
    with _call("XMLDesc", f"domain {name}"):
        dom = _lookup(conn.lookupByName, name)
        if dom is None:
            return None
        text = dom.XMLDesc(0)
    root = etree.fromstring(text.encode(), etree.XMLParser(resolve_entities=False, no_network=True))
    out = []
    for iface in root.findall("./devices/interface"):
        mac, target, source = iface.find("mac"), iface.find("target"), iface.find("source")
        out.append(
            DomainLink(
                mac=mac.get("address") if mac is not None else None,
                dev=target.get("dev") if target is not None else None,
                bridge=source.get("bridge") if source is not None else None,
            )
        )
    return out
