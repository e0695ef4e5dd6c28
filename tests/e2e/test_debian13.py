"""The debian13 image (trixie, Pacemaker 3.0.0): a 3-node lab with real fencing passes CTS
in the 3.0 dialect. One test, kept cheap: the image is built once if missing, 2 iterations."""

from __future__ import annotations

import json

from .conftest import HostState, host_state, labctl, labctl_json


def _of_lab(s: HostState, lab: str) -> HostState:
    """What of the host's state is named after LAB (everything labctl makes for it is):
    other users' labs on a shared host may come and go meanwhile."""

    def mine(items: frozenset[str]) -> frozenset[str]:
        return frozenset(i for i in items if lab in i)

    return HostState(
        domains=mine(s.domains),
        networks=mine(s.networks),
        pools=mine(s.pools),
        mounts=mine(s.mounts),
        lab_dirs=mine(s.lab_dirs),
        fence_virtds=mine(s.fence_virtds),
    )


def test_debian13_three_node_lab_with_fencing_passes_cts_and_down_leaves_nothing(labs, before):
    # A fresh CI machine has only the default image: build debian13 (a no-op once built).
    labctl("image", "build", "debian13", timeout=1800)
    built = {i["name"]: i for i in labctl_json("image", "list")["built"]}
    assert built["debian13"]["suite"] == "trixie"
    assert built["debian13"]["pacemaker_version"].startswith("3.0.0")
    assert built["debian13"]["size_bytes"] > 0

    lab = labs.name()
    up = labctl_json(
        "up", "--nodes", "3", "--mode", "cluster", "--image", "debian13", "--name", lab
    )
    assert [(n["pacemaker"], n["version"]) for n in up["nodes"]] == [("Online", "3.0.0")] * 3
    assert up["properties"]["stonith-enabled"] == "true"

    proc = labctl("cts", lab, "--json", "--", "2", check=False, timeout=3000)
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    assert result["pacemaker_version"].startswith("3.0.0")
    argv = result["command"]
    # 3.0.0's dialect: cts-lab (from the tree's python/), journals read, real fencing.
    assert argv[2].endswith("/cts/cts-lab") and "-L" in argv and "journal" in argv
    assert argv[argv.index("--stonith-type") + 1] == "fence_xvm"
    summary = result["summary"]
    assert summary["found"] and summary["completed"], proc.stderr[-3000:]
    assert summary["ok"], json.dumps(summary, indent=1) + proc.stderr[-3000:]
    assert summary["requested"] == 2 and summary["success"] == 2 and summary["failure"] == 0
    assert proc.returncode == 0

    labctl("down", lab)
    assert _of_lab(host_state(), lab) == _of_lab(before, lab)
