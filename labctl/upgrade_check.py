"""`labctl upgrade --check`: what the cluster did while it was upgraded. Pure: crm_mon
samples and fence histories in, a verdict out.

The promise checked is the one a rolling upgrade makes: the cluster keeps quorum,
every resource is down no longer than a failover takes, nobody is fenced. A
sample is one `crm_mon --output-as=xml` from a node that is not being upgraded,
about once a second, so every time measured here is good to about one sampling
interval: a resource seen stopped in one sample counts as down from that sample
until the first sample that shows it started again.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lxml import etree

from labctl.pacemaker import ClusterView

# How long a Dummy resource may be down during the upgrade: a move is a stop on one
# node and a start on another, well under a second each; the rest is the scheduler
# and the sampling interval. A resource down longer was not moved, it was lost.
DEFAULT_BOUND = 10.0
# crm_mon not answering for this long is a finding of its own (the observer is out).
SILENCE = 5.0


@dataclass(frozen=True)
class Sample:
    """What one crm_mon showed, T seconds after the upgrade began."""

    t: float
    observer: str
    answered: bool = True
    dc: str = ""  # "" when there was no DC (an election)
    quorate: bool = False
    started: tuple[str, ...] = ()  # watched resources active somewhere
    unclean: tuple[str, ...] = ()  # nodes crm_mon called unclean
    upgrading: str = ""  # the node being upgraded at that time
    error: str = ""


def sample_of(
    t: float, observer: str, view: ClusterView, watched: Iterable[str], upgrading: str = ""
) -> Sample:
    """One sample from a parsed crm_mon view; pure."""
    started = tuple(r for r in watched if r in view.resources and view.resources[r].active)
    return Sample(
        t=t,
        observer=observer,
        dc=view.dc or "",
        quorate=view.quorate,
        started=started,
        unclean=tuple(sorted(n for n, s in view.nodes.items() if s.unclean)),
        upgrading=upgrading,
    )


@dataclass(frozen=True)
class FenceEvent:
    target: str
    action: str
    status: str
    completed: str
    origin: str = ""


def parse_fence_history(xml_text: str) -> list[FenceEvent]:
    """Fence events of `stonith_admin --history '*' --output-as=xml` (2.1 and 3.0); pure."""
    doc = etree.fromstring(xml_text.encode())
    return [
        FenceEvent(
            target=e.get("target", ""),
            action=e.get("action", ""),
            status=e.get("status", ""),
            completed=e.get("completed", e.get("last-pending", "")),
            origin=e.get("origin", ""),
        )
        for e in doc.iter("fence_event")
    ]


@dataclass(frozen=True)
class Outage:
    resource: str
    start: float
    end: float
    during: str  # the node being upgraded when it began

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class DcChange:
    t: float
    old: str  # "" for no DC
    new: str
    during: str


@dataclass(frozen=True)
class CheckResult:
    samples: int
    unanswered: int
    seconds: float
    quorum_kept: bool
    no_quorum_at: list[float]
    longest_down: dict[str, float]  # resource -> its longest outage, seconds
    outages: list[Outage]
    dc_changes: list[DcChange]
    no_dc_seconds: float  # elections: time no sample showed a DC
    fenced: list[FenceEvent]
    restarted: list[str]  # domains restarted other than by the upgrade (their ID changed)
    unclean: list[str]
    bound: float
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "samples": self.samples,
            "unanswered": self.unanswered,
            "seconds": round(self.seconds, 1),
            "quorum_kept": self.quorum_kept,
            "no_quorum_at": [round(t, 1) for t in self.no_quorum_at],
            "longest_down": {r: round(s, 1) for r, s in self.longest_down.items()},
            "outages": [
                {
                    "resource": o.resource,
                    "start": round(o.start, 1),
                    "seconds": round(o.seconds, 1),
                    "during": o.during,
                }
                for o in self.outages
            ],
            "dc_changes": [
                {"t": round(d.t, 1), "old": d.old, "new": d.new, "during": d.during}
                for d in self.dc_changes
            ],
            "no_dc_seconds": round(self.no_dc_seconds, 1),
            "fenced": [vars(f) for f in self.fenced],
            "restarted": self.restarted,
            "unclean": self.unclean,
            "bound": self.bound,
            "findings": self.findings,
        }


def _outages(answered: Sequence[Sample], watched: Sequence[str]) -> list[Outage]:
    out = []
    for r in watched:
        start: Sample | None = None
        for s in answered:
            if r not in s.started and start is None:
                start = s
            elif r in s.started and start is not None:
                out.append(Outage(r, start.t, s.t, start.upgrading))
                start = None
        if start is not None:  # still down at the end
            out.append(Outage(r, start.t, answered[-1].t, start.upgrading))
    return sorted(out, key=lambda o: (o.start, o.resource))


def _dc_changes(answered: Sequence[Sample]) -> tuple[list[DcChange], float]:
    changes, no_dc = [], 0.0
    for prev, s in itertools.pairwise(answered):
        if s.dc != prev.dc:
            changes.append(DcChange(s.t, prev.dc, s.dc, s.upgrading))
        if not prev.dc:
            no_dc += s.t - prev.t
    return changes, no_dc


def analyse(
    samples: Sequence[Sample],
    watched: Sequence[str],
    fence_before: Sequence[FenceEvent] = (),
    fence_after: Sequence[FenceEvent] = (),
    restarted: Sequence[str] = (),
    bound: float = DEFAULT_BOUND,
) -> CheckResult:
    """The verdict on SAMPLES (in time order) for WATCHED resources; fence events in
    FENCE_AFTER and not in FENCE_BEFORE happened during the upgrade; RESTARTED: nodes
    whose domain was restarted by something other than the upgrade."""
    answered = [s for s in samples if s.answered]
    findings = []
    if not answered:
        findings.append("crm_mon never answered: nothing was observed")
    no_quorum = [s.t for s in answered if s.dc and not s.quorate]
    if no_quorum:
        findings.append(
            f"quorum lost: {len(no_quorum)} sample(s) without quorum, first at {no_quorum[0]:.1f} s"
        )
    outages = _outages(answered, watched) if answered else []
    longest = {r: 0.0 for r in watched}
    for o in outages:
        longest[o.resource] = max(longest[o.resource], o.seconds)
    for r, secs in longest.items():
        if secs > bound:
            during = max((o for o in outages if o.resource == r), key=lambda o: o.seconds).during
            findings.append(
                f"{r} was down {secs:.1f} s (bound {bound:.0f} s)"
                + (f", while {during} was upgraded" if during else "")
            )
    changes, no_dc = _dc_changes(answered)
    new_fences = [f for f in fence_after if f not in fence_before]
    for f in new_fences:
        findings.append(f"{f.target} was fenced ({f.action}, {f.status}, asked by {f.origin})")
    for name in restarted:
        findings.append(f"{name}'s domain was restarted by something other than the upgrade")
    unclean = sorted({n for s in answered for n in s.unclean})
    if unclean:
        findings.append(f"crm_mon saw unclean node(s): {', '.join(unclean)}")
    # Long silences: the observer itself was out, so nothing is known of that time.
    last = samples[0].t if samples else 0.0
    for s in samples:
        if s.answered:
            if s.t - last > SILENCE:
                findings.append(f"crm_mon did not answer from {last:.1f} s to {s.t:.1f} s")
            last = s.t
    return CheckResult(
        samples=len(samples),
        unanswered=len(samples) - len(answered),
        seconds=(samples[-1].t - samples[0].t) if samples else 0.0,
        quorum_kept=not no_quorum and bool(answered),
        no_quorum_at=no_quorum,
        longest_down=longest,
        outages=outages,
        dc_changes=changes,
        no_dc_seconds=no_dc,
        fenced=new_fences,
        restarted=list(restarted),
        unclean=unclean,
        bound=bound,
        findings=findings,
    )
