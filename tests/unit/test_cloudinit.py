import json

import pycdlib
import pytest

from labctl.cloudinit import seed_documents, write_seed
from labctl.plan import make_plan
from labctl.provision import node_files
from labctl.spec import make_spec


@pytest.fixture
def documents(tmp_path):
    p = make_plan(make_spec("demo", 1, mode="remote", backend="vm", image="/c.qcow2"), 1, tmp_path)
    node = p.nodes[-1]
    files = node_files(
        p,
        node,
        host_name="host",
        host_key_private=b"-----PRIVATE HOST KEY-----\n",
        host_key_public="ssh-ed25519 HOSTKEY root@demo-r1",
        lab_key_private=b"-----PRIVATE LAB KEY-----\n",
        lab_key_public="ssh-ed25519 LABKEY labctl-demo",
        known_hosts="demo-c1 ssh-ed25519 K\n",
    )
    docs = seed_documents(
        p,
        node,
        files,
        host_key_private=b"-----PRIVATE HOST KEY-----\n",
        host_key_public="ssh-ed25519 HOSTKEY root@demo-r1",
        lab_key_public="ssh-ed25519 LABKEY labctl-demo",
    )
    return node, docs


def test_user_data_is_cloud_config_with_the_pinned_host_key_and_root_login(documents):
    node, docs = documents
    text = docs["user-data"].decode()
    assert text.startswith("#cloud-config\n")
    cfg = json.loads(text.split("\n", 1)[1])
    assert cfg["hostname"] == node.name
    assert cfg["ssh_keys"] == {
        "ed25519_private": "-----PRIVATE HOST KEY-----\n",
        "ed25519_public": "ssh-ed25519 HOSTKEY root@demo-r1",
    }
    assert (cfg["ssh_deletekeys"], cfg["ssh_genkeytypes"], cfg["disable_root"]) == (True, [], False)
    assert cfg["ssh_authorized_keys"] == ["ssh-ed25519 LABKEY labctl-demo"]


def test_write_files_carry_the_lab_files_but_leave_what_cloud_init_sets(documents):
    _node, docs = documents
    cfg = json.loads(docs["user-data"].decode().split("\n", 1)[1])
    by_path = {f["path"]: f for f in cfg["write_files"]}
    assert "/etc/hosts" in by_path and "/root/.ssh/id_ed25519" in by_path
    assert by_path["/root/.ssh/id_ed25519"]["permissions"] == "0600"
    assert by_path["/etc/hosts"]["permissions"] == "0644"
    assert not {"/etc/hostname", "/etc/ssh/ssh_host_ed25519_key"} & set(by_path)


def test_meta_data_and_network_config_name_the_node_and_its_mac(documents):
    node, docs = documents
    meta = json.loads(docs["meta-data"])
    assert meta == {"instance-id": f"labctl-demo-{node.name}", "local-hostname": node.name}
    net = json.loads(docs["network-config"])
    assert net["ethernets"]["lab0"] == {"match": {"macaddress": node.mac}, "dhcp4": True}


def test_seed_is_an_iso_labelled_cidata_with_rock_ridge_names_and_tight_mode(documents, tmp_path):
    _node, docs = documents
    seed = tmp_path / "seed.img"
    write_seed(seed, docs)
    assert seed.stat().st_mode & 0o777 == 0o600
    iso = pycdlib.PyCdlib()
    iso.open(str(seed))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        for name, data in docs.items():
            import io

            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path="/" + name)
            assert out.getvalue() == data
    finally:
        iso.close()
