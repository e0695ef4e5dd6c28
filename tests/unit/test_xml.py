import os
import re
from pathlib import Path

import pytest
from lxml import etree

from labctl.plan import make_plan
from labctl.spec import make_spec
from labctl.xml import (
    LabMetadata,
    Mount,
    domain_snapshot_xml,
    lxc_domain_xml,
    metadata_element,
    network_xml,
    parse_metadata,
)

SCHEMAS = Path("/usr/share/libvirt/schemas")
DATA = Path(__file__).parent.parent / "data"
STATE = Path("/var/lib/labctl")


def schema(name: str) -> etree.RelaxNG:
    if not (SCHEMAS / f"{name}.rng").exists():
        pytest.fail(f"libvirt's schemas are missing ({SCHEMAS}): run scripts/setup")
    return etree.RelaxNG(etree.parse(str(SCHEMAS / f"{name}.rng")))


def assert_valid(name: str, text: str) -> None:
    rng = schema(name)
    doc = etree.fromstring(text.encode())
    assert rng.validate(doc), rng.error_log


def golden(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("LABCTL_REGOLD"):
        path.write_text(text)
    assert text == path.read_text()


def plan(mode: str = "cluster", nodes: int = 3):
    return make_plan(make_spec("demo", nodes, mode=mode), 1, STATE)


def test_network_xml_is_valid_isolated_and_fixes_every_address():
    p = plan("guest")
    text = network_xml(p.network, p.nodes)
    assert_valid("network", text)
    doc = etree.fromstring(text.encode())
    assert doc.find("forward") is None
    hosts = {(h.get("name"), h.get("mac"), h.get("ip")) for h in doc.iter("host")}
    assert hosts == {(n.name, n.mac, str(n.ip)) for n in p.nodes}
    golden("network-demo-guest.xml", text)


def test_nat_network_forwards():
    p = make_plan(make_spec("demo", 1, network="nat"), 1, STATE)
    text = network_xml(p.network, p.nodes)
    assert_valid("network", text)
    assert etree.fromstring(text.encode()).find("forward").get("mode") == "nat"


@pytest.mark.parametrize("legacy", [True, False])
def test_lxc_domain_xml_is_valid(legacy):
    p = plan()
    text = lxc_domain_xml(p, p.nodes[0], legacy_cgroups=legacy)
    assert_valid("domain", text)
    dom = etree.fromstring(text.encode())
    args = [a.text for a in dom.iter("initarg")]
    assert bool(args) == legacy
    # On a hybrid host PID 1 is labctl's wrapper, which keeps systemd in its own cgroups.
    assert dom.findtext("os/init") == ("/usr/local/sbin/labctl-init" if legacy else "/sbin/init")


def test_lxc_domain_xml_golden_with_extra_mounts():
    p = plan("guest")
    text = lxc_domain_xml(
        p,
        p.nodes[0],
        legacy_cgroups=True,
        mounts=(
            Mount("/run/libvirt", "/var/lib/host-libvirt"),
            Mount(str(p.xml_dir), str(p.xml_dir), True),
        ),
    )
    assert_valid("domain", text)
    golden("domain-demo-c1.xml", text)


def test_domain_name_stands_alone_on_its_line():
    # ocf:heartbeat:VirtualDomain reads the name with a line regex.
    p = plan("guest")
    text = lxc_domain_xml(p, p.nodes[2], legacy_cgroups=False)
    assert re.search(r"^\s*<name>demo-g1</name>\s*$", text, re.M)


def test_metadata_round_trips_also_without_namespace():
    meta = LabMetadata(lab="demo", role="guest", node="demo-g1", state_dir="/s")
    text = etree.tostring(metadata_element(meta), encoding="unicode")
    assert parse_metadata(text) == meta
    bare = '<lab name="demo" role="guest" node="demo-g1" state-dir="/s"/>'
    assert parse_metadata(bare) == meta


def test_foreign_metadata_is_rejected():
    with pytest.raises(ValueError):
        parse_metadata('<other xmlns="urn:x"/>')


def test_qemu_domain_pool_and_volume_xml_are_valid():
    from labctl.xml import pool_xml, qemu_domain_xml, volume_xml

    p = make_plan(make_spec("demo", 1, mode="remote", backend="vm"), 1, STATE)
    vm = p.nodes[-1]
    text = qemu_domain_xml(
        p,
        vm,
        domain_type="qemu",
        kernel="/img/vm/remote-vmlinuz",
        initrd="/img/vm/remote-initrd.img",
        pool=p.pool,
        volume=vm.volume,
        seed=str(vm.seed),
    )
    assert_valid("domain", text)
    assert re.search(r"^\s*<name>demo-r1</name>\s*$", text, re.M)
    doc = etree.fromstring(text.encode())
    assert doc.get("type") == "qemu"
    assert "systemd.hostname=demo-r1" in doc.findtext("os/cmdline")
    assert doc.find("devices/disk/source").get("volume") == "demo-r1.qcow2"
    golden("domain-demo-r1-vm.xml", text)
    assert_valid("storagepool", pool_xml(p.pool, str(p.disks_dir)))
    vol = volume_xml(vm.volume, 2 << 30, "/img/vm/remote.qcow2")
    assert_valid("storagevol", vol)
    assert etree.fromstring(vol.encode()).findtext("backingStore/path") == "/img/vm/remote.qcow2"


def test_a_cloud_image_vm_boots_through_its_firmware_not_a_kernel():
    from labctl.xml import qemu_domain_xml

    p = make_plan(make_spec("demo", 1, mode="remote", backend="vm", image="/c.qcow2"), 1, STATE)
    vm = p.nodes[-1]
    text = qemu_domain_xml(
        p,
        vm,
        domain_type="qemu",
        kernel=None,
        initrd=None,
        pool=p.pool,
        volume=vm.volume,
        seed=str(vm.seed),
    )
    assert_valid("domain", text)
    doc = etree.fromstring(text.encode())
    assert doc.find("os/boot").get("dev") == "hd"
    # TCG: a bounded translation cache (QEMU's default is 1 GiB per VM).
    assert doc.findtext("features/tcg/tb-cache") == "128"
    assert doc.find("os/kernel") is None and doc.find("os/cmdline") is None


def test_a_vm_nodes_domain_boots_its_images_kernel_from_its_own_volume_and_seed():
    # What `up` defines and what `upgrade` defines again over another image's VM disk.
    from labctl.images import VmImage
    from labctl.lab import vm_domain_xml

    p = make_plan(make_spec("demo", 1, mode="remote", backend="vm"), 1, STATE)
    node = p.nodes[-1]
    d = Path("/s/images/debian13/vm")
    vm = VmImage(d / "r.qcow2", d / "r-vmlinuz", d / "r-initrd.img", d / "r.recipe")
    text = vm_domain_xml(p, node, vm, emulated=True)
    assert_valid("domain", text)
    doc = etree.fromstring(text.encode())
    assert doc.get("type") == "qemu"
    assert doc.findtext("os/kernel") == str(vm.kernel)
    assert doc.findtext("os/initrd") == str(vm.initrd)
    disk, seed = doc.findall("devices/disk")
    assert (disk.find("source").get("pool"), disk.find("source").get("volume")) == (
        p.pool,
        node.volume,
    )
    assert seed.find("source").get("file") == str(node.seed)
    assert (
        etree.fromstring(vm_domain_xml(p, node, vm, emulated=False).encode()).get("type") == "kvm"
    )
    # A cloud image (no VmImage) boots through its own boot loader.
    assert etree.fromstring(vm_domain_xml(p, node, None, True).encode()).find("os/kernel") is None


def test_a_kvm_domain_has_no_tcg_features():
    from labctl.xml import qemu_domain_xml

    p = make_plan(make_spec("demo", 1, mode="remote", backend="vm"), 1, STATE)
    vm = p.nodes[-1]
    text = qemu_domain_xml(
        p, vm, domain_type="kvm", kernel="/k", initrd="/i", pool=p.pool, volume=vm.volume, seed="/s"
    )
    assert_valid("domain", text)
    assert etree.fromstring(text.encode()).find("features/tcg") is None


def test_a_vm_snapshot_is_an_internal_checkpoint_of_the_volume_not_the_seed():
    text = domain_snapshot_xml("s1", "labctl snapshot 's1' of lab 'demo'")
    assert_valid("domainsnapshot", text)
    doc = etree.fromstring(text.encode())
    assert doc.findtext("name") == "s1"
    assert doc.find("memory").get("snapshot") == "internal"
    assert {d.get("name"): d.get("snapshot") for d in doc.findall("disks/disk")} == {
        "vda": "internal",
        "vdb": "no",
    }
    golden("domainsnapshot-s1.xml", text)


def test_a_stopped_vms_snapshot_keeps_its_disk_only():
    text = domain_snapshot_xml("s1", "d", memory=False)
    assert_valid("domainsnapshot", text)
    assert etree.fromstring(text.encode()).find("memory").get("snapshot") == "no"
