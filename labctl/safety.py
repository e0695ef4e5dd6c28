"""Paths made from data labctl did not just get from its user: checked before use.

Names and directories read back from libvirt (network, pool and domain metadata)
or from files labctl wrote earlier (lab.json, manifests) may have been written by
anyone who can reach libvirtd or the state directory. Before such a value becomes
a path that labctl removes, it must pass these checks. Lexical checks are pure;
`child_dir` also looks at the file system (symbolic links).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from labctl.errors import LabctlError


class UnsafePathError(LabctlError):
    """A name or path that would lead outside the directory it belongs in."""


# A Debian (or upstream) version: optional epoch, then no '/', no whitespace.
_VERSION_RE = re.compile(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*$")
MAX_VERSION = 64


def is_component(name: str) -> bool:
    """NAME is one ordinary path component: not empty, '.', '..', no '/' or NUL. Pure."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def is_normal_absolute(path: str) -> bool:
    """PATH is absolute, not '/', and already normal: no '.', '..' or empty components. Pure."""
    return (
        path.startswith("/")
        and path != "/"
        and "\0" not in path
        and os.path.normpath(path) == path
        and not path.startswith("//")
    )


def is_under(path: str | Path, directory: str | Path) -> bool:
    """PATH is DIRECTORY or below it, comparing normalised components, not strings. Pure."""
    p = Path(os.path.normpath(path))
    d = Path(os.path.normpath(directory))
    return p == d or d in p.parents


def is_strictly_under(path: str | Path, directory: str | Path) -> bool:
    """PATH is below DIRECTORY (not DIRECTORY itself). Pure."""
    return is_under(path, directory) and os.path.normpath(path) != os.path.normpath(directory)


def child_dir(parent: Path, name: str, what: str = "directory") -> Path:
    """PARENT/NAME, checked to be a real child of PARENT: NAME one ordinary
    component, and PARENT/NAME not a symbolic link (so nothing removed through it
    can be outside PARENT). It need not exist."""
    if not is_component(name):
        raise UnsafePathError(f"{what} name {name!r} is not a plain name: refusing to use it")
    base = Path(os.path.realpath(parent))
    child = base / name
    if child.is_symlink():
        raise UnsafePathError(
            f"{child} is a symbolic link, not a {what}: not following it (remove it yourself)"
        )
    if child.exists() and Path(os.path.realpath(child)).parent != base:
        raise UnsafePathError(f"{child} resolves outside {base}: refusing to use it")
    return child


def state_dir_of(text: str) -> Path | None:
    """A state directory named in a domain's metadata, if it is a plausible one
    (absolute, normal, not '/'); else None. Pure."""
    return Path(text) if is_normal_absolute(text) else None


def same_dir(a: str | Path, b: str | Path) -> bool:
    """A and B name the same directory (symbolic links resolved)."""
    return os.path.realpath(a) == os.path.realpath(b)


def check_version(version: str, where: str = "a node") -> str:
    """VERSION if it can be part of a file name (a Debian or upstream version);
    else UnsafePathError naming WHERE it came from. Pure."""
    if len(version) > MAX_VERSION or not _VERSION_RE.match(version):
        raise UnsafePathError(
            f"{where} reported Pacemaker version {version[:80]!r}, which is not a version "
            "labctl can use in a path"
        )
    return version
