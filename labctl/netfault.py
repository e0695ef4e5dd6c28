"""Network faults of a lab, pure: parsing `labctl net` arguments, the fault state, and
the host rules that make it (an nftables bridge table, iptables NFQUEUE rules for
the delayer). labctl/net.py applies them to the host.

Every rule matches the nodes' MAC addresses, not their host-side interfaces: a
node's MAC is fixed by the lab (and unique per lab: it holds the lab's subnet
index), while libvirt gives a restarted node (after fencing, say) a new vnetN, so
a rule on the interface name would let a fenced node back through a partition.
Partition, loss and delay act on node-to-node (bridged) traffic only, so that
labctl's own SSH and the lab's fence_virtd on the host still reach every node;
`down` cuts a link entirely, the host included.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from labctl.errors import UsageError

# NFQUEUE numbers are host-wide: one per lab, by its subnet index (< 256).
QUEUE_BASE = 47000
MAX_DELAY_MS = 10_000
MAX_LINKS = 8
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Linux interface names: at most 15 bytes, no '/', whitespace or quotes.
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
ACTIONS = ("show", "partition", "heal", "delay", "loss", "clear", "down", "up")


@dataclass(frozen=True)
class Link:
    """Link N of a node: its MAC (what rules match), host-side interface and bridge."""

    node: str
    index: int
    mac: str
    dev: str | None = None
    bridge: str | None = None


@dataclass(frozen=True)
class Delay:
    ms: int
    jitter_ms: int = 0

    def __str__(self) -> str:
        return f"{self.ms}ms" + (f" ±{self.jitter_ms}ms" if self.jitter_ms else "")


@dataclass(frozen=True)
class NetState:
    """A lab's faults; empty is a healthy network."""

    groups: tuple[tuple[str, ...], ...] = ()
    delays: Mapping[str, Delay] = field(default_factory=dict)
    losses: Mapping[str, float] = field(default_factory=dict)
    down: frozenset[tuple[str, int]] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.groups or self.delays or self.losses or self.down)

    def to_dict(self) -> dict[str, object]:
        return {
            "partition": [list(g) for g in self.groups],
            "delay": {
                n: {"ms": d.ms, "jitter_ms": d.jitter_ms} for n, d in sorted(self.delays.items())
            },
            "loss": {n: p for n, p in sorted(self.losses.items())},
            "down": [{"node": n, "link": i} for n, i in sorted(self.down)],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], nodes: Sequence[str]) -> NetState:
        """From net.json; names not of the lab are dropped (the file is data, not trusted)."""
        known = set(nodes)
        groups = tuple(tuple(str(n) for n in g if n in known) for g in d.get("partition", []))
        delays = {
            str(n): Delay(int(v["ms"]), int(v.get("jitter_ms", 0)))
            for n, v in dict(d.get("delay", {})).items()
            if n in known
        }
        losses = {str(n): float(p) for n, p in dict(d.get("loss", {})).items() if n in known}
        down = frozenset(
            (str(e["node"]), int(e["link"])) for e in d.get("down", []) if e["node"] in known
        )
        return cls(tuple(g for g in groups if g), delays, losses, down)

    def describe(self) -> list[str]:
        """One line per fault, as `net show` prints them."""
        lines = []
        if self.groups:
            lines.append("partition " + " | ".join(",".join(g) for g in self.groups))
        lines += [f"delay {n} {d}" for n, d in sorted(self.delays.items())]
        lines += [f"loss {n} {_pct(p)}" for n, p in sorted(self.losses.items())]
        lines += [f"down {n} link {i}" for n, i in sorted(self.down)]
        return lines


def _pct(p: float) -> str:
    return f"{p:g}%"


# ---------------------------------------------------------------- parsing


def resolve_node(word: str, lab: str, nodes: Sequence[str]) -> str:
    """A node name as given (full `LAB-c1` or short `c1`) -> its full name."""
    for candidate in (word, f"{lab}-{word}"):
        if candidate in nodes:
            return candidate
    raise UsageError(f"no node {word!r} in lab {lab}: its nodes are {', '.join(nodes)}")


def resolve_targets(word: str, lab: str, nodes: Sequence[str]) -> list[str]:
    """`all`, or one node, or several separated by commas."""
    if word == "all":
        return list(nodes)
    return [resolve_node(w, lab, nodes) for w in word.split(",") if w] or _no_nodes(word)


def _no_nodes(word: str) -> list[str]:
    raise UsageError(f"no node in {word!r}: name a node or `all`")


def parse_groups(
    args: Sequence[str], lab: str, nodes: Sequence[str], optional: Collection[str] = ()
) -> tuple[tuple[str, ...], ...]:
    """`A,B C,D ...`: at least two groups; every node of the lab in exactly one,
    but those OPTIONAL, which may be in none."""
    if len(args) < 2:
        raise UsageError(
            "partition needs two groups or more, each a comma-separated list of nodes: "
            f"`labctl net {lab} partition c1 c2,c3`"
        )
    seen: dict[str, int] = {}
    groups = []
    for gi, arg in enumerate(args):
        group = []
        for w in arg.split(","):
            if not w:
                continue
            n = resolve_node(w, lab, nodes)
            if n in seen:
                raise UsageError(f"{n} is in two groups: name each node in one group only")
            seen[n] = gi
            group.append(n)
        if not group:
            raise UsageError(f"empty group {arg!r}: each group names one node or more")
        groups.append(tuple(group))
    missing = [n for n in nodes if n not in seen and n not in optional]
    if missing:
        raise UsageError(
            f"{', '.join(missing)} in no group: name every node of lab {lab} in one group"
        )
    return tuple(groups)


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")


def parse_duration(text: str, what: str = "delay") -> int:
    """`300ms`, `1.5s` -> milliseconds (whole, at most MAX_DELAY_MS)."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise UsageError(f"bad {what} {text!r}: give a duration such as 300ms or 1s")
    ms = float(m.group(1)) * (1000 if m.group(2) == "s" else 1)
    if ms != int(ms) or ms > MAX_DELAY_MS:
        raise UsageError(
            f"bad {what} {text!r}: whole milliseconds, at most {MAX_DELAY_MS // 1000}s"
        )
    return int(ms)


_PERCENT_RE = re.compile(r"^(\d+(?:\.\d{1,2})?)%?$")


def parse_percent(text: str) -> float:
    """`10%` (or `10`, `0.5%`) -> 10.0; from 0 (no loss) to 100, two decimals at most."""
    m = _PERCENT_RE.match(text.strip())
    p = float(m.group(1)) if m else -1.0
    if not 0 <= p <= 100:
        raise UsageError(f"bad percentage {text!r}: give one from 0 to 100, e.g. 10%")
    return p


def apply(
    state: NetState,
    action: str,
    args: Sequence[str],
    lab: str,
    links_of: Mapping[str, Sequence[int]],
    link: int | None = None,
    optional: Collection[str] = (),
) -> NetState:
    """STATE after `labctl net LAB ACTION ARGS`; UsageError (nothing changed) on bad
    input. LINKS_OF: each node of the lab (in order) -> its link numbers. OPTIONAL:
    nodes a partition may leave out of every group (they then reach all groups)."""
    nodes = list(links_of)
    if action not in ACTIONS:
        raise UsageError(f"unknown net action {action!r}: one of {', '.join(ACTIONS)}")
    if link is not None and action not in ("down", "up"):
        raise UsageError("--link is for `down` and `up` only")
    if link is not None and not 0 <= link < MAX_LINKS:
        raise UsageError(f"bad --link {link}: a link number, 0 for the lab network's")

    def arity(lo: int, hi: int, usage: str) -> None:
        if not lo <= len(args) <= hi:
            raise UsageError(f"usage: labctl net {lab} {action} {usage}".rstrip())

    if action == "show":
        arity(0, 0, "")
        return state
    if action == "partition":
        return replace(state, groups=parse_groups(args, lab, nodes, optional))
    if action == "heal":
        arity(0, 0, "")
        return replace(state, groups=())
    if action == "clear":
        arity(0, 0, "")
        return replace(state, delays={}, losses={})
    if action == "delay":
        arity(2, 3, "NODE|all DELAY [JITTER]  (e.g. all 300ms 50ms)")
        targets = resolve_targets(args[0], lab, nodes)
        ms = parse_duration(args[1])
        jitter = parse_duration(args[2], "jitter") if len(args) > 2 else 0
        if jitter > ms:
            raise UsageError(
                f"jitter {args[2]} is more than the delay {args[1]}: give one at most it"
            )
        if ms == 0:
            return replace(
                state, delays={n: d for n, d in state.delays.items() if n not in targets}
            )
        return replace(state, delays={**state.delays, **{n: Delay(ms, jitter) for n in targets}})
    if action == "loss":
        arity(2, 2, "NODE|all PERCENT  (e.g. all 10%)")
        targets = resolve_targets(args[0], lab, nodes)
        p = parse_percent(args[1])
        if p == 0:
            return replace(
                state, losses={n: q for n, q in state.losses.items() if n not in targets}
            )
        return replace(state, losses={**state.losses, **{n: p for n in targets}})
    arity(1, 1, "NODE|all [--link N]")
    targets = resolve_targets(args[0], lab, nodes)
    if link is None:
        chosen = {(n, i) for n in targets for i in links_of.get(n, (0,))}
    else:
        lacking = [n for n in targets if link not in links_of.get(n, (0,))]
        if lacking:
            raise UsageError(
                f"{lacking[0]} has no link {link}: its links are "
                f"{', '.join(map(str, links_of.get(lacking[0], (0,))))}"
            )
        chosen = {(n, link) for n in targets}
    if action == "down":
        return replace(state, down=state.down | frozenset(chosen))
    return replace(state, down=state.down - chosen)


# ---------------------------------------------------------------- rules


def table_name(lab: str) -> str:
    return f"labctl-{lab}"


def chain_name(lab: str) -> str:
    """The lab's iptables chain (mangle table), at most 27 characters."""
    return f"LABCTL-{lab}"


def queue_number(subnet_index: int) -> int:
    return QUEUE_BASE + subnet_index


def _check_mac(mac: str) -> str:
    if not MAC_RE.match(mac):
        raise ValueError(f"not a MAC address: {mac!r}")
    return mac


def _macs(names: Sequence[str], links: Mapping[str, Sequence[Link]]) -> str:
    macs = sorted({_check_mac(lk.mac) for n in names for lk in links.get(n, ())})
    return "{ " + ", ".join(macs) + " }"


def nft_ruleset(lab: str, state: NetState, links: Mapping[str, Sequence[Link]]) -> str:
    """The lab's whole nftables bridge table for STATE, replacing any it had (one
    `nft -f` transaction: all of it applies or none). LINKS: node -> its links."""
    t = table_name(lab)
    pre: list[str] = []
    fwd: list[str] = []
    out: list[str] = []
    for node, i in sorted(state.down):
        for lk in links.get(node, ()):
            if lk.index != i:
                continue
            mac = _check_mac(lk.mac)
            c = f'comment "down {node} link {i}"'
            # From the node to anything (other nodes, the host); to it from other
            # nodes (forward) and from the host (output).
            pre.append(f"ether saddr {mac} drop {c}")
            fwd.append(f"ether daddr {mac} drop {c}")
            out.append(f"ether daddr {mac} drop {c}")
    for gi, a in enumerate(state.groups):
        for gj, b in enumerate(state.groups):
            if gi != gj:
                fwd.append(
                    f"ether saddr {_macs(a, links)} ether daddr {_macs(b, links)} drop "
                    f'comment "partition {gi + 1}->{gj + 1}"'
                )
    for node, p in sorted(state.losses.items()):
        # In hundredths of a percent: 0.5% is 50 out of 10000 (nft refuses "< 10000").
        chance = "" if p >= 100 else f"numgen random mod 10000 < {round(p * 100)} "
        fwd.append(
            f'ether saddr {_macs([node], links)} {chance}drop comment "loss {node} {_pct(p)}"'
        )
    lines = [
        # Declaring the table first makes the delete succeed when there was none.
        f"table bridge {t} {{}}",
        f"delete table bridge {t}",
        f"table bridge {t} {{",
    ]
    for chain, hook, prio, rules in (
        ("prerouting", "prerouting", -200, pre),
        ("forward", "forward", 0, fwd),
        ("output", "output", 0, out),
    ):
        lines.append(f"  chain {chain} {{")
        lines.append(f"    type filter hook {hook} priority {prio}; policy accept;")
        lines += [f"    {r}" for r in rules]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def nft_delete(lab: str) -> str:
    """Remove the lab's table, whether it exists or not."""
    t = table_name(lab)
    return f"table bridge {t} {{}}\ndelete table bridge {t}\n"


def iptables_rules(
    lab: str, queue: int, state: NetState, links: Mapping[str, Sequence[Link]]
) -> list[list[str]]:
    """iptables arguments (mangle table) that queue the delayed nodes' bridged IPv4
    packets to the delayer: a jump from FORWARD for traffic within each of the
    lab's bridges (never another's, never the host's), then one NFQUEUE rule per
    delayed link. Empty when nothing is delayed."""
    if not state.delays:
        return []
    chain = chain_name(lab)
    bridges = sorted({lk.bridge for n in state.delays for lk in links.get(n, ()) if lk.bridge})
    for b in bridges:
        if not IFNAME_RE.match(b):
            raise ValueError(f"not a bridge name: {b!r}")
    rules = [["-N", chain]]
    for b in bridges:
        rules.append(
            [
                "-I",
                "FORWARD",
                "-i",
                b,
                "-o",
                b,
                "-m",
                "comment",
                "--comment",
                table_name(lab),
                "-j",
                chain,
            ]
        )
    for node in sorted(state.delays):
        for lk in links.get(node, ()):
            rules.append(
                [
                    "-A", chain, "-m", "mac", "--mac-source", _check_mac(lk.mac),
                    "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass",
                ]
            )  # fmt: skip
    return rules


def delayer_args(
    lab: str, queue: int, state: NetState, links: Mapping[str, Sequence[Link]]
) -> list[str]:
    """Arguments of `python -m labctl.netdelay` for STATE's delays."""
    args = ["--lab", lab, "--queue", str(queue)]
    for node, d in sorted(state.delays.items()):
        for lk in links.get(node, ()):
            args.append(f"{_check_mac(lk.mac)}={d.ms}:{d.jitter_ms}")
    return args


def forward_jumps(lab: str, listing: str) -> list[list[str]]:
    """From `iptables -t mangle -S FORWARD`: the `-D` arguments of every jump to the
    lab's chain (found by listing, so a lab whose bridge is unknown is cleaned too)."""
    target = f"-j {chain_name(lab)}"
    out = []
    for line in listing.splitlines():
        words = line.split()
        if line.startswith("-A FORWARD ") and line.endswith(target) and len(words) > 2:
            out.append(["-D", *words[1:]])
    return out
