"""The only module that speaks SSH (paramiko): wait for a node, run, put a file.

Host keys are pinned: labctl makes each node's host key itself and writes it
into the lab's known_hosts before the node boots; an unknown or changed key is
refused.
"""

from __future__ import annotations

import io
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from labctl.errors import CommandError, CommandTimeout, LabctlError, WaitTimeout


@dataclass(frozen=True)
class Result:
    command: str
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


def wait_for_banner(host: str, port: int = 22, timeout: float = 60.0) -> float:
    """Poll until an SSH server on HOST:PORT sends its banner; return seconds waited."""
    start = time.monotonic()
    deadline = start + timeout
    last = "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.settimeout(2.0)
                if s.recv(4).startswith(b"SSH-"):
                    return time.monotonic() - start
                last = "no SSH banner"
        except OSError as e:
            last = e.strerror or str(e)
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{host}:{port}: SSH did not answer within {timeout:.0f} s ({last})")
        time.sleep(0.2)


class HostKeyMismatch(LabctlError):
    """A node answered with another host key than the one labctl pinned."""


class Connection:
    """Root SSH to one node with the lab's key; host key checked against known_hosts."""

    def __init__(self, name: str, host: str, key_file: Path, known_hosts: Path, port: int = 22):
        self.name = name
        self.host = host
        self._client = paramiko.SSHClient()
        self._client.load_host_keys(str(known_hosts))
        self._client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self._client.connect(
                host,
                port=port,
                username="root",
                key_filename=str(key_file),
                allow_agent=False,
                look_for_keys=False,
                timeout=10,
                banner_timeout=10,
                auth_timeout=10,
            )
        except paramiko.BadHostKeyException as e:
            raise HostKeyMismatch(
                f"{name}: host key differs from the one labctl pinned; refusing to connect"
            ) from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise LabctlError(f"{name}: SSH to {host} failed: {e or type(e).__name__}") from e

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def run(self, command: str, check: bool = True, timeout: float = 300.0) -> Result:
        """Run COMMAND through the node's shell; raise CommandError on failure if CHECK.

        TIMEOUT bounds the whole command (CommandTimeout), not each read."""
        try:
            status, out, err = _exec(self._client, command, timeout)
        except CommandTimeout as e:
            # Closing a channel without a terminal does not stop the command there.
            raise CommandTimeout(self.name, command, e.timeout, stopped=False) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise _lost(self.name, self.host, f"running `{command}`", e) from e
        res = Result(command, status, out, err)
        if check and status != 0:
            raise CommandError(self.name, command, status, out, err)
        return res

    def put(self, data: bytes, path: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        """Write DATA to PATH atomically with MODE and owner set before it appears."""
        tmp = f"{path}.labctl-tmp"
        try:
            with self._client.open_sftp() as sftp:
                _bound(sftp)
                with sftp.open(tmp, "wb") as f:
                    f.chmod(mode)
                    f.chown(uid, gid)
                    f.write(data)
                sftp.posix_rename(tmp, path)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise _lost(self.name, self.host, f"writing {path} over SFTP", e) from e

    def get(self, path: str) -> bytes:
        try:
            with self._client.open_sftp() as sftp:
                _bound(sftp)
                buf = io.BytesIO()
                sftp.getfo(path, buf)
                return buf.getvalue()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise _lost(self.name, self.host, f"reading {path} over SFTP", e) from e


# No single SFTP read or write of labctl's (keys, small files) waits this long.
SFTP_TIMEOUT = 60.0
_WAKE = 1.0  # at least this often the deadline is checked


def _exec(client: paramiko.SSHClient, command: str, timeout: float) -> tuple[int, str, str]:
    """Run COMMAND on a new channel and collect its output, all within TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise paramiko.SSHException("the SSH connection is closed")
    chan = transport.open_session(timeout=min(timeout, 30.0))
    try:
        chan.exec_command(command)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            busy = False
            if chan.recv_ready():
                out += chan.recv(65536)
                busy = True
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                busy = True
            if not busy and chan.exit_status_ready() and chan.eof_received:
                break
            if chan.closed and not busy and not chan.exit_status_ready():
                raise paramiko.SSHException("the channel closed before the command ended")
            if time.monotonic() >= deadline:
                raise CommandTimeout("ssh", command, timeout)
            if not busy:
                wait = max(0.0, min(deadline - time.monotonic(), _WAKE))
                if chan.eof_received:
                    chan.status_event.wait(wait)  # only the exit status is to come
                else:
                    select.select([chan], [], [], wait)  # stdout or stderr data, or EOF
        # Output after the exit status (a race in the loop above) is read too.
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        return chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
    finally:
        chan.close()


def _bound(sftp: paramiko.SFTPClient) -> None:
    chan = sftp.get_channel()
    if chan is not None:
        chan.settimeout(SFTP_TIMEOUT)


def _lost(name: str, host: str, doing: str, e: BaseException) -> LabctlError:
    what = str(e) or type(e).__name__
    return LabctlError(
        f"{name}: SSH to {host} failed while {doing}: {what} "
        f"(is the node up? `labctl status` shows it)"
    )


def as_labctl_error(e: BaseException) -> LabctlError | None:
    """A paramiko error that escaped every narrower translation, for the CLI."""
    if isinstance(e, paramiko.SSHException):
        return LabctlError(f"SSH failed: {e or type(e).__name__}")
    return None
