"""`labctl net`: faults made on the host, seen by Pacemaker and ping in a real lab.
One 3-node lab for the whole module (CI time); its last test takes it down."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from labctl import pacemaker as pcmk

from .conftest import STATE_DIR, HostState, host_state, labctl, module_lab


@dataclass(frozen=True)
class Lab:
    name: str
    before: HostState
    ips: dict[str, list[str]]  # node -> its address on link 0, link 1

    def node(self, short: str) -> str:
        return f"{self.name}-{short}"

    def ip(self, short: str, link: int = 0) -> str:
        return self.ips[self.node(short)][link]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    before = host_state()
    # Two corosync links: `down --link N` cuts one and leaves the other.
    with module_lab("--nodes", "3", "--links", "2") as (name, up):
        yield Lab(name, before, {n["name"]: [n["ip"], *n["link_ips"]] for n in up["nodes"]})


def crm_mon(lab: Lab, short: str) -> pcmk.ClusterView:
    out = labctl("ssh", lab.name, lab.node(short), "--", "crm_mon", "-1", "--output-as=xml")
    return pcmk.parse_crm_mon(out.stdout)


def poll(what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def ping_ms(lab: Lab, src: str, dst: str, count: int = 5, link: int = 0) -> float | None:
    """Average round trip from node SRC to node DST (its LINK address) in ms, None if
    nothing came back."""
    out = labctl(
        "ssh", lab.name, lab.node(src), "--",
        "ping", "-q", "-c", str(count), "-i", "0.2", "-W", "1", lab.ip(dst, link),
        check=False,
    ).stdout  # fmt: skip
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(m.group(1)) if m else None


def reachable(lab: Lab, src: str, dst: str, link: int = 0) -> bool:
    """DST answers SRC's pings within a deadline: after a fault is undone, the
    neighbour entries that failed while it held take a moment to resolve again."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ping_ms(lab, src, dst, count=2, link=link) is not None:
            return True
    return False


def show(lab: Lab) -> dict:
    return json.loads(labctl("net", lab.name, "show", "--json").stdout)


def test_partition_cuts_one_node_off_and_heal_brings_it_back(lab: Lab):
    labctl("net", lab.name, "partition", "c1", "c2,c3")
    assert show(lab)["partition"] == [[lab.node("c1")], [lab.node("c2"), lab.node("c3")]]

    def majority_without_c1() -> bool:
        v = crm_mon(lab, "c2")
        n = v.nodes
        return v.quorate and not n[lab.node("c1")].online and n[lab.node("c3")].online

    poll("crm_mon on c2: c1 offline, c2 and c3 quorate", majority_without_c1)
    if crm_mon(lab, "c2").stonith_enabled:
        # The majority fences c1 (the host's fence_virtd is reachable from both sides).
        def fenced() -> bool:
            out = labctl(
                "ssh", lab.name, lab.node("c2"), "--", "stonith_admin", "--history", lab.node("c1")
            ).stdout
            return "successful" in out

        poll("c1 in the fence history as fenced", fenced)
    else:
        poll("c1 without quorum", lambda: not crm_mon(lab, "c1").quorate)

    labctl("net", lab.name, "heal")
    assert show(lab)["partition"] == []

    def all_online() -> bool:
        v = crm_mon(lab, "c2")
        return v.quorate and all(v.nodes[lab.node(s)].online for s in ("c1", "c2", "c3"))

    poll("all three nodes online after heal", all_online, timeout=180)


def test_delay_raises_round_trip_and_clear_removes_it(lab: Lab):
    base = ping_ms(lab, "c2", "c3")
    assert base is not None and base < 20, base
    labctl("net", lab.name, "delay", "all", "200ms")
    s = show(lab)
    assert s["delay"][lab.node("c2")] == {"ms": 200, "jitter_ms": 0}
    assert s["delayer_pid"] is not None
    delayed = ping_ms(lab, "c2", "c3")
    # Each node's packets wait 200 ms: there and back, 400 ms.
    assert delayed is not None and 380 < delayed < 600, (base, delayed)
    # Jitter: one node's packets wait 100 ms ± up to 50 ms, so round trips spread.
    labctl("net", lab.name, "delay", "c2", "100ms", "50ms")
    out = labctl(
        "ssh", lab.name, lab.node("c2"), "--", "ping", "-q", "-c", "10", "-i", "0.2", lab.ip("c3")
    ).stdout  # fmt: skip
    avg, mdev = (float(x) for x in re.search(r"= [\d.]+/([\d.]+)/[\d.]+/([\d.]+)", out).groups())
    assert 220 < avg < 420 and mdev > 5, out  # 100 ± 50 ms there, c3's 200 ms back
    s = show(lab)
    # Fail-open: with its delayer gone, the lab's packets pass undelayed, never dropped.
    os.kill(s["delayer_pid"], signal.SIGKILL)
    orphaned = ping_ms(lab, "c2", "c3")
    assert orphaned is not None and orphaned < 20, orphaned
    labctl("net", lab.name, "clear")
    s = show(lab)
    assert s["delay"] == {} and s["delayer_pid"] is None
    after = ping_ms(lab, "c2", "c3")
    assert after is not None and after < 20, after
    print(
        f"ping c2->c3: {base:.3f} ms, with delay all 200ms {delayed:.1f} ms, cleared {after:.3f} ms"
    )


def test_loss_and_link_down_cut_a_node_and_are_undone(lab: Lab):
    labctl("net", lab.name, "loss", "c3", "100%")
    assert ping_ms(lab, "c2", "c3", count=3) is None
    labctl("net", lab.name, "clear")
    assert reachable(lab, "c2", "c3")
    labctl("net", lab.name, "down", "c3", "--link", "0")
    assert show(lab)["down"] == [{"node": lab.node("c3"), "link": 0}]
    assert ping_ms(lab, "c2", "c3", count=3) is None
    assert reachable(lab, "c2", "c3", link=1)
    labctl("net", lab.name, "down", "c3")  # every link
    assert ping_ms(lab, "c2", "c3", count=3, link=1) is None
    labctl("net", lab.name, "up", "c3", "--link", "1")
    assert show(lab)["down"] == [{"node": lab.node("c3"), "link": 0}]
    assert reachable(lab, "c2", "c3", link=1)
    labctl("net", lab.name, "up", "c3")
    assert show(lab)["down"] == []
    assert reachable(lab, "c2", "c3")


def _link_states(lab: Lab, short: str) -> dict[int, set[str]]:
    """corosync-cfgtool -s on node SHORT: link id -> the states of the other nodes."""
    text = labctl("ssh", lab.name, lab.node(short), "--", "corosync-cfgtool", "-s").stdout
    out: dict[int, set[str]] = {}
    link = None
    for line in text.splitlines():
        if line.startswith("LINK ID"):
            link = int(line.split()[2])
            out[link] = set()
        elif link is not None and "nodeid" in line and "localhost" not in line:
            out[link].add(line.split(":")[-1].strip())
    return out


def test_link_0_cut_everywhere_leaves_the_cluster_quorate_on_link_1(lab: Lab):
    both = {0: {"connected"}, 1: {"connected"}}
    poll("both corosync links connected", lambda: _link_states(lab, "c2") == both)
    labctl("net", lab.name, "down", "all", "--link", "0")
    # labctl reaches the nodes over link 1 meanwhile (`ssh` and `exec` fall back to it).
    poll(
        "link 0 down, link 1 up in corosync's view",
        lambda: _link_states(lab, "c2") == {0: {"disconnected"}, 1: {"connected"}},
    )
    quorum = labctl("ssh", lab.name, lab.node("c2"), "--", "corosync-quorumtool", "-s").stdout
    assert re.search(r"Quorate:\s+Yes", quorum), quorum
    view = crm_mon(lab, "c2")
    online = {name for name, n in view.nodes.items() if n.online}
    assert view.quorate and online == {lab.node(s) for s in ("c1", "c2", "c3")}, view
    labctl("net", lab.name, "up", "all", "--link", "0")
    poll("link 0 connected again", lambda: _link_states(lab, "c2") == both)


BAD_INPUT = [
    (["partition", "c1,c2", "c2,c3"], "is in two groups"),
    (["partition", "c1", "c2"], "in no group"),
    (["delay", "c9", "100ms"], "no node 'c9'"),
    (["delay", "all", "100"], "bad delay"),
    (["loss", "all", "150%"], "bad percentage"),
    (["down", "c1", "--link", "2"], "has no link 2"),
]


def test_bad_input_is_one_line_and_changes_nothing(lab: Lab):
    labctl("net", lab.name, "loss", "c1", "5%")
    before = show(lab)
    for args, says in BAD_INPUT:
        r = labctl("net", lab.name, *args, check=False)
        assert r.returncode != 0, args
        assert r.stderr.startswith("labctl: ") and r.stderr.count("\n") == 1, r.stderr
        assert says in r.stderr, (args, r.stderr)
    assert show(lab) == before
    labctl("net", lab.name, "clear")


def test_down_leaves_no_fault_behind_even_without_the_record(lab: Lab):
    for args in (
        ["partition", "c1,c2", "c3"],
        ["delay", "c1", "50ms", "10ms"],
        ["loss", "c2", "5%"],
        ["down", "c3"],
    ):
        labctl("net", lab.name, *args)
    during = host_state()
    assert any(lab.name in t for t in during.firewall)
    assert any(lab.name in h for h in during.net_helpers)
    # As after a crash: the record of the faults is gone, the host's rules are not.
    (STATE_DIR / "labs" / lab.name / "net.json").unlink()
    labctl("down", lab.name)
    after = host_state()
    left = {
        f: sorted(getattr(after, f) ^ getattr(lab.before, f))
        for f in after.__dataclass_fields__
        if getattr(after, f) != getattr(lab.before, f)
    }
    assert left == {}
