"""`labctl upgrade LAB --to IMAGE`: a rolling upgrade, node by node, as Pacemaker's
guide describes it ("Upgrading a Pacemaker Cluster", rolling upgrades: allowed from
2.0.0 on; cluster nodes first, remote and guest nodes after them).

Per node, one at a time: standby, wait until its resources have moved, stop
pacemaker then corosync, stop the domain, swap its lower layers (the image's)
for the target image's while its own upper layer stays (configuration, CIB,
corosync and Pacemaker keys, SSH host keys), start it, wait until it is online
and its own crm_mon agrees, lift standby, wait until the resources are started
again. The lab record names the node's new image as soon as its root is swapped.

A VM node's disk is a qcow2 overlay over its image's VM disk, which cannot be moved
onto another image's: its domain is stopped and it gets a fresh overlay over the
target's VM disk, keeps its seed disk (host name, SSH host keys), and is given the
lab's keys and configuration again over SSH (lab.reconfigure_node); all it wrote
is gone (a cluster node takes the CIB from its peers when it rejoins).

A package upgrade keeps each system user's uid; two images built apart do not
(debian12's hacluster is 101, debian13's 100), so the node's own files are given
the new image's ids, by user and group name, before it starts on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from labctl import (
    host,
    images,
    lab,
    locks,
    mounts,
    pcmkbuild,
    plan,
    provision,
    ssh,
    stack,
    state,
    virt,
)
from labctl import pacemaker as pcmk
from labctl import upgrade_check as check
from labctl.errors import CommandError, LabctlError, NotFoundError, UsageError, WaitTimeout
from labctl.plan import LabPlan, NodePlan
from labctl.spec import LabSpec
from labctl.xml import lxc_domain_xml

# Pacemaker's guide: a rolling upgrade is supported from 2.0.0 on (to 2.x and 3.x).
ROLLING_FROM = (2, 0, 0)
MOVE_TIMEOUT = 120.0  # resources off a node in standby, and back once it is out
STOP_TIMEOUT = 120.0  # pacemaker's shutdown (it stops what still runs there)
ONLINE_TIMEOUT = 180.0
SAMPLE_INTERVAL = 1.0


# ---------------------------------------------------------------- pure


def version_tuple(version: str) -> tuple[int, ...] | None:
    """The leading X.Y.Z of a Pacemaker (or Debian package) version, None if none; pure."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(x) for x in m.groups()) if m else None


def check_versions(source: str, target: str) -> None:
    """Refuse what a rolling upgrade does not allow: from before 2.0.0, or a downgrade."""
    src, dst = version_tuple(source), version_tuple(target)
    if src is None or dst is None:
        raise UsageError(
            f"cannot tell the Pacemaker versions apart ({source or '?'} -> {target or '?'}): "
            "the images' manifests name no pacemaker package"
        )
    if src < ROLLING_FROM:
        raise UsageError(
            f"Pacemaker {source} is older than 2.0.0: a rolling upgrade from it is not "
            "supported (Pacemaker's guide); take the cluster down and up again on the new image"
        )
    if dst < src:
        raise UsageError(
            f"Pacemaker {target} is older than {source}: a rolling downgrade is not supported"
        )


def upgrade_targets(
    p: LabPlan, image: str, names: Sequence[str], build: str = ""
) -> list[NodePlan]:
    """The nodes to upgrade to IMAGE (with BUILD, a build label, over it), in order
    (NAMES, default every node): cluster nodes first, then remote and guest nodes, as
    the guide says; nodes already there are left out. Refuses VM guests, and remote or
    guest nodes ahead of the cluster."""
    chosen = [p.node(n) for n in names] if names else list(p.nodes)
    for n in chosen:
        if n.backend == "vm" and n.role == "guest":
            raise UsageError(
                f"{n.name} is a VM guest: upgrade does not take VM guests yet; name the "
                f"other nodes to upgrade those, or make the lab again with --image {image}"
            )
    todo = list(dict.fromkeys(n for n in chosen if (n.image, n.build) != (image, build)))
    behind = [
        n.name for n in p.cluster_nodes if (n.image, n.build) != (image, build) and n not in todo
    ]
    if behind and any(n.role != "cluster" for n in todo):
        raise UsageError(
            f"remote and guest nodes go after the cluster nodes (Pacemaker's guide), and "
            f"{', '.join(behind)} would stay behind: upgrade the cluster nodes first"
        )
    return sorted(todo, key=lambda n: n.role != "cluster")


def parse_ids(text: str) -> dict[str, int]:
    """name -> id of an /etc/passwd or /etc/group text; pure."""
    out = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            out[fields[0]] = int(fields[2])
    return out


def id_map(old: dict[str, int], new: dict[str, int]) -> dict[int, int]:
    """Old id -> new id for every name both know under different ids; pure. An id the
    old image gave no name (or one the new image lacks) is kept."""
    return {old[n]: new[n] for n in old.keys() & new.keys() if old[n] != new[n]}


def spec_after(spec: LabSpec, node_images: dict[str, str], image: str) -> LabSpec:
    """The lab's spec once its nodes have NODE_IMAGES: a lab wholly on IMAGE says so
    (what deploy, say, builds for); a partly upgraded one keeps its spec, the
    record's per-node images telling the rest; pure."""
    if set(node_images.values()) == {image}:
        return dataclasses.replace(spec, image=image, remote_image=None)
    return spec


@dataclass(frozen=True)
class Target:
    """What nodes are upgraded to: a built image, or a Pacemaker build over one."""

    image: images.Image
    build: pcmkbuild.Build | None = None

    @property
    def label(self) -> str:
        return self.build.label if self.build else self.image.name

    @property
    def build_label(self) -> str:
        return self.build.label if self.build else ""

    @property
    def version(self) -> str:
        if self.build:
            return str(self.build.manifest.get("version") or "")
        return images.manifest_pacemaker_version(self.image.manifest) or ""


@dataclass(frozen=True)
class NodeUpgrade:
    name: str
    from_image: str
    to_image: str
    version_before: str
    version_after: str
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    dc_before: str = ""
    rechowned: int = 0  # files of its own layer given the new image's ids


@dataclass(frozen=True)
class UpgradeResult:
    lab: str
    to_image: str
    nodes: list[NodeUpgrade]
    seconds: float
    check: check.CheckResult | None = None
    skipped: list[str] = field(default_factory=list)  # nodes on the target already

    def to_dict(self) -> dict:
        return {
            "lab": self.lab,
            "to_image": self.to_image,
            "seconds": round(self.seconds, 1),
            "nodes": [
                {**vars(n), "seconds": round(n.seconds, 1)}
                | {"phases": {k: round(v, 1) for k, v in n.phases.items()}}
                for n in self.nodes
            ],
            "skipped": self.skipped,
            "check": self.check.to_dict() if self.check else None,
        }


# ---------------------------------------------------------------- host and nodes


def remap_owners(top: Path, uids: dict[int, int], gids: dict[int, int]) -> int:
    """Give every file under TOP (a node's upper layer) the new ids; symbolic links
    themselves, never followed. Returns how many were changed."""
    if not uids and not gids:
        return 0
    changed = 0
    for d, dirs, files in os.walk(top):
        for name in [*dirs, *files] if d != str(top) else [".", *dirs, *files]:
            path = os.path.join(d, name) if name != "." else d
            st = os.lstat(path)
            uid, gid = uids.get(st.st_uid, st.st_uid), gids.get(st.st_gid, st.st_gid)
            if (uid, gid) != (st.st_uid, st.st_gid):
                os.lchown(path, uid, gid)
                if not os.path.islink(path):
                    os.chmod(path, st.st_mode & 0o7777)  # chown clears setuid/setgid
                changed += 1
    return changed


def resolve_target(state_dir: Path, to: str) -> Target:
    """--to: a built image's name, or a Pacemaker build (IMAGE/NAME, or NAME alone
    when one image has it), which runs over its image."""
    if to in images.IMAGES:
        img = images.find_image(state_dir, to)
        if img is None or img.stale:
            raise NotFoundError(f"image {to!r} is not built: `labctl image build {to}` first")
        return Target(img)
    try:
        build = pcmkbuild.resolve(state_dir, to)
    except NotFoundError:
        raise NotFoundError(
            f"--to {to!r} is neither an image nor a build: `labctl image list` shows both"
        ) from None
    img = images.find_image(state_dir, build.image)
    if img is None or img.stale:
        raise NotFoundError(
            f"build {build.label} needs image {build.image!r}: `labctl image build "
            f"{build.image}` first"
        )
    return Target(img, build)


def _version_of(state_dir: Path, node: NodePlan, img: images.Image) -> str:
    """The Pacemaker version NODE runs now: its build's, else its image's."""
    return Target(img, pcmkbuild.resolve(state_dir, node.build) if node.build else None).version


def _image_ids(img: images.Image, layer: str, what: str) -> dict[str, int]:
    """name -> id of the image's /etc/passwd or /etc/group (the role layer's, else base's)."""
    for d in (img.layer(layer), img.base):
        f = d / "etc" / what
        if f.is_file():
            return parse_ids(f.read_text())
    return {}


def _standby(c: ssh.Connection, node: str, on: bool) -> None:
    if on:
        c.run(f"crm_attribute --node {node} --name standby --update on")
    else:
        c.run(f"crm_attribute --node {node} --name standby --delete")


def _was_standby(c: ssh.Connection, node: str) -> bool:
    r = c.run(f"crm_attribute --node {node} --name standby --query --quiet", check=False)
    return r.status == 0 and r.stdout.strip() in ("on", "true", "yes", "1")


def _wait_moved_off(c: ssh.Connection, node: str, timeout: float) -> None:
    """Poll crm_mon on C until no resource is active on NODE."""
    deadline = time.monotonic() + timeout
    while True:
        left = [r.id for r in stack.crm_mon(c).resources.values() if node in r.nodes]
        if not left:
            return
        if time.monotonic() > deadline:
            raise WaitTimeout(
                f"{node} in standby still runs {', '.join(left)} after {timeout:.0f} s"
            )
        time.sleep(stack.POLL)


def _connection(c: ssh.Connection, rid: str, enabled: bool, check: bool = True) -> None:
    """Stop (target-role=Stopped) or release a remote node's connection resource."""
    if enabled:
        c.run(f"crm_resource --resource {rid} --meta --delete-parameter target-role", check=check)
    else:
        c.run(
            f"crm_resource --resource {rid} --meta --set-parameter target-role "
            "--parameter-value Stopped"
        )


def _wait_inactive(c: ssh.Connection, rid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = stack.crm_mon(c).resources.get(rid)
        if r is None or not r.active:
            return
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{rid} still active after {timeout:.0f} s")
        time.sleep(stack.POLL)


def _domain_ids(nodes: Sequence[NodePlan]) -> dict[str, int | None]:
    """Each node's domain id (None: not running), from its own backend's driver."""
    ids: dict[str, int | None] = {}
    for backend in sorted({n.backend for n in nodes}):
        with virt.connection(virt.default_uri(backend)) as conn:
            ids |= virt.domain_ids(conn, [n.name for n in nodes if n.backend == backend])
    return ids


def _fence_history(c: ssh.Connection) -> list[check.FenceEvent]:
    r = c.run("stonith_admin --history '*' --output-as=xml", check=False)
    if not r.stdout.lstrip().startswith("<"):
        raise CommandError(c.name, "stonith_admin --history", r.status, r.stdout, r.stderr)
    return check.parse_fence_history(r.stdout)


@dataclass(frozen=True)
class Pending:
    """A node an upgrade left half-way: swapped (or about to be) but not back yet."""

    node: str
    keep_standby: bool  # it was in standby before the upgrade: leave it so
    active: tuple[str, ...]  # what ran in the cluster before, to run again
    from_image: str = ""


def pending_path(p: LabPlan) -> Path:
    return p.dir / state.PENDING_UPGRADE


def read_pending(p: LabPlan) -> Pending | None:
    try:
        d = json.loads(pending_path(p).read_text())
        return Pending(
            str(d["node"]),
            bool(d["keep_standby"]),
            tuple(map(str, d["active"])),
            str(d.get("from_image", "")),
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write_pending(p: LabPlan, pending: Pending | None) -> None:
    if pending is None:
        pending_path(p).unlink(missing_ok=True)
        return
    tmp = pending_path(p).with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(pending)) + "\n")
    tmp.replace(pending_path(p))


class Sampler:
    """crm_mon about once a second from a cluster node that is not being upgraded,
    in a thread of its own (its own SSH connections)."""

    def __init__(self, p: LabPlan, watched: list[str], interval: float = SAMPLE_INTERVAL) -> None:
        self.p = p
        self.watched = watched
        self.interval = interval
        self.upgrading = ""  # set by the upgrade as it goes from node to node
        self.samples: list[check.Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upgrade-sampler", daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> Sampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        conns: dict[str, ssh.Connection] = {}
        try:
            while not self._stop.is_set():
                tick = time.monotonic()
                upgrading = self.upgrading
                if upgrading in conns:
                    # It is about to restart: a connection made before would be stale.
                    conns.pop(upgrading).close()
                observer = next(n for n in self.p.cluster_nodes if n.name != upgrading)
                t = tick - self._t0
                try:
                    c = conns.get(observer.name)
                    if c is None:
                        c = conns[observer.name] = lab.connect(self.p, observer)
                    view = stack.crm_mon(c)
                    self.samples.append(
                        check.sample_of(t, observer.name, view, self.watched, upgrading)
                    )
                except Exception as e:  # any failed sample is a gap, never the thread's end
                    if observer.name in conns:
                        conns.pop(observer.name).close()
                    self.samples.append(
                        check.Sample(
                            t, observer.name, answered=False, upgrading=upgrading, error=str(e)
                        )
                    )
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - tick)))
        finally:
            for c in conns.values():
                c.close()


# ---------------------------------------------------------------- the upgrade


def upgrade(
    name: str,
    state_dir: Path,
    to: str,
    nodes: Sequence[str] = (),
    with_check: bool = False,
    bound: float = check.DEFAULT_BOUND,
    reporter: lab.Reporter | None = None,
) -> UpgradeResult:
    """Upgrade lab NAME's NODES (default all) to image TO, one node at a time."""
    with locks.hold("lab", name, locks.command_line()):
        return _upgrade(name, state_dir, to, nodes, with_check, bound, reporter or lab.Reporter())


def _upgrade(
    name: str,
    state_dir: Path,
    to: str,
    names: Sequence[str],
    with_check: bool,
    bound: float,
    reporter: lab.Reporter,
) -> UpgradeResult:
    host.require_root("labctl upgrade")
    rec = state.read_record(state_dir, name)
    if rec is None:
        raise NotFoundError(f"no lab {name!r} here: `labctl list` shows the labs on this host")
    if rec.spec.cloud_image:
        raise UsageError(f"lab {name!r} runs a cloud image: it has no image layers to swap")
    p = rec.plan(state_dir)
    lab.refuse_bare(p, "a rolling upgrade")
    if p.spec.packages or p.spec.qdevice:
        what = "extra packages (--packages)" if p.spec.packages else "a quorum device (--qdevice)"
        raise UsageError(
            f"lab {name!r} has {what}: upgrade does not swap their package layer yet; "
            "make the lab on the target image instead"
        )
    target = resolve_target(state_dir, to)
    todo = upgrade_targets(p, target.image.name, names, target.build_label)
    pending = read_pending(p)
    on_target = (target.image.name, target.build_label)
    resume = (
        pending.node
        if pending and (p.node(pending.node).image, p.node(pending.node).build) == on_target
        else ""
    )
    if resume:
        # Swapped by an upgrade that stopped there: it is finished first, not swapped again.
        todo = [p.node(resume), *todo]
    skipped = [n.name for n in p.nodes if (not names or n.name in names) and n not in todo]
    if todo and len(p.cluster_nodes) < 2:
        raise UsageError(
            f"lab {name!r} has one cluster node: a rolling upgrade needs another to move to"
        )
    sources = {}
    for n in todo:
        if n.name == resume:
            continue
        img = images.find_image(state_dir, n.image)
        if img is None:
            raise NotFoundError(f"image {n.image!r} of {n.name} is gone: cannot swap its layers")
        sources[n.name] = img
        check_versions(_version_of(state_dir, n, img), target.version)
    # Before anything is stopped: a VM disk build (apt, mkfs, qemu-img) may fail.
    vm_layers = {(target.image.name, n.layer) for n in todo if n.backend == "vm"}
    lab.ensure_vm_images(
        {target.image.name: target.image}, vm_layers, target.build, state_dir, reporter
    )
    watched = [pcmk.dummy_id(i) for i in range(1, rec.spec.resources + 1)]
    start = time.monotonic()
    done: list[NodeUpgrade] = []
    observer0 = next(n for n in p.cluster_nodes if not todo or n.name != todo[0].name)
    with lab.connect(p, observer0) as c:
        fence_before = _fence_history(c) if with_check else []
    expected_ids = _domain_ids(p.nodes)
    sampler = Sampler(p, watched)
    with sampler if with_check else contextlib.nullcontext():
        for node in todo:
            sampler.upgrading = node.name
            try:
                result, p = _upgrade_node(
                    rec,
                    state_dir,
                    p,
                    node,
                    sources.get(node.name, target.image),
                    target,
                    reporter,
                    pending if node.name == resume else None,
                )
            except LabctlError as e:
                units = (
                    "-u corosync -u pacemaker" if node.role == "cluster" else "-u pacemaker_remote"
                )
                err = LabctlError(
                    f"upgrade stopped at {node.name}: {e} (lab left as it is; look at "
                    f"`labctl status {name}` and `labctl ssh {name} {node.name} -- "
                    f"journalctl -b {units}`; run the upgrade again once it is fixed)"
                )
                err.exit_code = e.exit_code
                raise err from e
            done.append(result)
            expected_ids[node.name] = _domain_ids([node])[node.name]
            sampler.upgrading = ""
    result_check = None
    if with_check:
        with lab.connect(p, observer0) as c:
            fence_after = _fence_history(c)
        ids = _domain_ids(p.nodes)
        # A guest is the cluster's to stop and start (it moves with its cluster node).
        guests = {n.name for n in p.nodes if n.role == "guest"}
        restarted = sorted(
            n for n, i in ids.items() if i != expected_ids.get(n) and n not in guests
        )
        result_check = check.analyse(
            sampler.samples, watched, fence_before, fence_after, restarted, bound
        )
    return UpgradeResult(
        lab=name,
        to_image=target.label,
        nodes=done,
        seconds=time.monotonic() - start,
        check=result_check,
        skipped=skipped,
    )


def _write_record(rec: state.LabRecord, new_p: LabPlan) -> None:
    """The record says what each node's root is made of from now on: its image, and
    its build while the nodes' builds differ."""
    node_builds = {n.name: n.build for n in new_p.nodes}
    state.write_record(new_p, rec.state, created=rec.created, node_builds=node_builds)


def _swap_container_root(
    rec: state.LabRecord,
    new_p: LabPlan,
    node: NodePlan,
    source: images.Image,
    target: Target,
    resumed: bool,
) -> int:
    """Container NODE stopped, its upper layer mounted over TARGET's layers, the record
    updated, started again (a guest: its domain XML rewritten for the cluster to start).
    Returns how many of its own files were given the new image's ids."""
    new_node = new_p.node(node.name)
    legacy = host.cgroup_layout() == "hybrid"
    with virt.connection(virt.default_uri("lxc")) as conn:
        virt.remove_domain(conn, node.name, kill_init=True)
        for mounted in mounts.mounts_under(node.dir):
            mounts.unmount(mounted)
        uids = id_map(
            _image_ids(source, node.layer, "passwd"),
            _image_ids(target.image, node.layer, "passwd"),
        )
        gids = id_map(
            _image_ids(source, node.layer, "group"),
            _image_ids(target.image, node.layer, "group"),
        )
        # Once only: the map is not idempotent (101->100 and 100->997, say).
        rechowned = 0 if resumed else remap_owners(node.upper, uids, gids)
        mounts.mount_overlay(
            lab.lowers(target.image, target.build, node.layer),
            node.upper,
            node.work,
            node.root,
        )
        lab.write_files(node.root, [provision.lxc_init_file()])
        # The record says what the node's root is made of from now on.
        _write_record(rec, new_p)
        xml = lxc_domain_xml(
            new_p,
            new_node,
            legacy_cgroups=legacy,
            mounts=provision.host_mounts(new_p, new_node),
        )
        if node.role == "guest":
            # The cluster starts it from this file (`virsh create`) once released.
            lab.guest_config(new_p, new_node).write_text(xml)
        else:
            virt.define_and_start(conn, xml)
    return rechowned


def _replace_vm_disk(
    rec: state.LabRecord,
    new_p: LabPlan,
    new_node: NodePlan,
    target: Target,
) -> None:
    """VM NEW_NODE stopped, a fresh disk over TARGET's VM disk in place of its own
    (its seed kept), the record updated, booted again."""
    vm = images.vm_image_paths(target.image, new_node.layer, lab.vm_dir(target.build))
    with virt.connection(virt.default_uri("vm")) as conn:
        # A hard stop: its stack is down and its disk is about to go.
        virt.remove_domain(conn, new_node.name)
        lab.replace_vm_disk(conn, new_p, new_node, vm)
        _write_record(rec, new_p)
        virt.define_and_start(
            conn, lab.vm_domain_xml(new_p, new_node, vm, not host.kvm_status()[0])
        )


def _upgrade_node(
    rec: state.LabRecord,
    state_dir: Path,
    p: LabPlan,
    node: NodePlan,
    source: images.Image,
    target: Target,
    reporter: lab.Reporter,
    resume: Pending | None = None,
) -> tuple[NodeUpgrade, LabPlan]:
    """One node's upgrade; returns what it took and the lab's plan with its new image.
    RESUME: the node was swapped by an upgrade that stopped there; it is restarted on
    its new root (its files have their new ids already) and brought back."""
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    others = [n for n in p.cluster_nodes if n.name != node.name]

    def phase(what: str) -> AbstractContextManager[None]:
        return reporter.phase(f"{node.name}: {what}")

    def took(what: str) -> None:
        phases[what] = reporter.timings[f"{node.name}: {what}"]

    version_before = ""
    with lab.connect(p, others[0]) as obs:
        view = stack.crm_mon(obs)
        dc_before = view.dc or ""
        if resume:
            keep_standby, active = resume.keep_standby, list(resume.active)
        else:
            with lab.connect(p, node) as c:
                out = c.run(pcmk.NODE_VERSION_COMMAND).stdout
                version_before = pcmk.parse_node_version(out).version
            # What runs now must run again once the node is back (not what was stopped).
            active = sorted(r.id for r in view.resources.values() if r.active)
            keep_standby = _was_standby(obs, node.name)
            earlier = read_pending(p)
            if earlier and earlier.node == node.name:
                # An upgrade stopped before its swap: the standby may be its own.
                keep_standby, active = earlier.keep_standby, list(earlier.active)
            write_pending(
                p, Pending(node.name, keep_standby, tuple(active), node.build or node.image)
            )
            with phase("standby, resources moved"):
                _standby(obs, node.name, True)
                _wait_moved_off(obs, node.name, MOVE_TIMEOUT)
            took("standby, resources moved")
    if not resume and node.role == "cluster":
        with phase("pacemaker and corosync stopped"), lab.connect(p, node) as c:
            # Not a fence: the rejoin delay (provision.FORMED_MARKER) is not for this boot.
            c.run(f"rm -f {provision.FORMED_MARKER}")
            c.run("systemctl stop pacemaker.service", timeout=STOP_TIMEOUT)
            c.run("systemctl stop corosync.service", timeout=STOP_TIMEOUT)
        took("pacemaker and corosync stopped")
    elif not resume and node.role == "remote":
        # The connection is stopped first, so that losing pacemaker_remote is no failure.
        with phase("connection stopped, pacemaker_remote stopped"):
            with lab.connect(p, others[0]) as obs:
                _connection(obs, stack.connection_resource(node), enabled=False)
                _wait_inactive(obs, stack.connection_resource(node), MOVE_TIMEOUT)
            with lab.connect(p, node) as c:
                c.run("systemctl stop pacemaker_remote.service", timeout=STOP_TIMEOUT)
        took("connection stopped, pacemaker_remote stopped")
    elif not resume:
        # A guest's container is the cluster's: its VirtualDomain resource stops it.
        with phase("guest stopped by the cluster"), lab.connect(p, others[0]) as obs:
            _connection(obs, stack.connection_resource(node), enabled=False)
            _wait_inactive(obs, stack.connection_resource(node), MOVE_TIMEOUT)
        took("guest stopped by the cluster")
    node_images = {**{n.name: n.image for n in p.nodes}, node.name: target.image.name}
    node_builds = {**{n.name: n.build for n in p.nodes}, node.name: target.build_label}
    new_p = plan.make_plan(
        spec_after(rec.spec, node_images, target.image.name),
        rec.subnet_index,
        state_dir,
        node_images,
        node_builds=node_builds,
    )
    new_node = new_p.node(node.name)
    rechowned = 0
    if node.backend == "vm":
        swapped = f"disk replaced on {target.label}"
        with phase(swapped):
            _replace_vm_disk(rec, new_p, new_node, target)
    else:
        swapped = f"root swapped to {target.label}"
        with phase(swapped):
            rechowned = _swap_container_root(rec, new_p, node, source, target, bool(resume))
    took(swapped)
    with phase("ssh and stack up"):
        if node.role == "guest":
            with lab.connect(new_p, others[0]) as obs:
                _connection(obs, stack.connection_resource(node), enabled=True, check=not resume)
        vm = node.backend == "vm"
        ssh.wait_for_banner(str(node.ip), timeout=lab.VM_SSH_TIMEOUT if vm else lab.SSH_TIMEOUT)
        with lab.connect(new_p, new_node) as c:
            if vm:
                lab.reconfigure_node(new_p, new_node, c)  # its new disk has none of it
            # Enabled at boot; started here too in case a unit was left disabled.
            if node.role == "cluster":
                c.run("systemctl enable --now corosync.service pacemaker.service")
            else:
                c.run("systemctl enable --now pacemaker_remote.service")
                stack.wait_listening(c, rec.spec.remote_port)
        if node.role == "remote":
            with lab.connect(new_p, others[0]) as obs:
                # A rerun finds it stopped by the run before: no failure if not there.
                _connection(obs, stack.connection_resource(node), enabled=True, check=not resume)
    took("ssh and stack up")
    with phase("online and caught up"):
        with lab.connect(new_p, others[0]) as obs:
            stack.wait_online(obs, {node.name: node.role}, timeout=ONLINE_TIMEOUT)
        with lab.connect(new_p, new_node) as c:
            if node.role == "cluster":
                # Its own view: it has joined, knows the DC and sees itself online.
                stack.wait_online(
                    c, {n.name: "cluster" for n in new_p.cluster_nodes}, timeout=ONLINE_TIMEOUT
                )
                c.run(f"mkdir -p /etc/labctl && touch {provision.FORMED_MARKER}")
            out = c.run(pcmk.NODE_VERSION_COMMAND).stdout
            version_after = pcmk.parse_node_version(out).version
    took("online and caught up")
    with phase("out of standby, cluster settled"), lab.connect(new_p, others[0]) as obs:
        if not keep_standby:
            _standby(obs, node.name, False)
        # Settled, not only started: lifting standby may move resources back (seen:
        # a Dummy stopped for its move just after all were reported started).
        obs.run(f"crm_resource --wait --timeout {MOVE_TIMEOUT:.0f}s", timeout=MOVE_TIMEOUT + 30)
        stack.wait_started(obs, active, MOVE_TIMEOUT)
    took("out of standby, cluster settled")
    write_pending(new_p, None)
    return (
        NodeUpgrade(
            name=node.name,
            from_image=resume.from_image if resume else (node.build or node.image),
            to_image=target.label,
            version_before=version_before,
            version_after=version_after,
            seconds=time.monotonic() - t0,
            phases=phases,
            dc_before=dc_before,
            rechowned=rechowned,
        ),
        new_p,
    )
