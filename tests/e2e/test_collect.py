"""`labctl collect` on a real lab: every node's journal, a crm_report from each cluster
node, the CIB; and not one byte sequence of the lab's secrets in the archive."""

from __future__ import annotations

import tarfile

from .conftest import STATE_DIR, host_state, labctl


def test_collect_holds_journals_and_crm_reports_and_no_secret(labs, before, tmp_path):
    lab = labs.name()
    labctl("up", "--nodes", "1", "--mode", "remote", "--name", lab)
    out = tmp_path / "evidence.tar.gz"
    labctl("collect", lab, "-o", str(out), timeout=900)
    assert out.stat().st_mode & 0o777 == 0o600

    with tarfile.open(out) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    nodes = [f"{lab}-c1", f"{lab}-c2", f"{lab}-r1"]
    for node in nodes:
        # Since the lab came up: each node's Pacemaker daemons are in it.
        assert b"pacemaker" in members[f"{node}/journal.txt"], node
        # And libvirtd's log of the container's start, from the host.
        assert b"starting up" in members[f"{node}/libvirt-lxc.log"], node
    for node in nodes[:2]:
        report = [n for n in members if n.startswith(f"{node}/crm_report/")]
        assert report, (node, sorted(members))
        assert b"<cib" in members[f"{node}/cib.xml"]
    assert b'"name": "' + lab.encode() in members["labctl/lab.json"]

    d = STATE_DIR / "labs" / lab
    secrets = {
        "authkey": (d / "authkey").read_bytes(),
        "corosync key": (d / "corosync-authkey").read_bytes(),
        "fence key": (d / "fence_xvm.key").read_bytes(),
        "lab SSH key": (d / "ssh" / "id_ed25519").read_bytes(),
    }
    for node in nodes:
        host_key = d / "nodes" / node / "upper" / "etc/ssh/ssh_host_ed25519_key"
        secrets[f"{node} host key"] = host_key.read_bytes()
    for what, secret in secrets.items():
        body = [ln for ln in secret.splitlines() if ln and not ln.startswith(b"-----")]
        for name, data in members.items():
            assert secret not in data, (what, name)
            assert not any(ln in data for ln in body if len(ln) >= 32), (what, name)

    labctl("down", lab)
    assert host_state() == before
