"""`labctl upgrade`: which nodes, which versions may roll, ids carried across images,
and the --check verdict from crm_mon samples (pure)."""

import json
import os
from pathlib import Path

import pytest

from labctl import state, upgrade
from labctl import upgrade_check as check
from labctl.errors import LabctlError, UsageError
from labctl.lab import pending_upgrade_note
from labctl.pacemaker import ClusterView, PcmkNode, PcmkResource
from labctl.plan import make_plan
from labctl.spec import make_spec

DUMMIES = ["dummy-1", "dummy-2"]


def _plan(nodes=3, mode="cluster", backend="lxc", image=None):
    return make_plan(make_spec("u", nodes, mode=mode, backend=backend, image=image), 1, Path("/s"))


# ---------------------------------------------------------------- plan


def test_every_cluster_node_in_order_by_default_and_named_ones_in_the_given_order():
    p = _plan()
    assert [n.name for n in upgrade.upgrade_targets(p, "debian13", [])] == [
        "u-c1",
        "u-c2",
        "u-c3",
    ]
    assert [n.name for n in upgrade.upgrade_targets(p, "debian13", ["u-c3", "u-c1"])] == [
        "u-c3",
        "u-c1",
    ]


def test_nodes_on_the_target_already_are_left_out_so_a_second_run_does_nothing():
    p = make_plan(make_spec("u", 3), 1, Path("/s"), {"u-c1": "debian13"})
    assert [n.name for n in upgrade.upgrade_targets(p, "debian13", [])] == ["u-c2", "u-c3"]
    done = make_plan(make_spec("u", 3, image="debian13"), 1, Path("/s"))
    assert upgrade.upgrade_targets(done, "debian13", []) == []


def test_remote_nodes_go_after_the_cluster_nodes_and_never_ahead_of_them():
    p = _plan(2, mode="remote")
    assert [n.name for n in upgrade.upgrade_targets(p, "debian13", [])] == [
        "u-c1",
        "u-c2",
        "u-r1",
        "u-r2",
    ]
    # Named remote nodes first: still after the cluster nodes.
    names = ["u-r2", "u-c1", "u-c2"]
    assert [n.name for n in upgrade.upgrade_targets(p, "debian13", names)] == [
        "u-c1",
        "u-c2",
        "u-r2",
    ]
    with pytest.raises(UsageError, match="upgrade the cluster nodes first") as e:
        upgrade.upgrade_targets(p, "debian13", ["u-c1", "u-r1"])
    assert "u-c2 would stay behind" in str(e.value)
    # Once the cluster is on the image, its remote nodes may follow one by one.
    done = make_plan(
        make_spec("u", 2, mode="remote", cluster_image="debian13", remote_image="debian12"),
        1,
        Path("/s"),
    )
    assert [n.name for n in upgrade.upgrade_targets(done, "debian13", ["u-r1"])] == ["u-r1"]


def test_guest_nodes_follow_the_cluster_and_vm_guests_are_refused_in_one_line():
    p = _plan(2, mode="guest")
    assert [n.name for n in upgrade.upgrade_targets(p, "debian13", [])] == [
        "u-c1",
        "u-c2",
        "u-g1",
        "u-g2",
    ]
    with pytest.raises(UsageError, match="remote and guest nodes go after the cluster nodes"):
        upgrade.upgrade_targets(p, "debian13", ["u-g1"])
    vm_guests = _plan(2, mode="guest", backend="vm")
    with pytest.raises(UsageError, match="u-g1 is a VM guest: upgrade does not take VM guests"):
        upgrade.upgrade_targets(vm_guests, "debian13", [])
    # Its container cluster nodes may still be named alone.
    assert [n.name for n in upgrade.upgrade_targets(vm_guests, "debian13", ["u-c1"])] == ["u-c1"]
    with pytest.raises(UsageError, match="has no node 'u-c9'"):
        upgrade.upgrade_targets(_plan(), "debian13", ["u-c9"])


def test_vm_cluster_and_vm_remote_nodes_are_upgraded_in_the_same_order_as_containers():
    every_vm = _plan(3, backend="vm")
    assert {n.backend for n in every_vm.nodes} == {"vm"}
    assert [n.name for n in upgrade.upgrade_targets(every_vm, "debian13", [])] == [
        "u-c1",
        "u-c2",
        "u-c3",
    ]
    remote = _plan(2, mode="remote", backend="vm")
    assert [(n.name, n.backend) for n in upgrade.upgrade_targets(remote, "debian13", [])] == [
        ("u-c1", "lxc"),
        ("u-c2", "lxc"),
        ("u-r1", "vm"),
        ("u-r2", "vm"),
    ]


@pytest.mark.parametrize(
    ("src", "dst"), [("2.1.5-1+deb12u1", "3.0.0-2"), ("2.0.0", "2.1.5"), ("3.0.0-2", "3.0.0-2")]
)
def test_rolling_upgrades_from_2_0_0_on_are_allowed(src, dst):
    upgrade.check_versions(src, dst)


@pytest.mark.parametrize(
    ("src", "dst", "why"),
    [
        ("1.1.24", "2.1.5", "older than 2.0.0"),
        ("3.0.0-2", "2.1.5-1", "rolling downgrade is not supported"),
        ("", "3.0.0", "cannot tell"),
    ],
)
def test_what_a_rolling_upgrade_does_not_allow_is_refused(src, dst, why):
    with pytest.raises(UsageError, match=why):
        upgrade.check_versions(src, dst)


def test_a_wholly_upgraded_lab_names_its_new_image_and_a_partial_one_keeps_its_spec():
    spec = make_spec("u", 2)
    assert upgrade.spec_after(spec, {"u-c1": "debian13", "u-c2": "debian12"}, "debian13") == spec
    after = upgrade.spec_after(spec, {"u-c1": "debian13", "u-c2": "debian13"}, "debian13")
    assert after.image == "debian13" and after.remote_image is None


def test_a_node_left_half_way_is_remembered_until_it_is_back(tmp_path):
    p = make_plan(make_spec("u", 3), 1, tmp_path)
    p.dir.mkdir(parents=True)
    assert upgrade.read_pending(p) is None
    pending = upgrade.Pending("u-c3", False, ("dummy-1", "fence-xvm"), "debian12")
    upgrade.write_pending(p, pending)
    assert upgrade.read_pending(p) == pending
    upgrade.write_pending(p, None)
    assert upgrade.read_pending(p) is None
    upgrade.pending_path(p).write_text("{not json")
    assert upgrade.read_pending(p) is None


def test_status_notes_an_upgrade_that_stopped_half_way(tmp_path):
    p = make_plan(make_spec("u", 3), 1, tmp_path, {"u-c2": "debian13"})
    p.dir.mkdir(parents=True)
    assert pending_upgrade_note(p, "u") == ""
    upgrade.write_pending(p, upgrade.Pending("u-c2", False, (), "debian12"))
    note = pending_upgrade_note(p, "u")
    assert note.startswith("an upgrade stopped at u-c2 (its root: debian13)")
    assert "`labctl upgrade u --to IMAGE`" in note


# ---------------------------------------------------------------- ids across images

OLD_PASSWD = "root:x:0:0::/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"
OLD_PASSWD += "hacluster:x:101:102::/var/lib/pacemaker:/usr/sbin/nologin\n"
NEW_PASSWD = "root:x:0:0::/root:/bin/sh\nhacluster:x:100:102::/var/lib/pacemaker:/x\n"
NEW_PASSWD += "sshd:x:997:65534:sshd user:/run/sshd:/usr/sbin/nologin\nnew:x:5:5::/:/x\n"


def test_ids_follow_names_from_the_old_image_to_the_new_one():
    m = upgrade.id_map(upgrade.parse_ids(OLD_PASSWD), upgrade.parse_ids(NEW_PASSWD))
    # debian12's hacluster (101) is debian13's 100, whose 100 was sshd: a swap, not a chain.
    assert m == {101: 100, 100: 997}


def test_remap_owners_changes_only_mapped_ids_and_never_follows_links(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    (tmp_path / "d").mkdir()
    f = tmp_path / "d" / "cib.xml"
    f.write_text("x")
    os.chown(f, 101, 102)
    os.chown(tmp_path / "d", 101, 102)
    keep = tmp_path / "keep"
    keep.write_text("y")
    os.chown(keep, 0, 0)
    (tmp_path / "link").symlink_to(keep)
    os.lchown(tmp_path / "link", 101, 0)
    n = upgrade.remap_owners(tmp_path, {101: 100, 100: 997}, {})
    assert n == 3
    assert (f.stat().st_uid, f.stat().st_gid) == (100, 102)
    assert (tmp_path / "d").stat().st_uid == 100
    assert keep.stat().st_uid == 0 and os.lstat(tmp_path / "link").st_uid == 100
    assert upgrade.remap_owners(tmp_path, {}, {}) == 0


# ---------------------------------------------------------------- the check


def _view(dc="u-c1", quorate=True, started=DUMMIES, unclean=()):
    res = {
        r: PcmkResource(r, "ocf:pacemaker:Dummy", "Started", r in started, False, ("u-c2",))
        for r in DUMMIES
    }
    nodes = {n: PcmkNode(n, "member", True, unclean=n in unclean) for n in ("u-c1", "u-c2")}
    return ClusterView(dc, quorate, nodes, res)


def _samples(*views, step=1.0, upgrading="u-c3"):
    return [check.sample_of(i * step, "u-c1", v, DUMMIES, upgrading) for i, v in enumerate(views)]


def test_a_quiet_upgrade_passes():
    r = check.analyse(_samples(_view(), _view(), _view()), DUMMIES)
    assert r.ok and r.quorum_kept and r.findings == []
    assert r.longest_down == {"dummy-1": 0.0, "dummy-2": 0.0}
    assert r.dc_changes == [] and r.fenced == [] and r.samples == 3


def test_a_resource_seen_down_counts_from_its_first_down_sample_to_its_first_up_one():
    views = [_view(), _view(started=["dummy-2"]), _view(started=["dummy-2"]), _view()]
    r = check.analyse(_samples(*views), DUMMIES, bound=10)
    assert r.longest_down == {"dummy-1": 2.0, "dummy-2": 0.0}
    assert [(o.resource, o.start, o.seconds, o.during) for o in r.outages] == [
        ("dummy-1", 1.0, 2.0, "u-c3")
    ]
    assert r.ok
    tight = check.analyse(_samples(*views), DUMMIES, bound=1)
    assert tight.findings == ["dummy-1 was down 2.0 s (bound 1 s), while u-c3 was upgraded"]


def test_a_resource_still_down_at_the_end_counts_until_the_last_sample():
    views = [_view(), _view(started=[]), _view(started=["dummy-2"])]
    r = check.analyse(_samples(*views, step=20), DUMMIES)
    assert r.longest_down == {"dummy-1": 20.0, "dummy-2": 20.0}
    # Samples 20 s apart are silences too: nothing is known of the time between.
    assert not r.ok and [f.split(" was down")[0] for f in r.findings[:2]] == DUMMIES
    assert r.findings[2:] == [
        "crm_mon did not answer from 0.0 s to 20.0 s",
        "crm_mon did not answer from 20.0 s to 40.0 s",
    ]


def test_lost_quorum_is_a_finding_and_an_election_without_dc_is_not():
    views = [_view(), _view(dc=None, quorate=False), _view(dc="u-c2"), _view(quorate=False)]
    r = check.analyse(_samples(*views), DUMMIES)
    assert not r.quorum_kept and r.no_quorum_at == [3.0]
    assert r.findings == ["quorum lost: 1 sample(s) without quorum, first at 3.0 s"]
    assert [(d.t, d.old, d.new) for d in r.dc_changes] == [
        (1.0, "u-c1", ""),
        (2.0, "", "u-c2"),
        (3.0, "u-c2", "u-c1"),
    ]
    assert r.no_dc_seconds == 1.0


FENCE_XML = """<pacemaker-result api-version="2.25" request="stonith_admin --history *">
  <list name="fencing history" count="1">
    <fence_event status="success" action="reboot" target="u-c2" client="stonith_admin"
      origin="u-c1" completed="2026-11-26 22:00:00Z"/>
  </list>
  <status code="0" message="OK"/>
</pacemaker-result>"""


def test_a_fence_during_the_upgrade_and_a_domain_restarted_behind_its_back_are_findings():
    before = check.parse_fence_history(FENCE_XML.replace("22:00:00", "21:00:00"))
    after = [*before, *check.parse_fence_history(FENCE_XML)]
    assert after[1] == check.FenceEvent("u-c2", "reboot", "success", "2026-11-26 22:00:00Z", "u-c1")
    r = check.analyse(_samples(_view()), DUMMIES, before, after, ["u-c2"])
    assert [f.target for f in r.fenced] == ["u-c2"]
    assert r.findings == [
        "u-c2 was fenced (reboot, success, asked by u-c1)",
        "u-c2's domain was restarted by something other than the upgrade",
    ]
    assert check.analyse(_samples(_view()), DUMMIES, before, before).fenced == []


def test_unclean_nodes_silences_and_no_answer_at_all_are_findings():
    samples = [
        *_samples(_view(unclean=("u-c2",))),
        check.Sample(3.0, "u-c1", answered=False, error="lost"),
        check.Sample(8.0, "u-c1", answered=False, error="lost"),
        check.sample_of(9.0, "u-c1", _view(), DUMMIES),
    ]
    r = check.analyse(samples, DUMMIES)
    assert r.unanswered == 2 and r.unclean == ["u-c2"]
    assert r.findings == [
        "crm_mon saw unclean node(s): u-c2",
        "crm_mon did not answer from 0.0 s to 9.0 s",
    ]
    none = check.analyse([check.Sample(0.0, "u-c1", answered=False)], DUMMIES)
    assert not none.ok and not none.quorum_kept
    assert none.findings[0] == "crm_mon never answered: nothing was observed"


def test_the_json_form_holds_the_verdict_and_every_measure():
    d = check.analyse(_samples(_view(), _view()), DUMMIES).to_dict()
    assert d["ok"] and d["quorum_kept"] and d["longest_down"] == {"dummy-1": 0.0, "dummy-2": 0.0}
    assert set(d) >= {"fenced", "dc_changes", "outages", "findings", "samples", "bound"}


# ---------------------------------------------------------------- to a build

BUILD = "debian12/pcmk-2.1.5-abc"


def test_a_build_over_the_same_image_is_a_target_of_its_own():
    p = _plan()
    assert [n.name for n in upgrade.upgrade_targets(p, "debian12", [], BUILD)] == [
        "u-c1",
        "u-c2",
        "u-c3",
    ]
    assert upgrade.upgrade_targets(p, "debian12", []) == []  # the image: there already
    part = make_plan(make_spec("u", 3), 1, Path("/s"), node_builds={"u-c1": BUILD})
    assert [n.name for n in upgrade.upgrade_targets(part, "debian12", [], BUILD)] == [
        "u-c2",
        "u-c3",
    ]
    # ... and back to the image, from the node that runs the build
    assert [n.name for n in upgrade.upgrade_targets(part, "debian12", [])] == ["u-c1"]


def test_a_record_keeps_each_nodes_build_only_while_they_differ(tmp_path):
    spec = make_spec("u", 2)
    p = make_plan(spec, 1, tmp_path)
    p.dir.mkdir(parents=True)
    rec = state.write_record(p, "up", node_builds={"u-c1": BUILD, "u-c2": ""})
    assert (rec.build, rec.node_builds) == (None, {"u-c1": BUILD, "u-c2": ""})
    back = state.read_record(tmp_path, "u")
    assert back is not None and back.plan(tmp_path).node("u-c1").build == BUILD
    assert back.plan(tmp_path).node("u-c2").build == ""
    rec = state.write_record(p, "up", node_builds={"u-c1": BUILD, "u-c2": BUILD})
    assert (rec.build, rec.node_builds) == (BUILD, {})  # all on it: the lab's build
    rec = state.write_record(p, "up", node_builds={"u-c1": "", "u-c2": ""})
    assert (rec.build, rec.node_builds) == (None, {})
    assert state.common_build({"a": BUILD, "b": ""}) is None


@pytest.mark.parametrize("label", ["../x/y", "debian12/../../etc", "debian12", "a/b/c"])
def test_a_record_naming_a_build_that_is_no_label_is_not_used(tmp_path, label):
    p = make_plan(make_spec("u", 2), 1, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    data = json.loads(p.record.read_text())
    data["node_builds"] = {"u-c1": label}
    p.record.write_text(json.dumps(data))
    with pytest.raises(LabctlError, match="names build"):
        state.read_record(tmp_path, "u")
