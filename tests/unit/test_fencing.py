from pathlib import Path

from labctl import fencing
from labctl import pacemaker as pcmk
from labctl.plan import make_plan
from labctl.spec import make_spec


def _plan(index: int, mode: str = "cluster"):
    return make_plan(make_spec("demo", 3, mode=mode), index, Path("/s"))


def test_each_lab_gets_its_own_multicast_address_port_bridge_and_key():
    a = fencing.fence_plan(_plan(1), "lxc:///")
    b = fencing.fence_plan(_plan(2), "lxc:///")
    assert (a.address, a.port, a.interface) == ("225.0.213.1", 1230, "lcbr1")
    assert (b.address, b.port, b.interface) == ("225.0.213.2", 1231, "lcbr2")
    assert a.key_file == Path("/s/labs/demo/fence_xvm.key")


def test_fence_virtd_config_binds_the_lab_bridge_with_its_key_and_backend():
    p = _plan(3)
    fp = fencing.fence_plan(p, "lxc:///")
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
    fp = fencing.fence_plan(p, "lxc:///")
    text = pcmk.to_text(fencing.stonith_primitive(p, fp))
    assert 'class="stonith"' in text and 'type="fence_xvm"' in text
    assert 'name="pcmk_host_list" value="demo-c1 demo-c2 demo-c3"' in text
    assert 'name="pcmk_host_check" value="static-list"' in text
    assert 'name="multicast_address" value="225.0.213.1"' in text
    assert 'name="key_file" value="/etc/cluster/fence_xvm.key"' in text
