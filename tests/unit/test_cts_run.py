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
