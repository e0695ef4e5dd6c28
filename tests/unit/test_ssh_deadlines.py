"""Node commands over SSH: one overall deadline, and a dropped connection as one LabctlError.

A paramiko server on 127.0.0.1 in this process stands for a node: it runs each
command with sh, as sshd would.
"""

from __future__ import annotations

import io
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from labctl import secrets, ssh
from labctl.errors import CommandTimeout, LabctlError


class _Server(paramiko.ServerInterface):
    def __init__(self, client_key: paramiko.PKey) -> None:
        self.client_key = client_key

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "root" and key == self.client_key
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        def serve() -> None:
            proc = subprocess.Popen(
                ["sh", "-c", command.decode()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = proc.communicate()
            try:
                channel.sendall(out)
                channel.sendall_stderr(err)
                channel.send_exit_status(proc.returncode)
                channel.shutdown_write()
                channel.close()
            except OSError:
                pass  # the client gave up on it (a deadline passed)

        threading.Thread(target=serve, daemon=True).start()
        return True


class FakeNode:
    def __init__(self, tmp: Path) -> None:
        host_priv, _ = secrets.new_ed25519("root@node")
        client_priv, _ = secrets.new_ed25519("lab")
        self.host_key = paramiko.Ed25519Key.from_private_key(io.StringIO(host_priv.decode()))
        client_key = paramiko.Ed25519Key.from_private_key(io.StringIO(client_priv.decode()))
        self.key_file = tmp / "id"
        self.key_file.write_bytes(client_priv)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(
            f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"
        )
        self.transports: list[paramiko.Transport] = []
        self._server = _Server(client_key)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            t = paramiko.Transport(sock)
            t.add_server_key(self.host_key)
            t.start_server(server=self._server)
            self.transports.append(t)

    def connect(self) -> ssh.Connection:
        return ssh.Connection("he-n1", "127.0.0.1", self.key_file, self.known_hosts, self.port)

    def close(self) -> None:
        self.listener.close()
        for t in self.transports:
            t.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FakeNode]:
    n = FakeNode(tmp_path)
    try:
        yield n
    finally:
        n.close()


def test_run_returns_output_and_status(node: FakeNode) -> None:
    with node.connect() as c:
        r = c.run("echo out; echo err >&2; exit 3", check=False)
    assert (r.status, r.stdout, r.stderr) == (3, "out\n", "err\n")


def test_run_has_an_overall_deadline_not_a_per_read_one(node: FakeNode) -> None:
    # Output every 0.1 s: a per-read timeout of 0.3 s would never fire.
    start = time.monotonic()
    with node.connect() as c, pytest.raises(CommandTimeout) as exc:
        c.run("for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.1; done; sleep 5", timeout=0.3)
    assert time.monotonic() - start < 2
    assert str(exc.value).startswith("he-n1: `for i in")
    assert "did not finish within 0.3 s (labctl stopped waiting for it)" in str(exc.value)


def test_silent_command_past_its_deadline(node: FakeNode) -> None:
    start = time.monotonic()
    with node.connect() as c, pytest.raises(CommandTimeout, match="`sleep 5`"):
        c.run("sleep 5", timeout=0.2)
    assert time.monotonic() - start < 2


def test_dropped_connection_is_one_labctl_error(node: FakeNode) -> None:
    with node.connect() as c:
        c.run("true")
        node.close()  # the node goes away (a fence, a crash)
        time.sleep(0.1)
        with pytest.raises(LabctlError) as exc:
            c.run("true")
    text = str(exc.value)
    assert text.startswith("he-n1: SSH to 127.0.0.1 failed while running `true`: ")
    assert "\n" not in text


def test_sftp_on_a_dropped_connection_is_one_labctl_error(node: FakeNode) -> None:
    with node.connect() as c:
        node.close()
        time.sleep(0.1)
        with pytest.raises(LabctlError, match="failed while writing /etc/x over SFTP"):
            c.put(b"x", "/etc/x")


def test_escaped_paramiko_errors_are_translated_for_the_cli() -> None:
    e = ssh.as_labctl_error(paramiko.SSHException("No existing session"))
    assert isinstance(e, LabctlError) and str(e) == "SSH failed: No existing session"
