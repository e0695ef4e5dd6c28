"""`labctl inventory`: a lab as an Ansible inventory (INI, YAML or JSON). Pure.

Groups are the roles (cluster, remote, guest); a role the lab has no node of is
left out, in every format. Hosts are the node names with `ansible_host` set to the
node's address; the connection variables sit on `all` and are the options
`labctl ssh-config` gives OpenSSH (sshconfig), so Ansible logs in with the lab's
key and checks the pinned host keys, never prompting. The private key is named by
path, never copied in.

YAML and JSON are Ansible's static inventory structure (the `yaml` inventory
plugin reads both); JSON is not the `_meta` shape of an inventory *script*, which
Ansible only takes from an executable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from labctl.errors import UsageError
from labctl.plan import LabPlan
from labctl.spec import ROLES
from labctl.sshconfig import client_options, option_args

FORMATS = ("yaml", "json", "ini")


@dataclass(frozen=True)
class Host:
    name: str
    address: str


@dataclass(frozen=True)
class Group:
    name: str
    hosts: tuple[Host, ...]


@dataclass(frozen=True)
class Inventory:
    lab: str
    groups: tuple[Group, ...]  # only roles the lab has nodes in, in ROLES' order
    variables: tuple[tuple[str, str], ...]  # for every host (the group `all`)


def inventory(p: LabPlan) -> Inventory:
    """The lab's hosts by role, and the variables that let Ansible reach them."""
    groups = tuple(
        Group(role, tuple(Host(n.name, str(n.ip)) for n in p.all_nodes if n.role == role))
        for role in (*ROLES, "qnetd")
        if any(n.role == role for n in p.all_nodes)
    )
    opts = dict(client_options(p))
    variables = (
        ("ansible_user", opts["User"]),
        ("ansible_ssh_private_key_file", opts["IdentityFile"]),
        # User and key are Ansible's own variables above; the rest as OpenSSH -o words.
        ("ansible_ssh_common_args", option_args(p, leave_out=("User", "IdentityFile"))),
        # Find the nodes' Python without the warning Ansible prints on every run.
        ("ansible_python_interpreter", "auto_silent"),
    )
    return Inventory(p.name, groups, variables)


def render(inv: Inventory, fmt: str) -> str:
    """INV as text in FMT (yaml, json or ini)."""
    if fmt == "yaml":
        return f"# labctl lab {inv.lab}\n" + yaml.safe_dump(
            _static(inv), sort_keys=False, default_flow_style=False, width=1000
        )
    if fmt == "json":
        return json.dumps(_static(inv), indent=2) + "\n"
    if fmt == "ini":
        return _ini(inv)
    raise UsageError(f"no inventory format {fmt!r}: use one of {', '.join(FORMATS)}")


def _static(inv: Inventory) -> dict[str, Any]:
    """Ansible's static inventory structure, as its YAML (and JSON) files have it."""
    children = {
        g.name: {"hosts": {h.name: {"ansible_host": h.address} for h in g.hosts}}
        for g in inv.groups
    }
    return {"all": {"vars": dict(inv.variables), "children": children}}


def _ini(inv: Inventory) -> str:
    out = [f"# labctl lab {inv.lab}"]
    for g in inv.groups:
        out += ["", f"[{g.name}]"]
        out += [f"{h.name} ansible_host={h.address}" for h in g.hosts]
    # In a vars section everything after the first `=` is the value, spaces included.
    out += ["", "[all:vars]"]
    out += [f"{k}={v}" for k, v in inv.variables]
    return "\n".join(out) + "\n"
