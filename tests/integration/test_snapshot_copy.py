"""A snapshot's copy of an overlay upper directory is exact: mounted again over the
same lower layer, it shows the same tree (whiteouts, opaque directories, owners,
modes, xattrs kept). Real overlayfs and cp, as root; no libvirt."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from labctl import mounts, snapshot


def _tree(root: Path) -> dict[str, tuple]:
    """What a node would see: every path with its type, owner, mode and content."""
    seen = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            seen[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid,
                                              stat.S_IMODE(st.st_mode), data)  # fmt: skip
    return seen


@pytest.fixture
def overlay(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root (overlay mounts, trusted.* xattrs): run as root")
    lower, upper, work, merged = (tmp_path / d for d in ("lower", "upper", "work", "merged"))
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/gone").write_text("lower")
    (lower / "etc/kept").write_text("lower")
    (lower / "opaque").mkdir()
    (lower / "opaque/old").write_text("lower")
    mounted: list[Path] = []

    def mount(up: Path, wk: Path, target: Path) -> Path:
        mounts.mount_overlay([lower], up, wk, target)
        mounted.append(target)
        return target

    yield lower, upper, work, merged, mount
    for target in reversed(mounted):
        mounts.unmount(str(target))


def test_a_copied_upper_dir_shows_the_same_tree_over_the_same_lower(overlay, tmp_path):
    _lower, upper, work, merged, mount = overlay
    root = mount(upper, work, merged)
    (root / "etc/gone").unlink()  # a whiteout in the upper dir
    for f in (root / "opaque").iterdir():
        f.unlink()
    (root / "opaque").rmdir()
    (root / "opaque").mkdir()  # an opaque directory (trusted.overlay.opaque)
    (root / "opaque/new").write_text("upper")
    (root / "etc/kept").write_text("changed")
    (root / "etc/secret").write_text("key")
    os.chmod(root / "etc/secret", 0o600)
    os.chown(root / "etc/secret", 0, 108)
    os.setxattr(root / "etc/kept", "user.labctl", b"yes")
    expected = _tree(root)
    mounts.unmount(str(root))

    copy = tmp_path / "snap" / "upper"
    copy.parent.mkdir()
    snapshot.copy_tree(upper, copy)

    wh = (copy / "etc/gone").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0  # the whiteout, a 0/0 device
    assert os.getxattr(copy / "opaque", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(copy / "etc/kept", "user.labctl") == b"yes"

    again = mount(copy, tmp_path / "work2", tmp_path / "merged2")
    assert _tree(again) == expected
    assert not (again / "etc/gone").exists()
    assert [p.name for p in (again / "opaque").iterdir()] == ["new"]
