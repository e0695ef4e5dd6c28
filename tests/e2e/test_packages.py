"""Extra packages and bare nodes: `up --packages crmsh --bare` gives nodes with crmsh and
no cluster (for tools that set one up themselves); `down` leaves nothing but the
cached layer, which belongs to the image."""

from __future__ import annotations

import json

from .conftest import STATE_DIR, host_state, labctl, labctl_json


def test_bare_nodes_with_crmsh_have_it_and_no_cluster(labs, before):
    lab = labs.name()
    up = labctl_json("up", "--nodes", "2", "--packages", "crmsh", "--bare", "--name", lab)
    assert up["bare"] and up["packages"] == ["crmsh"]
    assert [n["domain"] for n in up["nodes"]] == ["running", "running"]
    assert any("bare lab" in note for note in up["notes"])

    crm = labctl("exec", lab, "--json", "--", "crm --version")
    results = json.loads(crm.stdout)
    assert [r["status"] for r in results] == [0, 0], crm.stdout
    assert all("crm" in r["stdout"] for r in results)

    # No cluster: no corosync.conf (Debian ships one: removed), no CIB, no authkey.
    probe = "test ! -e /etc/corosync/corosync.conf && test ! -e /etc/pacemaker/authkey"
    probe += " && test ! -e /var/lib/pacemaker/cib/cib.xml && ! systemctl -q is-active corosync"
    labctl("exec", lab, "--", probe)
    # Fencing is there for the user's own setup: the key on every cluster node.
    labctl("exec", lab, "--", "test -s /etc/cluster/fence_xvm.key")

    refused = labctl("fence", lab, f"{lab}-c1", check=False)
    assert refused.returncode != 0
    assert "is bare" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    layers = list((STATE_DIR / "images" / "debian12" / "packages").iterdir())
    assert any(d.name.startswith("cluster-") for d in layers)

    labctl("down", lab)
    assert host_state() == before
