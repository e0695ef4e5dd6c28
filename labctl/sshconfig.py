"""How an OpenSSH client reaches a lab's nodes: root, the lab's key, its pinned host keys.

Pure. One list of options, rendered for each consumer: an ssh_config block
(`labctl ssh-config`, CTS) and `-o` arguments (Ansible's inventory).
"""

from __future__ import annotations

import shlex

from labctl.plan import LabPlan


def client_options(p: LabPlan) -> list[tuple[str, str]]:
    """OpenSSH options, in order, for logging in to any node of the lab without a prompt."""
    return [
        ("User", "root"),
        ("IdentityFile", str(p.private_key)),
        ("IdentitiesOnly", "yes"),
        # labctl wrote every node's host key before the node booted: never learn one.
        ("UserKnownHostsFile", str(p.known_hosts)),
        ("StrictHostKeyChecking", "yes"),
        ("BatchMode", "yes"),
        ("LogLevel", "ERROR"),
    ]


def ssh_config(p: LabPlan) -> str:
    """An OpenSSH config block for the lab's nodes, by name and by address."""
    names = " ".join(n.name for n in p.all_nodes)
    addrs = " ".join(str(n.ip) for n in p.all_nodes)
    opts = "".join(f"    {k} {v}\n" for k, v in client_options(p))
    return f"# labctl lab {p.name}\nHost {names} {addrs}\n{opts}"


def option_args(p: LabPlan, leave_out: tuple[str, ...] = ()) -> str:
    """The options as one shell-quoted `-o Key=Value ...` string, without LEAVE_OUT's keys."""
    return " ".join(
        f"-o {shlex.quote(f'{k}={v}')}" for k, v in client_options(p) if k not in leave_out
    )
