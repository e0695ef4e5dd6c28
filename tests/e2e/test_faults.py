"""Faults during `up` and `down` (issue 13, item 11): after each, `down` leaves the
host as it was, and nothing of another lab is touched."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from labctl import mounts

from .conftest import STATE_DIR, host_state, labctl

REPO = Path(__file__).resolve().parents[2]
# Random kill points, reproducible: the seed is printed with every failure.
SEED = int(os.environ.get("LABCTL_FAULT_SEED", time.time_ns() % 100_000))
MODES = {
    "cluster": ["--nodes", "2"],
    "remote": ["--nodes", "1", "--mode", "remote", "--cluster-nodes", "1"],
    "guest": ["--nodes", "1", "--mode", "guest", "--cluster-nodes", "1"],
}


def _up(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "labctl", "up", "--name", name, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("mode", list(MODES))
def test_sigkill_of_up_at_a_random_point_then_down_leaves_nothing(labs, before, mode):
    rng = random.Random(f"{SEED}-{mode}")
    lab = labs.name()
    # A lab of this size is up in 8-20 s here: anywhere from before the first
    # domain to the Pacemaker bring-up.
    delay = rng.uniform(0.5, 12.0)
    proc = _up(lab, *MODES[mode], "--no-fencing")
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    labctl("down", lab)
    assert host_state() == before, f"seed {SEED}, killed after {delay:.1f} s"


def test_a_node_that_does_not_answer_ssh_in_time_is_one_line_and_rolled_back(labs, before):
    # The deadline is what makes "never answers" finite: here it passes at once.
    name = labs.name()
    proc = _up(name, "--nodes", "1", "--no-fencing", env={"LABCTL_SSH_TIMEOUT": "0.01"})
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("labctl:") and "SSH did not answer" in last, err
    assert host_state() == before  # rolled back by up itself


def test_down_while_up_runs_is_refused_then_waits_with_wait(labs, before):
    lab = labs.name()
    proc = _up(lab, "--nodes", "2", "--no-fencing")
    try:
        deadline = time.monotonic() + 60
        while not (STATE_DIR / "labs" / lab).exists():
            assert time.monotonic() < deadline and proc.poll() is None, "up never started"
            time.sleep(0.05)
        busy = labctl("down", lab, check=False)
        if proc.poll() is None or busy.returncode != 0:
            assert busy.returncode == 6, busy.stderr
            assert "busy" in busy.stderr and "labctl up" in busy.stderr, busy.stderr
        # --wait: down waits for up to finish, then removes the lab.
        labctl("--wait", "down", lab)
        assert proc.wait(timeout=300) in (0, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert host_state() == before


def _libvirtd_pid() -> int:
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout
    pids = [int(x) for x in out.split()]
    assert len(pids) == 1, f"one libvirtd expected, found {pids}"
    return pids[0]


def _restart_libvirtd() -> None:
    """Stop the libvirtd that scripts/setup-host started (this test run's), and start
    it again the same way."""
    pid = _libvirtd_pid()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "libvirtd did not stop"
        time.sleep(0.1)
    subprocess.run([str(REPO / "scripts/setup-host")], check=True, capture_output=True)
    libvirt.open("lxc:///").close()


@pytest.mark.parametrize("during", ["up", "down"])
def test_libvirtd_restarted_during_up_or_down_then_down_leaves_nothing(labs, before, during):
    lab = labs.name()
    if during == "down":
        labctl("up", "--nodes", "2", "--no-fencing", "--name", lab)
        proc = subprocess.Popen(
            [sys.executable, "-m", "labctl", "down", lab],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)
    else:
        proc = _up(lab, "--nodes", "2", "--no-fencing")
        deadline = time.monotonic() + 60
        while not (STATE_DIR / "labs" / lab).exists():
            assert time.monotonic() < deadline and proc.poll() is None, "up never started"
            time.sleep(0.05)
        time.sleep(1.0)
    _restart_libvirtd()
    _out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        # Whatever failed is said in one line, not a traceback.
        assert err.strip().splitlines()[-1].startswith("labctl:"), err
        assert "Traceback" not in err, err
    labctl("down", lab)
    assert host_state() == before


def test_a_full_disk_during_an_image_build_is_one_line_and_leaves_no_half_image():
    state = STATE_DIR / f"full{os.getpid() % 10000}"
    state.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(state)], check=True)
        proc = labctl("image", "build", "--state-dir", str(state), check=False, timeout=900)
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("labctl:") and "Traceback" not in proc.stderr, proc.stderr
        images = state / "images"
        leftovers = [p.name for p in images.iterdir()] if images.is_dir() else []
        assert not [n for n in leftovers if n.startswith(".build-")], leftovers
        assert not (images / "debian12" / "manifest.json").exists()
    finally:
        for target in [*mounts.mounts_under(state), str(state)]:
            subprocess.run(["umount", target], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
