"""VM disks under running labs. (`down` while the QEMU driver does not answer is
test_vm's remote-mode test, on its lab.)"""

from __future__ import annotations

import os

import libvirt
from lxml import etree

from .conftest import STATE_DIR, host_state, labctl

UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/labctl-e2e.sock"


def vm_files(name: str) -> list[str]:
    """The kernel, initrd and disk files (backing chain included) domain NAME uses."""
    conn = libvirt.open("qemu:///system")
    try:
        doc = etree.fromstring(conn.lookupByName(name).XMLDesc(0).encode())
    finally:
        conn.close()
    files = [el.text for el in doc.iter("kernel", "initrd") if el.text]
    files += [s.get("file") for s in doc.iter("source") if s.get("file")]
    return files


def qemu_domains() -> set[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()


def test_image_rm_is_refused_and_a_forced_rebuild_keeps_a_running_vms_files(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "1", "--backend", "vm", "--name", lab)
    vm = f"{lab}-c1"
    files = vm_files(vm)
    image_dir = str(STATE_DIR / "images" / "debian12") + "/"
    from_image = [f for f in files if f.startswith(image_dir)]
    # Its kernel, initrd and its volume's backing file.
    assert len(from_image) == 3, files

    r = labctl("image", "rm", "debian12", check=False)
    assert r.returncode != 0 and f"in use by {lab}" in r.stderr, r.stderr
    assert (STATE_DIR / "images" / "debian12" / "manifest.json").is_file()

    labctl("image", "build", "--force", "debian12")
    assert all(os.path.isfile(f) for f in from_image), from_image
    assert vm_files(vm) == files
    assert labctl("ssh", lab, vm, "--", "cat /proc/version").returncode == 0

    labctl("down", lab)
    # The last lab using that generation went: its files went with it.
    assert not any(os.path.exists(f) for f in from_image)
    assert host_state() == before
