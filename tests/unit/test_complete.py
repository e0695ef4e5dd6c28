"""Shell completion of lab and node names: from the records, quiet on anything odd."""

from __future__ import annotations

import os
import subprocess
import sys

from labctl import complete, state
from labctl.plan import make_plan
from labctl.spec import make_spec


def _lab(state_dir, name, nodes=1, mode="remote"):
    p = make_plan(make_spec(name, nodes, mode=mode), 1, state_dir)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")


def test_lab_names_are_the_recorded_labs_matching_what_is_typed(tmp_path):
    _lab(tmp_path, "alpha")
    _lab(tmp_path, "beta")
    (state.labs_dir(tmp_path) / "half-made").mkdir()  # no record: not offered
    (state.labs_dir(tmp_path) / "bad name").mkdir()
    assert complete.lab_names(tmp_path, "") == ["alpha", "beta"]
    assert complete.lab_names(tmp_path, "b") == ["beta"]
    assert complete.lab_names(tmp_path / "nowhere", "") == []


def test_node_names_are_the_labs_nodes_in_order(tmp_path):
    _lab(tmp_path, "alpha")
    assert complete.node_names(tmp_path, "alpha", "") == ["alpha-c1", "alpha-c2", "alpha-r1"]
    assert complete.node_names(tmp_path, "alpha", "alpha-r") == ["alpha-r1"]


def test_node_names_of_no_lab_a_missing_one_or_a_broken_record_are_none(tmp_path):
    _lab(tmp_path, "alpha")
    (state.labs_dir(tmp_path) / "alpha" / "lab.json").write_text('{"spec": {"name": "other"}}')
    assert complete.node_names(tmp_path, "alpha", "") == []
    assert complete.node_names(tmp_path, "missing", "") == []
    assert complete.node_names(tmp_path, None, "") == []
    assert complete.node_names(tmp_path, "../etc", "") == []


def test_the_shell_asks_the_cli_and_gets_node_names(tmp_path):
    # What bash's completion function runs: the CLI with typer's completion variables.
    _lab(tmp_path, "alpha")
    env = {
        **os.environ,
        "_LABCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": f"labctl ssh --state-dir {tmp_path} alpha alpha-c",
        "COMP_CWORD": "5",
    }
    code = "import sys; from labctl.cli import app; sys.argv[0] = 'labctl'; app(prog_name='labctl')"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.stdout.split() == ["alpha-c1", "alpha-c2"], r.stderr
