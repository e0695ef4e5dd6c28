"""Shell completion of lab and node names (`labctl --install-completion`).

Read from the state directory's records only: completing must be quick and
quiet, so anything unreadable completes to nothing rather than failing."""

from __future__ import annotations

import os
from pathlib import Path

from labctl import state
from labctl.errors import LabctlError, UsageError
from labctl.spec import validate_name


def _valid(name: str) -> bool:
    try:
        validate_name(name)
    except UsageError:
        return False
    return True


def lab_names(state_dir: Path, incomplete: str) -> list[str]:
    """Labs recorded in STATE_DIR whose names start with INCOMPLETE, sorted."""
    d = state.labs_dir(state_dir)
    try:
        entries = sorted(os.listdir(d))
    except OSError:
        return []
    return [
        n
        for n in entries
        if n.startswith(incomplete) and _valid(n) and (d / n / "lab.json").is_file()
    ]


def node_names(state_dir: Path, lab: str | None, incomplete: str) -> list[str]:
    """Nodes of lab LAB (as recorded) whose names start with INCOMPLETE, in the lab's order."""
    if not lab or not _valid(lab):
        return []
    try:
        rec = state.read_record(state_dir, lab)
        nodes = rec.plan(state_dir).all_nodes if rec is not None else []
    except (LabctlError, OSError, ValueError, KeyError, TypeError):
        return []
    return [n.name for n in nodes if n.name.startswith(incomplete)]
