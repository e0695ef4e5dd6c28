"""Progress: one stream of events, rendered as plain lines or a terminal's live display."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from labctl import cli, lab, progress
from labctl.lab import Event, Reporter


def _events() -> tuple[Reporter, list[Event]]:
    seen: list[Event] = []
    return Reporter(listen=seen.append), seen


def test_a_phase_starts_counts_its_nodes_and_ends():
    r, seen = _events()
    with r.phase("ssh ready"):
        lab.parallel(r.counted("ssh ready", lambda n: n * 2, 3), [1, 2, 3])
        r.emit("a note")
    kinds = [(e.kind, e.phase) for e in seen]
    assert kinds[0] == ("start", "ssh ready") and kinds[-1] == ("done", "ssh ready")
    counts = sorted((e.done, e.total) for e in seen if e.kind == "count")
    assert counts == [(1, 3), (2, 3), (3, 3)]
    assert Event("note", text="a note") in seen
    assert r.timings["ssh ready"] == seen[-1].seconds


def test_a_failing_phase_says_so_and_keeps_no_timing():
    r, seen = _events()
    with pytest.raises(RuntimeError), r.phase("roots"):
        raise RuntimeError("disk full")
    assert [e.kind for e in seen] == ["start", "failed"]
    assert "roots" not in r.timings


def test_plain_lines_are_todays_lines():
    lines: list[str] = []
    r = Reporter(lines.append)
    with r.phase("network"):
        lab.parallel(r.counted("network", lambda n: n, 2), [1, 2])
        r.emit("made labctl-x")
    assert lines[0] == "network ..." and lines[1] == "made labctl-x"
    assert lines[2].startswith("network: done in ") and len(lines) == 3


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=100, color_system=None), buf


def test_the_live_display_shows_phases_nodes_and_notes_then_stops():
    console, buf = _terminal()
    live = progress.LiveProgress(console)
    r = Reporter(listen=live)
    with r.phase("domains started"):
        assert live.progress.live.is_started
        lab.parallel(r.counted("domains started", lambda n: n, 3), [1, 2, 3])
        r.emit("built layer x")
    assert not live.progress.live.is_started  # later output is plain, below it
    out = buf.getvalue()
    assert "domains started" in out and "3/3 nodes" in out and "✓" in out
    assert "built layer x" in out


def test_the_live_display_marks_a_failed_phase_and_stops():
    console, buf = _terminal()
    live = progress.LiveProgress(console)
    r = Reporter(listen=live)
    with pytest.raises(RuntimeError), r.phase("ssh ready"):
        raise RuntimeError("no banner")
    assert not live.progress.live.is_started
    assert "ssh ready failed" in buf.getvalue()


def test_a_count_before_its_phase_starts_is_shown_when_it_does():
    console, buf = _terminal()
    live = progress.LiveProgress(console)
    live(Event("count", "remote/guest nodes prepared", done=2, total=2))
    with Reporter(listen=live).phase("remote/guest nodes prepared"):
        pass
    assert "2/2 nodes" in buf.getvalue()


def test_a_tally_has_no_total_and_shows_its_unit():
    console, buf = _terminal()
    live = progress.LiveProgress(console)
    r = Reporter(listen=live)
    with r.phase("build Pacemaker"):
        tell = r.tally("build Pacemaker", "compiler runs")
        tell(1)
        tell(57)
    assert "57 compiler runs" in buf.getvalue() and "57/" not in buf.getvalue()
    lines: list[str] = []
    plain = Reporter(lines.append)
    with plain.phase("build Pacemaker"):
        plain.tally("build Pacemaker", "compiler runs")(3)
    assert len(lines) == 2  # plain output: the phase's lines only, as for node counts


def test_the_cli_renders_live_only_on_a_terminal_and_not_with_plain(monkeypatch):
    console, _ = _terminal()
    monkeypatch.setattr(cli, "err", console)
    monkeypatch.setattr(cli, "_plain", False)
    assert isinstance(cli._reporter().listen, progress.LiveProgress)
    monkeypatch.setattr(cli, "_plain", True)
    assert not isinstance(cli._reporter().listen, progress.LiveProgress)
    monkeypatch.setattr(cli, "_plain", False)
    monkeypatch.setattr(cli, "err", Console(file=io.StringIO()))  # a pipe, a CI log
    assert not isinstance(cli._reporter().listen, progress.LiveProgress)
