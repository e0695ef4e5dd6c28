"""The one host-command wrapper: deadlines that kill the whole command, errors that name it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labctl import proc
from labctl.errors import CommandError, CommandStopped, CommandTimeout, HostError


def test_run_past_its_deadline_is_stopped_and_named() -> None:
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as exc:
        proc.run(["sleep", "5"], where="host", timeout=0.2)
    assert time.monotonic() - start < 2
    assert "`sleep 5`" in str(exc.value)
    assert "0.2 s" in str(exc.value)


def test_run_deadline_also_ends_what_the_command_started(tmp_path: Path) -> None:
    # A shell whose child keeps the output pipe open: without killing the whole
    # group, reading the output after the kill would wait for the child.
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        proc.run(["sh", "-c", f"sleep 5 & echo $! > {pidfile}; wait"], where="host", timeout=0.3)
    assert time.monotonic() - start < 2
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # A killed child is a zombie until its parent (gone) is reaped by init.
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the command's child outlived the deadline")


def test_run_failure_is_a_command_error_with_the_output() -> None:
    with pytest.raises(CommandError) as exc:
        proc.run(["sh", "-c", "echo boom >&2; exit 3"], where="mkfs", timeout=5)
    assert exc.value.status == 3
    assert str(exc.value) == "mkfs: `sh -c 'echo boom >&2; exit 3'` exited 3: boom"


def test_run_unchecked_returns_the_status_and_input_reaches_it() -> None:
    r = proc.run(["sh", "-c", "cat; exit 4"], where="host", timeout=5, check=False, input="hi")
    assert (r.returncode, r.stdout) == (4, "hi")


def test_missing_program_is_a_host_error() -> None:
    with pytest.raises(HostError, match="no-such-tool-xyz is not installed"):
        proc.run(["no-such-tool-xyz"], where="host", timeout=5)


def test_stream_past_its_deadline_is_stopped_even_when_silent() -> None:
    lines: list[str] = []
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"`CTS run` did not finish within 0\.3 s"):
        proc.stream(
            ["sh", "-c", "echo one; sleep 5; echo two"],
            where="CTS",
            timeout=0.3,
            on_line=lines.append,
            name="CTS run",
        )
    assert time.monotonic() - start < 2
    assert lines == ["one\n"]


def test_stream_hands_over_lines_and_returns_the_status() -> None:
    lines: list[str] = []
    status = proc.stream(
        ["sh", "-c", "echo a; echo b >&2; exit 2"], where="x", timeout=5, on_line=lines.append
    )
    assert (status, lines) == (2, ["a\n", "b\n"])


def test_stream_is_stopped_early_when_its_watch_names_a_reason(tmp_path) -> None:
    calls: list[int] = []
    child = tmp_path / "child.pid"

    def watch() -> str | None:
        calls.append(1)
        return "node x is off" if len(calls) >= 2 else None

    start = time.monotonic()
    with pytest.raises(CommandStopped, match=r"CTS: `CTS run` stopped: node x is off"):
        proc.stream(
            ["sh", "-c", f"sleep 30 & echo $! > {child}; echo one; wait"],
            where="CTS",
            timeout=60,
            on_line=lambda _line: None,
            name="CTS run",
            watch=watch,
            watch_every=0.1,
        )
    assert time.monotonic() - start < 5
    # What the command started went with it.
    pid = int(child.read_text())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_watch_that_never_objects_leaves_the_result_alone() -> None:
    status = proc.stream(
        ["sh", "-c", "sleep 0.3; exit 3"],
        where="x",
        timeout=5,
        on_line=lambda _line: None,
        watch=lambda: None,
        watch_every=0.05,
    )
    assert status == 3


def test_image_build_commands_have_a_deadline() -> None:
    from labctl import images

    with pytest.raises(CommandTimeout, match="debootstrap: `sleep 5`"):
        images._run(["sleep", "5"], where="debootstrap", timeout=0.2)


def test_cts_preparation_commands_have_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from labctl import cts

    monkeypatch.setattr(cts, "PREPARE_STEP_TIMEOUT", 0.2)
    with pytest.raises(CommandTimeout, match="`sleep 5`"):
        cts._run(["sleep", "5"])


def test_git_of_a_build_tree_has_a_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from labctl import pcmkbuild

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\nexec sleep 5\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setattr(pcmkbuild, "GIT_TIMEOUT", 0.2)
    with pytest.raises(CommandTimeout, match="`git rev-parse HEAD`"):
        pcmkbuild._git(tmp_path, "rev-parse", "HEAD")


def test_cts_deadline_grows_with_the_iterations() -> None:
    from labctl import cts_run

    assert cts_run.cts_deadline(1) < cts_run.cts_deadline(10) < cts_run.cts_deadline(100)
    assert cts_run.cts_deadline(0) == cts_run.cts_deadline(1)


def test_sigterm_ends_labctl_and_the_command_it_streams(tmp_path):
    # A SIGTERM to labctl (a CI timeout, `kill`) must not leave CTS or a build running.
    pidfile = tmp_path / "pid"
    script = (
        "from labctl import proc\n"
        "proc.end_on_sigterm()\n"
        f"proc.stream(['sh', '-c', 'echo $$ > {pidfile}; exec sleep 60'],"
        " where='host', timeout=120, on_line=lambda line: None)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the streamed command never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=20) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
