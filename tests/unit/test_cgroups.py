"""The leftover cgroups of a lab's containers: found by name, removed deepest first."""

import os
from pathlib import Path

from labctl import cgroups

MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
proc /proc proc rw 0 0
"""


def test_v1_mounts_are_the_cgroup_lines_only():
    assert cgroups.v1_mounts(MOUNTS) == [
        Path("/sys/fs/cgroup/pids"),
        Path("/sys/fs/cgroup/systemd"),
    ]


def tree(root: Path, *dirs: str) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)


def test_container_groups_match_the_lab_nodes_names_under_machine_only(tmp_path):
    tree(
        tmp_path,
        "machine/lxc-11-demo-c1.libvirt-lxc/system.slice/corosync.service",
        "machine/lxc-12-demo-g1.libvirt-lxc/init.scope",
        "machine/lxc-13-demo-c1-c1.libvirt-lxc",  # lab "demo-c1"'s node: not ours
        "machine/lxc-14-other-c1.libvirt-lxc",
        "elsewhere/lxc-15-demo-c1.libvirt-lxc",  # not libvirt's partition
        "deep/er/machine/lxc-16-demo-c1.libvirt-lxc",  # libvirtd's namespace sits deeper
    )
    found = cgroups.container_groups(tmp_path, {"demo-c1", "demo-g1"})
    assert sorted(str(p.relative_to(tmp_path)) for p in found) == [
        "deep/er/machine/lxc-16-demo-c1.libvirt-lxc",
        "machine/lxc-11-demo-c1.libvirt-lxc",
        "machine/lxc-12-demo-g1.libvirt-lxc",
    ]


def test_a_container_group_is_not_walked_into(tmp_path, monkeypatch):
    tree(tmp_path, "machine/lxc-11-demo-c1.libvirt-lxc/machine/lxc-12-demo-g1.libvirt-lxc")
    found = cgroups.container_groups(tmp_path, {"demo-c1", "demo-g1"})
    assert found == [tmp_path / "machine/lxc-11-demo-c1.libvirt-lxc"]


def test_remove_group_goes_deepest_first_and_says_what_stayed(tmp_path):
    g = tmp_path / "machine/lxc-11-demo-c1.libvirt-lxc"
    tree(g, "system.slice/corosync.service", "init.scope")
    assert cgroups.remove_group(g) is True
    assert not g.exists() and (tmp_path / "machine").is_dir()

    tree(g, "init.scope")
    (g / "init.scope" / "tasks").write_text("1\n")  # a group with processes: rmdir refused
    assert cgroups.remove_group(g) is False
    assert (g / "init.scope").is_dir()


def test_remove_leftovers_walks_every_v1_hierarchy(tmp_path):
    for h in ("pids", "systemd"):
        tree(tmp_path / h, "machine/lxc-11-demo-c1.libvirt-lxc/init.scope", "machine/keep")
    mounts = "".join(f"cgroup {tmp_path / h} cgroup rw,{h} 0 0\n" for h in ("pids", "systemd"))
    assert cgroups.remove_leftovers(["demo-c1"], mounts) == 2
    assert sorted(os.listdir(tmp_path / "pids" / "machine")) == ["keep"]
    assert cgroups.remove_leftovers([], mounts) == 0
