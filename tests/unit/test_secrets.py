import errno
import os
import stat
from pathlib import Path

import paramiko
import pytest

from labctl.secrets import AUTHKEY_BYTES, new_authkey, new_ed25519, write_secret


def test_secret_files_are_0600_and_replace_atomically(tmp_path):
    p = tmp_path / "sub" / "authkey"
    write_secret(p, b"one")
    write_secret(p, b"two")
    assert p.read_bytes() == b"two"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    assert [x.name for x in p.parent.iterdir()] == ["authkey"]


def test_authkey_is_4096_fresh_random_bytes():
    a, b = new_authkey(), new_authkey()
    assert len(a) == AUTHKEY_BYTES == 4096
    assert a != b


def test_generated_key_loads_in_paramiko_and_matches_its_public_line(tmp_path):
    priv, pub = new_ed25519("root@demo-c1")
    p = tmp_path / "k"
    write_secret(p, priv)
    key = paramiko.Ed25519Key.from_private_key_file(str(p))
    assert pub == f"ssh-ed25519 {key.get_base64()} root@demo-c1"


def test_write_secret_leaves_another_writers_temporary_file_alone(tmp_path):
    # The old fixed name (.NAME.tmp) was unlinked and reused: two writers clobbered each other.
    other = tmp_path / ".authkey.tmp"
    other.write_bytes(b"another writer's")
    write_secret(tmp_path / "authkey", b"mine")
    assert other.read_bytes() == b"another writer's"
    assert (tmp_path / "authkey").read_bytes() == b"mine"


def test_write_secret_fsyncs_the_data_before_the_rename(tmp_path, monkeypatch):
    p = tmp_path / "authkey"
    synced: list[bytes] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not os.path.isdir(path):
            # The data is in the temporary file, and the target does not exist yet.
            assert not p.exists()
            synced.append(Path(path).read_bytes())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_secret(p, b"secret")
    assert synced == [b"secret"]


def test_write_secret_gives_the_final_mode_and_never_more_while_writing(tmp_path, monkeypatch):
    modes: list[int] = []
    real_write = os.write

    def write(fd: int, data) -> int:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    write_secret(tmp_path / "key", b"x" * 10)
    write_secret(tmp_path / "hostname", b"node\n", 0o644)
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "hostname").stat().st_mode) == 0o644
    assert modes[0] == 0o600


def test_write_secret_failing_half_way_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    p = tmp_path / "authkey"
    write_secret(p, b"old key")

    def short_then_fail(fd: int, data) -> int:
        os.ftruncate(fd, 0)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(OSError):
        write_secret(p, b"new key")
    assert p.read_bytes() == b"old key"
    assert [x.name for x in tmp_path.iterdir()] == ["authkey"]


def test_write_secret_writes_all_of_a_large_secret(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:1000])))
    data = os.urandom(AUTHKEY_BYTES)
    write_secret(tmp_path / "authkey", data)
    assert (tmp_path / "authkey").read_bytes() == data
