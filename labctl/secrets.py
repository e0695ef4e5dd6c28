"""Key material for a lab: SSH key pairs and the Pacemaker authkey.

Secrets are written 0600 from the moment the file exists and never printed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

AUTHKEY_BYTES = 4096  # as Pacemaker's documentation makes it (dd ... bs=4096 count=1)


def write_secret(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write DATA to PATH so that it is never readable by others, not even briefly.

    Through a temporary file of a unique name, created 0600 (then MODE) and fsynced
    before it replaces PATH: a concurrent writer, a failure or a crash leaves either
    the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp: O_EXCL, mode 0600 from the start, a name no other writer picks.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    """Make a rename in D durable."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_authkey() -> bytes:
    return os.urandom(AUTHKEY_BYTES)


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def new_ed25519(comment: str) -> tuple[bytes, str]:
    """A new key pair: (private key in OpenSSH format, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, f"{public.decode()} {comment}"
