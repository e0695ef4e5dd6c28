"""labctl as a library: names, defaults, and what each Lab method asks of labctl.lab.
The real thing runs in tests/e2e/test_api.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import labctl
from labctl import api, cli, lab
from labctl.errors import UsageError


def test_the_public_names_are_importable_and_stable():
    assert sorted(labctl.__all__) == [
        "Lab",
        "LabctlError",
        "Node",
        "NotFoundError",
        "Result",
        "UsageError",
        "__version__",
        "up",
    ]
    for name in labctl.__all__:
        assert getattr(labctl, name) is not None


def test_cli_version_prints_without_a_command():
    r = CliRunner().invoke(cli.app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == labctl.__version__


def test_lab_takes_the_state_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LABCTL_STATE_DIR", str(tmp_path))
    assert labctl.Lab("demo").state_dir == tmp_path
    assert labctl.Lab("demo", "/elsewhere").state_dir == Path("/elsewhere")


def test_a_bad_lab_name_is_a_usage_error():
    with pytest.raises(UsageError):
        labctl.Lab("no/such")


def test_up_passes_options_to_the_spec_with_the_clis_fencing_default(monkeypatch, tmp_path):
    seen = {}

    def fake_up(spec, state_dir, reporter, keep_on_failure=False, mirror=None):
        seen["spec"], seen["dir"] = spec, state_dir

    monkeypatch.setattr(lab, "up", fake_up)
    got = labctl.up(2, "remote", "ap1", state_dir=tmp_path, cluster_nodes=3, memory_mib=256)
    assert got.name == "ap1" and got.state_dir == tmp_path
    s = seen["spec"]
    assert (s.nodes, s.mode, s.cluster_nodes, s.memory_mib, s.fencing) == (
        2,
        "remote",
        3,
        256,
        True,
    )
    labctl.up(1, "remote", "ap2", state_dir=tmp_path, fencing=False)
    assert seen["spec"].fencing is False


def test_up_refuses_an_unknown_option_in_one_line(tmp_path):
    with pytest.raises(UsageError, match="colour"):
        labctl.up(1, state_dir=tmp_path, colour="blue")


def test_up_refuses_bad_input_before_anything_is_made(monkeypatch, tmp_path):
    monkeypatch.setattr(lab, "up", lambda *a, **k: pytest.fail("lab.up called"))
    with pytest.raises(UsageError):
        labctl.up(0, state_dir=tmp_path)


def test_the_context_manager_takes_the_lab_down_also_on_errors(monkeypatch, tmp_path):
    downs = []
    monkeypatch.setattr(lab, "down", lambda name, state_dir, fast=False: downs.append(name))
    with pytest.raises(RuntimeError), labctl.Lab("cm1", tmp_path) as got:
        assert got.name == "cm1"
        raise RuntimeError("a test failed")
    assert downs == ["cm1"]


def test_a_node_or_its_name(monkeypatch, tmp_path):
    fenced = []
    monkeypatch.setattr(lab, "fence", lambda name, node, state_dir: fenced.append((name, node)))
    a = labctl.Lab("f1", tmp_path)
    a.fence("f1-c2")
    a.fence(api.Node("f1-c3", "cluster", "10.0.0.3"))
    assert fenced == [("f1", "f1-c2"), ("f1", "f1-c3")]


def test_importing_labctl_or_its_pytest_plugin_loads_no_libvirt():
    # The plugin is loaded into every pytest session of an environment with labctl.
    code = (
        "import sys, labctl, labctl.pytest_plugin\n"
        "assert 'libvirt' not in sys.modules and 'paramiko' not in sys.modules, 'loaded'\n"
        "assert set(labctl.__all__) == set(labctl._LAZY) | {'__version__'}\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_lab_net_is_labctl_net(monkeypatch, tmp_path):
    from labctl import net

    calls = []
    monkeypatch.setattr(net, "net", lambda *a: calls.append(a) or "report")
    assert labctl.Lab("demo", tmp_path).net("partition", "c1", "c2,c3") == "report"
    assert labctl.Lab("demo", tmp_path).net("down", "c1", link=1) == "report"
    assert calls == [
        ("demo", "partition", ["c1", "c2,c3"], None, tmp_path),
        ("demo", "down", ["c1"], 1, tmp_path),
    ]
