"""What a container cluster node gets in its root before it first boots."""

from pathlib import Path

from labctl import fencing
from labctl import pacemaker as pcmk
from labctl.plan import make_plan
from labctl.provision import cluster_boot_files, node_files, preseeded
from labctl.spec import make_spec
from labctl.xml import LXC_INIT


def test_only_container_cluster_nodes_are_preseeded():
    lxc = make_plan(make_spec("demo", 2, mode="guest"), 1, Path("/s"))
    assert [preseeded(n) for n in lxc.nodes] == [True, True, False, False]
    vm = make_plan(make_spec("demo", 3, backend="vm"), 1, Path("/s"))
    assert not any(preseeded(n) for n in vm.nodes)  # a VM's seed is copied too late


def test_boot_files_are_corosyncs_and_the_fence_key_never_pacemakers_authkey():
    files = {f.path: f for f in cluster_boot_files("totem {}\n", b"C" * 128, b"F" * 512)}
    assert files[pcmk.COROSYNC_CONF].data == b"totem {}\n"
    assert (files[pcmk.COROSYNC_AUTHKEY].data, files[pcmk.COROSYNC_AUTHKEY].mode) == (
        b"C" * 128,
        0o400,
    )
    assert files[fencing.NODE_KEY_PATH].mode == 0o600
    assert pcmk.AUTHKEY_PATH not in files  # remote connections' key goes over SSH
    without = {f.path for f in cluster_boot_files("totem {}\n", b"C", None)}
    assert fencing.NODE_KEY_PATH not in without


def test_containers_get_the_init_wrapper_vms_do_not():
    def files(backend: str, image: str) -> dict[str, tuple[bytes, int]]:
        p = make_plan(
            make_spec("demo", 1, mode="remote", backend=backend, image=image), 1, Path("/s")
        )
        out = node_files(
            p,
            p.nodes[-1],
            host_name="h",
            host_key_private=b"k",
            host_key_public="ssh-ed25519 K",
            lab_key_private=b"k",
            lab_key_public="ssh-ed25519 L",
            known_hosts="",
        )
        return {f.path: (f.data, f.mode) for f in out}

    data, mode = files("lxc", "debian12")[LXC_INIT]
    assert mode == 0o755 and data.startswith(b"#!/bin/sh\n") and b"exec /sbin/init" in data
    assert LXC_INIT not in files("vm", "/c.qcow2")
