"""`labctl exec`: one command on many nodes of a lab at once, output grouped per node.

Selecting nodes, the command line, and every rendering are pure; only `run`
talks to nodes (over the lab's SSH, one thread per node).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass

from labctl import lab
from labctl.errors import LabctlError, UsageError
from labctl.plan import LabPlan, NodePlan

DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class NodeResult:
    node: str
    role: str
    status: int | None  # the command's exit status; None when it could not run or finish
    stdout: str
    stderr: str
    error: str = ""  # why there is no exit status (SSH failed, the deadline passed)

    @property
    def ok(self) -> bool:
        return self.status == 0


def select(p: LabPlan, roles: list[str], nodes: list[str]) -> list[NodePlan]:
    """The nodes named by ROLES or by NODES (neither: every node), in the lab's order."""
    if roles and nodes:
        raise UsageError("choose nodes by --role or by --node, not both")
    if roles:
        have = list(dict.fromkeys(n.role for n in p.all_nodes))
        for r in roles:
            if r not in have:
                raise UsageError(
                    f"lab {p.name!r} has no {r!r} nodes: its roles are {', '.join(have)}"
                )
        return [n for n in p.all_nodes if n.role in roles]
    if nodes:
        chosen = {p.node(name).name for name in nodes}  # p.node: one line listing the nodes
        return [n for n in p.all_nodes if n.name in chosen]
    return list(p.all_nodes)


def command_line(argv: list[str]) -> str:
    """What the node's shell runs: one argument is a command line as written (pipes,
    `&&`); several are words, each quoted, so `sh -c 'a b'` reaches sh as three words."""
    if not argv:
        raise UsageError("no command: put it after `--`, e.g. `labctl exec LAB -- hostname`")
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def run(p: LabPlan, targets: list[NodePlan], command: str, timeout: float) -> list[NodeResult]:
    """Run COMMAND on every target at once; a node that fails never stops the others."""

    def one(node: NodePlan) -> NodeResult:
        try:
            with lab.connect(p, node) as c:
                r = c.run(command, check=False, timeout=timeout)
        except LabctlError as e:
            return NodeResult(node.name, node.role, None, "", "", str(e))
        return NodeResult(node.name, node.role, r.status, r.stdout, r.stderr)

    return lab.parallel(one, targets)


def outcome(r: NodeResult) -> str:
    if r.status is None:
        return "no exit status"
    return f"exit {r.status}"


def plain(results: list[NodeResult]) -> list[tuple[str, str]]:
    """(stream, text) pieces in order: a header per node, then its stdout and stderr."""
    out: list[tuple[str, str]] = []
    for r in results:
        out.append(("stdout", f"==> {r.node} ({r.role}): {outcome(r)} <==\n"))
        for stream, text in (("stdout", r.stdout), ("stderr", r.stderr or r.error)):
            if text:
                out.append((stream, text if text.endswith("\n") else text + "\n"))
    return out


def to_json(results: list[NodeResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]


def failures(results: list[NodeResult]) -> str | None:
    """One line naming every node where the command failed, or None when none did."""
    bad = [f"{r.node} ({outcome(r)})" for r in results if not r.ok]
    if not bad:
        return None
    return f"failed on {len(bad)} of {len(results)} nodes: {', '.join(bad)}"
