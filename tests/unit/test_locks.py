"""Host-wide locks: a second holder is refused with who holds it, or waits."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from labctl import locks
from labctl.errors import UsageError
from labctl.safety import UnsafePathError

HOLD_IN_CHILD = """
import sys, time
from pathlib import Path
from labctl import locks
with locks.hold("lab", "demo", "labctl up --name demo", lock_dir=Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _child(lock_dir, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_CHILD, str(lock_dir), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_busy_lab_is_refused_naming_who_holds_it(tmp_path):
    child = _child(tmp_path, 30)
    try:
        with (
            pytest.raises(
                locks.BusyError, match=r"lab demo is busy: pid \d+: labctl up --name demo"
            ),
            locks.hold("lab", "demo", "labctl down demo", wait=False, lock_dir=tmp_path),
        ):
            pass
        # Another lab is not affected.
        with locks.hold("lab", "other", "x", wait=False, lock_dir=tmp_path):
            pass
    finally:
        child.kill()
        child.wait()


def test_with_wait_the_second_command_runs_once_the_first_is_done(tmp_path):
    child = _child(tmp_path, 1.0)
    try:
        start = time.monotonic()
        with locks.hold("lab", "demo", "labctl down demo", wait=True, lock_dir=tmp_path):
            waited = time.monotonic() - start
            assert "labctl down demo" in locks.holder(tmp_path / "lab-demo.lock")
        assert waited > 0.3
    finally:
        child.wait()


def test_a_lock_held_by_a_killed_process_is_free(tmp_path):
    child = _child(tmp_path, 30)
    child.kill()  # SIGKILL: flock goes with the process
    child.wait()
    with locks.hold("lab", "demo", "labctl up", wait=False, lock_dir=tmp_path):
        pass


def test_waiting_has_a_deadline(tmp_path):
    child = _child(tmp_path, 30)
    try:
        with (
            pytest.raises(locks.BusyError, match="still busy after 0 s"),
            locks.hold("lab", "demo", "x", wait=True, timeout=0.3, lock_dir=tmp_path),
        ):
            pass
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("name", ["..", "a/b", "", "."])
def test_lock_names_are_one_path_component(tmp_path, name):
    with pytest.raises(UnsafePathError):
        locks.lock_path("lab", name, tmp_path)


def test_busy_is_not_bad_input_it_has_its_own_exit_status():
    assert locks.BusyError.exit_code not in (0, UsageError.exit_code)
