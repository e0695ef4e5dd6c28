import shlex
from pathlib import Path

import pytest

from labctl import execute
from labctl.errors import UsageError
from labctl.execute import NodeResult
from labctl.plan import make_plan
from labctl.spec import make_spec


def _plan():
    return make_plan(make_spec("demo", 2, mode="remote"), 1, Path("/s"))


def _names(nodes):
    return [n.name for n in nodes]


def test_no_selection_is_every_node_in_the_labs_order():
    assert _names(execute.select(_plan(), [], [])) == ["demo-c1", "demo-c2", "demo-r1", "demo-r2"]


def test_roles_and_nodes_select_in_the_labs_order_without_repeats():
    p = _plan()
    assert _names(execute.select(p, ["remote"], [])) == ["demo-r1", "demo-r2"]
    assert _names(execute.select(p, ["remote", "cluster"], [])) == _names(p.nodes)
    assert _names(execute.select(p, [], ["demo-r2", "demo-c1", "demo-r2"])) == [
        "demo-c1",
        "demo-r2",
    ]


def test_a_role_the_lab_lacks_is_a_usage_error_listing_its_roles():
    with pytest.raises(UsageError, match=r"no 'guest' nodes: its roles are cluster, remote$"):
        execute.select(_plan(), ["guest"], [])
    with pytest.raises(UsageError, match="its roles are cluster, remote"):
        execute.select(_plan(), ["Cluster"], [])


def test_an_unknown_node_is_a_usage_error_listing_the_nodes():
    with pytest.raises(UsageError, match="its nodes are demo-c1, demo-c2, demo-r1, demo-r2"):
        execute.select(_plan(), [], ["demo-c9"])


def test_role_and_node_together_are_refused():
    with pytest.raises(UsageError, match="not both"):
        execute.select(_plan(), ["cluster"], ["demo-r1"])


def test_one_argument_is_a_command_line_several_are_words():
    assert execute.command_line(["crm_mon -1 | head -3"]) == "crm_mon -1 | head -3"
    line = execute.command_line(["sh", "-c", "test $(hostname) != demo-c1"])
    assert shlex.split(line) == ["sh", "-c", "test $(hostname) != demo-c1"]
    with pytest.raises(UsageError, match="after `--`"):
        execute.command_line([])


_RESULTS = [
    NodeResult("demo-c1", "cluster", 0, "demo-c1\n", ""),
    NodeResult("demo-r1", "remote", 3, "partial", "boom\n"),
    NodeResult("demo-r2", "remote", None, "", "", "demo-r2: SSH to 10.213.1.32 failed: refused"),
]


def test_plain_output_is_a_header_per_node_then_its_stdout_and_stderr():
    assert execute.plain(_RESULTS) == [
        ("stdout", "==> demo-c1 (cluster): exit 0 <==\n"),
        ("stdout", "demo-c1\n"),
        ("stdout", "==> demo-r1 (remote): exit 3 <==\n"),
        ("stdout", "partial\n"),  # a last line without newline still ends the block
        ("stderr", "boom\n"),
        ("stdout", "==> demo-r2 (remote): no exit status <==\n"),
        ("stderr", "demo-r2: SSH to 10.213.1.32 failed: refused\n"),
    ]


def test_json_has_node_role_status_stdout_stderr_per_node():
    first, _, last = execute.to_json(_RESULTS)
    assert first == {
        "node": "demo-c1",
        "role": "cluster",
        "status": 0,
        "stdout": "demo-c1\n",
        "stderr": "",
        "error": "",
    }
    assert last["status"] is None and "SSH" in str(last["error"])


def test_failures_name_every_failed_node_in_one_line():
    line = execute.failures(_RESULTS)
    assert line == "failed on 2 of 3 nodes: demo-r1 (exit 3), demo-r2 (no exit status)"
    assert execute.failures(_RESULTS[:1]) is None


def test_a_node_that_cannot_be_reached_does_not_stop_the_others(monkeypatch):
    from labctl import lab, ssh
    from labctl.errors import LabctlError

    class FakeConnection:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def run(self, command, check=True, timeout=0.0):
            return ssh.Result(command, 0, f"{self.name}\n", "")

    def connect(p, node):
        if node.name == "demo-c2":
            raise LabctlError("demo-c2: SSH to 10.213.1.12 failed: timed out")
        return FakeConnection(node.name)

    monkeypatch.setattr(lab, "connect", connect)
    p = _plan()
    results = execute.run(p, list(p.nodes), "hostname", timeout=5)
    assert [(r.node, r.status) for r in results] == [
        ("demo-c1", 0),
        ("demo-c2", None),
        ("demo-r1", 0),
        ("demo-r2", 0),
    ]
    assert results[1].error.startswith("demo-c2: SSH")
    assert results[3].stdout == "demo-r2\n"
