"""`labctl net`: a lab's network faults, applied on the host side (an nftables bridge
table, iptables NFQUEUE rules and a delayer process), recorded in the lab directory
(net.json) and removed with the lab. What the rules are is labctl/netfault.py."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labctl import host, locks, netfault, proc, state, virt
from labctl.errors import HostError, NotFoundError
from labctl.netfault import Link, NetState
from labctl.plan import LabPlan
from labctl.spec import validate_name

STATE_FILE = "net.json"
PID_FILE = "net-delay.pid"
LOG_FILE = "net-delay.log"
NFT_TIMEOUT = 30.0
DELAYER_START_TIMEOUT = 10.0
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
QUEUES = Path("/proc/net/netfilter/nfnetlink_queue")


@dataclass(frozen=True)
class NetReport:
    """A lab's faults as recorded, and what of them the host has."""

    lab: str
    state: NetState
    links: dict[str, list[Link]]
    table: bool
    delayer: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "lab": self.lab,
            **self.state.to_dict(),
            "links": {
                n: [
                    {"link": lk.index, "mac": lk.mac, "dev": lk.dev, "bridge": lk.bridge}
                    for lk in ls
                ]
                for n, ls in self.links.items()
            },
            "nft_table": netfault.table_name(self.lab) if self.table else None,
            "delayer_pid": self.delayer,
        }


def net(name: str, action: str, args: list[str], link: int | None, state_dir: Path) -> NetReport:
    """`labctl net NAME ACTION ARGS`: change the lab's faults (or show them)."""
    host.require_root("labctl net")
    validate_name(name)
    if action == "show":
        # Only reads: no lock, so it works while another command holds the lab.
        p = _plan(name, state_dir)
        links = node_links(p)
        netfault.apply(NetState(), action, args, name, {n: [0] for n in links}, link)
        return _report(p, links)
    with locks.hold("lab", name, locks.command_line()):
        p = _plan(name, state_dir)
        links = node_links(p)
        links_of = {n: [lk.index for lk in ls] for n, ls in links.items()}
        old = read_state(p)
        # The qnetd node may stay out of a partition: then it reaches every group.
        optional = [p.qnetd.name] if p.qnetd else []
        new = netfault.apply(old, action, args, name, links_of, link, optional)
        if new.delays:
            _require_bridge_netfilter()
        try:
            _apply(p, new, links, old)
        except BaseException:
            # Back to what net.json says, so that it stays the truth about the host.
            with contextlib.suppress(Exception):
                _apply(p, old, links)
            raise
        write_state(p, new)
        return _report(p, links)


def _plan(name: str, state_dir: Path) -> LabPlan:
    rec = state.read_record(state_dir, name)
    if rec is None:
        raise NotFoundError(f"no lab {name!r} here: `labctl list` shows the labs on this host")
    return rec.plan(state_dir)


def node_links(p: LabPlan) -> dict[str, list[Link]]:
    """Each node's links from its domain's live XML (MACs checked, interface and
    bridge names too); a node without a domain (a stopped guest) has its planned link 0."""
    out: dict[str, list[Link]] = {}
    by_uri: dict[str, list[str]] = {}
    for n in p.all_nodes:
        by_uri.setdefault(virt.default_uri(n.backend), []).append(n.name)
    found: dict[str, list[virt.DomainLink] | None] = {}
    for uri, names in by_uri.items():
        with virt.connection(uri) as conn:
            for dom in names:
                found[dom] = virt.domain_links(conn, dom)
    for n in p.all_nodes:
        links = []
        planned = (n.mac, *n.link_macs)
        for i, dl in enumerate(found.get(n.name) or []):
            mac = (dl.mac or "").lower()
            if not netfault.MAC_RE.match(mac):
                raise HostError(
                    f"domain {n.name}: link {i} has no usable MAC ({dl.mac!r}): not touching it"
                )
            # libvirt's word is checked against the lab's own plan: rules made from a MAC
            # a domain merely claims could cut another lab's node.
            if i >= len(planned) or mac != planned[i].lower():
                raise HostError(
                    f"domain {n.name}: link {i} has MAC {mac}, not the lab's "
                    f"{planned[i] if i < len(planned) else '(no such link)'}: not touching it; "
                    f"`labctl down {p.name}` and `up` it again"
                )
            dev = dl.dev if dl.dev and netfault.IFNAME_RE.match(dl.dev) else None
            bridge = dl.bridge if dl.bridge and netfault.IFNAME_RE.match(dl.bridge) else None
            links.append(Link(n.name, i, mac, dev, bridge))
        out[n.name] = links or [Link(n.name, 0, n.mac, None, p.network.bridge)]
    return out


def read_state(p: LabPlan) -> NetState:
    try:
        data = json.loads((p.dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return NetState()
    try:
        return NetState.from_dict(data, [n.name for n in p.all_nodes])
    except (KeyError, TypeError, ValueError, AttributeError):
        return NetState()


def write_state(p: LabPlan, s: NetState) -> None:
    path = p.dir / STATE_FILE
    if s.empty:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(s.to_dict(), indent=2) + "\n")
    tmp.replace(path)


def _require_bridge_netfilter() -> None:
    # Delay goes through iptables (NFQUEUE): bridged packets reach iptables only
    # with br_netfilter's switch on. Global to the host, so labctl does not flip it.
    try:
        value = BRIDGE_NF.read_text().strip()
    except OSError:
        value = "absent (br_netfilter not loaded)"
    if value != "1":
        raise HostError(
            f"delay needs net.bridge.bridge-nf-call-iptables = 1 (it is {value}): "
            "`modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1`, then again"
        )


def _nft(script: str, where: str) -> None:
    proc.run(["nft", "-f", "-"], input=script, where=where, timeout=NFT_TIMEOUT)


def _iptables(args: list[str], where: str, check: bool = True) -> str:
    r = proc.run(
        ["iptables", "-w", "10", "-t", "mangle", *args],
        where=where,
        timeout=NFT_TIMEOUT,
        check=check,
    )
    return r.stdout


def _apply(
    p: LabPlan, s: NetState, links: dict[str, list[Link]], was: NetState | None = None
) -> None:
    """Make the host hold S's faults. WAS: what it holds now, if known: the delayer
    is then left running when the delays stay the same (restarting it would drop
    the packets it holds)."""
    where = f"network faults of lab {p.name}"
    if s.groups or s.losses or s.down:
        _nft(netfault.nft_ruleset(p.name, s, links), where)
    else:
        _remove_table(p.name, where)
    if was is not None and was.delays == s.delays and (not s.delays or delayers(p.name)):
        return
    _remove_queueing(p.name, where)
    stop_delayers(p.name)
    (p.dir / PID_FILE).unlink(missing_ok=True)
    if not s.delays:
        return
    queue = netfault.queue_number(p.network.index)
    # The delayer first: the rules bypass a queue nobody reads, never drop.
    pid = proc.spawn(
        [sys.executable, "-m", "labctl.netdelay", *netfault.delayer_args(p.name, queue, s, links)],
        where=where,
        log=p.dir / LOG_FILE,
    )
    (p.dir / PID_FILE).write_text(f"{pid}\n")
    _wait_bound(pid, queue, p.dir / LOG_FILE)
    for rule in netfault.iptables_rules(p.name, queue, s, links):
        _iptables(rule, where)


def _wait_bound(pid: int, queue: int, log: Path) -> None:
    deadline = time.monotonic() + DELAYER_START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if any(line.split()[:1] == [str(queue)] for line in QUEUES.read_text().splitlines()):
                return
        if not _alive(pid):
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            raise HostError(
                f"the delayer (labctl.netdelay) exited: {' '.join(tail) or 'no output'}; see {log}"
            )
        time.sleep(0.05)
    raise HostError(
        f"the delayer did not bind NFQUEUE {queue} within {DELAYER_START_TIMEOUT:.0f} s; see {log}"
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _table_exists(name: str) -> bool:
    r = proc.run(
        ["nft", "list", "table", "bridge", netfault.table_name(name)],
        where=f"network faults of lab {name}",
        timeout=NFT_TIMEOUT,
        check=False,
    )
    return r.returncode == 0


def _remove_table(name: str, where: str) -> None:
    _nft(netfault.nft_delete(name), where)


def _remove_queueing(name: str, where: str) -> None:
    """The lab's jumps from FORWARD and its chain, found by name (none: nothing to do)."""
    # Not listable (no iptables in this kernel, say): then it holds no rule of ours.
    listing = _iptables(["-S", "FORWARD"], where, check=False)
    for rule in netfault.forward_jumps(name, listing):
        _iptables(rule, where)
    chain = netfault.chain_name(name)
    if _iptables(["-S", chain], where, check=False):
        _iptables(["-F", chain], where)
        _iptables(["-X", chain], where)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_delayer(args: list[str], lab: str | None = None) -> bool:
    """ARGS (a command line) is a labctl delayer (of LAB, if given)."""
    if "labctl.netdelay" not in args:
        return False
    if lab is None:
        return True
    return any(a == "--lab" and b == lab for a, b in itertools.pairwise(args))


def delayers(lab: str | None = None) -> list[int]:
    """PIDs of running delayers (of LAB), found by their command line."""
    return [
        int(e)
        for e in os.listdir("/proc")
        if e.isdigit() and is_delayer(_cmdline(int(e)), lab) and _alive(int(e))
    ]


def stop_delayers(lab: str, timeout: float = 5.0) -> int:
    """End every delayer of LAB (ours only, by command line); return how many."""
    pids = delayers(lab)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        is_delayer(_cmdline(p), lab) and _alive(p) for p in pids
    ):
        time.sleep(0.05)
    for pid in pids:
        if is_delayer(_cmdline(pid), lab):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove(name: str) -> None:
    """Everything of lab NAME's faults off the host (for `down`): from the host's own
    view, so also after a crash or without the lab directory; nothing there is fine."""
    where = f"network faults of lab {name}"
    stop_delayers(name)
    if _have("iptables"):
        _remove_queueing(name, where)
    if _have("nft"):
        _remove_table(name, where)


def _have(tool: str) -> bool:
    return shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is not None


def _report(p: LabPlan, links: dict[str, list[Link]] | None = None) -> NetReport:
    pids = delayers(p.name)
    return NetReport(
        lab=p.name,
        state=read_state(p),
        links=links if links is not None else node_links(p),
        table=_have("nft") and _table_exists(p.name),
        delayer=pids[0] if pids else None,
    )
