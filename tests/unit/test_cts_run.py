from pathlib import Path

import pytest

from labctl import cts, cts_run
from labctl.cts_tests import NotApplicable
from labctl.errors import UsageError
from labctl.plan import make_plan
from labctl.spec import make_spec


def _plan(n: int = 3):
    return make_plan(make_spec("demo", n), 1, Path("/s"))


def test_cts_test_ips_are_free_lab_addresses():
    assert cts_run.test_ip_base(_plan()) == "10.213.1.200"


def test_a_lab_with_one_cluster_node_is_refused():
    with pytest.raises(UsageError, match="at least 2"):
        cts_run.check_lab(_plan(1))
    cts_run.check_lab(_plan(2))


def test_tree_version_is_read_from_the_configured_header(tmp_path):
    assert cts_run.tree_version(tmp_path) is None
    (tmp_path / "include").mkdir()
    (tmp_path / "include/config.h").write_text('/* x */\n#define PACEMAKER_VERSION "2.1.5"\n')
    assert cts_run.tree_version(tmp_path) == "2.1.5"


def _run(na):
    summary = cts.parse_summary("")
    return cts_run.CtsRun("demo", "2.1.5", "/src", ["cts"], "/o", 0, summary, na)


def test_to_dict_lists_the_not_applicable_tests_with_why():
    d = _run((NotApplicable("Stonithd", "needs fencing"),)).to_dict()
    assert d["not_applicable"] == [{"test": "Stonithd", "why": "needs fencing"}]
    assert _run(()).to_dict()["not_applicable"] == []
    assert _run(None).to_dict()["not_applicable"] is None


def test_a_node_powered_off_past_the_limit_is_the_reason_to_stop_cts():
    w = cts_run.PoweredOff(limit=180)
    assert w.seen(0, {"a-c1": True, "a-c2": True, "a-c3": True}) is None
    assert w.seen(10, {"a-c1": True, "a-c2": True, "a-c3": False}) is None  # fenced: off
    assert w.seen(100, {"a-c1": True, "a-c2": True, "a-c3": False}) is None
    why = w.seen(190, {"a-c1": True, "a-c2": True, "a-c3": False})
    assert why is not None and why.startswith("a-c3 stayed powered off for 180 s")


def test_a_node_back_on_starts_its_count_again():
    w = cts_run.PoweredOff(limit=180)
    w.seen(0, {"a-c3": False})
    w.seen(30, {"a-c3": True})  # the reboot's "on"
    assert w.seen(100, {"a-c3": False}) is None  # fenced again: counted from here
    assert w.seen(279, {"a-c3": False}) is None
    assert w.seen(280, {"a-c3": False}) is not None
