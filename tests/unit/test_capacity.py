from pathlib import Path

from labctl import capacity
from labctl.plan import make_plan
from labctl.spec import make_spec

STATE = Path("/var/lib/labctl")


def _plan(nodes, mode="guest", backend="lxc", memory=512):
    return make_plan(
        make_spec("big", nodes, mode=mode, backend=backend, memory_mib=memory), 1, STATE
    )


def test_the_template_lists_what_setup_host_raises():
    want = {s.key: s.want for s in capacity.recommended()}
    assert want["fs.inotify.max_user_instances"] >= 8192
    assert want["kernel.keys.maxkeys"] >= 2000
    assert set(capacity.PER_CONTAINER) <= set(want)


def test_a_lab_that_fits_in_memory_is_not_refused():
    assert capacity.memory_shortfall(_plan(100), available_mib=8 * 1024) is None


def test_a_lab_too_big_for_memory_is_refused_saying_how_many_would_fit():
    msg = capacity.memory_shortfall(_plan(300), available_mib=4096)
    # 4096 - 1024 reserved - 2 cluster nodes * 170 = 2732 MiB, 24 MiB a guest
    assert msg is not None and "113 guest nodes would fit" in msg
    assert "\n" not in msg


def test_vm_nodes_count_their_memory():
    msg = capacity.memory_shortfall(_plan(8, mode="remote", backend="vm"), available_mib=4096)
    assert msg is not None and "remote nodes would fit" in msg
    assert capacity.node_mib(_plan(1, mode="remote", backend="vm"))["big-r1"] == 512 + 64


def test_shared_limits_refuse_what_more_containers_would_exceed():
    limits = {"fs.inotify.max_user_instances": 128, "kernel.keys.maxkeys": 2000}
    in_use = {"fs.inotify.max_user_instances": 30, "kernel.keys.maxkeys": 7}
    assert capacity.limit_shortfalls(10, limits, in_use) == []
    (short,) = capacity.limit_shortfalls(42, limits, in_use)
    assert "fs.inotify.max_user_instances" in short and "42 more containers" in short


def test_raised_limits_carry_a_hundred_guests():
    limits = {s.key: s.want for s in capacity.recommended()}
    assert capacity.limit_shortfalls(102, limits, {}) == []


def test_key_users_are_parsed_per_uid():
    text = "    0:    80 79/79 74/1000000 1498/25000000\n  998:     7 7/7 7/200 63/20000\n"
    assert capacity.parse_key_users(text) == {0: (74, 1498), 998: (7, 63)}
