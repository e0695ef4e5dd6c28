"""Snapshots of a real lab with a VM node (1 container cluster node + 1 VM remote node,
fencing on): `up` takes the `up` checkpoint of the VM too; a resource and a file on the
VM added after a snapshot are gone once it is restored, `reset` goes back to what `up`
left, every node comes back online, nothing is fenced, the VM's clock is right again;
a VM checkpoint removed behind labctl's back is a one-line error; `snapshots rm` and
`down` leave no libvirt snapshot and nothing else. One lab for the module (VMs are slow
under TCG), tests in order; it is always taken down."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

import labctl

from .conftest import STATE_DIR, HostState, Labs, host_state, labctl_json
from .conftest import labctl as run

# Where libvirt's QEMU driver keeps snapshot metadata (scripts/setup-host's libvirtd).
SNAPSHOT_METADATA = Path("/var/lib/libvirt/qemu/snapshot")


@dataclasses.dataclass(frozen=True)
class Lab:
    name: str
    nodes: dict[str, str]  # node -> role

    @property
    def c1(self) -> str:
        return f"{self.name}-c1"

    @property
    def r1(self) -> str:
        return f"{self.name}-r1"


def _of_lab(s: HostState, lab: str) -> HostState:
    """What of the host is named after LAB: other users' labs may come and go meanwhile."""
    return dataclasses.replace(
        s,
        **{
            f.name: frozenset(i for i in getattr(s, f.name) if lab in i)
            for f in dataclasses.fields(s)
        },
    )


def _vm_snapshots(dom: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return sorted(s.getName() for s in conn.lookupByName(dom).listAllSnapshots())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    before = host_state()
    labs = Labs()
    name = labs.name()
    try:
        up = labctl_json(
            "up",
            *("--nodes", "1", "--mode", "remote", "--backend", "vm", "--cluster-nodes", "1"),
            *("--name", name),
        )
        assert isinstance(up, dict)
        yield Lab(name, {n["name"]: n["role"] for n in up["nodes"]})
    finally:
        labs.teardown()
    assert _of_lab(host_state(), name) == _of_lab(before, name)
    assert not (STATE_DIR / "labs" / name).exists()
    assert not (SNAPSHOT_METADATA / f"{name}-r1").exists()


def _ssh(lab: Lab, node: str, command: str) -> str:
    return run("ssh", lab.name, node, "--", command).stdout


def _add_dummy(lab: Lab, rsc: str) -> None:
    xml = f'<primitive id="{rsc}" class="ocf" provider="pacemaker" type="Dummy"/>'
    _ssh(lab, lab.c1, f"cibadmin --create --scope resources --xml-text '{xml}'")
    _ssh(lab, lab.r1, f"touch /root/{rsc}")


def _has(lab: Lab, rsc: str) -> tuple[bool, bool]:
    """Whether the CIB has resource RSC, and the VM the file of that name."""
    cib = _ssh(lab, lab.c1, "cibadmin --query --scope resources")
    files = _ssh(lab, lab.r1, "ls /root").split()
    return f'id="{rsc}"' in cib, rsc in files


def _all_online(lab: Lab) -> None:
    s = labctl_json("status", lab.name)
    assert isinstance(s, dict)
    want = {"cluster": "Online", "remote": "RemoteOnline"}
    assert {n["name"]: n["pacemaker"] for n in s["nodes"]} == {
        n: want[r] for n, r in lab.nodes.items()
    }


def _nothing_fenced(lab: Lab) -> None:
    out = _ssh(lab, lab.c1, "stonith_admin --history '*'")
    assert "0 events" in out, out


def _clock_right(lab: Lab) -> None:
    # The checkpoint's clock is minutes old by now; an SSH round trip under TCG is
    # a few seconds.
    vm = float(_ssh(lab, lab.r1, "date +%s.%N"))
    assert abs(vm - time.time()) < 10


def test_up_took_the_up_snapshot_of_the_vm_too(lab):
    listed = labctl_json("snapshots", "list", lab.name)
    assert isinstance(listed, list)
    assert [s["name"] for s in listed] == ["up"]
    assert listed[0]["vms"] == {lab.r1: "up"}
    assert _vm_snapshots(lab.r1) == ["up"]


def test_restore_of_a_snapshot_removes_what_was_added_after_it(lab):
    out = run("snapshot", lab.name, "s1").stdout
    assert "snapshot s1 taken" in out
    assert _vm_snapshots(lab.r1) == ["s1", "up"]
    _add_dummy(lab, "after-s1")
    assert _has(lab, "after-s1") == (True, True)
    time.sleep(20)  # so that a clock left at the checkpoint would show
    r = labctl_json("restore", lab.name, "s1")
    assert isinstance(r, dict) and r["snapshot"] == "s1"
    assert _has(lab, "after-s1") == (False, False)
    _all_online(lab)
    _nothing_fenced(lab)
    _clock_right(lab)


def test_reset_through_the_api_goes_back_to_what_up_left(lab):
    _add_dummy(lab, "before-reset")
    r = labctl.Lab(lab.name, state_dir=STATE_DIR).reset()
    assert r.snapshot == "up"
    assert set(r.nodes.values()) == {"Online", "RemoteOnline"}
    assert _has(lab, "before-reset") == (False, False)
    _all_online(lab)
    _nothing_fenced(lab)
    _clock_right(lab)


def test_a_vm_checkpoint_removed_behind_labctls_back_is_a_one_line_error(lab):
    run("snapshot", lab.name, "gone")
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByName(lab.r1)
        dom.snapshotLookupByName("gone").delete(0)
    finally:
        conn.close()
    r = run("restore", lab.name, "gone", check=False)
    assert r.returncode == 4 and r.stderr.count("\n") == 1, r.stderr
    assert f"no snapshot of VM {lab.r1} (gone)" in r.stderr
    run("snapshots", "rm", lab.name, "gone")  # still removable


def test_snapshots_rm_removes_the_vms_checkpoint(lab):
    run("snapshots", "rm", lab.name, "s1")
    assert [s["name"] for s in labctl_json("snapshots", "list", lab.name)] == ["up"]  # type: ignore[index]
    assert _vm_snapshots(lab.r1) == ["up"]
