"""Many guests on one host: thirty guests online, a cluster node fenced with its
share of them, every guest back; and a lab the host cannot carry refused up front.

The hundred-guest figures come from scripts/bench, not from here (CI's budget)."""

from __future__ import annotations

from .conftest import STATE_DIR, host_state, labctl, labctl_json

GUESTS = 30


def _guest_hosts(status: dict) -> dict[str, str]:
    return {n["name"]: n["runs_on"] for n in status["nodes"] if n["role"] == "guest"}


def test_thirty_guests_online_then_a_fenced_cluster_nodes_guests_recover_and_down_leaves_nothing(
    labs, before
):
    name = labs.name()
    labctl("up", "--name", name, "--nodes", str(GUESTS), "--mode", "guest", timeout=1200)
    status = labctl_json("status", name)
    nodes = {n["name"]: n["pacemaker"] for n in status["nodes"]}
    assert len(nodes) == GUESTS + 2
    assert all(state == "GuestOnline" for n, state in nodes.items() if "-g" in n), nodes
    props = status["properties"]
    assert props["load-threshold"] == "10000%" and props["concurrent-fencing"] == "true"

    hosts = _guest_hosts(status)
    victim = f"{name}-c1"
    moved = sorted(g for g, h in hosts.items() if h == victim)
    assert moved, f"no guest ran on {victim}: {hosts}"

    r = labctl("fence", name, victim, timeout=900)
    assert "back online" in r.stdout
    after = labctl_json("status", name)
    states = {n["name"]: n["pacemaker"] for n in after["nodes"]}
    assert all(states[g] == "GuestOnline" for g in hosts), states
    # Every guest of the fenced node was recovered, and (stickiness) where it
    # was recovered it stays: none went back to the fenced node when it rejoined.
    assert all(_guest_hosts(after)[g] != victim for g in moved), _guest_hosts(after)
    fence_history = labctl("ssh", name, f"{name}-c2", "--", f"stonith_admin --history {victim}")
    assert "reboot" in fence_history.stdout and "successful" in fence_history.stdout

    labctl("down", name)
    assert host_state() == before


def test_a_lab_the_hosts_memory_cannot_carry_is_refused_before_anything_is_made(labs, before):
    name = labs.name()
    # 900 VMs of 2 GiB: far past any CI machine's memory.
    r = labctl(
        "up",
        "--name",
        name,
        "--nodes",
        "900",
        "--mode",
        "remote",
        "--backend",
        "vm",
        "--memory",
        "2048",
        check=False,
    )
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "memory" in err and "remote nodes would fit" in err
    assert host_state() == before
    assert not (STATE_DIR / "labs" / name).exists()
