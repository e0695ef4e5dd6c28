"""Snapshots of a lab's nodes: names, where they live, taking, listing, removing.

Everything a container node changed is in its overlay's upper directory (its
image layers are read-only and shared). A snapshot is a copy of every node's
upper directory, plus the lab's authkey (`authkey rotate` replaces it; the nodes'
copies are in their upper directories). It is taken with every running domain of
the lab paused (libvirt's suspend: the cgroup freezer), all of them before the
first copy starts, so no node writes while any is copied: the copies show one
moment of the whole cluster, as a power cut of every node at once would, and
more, since the copy reads through the page cache (what a node wrote is in it
even before it reached the disk). Stopping the nodes instead would cost a full
boot and cluster formation on every snapshot; pausing costs a fraction of a
second (README, "Snapshots, restore and reset"), well inside corosync's token
timeout, so the cluster does not notice.

A VM node (cluster or remote) has a disk of its own, a qcow2 volume: its part of a
snapshot is a libvirt internal system checkpoint of the domain (memory and disk
state, written into that volume; the raw read-only seed disk is left out), taken in
the same pause, named as the labctl snapshot. The manifest records each VM's
checkpoint; `snapshots rm` deletes them, `down` deletes them with the volume (and
their metadata with the domain). VM guests are refused (`unsupported`).

Layout, under the lab's directory (so `down` removes snapshots with the lab):
    snapshots/              0700: the copies hold the authkey and SSH host keys
      NAME/                 0700
        manifest.json       what restore checks (nodes, build, images)
        authkey             0600
        nodes/NODE/         a container node's upper directory, as `cp -a` copies it

Restoring is restore.py's (it drives nodes and the cluster; this module does not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl import host, locks, proc, safety, secrets, ssh, stack, state, virt
from labctl import pacemaker as pcmk
from labctl.errors import LabctlError, NotFoundError, UsageError
from labctl.plan import LabPlan, NodePlan
from labctl.spec import validate_name
from labctl.xml import domain_snapshot_xml

# The snapshot `up` takes of every container lab it makes: what `reset` restores.
UP_SNAPSHOT = "up"
MAX_NAME = 40
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SNAPSHOTS = "snapshots"
MANIFEST = "manifest.json"
# cp of a node's upper directory: a few hundred KiB after `up`; a lab that has run
# CTS for hours has logs of some MiB. Generous, as every host command gets one.
COPY_TIMEOUT = 600.0


@dataclass(frozen=True)
class Snapshot:
    """One snapshot of a lab, as its manifest says."""

    name: str
    created: str  # ISO 8601, UTC
    nodes: tuple[str, ...]
    build: str | None  # the Pacemaker build the nodes ran (lower layers), if any
    node_images: dict[str, str]  # node -> the image its lower layers came from
    paused_s: float = 0.0  # how long the lab's domains were paused for it
    size: int = 0  # bytes of its files (filled in by `list_snapshots`)
    # The nodes online in their role as it was taken (crm_mon); None: unknown.
    online: tuple[str, ...] | None = None
    # VM node -> the name of its libvirt snapshot (a system checkpoint in its disk).
    vms: dict[str, str] = dataclasses.field(default_factory=dict)
    # node -> the build it ran ("" none); empty in snapshots from before it was kept,
    # where BUILD says it for every node.
    node_builds: dict[str, str] = dataclasses.field(default_factory=dict)

    def builds(self) -> dict[str, str]:
        return self.node_builds or {n: self.build or "" for n in self.nodes}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "created": self.created,
            "nodes": list(self.nodes),
            "build": self.build,
            "node_images": self.node_images,
            "paused_s": self.paused_s,
            "size": self.size,
            "online": None if self.online is None else list(self.online),
            "vms": self.vms,
            "node_builds": self.node_builds,
        }


@dataclass(frozen=True)
class Copy:
    """One directory tree to copy: SRC to DST (DST must not exist yet)."""

    node: str
    src: Path
    dst: Path


# ---------------------------------------------------------------- pure


def check_name(name: str, reserved_ok: bool = False) -> str:
    """NAME if it can name a snapshot (one path component, no leading dot); else a
    one-line UsageError. The `up` snapshot is `reset`'s, not to be taken by hand. Pure."""
    if not name or len(name) > MAX_NAME or not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"snapshot name {name[:60]!r} is not valid: up to {MAX_NAME} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    if name == UP_SNAPSHOT and not reserved_ok:
        raise UsageError(
            f"snapshot name {UP_SNAPSHOT!r} is the one `up` takes for `labctl reset`: "
            "pick another name"
        )
    return name


def default_name(now: dt.datetime) -> str:
    """The name of a snapshot taken without one: its time (UTC), sortable. Pure."""
    return now.astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")


def snapshots_dir(p: LabPlan) -> Path:
    return p.dir / SNAPSHOTS


def snapshot_dir(p: LabPlan, name: str) -> Path:
    return snapshots_dir(p) / name


def containers(p: LabPlan) -> tuple[NodePlan, ...]:
    """The nodes of P whose snapshot is a copy of their upper directory."""
    return tuple(n for n in p.nodes if n.backend == "lxc")


def take_plan(p: LabPlan, snap: Path) -> list[Copy]:
    """What a snapshot into SNAP copies: each container node's upper directory (a VM
    node's state is a libvirt snapshot in its own disk). Pure."""
    return [Copy(n.name, n.upper, snap / "nodes" / n.name) for n in containers(p)]


def restore_plan(p: LabPlan, snap: Path) -> list[Copy]:
    """What a restore from SNAP copies: each container node's saved tree to a new upper
    directory beside the node's own (swapped in once the copy is whole). Pure."""
    return [Copy(n.name, snap / "nodes" / n.name, n.dir / "upper.new") for n in containers(p)]


def vm_snapshots(p: LabPlan, name: str) -> dict[str, str]:
    """VM node -> the libvirt snapshot that holds its part of labctl snapshot NAME:
    the same name (one per domain, so no clash between nodes). Pure."""
    return {n.name: name for n in p.vm_nodes}


def vm_snapshot_description(p: LabPlan, name: str) -> str:
    """What a VM's libvirt snapshot says it is (seen in `virsh snapshot-list`). Pure."""
    return f"labctl snapshot {name!r} of lab {p.name!r}"


def unsupported(p: LabPlan) -> str:
    """Why lab P cannot be snapshotted, or "" if it can. Pure.

    VM guests are transient domains the cluster starts and stops (VirtualDomain from
    an XML file): libvirt's snapshot metadata of one goes when the cluster stops it,
    and no revert can bring it back without the cluster's own start."""
    guests = [n.name for n in p.vm_nodes if n.role == "guest"]
    if guests:
        more = ", ..." if len(guests) > 3 else ""
        return (
            f"lab {p.name!r} has VM guest nodes ({', '.join(guests[:3])}{more}): they are "
            "transient domains the cluster starts and stops, which libvirt cannot keep "
            "snapshots of; snapshots work with container nodes, VM cluster and VM remote nodes"
        )
    return ""


def mismatch(snap: Snapshot, p: LabPlan, build: str | None) -> str:
    """Why SNAP cannot be restored on lab P as it is now (running BUILD), or "". A node's
    upper directory only makes sense over the lower layers it was made over. Pure."""
    nodes = tuple(n.name for n in p.nodes)
    if snap.nodes != nodes:
        return (
            f"snapshot {snap.name!r} is of nodes {', '.join(snap.nodes)}, "
            f"the lab has {', '.join(nodes)}"
        )
    if snap.build != build:
        return (
            f"snapshot {snap.name!r} was taken on build {snap.build or 'none (the image)'}, "
            f"the lab now runs {build or 'the image'}: `labctl deploy` that back first"
        )
    differ = sorted(n.name for n in p.nodes if snap.builds().get(n.name, "") != n.build)
    if differ:
        # Part way through `upgrade --to BUILD`: the lab's build is None, the nodes' not.
        return (
            f"snapshot {snap.name!r} was taken with other Pacemaker builds on "
            f"{', '.join(differ)}: `labctl upgrade` them back first"
        )
    now = {n.name: n.image for n in p.nodes}
    if snap.node_images and snap.node_images != now:
        return f"snapshot {snap.name!r} was taken on other images ({snap.node_images})"
    return ""


def online_nodes(view: pcmk.ClusterView, p: LabPlan) -> tuple[str, ...]:
    """The nodes of P that VIEW shows online in their role (`up`'s rule). Pure."""
    return tuple(n.name for n in p.nodes if not pcmk.not_ready(view, {n.name: n.role}))


def expected_online(snap: Snapshot, p: LabPlan) -> dict[str, str]:
    """What a restore of SNAP waits for (name -> role): the nodes that were online
    when it was taken (a guest stopped on purpose then stays stopped, and is not
    waited for), or every node if that is unknown. Pure."""
    return {n.name: n.role for n in p.nodes if snap.online is None or n.name in snap.online}


def parse_manifest(text: str, name: str) -> Snapshot:
    """A snapshot's manifest; one that names another snapshot, or is not one, is refused."""
    try:
        data = json.loads(text)
        if data["name"] != name:
            raise ValueError(f"names {data['name']!r}")
        return Snapshot(
            name=name,
            created=str(data["created"]),
            nodes=tuple(str(n) for n in data["nodes"]),
            build=data.get("build"),
            node_images={str(k): str(v) for k, v in (data.get("node_images") or {}).items()},
            paused_s=float(data.get("paused_s", 0.0)),
            online=None if data.get("online") is None else tuple(map(str, data["online"])),
            vms={str(k): str(v) for k, v in (data.get("vms") or {}).items()},
            node_builds={str(k): str(v) for k, v in (data.get("node_builds") or {}).items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LabctlError(f"snapshot {name!r}: its {MANIFEST} is not usable ({e})") from None


def missing_vm_snapshots(snap: Snapshot, p: LabPlan, have: dict[str, list[str]]) -> str:
    """Why SNAP's VM part cannot be restored, given the libvirt snapshots each VM node
    of P HAS, or "". Pure."""
    gone = []
    for n in p.vm_nodes:
        want = snap.vms.get(n.name)
        if want is None or want not in have.get(n.name, []):
            gone.append(f"{n.name} ({want or 'none recorded'})")
    if not gone:
        return ""
    return (
        f"snapshot {snap.name!r} is not usable: libvirt has no snapshot of VM "
        f"{', '.join(gone)} (removed outside labctl?): `labctl snapshots rm {p.name} {snap.name}`"
    )


def missing_message(lab: str, name: str, existing: list[str]) -> str:
    """The error for a snapshot that is not there, naming those that are. Pure."""
    have = ", ".join(existing) if existing else "none"
    return f"lab {lab!r} has no snapshot {name!r}; it has: {have} (`labctl snapshots list {lab}`)"


# ---------------------------------------------------------------- on disk


def copy_tree(src: Path, dst: Path) -> None:
    """DST as an exact copy of SRC, as an overlay upper directory needs it: owners,
    modes, times, xattrs (trusted.overlay.*: opaque directories, redirects, origins)
    and whiteouts (character devices 0/0). GNU cp -a does all of it as root; with
    --reflink=auto it shares blocks where the file system can (btrfs, XFS), else
    copies. Hard links would not do: a node changes some files in place."""
    proc.run(
        ["cp", "-a", "--reflink=auto", "--no-target-directory", str(src), str(dst)],
        where="host",
        timeout=COPY_TIMEOUT,
    )


def remove_tree(parent: Path, name: str, what: str) -> None:
    """Delete PARENT/NAME, a real child of PARENT (never through a symbolic link)."""
    target = safety.child_dir(parent, name, what)
    if target.exists():
        shutil.rmtree(target)


def _ensure_dir(d: Path) -> None:
    d.mkdir(mode=0o700, exist_ok=True)
    if d.is_symlink():
        raise safety.UnsafePathError(f"{d} is a symbolic link: not using it")
    d.chmod(0o700)  # mkdir's mode is filtered by the umask


def read_snapshot(p: LabPlan, name: str) -> Snapshot | None:
    d = safety.child_dir(snapshots_dir(p), name, "snapshot directory")
    try:
        text = (d / MANIFEST).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return parse_manifest(text, name)


def list_snapshots(p: LabPlan) -> list[Snapshot]:
    """Lab P's snapshots, oldest first; a directory without a manifest (a copy cut
    short) is not one."""
    d = snapshots_dir(p)
    if not d.is_dir():
        return []
    found = []
    for entry in sorted(d.iterdir()):
        if entry.is_symlink() or not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            snap = read_snapshot(p, entry.name)
        except LabctlError:
            continue
        if snap is not None:
            found.append(dataclasses.replace(snap, size=_size(entry)))
    return sorted(found, key=lambda s: (s.created, s.name))


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                continue
    return total


def find(p: LabPlan, name: str) -> Snapshot:
    """Snapshot NAME of lab P; NotFoundError naming the ones it has."""
    snap = read_snapshot(p, name)
    if snap is None:
        raise NotFoundError(missing_message(p.name, name, [s.name for s in list_snapshots(p)]))
    return snap


def load(name: str, state_dir: Path) -> tuple[LabPlan, state.LabRecord]:
    """Lab NAME's plan and record; a lab with VM guests is refused (`unsupported`)."""
    rec = state.read_record(state_dir, validate_name(name))
    if rec is None:
        raise NotFoundError(f"no lab {name!r} here: `labctl list` shows the labs on this host")
    p = rec.plan(state_dir)
    why = unsupported(p)
    if why:
        raise UsageError(why)
    return p, rec


def on_domains(nodes: list[NodePlan], fn: Callable[[Any, str], object]) -> list:
    """FN(conn, node name) for every domain of NODES at once, each on its backend's
    libvirt connection: the pause is as short as the slowest call, not their sum."""
    if not nodes:
        return []
    backends = sorted({n.backend for n in nodes})
    conns = {}
    try:
        for b in backends:
            conns[b] = virt.connect(virt.default_uri(b))
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(nodes)))) as pool:
            futures = [pool.submit(fn, conns[n.backend], n.name) for n in nodes]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]
        return [f.result() for f in futures]
    finally:
        for c in conns.values():
            virt.close(c)


def _pause(p: LabPlan, paused: list[NodePlan]) -> None:
    """Pause every running domain of P; PAUSED gets those this call paused, also
    when it fails half-way (they are the ones to resume: a domain someone else
    paused stays paused)."""
    nodes = list(p.nodes)
    try:
        done = on_domains(nodes, virt.suspend_domain)
    except BaseException:
        # Which ones were paused is unknown: resume every paused one of the lab.
        paused += nodes
        raise
    paused += [n for n, ok in zip(nodes, done, strict=True) if ok]


def _vm_snapshot(p: LabPlan, name: str) -> Callable[[Any, str], None]:
    description = vm_snapshot_description(p, name)

    def take_one(conn: Any, node: str) -> None:
        # A VM that is not running (stopped, or fenced and not yet back) has no
        # memory to keep: its disk only, and a restore leaves it stopped.
        memory = virt.domain_active(conn, node)
        virt.create_snapshot(conn, node, domain_snapshot_xml(name, description, memory))

    return take_one


def _delete_vm_snapshot(name: str) -> Callable[[Any, str], bool]:
    return lambda conn, node: virt.delete_snapshot(conn, node, name)


def _cluster_view(p: LabPlan) -> pcmk.ClusterView | None:
    """crm_mon's view from the first cluster node that answers; None if none does."""
    for node in p.cluster_nodes:
        try:
            with ssh.Connection(node.name, str(node.ip), p.private_key, p.known_hosts) as c:
                return stack.crm_mon(c)
        except LabctlError:
            continue
    return None


def take_unlocked(
    p: LabPlan,
    rec_build: str | None,
    name: str,
    replace: bool = False,
    online: tuple[str, ...] | None = None,
) -> Snapshot:
    """Snapshot NAME of lab P (its lock held by the caller): every running domain
    paused, every node's upper directory copied, every domain resumed. ONLINE: the
    nodes known to be online (`up` has just seen them all); else crm_mon is asked."""
    base = snapshots_dir(p)
    _ensure_dir(base)
    final = safety.child_dir(base, name, "snapshot directory")
    if final.exists() and not replace:
        raise UsageError(
            f"lab {p.name!r} has a snapshot {name!r} already: pick another name, or --replace it"
        )
    # Copied under a temporary name, renamed when whole: a snapshot cut short
    # (a full disk, Ctrl-C) is never mistaken for one.
    tmp_name = f".new-{name}-{os.getpid()}"
    remove_tree(base, tmp_name, "snapshot directory")
    tmp = base / tmp_name
    tmp.mkdir(mode=0o700)
    replaced_vms = False
    try:
        (tmp / "nodes").mkdir(mode=0o700)
        secrets.write_secret(tmp / "authkey", p.authkey.read_bytes())
        copies = take_plan(p, tmp)
        missing = [c.node for c in copies if not c.src.is_dir()]
        if missing:
            raise LabctlError(
                f"lab {p.name!r}: no upper directory for {', '.join(missing)}: "
                f"is the lab whole? (`labctl status {p.name}`)"
            )
        # Asked before the pause (it takes an SSH round trip): what a restore waits for.
        if online is None:
            view = _cluster_view(p)
            online = None if view is None else online_nodes(view, p)
        vms = list(p.vm_nodes)
        if vms:
            # One name per domain: a stale one (a snapshot cut short, or the one
            # --replace replaces) goes first. The old snapshot of that name is then
            # unusable, and is removed below if this one fails.
            replaced_vms = any(on_domains(vms, _delete_vm_snapshot(name)))
        t0 = time.monotonic()
        paused: list[NodePlan] = []
        try:
            _pause(p, paused)
            # The VMs' checkpoints (seconds under TCG: their memory is written into
            # their disks) while the containers' layers are copied.
            with ThreadPoolExecutor(max_workers=1) as pool:
                vm_job = pool.submit(on_domains, vms, _vm_snapshot(p, name))
                for c in copies:
                    copy_tree(c.src, c.dst)
                vm_job.result()
        finally:
            on_domains(paused, virt.resume_domain)
        paused_s = round(time.monotonic() - t0, 3)
        snap = Snapshot(
            name=name,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            nodes=tuple(n.name for n in p.nodes),
            build=rec_build,
            node_images={n.name: n.image for n in p.nodes},
            node_builds={n.name: n.build for n in p.nodes},
            paused_s=paused_s,
            online=online,
            vms=vm_snapshots(p, name),
        )
        manifest = {k: v for k, v in snap.to_dict().items() if k != "size"}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():
            old = f".old-{name}-{os.getpid()}"
            final.rename(base / old)
            tmp.rename(final)
            remove_tree(base, old, "snapshot directory")
        else:
            tmp.rename(final)
    except BaseException:
        remove_tree(base, tmp_name, "snapshot directory")
        if p.vm_nodes:
            # No labctl snapshot holds the VMs' checkpoints of this name (any more).
            with contextlib.suppress(LabctlError):
                on_domains(list(p.vm_nodes), _delete_vm_snapshot(name))
            if replaced_vms:
                remove_tree(base, name, "snapshot directory")
        raise
    return dataclasses.replace(snap, size=_size(final))


def take(
    name: str, state_dir: Path, snapshot_name: str | None = None, replace: bool = False
) -> Snapshot:
    """`labctl snapshot LAB [NAME]`: a snapshot of every node of lab NAME."""
    snap_name = check_name(snapshot_name or default_name(dt.datetime.now(dt.UTC)))
    host.require_root("labctl snapshot")
    with locks.hold("lab", validate_name(name), locks.command_line()):
        p, rec = load(name, state_dir)
        return take_unlocked(p, rec.build, snap_name, replace)


def remove(name: str, state_dir: Path, snapshot_name: str) -> None:
    """`labctl snapshots rm LAB NAME`: delete one snapshot (`up`'s too: reset then has none)."""
    check_name(snapshot_name, reserved_ok=True)
    host.require_root("labctl snapshots rm")
    with locks.hold("lab", validate_name(name), locks.command_line()):
        p, _ = load(name, state_dir)
        snap = find(p, snapshot_name)
        # The VMs' checkpoints first: a directory without them is unusable, the
        # other way round they would be left in the disks for nothing.
        by_name = {n.name: n for n in p.vm_nodes}
        for vm_snap in sorted(set(snap.vms.values())):
            nodes = [by_name[n] for n, s in snap.vms.items() if s == vm_snap and n in by_name]
            on_domains(nodes, _delete_vm_snapshot(vm_snap))
        remove_tree(snapshots_dir(p), snapshot_name, "snapshot directory")


def listing(name: str, state_dir: Path) -> list[Snapshot]:
    """`labctl snapshots list LAB`: its snapshots, oldest first (no lock: read only)."""
    p, _ = load(name, state_dir)
    return list_snapshots(p)
