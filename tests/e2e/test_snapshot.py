"""Snapshots of a real remote-mode lab (2 cluster nodes + 1 remote node, fencing on):
a resource added after a snapshot is gone once it is restored, `reset` goes back to
what `up` left, every node comes back online, nothing is fenced, and `down` leaves
nothing (also with a symbolic link planted among the snapshots). One lab for the
module, tests in order; it is always taken down."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import STATE_DIR, HostState, Labs, host_state, labctl, labctl_json


@dataclasses.dataclass(frozen=True)
class Lab:
    name: str
    nodes: dict[str, str]  # node -> role

    @property
    def c1(self) -> str:
        return f"{self.name}-c1"

    @property
    def dir(self) -> Path:
        return STATE_DIR / "labs" / self.name


def _of_lab(s: HostState, lab: str) -> HostState:
    """What of the host is named after LAB: other users' labs may come and go meanwhile."""
    return dataclasses.replace(
        s,
        **{
            f.name: frozenset(i for i in getattr(s, f.name) if lab in i)
            for f in dataclasses.fields(s)
        },
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    before = host_state()
    labs = Labs()
    name = labs.name()
    # Kept outside the lab, pointed at from inside its snapshots: `down` must not follow it.
    outside = tmp_path_factory.mktemp("outside")
    (outside / "keep").write_text("not the lab's")
    try:
        up = labctl_json("up", "--nodes", "1", "--mode", "remote", "--name", name)
        assert isinstance(up, dict)
        yield Lab(name, {n["name"]: n["role"] for n in up["nodes"]})
        (STATE_DIR / "labs" / name / "snapshots" / "elsewhere").symlink_to(outside)
    finally:
        labs.teardown()
    assert _of_lab(host_state(), name) == _of_lab(before, name)
    assert not (STATE_DIR / "labs" / name).exists()
    assert (outside / "keep").read_text() == "not the lab's"


def _add_dummy(lab: Lab, rsc: str) -> None:
    xml = f'<primitive id="{rsc}" class="ocf" provider="pacemaker" type="Dummy"/>'
    labctl("ssh", lab.name, lab.c1, "--", f"cibadmin --create --scope resources --xml-text '{xml}'")


def _resources(lab: Lab) -> str:
    return labctl("ssh", lab.name, lab.c1, "--", "cibadmin --query --scope resources").stdout


def _all_online(lab: Lab) -> None:
    s = labctl_json("status", lab.name)
    assert isinstance(s, dict)
    want = {"cluster": "Online", "remote": "RemoteOnline"}
    assert {n["name"]: n["pacemaker"] for n in s["nodes"]} == {
        n: want[r] for n, r in lab.nodes.items()
    }
    assert s["quorate"] is True


def _nothing_fenced(lab: Lab) -> None:
    out = labctl("ssh", lab.name, lab.c1, "--", "stonith_admin --history '*'").stdout
    assert "0 events" in out, out


def test_up_took_the_snapshot_reset_returns_to(lab):
    listed = labctl_json("snapshots", "list", lab.name)
    assert isinstance(listed, list)
    assert [s["name"] for s in listed] == ["up"]
    assert listed[0]["nodes"] == list(lab.nodes)


def test_restore_of_a_snapshot_removes_a_resource_added_after_it(lab):
    out = labctl("snapshot", lab.name, "s1").stdout
    assert "snapshot s1 taken" in out
    _add_dummy(lab, "after-s1")
    assert "after-s1" in _resources(lab)
    r = labctl_json("restore", lab.name, "s1")
    assert isinstance(r, dict)
    assert r["snapshot"] == "s1"
    assert "after-s1" not in _resources(lab)
    _all_online(lab)
    _nothing_fenced(lab)


def test_reset_goes_back_to_what_up_left(lab):
    _add_dummy(lab, "before-s2")
    labctl("snapshot", lab.name, "s2")  # a snapshot with a resource in it
    _add_dummy(lab, "after-s2")
    labctl("reset", lab.name)
    res = _resources(lab)
    assert "before-s2" not in res and "after-s2" not in res
    _all_online(lab)
    _nothing_fenced(lab)
    # ... and a snapshot taken later still has what it had.
    labctl("restore", lab.name, "s2")
    res = _resources(lab)
    assert "before-s2" in res and "after-s2" not in res
    _all_online(lab)


def test_snapshots_are_root_only(lab):
    base = lab.dir / "snapshots"
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    for snap in ("up", "s1", "s2"):
        assert stat.S_IMODE((base / snap).stat().st_mode) == 0o700
        assert stat.S_IMODE((base / snap / "authkey").stat().st_mode) == 0o600
    key = base / "up" / "nodes" / lab.c1 / "etc/ssh/ssh_host_ed25519_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.stat().st_uid == 0


def test_bad_and_unknown_snapshot_names_are_one_line_errors(lab):
    bad = labctl("snapshot", lab.name, "../x", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    taken = labctl("snapshot", lab.name, "s1", check=False)
    assert taken.returncode == 2 and "--replace" in taken.stderr
    unknown = labctl("restore", lab.name, "nope", check=False)
    assert unknown.returncode == 4 and unknown.stderr.count("\n") == 1, unknown.stderr
    assert "up, s1, s2" in unknown.stderr.replace("\n", "")


def test_a_snapshot_can_be_removed(lab):
    labctl("snapshots", "rm", lab.name, "s1")
    names = [s["name"] for s in json.loads(labctl("snapshots", "list", lab.name, "--json").stdout)]
    assert names == ["up", "s2"]
    assert sorted(os.listdir(lab.dir / "snapshots")) == ["s2", "up"]
