"""Names read back from libvirt on the real host: a network `labctl-..` (no
labctl made it) must not make `down --all` remove anything but the state
directory's own labs."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import libvirt

from labctl import mounts

from .conftest import STATE_DIR, host_state, labctl

FOREIGN_NET = """<network>
  <name>labctl-..</name>
  <bridge name='hpforeign0' stp='off' delay='0'/>
  <ip address='192.0.2.1' netmask='255.255.255.240'/>
</network>"""


def _state_dir_with_image() -> Path:
    """A fresh state directory under /var/lib/labctl (libvirtd sees it there) with
    the test state directory's image hard-linked in, so no image is built again."""
    d = Path(tempfile.mkdtemp(prefix="hp-e2e-", dir="/var/lib/labctl"))
    image = STATE_DIR / "images" / "debian12"
    if (image / "manifest.json").is_file():
        (d / "images").mkdir()
        subprocess.run(["cp", "-al", str(image), str(d / "images")], check=True)
    (d / "cache").mkdir()
    (d / "cache" / "precious").write_text("keep\n")
    return d


def _files(d: Path, below: str) -> set[str]:
    return {str(p.relative_to(d)) for p in (d / below).rglob("*")}


def test_down_all_with_a_foreign_labctl_dotdot_network_removes_only_its_own_lab(labs):
    lab = labs.name()
    state_dir = _state_dir_with_image()
    conn = libvirt.open("lxc:///")
    try:
        conn.networkDefineXML(FOREIGN_NET)  # defined, left inactive
        labctl("up", "--nodes", "1", "--name", lab, "--no-fencing", "--state-dir", str(state_dir))
        kept = _files(state_dir, "images") | _files(state_dir, "cache")

        listed = labctl("list", "--state-dir", str(state_dir))
        assert lab in listed.stdout
        assert "labctl-..: not a lab name" in listed.stderr

        # Exit 0: every lab of this state directory is gone; the foreign network
        # is not labctl's to remove, and is named in a note.
        r = labctl("down", "--all", "--state-dir", str(state_dir))
        assert "network labctl-..: not a lab name, foreign" in r.stderr
        assert "Traceback" not in r.stderr
        assert _files(state_dir, "images") | _files(state_dir, "cache") == kept
        assert (state_dir / "cache" / "precious").read_text() == "keep\n"
        assert not (state_dir / "labs" / lab).exists()
        assert "labctl-.." in conn.listDefinedNetworks()
        assert not any(d.endswith(f"/{lab}-c1") for d in host_state().domains)
        # Labs of other state directories (other tests, other users) are skipped,
        # each with a note; only this one is removed.
        removed = [line for line in r.stdout.splitlines() if line.startswith("lab ")]
        assert removed == [line for line in removed if line.startswith(f"lab {lab}:")] != []
    finally:
        try:
            net = conn.networkLookupByName("labctl-..")
            if net.isActive():
                net.destroy()
            net.undefine()
        except libvirt.libvirtError:
            pass
        conn.close()
        labctl("down", lab, "--state-dir", str(state_dir), check=False)
        if not mounts.mounts_under(state_dir):
            shutil.rmtree(state_dir)
    # Not `host_state() == before`: on a shared host other users' labs come and go
    # meanwhile. Nothing of this test's own is left.
    after = host_state()
    assert "labctl-.." not in after.networks
    for objects in (after.domains, after.networks, after.pools, after.mounts, after.fence_virtds):
        assert not [o for o in objects if lab in o or state_dir.name in o]
    assert not state_dir.exists()
