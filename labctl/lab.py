"""Orchestration of `up`, `down`, `status`: named steps, per-node steps concurrent."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from labctl import (
    capacity,
    cgroups,
    cloudimage,
    cloudinit,
    fencing,
    host,
    images,
    locks,
    mounts,
    net,
    pcmkbuild,
    plan,
    proc,
    qdevice,
    safety,
    secrets,
    snapshot,
    ssh,
    stack,
    state,
    virt,
)
from labctl import pacemaker as pcmk
from labctl.errors import HostError, LabctlError, NotFoundError, UsageError
from labctl.plan import LabPlan, NodePlan
from labctl.provision import (
    BOOT_UNITS,
    DEFAULT_DIR_MODE,
    DIR_MODES,
    FORMED_MARKER,
    cluster_boot_files,
    host_mounts,
    known_hosts_lines,
    node_files,
    preseeded,
)
from labctl.spec import LabSpec, is_lab_name, validate_name
from labctl.xml import (
    link_network_xml,
    lxc_domain_xml,
    network_xml,
    pool_xml,
    qemu_domain_xml,
    volume_xml,
)

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 16  # per-node steps at once; LABCTL_PARALLEL overrides (1 = one by one)
# How long a node may take to answer SSH after its start; LABCTL_SSH_TIMEOUT (seconds)
# overrides both, for hosts much slower than these figures were measured on.
SSH_TIMEOUT = float(os.environ.get("LABCTL_SSH_TIMEOUT", 120.0))
VM_SSH_TIMEOUT = float(os.environ.get("LABCTL_SSH_TIMEOUT", 420.0))  # TCG: ~70 s boots
GUEST_STOP_TIMEOUT = 30.0
FENCE_REJOIN_TIMEOUT = 180.0


@dataclass(frozen=True)
class Event:
    """One step of progress. Every rendering (plain lines, a terminal's live display,
    the benchmark's timings) is made from these."""

    kind: str  # start, done, failed (a phase), count (of its nodes), note (a line)
    phase: str = ""
    text: str = ""
    seconds: float = 0.0
    done: int = 0
    total: int = 0  # 0: not known beforehand (a compile's count of compiler runs)
    unit: str = "nodes"


def plain_lines(emit: Callable[[str], None], e: Event) -> None:
    """The plain rendering: a line when a phase starts and when it is done, and notes."""
    if e.kind == "start":
        emit(f"{e.phase} ...")
    elif e.kind == "done":
        emit(f"{e.phase}: done in {e.seconds:.1f} s")
    elif e.kind == "note":
        emit(e.text)


class Reporter:
    """Progress of named phases, as Events to LISTEN (default: plain lines to EMIT);
    the benchmark reads its timings."""

    def __init__(
        self,
        emit: Callable[[str], None] = lambda _m: None,
        listen: Callable[[Event], None] | None = None,
    ) -> None:
        self.listen = listen or partial(plain_lines, emit)
        self.timings: dict[str, float] = {}

    def emit(self, text: str) -> None:
        self.listen(Event("note", text=text))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        self.listen(Event("start", name))
        try:
            yield
        except BaseException:
            # A live display must learn that the phase ended, or it would spin on.
            self.listen(Event("failed", name, seconds=time.monotonic() - start))
            raise
        self.timings[name] = time.monotonic() - start
        self.listen(Event("done", name, seconds=self.timings[name]))

    def tally(self, name: str, unit: str) -> Callable[[int], None]:
        """A counter of phase NAME's UNITs done, with no total known beforehand."""
        return lambda done: self.listen(Event("count", name, done=done, unit=unit))

    def counted(self, name: str, fn: Callable[[T], R], total: int) -> Callable[[T], R]:
        """FN, telling phase NAME each time it has finished one of its TOTAL items
        (nodes, for `parallel`)."""
        lock = threading.Lock()
        finished = 0

        def run(item: T) -> R:
            nonlocal finished
            result = fn(item)
            with lock:
                finished += 1
                self.listen(Event("count", name, done=finished, total=total))
            return result

        return run


def parallel(fn: Callable[[T], R], items: list[T] | tuple[T, ...]) -> list[R]:
    """Run FN over ITEMS with a bounded pool; the first failure is raised after all finish."""
    if not items:
        return []
    workers = int(os.environ.get("LABCTL_PARALLEL", MAX_WORKERS))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        futures = [pool.submit(fn, item) for item in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    return [f.result() for f in futures]


# ---------------------------------------------------------------- status


@dataclass(frozen=True)
class NodeStatus:
    name: str
    role: str
    ip: str
    domain: str  # libvirt state, or "absent"
    pacemaker: str = "unknown"  # crm_mon's word: Online, RemoteOnline, GuestOnline, OFFLINE, ...
    runs_on: str = ""  # remote/guest: the cluster node running its connection or domain
    version: str = ""  # the Pacemaker version the node has (its own answer)
    build: str = ""  # Pacemaker's build string there
    source: str = ""  # labctl's build name, or "distribution"
    image: str = ""  # the built image the node is made from (the lab record's word)
    feature_set: str = ""  # its CRM feature set as crm_mon shows it ("" where it shows none)
    link_ips: tuple[str, ...] = ()  # its addresses on corosync links 1, ... (`--links 2`)


@dataclass(frozen=True)
class LabStatus:
    name: str
    state: str
    mode: str
    backend: str
    network: str
    subnet: str
    nodes: list[NodeStatus] = field(default_factory=list)
    dc: str = ""
    quorate: bool = False
    properties: dict[str, str] = field(default_factory=dict)
    fencing: str = ""
    notes: list[str] = field(default_factory=list)
    pacemaker_build: str = ""  # the build the lab was made or deployed with (IMAGE/NAME)
    pacemaker_tree: str = ""  # the source tree it came from
    images: list[str] = field(default_factory=list)  # the images its nodes are made from
    mixed: bool = False  # its nodes run different Pacemaker versions (theirs or crm_mon's word)
    dc_version: str = ""  # the DC's Pacemaker, as crm_mon shows it
    packages: list[str] = field(default_factory=list)  # added to every node (--packages)
    bare: bool = False  # made with --bare: no cluster set up by labctl
    # The lab's test resources (`up --resources N`): id -> where each runs ("" stopped).
    resources: dict[str, str] = field(default_factory=dict)
    qdevice: qdevice.QdeviceStatus | None = None  # `up --qdevice`: qnetd's view


def resource_places(view: pcmk.ClusterView | None, count: int) -> dict[str, str]:
    """Where each of the lab's COUNT Dummy resources runs, as VIEW shows it; pure."""
    out = {}
    for i in range(1, count + 1):
        r = view.resources.get(pcmk.dummy_id(i)) if view else None
        out[pcmk.dummy_id(i)] = ", ".join(r.nodes) if r and r.active else ""
    return out


def status(name: str, state_dir: Path) -> LabStatus:
    rec = state.read_record(state_dir, name)
    backend = rec.spec.backend if rec else "lxc"
    doms = {d.name: d for d in all_lab_domains(name)}
    with virt.connection(virt.default_uri("lxc")) as conn:
        nets = virt.lab_networks(conn)
    if rec is None:
        if not doms and name not in nets and not (state.labs_dir(state_dir) / name).is_dir():
            raise NotFoundError(f"no lab {name!r}: `labctl list` shows the labs on this host")
        nodes = [NodeStatus(d.name, d.meta.role, "", d.state) for d in doms.values()]
        return LabStatus(
            name=name,
            state="left over (no record)",
            mode="?",
            backend=backend,
            network=nets.get(name, ""),
            subnet="",
            nodes=nodes,
            notes=[f"run `labctl down {name}` to remove what is left"],
        )
    p = rec.plan(state_dir)
    view, props, why = _pacemaker_view(p, doms)
    notes = [why] if why and not p.spec.bare else []
    if p.spec.bare:
        notes.append("bare lab (--bare): labctl set up no cluster here; what runs is yours")
    running = [n for n in p.nodes if n.name in doms and doms[n.name].state == "running"]
    versions = dict(zip(running, parallel(partial(_node_pacemaker, p), running), strict=True))
    nodes = []
    for n in p.nodes:
        pn = view.nodes.get(n.name) if view else None
        res = view.resources.get(stack.connection_resource(n)) if view else None
        v = versions.get(n) or pcmk.NodePacemaker()
        nodes.append(
            NodeStatus(
                n.name,
                n.role,
                str(n.ip),
                _domain_state(doms, n),
                pacemaker=pn.state if pn else ("unknown" if view is None else "not in cluster"),
                runs_on=", ".join(res.nodes) if res and n.role != "cluster" else "",
                version=v.version,
                build=v.build,
                source=v.source,
                image=n.image,
                feature_set=pn.feature_set if pn else "",
                link_ips=tuple(map(str, n.link_ips)),
            )
        )
    qd = None
    if p.qnetd is not None:
        q, q_state = p.qnetd, _domain_state(doms, p.qnetd)
        nodes.append(NodeStatus(q.name, q.role, str(q.ip), q_state, pacemaker=""))
        qd = qdevice.status(p, connect) if q_state == "running" else None
    if qd is not None and (qd.error or not all(qd.votes.values())):
        missing = [k for k, v in qd.votes.items() if not v]
        notes.append(f"quorum device: {qd.error or 'no connection from ' + ', '.join(missing)}")
    if pending := pending_upgrade_note(p, name):
        notes.append(pending)
    mixed = is_mixed(nodes, view.mixed_version if view else False)
    if mixed and p.mixed:
        notes.append(mixed_note(nodes))
    elif disagreement := pacemaker_disagreement(nodes):
        notes.append(disagreement)
    fencing = ""
    if view is not None:
        fencing = "enabled" if view.stonith_enabled else "not configured (stonith-enabled=false)"
        if not view.stonith_enabled:
            notes.append(
                "fencing is not configured: stonith-enabled=false, so a lost node is never fenced"
            )
    return LabStatus(
        name=name,
        state=rec.state,
        mode=rec.spec.mode,
        backend=rec.spec.backend,
        network=p.network.name if name in nets else "absent",
        subnet=str(p.network.subnet),
        nodes=nodes,
        dc=(view.dc or "") if view else "",
        quorate=view.quorate if view else False,
        properties=props,
        fencing=fencing,
        notes=notes,
        pacemaker_build=rec.build or "",
        pacemaker_tree=rec.spec.pacemaker or "",
        images=list(p.images),
        mixed=mixed,
        dc_version=view.dc_version if view else "",
        packages=list(p.spec.packages),
        bare=p.spec.bare,
        resources=resource_places(view, rec.spec.resources),
        qdevice=qd,
    )


def _domain_state(doms: Mapping[str, virt.DomainInfo], node: NodePlan) -> str:
    return doms[node.name].state if node.name in doms else "absent"


def pending_upgrade_note(p: LabPlan, name: str) -> str:
    """A note when `labctl upgrade` stopped with a node out of the cluster, else ""."""
    try:
        node = json.loads((p.dir / state.PENDING_UPGRADE).read_text())["node"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    image = next((n.image for n in p.nodes if n.name == node), "?")
    return (
        f"an upgrade stopped at {node} (its root: {image}), which may still be in standby: "
        f"`labctl upgrade {name} --to IMAGE` finishes it once it is fixed"
    )


def is_mixed(nodes: list[NodeStatus], crm_mon_mixed: bool) -> bool:
    """Whether a lab runs more than one Pacemaker version: by the nodes' own answers, or
    by crm_mon's (which compares cluster nodes only); pure."""
    return crm_mon_mixed or len({n.version for n in nodes if n.version}) > 1


def mixed_note(nodes: list[NodeStatus]) -> str:
    """The note of a lab made mixed on purpose: which version runs where; pure."""
    groups: dict[str, list[str]] = {}
    for n in nodes:
        if n.version:
            groups.setdefault(n.version, []).append(n.name)
    return "mixed-version lab: " + "; ".join(
        f"Pacemaker {v} on {', '.join(names)}" for v, names in groups.items()
    )


def pacemaker_disagreement(nodes: list[NodeStatus]) -> str:
    """A note when the nodes that answered report different Pacemakers, else ""; pure."""
    groups: dict[str, list[str]] = {}
    for n in nodes:
        if n.version:
            groups.setdefault(f"{n.version} ({n.build}, {n.source})", []).append(n.name)
    if len(groups) < 2:
        return ""
    return "nodes disagree on their Pacemaker: " + "; ".join(
        f"{kind} on {', '.join(names)}" for kind, names in sorted(groups.items())
    )


def _node_pacemaker(p: LabPlan, node: NodePlan) -> pcmk.NodePacemaker | None:
    """The node's own word on its Pacemaker; None when it cannot be asked."""
    try:
        with connect(p, node) as c:
            return pcmk.parse_node_version(c.run(pcmk.NODE_VERSION_COMMAND, check=False).stdout)
    except LabctlError:
        return None


def _pacemaker_view(
    p: LabPlan, doms: dict[str, virt.DomainInfo]
) -> tuple[pcmk.ClusterView | None, dict[str, str], str]:
    """crm_mon's view from the first cluster node that answers, and the lab's properties."""
    last = "no cluster node is running"
    for node in p.cluster_nodes:
        if node.name not in doms or doms[node.name].state != "running":
            continue
        try:
            with connect(p, node) as c:
                props = {
                    k: v
                    for k, v in stack.properties(c).items()
                    if k not in pcmk.AUTOMATIC_PROPERTIES
                }
                return stack.crm_mon(c), props, ""
        except LabctlError as e:
            last = str(e)
    return None, {}, f"Pacemaker's view is unavailable: {last}"


@dataclass(frozen=True)
class Survey:
    """What `list` and `down --all` find: lab names that passed validation, and a
    one-line note for each object skipped."""

    labs: list[str]  # every lab with anything on this host: a record, a network, a pool, a domain
    mine: list[str]  # those of the state directory: recorded there, or a domain naming it
    notes: list[str]


def survey(state_dir: Path) -> Survey:
    """Every lab on this host. Names read back from libvirt or the state directory
    that are not lab names (a network `labctl-..`, say) are foreign: noted, never used."""
    notes: list[str] = []
    recorded = set()
    for n in state.recorded_labs(state_dir):
        if is_lab_name(n):
            recorded.add(n)
        else:
            notes.append(f"{state.labs_dir(state_dir) / n}: not a lab name, skipped")
    found: set[str] = set()
    with virt.connection(virt.default_uri("lxc")) as conn:
        objects = [("network", lab, net) for lab, net in virt.lab_networks(conn).items()]
        objects += [("storage pool", lab, pool) for lab, pool in virt.lab_pools(conn).items()]
    for kind, lab, obj in objects:
        if is_lab_name(lab):
            found.add(lab)
        else:
            notes.append(f"{kind} {obj}: not a lab name, foreign to labctl, skipped")
    mine = set(recorded)
    for d in all_lab_domains(None):
        if not is_lab_name(d.meta.lab):
            notes.append(
                f"domain {d.name}: its labctl metadata names lab {d.meta.lab!r}, "
                "not a lab name, foreign to labctl, skipped"
            )
            continue
        found.add(d.meta.lab)
        sd = safety.state_dir_of(d.meta.state_dir)
        if sd is not None and safety.same_dir(sd, state_dir):
            mine.add(d.meta.lab)
    return Survey(sorted(found | recorded), sorted(mine), notes)


def _connections(missed: list[str] | None = None) -> list[object]:
    """A connection to each driver labctl uses; QEMU may be absent on an LXC-only host
    (then MISSED, if given, gets one line saying what could not be reached)."""
    conns: list[object] = [virt.connect(virt.default_uri("lxc"))]
    if virt.default_uri("vm") == virt.default_uri("lxc"):
        return conns  # one driver for both (a test driver): list its domains once
    qemu, why = virt.open_or_why(virt.default_uri("vm"))
    if qemu is not None:
        conns.append(qemu)
    elif missed is not None:
        missed.append(f"the QEMU driver at {virt.default_uri('vm')} ({why})")
    return conns


def all_lab_domains(lab: str | None, missed: list[str] | None = None) -> list[virt.DomainInfo]:
    out = []
    for conn in _connections(missed):
        try:
            out += virt.lab_domains(conn, lab)  # type: ignore[arg-type]
        finally:
            conn.close()  # type: ignore[attr-defined]
    return out


def vm_files_in_use() -> dict[str, set[str]] | None:
    """Files QEMU domains and lab volumes use -> their labs; None: QEMU unreachable."""
    conn, _why = virt.open_or_why(virt.default_uri("vm"))
    if conn is None:
        return None
    try:
        return virt.files_in_use(conn)
    finally:
        conn.close()


def collect_vm_garbage(state_dir: Path) -> list[Path]:
    """Delete old VM disk generations (of the images and builds of STATE_DIR) that
    no domain or volume uses; nothing when QEMU cannot be asked what it uses."""
    used = vm_files_in_use()
    if used is None:
        return []
    gone: list[Path] = []
    builds = pcmkbuild.list_builds(state_dir)
    for img in images.list_images(state_dir):
        roles = [r for r in img.manifest.get("layers", {}) if r != "base"]
        unders = [None, *(b.dir for b in builds if b.image == img.name)]
        for under in unders:
            current = {f"{r}-{images.vm_key(img, r, under)}" for r in roles}
            gone += images.remove_unused_vm_files((under or img.dir) / "vm", current, set(used))
    return gone


def image_users(state_dir: Path, img: images.Image) -> list[str]:
    """Labs using image IMG: recorded with it, mounted over it, or a VM backed by or
    booting one of its files. Refuses (HostError) when QEMU cannot be asked."""
    users = set()
    for n in state.recorded_labs(state_dir):
        try:
            rec = state.read_record(state_dir, n)
        except LabctlError:
            continue
        if rec is not None and img.name in (*rec.spec.images, *rec.node_images.values()):
            users.add(n)
    labs = os.path.realpath(state.labs_dir(state_dir))
    for target in mounts.overlay_targets_over(img.dir):
        rel = os.path.relpath(target, labs)
        users.add(rel.split("/")[0] if not rel.startswith("..") else f"a lab mounted at {target}")
    vm_dir = img.dir / "vm"
    if vm_dir.is_dir() and any(vm_dir.iterdir()):
        used = vm_files_in_use()
        if used is None:
            raise HostError(
                f"cannot tell whether a VM uses image {img.name!r}: the QEMU driver at "
                f"{virt.default_uri('vm')} does not answer"
            )
        real = os.path.realpath(img.dir)
        for path, who in used.items():
            if safety.is_under(path, real):
                users |= who
    return sorted(users)


def remove_image(state_dir: Path, name: str) -> None:
    """`image rm NAME`: refused while a lab uses it, naming the labs."""
    img = images.find_image(state_dir, name) if images.is_image_name(name) else None
    images.remove_image(state_dir, name, image_users(state_dir, img) if img else ())


# ---------------------------------------------------------------- up


def _exists(conn: object, name: str, state_dir: Path) -> bool:
    return (
        (state.labs_dir(state_dir) / name).exists()
        or name in virt.lab_networks(conn)  # type: ignore[arg-type]
        or bool(virt.lab_domains(conn, name))  # type: ignore[arg-type]
    )


class Conns:
    """One libvirt connection per backend a lab uses (LXC always: networks, containers)."""

    def __init__(self, backends: set[str]) -> None:
        self._conns = {b: virt.connect(virt.default_uri(b)) for b in sorted(backends | {"lxc"})}

    def __getitem__(self, backend: str) -> object:
        return self._conns[backend]

    def close(self) -> None:
        for c in self._conns.values():
            virt.close(c)


def up(
    spec: LabSpec,
    state_dir: Path,
    reporter: Reporter | None = None,
    keep_on_failure: bool = False,
    mirror: str | None = None,
) -> LabStatus:
    """Create lab SPEC and return when every node answers SSH (and Pacemaker is ready)."""
    with locks.hold("lab", spec.name, locks.command_line()):
        return _up(spec, state_dir, reporter, keep_on_failure, mirror)


def _up(
    spec: LabSpec,
    state_dir: Path,
    reporter: Reporter | None,
    keep_on_failure: bool,
    mirror: str | None,
) -> LabStatus:
    reporter = reporter or Reporter()
    host.require_root("labctl up")
    for name in spec.images:
        images.image_def(name)
    # Memory and shared kernel limits: refused before anything is made or built.
    probe = plan.make_plan(spec, 1, state_dir)  # the lab's shape; its subnet comes later
    capacity.check(probe)
    conns = Conns({spec.backend})
    try:
        conn = conns["lxc"]
        if _exists(conn, spec.name, state_dir):
            raise UsageError(
                f"lab {spec.name!r} already exists (or is left over): "
                f"`labctl down {spec.name}` first, or pick another --name"
            )
        cloud = None
        if spec.cloud_image:
            # First: a wrong checksum should not cost the user an image build.
            with reporter.phase("cloud image"):
                cloud = cloudimage.import_image(
                    state_dir,
                    spec.cloud_image,
                    cloudimage.parse_checksum(spec.image_checksum) if spec.image_checksum else None,
                    reporter.emit,
                )
        built: dict[str, images.Image] = {}
        for name in spec.images:  # a mixed lab's cluster and remote/guest images
            image = images.find_image(state_dir, name)
            if image is None or image.stale:
                with reporter.phase(f"build image {name}"):
                    image = images.build_image(
                        state_dir, name, mirror=mirror, progress=reporter.emit
                    )
            built[name] = image
        # Each image, role layer and package list the lab's nodes use is built once (cached).
        for name, layer, pkgs in sorted({(n.image, n.layer, n.packages) for n in probe.all_nodes}):
            if pkgs:
                with reporter.phase(f"packages {', '.join(pkgs)}"):
                    images.build_packages_layer(built[name], layer, pkgs, reporter.emit)
        build = None
        if spec.pacemaker:
            with reporter.phase("build Pacemaker"):
                build = pcmkbuild.build(
                    state_dir,
                    Path(spec.pacemaker),
                    spec.image,
                    reporter.emit,
                    mirror=mirror,
                    compiled=reporter.tally("build Pacemaker", "compiler runs"),
                )
        label = build.label if build else None
        # Two labctl runs must not pick the same subnet: hold a host-wide lock
        # from the choice until the network holding it exists.
        with _allocation_lock(state_dir):
            index = plan.pick_subnet_index(
                virt.network_subnets(conn) + host.host_subnets(),
                plan.lab_prefix(spec),
                spec.links,
            )
            p = plan.make_plan(spec, index, state_dir)
            if cloud is None:
                layers = {(n.image, n.layer) for n in p.vm_nodes}
                ensure_vm_images(built, layers, build, state_dir, reporter)
            try:
                # 0711: QEMU (running as libvirt-qemu) must reach the VM disks
                # below; the secrets in here are 0600 files in 0700 directories.
                p.dir.mkdir(mode=0o711)
            except FileExistsError:
                raise UsageError(f"lab {spec.name!r} is being created by another labctl") from None
            try:
                created = state.write_record(p, "creating", build=label).created
                with reporter.phase("network"):
                    virt.create_network(conn, network_xml(p.network, p.all_nodes))
                    for link in p.links:
                        virt.create_network(conn, link_network_xml(link))
            except BaseException as e:
                _roll_back(spec.name, state_dir, reporter, e)
                raise
        try:
            _create(conns, p, built, reporter, cloud, build)
            # `created` stays when the lab was begun: collect's default --since.
            state.write_record(p, "up", created=created, build=label)
            _snapshot_up(p, label, reporter)
        except BaseException as e:
            if keep_on_failure:
                try:
                    state.write_record(p, "failed", created=created, build=label)
                except Exception as record_error:  # a full disk: the cause still wins
                    e.add_note(f"recording the lab as failed failed too: {record_error}")
                reporter.emit(f"kept what was created; `labctl down {spec.name}` removes it")
            else:
                reporter.emit("rolling back")
                _roll_back(spec.name, state_dir, reporter, e)
            raise
    finally:
        conns.close()
    return status(spec.name, state_dir)


def _snapshot_up(p: LabPlan, label: str | None, reporter: Reporter) -> None:
    """The snapshot `labctl reset` returns to, of a lab just made (a pause of some 0.1 s
    and a copy of a few hundred KiB per container node, a libvirt checkpoint of each
    VM: README, "Snapshots, restore and reset"). Its failure costs `reset` only, not
    the lab: said, not raised. A lab with VM guests has none (`snapshot.unsupported`)."""
    if snapshot.unsupported(p):
        return
    try:
        with reporter.phase("snapshot up"):
            every = tuple(n.name for n in p.nodes)  # `up` has just seen them all online
            snapshot.take_unlocked(p, label, snapshot.UP_SNAPSHOT, replace=True, online=every)
    except LabctlError as e:
        reporter.emit(
            f"could not take the `up` snapshot ({e}): `labctl reset {p.name}` will not work"
        )


def _roll_back(name: str, state_dir: Path, reporter: Reporter, cause: BaseException) -> None:
    """Remove what a failed `up` made. If that fails too (libvirtd gone, say), CAUSE
    stays the error reported, with a note of the rollback's own failure."""
    try:
        _down(name, state_dir)
    except Exception as e:
        note = f"rollback failed too: {e}; `labctl down {name}` removes what is left"
        reporter.emit(note)
        cause.add_note(note)


@contextmanager
def _allocation_lock(state_dir: Path) -> Iterator[None]:
    # Host-wide, not per state directory: labs of every state directory share
    # the host's libvirt networks, subnets and bridge names.
    state.labs_dir(state_dir).mkdir(parents=True, exist_ok=True)
    locks.LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(locks.LOCK_DIR / "allocate.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _create(
    conns: Conns,
    p: LabPlan,
    built: Mapping[str, images.Image],
    reporter: Reporter,
    cloud: cloudimage.CloudImage | None = None,
    build: pcmkbuild.Build | None = None,
) -> None:
    lab_priv, lab_pub = secrets.new_ed25519(f"labctl-{p.name}")
    secrets.write_secret(p.private_key, lab_priv)
    (p.ssh_dir / "id_ed25519.pub").write_text(lab_pub + "\n")
    secrets.write_secret(p.authkey, secrets.new_authkey())
    secrets.write_secret(
        stack.corosync_key_path(p), secrets.random_bytes(pcmk.COROSYNC_AUTHKEY_BYTES)
    )
    host_keys = {n.name: secrets.new_ed25519(f"root@{n.name}") for n in p.all_nodes}
    known = known_hosts_lines(p, {k: v[1] for k, v in host_keys.items()})
    p.known_hosts.write_text(known)
    legacy = host.cgroup_layout() == "hybrid"
    emulated = bool(p.vm_nodes) and not host.kvm_status()[0]
    hostname = host.host_name()
    fence_key = None
    if p.spec.fencing:  # before the roots: container cluster nodes boot with it
        fence_key = secrets.random_bytes(fencing.KEY_BYTES)
        secrets.write_secret(fencing.fence_plans(p, virt.default_uri)[0].key_file, fence_key)

    def files_of(node: NodePlan) -> list:
        hk_priv, hk_pub = host_keys[node.name]
        return node_files(
            p,
            node,
            host_name=hostname,
            host_key_private=hk_priv,
            host_key_public=hk_pub,
            lab_key_private=lab_priv,
            lab_key_public=lab_pub,
            known_hosts=known,
        )

    def make_root(node: NodePlan) -> None:
        make_node_dir(node)
        if node.backend == "vm":
            write_seed: Callable[[Path], None]
            if cloud:
                hk_priv, hk_pub = host_keys[node.name]
                documents = cloudinit.seed_documents(
                    p,
                    node,
                    files_of(node),
                    host_key_private=hk_priv,
                    host_key_public=hk_pub,
                    lab_key_public=lab_pub,
                )
                backing, capacity = cloud.path, cloud.virtual_size
                write_seed = partial(cloudinit.write_seed, documents=documents)
            else:
                vm = images.vm_image_paths(built[node.image], node.layer, vm_dir(build))
                backing, capacity = vm.disk, images.qcow2_virtual_size(vm.disk)
                write_seed = partial(write_ext4_seed, files=files_of(node))
            make_vm_disks(conns["vm"], p, node, backing, capacity, write_seed)
            return
        mounts.mount_overlay(
            lowers(built[node.image], build, node.layer, node.packages),
            node.upper,
            node.work,
            node.root,
        )
        write_files(node.root, files_of(node))
        if preseeded(node) and not p.spec.bare:
            preseed_cluster_node(p, node, fence_key)

    with reporter.phase("roots"):
        if p.vm_nodes:
            p.disks_dir.mkdir(mode=0o711)
            virt.create_pool(conns["vm"], pool_xml(p.pool, str(p.disks_dir)))  # type: ignore[arg-type]
        parallel(reporter.counted("roots", make_root, len(p.all_nodes)), p.all_nodes)

    def start(node: NodePlan) -> None:
        conn = conns[node.backend]
        if node.backend == "vm":
            # A cloud image boots through its own firmware and boot loader.
            vm = (
                None
                if cloud
                else images.vm_image_paths(built[node.image], node.layer, vm_dir(build))
            )
            xml = vm_domain_xml(p, node, vm, emulated)
        else:
            xml = lxc_domain_xml(p, node, legacy_cgroups=legacy, mounts=host_mounts(p, node))
        if node.role == "guest":
            # The cluster starts guests from this file with `virsh create`, so they
            # are transient domains; labctl boots each the same way, to prepare it.
            guest_config(p, node).write_text(xml)
            virt.create_transient(conn, xml)  # type: ignore[arg-type]
        else:
            virt.define_and_start(conn, xml)  # type: ignore[arg-type]

    if p.spec.mode == "guest":
        # Before any domain starts: cluster nodes mount it, guests are started from it.
        p.xml_dir.mkdir(mode=0o700)
    with reporter.phase("domains started"):
        parallel(reporter.counted("domains started", start, len(p.all_nodes)), p.all_nodes)

    def reach(node: NodePlan) -> None:
        timeout = VM_SSH_TIMEOUT if node.backend == "vm" else SSH_TIMEOUT
        ssh.wait_for_banner(str(node.ip), timeout=timeout)
        with connect(p, node) as c:
            c.run("true")
            if node.backend == "vm" and cloud:
                # Its write_files and keys must be in place before labctl goes on.
                r = c.run("cloud-init status --wait --long", check=False)
                if r.status != 0:
                    reporter.emit(f"{node.name}: cloud-init reported: {r.stdout.strip()[-300:]}")

    with reporter.phase("ssh ready"):
        parallel(reporter.counted("ssh ready", reach, len(p.all_nodes)), p.all_nodes)

    if p.spec.bare:
        start_bare(p, reporter)
        return
    start_pacemaker(p, reporter, conns)
    if p.spec.resources:
        phase = reporter.phase(f"{p.spec.resources} test resources started")
        with phase, connect(p, p.cluster_nodes[0]) as c:
            add_test_resources(p, c)


RESOURCES_TIMEOUT = 120.0


def add_test_resources(p: LabPlan, c: ssh.Connection) -> None:
    """The lab's Dummy resources, in one CIB change (cibadmin), and a wait until each
    is started somewhere; idempotent."""
    stack.create_many(c, [pcmk.to_text(x) for x in pcmk.dummy_primitives(p.spec.resources)])
    ids = [pcmk.dummy_id(i) for i in range(1, p.spec.resources + 1)]
    stack.wait_started(c, ids, RESOURCES_TIMEOUT + p.spec.resources)


def make_node_dir(node: NodePlan) -> None:
    """A node's state directory: a container's root (its keys, CIB, shadow file) is
    no other host user's to read, so 0700; a VM's 0711, since QEMU, running as its
    own user, opens the seed disk in there (0600, chowned to it by libvirt)."""
    for d, mode in ((node.dir.parent, 0o711), (node.dir, 0o711 if node.backend == "vm" else 0o700)):
        d.mkdir(exist_ok=True)
        d.chmod(mode)  # mkdir's mode is filtered by the umask


def lowers(
    image: images.Image | None,
    build: pcmkbuild.Build | None,
    layer: str,
    packages: Sequence[str] = (),
) -> list[Path]:
    """A node's lower layers, top first: a Pacemaker build's over the layer of the lab's
    extra PACKAGES (if any) over the image's (if IMAGE)."""
    own = build.lowers(layer) if build else []
    if image is None:
        return own
    extra = [images.packages_layer(image, layer, packages)] if packages else []
    return [*own, *extra, image.layer(layer), image.base]


def vm_dir(build: pcmkbuild.Build | None) -> Path | None:
    """Where VM disks with a Pacemaker build live (None: the image's own)."""
    return build.dir if build else None


def write_files(root: Path, files: list) -> None:
    """Lay node files out under ROOT (a node's root, or a seed's tree), modes included:
    the files' own and those of the directories made for them (DIR_MODES)."""
    for f in files:
        target = root / f.path.lstrip("/")
        for d in reversed(target.relative_to(root).parents):
            if not (root / d).is_dir():
                (root / d).mkdir()
                # chmod: mkdir's mode is filtered by the umask.
                (root / d).chmod(DIR_MODES.get(f"/{d.as_posix()}", DEFAULT_DIR_MODE))
        secrets.write_secret(target, f.data, f.mode)


def ensure_vm_images(
    built: Mapping[str, images.Image],
    layers: set[tuple[str, str]],
    build: pcmkbuild.Build | None,
    state_dir: Path,
    reporter: Reporter,
) -> None:
    """The VM disk of each (image name, role layer) of LAYERS, built where missing;
    after a build, old generations that no lab uses go."""
    for name, layer in sorted(layers):
        if images.find_vm_image(built[name], layer, vm_dir(build)) is None:
            with reporter.phase(f"build VM image {name} {layer}"):
                images.build_vm_image(
                    built[name],
                    layer,
                    reporter.emit,
                    lowers(None, build, layer),
                    vm_dir(build),
                )
            collect_vm_garbage(state_dir)


def vm_domain_xml(p: LabPlan, node: NodePlan, vm: images.VmImage | None, emulated: bool) -> str:
    """VM NODE's domain: booting VM's kernel and initrd directly, or (VM None: a
    cloud image) through its disk's own boot loader; EMULATED: TCG, not KVM."""
    return qemu_domain_xml(
        p,
        node,
        domain_type="qemu" if emulated else "kvm",
        kernel=str(vm.kernel) if vm else None,
        initrd=str(vm.initrd) if vm else None,
        pool=p.pool,
        volume=node.volume,
        seed=str(node.seed),
    )


def replace_vm_disk(conn: object, p: LabPlan, node: NodePlan, vm: images.VmImage) -> None:
    """A fresh copy-on-write volume over VM's disk in place of VM NODE's own (its
    domain stopped): a block-level overlay cannot be moved onto another image's
    disk, so all the node wrote is gone. Its seed disk, its identity (host name,
    SSH host keys), is kept; `reconfigure_node` gives it the rest back."""
    virt.remove_volume(conn, p.pool, node.volume)  # type: ignore[arg-type]
    capacity = images.qcow2_virtual_size(vm.disk)
    virt.create_volume(conn, p.pool, volume_xml(node.volume, capacity, str(vm.disk)))  # type: ignore[arg-type]


def corosync_realtime(p: LabPlan) -> bool:
    """Whether corosync may run realtime: cluster nodes are all VMs or all containers;
    VMs under TCG must not (see pcmk.corosync_conf)."""
    return p.cluster_nodes[0].backend == "lxc" or host.kvm_status()[0]


def reconfigure_node(p: LabPlan, node: NodePlan, c: ssh.Connection) -> None:
    """What `up` gives a VM node over SSH, again, on a node whose disk is new (its
    seed gave it its identity at boot): a cluster node corosync's configuration and
    key, the authkey and the fence key, but no CIB (it takes the cluster's when it
    joins); a remote node the authkey and port, pacemaker_remote listening."""
    authkey, corokey = stack.lab_keys(p)
    if node.role == "cluster":
        stack.setup_cluster_node(c, p, authkey, corokey, corosync_realtime(p), seed_cib=False)
        if p.spec.fencing:
            key = fencing.fence_plans(p, virt.default_uri)[0].key_file.read_bytes()
            stack.push_secret(c, key, fencing.NODE_KEY_PATH)
    else:
        stack.setup_remote_node(c, authkey, p.spec.remote_port, vm=node.backend == "vm")


def make_vm_disks(
    conn: object,
    p: LabPlan,
    node: NodePlan,
    backing: Path,
    capacity: int,
    write_seed: Callable[[Path], None],
) -> None:
    """The node's copy-on-write volume over BACKING, and its seed disk."""
    virt.create_volume(conn, p.pool, volume_xml(node.volume, capacity, str(backing)))  # type: ignore[arg-type]
    node.dir.mkdir(parents=True, exist_ok=True)
    write_seed(node.seed)


def write_ext4_seed(seed: Path, files: list) -> None:
    """labctl's own VM images copy the files of this ext4 disk over their root
    (`cp -a files/. /`: modes too, so files/ is the root's 0755, files/root 0700)."""
    stage = seed.parent / "seed-tree"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(mode=0o700)  # the keys are staged here: nobody else may look in
    stage.chmod(0o700)
    try:
        (stage / "files").mkdir()
        (stage / "files").chmod(DIR_MODES["/"])
        write_files(stage / "files", files)
        images.make_seed(stage, seed)
    finally:
        shutil.rmtree(stage)


def guest_config(p: LabPlan, node: NodePlan) -> Path:
    return p.xml_dir / f"{node.name}.xml"


def preseed_cluster_node(p: LabPlan, node: NodePlan, fence_key: bytes | None) -> None:
    """Corosync's configuration and key, the fence key and a first CIB in a container
    cluster node's root before it first boots, and its stack enabled: the cluster
    forms while labctl waits for SSH. The CIB is made by the node's own Pacemaker
    tools (chrooted, as `start_pacemaker` does over SSH for VMs)."""
    _, corokey = stack.lab_keys(p)
    write_files(node.root, cluster_boot_files(pcmk.corosync_conf(p, True), corokey, fence_key))
    props = pcmk.lab_properties(p.spec.fencing, p.spec.mode == "guest")
    script = f"{pcmk.seed_cib_command(props)} && systemctl enable -q {' '.join(BOOT_UNITS)}"
    proc.run(["chroot", str(node.root), "sh", "-c", script], where="host", timeout=60.0)


def start_bare(p: LabPlan, reporter: Reporter) -> None:
    """A bare lab (`up --bare`) gets no cluster: no corosync.conf, CIB or authkey, for
    tools that set one up themselves (pcs, crmsh, the ha_cluster role). Its fencing
    is there for them to use: fence_virtd runs and cluster nodes have its key."""
    fps = fencing.fence_plans(p, virt.default_uri) if p.spec.fencing else []
    for fp in fps:
        with reporter.phase("fence_virtd started"):
            fencing.start(p, fp)

    def prepare(node: NodePlan) -> None:
        with connect(p, node) as c:
            # Debian's corosync package ships an example corosync.conf, and pacemaker's
            # makes an authkey when it is installed: the image's, the same in every lab.
            c.run(f"rm -f {pcmk.COROSYNC_CONF} {pcmk.AUTHKEY_PATH}")
            if fps and node.role == "cluster":
                stack.push_secret(c, fps[0].key_file.read_bytes(), fencing.NODE_KEY_PATH)

    with reporter.phase("bare nodes"):
        parallel(prepare, p.nodes)


def start_pacemaker(p: LabPlan, reporter: Reporter, conns: Conns) -> pcmk.ClusterView:
    """Keys and config on every node, the cluster formed, remote nodes registered, all online."""
    authkey, corokey = stack.lab_keys(p)
    cluster = p.cluster_nodes
    others = [n for n in p.nodes if n.role != "cluster"]
    fps = fencing.fence_plans(p, virt.default_uri)
    realtime = corosync_realtime(p)
    key_file = fps[0].key_file  # written by _up, before the roots
    if p.spec.fencing:
        with reporter.phase("fence_virtd started"):
            for fp in fps:
                fencing.start(p, fp)

    def start_cluster_node(node: NodePlan) -> None:
        with connect(p, node) as c:
            if preseeded(node):
                # Its stack started at boot; remote nodes wait for this key.
                stack.push_authkey(c, authkey)
            else:
                stack.setup_cluster_node(c, p, authkey, corokey, realtime)
                if p.spec.fencing:
                    stack.push_secret(c, key_file.read_bytes(), fencing.NODE_KEY_PATH)
            stack.start_cluster_node(c)

    def prepare_other(node: NodePlan) -> None:
        with connect(p, node) as c:
            stack.setup_remote_node(
                c, authkey, p.spec.remote_port, len(p.nodes), vm=node.backend == "vm"
            )
        # A prepared guest is left running: the cluster, which never probes a
        # guest's domain (pcmk.no_discovery), takes it over with its first start
        # (VirtualDomain finds it running: "already running"), and from then on
        # starts and stops it. Stopping it here and booting it again cost a
        # hundred-guest lab about a minute.

    def prepare_others() -> None:
        start = time.monotonic()
        parallel(prepare_other, others)
        reporter.timings["remote/guest nodes prepared (alongside)"] = time.monotonic() - start

    # Remote and guest nodes are prepared while the cluster forms: neither waits
    # for the other until the cluster must register them.
    with ThreadPoolExecutor(max_workers=1) as side:
        others_ready = side.submit(prepare_others)
        with reporter.phase("cluster formed"):
            parallel(start_cluster_node, cluster)
            with connect(p, cluster[0]) as c:
                stack.wait_online(c, {n.name: "cluster" for n in cluster})
                # Already in the seeded CIB; set again so a node that had a CIB of
                # its own cannot have won with other values.
                configure_cluster(p, c)
        with reporter.phase("remote/guest nodes prepared"):
            others_ready.result()

    parallel(partial(mark_formed, p), cluster)
    if p.qnetd is not None:
        with reporter.phase("quorum device"):
            qdevice.setup(p, connect)

    with reporter.phase("all online"), connect(p, cluster[0]) as c:
        register_others(p, c)
        return stack.wait_online(c, {n.name: n.role for n in p.nodes})


def mark_formed(p: LabPlan, node: NodePlan) -> None:
    """The marker that makes corosync's first start after a boot (a fence) wait."""
    with connect(p, node) as c:
        c.run(f"mkdir -p /etc/labctl && touch {FORMED_MARKER}")


def configure_cluster(p: LabPlan, c: ssh.Connection) -> None:
    """The lab's cluster properties and its fence devices; idempotent."""
    stack.set_properties(c, pcmk.lab_properties(p.spec.fencing, p.spec.mode == "guest"))
    if p.spec.fencing:
        fps = fencing.fence_plans(p, virt.default_uri)
        stack.create_many(c, [pcmk.to_text(fencing.stonith_primitive(fp)) for fp in fps])


def register_others(p: LabPlan, c: ssh.Connection) -> None:
    """The resources that join remote and guest nodes to the cluster; idempotent."""
    resources, constraints = [], []
    cluster = [n.name for n in p.cluster_nodes]
    for node in p.nodes:
        if node.role == "remote":
            rsc = pcmk.remote_primitive(node, p.spec.remote_port)
        elif node.role == "guest":
            rsc = pcmk.guest_primitive(
                node,
                config=str(guest_config(p, node)),
                hypervisor=virt.default_uri(node.backend),
                port=p.spec.remote_port,
                force_stop=node.backend == "lxc",
            )
            constraints += [pcmk.to_text(x) for x in pcmk.no_discovery(f"vm-{node.name}", cluster)]
        else:
            continue
        resources.append(pcmk.to_text(rsc))
    stack.create_many(c, resources)
    stack.create_many(c, constraints, scope="constraints")


def rotate_authkey(name: str, state_dir: Path, reporter: Reporter | None = None) -> None:
    """A fresh Pacemaker authkey on every node (holding the lab's lock)."""
    with locks.hold("lab", validate_name(name), locks.command_line()):
        _rotate_authkey(name, state_dir, reporter)


def _rotate_authkey(name: str, state_dir: Path, reporter: Reporter | None) -> None:
    """A fresh Pacemaker authkey on every node; every connection re-made with it.

    deploy's shape: maintenance mode, so that stopping Pacemaker on the cluster
    nodes neither stops guests (they take the key over SSH while they run) nor
    fences anything; the key pushed everywhere; the stack restarted (the cluster
    side caches the key for 60 s, lrmd_client.c); maintenance mode lifted; `up`'s
    readiness rule.
    """
    reporter = reporter or Reporter()
    host.require_root("labctl authkey rotate")
    p = load_plan(name, state_dir)
    refuse_bare(p, "`labctl authkey rotate`")
    key = secrets.new_authkey()
    pending = p.dir / "authkey.new"
    # Keep the new key before pushing it: a failure half-way leaves it recoverable.
    secrets.write_secret(pending, key)
    remotes = [n for n in p.nodes if n.role == "remote"]
    guests = [n for n in p.nodes if n.role == "guest"]

    def run_all(nodes: list[NodePlan] | tuple[NodePlan, ...], command: str) -> None:
        def one(node: NodePlan) -> None:
            with connect(p, node) as c:
                c.run(command)

        parallel(one, nodes)

    def push(node: NodePlan) -> None:
        with connect(p, node) as c:
            stack.push_authkey(c, key)

    def stop_guest(node: NodePlan) -> None:
        with virt.connection(virt.default_uri(node.backend)) as conn:
            virt.remove_domain(conn, node.name, kill_init=True)

    with reporter.phase("maintenance mode"), connect(p, p.cluster_nodes[0]) as c:
        stack.set_properties(c, {"maintenance-mode": "true"})
    try:
        with reporter.phase("authkey pushed"):
            parallel(push, p.nodes)
        pending.replace(p.authkey)
        with reporter.phase("pacemaker restarted with the new key"):
            run_all(p.cluster_nodes, "systemctl stop pacemaker.service")
            # Every cluster node sees the host's libvirtd, so once restarted each
            # would probe a running guest as active on itself, and the cluster
            # would stop it everywhere to recover. Stopped here, the cluster
            # starts each guest once, when maintenance mode is lifted.
            parallel(stop_guest, guests)
            run_all(remotes, "systemctl restart pacemaker_remote.service")
            run_all(p.cluster_nodes, "systemctl start pacemaker.service")
        with reporter.phase("cluster formed"), connect(p, p.cluster_nodes[0]) as c:
            stack.wait_online(c, {n.name: "cluster" for n in p.cluster_nodes})
            stack.delete_property(c, "maintenance-mode")
    except LabctlError as e:
        err = LabctlError(
            f"{e}\n(authkey rotate stopped half-way: the cluster is still in maintenance "
            f"mode; the new key is in {pending if pending.exists() else p.authkey}; "
            f"`labctl authkey rotate {name}` again once the nodes answer)"
        )
        err.exit_code = e.exit_code
        raise err from e
    with reporter.phase("all online"), connect(p, p.cluster_nodes[0]) as c:
        stack.wait_online(c, {n.name: n.role for n in p.nodes})


def fence(name: str, node: str, state_dir: Path, reporter: Reporter | None = None) -> None:
    """Fence NODE through the cluster's own path (stonith_admin), and return when
    it has rebooted, rejoined and is online again."""
    with locks.hold("lab", validate_name(name), locks.command_line()):
        _fence(name, node, state_dir, reporter)


def _fence(name: str, node: str, state_dir: Path, reporter: Reporter | None) -> None:
    reporter = reporter or Reporter()
    p = load_plan(name, state_dir)
    refuse_bare(p, "`labctl fence` (fence_xvm is yours to configure)")
    target = p.node(node)
    if not p.spec.fencing:
        raise UsageError(f"lab {name!r} has no fencing (made with --no-fencing)")
    if target.role == "guest":
        raise UsageError(
            f"{node} is a guest node: the cluster recovers it through its VirtualDomain "
            "resource, not a fence device; fence a cluster or remote node"
        )
    if target.role == "qnetd":
        raise UsageError(
            f"{node} runs the quorum device and is no cluster member: nothing fences it; "
            "cut it off with `labctl net` instead"
        )
    executors = [n for n in p.cluster_nodes if n.name != node]
    if not executors:
        raise UsageError(f"lab {name!r} has no other cluster node to fence {node} from")
    with connect(p, executors[0]) as c:
        with reporter.phase(f"stonith_admin --reboot {node}"):
            c.run(f"stonith_admin --reboot {node} --timeout 120")
            # A rebooted cluster node stays out for 12 s at least (FORMED_MARKER),
            # so it is seen down unless the view is stale; a remote node may be back
            # sooner, hence only a short, bounded wait.
            stack.wait_seen_down(c, node, target.role, 30.0 if target.role == "cluster" else 10.0)
        with reporter.phase(f"{node} back online"):
            stack.wait_online(c, {n.name: n.role for n in p.nodes}, timeout=FENCE_REJOIN_TIMEOUT)


def connect(p: LabPlan, node: NodePlan) -> ssh.Connection:
    """SSH to NODE by its address on link 0, else (a cut link: `labctl net`) on its
    further corosync links; the first failure is the one reported."""
    first: LabctlError | None = None
    for address in (node.ip, *node.link_ips):
        try:
            return ssh.Connection(node.name, str(address), p.private_key, p.known_hosts)
        except ssh.HostKeyMismatch:
            raise
        except LabctlError as e:
            first = first or e
    assert first is not None
    raise first


def refuse_bare(p: LabPlan, what: str) -> None:
    """One line for commands that need the cluster a bare lab does not have."""
    if p.spec.bare:
        raise UsageError(
            f"lab {p.name!r} is bare (made with --bare): it has no cluster for {what}; "
            "make one without --bare"
        )


def load_plan(name: str, state_dir: Path) -> LabPlan:
    rec = state.read_record(state_dir, name)
    if rec is None:
        raise NotFoundError(f"no lab {name!r} here: `labctl list` shows the labs on this host")
    return rec.plan(state_dir)


# ---------------------------------------------------------------- down


@dataclass(frozen=True)
class DownReport:
    name: str
    domains: list[str]
    network: bool
    mounts: int
    directory: bool

    @property
    def anything(self) -> bool:
        return bool(self.domains or self.network or self.mounts or self.directory)


def down(name: str, state_dir: Path, fast: bool = False) -> DownReport:
    """Remove everything of lab NAME; safe from any partial state, and twice."""
    host.require_root("labctl down")
    with locks.hold("lab", validate_name(name), locks.command_line()):
        return _down(name, state_dir, fast)


def _remove_domain(conn: object, d: virt.DomainInfo) -> bool:
    # Teardown: nothing in the node needs a graceful stop.
    return virt.remove_domain(conn, d.name, kill_init=True)  # type: ignore[arg-type]


def _stop_guests_cleanly(
    name: str, state_dir: Path, doms: list[virt.DomainInfo], fast: bool
) -> None:
    """Have the cluster stop its guests before labctl removes anything, so that it
    does not restart them while they are being torn down. Best effort: a lab whose
    cluster is gone is torn down all the same.

    FAST puts the cluster in maintenance mode instead: it then neither stops nor
    recovers anything, which is as safe for a teardown and takes no time, where
    stopping costs VirtualDomain 2-10 s per guest."""
    rec = state.read_record(state_dir, name)
    if rec is None or not any(d.meta.role == "guest" for d in doms):
        return
    p = rec.plan(state_dir)
    running = {d.name for d in doms if d.state == "running"}
    for node in p.cluster_nodes:
        if node.name not in running:
            continue
        try:
            with connect(p, node) as c:
                if fast:
                    stack.set_properties(c, {"maintenance-mode": "true"})
                    return
                stack.set_properties(c, {"stop-all-resources": "true"})
                stack.wait_stopped(c, "ocf:heartbeat:VirtualDomain", timeout=GUEST_STOP_TIMEOUT)
            return
        except LabctlError:
            continue


def lab_dirs_of(name: str, state_dir: Path, doms: list[virt.DomainInfo]) -> set[Path]:
    """The directories `down` removes for lab NAME: its own in STATE_DIR, and the
    one in each state directory its domains name, if that is one (absolute,
    normal, with a real labs/ directory). Each is a real child of its labs/;
    a symbolic link there is refused (UnsafePathError)."""
    dirs = {safety.child_dir(state.labs_dir(state_dir), name, "lab directory")}
    for d in doms:
        sd = safety.state_dir_of(d.meta.state_dir)
        if sd is None:
            continue  # not a state directory labctl writes: nothing of it is used
        labs = state.labs_dir(sd)
        if labs.is_dir() and not labs.is_symlink():
            dirs.add(safety.child_dir(labs, name, "lab directory"))
    return dirs


def _down(name: str, state_dir: Path, fast: bool = True) -> DownReport:
    validate_name(name)  # also for names read back from libvirt: never a path of its own
    missed: list[str] = []
    doms = all_lab_domains(name, missed)
    # Before anything is removed: an unsafe directory stops `down` with nothing done.
    lab_dirs = lab_dirs_of(name, state_dir, doms)
    # VM domains that cannot be seen still use their disks, seeds and network:
    # remove the containers only, keep the rest for the next `down`.
    keep_for_vms = bool(missed) and _may_have_vms(name, state_dir, lab_dirs)
    # Faults first: found by the lab's name on the host (not its record), so they go
    # also after a crash or without the lab directory.
    net.remove(name)
    removed: list[str] = []
    _stop_guests_cleanly(name, state_dir, doms, fast)
    for conn in _connections():
        try:
            mine = virt.lab_domains(conn, name)  # type: ignore[arg-type]
            gone = parallel(partial(_remove_domain, conn), mine)
            removed += [d.name for d, ok in zip(mine, gone, strict=True) if ok]
        finally:
            conn.close()  # type: ignore[attr-defined]
    if keep_for_vms:
        raise HostError(
            f"lab {name}: could not reach {missed[0]}: removed {len(removed)} container(s), "
            "kept its VM domains, their disks, the network and the lab directory; "
            f"`labctl down {name}` again once it answers"
        )
    node_names = _node_names(name, state_dir, doms)
    cgroups.remove_leftovers(node_names)
    virt.remove_domain_logs(name, node_names)
    with virt.connection(virt.default_uri("lxc")) as conn:
        # Further links' networks first: the lab's own network is what finds the lab.
        for link_net in plan.link_network_names(name):
            virt.remove_network(conn, link_net)
        found_net = virt.remove_network(conn, plan.network_name(name))
        virt.remove_pool(conn, plan.network_name(name))
    for d in lab_dirs:
        for config in fencing.config_paths(d):
            fencing.stop(config)
    n_mounts = 0
    for d in lab_dirs:
        for target in mounts.mounts_under(d):
            mounts.unmount(target)
            n_mounts += 1
    had_dir = False
    for d in lab_dirs:
        if mounts.mounts_under(d):
            raise LabctlError(f"{d} still has mounts; not deleting it (see /proc/self/mountinfo)")
        if d.exists():
            had_dir = True
            shutil.rmtree(d)
    if not missed:
        collect_vm_garbage(state_dir)  # the lab's VM disks may have been the last users
    return DownReport(name, sorted(removed), found_net, n_mounts, had_dir)


def _recorded_plan(name: str, state_dir: Path) -> LabPlan | None:
    """Lab NAME's plan from its record, for teardown: None if there is none, or
    none usable (`down` works from libvirt's view then)."""
    try:
        rec = state.read_record(state_dir, name)
    except LabctlError:
        return None
    return rec.plan(state_dir) if rec is not None else None


def _node_names(name: str, state_dir: Path, doms: list[virt.DomainInfo]) -> set[str]:
    """Lab NAME's node names: its domains', and its record's (a guest the cluster
    stopped has no domain, but may have had containers before)."""
    names = {d.name for d in doms}
    p = _recorded_plan(name, state_dir)
    if p is not None:
        names |= {n.name for n in p.all_nodes}
    return names


def _may_have_vms(name: str, state_dir: Path, lab_dirs: set[Path]) -> bool:
    """Lab NAME has, or may have, VM nodes: its record says so, it has a storage
    pool, or a lab directory of it has a disks directory."""
    p = _recorded_plan(name, state_dir)
    if p is not None and p.vm_nodes:
        return True
    if any((d / "disks").exists() for d in lab_dirs):
        return True
    with virt.connection(virt.default_uri("lxc")) as conn:
        return name in virt.lab_pools(conn)


def ssh_command(name: str, node: str, state_dir: Path) -> list[str]:
    """argv of OpenSSH for an interactive login (a terminal wants the real client)."""
    p = load_plan(name, state_dir)
    n = p.node(node)
    return [
        "ssh",
        "-i",
        str(p.private_key),
        "-o",
        f"UserKnownHostsFile={p.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-l",
        "root",
        str(n.ip),
    ]


def run_on(name: str, node: str, command: str, state_dir: Path) -> ssh.Result:
    p = load_plan(name, state_dir)
    with connect(p, p.node(node)) as c:
        return c.run(command, check=False)
