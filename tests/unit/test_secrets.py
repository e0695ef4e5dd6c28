import stat

import paramiko

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
