"""A stand-in for a user's cloud image, built here because CI cannot download one.

It is built the way distributions build theirs, so that labctl meets it as it
would meet a real one: a partitioned disk that boots through its firmware and
its own boot loader (syslinux on a FAT /boot), Debian's cloud kernel, and
cloud-init taking the node's identity from a NoCloud seed. It holds
pacemaker-remote: the lab network is isolated, so a node cannot install it.
Nothing of labctl's own is in it (no seed unit, no keys).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from labctl import images

# dbus: as in any cloud image; logind (the ACPI power button) needs it.
PACKAGES = ("linux-image-cloud-amd64", "cloud-init", "dbus")
MIB = 1024 * 1024
BOOT_MIB = 96
ROOT_MIB = 1536
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
SYSLINUX_CFG = """DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL=cloudimg-root rw console=ttyS0
"""

POST = r"""
# As in any cloud image, logind runs (labctl's container image masks it).
rm -f "$merged/etc/systemd/system/systemd-logind.service"
: > "$merged/etc/machine-id"
rm -f "$merged/var/lib/dbus/machine-id"
cp "$(ls "$merged"/boot/vmlinuz-* | tail -n 1)" "$OUT/vmlinuz"
cp "$(ls "$merged"/boot/initrd.img-* | tail -n 1)" "$OUT/initrd.img"
mkfs.ext4 -q -L cloudimg-root -d "$merged" "$OUT/root.raw" "$ROOT_MIB"M
"""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def build(img: images.Image, out: Path) -> Path:
    """OUT (a qcow2), built from IMG's remote layer unless it is there already."""
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".cloud-image-", dir=out.parent))
    try:
        parts = scratch / "parts"
        parts.mkdir()
        images.build_layer(
            [img.layer("remote"), img.base],
            scratch / "layer",
            PACKAGES,
            scratch / "overlay",
            post=POST,
            env={"OUT": str(parts), "ROOT_MIB": str(ROOT_MIB)},
        )
        boot = parts / "boot.fat"
        (parts / "syslinux.cfg").write_text(SYSLINUX_CFG)
        # -h: the partition's first sector, which syslinux's boot sector reads.
        _run("mkfs.vfat", "-n", "BOOT", "-h", "2048", "-C", str(boot), str(BOOT_MIB * 1024))
        _run(
            "mcopy", "-i", str(boot),
            str(parts / "vmlinuz"), str(parts / "initrd.img"), str(parts / "syslinux.cfg"), "::/",
        )  # fmt: skip
        _run("syslinux", "--install", str(boot))
        disk = parts / "disk.raw"
        with open(disk, "wb") as f:
            f.truncate((1 + BOOT_MIB + ROOT_MIB) * MIB)
        table = (
            "label: dos\n"
            f"start=2048, size={BOOT_MIB * 2048}, type=c, bootable\n"
            f"start={(1 + BOOT_MIB) * 2048}, type=83\n"
        )
        subprocess.run(["sfdisk", "-q", str(disk)], input=table.encode(), check=True)
        _run("dd", f"if={SYSLINUX_MBR}", f"of={disk}", "bs=440", "count=1", "conv=notrunc")
        _run("dd", f"if={boot}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc,sparse")
        root = parts / "root.raw"
        _run(
            "dd", f"if={root}", f"of={disk}", "bs=1M", f"seek={1 + BOOT_MIB}", "conv=notrunc,sparse"
        )
        part = out.with_suffix(".part")
        _run("qemu-img", "convert", "-O", "qcow2", str(disk), str(part))
        part.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()
