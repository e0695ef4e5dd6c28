"""Host-wide locks: one per lab, per image, per source build and per CTS source tree.

They live in one directory for the whole host (state.LOCK_DIR), whatever a
command's --state-dir: libvirt's names (networks, domains) are the host's, so two
state directories can still collide on one lab name. A lock is an flock(2) on a
file, so it goes away with the process that held it, even after SIGKILL; the file
says who holds it (pid and command), for the message a second command gives.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labctl import safety
from labctl.errors import LabctlError

# Shared by every labctl on the host, whatever its state directory.
LOCK_DIR = Path(os.environ.get("LABCTL_LOCK_DIR", "/run/lock/labctl"))
# Set by the CLI's --wait: a busy lab is waited for rather than refused.
WAIT = False
POLL = 0.2


class BusyError(LabctlError):
    """Another labctl holds the lock."""

    exit_code = 6


def lock_path(kind: str, name: str, lock_dir: Path | None = None) -> Path:
    """The lock file of NAME of KIND ("lab", "image", "build", "cts"); NAME one component."""
    if not safety.is_component(kind) or not safety.is_component(name):
        raise safety.UnsafePathError(f"not a lock name: {kind!r} {name!r}")
    return (lock_dir or LOCK_DIR) / f"{kind}-{name}.lock"


def holder(path: Path) -> str:
    """Who holds the lock at PATH, as its file says ("pid N: command")."""
    try:
        return path.read_text().strip() or "another labctl"
    except OSError:
        return "another labctl"


@contextmanager
def hold(
    kind: str,
    name: str,
    what: str,
    wait: bool | None = None,
    timeout: float | None = None,
    lock_dir: Path | None = None,
) -> Iterator[None]:
    """Hold the lock of NAME of KIND while WHAT runs. Busy: refuse at once with who
    holds it, or (WAIT, default the CLI's --wait) wait for it, up to TIMEOUT."""
    path = lock_path(kind, name, lock_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    wait = WAIT if wait is None else wait
    deadline = None if timeout is None else time.monotonic() + timeout
    with open(path, "a+") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                busy = holder(path)
                if not wait:
                    raise BusyError(
                        f"{kind} {name} is busy: {busy}; wait for it to finish, "
                        "or run again with --wait"
                    ) from None
                if deadline is not None and time.monotonic() > deadline:
                    raise BusyError(
                        f"{kind} {name} still busy after {timeout:.0f} s: {busy}"
                    ) from None
                time.sleep(POLL)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {what}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def command_line() -> str:
    """This process's command, for the lock's holder line."""
    return " ".join(["labctl", *sys.argv[1:]])[:200]
