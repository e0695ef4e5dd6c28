"""The pure checks of labctl.safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl import safety
from labctl.spec import is_lab_name


@pytest.mark.parametrize("name", ["demo", "a", "hp-1", "x" * 20])
def test_lab_names_read_back_that_pass(name):
    assert is_lab_name(name)


@pytest.mark.parametrize("name", ["..", ".", "", "/", "a/b", "Demo", "-a", "a-", "x" * 21, "a b"])
def test_lab_names_read_back_that_are_foreign(name):
    assert not is_lab_name(name)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/var/lib/labctl", True),
        ("/var/lib/labctl/alt", True),
        ("/", False),
        ("//x", False),
        ("/var/lib/labctl/", False),
        ("/var/lib/labctl/x/..", False),
        ("/var/./lib", False),
        ("relative", False),
        ("", False),
    ],
)
def test_state_dirs_named_in_metadata(path, ok):
    assert (safety.state_dir_of(path) is not None) == ok


@pytest.mark.parametrize(
    ("path", "directory", "under"),
    [
        ("/a/b/c", "/a/b", True),
        ("/a/b", "/a/b", True),
        ("/a/bc", "/a/b", False),
        ("/a/b/../c", "/a/b", False),
        ("/a/c", "/a/b/..", True),
    ],
)
def test_is_under_compares_components(path, directory, under):
    assert safety.is_under(path, directory) == under


def test_child_dir_is_a_real_child(tmp_path):
    assert safety.child_dir(tmp_path, "demo") == Path(tmp_path.resolve(), "demo")
    for bad in ("..", ".", "", "a/b", "/etc"):
        with pytest.raises(safety.UnsafePathError):
            safety.child_dir(tmp_path, bad)
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(safety.UnsafePathError, match="symbolic link"):
        safety.child_dir(tmp_path, "link")


@pytest.mark.parametrize(
    "version", ["2.1.5-1+deb12u1", "1:2.1.5-1", "3.0.0", "2.1.8~rc1-1~bpo12+1"]
)
def test_versions_that_can_be_part_of_a_path(version):
    assert safety.check_version(version) == version


@pytest.mark.parametrize("version", ["", "../2.1.5", "2.1.5/../x", "2.1.5 x", "x2.1", "2" * 65])
def test_versions_that_cannot(version):
    with pytest.raises(safety.UnsafePathError):
        safety.check_version(version)
