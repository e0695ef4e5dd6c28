"""The fencing trust boundary between labs on one host: a lab's fence key fences
its own lab's nodes, never another lab's."""

from __future__ import annotations

import base64
import re

import libvirt
from lxml import etree

from labctl import fencing

from .conftest import host_state, labctl

FENCE_XVM = "fence_xvm -t 10 -a {address} -p {port} -k {key} {target} -o {action}"


def device_params(lab: str) -> dict[str, str]:
    """The lab's fence_xvm device parameters, as its cluster has them."""
    out = labctl(
        "ssh", lab, f"{lab}-c1", "--", "cibadmin -Q --xpath \"//primitive[@id='fence-xvm']\""
    ).stdout
    prim = etree.fromstring(out.encode())
    return {nv.get("name"): nv.get("value") for nv in prim.iter("nvpair")}


def fence_xvm(
    lab: str,
    node: str,
    params: dict[str, str],
    target: str,
    action: str = "reboot",
    key: str = fencing.NODE_KEY_PATH,
) -> tuple[int, str]:
    """Run fence_xvm on NODE of LAB against PARAMS' daemon; (exit code, output)."""
    cmd = FENCE_XVM.format(
        address=params["multicast_address"],
        port=params["ipport"],
        key=key,
        target=target,
        action=action,
    )
    out = labctl("ssh", lab, node, "--", f"{cmd} 2>&1; echo rc=$?", check=False).stdout
    m = re.search(r"rc=(\d+)\s*$", out)
    assert m, out
    return int(m.group(1)), out


def test_a_labs_fence_key_reboots_its_own_nodes_never_another_labs(labs, before):
    a, b = labs.name(), labs.name()
    labctl("up", "--nodes", "2", "--mode", "cluster", "--name", a)
    labctl("up", "--nodes", "2", "--mode", "cluster", "--name", b)
    pa, pb = device_params(a), device_params(b)
    assert (pa["multicast_address"], pa["ipport"]) != (pb["multicast_address"], pb["ipport"])
    b_nodes = [f"{b}-c1", f"{b}-c2"]

    conn = libvirt.open("lxc:///")
    try:

        def b_ids() -> dict[str, int]:
            return {n: conn.lookupByName(n).ID() for n in b_nodes}

        b_before = b_ids()

        # A's daemon lists A's nodes only, though its libvirt backend sees every domain.
        rc, out = fence_xvm(a, f"{a}-c1", pa, "", action="list")
        assert rc == 0, out
        assert sorted(line.split()[0] for line in out.splitlines()[:-1] if line.strip()) == [
            f"{a}-c1",
            f"{a}-c2",
        ]

        # A's key, A's daemon, B's node: refused, by name and by UUID.
        rc, out = fence_xvm(a, f"{a}-c1", pa, f"-H {b}-c1")
        assert rc != 0 and "Permission denied" in out, out
        uuid = conn.lookupByName(f"{b}-c2").UUIDString()
        rc, out = fence_xvm(a, f"{a}-c1", pa, f"-u -H {uuid}")
        assert rc != 0 and "Permission denied" in out, out

        # A's key sent to B's address and port from A's node: A's bridge does not
        # carry it to B's daemon (isolated bridges), so nothing answers.
        rc, out = fence_xvm(a, f"{a}-c1", pb, f"-H {b}-c1")
        assert rc != 0, out

        # A's key on B's own node, to B's daemon: the daemon rejects its signature.
        key = labctl("ssh", a, f"{a}-c1", "--", f"base64 -w0 {fencing.NODE_KEY_PATH}").stdout
        base64.b64decode(key, validate=True)  # only base64 goes into the command line
        tmp = "/root/other-labs-fence.key"
        labctl("ssh", b, f"{b}-c1", "--", f"echo {key.strip()} | base64 -d > {tmp}")
        try:
            rc, out = fence_xvm(b, f"{b}-c1", pb, f"-H {b}-c2", key=tmp)
            assert rc != 0, out
        finally:
            labctl("ssh", b, f"{b}-c1", "--", f"rm -f {tmp}")

        # The same path still fences A's own node.
        old = conn.lookupByName(f"{a}-c2").ID()
        labctl("fence", a, f"{a}-c2")
        assert conn.lookupByName(f"{a}-c2").ID() != old

        # Checked last, some 20 s on: had a B node been rebooted behind its
        # cluster's back, B's cluster would have fenced it again by now.
        assert b_ids() == b_before
    finally:
        conn.close()

    labctl("down", a)
    labctl("down", b)
    assert host_state() == before
