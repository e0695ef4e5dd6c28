"""Mixed-version labs: per-role images in the spec, per-node images in the plan and the
lab record, and what `status` says of versions and feature sets."""

import json
from pathlib import Path

import pytest

from labctl import pacemaker as pcmk
from labctl import state
from labctl.errors import LabctlError, UsageError
from labctl.lab import NodeStatus, is_mixed, mixed_note, pacemaker_disagreement
from labctl.plan import make_plan
from labctl.spec import DEFAULT_IMAGE, make_spec

DATA = Path(__file__).parent.parent / "data"


def test_image_sets_both_roles_and_a_lab_of_one_image_is_not_mixed():
    spec = make_spec("m", 2, mode="remote", image="debian13")
    assert (spec.image, spec.remote_image) == ("debian13", None)
    assert spec.images == ("debian13",)
    p = make_plan(spec, 1, Path("/s"))
    assert {n.image for n in p.nodes} == {"debian13"} and not p.mixed


def test_default_image_when_no_image_option_is_given():
    spec = make_spec("m", 3)
    assert spec.image == DEFAULT_IMAGE and spec.remote_image is None


def test_cluster_and_remote_images_give_each_node_its_role_image():
    spec = make_spec("m", 2, mode="remote", cluster_image="debian12", remote_image="debian13")
    assert spec.images == ("debian12", "debian13")
    p = make_plan(spec, 1, Path("/s"))
    assert [(n.name, n.image) for n in p.nodes] == [
        ("m-c1", "debian12"),
        ("m-c2", "debian12"),
        ("m-r1", "debian13"),
        ("m-r2", "debian13"),
    ]
    assert p.mixed and p.images == ("debian12", "debian13")


def test_guest_nodes_take_the_remote_image_and_the_other_way_round_works_too():
    spec = make_spec("m", 1, mode="guest", cluster_image="debian13", remote_image="debian12")
    p = make_plan(spec, 1, Path("/s"))
    assert {n.role: n.image for n in p.nodes} == {"cluster": "debian13", "guest": "debian12"}


def test_one_role_image_overrides_image_for_that_role_only():
    spec = make_spec("m", 1, mode="remote", cluster_image="debian13")
    assert (spec.image, spec.remote_image) == ("debian13", DEFAULT_IMAGE)
    spec = make_spec("m", 1, mode="remote", image="debian13", remote_image="debian12")
    assert (spec.image, spec.remote_image) == ("debian13", "debian12")
    spec = make_spec("m", 1, mode="remote", image="debian13", cluster_image="debian12")
    assert (spec.image, spec.remote_image) == ("debian12", "debian13")


def test_the_same_image_for_both_roles_is_not_a_mixed_lab():
    spec = make_spec("m", 1, mode="remote", cluster_image="debian13", remote_image="debian13")
    assert spec.remote_image is None and spec.images == ("debian13",)


def test_cluster_image_in_cluster_mode_is_every_node_s_image():
    spec = make_spec("m", 3, cluster_image="debian13")
    assert spec.images == ("debian13",)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        (dict(mode="cluster", remote_image="debian13"), "cluster-mode lab has none"),
        (
            dict(mode="remote", image="debian12", cluster_image="a", remote_image="b"),
            "not all three",
        ),
        (dict(mode="remote", remote_image="/tmp/x.qcow2"), "built image's name"),
        (dict(mode="remote", cluster_image="https://e.invalid/x.qcow2"), "built image's name"),
        (
            dict(mode="remote", backend="vm", image="/tmp/x.qcow2", remote_image="debian13"),
            "cloud image",
        ),
    ],
)
def test_role_images_that_make_no_sense_are_one_line_errors(kwargs, says):
    with pytest.raises(UsageError, match=says) as e:
        make_spec("m", 1, **kwargs)
    assert "\n" not in str(e.value)


def test_a_pacemaker_build_goes_with_one_image_not_with_a_mixed_lab(tmp_path):
    (tmp_path / "configure.ac").write_text("")
    spec = make_spec("m", 1, cluster_image="debian13", pacemaker=str(tmp_path))
    assert spec.images == ("debian13",) and spec.pacemaker == str(tmp_path)
    # One role's image over the default image makes a mixed lab: refused too.
    with pytest.raises(UsageError, match="one build on every node"):
        make_spec("m", 1, mode="remote", cluster_image="debian13", pacemaker=str(tmp_path))
    with pytest.raises(UsageError, match="one build on every node") as e:
        make_spec(
            "m",
            1,
            mode="remote",
            cluster_image="debian12",
            remote_image="debian13",
            pacemaker=str(tmp_path),
        )
    assert "\n" not in str(e.value)


def test_the_lab_record_keeps_each_node_s_image(tmp_path):
    spec = make_spec("m", 2, mode="remote", cluster_image="debian12", remote_image="debian13")
    p = make_plan(spec, 3, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    data = json.loads(p.record.read_text())
    assert data["node_images"] == {
        "m-c1": "debian12",
        "m-c2": "debian12",
        "m-r1": "debian13",
        "m-r2": "debian13",
    }
    rec = state.read_record(tmp_path, "m")
    assert rec is not None and rec.plan(tmp_path) == p
    # A node's image in the record wins over its role's (a node upgraded on its own).
    data["node_images"]["m-r2"] = "debian12"
    p.record.write_text(json.dumps(data))
    rec = state.read_record(tmp_path, "m")
    assert rec is not None
    assert [n.image for n in rec.plan(tmp_path).nodes][-1] == "debian12"


def test_a_record_of_before_mixed_labs_reads_as_one_image(tmp_path):
    p = make_plan(make_spec("m", 2), 3, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    data = json.loads(p.record.read_text())
    del data["node_images"], data["spec"]["remote_image"]
    p.record.write_text(json.dumps(data))
    rec = state.read_record(tmp_path, "m")
    assert rec is not None and {n.image for n in rec.plan(tmp_path).nodes} == {DEFAULT_IMAGE}


@pytest.mark.parametrize("bad", ["../../etc", "a/b", ""])
def test_a_record_naming_an_unusable_node_image_is_refused(tmp_path, bad):
    p = make_plan(make_spec("m", 1, mode="remote"), 3, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    data = json.loads(p.record.read_text())
    data["node_images"]["m-r1"] = bad
    p.record.write_text(json.dumps(data))
    with pytest.raises(LabctlError, match="names image"):
        state.read_record(tmp_path, "m")


def _node(name: str, version: str, role: str = "cluster") -> NodeStatus:
    return NodeStatus(name, role, "", "running", version=version, build="b", source="distribution")


def test_a_lab_is_mixed_when_its_nodes_say_different_versions():
    nodes = [_node("m-c1", "2.1.5"), _node("m-c2", "2.1.5"), _node("m-r1", "3.0.0", "remote")]
    assert is_mixed(nodes, crm_mon_mixed=False)
    assert mixed_note(nodes) == (
        "mixed-version lab: Pacemaker 2.1.5 on m-c1, m-c2; Pacemaker 3.0.0 on m-r1"
    )
    same = [_node("m-c1", "2.1.5"), _node("m-r1", "", "remote")]  # one did not answer
    assert not is_mixed(same, crm_mon_mixed=False)
    assert pacemaker_disagreement(same) == ""
    assert is_mixed(same, crm_mon_mixed=True)  # crm_mon's word counts too


def test_crm_mon_gives_each_cluster_node_s_feature_set_and_the_dc_s_version():
    view = pcmk.parse_crm_mon((DATA / "crm_mon-remote-r2-stopped.xml").read_text())
    assert view.nodes["rm-c1"].feature_set == "3.16.1"
    assert view.nodes["rm-r1"].feature_set == ""  # 2.1.5's crm_mon shows none for remotes
    assert view.dc_version.startswith("2.1.5") and not view.mixed_version


@pytest.mark.parametrize(
    "args",
    [
        ["--mode", "cluster", "--remote-image", "debian13"],
        ["--mode", "remote", "--remote-image", "debian13", "--pacemaker", "."],
        ["--mode", "remote", "--remote-image", "no-such-image"],
    ],
)
def test_up_with_role_images_that_make_no_sense_fails_in_one_line_having_made_nothing(
    tmp_path, monkeypatch, args
):
    from typer.testing import CliRunner

    from labctl import cli, lab

    monkeypatch.setattr(lab.host, "require_root", lambda *_a: None)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "configure.ac").write_text("")
    monkeypatch.chdir(tmp_path / "tree")
    state_dir = tmp_path / "state"
    r = CliRunner().invoke(
        cli.app, ["up", "--name", "mx", *args, "--nodes", "1", "--state-dir", str(state_dir)]
    )
    assert r.exit_code != 0
    assert r.output.count("\n") == 1 and r.output.startswith("labctl: "), r.output
    assert not state_dir.exists()


@pytest.mark.parametrize(
    ("data", "cluster", "dc", "feature_set"),
    [
        ("crm_mon-mixed-remote-2.1.5-3.0.0.xml", "mmix1", "2.1.5", "3.16.1"),
        ("crm_mon-mixed-remote-3.0.0-2.1.5.xml", "mmix2", "3.0.0", "3.20.0"),
    ],
)
def test_crm_mon_of_a_mixed_remote_lab_shows_feature_sets_of_cluster_nodes_only(
    data, cluster, dc, feature_set
):
    # Real crm_mon output of labs with 2 cluster nodes on one version and 2 remote
    # nodes on the other: neither version's crm_mon knows a remote node's feature set,
    # and mixed_version compares cluster nodes only.
    view = pcmk.parse_crm_mon((DATA / data).read_text())
    assert {n: v.feature_set for n, v in view.nodes.items()} == {
        f"{cluster}-c1": feature_set,
        f"{cluster}-c2": feature_set,
        f"{cluster}-r1": "",
        f"{cluster}-r2": "",
    }
    assert view.dc_version.startswith(dc) and not view.mixed_version
    assert {v.state for v in view.nodes.values()} == {"Online", "RemoteOnline"}
