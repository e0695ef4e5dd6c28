"""labctl inside other people's tests: `labctl inventory` read by Ansible itself, and
`labctl exec` on many nodes at once. One lab for the module (a cluster node and a
remote node): no test here changes it, and it is always taken down."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import HostState, host_state, labctl, module_lab

# The Ansible of labctl's own environment (the test extra), beside this Python.
BIN = Path(sys.executable).parent


@dataclasses.dataclass(frozen=True)
class Lab:
    name: str
    nodes: dict[str, str]  # node -> role


def _of_lab(s: HostState, lab: str) -> HostState:
    """What of the host is named after LAB: other users' labs may come and go meanwhile."""
    return dataclasses.replace(
        s,
        **{
            f.name: frozenset(i for i in getattr(s, f.name) if lab in i)
            for f in dataclasses.fields(s)
        },
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    before = host_state()
    up_args = ("--nodes", "1", "--mode", "remote", "--cluster-nodes", "1", "--no-fencing")
    with module_lab(*up_args) as (name, up):
        yield Lab(name, {n["name"]: n["role"] for n in up["nodes"]})
    assert _of_lab(host_state(), name) == _of_lab(before, name)


def _ansible(tool: str, *args: str, shell: str | None = None) -> subprocess.CompletedProcess[str]:
    # No terminal, no stdin: a prompt would hang or fail here, and must not happen.
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    argv = ["bash", "-c", shell] if shell else [str(BIN / tool), *args]
    return subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=300
    )


def test_ansible_inventory_lists_the_labs_groups_from_an_ini_file(lab, tmp_path):
    inv = tmp_path / "inventory.ini"
    inv.write_text(labctl("inventory", lab.name, "--format", "ini").stdout)
    r = _ansible("ansible-inventory", "-i", str(inv), "--list")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert set(listed["all"]["children"]) >= {"cluster", "remote"}
    for node, role in lab.nodes.items():
        assert listed[role]["hosts"] == [n for n, r in lab.nodes.items() if r == role]
        assert listed["_meta"]["hostvars"][node]["ansible_user"] == "root"
    assert "guest" not in listed  # a role without nodes is no group


def test_ansible_ping_succeeds_on_every_node_from_an_ini_file(lab, tmp_path):
    inv = tmp_path / "inventory.ini"
    inv.write_text(labctl("inventory", lab.name, "--format", "ini").stdout)
    r = _ansible("ansible", "-i", str(inv), "all", "-m", "ping")
    assert r.returncode == 0, r.stdout + r.stderr
    for node in lab.nodes:
        assert f"{node} | SUCCESS" in r.stdout


def test_ansible_ping_reads_the_default_format_from_process_substitution(lab):
    # The issue's own command line: YAML through a pipe, read once by Ansible.
    labctl_cmd = f"{sys.executable} -m labctl"
    r = _ansible("", shell=f"ansible -i <({labctl_cmd} inventory {lab.name}) all -m ping")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(line.split(" |")[0] for line in r.stdout.splitlines() if " | " in line) == (
        sorted(lab.nodes)
    )
    assert "SUCCESS" in r.stdout and "UNREACHABLE" not in r.stdout


def test_exec_runs_on_every_node_and_each_answers_with_its_own_name(lab):
    r = labctl("exec", lab.name, "--json", "--", "hostname")
    results = json.loads(r.stdout)
    assert {x["node"]: (x["role"], x["status"], x["stdout"].strip()) for x in results} == {
        node: (role, 0, node) for node, role in lab.nodes.items()
    }
    plain = labctl("exec", lab.name, "--", "hostname").stdout
    for node, role in lab.nodes.items():
        assert f"==> {node} ({role}): exit 0 <==\n{node}\n" in plain


def test_exec_exits_non_zero_naming_the_one_node_that_failed(lab):
    first = sorted(lab.nodes)[0]
    r = labctl("exec", lab.name, "--", "sh", "-c", f"test $(hostname) != {first}", check=False)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"labctl: failed on 1 of {len(lab.nodes)} nodes: {first} (exit 1)"


def test_exec_on_a_role_the_lab_lacks_is_one_line_listing_its_roles(lab):
    r = labctl("exec", lab.name, "--role", "guest", "--", "true", check=False)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"labctl: lab '{lab.name}' has no 'guest' nodes: its roles are cluster, remote"
    )
