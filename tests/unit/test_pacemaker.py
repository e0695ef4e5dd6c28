import re
import subprocess
from pathlib import Path

import pytest

from labctl import pacemaker as pcmk
from labctl.plan import make_plan
from labctl.spec import make_spec

DATA = Path(__file__).parent.parent / "data"


def _plan(n: int, mode: str = "cluster"):
    return make_plan(make_spec("demo", n, mode=mode), 1, Path("/s"))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16])
def test_corosync_conf_lists_every_cluster_node_once_by_name_and_address(n):
    conf = pcmk.corosync_conf(_plan(n))
    names = re.findall(r"^\s+name: (\S+)", conf, re.M)
    assert names == [f"demo-c{i}" for i in range(1, n + 1)]
    assert re.findall(r"nodeid: (\d+)", conf) == [str(i) for i in range(1, n + 1)]
    assert re.findall(r"ring0_addr: (\S+)", conf) == [f"10.213.1.{10 + i}" for i in range(1, n + 1)]
    assert "transport: knet" in conf
    assert "cluster_name: demo" in conf
    assert ("two_node: 1" in conf) == (n == 2)
    assert conf.count("{") == conf.count("}")


def test_corosync_conf_drops_realtime_scheduling_only_when_asked():
    assert "sched_rr" not in pcmk.corosync_conf(_plan(2))
    conf = pcmk.corosync_conf(_plan(2), realtime=False)
    assert re.search(r"^system \{\n\s+sched_rr: no\n\}", conf, re.M)
    assert conf.count("{") == conf.count("}")


def test_corosync_conf_turns_the_blackbox_off_and_still_logs_to_the_journal():
    conf = pcmk.corosync_conf(_plan(3))
    logging = re.search(r"^logging \{\n(.*?)^\}", conf, re.M | re.S)
    assert logging
    options = dict(re.findall(r"^\s+(\w+): (\S+)$", logging.group(1), re.M))
    assert options["blackbox"] == "off"
    assert options["to_syslog"] == "yes"


def test_corosync_conf_of_a_guest_lab_holds_only_its_cluster_nodes():
    conf = pcmk.corosync_conf(_plan(4, "guest"))
    assert re.findall(r"^\s+name: (\S+)", conf, re.M) == ["demo-c1", "demo-c2"]
    assert "two_node: 1" in conf


def test_remote_primitive_points_at_the_node_address_and_port():
    p = _plan(2, "remote")
    text = pcmk.to_text(pcmk.remote_primitive(p.nodes[2], 3121))
    assert 'class="ocf"' in text and 'provider="pacemaker"' in text and 'type="remote"' in text
    assert 'name="server" value="10.213.1.31"' in text
    assert 'name="port" value="3121"' in text


def test_a_vm_remote_connection_waits_for_a_boot_and_a_container_one_does_not():
    vm = make_plan(make_spec("demo", 1, mode="remote", backend="vm"), 1, Path("/s")).nodes[-1]
    text = pcmk.to_text(pcmk.remote_primitive(vm, 3121))
    assert re.search(r'<op [^>]*name="start" [^>]*timeout="180s"', text)
    container = _plan(2, "remote").nodes[2]
    assert 'name="start"' not in pcmk.to_text(pcmk.remote_primitive(container, 3121))


def test_lab_properties_say_stonith_enabled_explicitly():
    assert pcmk.lab_properties(False)["stonith-enabled"] == "false"
    assert pcmk.lab_properties(True)["stonith-enabled"] == "true"
    assert pcmk.lab_properties(True)["dc-deadtime"] == "2s"
    assert "start-failure-is-fatal" not in pcmk.lab_properties(True)
    assert pcmk.lab_properties(True, guests=True)["start-failure-is-fatal"] == "false"


def test_crm_mon_of_a_healthy_three_node_cluster():
    view = pcmk.parse_crm_mon((DATA / "crm_mon-cluster-3.xml").read_text())
    assert view.dc and view.quorate
    assert view.stonith_enabled is False
    assert {n: v.state for n, v in view.nodes.items()} == {
        "pc-c1": "Online",
        "pc-c2": "Online",
        "pc-c3": "Online",
    }
    assert pcmk.not_ready(view, dict.fromkeys(view.nodes, "cluster")) == {}


def test_crm_mon_with_a_stopped_cluster_node():
    view = pcmk.parse_crm_mon((DATA / "crm_mon-cluster-c2-stopped.xml").read_text())
    assert view.nodes["pc-c2"].state == "OFFLINE"
    missing = pcmk.not_ready(view, {"pc-c1": "cluster", "pc-c2": "cluster"})
    assert missing == {"pc-c2": "OFFLINE"}


def test_crm_mon_of_a_remote_lab_with_one_remote_stopped():
    view = pcmk.parse_crm_mon((DATA / "crm_mon-remote-r2-stopped.xml").read_text())
    states = {n: v.state for n, v in view.nodes.items()}
    assert states == {
        "rm-c1": "Online",
        "rm-c2": "Online",
        "rm-r1": "RemoteOnline",
        "rm-r2": "RemoteOFFLINE",
        "rm-r3": "RemoteOnline",
    }
    assert view.resources["rm-r1"].agent == "ocf:pacemaker:remote"
    assert view.resources["rm-r1"].nodes == ("rm-c1",)
    assert not view.resources["rm-r2"].active
    expected = {"rm-c1": "cluster", "rm-r1": "remote", "rm-r2": "remote", "rm-r9": "remote"}
    assert pcmk.not_ready(view, expected) == {
        "rm-r2": "RemoteOFFLINE",
        "rm-r9": "not in the cluster yet",
    }


def test_a_remote_node_is_not_taken_for_a_cluster_node():
    view = pcmk.parse_crm_mon((DATA / "crm_mon-remote-r2-stopped.xml").read_text())
    assert "expected a cluster node" in pcmk.not_ready(view, {"rm-r1": "cluster"})["rm-r1"]


def test_no_dc_means_nothing_is_ready():
    xml = '<pacemaker-result><summary><current_dc present="false"/></summary><nodes/></pacemaker-result>'
    assert pcmk.not_ready(pcmk.parse_crm_mon(xml), {"a": "cluster"}) == {"a": "no DC elected yet"}


def test_properties_parsed_from_crm_config():
    xml = (
        '<crm_config><cluster_property_set id="cib-bootstrap-options">'
        '<nvpair id="a" name="stonith-enabled" value="false"/>'
        '<nvpair id="b" name="dc-deadtime" value="2s"/></cluster_property_set></crm_config>'
    )
    assert pcmk.parse_properties(xml) == {"stonith-enabled": "false", "dc-deadtime": "2s"}


def _fake_node(tmp_path: Path, managers: list[str], binaries: list[str]) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "log"
    for m in managers:
        (bindir / m).write_text(f'#!/bin/sh\necho "{m} $*" >> {log}\n')
        (bindir / m).chmod(0o755)
    for b in binaries:
        (bindir / b).write_text("#!/bin/sh\n")
        (bindir / b).chmod(0o755)
    # Only the fakes on PATH: the host's own package manager must never be reached.
    return {"PATH": str(bindir)}


@pytest.mark.parametrize(
    ("managers", "expected"),
    [
        (["apt-get"], "apt-get install -y -q pacemaker-remote"),
        (["dnf"], "dnf install -y pacemaker-remote"),
        (["zypper"], "zypper --non-interactive install pacemaker-remote"),
    ],
)
def test_ensure_package_uses_the_nodes_package_manager(tmp_path, managers, expected):
    env = _fake_node(tmp_path, managers, [])
    cmd = pcmk.ensure_package_command("pacemaker-remote", "no-such-remoted")
    subprocess.run(["/bin/sh", "-c", cmd], env=env, check=True)
    assert (tmp_path / "log").read_text().strip() == expected


def test_ensure_package_is_a_no_op_when_the_binary_is_there(tmp_path):
    env = _fake_node(tmp_path, ["apt-get"], ["fake-remoted"])
    cmd = pcmk.ensure_package_command("pacemaker-remote", "fake-remoted")
    subprocess.run(["/bin/sh", "-c", cmd], env=env, check=True)
    assert not (tmp_path / "log").exists()


def test_ensure_package_without_a_package_manager_fails_clearly(tmp_path):
    env = _fake_node(tmp_path, [], [])
    cmd = pcmk.ensure_package_command("pacemaker-remote", "no-such-remoted")
    r = subprocess.run(["/bin/sh", "-c", cmd], env=env, capture_output=True, text=True)
    assert r.returncode == 127
    assert "no apt-get, dnf or zypper" in r.stderr


def test_guest_primitive_is_virtualdomain_with_remote_node_and_lxc_options():
    p = _plan(2, "guest")
    g = p.nodes[2]
    text = pcmk.to_text(pcmk.guest_primitive(g, "/x/demo-g1.xml", "lxc:///", 3121, True))
    assert 'id="vm-demo-g1"' in text and 'type="VirtualDomain"' in text
    assert 'provider="heartbeat"' in text
    for pair in (
        'name="config" value="/x/demo-g1.xml"',
        'name="hypervisor" value="lxc:///"',
        'name="force_stop" value="true"',
        'name="remote-node" value="demo-g1"',
        'name="remote-addr" value="10.213.1.31"',
    ):
        assert pair in text
    vm = pcmk.to_text(pcmk.guest_primitive(g, "/x", "qemu:///system", 3121, False))
    assert "force_stop" not in vm


def test_crm_mon_of_a_guest_lab():
    view = pcmk.parse_crm_mon((DATA / "crm_mon-guest-3.xml").read_text())
    assert {n: v.state for n, v in view.nodes.items() if n.startswith("gu-g")} == {
        "gu-g1": "GuestOnline",
        "gu-g2": "GuestOnline",
        "gu-g3": "GuestOnline",
    }
    assert view.nodes["gu-g1"].container == "vm-gu-g1"
    assert view.resources["vm-gu-g1"].agent == "ocf:heartbeat:VirtualDomain"
    assert view.resources["vm-gu-g1"].nodes == ("gu-c1",)
    assert pcmk.not_ready(view, {"gu-g1": "guest", "gu-c1": "cluster"}) == {}
    # A remote node where a guest was expected is not ready.
    fake = pcmk.ClusterView("gu-c1", True, {"x": pcmk.PcmkNode("x", "remote", True)})
    assert pcmk.not_ready(fake, {"x": "guest"}) == {"x": "online, but not as a guest node"}


def test_labs_do_not_throttle_on_the_shared_hosts_load_and_guest_labs_fence_concurrently():
    for guests in (False, True):
        assert pcmk.lab_properties(True, guests=guests)["load-threshold"] == "10000%"
    assert pcmk.lab_properties(True, guests=True)["concurrent-fencing"] == "true"
    assert "concurrent-fencing" not in pcmk.lab_properties(True)


def test_a_guest_writes_no_utilization_and_stays_where_it_was_recovered():
    g = _plan(1, "guest").nodes[2]
    text = pcmk.to_text(pcmk.guest_primitive(g, "/x/demo-g1.xml", "lxc:///", 3121, True))
    for what in ("cpu", "hv_memory", "host_memory"):
        assert f'name="autoset_utilization_{what}" value="false"' in text
    assert 'name="resource-stickiness" value="1"' in text


def test_no_cluster_node_probes_a_guests_domain():
    rules = [pcmk.to_text(x) for x in pcmk.no_discovery("vm-demo-g1", ["demo-c1", "demo-c2"])]
    assert len(rules) == 2 and len({r for r in rules}) == 2
    for node, rule in zip(("demo-c1", "demo-c2"), rules, strict=True):
        assert f'node="{node}"' in rule and 'rsc="vm-demo-g1"' in rule
        assert 'resource-discovery="never"' in rule and 'score="0"' in rule
