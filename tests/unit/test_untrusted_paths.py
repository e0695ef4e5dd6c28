"""Paths made from names read back (libvirt, lab.json, manifests, a node's answer)
and from user input stay inside the state directory; mount checks compare paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labctl import cts, images, mounts, pcmkbuild, state
from labctl.errors import LabctlError
from labctl.mounts import MountEntry

ENTRIES = [
    MountEntry("/var/lib/labctl/labs/demo/nodes/demo-c1/root", "overlay", "lowerdir=/i/c:/i/b"),
    MountEntry("/var/lib/labctl/labs/demo2/nodes/demo2-c1/root", "overlay", "lowerdir=/j/c"),
]


@pytest.mark.parametrize(
    "directory",
    ["/var/lib/labctl/labs/demo/", "/var/lib/labctl/labs/x/../demo", "/var/lib/labctl//labs/demo"],
)
def test_mounts_under_compares_paths_not_string_prefixes(directory):
    assert mounts.mounts_under(Path(directory), ENTRIES) == [
        "/var/lib/labctl/labs/demo/nodes/demo-c1/root"
    ]


def test_an_image_is_in_use_whatever_the_spelling_of_its_directory(tmp_path, monkeypatch):
    (tmp_path / "images/debian12").mkdir(parents=True)
    (tmp_path / "images/debian12/manifest.json").write_text("{}")
    (tmp_path / "x").mkdir()
    lower = f"{tmp_path}/images/debian12/cluster"
    monkeypatch.setattr(
        mounts, "current_mounts", lambda: [MountEntry("/r", "overlay", f"lowerdir={lower}")]
    )
    with pytest.raises(LabctlError, match="in use"):
        images.remove_image(Path(f"{tmp_path}/x/.."), "debian12")
    assert (tmp_path / "images/debian12/manifest.json").is_file()


@pytest.mark.parametrize("name", ["..", ".", "/", "../builds/debian12/pcmk-2.1.5-abc", "a/../.."])
def test_image_rm_refuses_a_name_that_is_no_image_name(tmp_path, monkeypatch, name):
    monkeypatch.setattr(mounts, "current_mounts", lambda: [])
    state_dir = tmp_path / "state"
    (state_dir / "images").mkdir(parents=True)
    (state_dir / "builds/debian12/pcmk-2.1.5-abc").mkdir(parents=True)
    for d in (state_dir, state_dir / "builds/debian12/pcmk-2.1.5-abc"):
        (d / "manifest.json").write_text("{}")
    with pytest.raises(LabctlError):
        images.remove_image(state_dir, name)
    assert (state_dir / "manifest.json").is_file()
    assert (state_dir / "builds/debian12/pcmk-2.1.5-abc/manifest.json").is_file()


def test_image_rm_does_not_follow_a_symlinked_image_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(mounts, "current_mounts", lambda: [])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    (tmp_path / "images").mkdir()
    (tmp_path / "images/debian12").symlink_to(outside)
    with pytest.raises(LabctlError, match="symbolic link"):
        images.remove_image(tmp_path, "debian12")
    assert (outside / "manifest.json").is_file()


def test_build_rm_does_not_follow_a_symlinked_build_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(mounts, "current_mounts", lambda: [])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text(json.dumps({"tree": "/t"}))
    (tmp_path / "builds/debian12").mkdir(parents=True)
    (tmp_path / "builds/debian12/pcmk-2.1.5-abc").symlink_to(outside)
    b = pcmkbuild.resolve(tmp_path, "pcmk-2.1.5-abc")
    with pytest.raises(LabctlError, match="symbolic link"):
        pcmkbuild.remove_build(b, {})
    assert (outside / "manifest.json").is_file()


def test_a_lab_record_naming_another_lab_is_refused(tmp_path):
    (tmp_path / "labs/demo").mkdir(parents=True)
    (tmp_path / "labs/demo/lab.json").write_text(json.dumps({"spec": {"name": ".."}}))
    with pytest.raises(LabctlError, match=r"names lab '\.\.'"):
        state.read_record(tmp_path, "demo")


def test_a_lab_record_naming_an_image_that_is_a_path_is_refused(tmp_path):
    (tmp_path / "labs/demo").mkdir(parents=True)
    spec = {"name": "demo", "image": "../../x"}
    (tmp_path / "labs/demo/lab.json").write_text(json.dumps({"spec": spec}))
    with pytest.raises(LabctlError, match="names image"):
        state.read_record(tmp_path, "demo")


@pytest.mark.parametrize("version", ["2.1.5/../../victim", "2.1.5 x", "../2.1.5", ""])
def test_cts_source_for_a_version_that_is_no_version_is_refused(tmp_path, monkeypatch, version):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep\n")
    (tmp_path / "work/pacemaker-2.1.5").mkdir(parents=True)
    ran: list[list[str]] = []
    monkeypatch.setattr(cts, "missing_host_packages", lambda *a: [])
    monkeypatch.setattr(cts, "_run", lambda argv, cwd=None: ran.append(argv))
    with pytest.raises(LabctlError):
        cts.prepare_source(version, tmp_path / "work", [])
    assert (victim / "precious").is_file()
    assert ran == []
