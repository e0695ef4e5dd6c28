"""labctl as a library, against real libvirt: up, run, run_all, crm_mon, snapshot,
restore, reset, down."""

from __future__ import annotations

import labctl

from .conftest import STATE_DIR, host_state


def test_the_api_makes_a_remote_lab_runs_commands_and_its_context_takes_it_down(labs, before):
    name = labs.name()  # the fixture takes it down too, should the context fail to
    with labctl.up(nodes=1, mode="remote", name=name, state_dir=STATE_DIR) as lab:
        assert [(n.name, n.role) for n in lab.nodes] == [
            (f"{name}-c1", "cluster"),
            (f"{name}-c2", "cluster"),
            (f"{name}-r1", "remote"),
        ]
        results = lab.run_all("hostname")
        assert [(r.node, r.status, r.stdout.strip()) for r in results] == [
            (n.name, 0, n.name) for n in lab.nodes
        ]
        cluster = lab.run_all("cat /etc/corosync/corosync.conf >/dev/null", role="cluster")
        assert [r.node for r in cluster] == [f"{name}-c1", f"{name}-c2"]
        assert all(r.ok for r in cluster)

        failed = lab.run(lab.nodes[2], "echo oops >&2; exit 3")
        assert (failed.status, failed.stderr, failed.ok) == (3, "oops\n", False)

        view = lab.crm_mon()
        assert view.quorate
        assert {n: v.state for n, v in view.nodes.items()} == {
            f"{name}-c1": "Online",
            f"{name}-c2": "Online",
            f"{name}-r1": "RemoteOnline",
        }
        assert labctl.Lab(name, STATE_DIR).status().mode == "remote"

        # Snapshots: a resource added after one is gone once it is restored, and after
        # a reset (to `up`'s own snapshot); every node is online again each time.
        lab.snapshot("clean")
        assert [s.name for s in lab.snapshots()] == ["up", "clean"]
        add = "crm_resource --resource api-dummy --get-parameter target-role >/dev/null 2>&1 || "
        add += 'cibadmin --create -o resources -X \'<primitive id="api-dummy" '
        add += 'class="ocf" provider="pacemaker" type="Dummy"/>\''
        for back in (lambda: lab.restore("clean"), lab.reset):
            assert lab.run(f"{name}-c1", add).ok
            assert "api-dummy" in lab.crm_mon().resources
            back()
            view = lab.crm_mon()
            assert "api-dummy" not in view.resources
            assert view.quorate and all(n.online for n in view.nodes.values()), view
    assert host_state() == before
    assert not (STATE_DIR / "labs" / name).exists()  # snapshots went with the lab
