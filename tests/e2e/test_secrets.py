"""Secrets at rest: every file labctl writes for a lab, read back with its mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .conftest import STATE_DIR, host_state, labctl

# Files that hold a secret: the lab's SSH and Pacemaker keys, corosync's and
# fence_virtd's keys, a node's private host key, and the seeds that carry keys.
SECRETS = {
    "authkey",
    "authkey.new",
    "corosync-authkey",
    "fence_xvm.key",
    "id_ed25519",
    "ssh_host_ed25519_key",
    "seed.img",
}
# A container's own file system (its overlay layers and root), below its 0700 node
# directory: its modes are the node's, not labctl's; checked from inside instead.
NODE_OWN = {"upper", "work", "root"}


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def _lab_entries(lab_dir: Path) -> list[Path]:
    out = []
    for d, dirs, files in os.walk(lab_dir):
        here = Path(d)
        if here.parent.name == "nodes":
            dirs[:] = [x for x in dirs if x not in NODE_OWN]
        out += [here / x for x in dirs + files]
        if here.name == "nodes" and here.parent.parent.name == "snapshots":
            dirs[:] = []  # a snapshot's copies of the nodes' own layers: theirs, as above
    return out


def _private_path(lab_dir: Path, p: Path) -> bool:
    """No directory from the lab's down to P lets others list or write it (search
    is allowed: QEMU, as its own user, opens VM seeds and disks by path)."""
    d = p.parent
    while True:
        if _mode(d) & 0o066:
            return False
        if d == lab_dir:
            return True
        d = d.parent


def test_lab_secrets_are_0600_in_private_directories_and_nothing_is_world_writable(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "1", "--mode", "remote", "--name", lab)  # fencing: its key too
    lab_dir = STATE_DIR / "labs" / lab
    entries = _lab_entries(lab_dir)
    names = {p.name for p in entries}
    assert {"authkey", "corosync-authkey", "fence_xvm.key", "id_ed25519"} <= names

    assert _mode(lab_dir) == 0o711
    for p in entries:
        if p.is_symlink():
            continue
        assert not _mode(p) & 0o002, f"{p} is world-writable ({_mode(p):o})"
        if p.name in SECRETS:
            assert p.is_file() and _mode(p) == 0o600, f"{p}: {_mode(p):o}"
            assert p.lstat().st_uid == 0, p
            assert _private_path(lab_dir, p), f"{p}: a directory on its path is open"
    # The `up` snapshot holds copies of the nodes' keys: nothing of it is open to others.
    snaps = lab_dir / "snapshots"
    assert _mode(snaps) == _mode(snaps / "up") == _mode(snaps / "up" / "nodes") == 0o700
    assert _mode(snaps / "up" / "authkey") == 0o600
    nodes = lab_dir / "nodes"
    assert _mode(nodes) == 0o711
    for node in nodes.iterdir():
        # A container's root (its keys, CIB, shadow file) is nobody else's to read.
        assert _mode(node) == 0o700, f"{node}: {_mode(node):o}"
        upper = node / "upper"
        for rel in ("etc/ssh/ssh_host_ed25519_key", "root/.ssh/id_ed25519"):
            assert _mode(upper / rel) == 0o600, f"{upper / rel}"
        assert _mode(upper / "root/.ssh") == _mode(upper / "root") == 0o700

    # And inside the nodes, where labctl put them over SSH.
    for node, role in ((f"{lab}-c1", "cluster"), (f"{lab}-r1", "remote")):
        cmd = "stat -c '%n %a %U:%G' /root /root/.ssh /etc/pacemaker/authkey"
        if role == "cluster":
            cmd += " /etc/corosync/authkey /etc/cluster/fence_xvm.key"
        got = dict(
            (line.split(" ", 1)[0], line.split(" ", 1)[1])
            for line in labctl("ssh", lab, node, "--", cmd).stdout.splitlines()
        )
        want = {
            "/root": "700 root:root",
            "/root/.ssh": "700 root:root",
            "/etc/pacemaker/authkey": "640 root:haclient",
        }
        if role == "cluster":
            want |= {
                "/etc/corosync/authkey": "400 root:root",
                "/etc/cluster/fence_xvm.key": "600 root:root",
            }
        assert got == want, node

    labctl("down", lab)
    assert host_state() == before
