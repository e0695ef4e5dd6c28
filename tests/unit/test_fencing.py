from pathlib import Path

from labctl import fencing
from labctl import pacemaker as pcmk
from labctl.plan import make_plan
from labctl.spec import make_spec

URI = {"lxc": "lxc:///", "vm": "qemu:///system"}.__getitem__


def _plan(index: int, mode: str = "cluster", backend: str = "lxc"):
    return make_plan(make_spec("demo", 3, mode=mode, backend=backend), index, Path("/s"))


def test_each_lab_gets_its_own_multicast_address_port_bridge_and_key():
    a = fencing.fence_plans(_plan(1), URI)[0]
    b = fencing.fence_plans(_plan(2), URI)[0]
    assert (a.address, a.port, a.interface) == ("225.0.213.1", 1230, "lcbr1")
    assert (b.address, b.port, b.interface) == ("225.0.213.2", 1231, "lcbr2")
    assert a.key_file == Path("/s/labs/demo/fence_xvm.key")


def test_fence_virtd_config_binds_the_lab_bridge_with_its_key_and_backend():
    p = _plan(3)
    fp = fencing.fence_plans(p, URI)[0]
    conf = fencing.virtd_config(p, fp, "/usr/lib/x/fence-virt")
    for line in (
        'listener = "multicast";',
        'backend = "libvirt";',
        'module_path = "/usr/lib/x/fence-virt";',
        'key_file = "/s/labs/demo/fence_xvm.key";',
        'address = "225.0.213.3";',
        'port = "1232";',
        'interface = "lcbr3";',
        'uri = "lxc:///";',
    ):
        assert line in conf
    assert conf.count("{") == conf.count("}")


def test_stonith_device_is_pinned_to_the_labs_fenceable_nodes():
    p = _plan(1)
    fp = fencing.fence_plans(p, URI)[0]
    text = pcmk.to_text(fencing.stonith_primitive(fp))
    assert 'class="stonith"' in text and 'type="fence_xvm"' in text
    assert 'name="pcmk_host_list" value="demo-c1 demo-c2 demo-c3"' in text
    assert 'name="pcmk_host_check" value="static-list"' in text
    assert 'name="multicast_address" value="225.0.213.1"' in text
    assert 'name="key_file" value="/etc/cluster/fence_xvm.key"' in text


def test_a_mixed_lab_gets_a_second_daemon_and_device_for_its_vms():
    p = _plan(4, mode="remote", backend="vm")  # container cluster, VM remote nodes
    lxc, vm = fencing.fence_plans(p, URI)
    assert (lxc.uri, lxc.nodes, lxc.stonith_id) == ("lxc:///", ("demo-c1", "demo-c2"), "fence-xvm")
    assert (vm.uri, vm.nodes, vm.stonith_id) == (
        "qemu:///system",
        ("demo-r1", "demo-r2", "demo-r3"),
        "fence-xvm-vm",
    )
    assert (vm.address, vm.port) == ("225.0.214.4", 1229 + 256 + 4)
    assert (lxc.address, lxc.port) == ("225.0.213.4", 1233)
    assert vm.key_file == lxc.key_file and vm.config != lxc.config and vm.pidfile != lxc.pidfile
    assert vm.config in fencing.config_paths(p.dir) and lxc.config in fencing.config_paths(p.dir)
    text = pcmk.to_text(fencing.stonith_primitive(vm))
    assert 'id="fence-xvm-vm"' in text
    assert 'name="pcmk_host_list" value="demo-r1 demo-r2 demo-r3"' in text


def test_guest_nodes_get_no_fence_device():
    p = _plan(1, mode="guest", backend="vm")
    (only,) = fencing.fence_plans(p, URI)
    assert only.nodes == ("demo-c1", "demo-c2")


def test_fence_virtd_acts_only_on_its_labs_nodes_asked_from_its_subnet():
    p = _plan(5, mode="remote", backend="vm")
    lxc, vm = fencing.fence_plans(p, URI)
    conf = fencing.virtd_config(p, lxc, "/usr/lib/x/fence-virt")
    groups = conf[conf.index("groups {") :]
    targets = [line.strip() for line in groups.splitlines() if "uuid =" in line]
    assert targets == ['uuid = "demo-c1";', 'uuid = "demo-c2";']
    ips = [line.split('"')[1] for line in groups.splitlines() if "ip =" in line]
    # every address of the lab's /24 but the host's own (.1): nodes and CTS's test addresses
    subnet = p.network.subnet
    assert ips == [str(subnet.network_address + k) for k in range(2, 255)]
    assert 'name = "demo";' in groups and groups.count("{") == groups.count("}")
    vm_targets = [k_v for k_v in fencing.group_members(p, vm) if k_v[0] == "uuid"]
    assert vm_targets == [("uuid", "demo-r1"), ("uuid", "demo-r2"), ("uuid", "demo-r3")]
