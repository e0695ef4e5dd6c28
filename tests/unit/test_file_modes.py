"""Secrets at rest on the host: seeds are 0600 before any key is in them, the
directories labctl makes for node files have the modes a node expects."""

import os
import stat
from pathlib import Path

import pycdlib

from labctl import cloudinit, images, lab
from labctl.provision import NodeFile


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_the_ext4_seed_is_0600_before_mkfs_writes_the_keys_into_it(tmp_path, monkeypatch):
    seed = tmp_path / "seed.img"
    seen: list[int] = []

    def fake_run(argv, where="host", **kw):
        assert argv[0] == "mkfs.ext4" and argv[-2] == str(seed)
        seen.append(mode(seed))  # the file mkfs will fill already exists, private

    monkeypatch.setattr(images, "_run", fake_run)
    seed.write_bytes(b"an old seed")
    images.make_seed(tmp_path / "tree", seed)
    assert seen == [0o600]
    assert seed.stat().st_size == 0  # the old one is gone, not reused


def test_the_cloud_init_seed_is_created_0600_not_narrowed_after(tmp_path, monkeypatch):
    # Created 0644 and chmodded after, another user could open it in between and
    # read the keys through that descriptor later.
    seed = tmp_path / "seed.iso"
    seen: list[int] = []
    real = pycdlib.PyCdlib.write_fp

    def write_fp(self, fp, *a, **kw):
        seen.append(stat.S_IMODE(os.fstat(fp.fileno()).st_mode))
        return real(self, fp, *a, **kw)

    def no_chmod(self, *a, **kw):
        raise AssertionError(f"{self} made with a wider mode, then narrowed")

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", write_fp)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    old = os.umask(0)
    try:
        cloudinit.write_seed(seed, {"meta-data": b"{}", "user-data": b"#cloud-config\n"})
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert mode(seed) == 0o600


def test_node_files_make_root_and_its_ssh_directory_0700_and_others_0755(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    lab.write_files(
        root,
        [
            NodeFile("/etc/ssh/ssh_host_ed25519_key", b"k", 0o600),
            NodeFile("/root/.ssh/id_ed25519", b"k", 0o600),
            NodeFile("/etc/hostname", b"n\n"),
        ],
    )
    assert mode(root / "root") == mode(root / "root/.ssh") == 0o700
    assert mode(root / "etc") == mode(root / "etc/ssh") == 0o755
    assert mode(root / "root/.ssh/id_ed25519") == mode(root / "etc/ssh/ssh_host_ed25519_key")
    assert mode(root / "etc/ssh/ssh_host_ed25519_key") == 0o600
    assert mode(root / "etc/hostname") == 0o644


def test_node_files_leave_an_existing_directory_as_it_is(tmp_path):
    (tmp_path / "root").mkdir(mode=0o750)
    (tmp_path / "root").chmod(0o750)
    lab.write_files(tmp_path, [NodeFile("/root/.ssh/authorized_keys", b"k", 0o600)])
    assert mode(tmp_path / "root") == 0o750
    assert mode(tmp_path / "root/.ssh") == 0o700


def test_the_ext4_seed_stage_is_private_and_gone_afterwards(tmp_path, monkeypatch):
    seed = tmp_path / "seed.img"
    seen: dict[str, int] = {}

    def fake_make_seed(tree: Path, out: Path) -> None:
        for p in [tree, *tree.rglob("*")]:
            seen[str(p.relative_to(tree))] = mode(p)

    monkeypatch.setattr(images, "make_seed", fake_make_seed)
    lab.write_ext4_seed(seed, [NodeFile("/root/.ssh/id_ed25519", b"k", 0o600)])
    assert seen == {
        ".": 0o700,  # the stage: nobody else may look in
        "files": 0o755,  # copied over the VM's / by `cp -a`
        "files/root": 0o700,
        "files/root/.ssh": 0o700,
        "files/root/.ssh/id_ed25519": 0o600,
    }
    assert not (tmp_path / "seed-tree").exists()
