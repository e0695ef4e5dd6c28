"""labctl as a library: labs under other people's tests.

    import labctl

    with labctl.up(nodes=3, mode="remote", name="rt") as lab:
        r = lab.run("rt-r1", "crm_mon -1")
        for r in lab.run_all("uptime", role="cluster"):
            ...
        lab.fence("rt-c2")
        lab.snapshot("clean"); ...; lab.restore("clean")   # or lab.reset(): as `up` left it
    # the lab is down here, whatever happened inside

The same operations the CLI runs (both sit on labctl.lab), without its tables:
values are dataclasses, failures are LabctlError (UsageError for bad input,
NotFoundError for a lab or node that is not there), one line each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from labctl import execute, lab, net, pacemaker, spec, stack, state
from labctl import restore as restore_mod
from labctl import snapshot as snapshot_mod
from labctl.errors import LabctlError, UsageError
from labctl.lab import DownReport, LabStatus, Reporter
from labctl.plan import LabPlan, NodePlan
from labctl.restore import Restored
from labctl.snapshot import Snapshot

DEFAULT_TIMEOUT = execute.DEFAULT_TIMEOUT


def default_state_dir() -> Path:
    """The CLI's: LABCTL_STATE_DIR, else /var/lib/labctl."""
    return Path(os.environ.get("LABCTL_STATE_DIR", state.DEFAULT_STATE_DIR))


@dataclass(frozen=True)
class Node:
    name: str
    role: str  # cluster, remote or guest
    address: str


Result = execute.NodeResult  # node, role, status (None: it could not run), stdout, stderr, error


class Lab:
    """A lab of this host, by name: made by `up`, or an existing one (`Lab(name)`).

    As a context manager it takes the lab down on the way out, also on errors."""

    def __init__(self, name: str, state_dir: Path | str | None = None) -> None:
        self.name = spec.validate_name(name)
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()

    def __repr__(self) -> str:
        return f"Lab({self.name!r}, state_dir={str(self.state_dir)!r})"

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def _plan(self) -> LabPlan:
        return lab.load_plan(self.name, self.state_dir)

    @property
    def nodes(self) -> list[Node]:
        """Every node, cluster nodes first, as the lab record has them."""
        return [Node(n.name, n.role, str(n.ip)) for n in self._plan().all_nodes]

    def _targets(self, p: LabPlan, node: Node | str) -> NodePlan:
        return p.node(node.name if isinstance(node, Node) else node)

    def run(self, node: Node | str, command: str, *, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """Run COMMAND (a shell command line) as root on NODE; its exit status and output.
        Reaching the node failing raises; the command failing is in the result."""
        p = self._plan()
        target = self._targets(p, node)
        with lab.connect(p, target) as c:
            r = c.run(command, check=False, timeout=timeout)
        return Result(target.name, target.role, r.status, r.stdout, r.stderr)

    def run_all(
        self,
        command: str,
        *,
        role: str | Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Result]:
        """Run COMMAND on every node (or those of ROLE) at once; one result per node, in
        the lab's order. A node that cannot be reached has status None and an error."""
        p = self._plan()
        roles = [role] if isinstance(role, str) else list(role or [])
        return execute.run(p, execute.select(p, roles, []), command, timeout)

    def crm_mon(self) -> pacemaker.ClusterView:
        """Pacemaker's view (crm_mon) from the first cluster node that answers."""
        p = self._plan()
        last: LabctlError | None = None
        for node in p.cluster_nodes:
            try:
                with lab.connect(p, node) as c:
                    return stack.crm_mon(c)
            except LabctlError as e:
                last = e
        raise last or LabctlError(f"lab {self.name!r} has no cluster node")

    def status(self) -> LabStatus:
        """What `labctl status` shows: every node's domain and Pacemaker state, versions."""
        return lab.status(self.name, self.state_dir)

    def fence(self, node: Node | str) -> None:
        """Fence NODE through the cluster (stonith_admin); return once it is online again."""
        lab.fence(self.name, node.name if isinstance(node, Node) else node, self.state_dir)

    def snapshot(self, name: str | None = None, *, replace: bool = False) -> Snapshot:
        """Save every node's state (containers: their own layers; VMs: a libvirt
        checkpoint; the lab paused for a moment); NAME defaults to the time. REPLACE:
        over an existing one of that name."""
        return snapshot_mod.take(self.name, self.state_dir, name, replace)

    def restore(self, name: str | None = None) -> Restored:
        """Every node back to snapshot NAME (default: the newest), all online again."""
        return restore_mod.restore(self.name, self.state_dir, name)

    def reset(self) -> Restored:
        """Back to the state `up` left (the snapshot `up` took), all online again."""
        return restore_mod.reset(self.name, self.state_dir)

    def snapshots(self) -> list[Snapshot]:
        """The lab's snapshots, oldest first."""
        return snapshot_mod.listing(self.name, self.state_dir)

    def net(self, action: str = "show", *args: str, link: int | None = None) -> net.NetReport:
        """`labctl net LAB ACTION ARGS`: a network fault, e.g. `lab.net("partition", "c1",
        "c2,c3")`, `lab.net("heal")`; returns the lab's faults after it."""
        return net.net(self.name, action, list(args), link, self.state_dir)

    def down(self) -> DownReport:
        """Remove the lab and everything it made; safe twice."""
        return lab.down(self.name, self.state_dir)


def up(
    nodes: int = 3,
    mode: str = "cluster",
    name: str = "lab",
    *,
    state_dir: Path | str | None = None,
    keep_on_failure: bool = False,
    mirror: str | None = None,
    **options: object,
) -> Lab:
    """Make a lab, as `labctl up` does, and return it once every node is ready.

    OPTIONS are `up`'s other options by their labctl.spec.make_spec names:
    cluster_nodes, backend, network, image, cluster_image, remote_image, memory_mib,
    vcpus, remote_port, fencing (default True, as in the CLI), image_checksum,
    pacemaker (a source tree), resources, packages, bare, links, qdevice."""
    options.setdefault("fencing", True)
    try:
        s = spec.make_spec(name, nodes, mode=mode, **options)  # type: ignore[arg-type]
    except TypeError as e:
        raise UsageError(f"labctl.up: {e}") from None
    where = Path(state_dir) if state_dir is not None else default_state_dir()
    lab.up(s, where, Reporter(), keep_on_failure=keep_on_failure, mirror=mirror)
    return Lab(name, where)
