"""Your own Pacemaker on a lab: the nodes' Debian source with a patch of the test's
own, built, run on every node (cluster and remote), CTS from the same tree, a
second patch deployed onto the running lab, a build rolled onto a lab of the
distribution's Pacemaker by `upgrade --to BUILD`, and nothing left behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from labctl import cts, images

from .conftest import (
    STATE_DIR,
    host_state,
    labctl,
    labctl_json,
    xfail_if_fencing_left_a_node_off,
)

EXECD = "daemons/execd/pacemaker-execd.c"
# Compiled into pacemaker-execd (cluster nodes) and pacemaker-remoted (remote
# nodes): every node logs it when its executor starts.
LOG_LINE = 'crm_notice("Starting Pacemaker " EXECD_TYPE " executor");'


def _nodes_debian_version() -> str:
    img = images.find_image(STATE_DIR, images.DEFAULT_IMAGE)
    assert img is not None, "scripts/test builds the image first"
    status = (img.layer("cluster") / "var/lib/dpkg/status").read_text()
    block = status.split("Package: pacemaker\n", 1)[1]
    return block.split("Version: ", 1)[1].split("\n", 1)[0]


@pytest.fixture(scope="module")
def debian_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian source of the nodes' own Pacemaker, as `apt-get source` gives it."""
    work = tmp_path_factory.mktemp("src")
    version = _nodes_debian_version()
    tree = work / "pacemaker"

    def step(_name: str, argv: list[str], cwd: Path | None = None) -> None:
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True)

    cts.unpack_source(version, work, tree, cts.host_sources(version), step)
    return tree


def _patch(tree: Path, marker: str) -> None:
    f = tree / EXECD
    text = f.read_text()
    start = text.index('crm_notice("Starting Pacemaker " EXECD_TYPE " executor')
    end = text.index(";", start) + 1
    f.write_text(
        text[:start]
        + f'crm_notice("Starting Pacemaker " EXECD_TYPE " executor ({marker})");'
        + text[end:]
    )


def _installed_packages() -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _executor_markers(lab: str, node: str) -> list[str]:
    """The patch markers in the executor start lines of the node's current boot."""
    out = labctl(
        "ssh", lab, node, "--", "journalctl -b --no-pager -o cat | grep 'executor (' || true"
    ).stdout
    return [ln.rsplit("(", 1)[1].rstrip(")") for ln in out.splitlines() if "executor (" in ln]


def _builds() -> dict[str, dict]:
    return {b["name"]: b for b in labctl_json("image", "list")["pacemaker_builds"]}  # type: ignore[index]


def test_own_build_runs_on_every_node_passes_cts_remote_basic_and_deploys_a_second_patch(
    labs, before, debian_tree
):
    _patch(debian_tree, "labctl-e2e-1")
    packages = _installed_packages()
    out = labctl("build", str(debian_tree)).stdout
    # Built in a build root of the image's own: the host got no package.
    assert _installed_packages() == packages
    first = out.split("build ", 1)[1].split(":", 1)[0]
    assert first.startswith("debian12/pcmk-2.1.5-")
    assert first in _builds()
    assert _builds()[first]["version"] == "2.1.5"

    lab = labs.name()
    labctl("up", "--nodes", "3", "--mode", "remote", "--pacemaker", str(debian_tree), "--name", lab)
    s = labctl_json("status", lab)
    assert s["pacemaker_build"] == first  # type: ignore[index]
    nodes = s["nodes"]  # type: ignore[index]
    assert len(nodes) == 5
    for n in nodes:
        assert n["pacemaker"] in ("Online", "RemoteOnline"), n
        assert n["version"] == "2.1.5" and n["source"] == first.split("/")[1], n
        assert _executor_markers(lab, n["name"])[-1] == "labctl-e2e-1", n["name"]
    # Cluster nodes have pacemaker-remoted too (a source build installs every daemon).
    assert labctl("ssh", lab, f"{lab}-c1", "--", "which pacemaker-remoted").returncode == 0

    # The build is in use: it cannot be removed, and says by which lab.
    proc = labctl("image", "rm", first, check=False)
    assert proc.returncode == 2 and lab in proc.stderr

    # CTS comes from the same tree, and its remote-node test runs and passes.
    proc = labctl(
        "cts", lab, "--json", "--", "--choose", "RemoteBasic", "1", check=False, timeout=1800
    )
    xfail_if_fencing_left_a_node_off(lab, proc)
    result = json.loads(proc.stdout)
    assert result["command"][0].startswith(str(STATE_DIR / "builds" / "debian12" / ".trees"))
    ran = {t["name"]: t for t in result["summary"]["tests"] if t["calls"]}
    assert list(ran) == ["RemoteBasic"], proc.stderr[-3000:]
    assert result["summary"]["ok"] and ran["RemoteBasic"]["passed"] == 1, proc.stderr[-3000:]

    # A change that does not compile: one line naming the compiler's error, no build made.
    f = debian_tree / EXECD
    good = f.read_text()
    builds = set(_builds())
    f.write_text(good.replace(LOG_LINE.replace("executor", "executor (labctl-e2e-1)"), "}}}"))
    proc = labctl("build", str(debian_tree), check=False)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("labctl:")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    assert "pacemaker-execd.c" in errors[0] and "error:" in errors[0], errors[0]
    assert set(_builds()) == builds

    # A second patch, deployed on the running lab: every node restarts on it.
    f.write_text(good)
    _patch(debian_tree, "labctl-e2e-2")
    s = labctl_json("deploy", lab)
    second = s["pacemaker_build"]  # type: ignore[index]
    assert second != first and second in _builds()
    for n in s["nodes"]:  # type: ignore[index]
        assert n["pacemaker"] in ("Online", "RemoteOnline"), n
        assert n["source"] == second.split("/")[1], n
        assert _executor_markers(lab, n["name"])[-1] == "labctl-e2e-2", n["name"]
    assert "maintenance-mode" not in s["properties"]  # type: ignore[index]

    labctl("down", lab)
    assert host_state() == before
    labctl("image", "rm", first)
    assert first not in _builds()


def test_a_vm_remote_node_boots_the_build_and_takes_a_deploy(labs, before, debian_tree):
    _patch(debian_tree, "labctl-e2e-vm-1")
    lab = labs.name()
    labctl(
        "up",
        "--nodes",
        "1",
        "--mode",
        "remote",
        "--backend",
        "vm",
        "--cluster-nodes",
        "1",
        "--pacemaker",
        str(debian_tree),
        "--name",
        lab,
    )
    vm = f"{lab}-r1"
    s = labctl_json("status", lab)
    build = s["pacemaker_build"]  # type: ignore[index]
    for n in s["nodes"]:  # type: ignore[index]
        assert n["source"] == build.split("/")[1], n
        assert _executor_markers(lab, n["name"])[-1] == "labctl-e2e-vm-1", n["name"]
    # The VM's disk was made with the build in it: a real kernel, Pacemaker's from the tree.
    assert "cloud" in labctl("ssh", lab, vm, "--", "uname", "-r").stdout

    _patch(debian_tree, "labctl-e2e-vm-2")
    s = labctl_json("deploy", lab)
    for n in s["nodes"]:  # type: ignore[index]
        assert n["pacemaker"] in ("Online", "RemoteOnline"), n
        assert n["source"] == s["pacemaker_build"].split("/")[1], n  # type: ignore[index]
        assert _executor_markers(lab, n["name"])[-1] == "labctl-e2e-vm-2", n["name"]

    labctl("down", lab)
    assert host_state() == before


def test_a_build_rolled_onto_a_distribution_lab_node_by_node_and_one_node_back(
    labs, before, debian_tree
):
    # The VM test's last patch: its build is there already when the module runs whole.
    _patch(debian_tree, "labctl-e2e-vm-2")
    out = labctl("build", str(debian_tree)).stdout
    build = out.split("build ", 1)[1].split(":", 1)[0]
    lab = labs.name()
    labctl("up", "--nodes", "2", "--resources", "2", "--name", lab)
    r = labctl_json("upgrade", lab, "--to", build, "--check")
    assert isinstance(r, dict) and r["to_image"] == build
    assert [(n["name"], n["from_image"]) for n in r["nodes"]] == [
        (f"{lab}-c1", "debian12"),
        (f"{lab}-c2", "debian12"),
    ]
    assert r["check"]["ok"], r["check"]
    s = labctl_json("status", lab)
    assert s["pacemaker_build"] == build  # type: ignore[index]
    for n in s["nodes"]:  # type: ignore[index]
        assert n["pacemaker"] == "Online" and n["source"] == build.split("/")[1], n
        assert _executor_markers(lab, n["name"])[-1] == "labctl-e2e-vm-2", n["name"]
    assert all(s["resources"].values()), s  # type: ignore[index]
    # The build is in use: it cannot be removed.
    proc = labctl("image", "rm", build, check=False)
    assert proc.returncode == 2 and lab in proc.stderr

    # One node back to the distribution's Pacemaker: each node's build is recorded,
    # the lab has none of its own, and the snapshot of `up` no longer fits c2.
    labctl("upgrade", lab, f"{lab}-c1", "--to", "debian12")
    record = json.loads((STATE_DIR / "labs" / lab / "lab.json").read_text())
    assert record["build"] is None
    assert record["node_builds"] == {f"{lab}-c1": "", f"{lab}-c2": build}
    s = labctl_json("status", lab)
    sources = {n["name"]: n["source"] for n in s["nodes"]}  # type: ignore[index]
    assert sources == {f"{lab}-c1": "distribution", f"{lab}-c2": build.split("/")[1]}
    proc = labctl("reset", lab, check=False)
    assert proc.returncode == 2 and f"other Pacemaker builds on {lab}-c2" in proc.stderr

    labctl("down", lab)
    assert host_state() == before
