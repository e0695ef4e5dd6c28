"""The one way labctl runs a host command: with a deadline, errors as LabctlError."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, NoReturn

from labctl.errors import CommandError, CommandStopped, CommandTimeout, HostError


def describe(argv: list[str], words: int = 6) -> str:
    """ARGV as a short shell-quoted line for messages."""
    text = shlex.join(argv[:words])
    return text + " …" if len(argv) > words else text


def _kill_group(proc: subprocess.Popen) -> None:
    # The command's own session: a shell's children (chroot, apt, make) go too,
    # and none of them keeps our pipes open after the deadline.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run(
    argv: list[str],
    *,
    where: str,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: IO | None = None,
    name: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ARGV, capturing its output (or writing it to STDOUT, a file, with stderr);
    past TIMEOUT seconds kill it and everything it started (CommandTimeout);
    a non-zero exit is a CommandError if CHECK. NAME: what messages call it."""
    shown = name or describe(argv)
    proc = _start(
        argv,
        where,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT if stdout is not None else subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise CommandTimeout(where, shown, timeout) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    result = subprocess.CompletedProcess(argv, proc.returncode, out or "", err or "")
    if check and proc.returncode != 0:
        raise CommandError(where, shown, proc.returncode, result.stdout, result.stderr)
    return result


def _start(
    argv: list[str],
    where: str,
    *,
    stdin: int | IO,
    stdout: int | IO,
    stderr: int | IO,
    cwd: Path | None,
    env: Mapping[str, str] | None,
) -> subprocess.Popen[str]:
    """ARGV started in a session of its own (so that a timeout can end its whole group)."""
    try:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise HostError(
            f"{where}: {argv[0]} is not installed: `labctl host check` says what to install"
        ) from None


def stream(
    argv: list[str],
    *,
    where: str,
    timeout: float,
    on_line: Callable[[str], None],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    watch: Callable[[], str | None] | None = None,
    watch_every: float = 10.0,
) -> int:
    """Run ARGV, handing each line of its output (stdout and stderr) to ON_LINE as it
    comes; return its exit status. Past TIMEOUT seconds it and everything it started
    are killed (CommandTimeout), even while it prints nothing. WATCH, called every
    WATCH_EVERY seconds meanwhile, may name a reason to stop it early: it is then
    killed the same way and CommandStopped(reason) raised."""
    shown = name or describe(argv)
    proc = _start(
        argv,
        where,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
    )
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _kill_group(proc)

    # Reading lines blocks; a timer ends the command, which ends the reading.
    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    finished = threading.Event()
    stopped: list[str] = []

    def watching() -> None:
        assert watch is not None
        while not finished.wait(watch_every):
            reason = watch()
            if reason:
                stopped.append(reason)
                _kill_group(proc)
                return

    if watch is not None:
        threading.Thread(target=watching, daemon=True, name=f"watch {shown}").start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line)
        status = proc.wait()
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        timer.cancel()
        finished.set()
    if stopped:
        raise CommandStopped(f"{where}: `{shown}` stopped: {stopped[0]}")
    if expired.is_set():
        raise CommandTimeout(where, shown, timeout)
    return status


def _sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def end_on_sigterm() -> None:
    """Make SIGTERM end labctl the way Ctrl-C does, through its exception handlers:
    otherwise a half-made lab is not rolled back, locks stay taken, and commands
    started in their own process group (CTS, builds) run on without it."""
    signal.signal(signal.SIGTERM, _sigterm)


def spawn(argv: list[str], *, where: str, log: Path) -> int:
    """Start ARGV as a helper that outlives labctl (a session of its own, output to
    LOG, nothing of ours inherited); return its PID. Whoever starts one stops it."""
    with open(log, "w") as out:
        return _start(
            argv, where, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=Path("/"), env=None
        ).pid
