"""Snapshots: names, what is copied where, what a restore checks, listing (no daemon)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from labctl import snapshot
from labctl.errors import LabctlError, NotFoundError, UsageError
from labctl.plan import make_plan
from labctl.safety import UnsafePathError
from labctl.spec import make_spec

STATE = Path("/var/lib/labctl")


def _plan(state: Path = STATE, mode: str = "remote", backend: str = "lxc"):
    return make_plan(make_spec("demo", 1, mode=mode, backend=backend), 3, state)


@pytest.mark.parametrize("name", ["s1", "before-upgrade", "A.b_c-9", "x" * 40, "20261126-224500"])
def test_snapshot_names_that_are_one_plain_component_are_accepted(name):
    assert snapshot.check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "a/b", "../x", "-x", "a b", "x" * 41, "é", "a\0b", "s1\n"]
)
def test_bad_snapshot_names_are_one_line_usage_errors(name):
    with pytest.raises(UsageError) as e:
        snapshot.check_name(name)
    assert "\n" not in str(e.value)
    assert "not valid" in str(e.value)


def test_the_up_snapshot_is_reserved_for_reset_but_can_be_named_to_restore_or_remove():
    with pytest.raises(UsageError, match="reset"):
        snapshot.check_name("up")
    assert snapshot.check_name("up", reserved_ok=True) == "up"


def test_a_snapshot_without_a_name_is_named_by_its_time_in_utc():
    when = dt.datetime(2026, 11, 26, 23, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    name = snapshot.default_name(when)
    assert name == "20261126-210405"
    assert snapshot.check_name(name) == name


def test_a_snapshot_copies_every_nodes_upper_dir_into_the_labs_directory():
    p = _plan()
    snap = snapshot.snapshot_dir(p, "s1")
    assert snap == STATE / "labs/demo/snapshots/s1"
    copies = snapshot.take_plan(p, snap)
    assert [(c.node, c.src, c.dst) for c in copies] == [
        (n.name, n.upper, snap / "nodes" / n.name) for n in p.nodes
    ]
    assert [c.node for c in copies] == ["demo-c1", "demo-c2", "demo-r1"]
    assert all(c.src == STATE / "labs/demo/nodes" / c.node / "upper" for c in copies)


def test_a_restore_stages_each_copy_beside_the_nodes_upper_dir():
    p = _plan()
    snap = snapshot.snapshot_dir(p, "s1")
    for c, n in zip(snapshot.restore_plan(p, snap), p.nodes, strict=True):
        assert c.src == snap / "nodes" / n.name
        assert c.dst == n.dir / "upper.new"
        assert c.dst.parent == n.upper.parent  # a rename, not a copy, swaps it in


def test_vm_remote_and_cluster_labs_can_be_snapshotted_but_vm_guests_are_refused_in_one_line():
    assert snapshot.unsupported(_plan()) == ""
    assert snapshot.unsupported(_plan(backend="vm")) == ""
    assert snapshot.unsupported(_plan(mode="cluster", backend="vm")) == ""
    assert snapshot.unsupported(_plan(mode="guest")) == ""  # container guests
    why = snapshot.unsupported(_plan(mode="guest", backend="vm"))
    assert "VM guest nodes (demo-g1)" in why and "transient" in why and "\n" not in why
    assert "not supported yet" not in why


def test_a_mixed_lab_copies_its_containers_and_checkpoints_its_vms():
    p = _plan(backend="vm")  # container cluster nodes, a VM remote node
    snap = snapshot.snapshot_dir(p, "s1")
    assert [c.node for c in snapshot.take_plan(p, snap)] == ["demo-c1", "demo-c2"]
    assert [c.node for c in snapshot.restore_plan(p, snap)] == ["demo-c1", "demo-c2"]
    assert snapshot.vm_snapshots(p, "s1") == {"demo-r1": "s1"}
    assert "'s1'" in snapshot.vm_snapshot_description(p, "s1")
    every_vm = _plan(mode="cluster", backend="vm")
    assert snapshot.take_plan(every_vm, snap) == []
    assert snapshot.vm_snapshots(every_vm, "up") == {"demo-c1": "up"}  # one node: _plan


def _snap(p, **kw):
    base = snapshot.Snapshot(
        name="s1",
        created="2026-11-26T22:00:00.000+00:00",
        nodes=tuple(n.name for n in p.nodes),
        build=None,
        node_images={n.name: n.image for n in p.nodes},
    )
    return dataclasses.replace(base, **kw)


def test_the_manifest_says_which_nodes_are_vms_and_their_libvirt_snapshot():
    p = _plan(backend="vm")
    s = _snap(p, vms={"demo-r1": "s1"})
    back = snapshot.parse_manifest(json.dumps(s.to_dict()), "s1")
    assert back.vms == {"demo-r1": "s1"}
    old = {k: v for k, v in s.to_dict().items() if k != "vms"}  # a container lab's, before
    assert snapshot.parse_manifest(json.dumps(old), "s1").vms == {}


def test_a_vm_snapshot_libvirt_no_longer_has_is_named_in_one_line():
    p = _plan(backend="vm")
    s = _snap(p, vms={"demo-r1": "s1"})
    assert snapshot.missing_vm_snapshots(s, p, {"demo-r1": ["up", "s1"]}) == ""
    why = snapshot.missing_vm_snapshots(s, p, {"demo-r1": ["up"]})
    assert "demo-r1 (s1)" in why and "snapshots rm demo s1" in why and "\n" not in why
    # A manifest without the VM (taken by hand-copying, or before it was a VM).
    assert "demo-r1 (none recorded)" in snapshot.missing_vm_snapshots(_snap(p), p, {})
    assert snapshot.missing_vm_snapshots(_snap(_plan()), _plan(), {}) == ""


def test_a_snapshot_of_the_lab_as_it_is_can_be_restored():
    p = _plan()
    assert snapshot.mismatch(_snap(p), p, None) == ""


def test_a_snapshot_over_other_lower_layers_is_refused():
    p = _plan()
    assert "deploy" in snapshot.mismatch(_snap(p), p, "debian12/pcmk-abc")
    assert "deploy" in snapshot.mismatch(_snap(p, build="debian12/pcmk-abc"), p, None)
    other = {n.name: "debian13" for n in p.nodes}
    assert "other images" in snapshot.mismatch(_snap(p, node_images=other), p, None)
    assert "nodes" in snapshot.mismatch(_snap(p, nodes=("demo-c1",)), p, None)


def test_manifest_round_trip_and_a_manifest_of_another_snapshot_is_refused():
    p = _plan()
    s = _snap(p, paused_s=0.04)
    text = json.dumps(s.to_dict())
    assert snapshot.parse_manifest(text, "s1") == s
    with pytest.raises(LabctlError, match="not usable"):
        snapshot.parse_manifest(text, "s2")
    with pytest.raises(LabctlError, match="not usable"):
        snapshot.parse_manifest("[]", "s1")


def test_an_unknown_snapshot_names_the_ones_there_are():
    msg = snapshot.missing_message("demo", "nope", ["up", "s1"])
    assert "nope" in msg and "up, s1" in msg and "\n" not in msg
    assert "none" in snapshot.missing_message("demo", "nope", [])


def _write(p, name: str, created: str) -> Path:
    d = snapshot.snapshot_dir(p, name)
    (d / "nodes").mkdir(parents=True)
    (d / "nodes" / "f").write_bytes(b"x" * 5000)
    s = _snap(p, name=name, created=created)
    (d / snapshot.MANIFEST).write_text(json.dumps(s.to_dict()))
    return d


def test_listing_is_oldest_first_and_skips_what_is_not_a_snapshot(tmp_path):
    p = _plan(tmp_path)
    _write(p, "late", "2026-11-26T23:00:00.000+00:00")
    _write(p, "up", "2026-11-26T22:00:00.000+00:00")
    base = snapshot.snapshots_dir(p)
    (base / ".new-x-1").mkdir()  # a copy cut short
    (base / "nomanifest").mkdir()
    (base / "link").symlink_to(base / "up")
    (base / "file").write_text("")
    listed = snapshot.list_snapshots(p)
    assert [s.name for s in listed] == ["up", "late"]
    assert all(s.size >= 5000 for s in listed)
    assert snapshot.find(p, "late").name == "late"
    with pytest.raises(NotFoundError, match="it has: up, late"):
        snapshot.find(p, "nope")


def test_a_lab_without_snapshots_lists_none(tmp_path):
    assert snapshot.list_snapshots(_plan(tmp_path)) == []


def test_a_symbolic_link_in_place_of_a_snapshot_is_never_followed(tmp_path):
    p = _plan(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    snapshot.snapshots_dir(p).mkdir(parents=True)
    (snapshot.snapshots_dir(p) / "s1").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        snapshot.remove_tree(snapshot.snapshots_dir(p), "s1", "snapshot directory")
    with pytest.raises(UnsafePathError):
        snapshot.read_snapshot(p, "s1")
    assert (outside / "keep").exists()


def test_removing_a_snapshot_leaves_the_others(tmp_path):
    p = _plan(tmp_path)
    _write(p, "a", "2026-11-26T22:00:00.000+00:00")
    _write(p, "b", "2026-11-26T23:00:00.000+00:00")
    snapshot.remove_tree(snapshot.snapshots_dir(p), "a", "snapshot directory")
    assert [s.name for s in snapshot.list_snapshots(p)] == ["b"]
    assert os.listdir(snapshot.snapshots_dir(p)) == ["b"]


def _cli(tmp_path: Path, *args: str):
    from typer.testing import CliRunner

    from labctl import cli

    return CliRunner().invoke(cli.app, [*args, "--state-dir", str(tmp_path)])


@pytest.mark.parametrize(
    "args",
    [("snapshot", "demo", "../x"), ("restore", "demo", "a/b"), ("snapshots", "rm", "demo", ".")],
)
def test_the_cli_refuses_a_bad_snapshot_name_in_one_line_before_anything_else(tmp_path, args):
    r = _cli(tmp_path, *args)
    assert r.exit_code == UsageError.exit_code, r.output
    assert r.output.count("\n") == 1 and "not valid" in r.output


def test_the_cli_says_there_is_no_such_lab_to_list_snapshots_of(tmp_path):
    r = _cli(tmp_path, "snapshots", "list", "demo")
    assert r.exit_code == NotFoundError.exit_code, r.output
    assert "no lab 'demo'" in r.output and r.output.count("\n") == 1


DATA = Path(__file__).resolve().parents[1] / "data"


def test_a_snapshot_records_the_nodes_online_and_a_restore_waits_for_those_only():
    from labctl import pacemaker as pcmk

    p = make_plan(make_spec("rm", 3, mode="remote"), 3, STATE)
    view = pcmk.parse_crm_mon((DATA / "crm_mon-remote-r2-stopped.xml").read_text())
    online = snapshot.online_nodes(view, p)
    assert online == ("rm-c1", "rm-c2", "rm-r1", "rm-r3")
    s = _snap(p, online=online)
    assert snapshot.expected_online(s, p) == {
        "rm-c1": "cluster",
        "rm-c2": "cluster",
        "rm-r1": "remote",
        "rm-r3": "remote",
    }
    # Unknown (the cluster did not answer when it was taken): `up`'s rule, every node.
    assert snapshot.expected_online(_snap(p), p) == {n.name: n.role for n in p.nodes}
    assert snapshot.parse_manifest(json.dumps(s.to_dict()), "s1").online == online


def test_the_cli_refuses_a_lab_with_vm_guests_in_one_line_and_lists_a_vm_remote_lab(tmp_path):
    from labctl import state

    p = _plan(tmp_path, mode="guest", backend="vm")
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    r = _cli(tmp_path, "snapshots", "list", "demo")
    assert r.exit_code == UsageError.exit_code, r.output
    assert "VM guest nodes" in r.output and r.output.count("\n") == 1
    p = make_plan(make_spec("vmr", 1, mode="remote", backend="vm"), 4, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    r = _cli(tmp_path, "snapshots", "list", "vmr")
    assert r.exit_code == 0, r.output


def test_a_restored_vms_clock_is_set_to_the_millisecond():
    from labctl import restore

    assert restore.set_clock_command(1764201600.12345) == "date -u -s @1764201600.123 >/dev/null"


def test_a_snapshot_of_other_builds_on_some_nodes_is_refused():
    # Part way through `upgrade --to BUILD`: the lab's build is None, c2's is not.
    build = "debian12/pcmk-abc"
    p = make_plan(make_spec("demo", 2), 1, Path("/s"), node_builds={"demo-c2": build})
    assert "demo-c2" in snapshot.mismatch(_snap(p), p, None)
    assert "upgrade" in snapshot.mismatch(_snap(p), p, None)
    taken = _snap(p, node_builds={"demo-c1": "", "demo-c2": build})
    assert snapshot.mismatch(taken, p, None) == ""
    back = snapshot.parse_manifest(json.dumps(taken.to_dict()), "s1")
    assert back.node_builds == taken.node_builds
    # Older manifests say it with BUILD alone, for every node.
    whole = make_plan(make_spec("demo", 2), 1, Path("/s"), build=build)
    assert snapshot.mismatch(_snap(whole, build=build), whole, build) == ""
