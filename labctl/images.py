"""Base images: a debootstrapped Debian root plus one layer per node role.

On Debian 12 `pacemaker` and `pacemaker-remote` conflict, so one tree cannot
hold both. An image is therefore a common base (systemd, sshd, resource-agents)
and two overlay layers over it: "cluster" (corosync + pacemaker) and "remote"
(pacemaker-remote). A node's root is an overlay of its layer, the base, and an
upper directory of its own.

The cluster layer still gets pacemaker-remoted (and its unit, not enabled),
because CTS's Remote* tests turn a cluster node into a remote node: see
`CLUSTER_REMOTED`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labctl import locks, mounts, proc, safety
from labctl.errors import CommandError, HostError, NotFoundError, UsageError
from labctl.render import render

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageDef:
    name: str
    suite: str
    base_packages: tuple[str, ...]
    layers: dict[str, tuple[str, ...]]
    # layer name -> shell run in build_layer's `in_chroot` step ($merged: the tree)
    layer_scripts: dict[str, str] = field(default_factory=dict)


# CTS's Remote* tests (RemoteDriver) need `which pacemaker-remoted` to succeed on
# every cluster node and run `service pacemaker_remote start|stop` there. Debian's
# pacemaker-remote conflicts with pacemaker, so the cluster layer takes only its
# daemon (and the legacy pacemaker_remoted link) and its unit, not enabled, out of
# the .deb of the same version as the installed pacemaker: dpkg's database is not
# touched, those files belong to no package (`dpkg -S` says so, `dpkg --audit`
# stays clean, apt sees no conflict). A dpkg diversion would not help: diversions
# move a package's files, they do not let two conflicting packages be installed.
# Every library the daemon needs is one pacemaker itself depends on; ldd checks it.
CLUSTER_REMOTED = r"""
version=$(chroot "$merged" dpkg-query -W -f '${Version}' pacemaker)
tmp=$(mktemp -d "$merged/tmp/remoted.XXXXXX")
rel=/tmp/${tmp##*/}
chroot "$merged" sh -c 'cd "$1" && apt-get download -q -o APT::Sandbox::User=root "$2"' \
    sh "$rel" "pacemaker-remote=$version"
chroot "$merged" sh -c 'dpkg-deb -x "$1"/pacemaker-remote_*.deb "$1/x"' sh "$rel"
install -m 0755 "$tmp/x/usr/sbin/pacemaker-remoted" "$merged/usr/sbin/pacemaker-remoted"
if [ -L "$tmp/x/usr/sbin/pacemaker_remoted" ]; then
    cp -P "$tmp/x/usr/sbin/pacemaker_remoted" "$merged/usr/sbin/pacemaker_remoted"
fi
install -m 0644 "$tmp/x/lib/systemd/system/pacemaker_remote.service" \
    "$merged/lib/systemd/system/pacemaker_remote.service"
rm -rf "$tmp"
if chroot "$merged" ldd /usr/sbin/pacemaker-remoted | grep 'not found'; then
    echo "pacemaker-remoted: libraries missing in the cluster layer" >&2
    exit 1
fi
"""


# trixie's packages ship their units in /usr/lib/systemd/system (bookworm's: /lib).
# A script of its own, so that debian12's recipe (and its built images) stay as they are.
CLUSTER_REMOTED_USR_UNITS = CLUSTER_REMOTED.replace(
    '"$tmp/x/lib/systemd/system/pacemaker_remote.service"',
    '"$tmp/x/usr/lib/systemd/system/pacemaker_remote.service"',
)


DEBIAN12 = ImageDef(
    name="debian12",
    suite="bookworm",
    base_packages=(
        "systemd-sysv",
        "openssh-server",
        "iproute2",
        "iputils-ping",
        "procps",
        "resource-agents",
    ),
    layers={
        # libvirt-clients: ocf:heartbeat:VirtualDomain drives the host's libvirtd
        # through virsh; fence-virt: fence_xvm; psmisc, iptables, python3-systemd:
        # what Pacemaker's CTS uses on cluster nodes (killall, SplitBrain, its dummy daemon).
        "cluster": (
            "pacemaker",
            "corosync",
            "pacemaker-cli-utils",
            "libvirt-clients",
            "fence-virt",
            "psmisc",
            "iptables",
            "python3-systemd",
        ),
        # pacemaker-cli-utils afterwards, in the chroot: debootstrap would take the
        # first alternative of its "pacemaker | pacemaker-remote" dependency.
        "remote": ("pacemaker-remote", "pacemaker-cli-utils"),
    },
    layer_scripts={"cluster": CLUSTER_REMOTED},
)
# Debian 13: Pacemaker 3.0.0. The same packages by name: pacemaker and
# pacemaker-remote still conflict, and fence-virt, libvirt-clients and
# python3-systemd kept their names (the t64 renames are of libraries only).
DEBIAN13 = ImageDef(
    name="debian13",
    suite="trixie",
    base_packages=DEBIAN12.base_packages,
    layers=DEBIAN12.layers,
    layer_scripts={"cluster": CLUSTER_REMOTED_USR_UNITS},
)
IMAGES = {i.name: i for i in (DEBIAN12, DEBIAN13)}
DEFAULT_IMAGE = DEBIAN12.name

# Units a lab node never needs; masked so they cost neither boot time nor memory.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
    "getty@tty1.service",
    # A container's /dev/console login prompt: root has no password, nobody can
    # log in there (a VM's serial-getty@ttyS0 is another unit and stays).
    "console-getty.service",
    "systemd-logind.service",
    "dpkg-db-backup.timer",
    "logd.service",  # cluster-glue's logger, pulled in by resource-agents; journald suffices
)


# Bump when the build steps below change in a way the recipe digest cannot see.
BUILD_FORMAT = 2
IMAGE_TEMPLATES = ("sshd_labctl.conf", "networkd.network", "journald_labctl.conf")


def recipe_digest(idef: ImageDef) -> str:
    """What an image is made from; a built image whose digest differs is stale."""
    h = hashlib.sha256(f"format {BUILD_FORMAT}\n{idef.suite}\n".encode())
    h.update(" ".join(idef.base_packages).encode())
    for lname, pkgs in sorted(idef.layers.items()):
        h.update(f"\n{lname}: {' '.join(pkgs)}".encode())
        if script := idef.layer_scripts.get(lname):
            h.update(f"\n{lname} script:\n{script}".encode())
    h.update(("\n" + " ".join(MASKED_UNITS)).encode())
    for t in IMAGE_TEMPLATES:
        h.update(render(t).encode())
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class Image:
    name: str
    dir: Path
    manifest: dict

    @property
    def stale(self) -> bool:
        idef = IMAGES.get(self.name)
        return idef is None or self.manifest.get("recipe") != recipe_digest(idef)

    def layer(self, role_layer: str) -> Path:
        return self.dir / role_layer

    @property
    def base(self) -> Path:
        return self.dir / "base"


_IMAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def is_image_name(name: str) -> bool:
    """NAME can name an image directory (one plain component). Pure."""
    return bool(_IMAGE_NAME_RE.match(name))


def images_dir(state_dir: Path) -> Path:
    return state_dir / "images"


def image_def(name: str) -> ImageDef:
    try:
        return IMAGES[name]
    except KeyError:
        raise UsageError(f"unknown image {name!r}: known images are {', '.join(IMAGES)}") from None


def find_image(state_dir: Path, name: str) -> Image | None:
    d = images_dir(state_dir) / name
    manifest = d / "manifest.json"
    if not manifest.is_file():
        return None
    return Image(name=name, dir=d, manifest=json.loads(manifest.read_text()))


def list_images(state_dir: Path) -> list[Image]:
    d = images_dir(state_dir)
    if not d.is_dir():
        return []
    found = (find_image(state_dir, p.name) for p in sorted(d.iterdir()) if p.is_dir())
    return [i for i in found if i is not None]


# Debian's release code names: one archive serves them all.
DEBIAN_RELEASES = ("stretch", "buster", "bullseye", "bookworm", "trixie", "forky")


def _apt_entries(texts: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(archive URI, suites) of every `deb` source in the host's apt sources (deb822
    or one-line), in file name order. Pure."""
    out: list[tuple[str, list[str]]] = []
    for name in sorted(texts):
        text = texts[name]
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("uris"):
                    out.append((fields["uris"].split()[0], fields.get("suites", "").split()))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    out.append((words[1], [words[2]]))
    return out


def parse_apt_sources(texts: dict[str, str], suite: str) -> str | None:
    """The first archive URI serving SUITE in the host's apt sources (deb822 or one-line)."""
    return next((uri for uri, suites in _apt_entries(texts) if suite in suites), None)


def _is_security(suite: str) -> bool:
    return suite.endswith("-security")


def debian_archive(texts: dict[str, str], suite: str) -> str | None:
    """The archive URI for Debian SUITE: the host's own source for it, else the archive
    the host uses for another Debian release (a Debian 12 host lists bookworm only,
    and its mirror serves trixie too; -security suites come from the security
    archive). Pure."""
    if uri := parse_apt_sources(texts, suite):
        return uri
    if suite.split("-", 1)[0] not in DEBIAN_RELEASES:
        return None
    for uri, suites in _apt_entries(texts):
        for s in suites:
            if s.split("-", 1)[0] in DEBIAN_RELEASES and _is_security(s) == _is_security(suite):
                return uri
    return None


def host_mirror(suite: str) -> str:
    """The Debian mirror the host's own apt uses for SUITE (or, for a Debian release the
    host does not list, the one it uses for its own: `debian_archive`)."""
    texts: dict[str, str] = {}
    main = Path("/etc/apt/sources.list")
    if main.is_file():
        texts[str(main)] = main.read_text()
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        for p in d.iterdir():
            if p.suffix in (".list", ".sources"):
                texts[str(p)] = p.read_text()
    mirror = debian_archive(texts, suite)
    if mirror is None:
        raise HostError(
            f"no apt source for {suite!r} on this host: pass --mirror URL of a Debian mirror"
        )
    return mirror


# Deadlines of the host commands of image builds: generous (a slow mirror, a
# busy 2-core host), finite. Seen: debootstrap 40-70 s, a layer's apt 20-40 s.
DEBOOTSTRAP_TIMEOUT = 30 * 60.0
APT_LAYER_TIMEOUT = 30 * 60.0
CHROOT_TIMEOUT = 5 * 60.0  # one systemctl, one tool run in an image
QEMU_IMG_TIMEOUT = 10 * 60.0  # convert of a 2 GiB disk; info takes well under 1 s
MKFS_TIMEOUT = 60.0  # an 8 MiB seed


def _run(
    argv: list[str],
    where: str = "host",
    timeout: float = CHROOT_TIMEOUT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return proc.run(argv, where=where, timeout=timeout, env=env)


def _package_list(tree: Path) -> list[str]:
    status = tree / "var/lib/dpkg/status"
    pkgs, name = [], None
    for line in status.read_text().splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Version: ") and name:
            pkgs.append(f"{name}={line.split(': ', 1)[1]}")
    return sorted(pkgs)


def tree_size(path: Path) -> int:
    """Bytes held by a tree's regular files (each inode counted once)."""
    seen: set[int] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def _write(tree: Path, rel: str, text: str, mode: int = 0o644) -> None:
    p = tree / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    p.chmod(mode)


def _customize_base(tree: Path) -> None:
    """Make the debootstrapped tree a lab node: sshd by key, DHCP by networkd, quiet logs."""
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every node gets its own key, generated by labctl and pinned
    _write(tree, "etc/ssh/sshd_config.d/labctl.conf", render("sshd_labctl.conf"))
    _write(tree, "etc/systemd/network/80-labctl.network", render("networkd.network"))
    _write(tree, "etc/systemd/journald.conf.d/labctl.conf", render("journald_labctl.conf"))
    # pam_env logs a complaint at every SSH login without it (noise in CTS's logs).
    _write(tree, "etc/default/locale", "")
    (tree / "etc/machine-id").write_text("")  # systemd makes one per node at first boot
    (tree / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    _write(tree, "etc/fstab", "")
    (tree / "etc/resolv.conf").unlink(missing_ok=True)  # debootstrap copied the host's
    _run(["chroot", str(tree), "systemctl", "enable", "systemd-networkd.service"])
    _run(["chroot", str(tree), "systemctl", "mask", *MASKED_UNITS])


# Overlay mounts made while building or using an image live in a mount
# namespace of their own: the host never sees them, and they end with it.
PRIVATE_MOUNT_NS_SHELL = ("unshare", "-m", "--propagation", "private", "sh", "-c")


def build_layer(
    lowers: list[Path],
    layer: Path,
    packages: tuple[str, ...],
    scratch: Path,
    post: str = "",
    env: dict[str, str] | None = None,
    in_chroot: str = "",
    add_only: bool = False,
) -> None:
    """Install PACKAGES over LOWERS (top first) in a private mount namespace; LAYER
    receives the diff. IN_CHROOT is shell run just after the install, while the
    tree still has /proc and the host's resolv.conf (apt can download); POST is
    shell run at the end. Both run in the namespace, with $merged the whole tree
    (and ENV in their environment). ADD_ONLY: refresh apt's lists first (the image's may
    be older than its mirror), and fail rather than remove any package of the lowers
    (pcs over a remote node's layer would take pacemaker-remote away)."""
    work, merged = scratch / "work", scratch / "merged"
    for d in (layer, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    script = (
        r"""
set -e
lowers=$1 upper=$2 work=$3 merged=$4
shift 4
mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$upper,workdir=$work" "$merged"
mount -t proc proc "$merged/proc"
cp /etc/resolv.conf "$merged/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$merged/usr/sbin/policy-rc.d"
chmod 755 "$merged/usr/sbin/policy-rc.d"
if [ -n "$ADD_ONLY" ]; then chroot "$merged" apt-get update -q; fi
chroot "$merged" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${ADD_ONLY:+--no-remove} "$@"
"""
        + in_chroot
        + r"""
chroot "$merged" apt-get clean
rm -f "$merged/usr/sbin/policy-rc.d" "$merged/etc/resolv.conf"
umount "$merged/proc"
"""
        + post
    )
    _run(
        [
            *PRIVATE_MOUNT_NS_SHELL,
            script,
            "layer",
            ":".join(map(str, lowers)),
            str(layer),
            str(work),
            str(merged),
            *packages,
        ],
        where=f"image layer {layer.name}",
        timeout=APT_LAYER_TIMEOUT,
        env={**os.environ, **(env or {}), **({"ADD_ONLY": "1"} if add_only else {})},
    )


def packages_layer(img: Image, role_layer: str, packages: Sequence[str]) -> Path:
    """Where the layer of PACKAGES over IMG's ROLE_LAYER is kept: in the image's own
    directory, so that a rebuild or `image rm` takes it along. Pure."""
    key = hashlib.sha256(json.dumps([role_layer, sorted(packages)]).encode()).hexdigest()[:16]
    return img.dir / "packages" / f"{role_layer}-{key}"


def build_packages_layer(
    img: Image, role_layer: str, packages: Sequence[str], progress: Progress
) -> Path:
    """The layer of PACKAGES over IMG's ROLE_LAYER, built once (from the image's own
    apt sources, on the host's network: labs' networks stay isolated) and then reused."""
    final = packages_layer(img, role_layer, packages)
    with locks.hold("image", img.name, locks.command_line(), wait=True):
        if final.is_dir():
            return final
        final.parent.mkdir(mode=0o755, exist_ok=True)
        build = final.parent / f".build-{final.name}-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        started = time.monotonic()
        progress(f"layer {role_layer} + {', '.join(packages)} over image {img.name}")
        try:
            build_layer(
                [img.layer(role_layer), img.base],
                build / "layer",
                tuple(packages),
                build / "scratch",
                add_only=True,
            )
            (build / "layer").rename(final)
        except CommandError as e:
            said = [ln for ln in (e.stderr or e.stdout).splitlines() if ln.startswith("E: ")]
            why = " | ".join(said[-2:]) or f"exit {e.status}"
            if "remove is disabled" in why:
                why += " (a package replacing one of the image's, e.g. pacemaker on remote nodes)"
            raise UsageError(
                f"--packages {','.join(packages)}: apt cannot add them to image {img.name}'s "
                f"{role_layer} nodes: {why}"
            ) from None
        finally:
            shutil.rmtree(build, ignore_errors=True)
        progress(f"layer built in {time.monotonic() - started:.0f} s ({tree_size(final)} bytes)")
    return final


def _layer_post(base: Path, layer: Path, name: str) -> None:
    """Role-specific settings written straight into the layer's tree."""
    wants = layer / "etc/systemd/system/multi-user.target.wants"
    if name == "cluster":
        # labctl starts the stack once corosync.conf and the authkey are in place.
        for unit in ("corosync.service", "pacemaker.service"):
            (wants / unit).unlink(missing_ok=True)


def replace_keeping_vm_files(new: Path, final: Path) -> None:
    """Put directory NEW in FINAL's place, with FINAL's vm/ carried over: VM disks,
    kernels and initrds keep their paths (a running VM's volume is backed by one,
    its domain boots another); each has a generation name, old ones go once no lab
    uses them."""
    if final.exists():
        if (final / "vm").is_dir() and not (new / "vm").exists():
            (final / "vm").rename(new / "vm")
        shutil.rmtree(final)
    new.rename(final)


def build_image(
    state_dir: Path,
    name: str = DEFAULT_IMAGE,
    mirror: str | None = None,
    progress: Progress = lambda _m: None,
    force: bool = False,
) -> Image:
    """Build image NAME (base + role layers) unless it is there; return it."""
    idef = image_def(name)
    existing = find_image(state_dir, name)
    if existing and not existing.stale and not force:
        return existing
    # Two cold `up`s must not both debootstrap: the second waits, then finds it built.
    with locks.hold("image", name, locks.command_line(), wait=True):
        again = find_image(state_dir, name)
        if again and not again.stale:
            # Built while we waited, by the run we waited for: that build will do.
            rebuilt = existing is None or again.manifest != existing.manifest
            if not force or rebuilt:
                return again
        return _build_image(state_dir, idef, again, mirror, progress)


def _build_image(
    state_dir: Path,
    idef: ImageDef,
    existing: Image | None,
    mirror: str | None,
    progress: Progress,
) -> Image:
    name = idef.name
    if existing:
        _refuse_if_in_use(existing)
        if existing.stale:
            progress(f"image {name} was built from an older recipe: rebuilding it")
    if os.geteuid() != 0:
        raise HostError("building an image needs root (debootstrap, chroot): run labctl as root")
    if shutil.which("debootstrap") is None:
        raise HostError(
            "debootstrap is missing: run scripts/setup-host (or apt-get install debootstrap)"
        )
    mirror = mirror or host_mirror(idef.suite)
    root = images_dir(state_dir)
    cache = state_dir / "cache" / "debootstrap"
    cache.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    build = root / f".build-{name}-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    started = time.monotonic()
    try:
        base = build / "base"
        progress(f"debootstrap {idef.suite} (base: {', '.join(idef.base_packages)})")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(idef.base_packages)}",
                f"--cache-dir={cache}",
                idef.suite,
                str(base),
                mirror,
            ],
            where="debootstrap",
            timeout=DEBOOTSTRAP_TIMEOUT,
        )
        _customize_base(base)
        layers = {}
        for lname, pkgs in idef.layers.items():
            progress(f"layer {lname}: {', '.join(pkgs)}")
            layer = build / lname
            build_layer(
                [base],
                layer,
                pkgs,
                build / f".scratch-{lname}",
                in_chroot=idef.layer_scripts.get(lname, ""),
            )
            shutil.rmtree(build / f".scratch-{lname}")
            _layer_post(base, layer, lname)
            layers[lname] = layer
        manifest = _manifest(idef, mirror, base, layers, time.monotonic() - started)
        (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        replace_keeping_vm_files(build, root / name)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    progress(f"image {name} built in {time.monotonic() - started:.0f} s")
    img = find_image(state_dir, name)
    assert img is not None
    return img


# dbus: Debian starts systemd-logind only where D-Bus is (a condition in its unit).
VM_KERNEL_PACKAGES = ("linux-image-cloud-amd64", "dbus")
VM_DISK_SIZE = "2G"
# Masked in the image for containers, needed by a VM: logind turns the ACPI
# power button into a clean shutdown, which is how libvirt (and VirtualDomain's
# graceful stop) asks a VM to stop. Without it every stop waits out its timeout
# and ends in a destroy.
VM_UNMASKED_UNITS = ("systemd-logind.service",)
VM_POST = r"""
cp -a "$STAGE/." "$merged/"
for unit in $UNMASK; do rm -f "$merged/etc/systemd/system/$unit"; done
# dbus's install made a machine ID; systemd would take it for every VM.
: > "$merged/etc/machine-id"
rm -f "$merged/var/lib/dbus/machine-id"
cp "$(ls "$merged"/boot/vmlinuz-* | tail -n 1)" "$KERNEL"
cp "$(ls "$merged"/boot/initrd.img-* | tail -n 1)" "$INITRD"
mkfs.ext4 -q -L root -d "$merged" "$RAW" "$SIZE"
"""
VM_TEMPLATES = ("labctl-seed", "labctl-seed.service")


def vm_recipe_digest() -> str:
    """What a VM disk is made from, over its image's layers; another digest: rebuild."""
    h = hashlib.sha256(
        f"{VM_POST}\n{VM_KERNEL_PACKAGES}\n{VM_UNMASKED_UNITS}\n{VM_DISK_SIZE}".encode()
    )
    for t in VM_TEMPLATES:
        h.update(render(t).encode())
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class VmImage:
    """A bootable disk of one role layer, with its kernel and initrd for direct boot."""

    disk: Path
    kernel: Path
    initrd: Path
    recipe: Path  # holds vm_recipe_digest() of the build


def vm_key(img: Image, role_layer: str, under: Path | None = None) -> str:
    """12 hex digits naming one generation of a VM disk: what it is made from (the
    VM recipe, the image's build, the Pacemaker build UNDER which it lives). A new
    build gets new file names, so a running VM's backing file is never replaced."""
    h = hashlib.sha256(vm_recipe_digest().encode())
    h.update(f"\n{img.manifest.get('checksum')}\n{img.manifest.get('created')}\n".encode())
    h.update(role_layer.encode())
    if under is not None:
        manifest = under / "manifest.json"
        h.update(manifest.read_bytes() if manifest.is_file() else str(under).encode())
    return h.hexdigest()[:12]


def vm_image_paths(img: Image, role_layer: str, under: Path | None = None) -> VmImage:
    """Where the VM disk of ROLE_LAYER lives: in the image, or UNDER a build's directory,
    as ROLE-KEY.qcow2 with ROLE-KEY-vmlinuz and ROLE-KEY-initrd.img beside it."""
    d = (under or img.dir) / "vm"
    stem = f"{role_layer}-{vm_key(img, role_layer, under)}"
    return VmImage(
        d / f"{stem}.qcow2",
        d / f"{stem}-vmlinuz",
        d / f"{stem}-initrd.img",
        d / f"{stem}.recipe",
    )


# A generation's files in a vm/ directory: ROLE[-KEY] (no KEY: before names had one).
_VM_FILE_RE = re.compile(
    r"^(?P<stem>[a-z]+(?:-[0-9a-f]{12})?)(?:\.qcow2|-vmlinuz|-initrd\.img|\.recipe|\.part)$"
)


def unused_vm_files(names: Sequence[str], current: set[str], used: set[str]) -> list[str]:
    """Of the file NAMES in a vm/ directory, those of generations neither CURRENT
    (stems a build would use now) nor USED (a file of it is used by a lab). Pure."""
    stems = {n: m["stem"] for n in names if (m := _VM_FILE_RE.match(n))}
    keep = current | {stems[n] for n in used if n in stems}
    return sorted(n for n, stem in stems.items() if stem not in keep)


def remove_unused_vm_files(vm_dir: Path, current: set[str], in_use: set[str]) -> list[Path]:
    """Delete the old VM disk generations in VM_DIR that no path of IN_USE names."""
    if not vm_dir.is_dir() or vm_dir.is_symlink():
        return []
    names = [p.name for p in vm_dir.iterdir() if p.is_file() and not p.is_symlink()]
    real = os.path.realpath(vm_dir)
    used = {os.path.basename(u) for u in in_use if os.path.dirname(u) == real}
    gone = []
    for n in unused_vm_files(names, current, used):
        (vm_dir / n).unlink(missing_ok=True)
        gone.append(vm_dir / n)
    return gone


def find_vm_image(img: Image, role_layer: str, under: Path | None = None) -> VmImage | None:
    """The VM disk of ROLE_LAYER if it is built and from the current recipe."""
    v = vm_image_paths(img, role_layer, under)
    if not all(p.is_file() for p in (v.disk, v.kernel, v.initrd, v.recipe)):
        return None
    return v if v.recipe.read_text().strip() == vm_recipe_digest() else None


def build_vm_image(
    img: Image,
    role_layer: str = "remote",
    progress: Progress = lambda _m: None,
    over: Sequence[Path] = (),
    under: Path | None = None,
) -> VmImage:
    """A qcow2 of IMG's ROLE_LAYER (with the layers OVER it, a Pacemaker build's, say,
    whose disk then lives UNDER that build's directory) plus a distribution kernel,
    built without mounting any block device (mkfs.ext4 -d fills it from the tree)."""
    existing = find_vm_image(img, role_layer, under)
    if existing:
        return existing
    if shutil.which("qemu-img") is None or shutil.which("mkfs.ext4") is None:
        raise HostError("qemu-img and mkfs.ext4 are needed: run scripts/setup-host")
    out = vm_image_paths(img, role_layer, under)
    out.disk.parent.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".vm-{role_layer}-", dir=under or img.dir))
    started = time.monotonic()
    try:
        stage = scratch / "stage"
        _write(stage, "usr/local/sbin/labctl-seed", render("labctl-seed"), 0o755)
        _write(stage, "etc/systemd/system/labctl-seed.service", render("labctl-seed.service"))
        wants = stage / "etc/systemd/system/sysinit.target.wants"
        wants.mkdir(parents=True)
        (wants / "labctl-seed.service").symlink_to("/etc/systemd/system/labctl-seed.service")
        raw = scratch / "root.raw"
        progress(f"VM image {role_layer}: kernel ({', '.join(VM_KERNEL_PACKAGES)}), ext4, qcow2")
        build_layer(
            [*over, img.layer(role_layer), img.base],
            scratch / "kernel-layer",
            VM_KERNEL_PACKAGES,
            scratch / "overlay",
            post=VM_POST,
            env={
                "UNMASK": " ".join(VM_UNMASKED_UNITS),
                "STAGE": str(stage),
                "KERNEL": str(out.kernel),
                "INITRD": str(out.initrd),
                "RAW": str(raw),
                "SIZE": VM_DISK_SIZE,
            },
        )
        # Renamed into place: a running VM keeps reading the disk it opened.
        part = out.disk.with_suffix(".part")
        _run(
            ["qemu-img", "convert", "-O", "qcow2", str(raw), str(part)],
            where="qemu-img",
            timeout=QEMU_IMG_TIMEOUT,
        )
        part.replace(out.disk)
        for p in (out.disk, out.kernel, out.initrd):
            p.chmod(0o644)  # QEMU runs as libvirt-qemu and only reads them
        out.recipe.write_text(vm_recipe_digest() + "\n")
    except BaseException:
        for p in (out.disk, out.kernel, out.initrd, out.recipe):
            p.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    progress(f"VM image {role_layer} built in {time.monotonic() - started:.0f} s")
    return out


def qemu_img_info(path: Path) -> dict:
    """What qemu-img says of a disk image: format, virtual-size, backing-filename..."""
    # -U: read it even while a running VM holds its lock (a lab's volume, in use).
    out = _run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], where="qemu-img", timeout=60.0
    ).stdout
    return json.loads(out)


def qcow2_virtual_size(path: Path) -> int:
    return int(qemu_img_info(path)["virtual-size"])


def make_seed(tree: Path, seed: Path) -> None:
    """A small ext4 image holding TREE (its files/ are copied over a VM's root at boot)."""
    seed.unlink(missing_ok=True)
    # Host and lab keys go inside: the file is 0600 before mkfs writes a byte of
    # them (mkfs would create it 0644). libvirt hands it to QEMU's user.
    os.close(os.open(seed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    _run(
        ["mkfs.ext4", "-q", "-L", "labctlseed", "-d", str(tree), str(seed), "8M"],
        where="mkfs",
        timeout=MKFS_TIMEOUT,
    )


def _manifest(
    idef: ImageDef, mirror: str, base: Path, layers: dict[str, Path], secs: float
) -> dict:
    base_pkgs = _package_list(base)
    info: dict = {
        "name": idef.name,
        "distro": "debian",
        "suite": idef.suite,
        "mirror": mirror,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(secs, 1),
        "recipe": recipe_digest(idef),
        "layers": {"base": {"size_bytes": tree_size(base), "packages": len(base_pkgs)}},
    }
    digest = hashlib.sha256("\n".join(base_pkgs).encode())
    for lname, layer in layers.items():
        # The layer's dpkg status is the whole list (base + layer); record what it added.
        pkgs = _package_list(layer) if (layer / "var/lib/dpkg/status").is_file() else base_pkgs
        added = sorted(set(pkgs) - set(base_pkgs))
        info["layers"][lname] = {"size_bytes": tree_size(layer), "added": added}
        digest.update(("\n" + lname + "\n" + "\n".join(added)).encode())
    info["checksum"] = "sha256:" + digest.hexdigest()
    return info


def manifest_pacemaker_version(manifest: dict) -> str | None:
    """The Pacemaker (Debian) version an image's manifest records in its role layers. Pure."""
    for lname in ("cluster", "remote"):
        for pkg in manifest.get("layers", {}).get(lname, {}).get("added", []):
            name, _, version = str(pkg).partition("=")
            if name in ("pacemaker", "pacemaker-remote") and version:
                return version
    return None


def manifest_size(manifest: dict) -> int:
    """Bytes an image holds on disk: its base and every layer. Pure."""
    return sum(int(v.get("size_bytes", 0)) for v in manifest.get("layers", {}).values())


def _refuse_if_in_use(img: Image, users: Sequence[str] = ()) -> None:
    if users:
        raise UsageError(
            f"image {img.name!r} is in use by {', '.join(users)}: take those labs down first"
        )
    if mounts.used_by_overlay(img.dir):
        raise UsageError(
            f"image {img.name!r} is in use by a lab: take its labs down first (`labctl down --all`)"
        )


def remove_image(state_dir: Path, name: str, users: Sequence[str] = ()) -> None:
    """Delete image NAME unless a lab uses it: USERS (the labs using it, found by the
    caller), or a lab's root still mounted over it."""
    if not is_image_name(name):
        raise UsageError(f"{name!r} is not an image name: `labctl image list` shows what is built")
    # A real child of the images directory, never a link out of it.
    safety.child_dir(images_dir(state_dir), name, "image directory")
    img = find_image(state_dir, name)
    if img is None:
        raise NotFoundError(f"no image {name!r}: `labctl image list` shows what is built")
    _refuse_if_in_use(img, users)
    shutil.rmtree(img.dir)


def run_in_image(
    img: Image, layer: str, argv: list[str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ARGV chrooted in a throwaway overlay of LAYER over the base; nothing persists.

    Lets the host use the nodes' own tools (crm_verify, say) without installing them.
    """
    script = r"""
set -e
base=$1 layer=$2 scratch=$3
shift 3
mkdir -p "$scratch/u" "$scratch/w" "$scratch/m"
mount -t overlay overlay -o "lowerdir=$layer:$base,upperdir=$scratch/u,workdir=$scratch/w" "$scratch/m"
mount -t proc proc "$scratch/m/proc"
exec chroot "$scratch/m" "$@"
"""
    scratch = Path(tempfile.mkdtemp(prefix="labctl-run-"))
    try:
        return proc.run(
            [
                *PRIVATE_MOUNT_NS_SHELL,
                script,
                "run",
                str(img.base),
                str(img.layer(layer)),
                str(scratch),
                *argv,
            ],
            where=f"image {img.name}",
            timeout=CHROOT_TIMEOUT,
            check=False,
            input=stdin,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
