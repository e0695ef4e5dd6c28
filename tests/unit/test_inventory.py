import json
import shlex
from pathlib import Path

import pytest
import yaml

from labctl import inventory
from labctl.errors import UsageError
from labctl.plan import make_plan
from labctl.spec import make_spec

KEY = "/s/labs/demo/ssh/id_ed25519"
KNOWN = "/s/labs/demo/ssh/known_hosts"


def _inv(mode: str = "remote", nodes: int = 2):
    return inventory.inventory(make_plan(make_spec("demo", nodes, mode=mode), 1, Path("/s")))


def test_groups_are_the_roles_the_lab_has_and_hosts_their_nodes():
    inv = _inv("remote", 2)
    assert [g.name for g in inv.groups] == ["cluster", "remote"]  # no node is a guest
    assert [(h.name, h.address) for h in inv.groups[1].hosts] == [
        ("demo-r1", "10.213.1.31"),
        ("demo-r2", "10.213.1.32"),
    ]
    assert [g.name for g in _inv("cluster", 3).groups] == ["cluster"]
    assert [g.name for g in _inv("guest", 1).groups] == ["cluster", "guest"]


def test_connection_variables_name_the_key_by_path_and_pin_the_known_hosts():
    v = dict(_inv().variables)
    assert v["ansible_user"] == "root"
    assert v["ansible_ssh_private_key_file"] == KEY
    args = shlex.split(v["ansible_ssh_common_args"])
    assert f"UserKnownHostsFile={KNOWN}" in args
    assert "StrictHostKeyChecking=yes" in args
    assert "BatchMode=yes" in args  # never a prompt


def test_ini_has_a_section_per_role_and_the_variables_on_all():
    text = inventory.render(_inv(), "ini")
    assert text.startswith("# labctl lab demo\n\n[cluster]\ndemo-c1 ansible_host=10.213.1.11\n")
    assert (
        "\n[remote]\ndemo-r1 ansible_host=10.213.1.31\ndemo-r2 ansible_host=10.213.1.32\n" in text
    )
    assert "[guest]" not in text
    assert f"\n[all:vars]\nansible_user=root\nansible_ssh_private_key_file={KEY}\n" in text


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_yaml_and_json_are_ansibles_static_structure(fmt):
    text = inventory.render(_inv(), fmt)
    data = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    assert list(data) == ["all"]
    assert data["all"]["vars"]["ansible_ssh_private_key_file"] == KEY
    children = data["all"]["children"]
    assert list(children) == ["cluster", "remote"]
    assert children["remote"]["hosts"]["demo-r2"] == {"ansible_host": "10.213.1.32"}


def test_the_private_key_itself_is_never_in_the_text(tmp_path):
    for fmt in inventory.FORMATS:
        assert "PRIVATE KEY" not in inventory.render(_inv(), fmt)


def test_an_unknown_format_is_a_usage_error_naming_the_formats():
    with pytest.raises(UsageError, match="use one of yaml, json, ini"):
        inventory.render(_inv(), "toml")


@pytest.mark.parametrize("fmt", inventory.FORMATS)
def test_ansible_parses_every_format_to_the_same_hosts_and_variables(fmt, tmp_path):
    # Ansible's own inventory parser, as `ansible -i FILE` runs it (no SSH here).
    from ansible.inventory.helpers import get_group_vars
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    src = tmp_path / f"inventory.{fmt}"
    src.write_text(inventory.render(_inv(), fmt))
    im = InventoryManager(loader=DataLoader(), sources=[str(src)])
    groups = im.get_groups_dict()
    assert groups["cluster"] == ["demo-c1", "demo-c2"]
    assert groups["remote"] == ["demo-r1", "demo-r2"]
    assert "guest" not in groups
    host = im.get_host("demo-r1")
    hv = {**get_group_vars(host.get_groups()), **host.get_vars()}
    assert hv["ansible_host"] == "10.213.1.31"
    assert hv["ansible_user"] == "root"
    assert hv["ansible_ssh_private_key_file"] == KEY
    assert f"UserKnownHostsFile={KNOWN}" in shlex.split(hv["ansible_ssh_common_args"])
