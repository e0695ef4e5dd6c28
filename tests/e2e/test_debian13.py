"""The debian13 image (trixie, Pacemaker 3.0.0): a 3-node lab with real fencing passes CTS
in the 3.0 dialect, and a mixed lab (debian12 cluster, debian13 remote nodes) comes online.
Kept cheap: the image is built once if missing and shared, CTS runs 2 iterations (the
issue's `labctl cts LAB -- 2`)."""

from __future__ import annotations

import dataclasses
import json

from .conftest import (
    HostState,
    host_state,
    labctl,
    labctl_json,
    xfail_if_fencing_left_a_node_off,
)


def _of_lab(s: HostState, lab: str) -> HostState:
    """What of the host's state is named after LAB (everything labctl makes for it is):
    other users' labs on a shared host may come and go meanwhile. Every field of
    HostState, whichever it has."""
    return dataclasses.replace(
        s,
        **{
            f.name: frozenset(i for i in getattr(s, f.name) if lab in i)
            for f in dataclasses.fields(s)
        },
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
    xfail_if_fencing_left_a_node_off(lab, proc)
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


def test_mixed_lab_of_debian12_cluster_and_debian13_remotes_is_online_and_says_so(labs, before):
    # Here, not in a module of its own: it shares the debian13 image build above.
    labctl("image", "build", "debian13", timeout=1800)
    lab = labs.name()
    up = labctl_json(
        "up",
        "--nodes",
        "2",
        "--mode",
        "remote",
        "--cluster-image",
        "debian12",
        "--remote-image",
        "debian13",
        "--name",
        lab,
    )
    nodes = {n["name"]: n for n in up["nodes"]}
    want = {
        f"{lab}-c1": ("cluster", "Online", "debian12", "2.1.5"),
        f"{lab}-c2": ("cluster", "Online", "debian12", "2.1.5"),
        f"{lab}-r1": ("remote", "RemoteOnline", "debian13", "3.0.0"),
        f"{lab}-r2": ("remote", "RemoteOnline", "debian13", "3.0.0"),
    }
    assert {k: (n["role"], n["pacemaker"], n["image"], n["version"]) for k, n in nodes.items()} == (
        want
    )
    assert up["mixed"] and up["images"] == ["debian12", "debian13"]
    assert up["dc_version"].startswith("2.1.5")
    # crm_mon's feature set, as the DC's crm_mon shows it (2.1.5's: for cluster nodes).
    assert all(nodes[f"{lab}-c{i}"]["feature_set"].startswith("3.") for i in (1, 2))
    assert any(note.startswith("mixed-version lab: Pacemaker 2.1.5") for note in up["notes"])

    text = labctl("status", lab).stdout
    assert "mixed Pacemaker versions" in text and "2.1.5" in text and "3.0.0" in text

    labctl("down", lab)
    assert _of_lab(host_state(), lab) == _of_lab(before, lab)
