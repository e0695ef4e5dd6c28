"""VM disks, kernels and initrds under labs: which lab uses which file (read back
from libvirt), `image rm` refused naming the lab, old generations collected, and
`down` keeping what VM domains use while the QEMU driver does not answer.
Against libvirt's test driver; the QEMU driver "unreachable" is a socket that is not there."""

from __future__ import annotations

import json

import libvirt
import pytest

from labctl import images, lab, state, virt
from labctl.errors import HostError, UsageError
from labctl.plan import make_plan
from labctl.spec import make_spec
from labctl.xml import METADATA_NS, network_xml

TEST = "test:///default"
UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/labctl-test.sock"

VM_DOMAIN = """<domain type='test'>
  <name>{name}</name>
  <memory>65536</memory>
  <os><type>hvm</type><kernel>{kernel}</kernel><initrd>{initrd}</initrd></os>
</domain>"""


@pytest.fixture
def conn(monkeypatch):
    monkeypatch.setenv("LABCTL_LXC_URI", TEST)
    monkeypatch.setenv("LABCTL_QEMU_URI", TEST)
    c = virt.connect(TEST)
    yield c
    for d in virt.lab_domains(c):
        virt.remove_domain(c, d.name)
    for net in virt.lab_networks(c).values():
        virt.remove_network(c, net)
    c.close()


def _fake_image(state_dir):
    d = images.images_dir(state_dir) / "debian12"
    d.mkdir(parents=True)
    layers = {"base": {}, "cluster": {}, "remote": {}}
    manifest = {"created": "now", "checksum": "sha256:1", "layers": layers}
    (d / "manifest.json").write_text(json.dumps(manifest))
    img = images.find_image(state_dir, "debian12")
    assert img is not None
    return img


def _vm_files(v):
    v.disk.parent.mkdir(exist_ok=True)
    for p in (v.disk, v.kernel, v.initrd, v.recipe):
        p.write_text("x")


def _define_vm(conn, name, lab_name, v):
    dom = conn.defineXML(VM_DOMAIN.format(name=name, kernel=v.kernel, initrd=v.initrd))
    meta = f'<lab name="{lab_name}" role="remote" node="{name}" state-dir="/s"/>'
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta, "labctl", METADATA_NS)
    dom.create()


def test_files_in_use_names_the_lab_whose_vm_boots_them(conn, tmp_path):
    img = _fake_image(tmp_path)
    v = images.vm_image_paths(img, "remote")
    _vm_files(v)
    _define_vm(conn, "hv1-r1", "hv1", v)
    used = virt.files_in_use(conn)
    assert used[str(v.kernel)] == {"hv1"} and used[str(v.initrd)] == {"hv1"}


def test_image_rm_is_refused_while_a_vm_uses_it_and_names_the_lab(conn, tmp_path):
    img = _fake_image(tmp_path)
    v = images.vm_image_paths(img, "remote")
    _vm_files(v)
    _define_vm(conn, "hv2-r1", "hv2", v)
    with pytest.raises(UsageError, match="in use by hv2"):
        lab.remove_image(tmp_path, "debian12")
    assert v.disk.is_file()
    virt.remove_domain(conn, "hv2-r1")
    lab.remove_image(tmp_path, "debian12")
    assert not img.dir.exists()


def test_image_rm_names_a_lab_recorded_with_the_image(conn, tmp_path):
    _fake_image(tmp_path)
    p = make_plan(make_spec("hv3", 1), 3, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    with pytest.raises(UsageError, match="in use by hv3"):
        lab.remove_image(tmp_path, "debian12")


def test_image_rm_with_vm_disks_is_refused_when_qemu_cannot_be_asked(conn, tmp_path, monkeypatch):
    img = _fake_image(tmp_path)
    _vm_files(images.vm_image_paths(img, "remote"))
    monkeypatch.setenv("LABCTL_QEMU_URI", UNREACHABLE)
    with pytest.raises(HostError, match="cannot tell whether a VM uses image"):
        lab.remove_image(tmp_path, "debian12")
    assert img.dir.is_dir()


def test_old_vm_generations_go_when_no_lab_uses_them_current_and_used_ones_stay(conn, tmp_path):
    img = _fake_image(tmp_path)
    current = images.vm_image_paths(img, "remote")
    _vm_files(current)
    older = images.Image(img.name, img.dir, {**img.manifest, "created": "before"})
    used, unused = images.vm_image_paths(older, "remote"), images.vm_image_paths(older, "cluster")
    _vm_files(used)
    _vm_files(unused)
    _define_vm(conn, "hv4-r1", "hv4", used)
    gone = lab.collect_vm_garbage(tmp_path)
    assert sorted(gone) == sorted([unused.disk, unused.kernel, unused.initrd, unused.recipe])
    assert all(p.is_file() for v in (current, used) for p in (v.disk, v.kernel, v.initrd))
    virt.remove_domain(conn, "hv4-r1")  # its lab went down
    lab.collect_vm_garbage(tmp_path)
    assert sorted(p.name for p in current.disk.parent.iterdir()) == sorted(
        p.name for p in (current.disk, current.kernel, current.initrd, current.recipe)
    )


def test_down_with_qemu_unreachable_keeps_the_vm_side_fails_and_the_next_down_finishes(
    conn, tmp_path, monkeypatch
):
    spec = make_spec("hv5", 1, mode="remote", backend="vm", cluster_nodes=1)
    p = make_plan(spec, 7, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    p.disks_dir.mkdir()
    (p.disks_dir / "hv5-r1.qcow2").write_text("disk")
    virt.create_network(conn, network_xml(p.network, p.nodes))
    monkeypatch.setenv("LABCTL_QEMU_URI", UNREACHABLE)
    with pytest.raises(HostError) as err:
        lab._down("hv5", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert UNREACHABLE in msg and "`labctl down hv5` again" in msg
    assert (p.disks_dir / "hv5-r1.qcow2").is_file() and p.record.is_file()
    assert "hv5" in virt.lab_networks(conn)
    monkeypatch.setenv("LABCTL_QEMU_URI", TEST)
    r = lab._down("hv5", tmp_path)
    assert r.network and r.directory
    assert not p.dir.exists() and "hv5" not in virt.lab_networks(conn)


def test_down_of_a_container_lab_with_qemu_unreachable_still_removes_everything(
    conn, tmp_path, monkeypatch
):
    p = make_plan(make_spec("hv6", 1), 8, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    virt.create_network(conn, network_xml(p.network, p.nodes))
    monkeypatch.setenv("LABCTL_QEMU_URI", UNREACHABLE)
    r = lab._down("hv6", tmp_path)
    assert r.network and r.directory and not p.dir.exists()
