"""`labctl net`: argument parsing, the fault state and the host rules made from it."""

from __future__ import annotations

import socket
import struct

import pytest

from labctl import net, netdelay, netfault
from labctl.errors import UsageError
from labctl.netfault import Delay, Link, NetState

LAB = "nt1"
NODES = ["nt1-c1", "nt1-c2", "nt1-c3"]
LINKS_OF = {n: [0] for n in NODES}
MACS = {"nt1-c1": "52:54:00:d5:02:0b", "nt1-c2": "52:54:00:d5:02:0c", "nt1-c3": "52:54:00:d5:02:0d"}
LINKS = {n: [Link(n, 0, m, f"vnet{i}", "lcbr2")] for i, (n, m) in enumerate(MACS.items())}


def run(
    action: str, *args: str, state: NetState | None = None, link: int | None = None
) -> NetState:
    return netfault.apply(state or NetState(), action, list(args), LAB, LINKS_OF, link)


def test_partition_takes_short_and_full_names():
    s = run("partition", "c1", "nt1-c2,c3")
    assert s.groups == (("nt1-c1",), ("nt1-c2", "nt1-c3"))
    assert run("heal", state=s).groups == ()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["c1,c2", "c2,c3"], "nt1-c2 is in two groups"),
        (["c1", "c2"], "nt1-c3 in no group"),
        (["c1", "c2,c9"], "no node 'c9' in lab nt1"),
        (["c1,c2,c3"], "two groups or more"),
        (["c1", ",", "c2,c3"], "empty group"),
    ],
)
def test_bad_partition_is_refused_with_what_to_do(args, says):
    with pytest.raises(UsageError, match=says):
        run("partition", *args)


def test_delay_all_and_one_node_with_jitter():
    s = run("delay", "all", "300ms")
    assert s.delays == {n: Delay(300) for n in NODES}
    s = run("delay", "c2", "1s", "50ms", state=s)
    assert s.delays["nt1-c2"] == Delay(1000, 50)
    assert run("delay", "c2", "0ms", state=s).delays.keys() == {"nt1-c1", "nt1-c3"}
    assert run("clear", state=s).empty


@pytest.mark.parametrize("text", ["300", "3 00ms", "-5ms", "1.5ms", "11s", "fast", "300us"])
def test_bad_durations_are_refused(text):
    with pytest.raises(UsageError, match="bad delay"):
        run("delay", "all", text)


def test_jitter_above_delay_is_refused():
    with pytest.raises(UsageError, match="jitter"):
        run("delay", "all", "100ms", "200ms")


def test_loss_percentages():
    assert run("loss", "all", "10%").losses == {n: 10.0 for n in NODES}
    assert run("loss", "c1", "0.5").losses == {"nt1-c1": 0.5}
    s = run("loss", "all", "10%")
    assert run("loss", "c1", "0%", state=s).losses.keys() == {"nt1-c2", "nt1-c3"}


@pytest.mark.parametrize("text", ["101%", "-1%", "ten", "10%%", "0.125%", ""])
def test_bad_percentages_are_refused(text):
    with pytest.raises(UsageError, match="bad percentage"):
        run("loss", "all", text)


def test_down_and_up_every_link_or_one():
    two = {**LINKS_OF, "nt1-c1": [0, 1]}
    s = netfault.apply(NetState(), "down", ["c1"], LAB, two)
    assert s.down == {("nt1-c1", 0), ("nt1-c1", 1)}
    s = netfault.apply(s, "up", ["c1"], LAB, two, link=1)
    assert s.down == {("nt1-c1", 0)}
    assert netfault.apply(s, "up", ["all"], LAB, two).down == frozenset()
    with pytest.raises(UsageError, match="nt1-c2 has no link 1"):
        netfault.apply(NetState(), "down", ["all"], LAB, two, link=1)


@pytest.mark.parametrize(
    ("action", "args", "link", "says"),
    [
        ("explode", [], None, "unknown net action"),
        ("heal", ["c1"], None, "usage: labctl net nt1 heal"),
        ("delay", ["all"], None, "usage"),
        ("delay", ["all", "1ms"], 1, "--link is for"),
        ("down", ["c1"], -1, "bad --link"),
        ("down", ["nope"], None, "no node 'nope'"),
    ],
)
def test_bad_usage_is_one_clear_error(action, args, link, says):
    with pytest.raises(UsageError, match=says):
        run(action, *args, link=link)


def test_state_round_trips_and_ignores_foreign_names():
    s = NetState(
        groups=(("nt1-c1",), ("nt1-c2", "nt1-c3")),
        delays={"nt1-c1": Delay(200, 20)},
        losses={"nt1-c2": 10.0},
        down=frozenset({("nt1-c3", 0)}),
    )
    assert NetState.from_dict(s.to_dict(), NODES) == s
    d = s.to_dict()
    d["loss"] = {"other-c1": 5}
    assert NetState.from_dict(d, NODES).losses == {}
    assert s.describe() == [
        "partition nt1-c1 | nt1-c2,nt1-c3",
        "delay nt1-c1 200ms ±20ms",
        "loss nt1-c2 10%",
        "down nt1-c3 link 0",
    ]


def test_ruleset_replaces_the_whole_table_and_matches_macs():
    s = NetState(
        groups=(("nt1-c1",), ("nt1-c2", "nt1-c3")),
        losses={"nt1-c2": 12.5},
        down=frozenset({("nt1-c3", 0)}),
    )
    text = netfault.nft_ruleset(LAB, s, LINKS)
    assert text.startswith(
        "table bridge labctl-nt1 {}\ndelete table bridge labctl-nt1\ntable bridge labctl-nt1 {\n"
    )
    assert (
        "ether saddr { 52:54:00:d5:02:0b } ether daddr { 52:54:00:d5:02:0c, 52:54:00:d5:02:0d } "
        'drop comment "partition 1->2"' in text
    )
    assert "ether saddr { 52:54:00:d5:02:0c } numgen random mod 10000 < 1250 drop" in text
    every = netfault.nft_ruleset(LAB, NetState(losses={"nt1-c1": 100.0}), LINKS)
    assert 'ether saddr { 52:54:00:d5:02:0b } drop comment "loss nt1-c1 100%"' in every
    # A cut link: from the node (prerouting), to it from nodes (forward) and the host (output).
    assert text.count('ether saddr 52:54:00:d5:02:0d drop comment "down nt1-c3 link 0"') == 1
    assert text.count('ether daddr 52:54:00:d5:02:0d drop comment "down nt1-c3 link 0"') == 2
    # Never an interface name: a restarted node gets a new one.
    assert "vnet" not in text


def test_rules_refuse_what_libvirt_should_not_have_said():
    bad = {"nt1-c1": [Link("nt1-c1", 0, '52:54:00:00:00:01"; flush ruleset', None, "lcbr2")]}
    with pytest.raises(ValueError, match="not a MAC"):
        netfault.nft_ruleset(LAB, NetState(losses={"nt1-c1": 1.0}), bad)
    bad = {"nt1-c1": [Link("nt1-c1", 0, "52:54:00:00:00:01", None, "lcbr2 -j ACCEPT")]}
    with pytest.raises(ValueError, match="not a bridge"):
        netfault.iptables_rules(LAB, 1, NetState(delays={"nt1-c1": Delay(1)}), bad)


def test_delay_queues_only_the_lab_bridge_and_only_while_set():
    assert netfault.iptables_rules(LAB, 47002, NetState(), LINKS) == []
    s = NetState(delays={"nt1-c1": Delay(300)})
    rules = netfault.iptables_rules(LAB, 47002, s, LINKS)
    assert rules[0] == ["-N", "LABCTL-nt1"]
    assert rules[1][:6] == ["-I", "FORWARD", "-i", "lcbr2", "-o", "lcbr2"]
    assert rules[2] == [
        "-A", "LABCTL-nt1", "-m", "mac", "--mac-source", "52:54:00:d5:02:0b",
        "-j", "NFQUEUE", "--queue-num", "47002", "--queue-bypass",
    ]  # fmt: skip
    assert len(rules) == 3
    assert netfault.delayer_args(LAB, 47002, s, LINKS) == [
        "--lab", "nt1", "--queue", "47002", "52:54:00:d5:02:0b=300:0",
    ]  # fmt: skip


def test_forward_jumps_are_found_by_chain_name_only():
    listing = (
        "-P FORWARD ACCEPT\n"
        "-A FORWARD -i lcbr2 -o lcbr2 -m comment --comment labctl-nt1 -j LABCTL-nt1\n"
        "-A FORWARD -i lcbr3 -o lcbr3 -m comment --comment labctl-nt10 -j LABCTL-nt10\n"
    )
    assert netfault.forward_jumps("nt1", listing) == [
        ["-D", "FORWARD", "-i", "lcbr2", "-o", "lcbr2", "-m", "comment", "--comment", "labctl-nt1", "-j", "LABCTL-nt1"]
    ]  # fmt: skip


def test_delayer_is_told_apart_by_lab():
    args = ["/x/python", "-m", "labctl.netdelay", "--lab", "nt1", "--queue", "47002", "m=1:0"]
    assert net.is_delayer(args, "nt1")
    assert net.is_delayer(args)
    assert not net.is_delayer(args, "nt10")
    assert not net.is_delayer(["fence_virtd", "--lab", "nt1"], "nt1")


def _queued(packet_id: int, mac: bytes | None) -> bytes:
    attrs = netdelay._attr(netdelay.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 2))
    if mac is not None:
        attrs += netdelay._attr(netdelay.NFQA_HWADDR, struct.pack("!HH", 6, 0) + mac + b"\0\0")
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(47002)) + attrs
    kind = (netdelay.NFNL_SUBSYS_QUEUE << 8) | netdelay.NFQNL_MSG_PACKET
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_delayer_reads_packet_ids_and_source_macs():
    data = _queued(7, bytes.fromhex("525400d5020b")) + _queued(8, None)
    assert netdelay.packets(data) == [(7, "52:54:00:d5:02:0b"), (8, None)]


def test_delayer_accepts_by_packet_id():
    msg = netdelay.verdict(47002, 7)
    length, kind = struct.unpack_from("=IH", msg)
    assert length == len(msg) == 32
    assert kind == (3 << 8) | 1
    assert msg[-8:] == struct.pack("!II", 1, 7)  # NF_ACCEPT, id
    assert netdelay.parse_delay("52:54:00:D5:02:0B=300:25") == ("52:54:00:d5:02:0b", (0.3, 0.025))
