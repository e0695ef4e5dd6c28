"""Every failure is one line on stderr and a non-zero exit; `--debug` gives the traceback."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from typer.testing import CliRunner

from labctl import cli, lab, proc, virt
from labctl.errors import CommandError

from .test_virt_errors import DROPPED


def _raises(e: BaseException) -> Callable[..., object]:
    def fail(*_a: object, **_k: object) -> object:
        raise e

    return fail


def _ssh_timeout() -> BaseException:
    # What ssh.Connection.run raises when a node command passes its deadline.
    from labctl.errors import CommandTimeout

    return CommandTimeout("he1-c1", "crm_mon -1 --output-as=xml", 30.0, stopped=False)


def _subprocess_timeout() -> BaseException:
    try:
        proc.run(["sleep", "5"], where="qemu-img", timeout=0.1)
    except Exception as e:
        return e
    raise AssertionError("no timeout")


KINDS = {
    "libvirt error, translated": (
        lambda: virt.translate(DROPPED, "defineXML", "domain he1-c1"),
        "labctl: libvirt defineXML of domain he1-c1 failed: the connection to libvirtd was lost",
    ),
    "libvirt error escaping untranslated": (
        lambda: DROPPED,
        "labctl: libvirt call of an object failed: the connection to libvirtd was lost",
    ),
    "SSH timeout": (
        _ssh_timeout,
        "labctl: he1-c1: `crm_mon -1 --output-as=xml` did not finish within 30 s",
    ),
    "paramiko error escaping": (
        lambda: paramiko.SSHException("No existing session"),
        "labctl: SSH failed: No existing session",
    ),
    "socket timeout escaping": (
        lambda: TimeoutError(errno.ETIMEDOUT, "Connection timed out"),
        "labctl: Connection timed out (ETIMEDOUT)",
    ),
    "full disk": (
        lambda: OSError(errno.ENOSPC, "No space left on device", "/var/lib/labctl/labs/he1/x"),
        "labctl: no space left on device at /var/lib/labctl/labs/he1/x: free some",
    ),
    "subprocess timeout": (
        _subprocess_timeout,
        "labctl: qemu-img: `sleep 5` did not finish within 0.1 s and was stopped",
    ),
    "subprocess timeout escaping": (
        lambda: subprocess.TimeoutExpired(["qemu-img", "info", "x"], 60),
        "labctl: host: `qemu-img info x` did not finish within 60 s",
    ),
    "command error": (
        lambda: CommandError("mkfs", "mkfs.ext4 -q", 1, "", "boom"),
        "labctl: mkfs: `mkfs.ext4 -q` exited 1: boom",
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_failure_is_one_line_and_nonzero_exit(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    make, start = KINDS[kind]
    monkeypatch.setattr(lab, "status", _raises(make()))
    r = CliRunner().invoke(cli.app, ["status", "he1", "--state-dir", str(tmp_path)])
    assert r.exit_code != 0, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(start), lines[0]
    assert "Traceback" not in r.output


def test_debug_shows_the_original_exception(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(lab, "status", _raises(DROPPED))
    r = CliRunner().invoke(cli.app, ["--debug", "status", "he1", "--state-dir", str(tmp_path)])
    assert r.exit_code != 0
    assert r.exception is DROPPED  # propagated: the traceback is printed


def test_a_bug_is_still_a_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lab, "status", _raises(KeyError("x")))
    r = CliRunner().invoke(cli.app, ["status", "he1", "--state-dir", str(tmp_path)])
    assert isinstance(r.exception, KeyError)


def test_rollback_failure_is_on_the_same_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    e = virt.translate(DROPPED, "defineXML", "domain he1-c1")
    e.add_note("rollback failed too: boom; `labctl down he1` removes what is left")
    monkeypatch.setattr(lab, "status", _raises(e))
    r = CliRunner().invoke(cli.app, ["status", "he1", "--state-dir", str(tmp_path)])
    (line,) = r.stderr.splitlines()
    assert line.startswith("labctl: libvirt defineXML of domain he1-c1 failed")
    assert line.endswith("(rollback failed too: boom; `labctl down he1` removes what is left)")


@pytest.mark.parametrize(
    "args, says",
    [
        # Before `--` an unknown option is refused, not run as part of the command.
        (["exec", "he1", "-n", "he1-c1", "--", "hostname"], "No such option: -n"),
        (["exec"], "Missing argument 'name'"),
        (["up", "--nodes", "x"], "Invalid value for '--nodes'"),
        (["image", "build", "--bogus"], "No such option: --bogus"),
        (["--bogus", "list"], "No such option: --bogus"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_help_exit_2(
    args: list[str], says: str, tmp_path: Path
) -> None:
    r = CliRunner().invoke(cli.app, [*args, "--state-dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"labctl: {says}") and "--help` shows the usage" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing made


def test_a_group_without_a_command_still_shows_its_help() -> None:
    r = CliRunner().invoke(cli.app, ["image"])
    assert "Usage:" in r.output and "build" in r.output
