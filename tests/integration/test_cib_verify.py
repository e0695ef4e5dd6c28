"""Every CIB labctl produces passes Pacemaker's own crm_verify, run from the nodes' image."""

import os
from pathlib import Path

import pytest

from labctl import images
from labctl import pacemaker as pcmk
from labctl.plan import make_plan
from labctl.spec import make_spec

STATE_DIR = Path(os.environ.get("LABCTL_STATE_DIR", "/var/lib/labctl"))


@pytest.fixture(scope="module")
def image() -> images.Image:
    if os.geteuid() != 0:
        pytest.fail("crm_verify runs chrooted in the image: run the tests as root")
    img = images.find_image(STATE_DIR, images.DEFAULT_IMAGE)
    if img is None:
        pytest.fail("no base image: run `labctl image build` (scripts/test does)")
    return img


def crm_verify(img: images.Image, cib: str) -> None:
    r = images.run_in_image(img, "cluster", ["crm_verify", "--xml-pipe", "-V"], stdin=cib)
    assert r.returncode == 0, f"crm_verify failed:\n{r.stderr}\n{cib}"


@pytest.mark.parametrize(
    ("n", "backend"), [(1, "lxc"), (2, "lxc"), (5, "lxc"), (20, "lxc"), (2, "vm")]
)
def test_remote_node_resources_pass_crm_verify(image, n, backend):
    p = make_plan(make_spec("demo", n, mode="remote", backend=backend), 1, Path("/s"))
    remotes = [pcmk.remote_primitive(node, 3121) for node in p.nodes if node.role == "remote"]
    cib = pcmk.cib_document(
        remotes, pcmk.lab_properties(False), tuple(n.name for n in p.cluster_nodes)
    )
    crm_verify(image, cib)


def test_crm_verify_really_rejects_a_broken_cib(image):
    p = make_plan(make_spec("demo", 1, mode="remote"), 1, Path("/s"))
    bad = pcmk.remote_primitive(p.nodes[-1], 3121)
    bad.set("class", "nosuchclass")
    r = images.run_in_image(
        image,
        "cluster",
        ["crm_verify", "--xml-pipe"],
        stdin=pcmk.cib_document([bad], pcmk.lab_properties(False)),
    )
    assert r.returncode != 0
    assert "config not valid" in r.stderr


def test_seeded_first_cib_is_valid_and_holds_the_lab_properties(image):
    props = pcmk.lab_properties(False)
    script = (
        f"{pcmk.seed_cib_command(props)} && crm_verify --xml-file {pcmk.CIB_PATH} "
        f"&& stat -c '%U:%G %a' {pcmk.CIB_PATH} && cat {pcmk.CIB_PATH}"
    )
    r = images.run_in_image(image, "cluster", ["sh", "-c", script])
    assert r.returncode == 0, r.stderr
    owner, _, cib = r.stdout.partition("\n")
    assert owner == "hacluster:haclient 600"
    assert pcmk.parse_properties(cib) == props


def test_guest_resources_pass_crm_verify(image):
    p = make_plan(make_spec("demo", 5, mode="guest"), 1, Path("/s"))
    guests = [
        pcmk.guest_primitive(n, f"/s/labs/demo/xml/{n.name}.xml", "lxc:///", 3121, True)
        for n in p.nodes
        if n.role == "guest"
    ]
    props = pcmk.lab_properties(False, guests=True)
    rules = [x for g in guests for x in pcmk.no_discovery(g.get("id"), ["demo-c1"])]
    crm_verify(image, pcmk.cib_document(guests, props, ("demo-c1",), rules))


def test_a_mixed_labs_two_fence_devices_pass_crm_verify(image):
    from labctl import fencing

    p = make_plan(make_spec("demo", 2, mode="remote", backend="vm"), 1, Path("/s"))
    uri = {"lxc": "lxc:///", "vm": "qemu:///system"}.__getitem__
    devices = [fencing.stonith_primitive(fp) for fp in fencing.fence_plans(p, uri)]
    assert [d.get("id") for d in devices] == ["fence-xvm", "fence-xvm-vm"]
    # Devices only, no nodes: with fencing on, crm_verify warns (and fails) that
    # nodes without status are unclean, which says nothing about the devices.
    crm_verify(image, pcmk.cib_document(devices, pcmk.lab_properties(True)))


def test_test_resources_pass_crm_verify(image):
    crm_verify(image, pcmk.cib_document(pcmk.dummy_primitives(4), pcmk.lab_properties(False)))
