"""Key material for a lab: SSH key pairs and the Pacemaker authkey.

Secrets are written 0600 from the moment the file exists and never printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

AUTHKEY_BYTES = 4096  # as Pacemaker's documentation makes it (dd ... bs=4096 count=1)


def write_secret(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write DATA to PATH so that it is never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    tmp.replace(path)


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
