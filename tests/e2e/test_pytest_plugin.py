"""The pytest plugin on real labs: an inner pytest session (pytester, in a process of its
own) shares one lab between two tests, resets it for the second, and takes it down."""

from __future__ import annotations

import os

import pytest

from .conftest import STATE_DIR, host_state, labctl

INNER = """
import pytest

PARAMS = dict(nodes=1, mode="remote", fencing=False)


def test_first_leaves_a_mark(labctl_lab):
    lab = labctl_lab(**PARAMS)
    assert lab.run(lab.nodes[-1], "touch /root/left-by-test-1").ok
    assert lab.run(lab.nodes[-1], "test -e /root/left-by-test-1").ok


def test_same_parameters_share_the_lab(labctl_lab):
    lab = labctl_lab(**PARAMS)
    assert lab.run(lab.nodes[-1], "test -e /root/left-by-test-1").ok


@pytest.mark.labctl(reset=True)
def test_reset_gives_the_lab_as_up_left_it(labctl_lab):
    lab = labctl_lab(**PARAMS)
    assert lab.run(lab.nodes[-1], "test -e /root/left-by-test-1").status == 1
    view = lab.crm_mon()
    assert view.quorate and all(n.online for n in view.nodes.values())
"""


def test_the_plugin_shares_resets_and_takes_down_a_real_lab(pytester: pytest.Pytester, before):
    pytester.makepyfile(test_inner=INNER)
    prefix = os.environ.get("LABCTL_TEST_LAB_PREFIX", "t") + "pt"
    try:
        result = pytester.runpytest_subprocess("-v", f"--labctl-prefix={prefix}", timeout=900)
        result.assert_outcomes(passed=3)
        assert host_state() == before
    finally:
        # Should the plugin fail at its one job, the lab still goes.
        labs = STATE_DIR / "labs"
        for d in labs.iterdir() if labs.is_dir() else []:
            if d.name.startswith(prefix):
                labctl("down", d.name, check=False)
