"""VM nodes (QEMU; TCG where KVM cannot run Linux) in a lab, on the real libvirtd."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from labctl import host, images

from . import cloud_image
from .conftest import STATE_DIR, domain_id, host_state, labctl, labctl_json
from .test_pacemaker import authkey_facts, crm_mon, lab_authkey_digest
from .test_rotate import _rotate_and_check
from .test_vm_images import UNREACHABLE, qemu_domains, vm_files

# Under TCG: the cluster notices (monitor), stops and starts the domain, the VM boots.
VM_RECOVERY_TIMEOUT = 300


def test_remote_mode_with_a_vm_remote_node_is_remote_online_then_down_leaves_nothing(labs, before):
    lab = labs.name()
    up = labctl_json(
        "up",
        "--nodes",
        "1",
        "--mode",
        "remote",
        "--backend",
        "vm",
        "--cluster-nodes",
        "1",
        "--name",
        lab,
    )
    vm = f"{lab}-r1"
    by_name = {n["name"]: n for n in up["nodes"]}
    assert by_name[vm]["pacemaker"] == "RemoteOnline"

    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByName(vm)
        assert dom.isActive()
        expected = "kvm" if host.kvm_status()[0] else "qemu"
        assert (
            f"<domain type='{expected}'" in dom.XMLDesc() or f'type="{expected}"' in dom.XMLDesc()
        )
    finally:
        conn.close()
    # A real kernel of its own, and Pacemaker's view of it.
    assert "cloud" in labctl("ssh", lab, vm, "--", "uname", "-r").stdout
    view = crm_mon(lab, f"{lab}-c1")
    assert (view.nodes[vm].type, view.nodes[vm].online) == ("remote", True)
    assert authkey_facts(lab, vm) == (lab_authkey_digest(lab), "root:haclient 640")

    # Its seed carries the node's host key and the lab key: 0600, in a directory
    # QEMU may search but nobody else may list; /root as the seed's copy left it.
    node_dir = STATE_DIR / "labs" / lab / "nodes" / vm
    assert stat.S_IMODE(node_dir.stat().st_mode) == 0o711
    assert stat.S_IMODE((node_dir / "seed.img").stat().st_mode) == 0o600
    assert not (node_dir / "seed-tree").exists()
    out = labctl("ssh", lab, vm, "--", "stat -c '%a' / /root /root/.ssh").stdout
    assert out.split() == ["755", "700", "700"]
    # On this lab rather than one of its own (CI time): a VM remote node takes a new
    # authkey as containers do (test_rotate has the other modes).
    _rotate_and_check(lab)

    # The VM has a fence device of its own (its own fence_virtd on qemu:///system):
    # fenced through the cluster, it is rebooted and comes back RemoteOnline.
    first = _domain_id(vm)
    labctl("fence", lab, vm)
    assert _domain_id(vm) not in (None, first)
    view = crm_mon(lab, f"{lab}-c1")
    assert (view.nodes[vm].type, view.nodes[vm].online) == ("remote", True)
    history = labctl("ssh", lab, f"{lab}-c1", "--", f"stonith_admin --history {vm}").stdout
    assert f"reboot of {vm} successful" in history

    # `down` while the QEMU driver does not answer: the container goes, the VM and its
    # disks stay (they are still in use), the failure is one line; the next `down`
    # finishes. On this lab rather than one of its own (CI time).
    files = vm_files(vm)
    os.environ["LABCTL_QEMU_URI"] = UNREACHABLE
    try:
        r = labctl("down", lab, check=False)
    finally:
        del os.environ["LABCTL_QEMU_URI"]
    assert r.returncode != 0
    # Progress lines ("· down LAB ...") aside, the failure is one line.
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("·")]
    assert len(lines) == 1 and lines[0].startswith("labctl:") and UNREACHABLE in lines[0], r.stderr
    assert vm in qemu_domains()
    assert all(os.path.exists(f) for f in files), files
    assert f"{lab}-c1" not in str(host_state().domains)  # the container went

    labctl("down", lab)
    assert host_state() == before


def _domain_id(name: str) -> int | None:
    return domain_id(name, "qemu:///system")


def test_guest_mode_with_a_vm_guest_is_started_and_recovered_by_the_cluster(labs, before):
    lab = labs.name()
    up = labctl_json(
        "up", "--nodes", "1", "--mode", "guest", "--backend", "vm", "--cluster-nodes", "1",
        "--name", lab,
    )  # fmt: skip
    guest, c1 = f"{lab}-g1", f"{lab}-c1"
    assert {n["name"]: n["pacemaker"] for n in up["nodes"]}[guest] == "GuestOnline"
    query = f"cibadmin --query --xpath \"//primitive[@id='vm-{guest}']\""
    cfg = labctl("ssh", lab, c1, "--", query).stdout
    assert 'name="hypervisor" value="qemu:///system"' in cfg
    assert "force_stop" not in cfg  # a VM shuts down cleanly through ACPI
    assert f'name="remote-node" value="{guest}"' in cfg

    # Destroyed behind the cluster's back, the VM is started again by the cluster.
    first = _domain_id(guest)
    assert first is not None
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(guest).destroy()
    finally:
        conn.close()
    deadline = time.monotonic() + VM_RECOVERY_TIMEOUT
    while True:
        again = _domain_id(guest)
        state = crm_mon(lab, c1).nodes[guest].online
        if again not in (None, first) and state:
            break
        assert time.monotonic() < deadline, f"{guest} not back: domain {again}, online {state}"
        time.sleep(2)

    # Stopped by the cluster, the VM shuts down cleanly on ACPI's request: not
    # destroyed once VirtualDomain's stop has waited out its timeout.
    labctl(
        "ssh", lab, c1, "--",
        f"crm_resource --resource vm-{guest} --meta --set-parameter target-role "
        "--parameter-value Stopped",
    )  # fmt: skip
    deadline = time.monotonic() + VM_RECOVERY_TIMEOUT
    while crm_mon(lab, c1).resources[f"vm-{guest}"].active:
        assert time.monotonic() < deadline, f"vm-{guest} did not stop"
        time.sleep(2)
    log = labctl("ssh", lab, c1, "--", "journalctl --no-pager -o cat | grep -i shutdown").stdout
    assert f"Issuing graceful shutdown request for domain {guest}" in log
    # libvirt's own record of how QEMU ended: the guest powered itself off.
    # (VirtualDomain may still log a "forced shutdown" of the transient domain
    # once it is gone: its status check does not know that error's wording.)
    qemu_log = Path(f"/var/log/libvirt/qemu/{guest}.log").read_text()
    assert re.findall(r"shutting down, reason=(\w+)", qemu_log)[-1] == "shutdown", qemu_log[-2000:]

    labctl("down", lab)
    assert host_state() == before


@pytest.fixture(scope="session")
def cloud_image_url() -> Iterator[tuple[str, str]]:
    """A user's cloud image (built here, see cloud_image.py), served on loopback."""
    base = images.find_image(STATE_DIR, images.DEFAULT_IMAGE)
    if base is None:
        pytest.fail("the debian12 image is not built: run scripts/test (it builds it first)")
    key = hashlib.sha256(
        (base.manifest["checksum"] + Path(cloud_image.__file__).read_text()).encode()
    ).hexdigest()[:16]
    path = cloud_image.build(base, STATE_DIR / "cache" / "test-cloud" / f"{key}.qcow2")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{path.name}", cloud_image.sha256(path)
    finally:
        server.shutdown()
        server.server_close()


def test_a_cloud_image_url_gives_a_remote_node_configured_by_cloud_init(
    labs, before, cloud_image_url
):
    url, sha256 = cloud_image_url
    lab = labs.name()
    up = labctl_json(
        "up", "--nodes", "1", "--mode", "remote", "--backend", "vm", "--cluster-nodes", "1",
        "--image", url, "--image-checksum", f"sha256:{sha256}", "--name", lab,
    )  # fmt: skip
    vm = f"{lab}-r1"
    assert {n["name"]: n["pacemaker"] for n in up["nodes"]}[vm] == "RemoteOnline"
    # Booted by its own boot loader; named, keyed and networked by cloud-init.
    conn = libvirt.open("qemu:///system")
    try:
        assert "<kernel>" not in conn.lookupByName(vm).XMLDesc()
    finally:
        conn.close()
    out = labctl(
        "ssh", lab, vm, "--",
        "hostname; cloud-init status; cat /proc/cmdline; ls /etc/systemd/network",
    ).stdout  # fmt: skip
    assert out.splitlines()[0] == vm
    assert "status: done" in out
    assert "root=LABEL=cloudimg-root" in out
    assert "10-cloud-init-" in out
    assert authkey_facts(lab, vm) == (lab_authkey_digest(lab), "root:haclient 640")
    view = crm_mon(lab, f"{lab}-c1")
    assert (view.nodes[vm].type, view.nodes[vm].online) == ("remote", True)
    # The cached image backs the running VM's volume: it cannot be removed now.
    refused = labctl("image", "rm", sha256[:12], check=False)
    assert refused.returncode == 2 and "take that lab down first" in refused.stderr, refused

    labctl("down", lab)
    assert host_state() == before
    # The download stays cached (by its sha256) for the next lab.
    listed = labctl_json("image", "list")["cloud"]
    assert sha256 in {c["sha256"] for c in listed}


def test_a_cloud_image_with_a_wrong_checksum_is_refused_and_nothing_is_created(
    labs, before, cloud_image_url
):
    url, sha256 = cloud_image_url
    wrong = ("0" if sha256[0] != "0" else "1") + sha256[1:]
    lab = labs.name()
    r = labctl(
        "up", "--nodes", "1", "--mode", "remote", "--backend", "vm", "--cluster-nodes", "1",
        "--image", url, "--image-checksum", wrong, "--name", lab, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("labctl:")]
    assert len(errors) == 1 and f"not {wrong}" in errors[0] and "--image-checksum" in errors[0]
    assert r.stderr.strip().splitlines()[-1] == errors[0]
    assert host_state() == before


def test_removing_a_vm_also_removes_its_snapshot_metadata(labs):
    """A user poking at a lab may snapshot a VM; libvirt then refuses a plain undefine."""
    from lxml.builder import E
    from lxml.etree import tostring

    from labctl import virt

    name = f"{labs.name()}-snap"
    dom_xml = tostring(
        E.domain(
            E.name(name),
            E.memory("131072", unit="KiB"),
            E.os(E.type("hvm", arch="x86_64", machine="pc")),
            type="qemu",
        ),
        encoding="unicode",
    )
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.defineXML(dom_xml)
        snap = (
            "<domainsnapshot><name>poke</name><state>shutoff</state>"
            "<creationTime>1700000000</creationTime><memory snapshot='no'/>"
            f"{dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)}</domainsnapshot>"
        )
        dom.snapshotCreateXML(snap, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)
        assert dom.snapshotListNames() == ["poke"]
        assert virt.remove_domain(conn, name) is True
        assert name not in {d.name() for d in conn.listAllDomains()}
    finally:
        # Independent of the code under test, so a failing run leaves nothing behind.
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        conn.close()


def test_cluster_mode_with_vms_forms_fences_through_qemu_and_leaves_nothing(labs, before):
    lab = labs.name()
    up = labctl_json("up", "--nodes", "2", "--mode", "cluster", "--backend", "vm", "--name", lab)
    c1, c2 = f"{lab}-c1", f"{lab}-c2"
    assert {n["name"]: n["pacemaker"] for n in up["nodes"]} == {c1: "Online", c2: "Online"}
    assert "cloud" in labctl("ssh", lab, c1, "--", "uname", "-r").stdout
    if not host.kvm_status()[0]:
        # Under TCG corosync must not run realtime: it would starve Pacemaker.
        assert labctl("ssh", lab, c1, "--", "ps -o cls= -C corosync").stdout.split() == ["TS"]
    # Fenced by fence_xvm through the lab's fence_virtd on qemu:///system.
    first = _domain_id(c1)
    labctl("fence", lab, c1)
    assert _domain_id(c1) not in (None, first)
    view = crm_mon(lab, c2)
    assert view.nodes[c1].online and view.nodes[c2].online

    labctl("down", lab)
    assert host_state() == before
