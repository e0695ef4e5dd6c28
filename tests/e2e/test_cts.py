"""Pacemaker's own Cluster Test Suite against a real lab, with real fencing.

Two iterations: each one more adds about three minutes to CI."""

from __future__ import annotations

import json

from .conftest import STATE_DIR, host_state, labctl, xfail_if_fencing_left_a_node_off


def test_cts_two_iterations_pass_on_a_three_node_lab_and_down_leaves_nothing(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "3", "--mode", "cluster", "--name", lab)

    # The OpenSSH block a user can Include: the lab's key and pinned host keys.
    cfg = labctl("ssh-config", lab).stdout
    assert f"Host {lab}-c1 {lab}-c2 {lab}-c3" in cfg
    assert "StrictHostKeyChecking yes" in cfg

    proc = labctl("cts", lab, "--json", "--", "2", check=False, timeout=3000)
    xfail_if_fencing_left_a_node_off(lab, proc)
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    summary = result["summary"]
    assert summary["found"] and summary["completed"], proc.stderr[-3000:]
    assert summary["requested"] == 2
    assert result["command"][-1] == "2"
    assert "--stonith-type" in result["command"]  # the 2.1.x dialect, with real fencing
    assert (STATE_DIR / "labs" / lab / "cts").is_dir()
    # CTS's own --list-tests answered, and with pacemaker-remoted on every cluster
    # node of 3, fencing on, none of its Remote* tests is left out (but RemoteLXC,
    # a container test that needs --container-tests and is not a RemoteDriver one).
    not_applicable = result["not_applicable"]
    assert not_applicable is not None, proc.stderr[-3000:]
    remote = [n for n in not_applicable if n["test"].startswith("Remote")]
    assert [n["test"] for n in remote] in ([], ["RemoteLXC"]), not_applicable
    # What CTS itself concluded, also in the exit status.
    assert summary["ok"], json.dumps(summary, indent=1) + proc.stderr[-3000:]
    assert summary["success"] == 2 and summary["failure"] == 0
    assert proc.returncode == 0

    labctl("down", lab)
    assert host_state() == before


def test_cts_refuses_a_lab_with_one_cluster_node(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "1", "--mode", "cluster", "--no-fencing", "--name", lab)
    proc = labctl("cts", lab, "--", "1", check=False)
    assert proc.returncode == 2
    assert "CTS needs at least 2" in proc.stderr
    labctl("down", lab)
    assert host_state() == before


def test_cts_refuses_a_source_tree_of_another_version(labs, tmp_path, before):
    lab = labs.name()
    labctl("up", "--nodes", "2", "--mode", "cluster", "--no-fencing", "--name", lab)
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "config.h").write_text('#define PACEMAKER_VERSION "3.0.1"\n')
    proc = labctl("cts", lab, "--pacemaker-src", str(tmp_path), "--", "1", check=False)
    assert proc.returncode == 2
    assert "is Pacemaker 3.0.1, the lab's nodes run 2.1.5" in proc.stderr
    labctl("down", lab)
    assert host_state() == before
