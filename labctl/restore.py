"""`labctl restore` and `labctl reset`: a lab's nodes back to a snapshot, cluster online.

deploy's shape, with the nodes' own layers swapped instead of their lower ones:
every domain stopped (cluster nodes first, so that no VirtualDomain restarts a
guest behind labctl's back), every overlay unmounted, each node's upper directory
replaced by the snapshot's copy (with a fresh work directory), the overlays
mounted again, the domains started (remote nodes first, so their
pacemaker_remote listens when the cluster connects; guests are left to the
cluster, whose restored CIB starts them, as after `up`), and `up`'s readiness
rule for the nodes that were online when the snapshot was taken (a node stopped
on purpose then stays stopped, and is not waited for).

VM nodes (cluster and remote) are reverted to their libvirt checkpoint instead,
memory included, left paused, and resumed together just before the containers
start: they go on from the snapshot's moment, without a boot. Their wall clock
stopped at that moment (under TCG as well: the guest's clock is not the host's),
so it is set over SSH before the restore returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from labctl import (
    host,
    images,
    lab,
    locks,
    mounts,
    pcmkbuild,
    provision,
    safety,
    secrets,
    ssh,
    stack,
    virt,
)
from labctl import snapshot as snap_mod
from labctl.errors import LabctlError, NotFoundError, UsageError
from labctl.plan import LabPlan, NodePlan
from labctl.spec import validate_name
from labctl.xml import lxc_domain_xml


@dataclass(frozen=True)
class Restored:
    """What a restore did: the lab, the snapshot, the nodes' states once every node
    that was online in it is online again (crm_mon), after SECONDS."""

    lab: str
    snapshot: str
    nodes: dict[str, str]  # node -> crm_mon's state (Online, RemoteOnline, GuestOnline)
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)


def restore(
    name: str,
    state_dir: Path,
    snapshot_name: str | None = None,
    reporter: lab.Reporter | None = None,
) -> Restored:
    """Lab NAME back to SNAPSHOT_NAME (default: its newest snapshot)."""
    if snapshot_name is not None:
        snap_mod.check_name(snapshot_name, reserved_ok=True)
    with locks.hold("lab", validate_name(name), locks.command_line()):
        return _restore(name, state_dir, snapshot_name, reporter or lab.Reporter())


def reset(name: str, state_dir: Path, reporter: lab.Reporter | None = None) -> Restored:
    """Lab NAME back to the state `up` left it in (the snapshot `up` took)."""
    return restore(name, state_dir, snap_mod.UP_SNAPSHOT, reporter)


def _restore(
    name: str, state_dir: Path, snapshot_name: str | None, reporter: lab.Reporter
) -> Restored:
    host.require_root("labctl restore")
    t0 = time.monotonic()
    p, rec = snap_mod.load(name, state_dir)
    if snapshot_name is None:
        existing = snap_mod.list_snapshots(p)
        if not existing:
            raise NotFoundError(
                f"lab {name!r} has no snapshots: `labctl snapshot {name}` takes one"
            )
        snapshot_name = existing[-1].name
    if snapshot_name == snap_mod.UP_SNAPSHOT and snap_mod.read_snapshot(p, snapshot_name) is None:
        raise NotFoundError(
            f"lab {name!r} has no snapshot of its `up` (made by an older labctl, or removed): "
            f"`labctl down {name}` and `up` it again, or restore a snapshot of your own"
        )
    snap = snap_mod.find(p, snapshot_name)
    why = snap_mod.mismatch(snap, p, rec.build)
    if why:
        raise UsageError(why)
    if p.vm_nodes:
        have = dict(
            zip(
                [n.name for n in p.vm_nodes],
                snap_mod.on_domains(list(p.vm_nodes), virt.snapshot_names),
                strict=True,
            )
        )
        why = snap_mod.missing_vm_snapshots(snap, p, have)
        if why:
            raise NotFoundError(why)
    snap_dir = snap_mod.snapshot_dir(p, snap.name)
    lowers = _lowers(p, state_dir)
    copies = snap_mod.restore_plan(p, snap_dir)
    missing = [c.node for c in copies if not c.src.is_dir()]
    if missing:
        raise UsageError(f"snapshot {snap.name!r} lacks nodes {', '.join(missing)}: not usable")
    try:
        return _put_back(p, snap, snap_dir, copies, lowers, reporter, t0)
    except LabctlError as e:
        # Every step can run again: a second restore starts from whatever is left.
        err = LabctlError(
            f"{e} (restore stopped half-way: `labctl restore {name} {snap.name}` again, "
            f"or `labctl down {name}`)"
        )
        err.exit_code = e.exit_code
        raise err from e


def _put_back(
    p: LabPlan,
    snap: snap_mod.Snapshot,
    snap_dir: Path,
    copies: list[snap_mod.Copy],
    lowers: dict[str, list[Path]],
    reporter: lab.Reporter,
    t0: float,
) -> Restored:
    containers = list(snap_mod.containers(p))
    vms = list(p.vm_nodes)
    if containers:
        with reporter.phase("nodes stopped"):
            _stop(p)
    if vms:
        # Each VM back to its checkpoint, memory included, and left paused: they
        # run again together, once the containers are back as well.
        with reporter.phase("VMs reverted"):
            snap_mod.on_domains(vms, lambda conn, n: virt.revert_snapshot(conn, n, snap.vms[n]))
    # The authkey the snapshot's nodes have (a later `authkey rotate` changed the lab's).
    secrets.write_secret(p.authkey, (snap_dir / "authkey").read_bytes())
    if containers:
        with reporter.phase("nodes' layers restored"):
            # The copy first, beside the upper directory: a failure leaves the node as it was.
            lab.parallel(_stage, copies)
            lab.parallel(_swap_in, containers)
            lab.parallel(lambda n: _mount(n, lowers[n.name]), containers)
    with reporter.phase("domains started"):
        # VMs first: a VM remote node's pacemaker_remote listens again before the
        # container cluster nodes boot and connect to it.
        snap_mod.on_domains(vms, virt.resume_domain)
        _start(p)
        # A VM stopped when the snapshot was taken stays stopped: no SSH, no clock.
        running = snap_mod.on_domains(vms, virt.domain_active)
        vms = [n for n, up in zip(vms, running, strict=True) if up]
    # One cluster node's SSH is enough: crm_mon there says when every node is
    # back, remote and guest nodes included (`up`'s readiness rule). The VMs' own
    # clocks stopped at the checkpoint: they are set to now over their SSH meanwhile.
    with reporter.phase("ssh ready"):
        first = p.cluster_nodes[0]
        reach = [first, *[n for n in vms if n.name != first.name]]
        conns = lab.parallel(_reach, [(p, n) for n in reach])
    try:
        # The first cluster node's connection again: under TCG a VM's SSH handshake
        # alone takes a second or two.
        with reporter.phase("all online"):
            view = stack.wait_online(conns[0], snap_mod.expected_online(snap, p))
    finally:
        for c in conns:
            c.close()
    seconds = time.monotonic() - t0
    # The VMs kept theirs in their checkpoint (the marker is on disk, not in memory).
    lab.parallel(lambda n: lab.mark_formed(p, n), [n for n in containers if n.role == "cluster"])
    states = {n.name: view.nodes[n.name].state for n in p.nodes if n.name in view.nodes}
    return Restored(p.name, snap.name, states, round(seconds, 2), dict(reporter.timings))


def _lowers(p: LabPlan, state_dir: Path) -> dict[str, list[Path]]:
    """Each node's lower layers, as `up` (or the last `deploy` or `upgrade`) chose them."""
    out = {}
    for n in snap_mod.containers(p):
        image = images.find_image(state_dir, n.image)
        if image is None:
            raise NotFoundError(f"image {n.image!r} of node {n.name} is gone: rebuild it first")
        build = pcmkbuild.resolve(state_dir, n.build) if n.build else None
        out[n.name] = lab.lowers(image, build, n.layer, n.packages)
    return out


def _stop(p: LabPlan) -> None:
    """Every domain of lab P destroyed: the cluster nodes first (they run the guests'
    VirtualDomain resources), then the rest. Nothing in a node needs a graceful stop:
    its disk state is the snapshot's from here on."""
    nodes = snap_mod.containers(p)
    with virt.connection(virt.default_uri("lxc")) as conn:
        for group in (
            [n for n in nodes if n.role == "cluster"],
            [n for n in nodes if n.role != "cluster"],
        ):
            lab.parallel(lambda n: virt.remove_domain(conn, n.name, kill_init=True), group)
    for n in nodes:
        for target in mounts.mounts_under(n.dir):
            mounts.unmount(target)


def _stage(c: snap_mod.Copy) -> None:
    snap_mod.remove_tree(c.dst.parent, c.dst.name, "staging directory")
    snap_mod.copy_tree(c.src, c.dst)
    # The first corosync start after a boot waits out a fence (provision.FORMED_MARKER);
    # this boot is labctl's own, so the marker goes, and comes back once all are online.
    # It is in the upper directory only (written at run time), so unlinking it is right.
    marker = c.dst / provision.FORMED_MARKER.lstrip("/")
    marker.unlink(missing_ok=True)


def _swap_in(node: NodePlan) -> None:
    """The staged copy becomes NODE's upper directory, with a fresh work directory
    (overlayfs wants one that belongs to no other mount)."""
    if mounts.mounts_under(node.dir):
        raise UsageError(f"{node.root} is still mounted: not replacing its layer")
    snap_mod.remove_tree(node.dir, "upper.old", "node directory")
    upper = safety.child_dir(node.dir, "upper", "node directory")
    if upper.exists():
        upper.rename(node.dir / "upper.old")
    (node.dir / "upper.new").rename(upper)
    snap_mod.remove_tree(node.dir, "upper.old", "node directory")
    snap_mod.remove_tree(node.dir, "work", "node directory")


def _mount(node: NodePlan, lowers: list[Path]) -> None:
    mounts.mount_overlay(lowers, node.upper, node.work, node.root)


def _start(p: LabPlan) -> None:
    legacy = host.cgroup_layout() == "hybrid"
    with virt.connection(virt.default_uri("lxc")) as conn:

        def start(node: NodePlan) -> None:
            xml = lxc_domain_xml(
                p, node, legacy_cgroups=legacy, mounts=provision.host_mounts(p, node)
            )
            virt.define_and_start(conn, xml)

        nodes = snap_mod.containers(p)
        # Remote nodes first: pacemaker_remote listens before the cluster connects.
        lab.parallel(start, [n for n in nodes if n.role == "remote"])
        lab.parallel(start, [n for n in nodes if n.role == "cluster"])


def _reach(item: tuple[LabPlan, NodePlan]) -> ssh.Connection:
    """An open connection to NODE once it answers SSH; a VM's wall clock, stopped at
    its checkpoint, is set to now on the way."""
    p, node = item
    vm = node.backend == "vm"
    ssh.wait_for_banner(str(node.ip), timeout=lab.VM_SSH_TIMEOUT if vm else lab.SSH_TIMEOUT)
    c = lab.connect(p, node)
    try:
        c.run(set_clock_command(time.time()) if vm else "true")
    except BaseException:
        c.close()
        raise
    return c


def set_clock_command(now: float) -> str:
    """The shell command that sets a node's wall clock to NOW (seconds since the
    epoch), to the millisecond. Pure."""
    return f"date -u -s @{now:.3f} >/dev/null"
