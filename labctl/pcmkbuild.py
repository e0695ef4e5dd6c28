"""Pacemaker built from a user's source tree into an image layer the nodes run.

A build happens in a build root made of the lab image's own base plus a
"builddeps" layer (the tree's build dependencies, installed there from the
image's mirror: the host gets nothing). The tree is copied into a build
directory kept per tree (so a second build recompiles only what changed),
configured with Debian's paths, compiled, and `make install DESTDIR=` puts it in
an "install" layer. Each node role then gets a small layer of its own on top
(ld.so.cache made over that role's libraries). A node's root is then
[role fix, install, role layer, base]: the distribution's corosync, users,
groups and directories stay, Pacemaker is the build's, and cluster nodes get
pacemaker-remoted as well (a source build installs every daemon).

Layout under STATE/builds/IMAGE/:
    .builddeps/            the build-dependency layer (over the image's base)
    .ccache/               compiler cache shared by every tree built on IMAGE
    .trees/KEY/            per source tree: src/ (the synced copy, built in place),
                           build.log, sync.json, configured.json
    NAME/                  one finished build: install/, cluster/, remote/, manifest.json
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labctl import images, locks, mounts, safety
from labctl.cts import CONFIGURE_ARGS, HOST_PACKAGES
from labctl.errors import CommandError, CommandTimeout, HostError, NotFoundError, UsageError
from labctl.proc import run as run_cmd

Progress = Callable[[str], None]

# Debian's own Build-Depends for pacemaker (bookworm/trixie), less the
# documentation tool chain (asciidoc, sphinx, inkscape, help2man): what CTS's
# configure needs (cts.HOST_PACKAGES, but for dpkg-dev), plus what make needs for
# every feature Debian's packages have, and ccache.
BUILD_PACKAGES: tuple[str, ...] = (
    *(p for p in HOST_PACKAGES if p != "dpkg-dev"),
    "libxml2-utils",
    "xsltproc",
    "libdbus-1-dev",
    "libgnutls28-dev",
    "libncurses-dev",
    "libpam0g-dev",
    "cluster-glue-dev",
    "ccache",
)
BUILDDEPS_FORMAT = 1
# Bump when what a build's layers hold changes: builds of an older format are made again.
BUILD_FORMAT = 2

# Debian's configure call (debian/rules: dh_auto_configure's --prefix,
# --sysconfdir, --localstatedir, --runstatedir and multiarch --libdir, then the
# package's own options), and what CTS needs (labctl.cts.CONFIGURE_ARGS says why).
MIN_VERSION = (2, 1, 0)
SOURCE_MOUNT = "/labctl/pacemaker-{build}"  # configure takes BUILD_VERSION from the name
MARKER_PATH = "usr/share/labctl/pacemaker-build.json"
ROLE_LAYERS = ("cluster", "remote")
# What each role runs, whose libraries must all resolve there (the cluster-only
# daemons need corosync's libraries, which remote nodes do not have, as in Debian).
ROLE_DAEMONS = {
    "cluster": ("/usr/sbin/pacemakerd", "/usr/sbin/pacemaker-remoted", "/usr/sbin/crm_mon"),
    "remote": ("/usr/sbin/pacemaker-remoted", "/usr/sbin/crm_mon"),
}
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


# ------------------------------------------------------------------ pure


def parse_version(version_m4: str | None, configure_ac: str) -> str:
    """The upstream version a tree declares (m4/version.m4, else AC_INIT); pure."""
    for text in (version_m4 or "", configure_ac):
        m = re.search(r"m4_define\(\[VERSION_NUMBER\],\s*\[([0-9][0-9.]*)\]\)", text)
        if m:
            return m.group(1)
    m = re.search(r"AC_INIT\(\[pacemaker\],\s*\[?([0-9][0-9.]*)", configure_ac)
    if m:
        return m.group(1)
    raise UsageError("not a Pacemaker source tree: no version in configure.ac or m4/version.m4")


def archive_hash(configure_ac: str) -> str | None:
    """The commit a release tarball was made from (git archive's $Format:%h$); pure."""
    m = re.search(r"^BUILD_VERSION=([0-9a-f]{7,40})\s*$", configure_ac, re.M)
    return m.group(1) if m else None


def version_tuple(version: str) -> tuple[int, int, int]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        raise UsageError(f"not a Pacemaker version: {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@dataclass(frozen=True)
class TreeId:
    """What a build is made from: the tree, its version, commit and uncommitted diff."""

    path: Path
    version: str
    commit: str | None  # git HEAD, or the release tarball's archive hash
    dirty: str | None  # sha256 of the uncommitted diff (git) or of the whole tree (no git)
    git: bool

    @property
    def name(self) -> str:
        return build_name(self.version, self.commit, self.dirty, self.git)


def build_name(version: str, commit: str | None, dirty: str | None, git: bool) -> str:
    """pcmk-VERSION-COMMIT10[-dDIGEST10] (git) or pcmk-VERSION[-COMMIT10]-tDIGEST10; pure."""
    parts = ["pcmk", version]
    if commit:
        parts.append(commit[:10])
    if dirty:
        parts.append(("d" if git else "t") + dirty[:10])
    return "-".join(parts)


def configure_args(version: str, multiarch: str) -> list[str]:
    """./configure's arguments for a VERSION tree built for the nodes; pure."""
    if version_tuple(version) < MIN_VERSION:
        raise UsageError(
            f"Pacemaker {version} is older than 2.1: labctl builds 2.1.x and 3.x trees"
        )
    return [
        *CONFIGURE_ARGS,
        # Debian's libraries live in the multiarch directory: the build's must
        # replace them there, or the nodes' ld.so.cache keeps finding Debian's.
        f"--libdir=/usr/lib/{multiarch}",
        "--disable-static",
        "--with-cibsecrets",
    ]


def tree_key(path: Path) -> str:
    """The per-tree build directory's name: one per resolved source path; pure."""
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]


def last_error_lines(log: str, n: int = 3) -> str:
    """The compiler's last error lines of a build log (else make's, else the tail), on
    one line; pure."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for pattern in (r"error:", r"\*\*\*|[Ee]rror"):
        picked = [ln for ln in lines if re.search(pattern, ln)][-n:]
        if picked:
            break
    else:
        picked = lines[-n:]
    return " | ".join(picked)[-600:]


def marker(tree: TreeId, image: str) -> dict:
    """What a node tells about the build it runs (MARKER_PATH); pure."""
    return {
        "build": tree.name,
        "version": tree.version,
        "commit": tree.commit,
        "dirty": tree.dirty,
        "tree": str(tree.path),
        "image": image,
    }


# ------------------------------------------------------------------ the tree


GIT_TIMEOUT = 5 * 60.0  # ls-files or diff of a large tree on a slow disk


def _git(tree: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    # Bytes (a binary diff is hashed), so not proc.run; the same deadline rule.
    try:
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, timeout=GIT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise CommandTimeout(f"tree {tree}", f"git {' '.join(args)}", GIT_TIMEOUT) from None


def _walk_files(tree: Path, git: bool = False) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of the tree's source files, sorted: for a git checkout
    what git tracks or would (not ignored build products of an in-tree build),
    else every file and link but .git."""
    if git:
        out = _git(tree, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
        for rel in sorted(set(out.decode().split("\0")) - {""}):
            p = tree / rel
            if p.is_symlink() or p.is_file():
                yield rel, p
        return
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel_root = os.path.relpath(root, tree)
        for f in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = f if rel_root == "." else os.path.join(rel_root, f)
            yield rel, Path(root) / f


def _tree_digest(tree: Path) -> str:
    h = hashlib.sha256()
    for rel, p in _walk_files(tree):
        h.update(rel.encode() + b"\0")
        if p.is_symlink():
            h.update(b"L" + os.readlink(p).encode())
        else:
            h.update(b"F%o" % (p.stat().st_mode & 0o111) + p.read_bytes())
    return h.hexdigest()


def identify(path: Path) -> TreeId:
    """Version, commit and the digest of any uncommitted change of the tree at PATH."""
    tree = path.expanduser().resolve()
    if not (tree / "configure.ac").is_file():
        raise UsageError(
            f"{path} is not a Pacemaker source tree (no configure.ac): give a git checkout "
            "or a tree from `apt-get source pacemaker`"
        )
    configure_ac = (tree / "configure.ac").read_text(errors="replace")
    vm4 = tree / "m4/version.m4"
    version = parse_version(vm4.read_text() if vm4.is_file() else None, configure_ac)
    top = _git(tree, "rev-parse", "--show-toplevel") if (tree / ".git").exists() else None
    if top is not None and top.returncode == 0 and Path(top.stdout.decode().strip()) == tree:
        head = _git(tree, "rev-parse", "HEAD")
        if head.returncode != 0:
            raise UsageError(f"{path}: git has no commit there yet: commit something first")
        h = hashlib.sha256(_git(tree, "diff", "HEAD", "--binary").stdout)
        untracked = _git(tree, "ls-files", "-z", "--others", "--exclude-standard").stdout
        for rel in sorted(x for x in untracked.decode().split("\0") if x):
            p = tree / rel
            h.update(b"\0" + rel.encode() + b"\0")
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
        clean = not untracked and not _git(tree, "diff", "HEAD", "--quiet").returncode
        return TreeId(
            tree, version, head.stdout.decode().strip(), None if clean else h.hexdigest(), True
        )
    return TreeId(tree, version, archive_hash(configure_ac), _tree_digest(tree), False)


def sync_tree(src: Path, dst: Path, state: Path, git: bool = False) -> int:
    """Make DST hold SRC's files (not .git); return how many were copied or removed.

    Unchanged files keep DST's copy and its time stamp, so `make` in DST rebuilds
    only what changed; a changed file is copied with a fresh time stamp (a git
    checkout may give it an older one than the objects built from its old
    content). STATE remembers what was synced, so a file removed from SRC goes
    from DST too, while the build's own products stay.
    """
    try:
        before: dict[str, list[int]] = json.loads(state.read_text())
    except (OSError, ValueError):
        before = {}
    after: dict[str, list[int]] = {}
    changed = 0
    now = time.time()
    for rel, p in _walk_files(src, git):
        st = p.lstat()
        after[rel] = [st.st_size, st.st_mtime_ns]
        target = dst / rel
        if before.get(rel) == after[rel] and (target.exists() or target.is_symlink()):
            continue
        if p.is_symlink():
            link = os.readlink(p)
            if target.is_symlink() and os.readlink(target) == link:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            target.symlink_to(link)
            changed += 1
            continue
        data = p.read_bytes()
        if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_dir():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        fresh = rel not in before and not target.exists()
        shutil.copy2(p, target)
        if not fresh:
            os.utime(target, (now, now))
        changed += 1
    for rel in set(before) - set(after):
        (dst / rel).unlink(missing_ok=True)
        changed += 1
    state.write_text(json.dumps(after))
    return changed


# ------------------------------------------------------------------ builds


@dataclass(frozen=True)
class Build:
    name: str
    image: str
    dir: Path
    manifest: dict

    @property
    def install(self) -> Path:
        return self.dir / "install"

    def lowers(self, role_layer: str) -> list[Path]:
        """The build's layers for a node of ROLE_LAYER, top first (over the image's)."""
        return [self.dir / role_layer, self.install]

    @property
    def label(self) -> str:
        return f"{self.image}/{self.name}"


def tree_dir(state_dir: Path, b: Build) -> Path:
    """The configured, built copy of B's source tree (CTS runs from it)."""
    return builds_dir(state_dir, b.image) / ".trees" / tree_key(Path(b.manifest["tree"])) / "src"


def builds_dir(state_dir: Path, image: str) -> Path:
    return state_dir / "builds" / image


def find_build(state_dir: Path, image: str, name: str) -> Build | None:
    d = builds_dir(state_dir, image) / name
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return Build(name, image, d, manifest)


def list_builds(state_dir: Path) -> list[Build]:
    root = state_dir / "builds"
    if not root.is_dir():
        return []
    out = []
    for img in sorted(p for p in root.iterdir() if p.is_dir()):
        for d in sorted(p for p in img.iterdir() if p.is_dir() and not p.name.startswith(".")):
            b = find_build(state_dir, img.name, d.name)
            if b:
                out.append(b)
    return out


def resolve(state_dir: Path, ref: str) -> Build:
    """A build named NAME or IMAGE/NAME."""
    image, _, name = ref.rpartition("/")
    found = [b for b in list_builds(state_dir) if b.name == name and image in ("", b.image)]
    if not found:
        raise NotFoundError(f"no build {ref!r}: `labctl image list` shows the builds")
    if len(found) > 1:
        raise UsageError(f"build {ref!r} exists for several images: say IMAGE/{name}")
    return found[0]


def in_use(b: Build, lab_builds: dict[str, str]) -> list[str]:
    """Labs whose nodes use build B: mounted over it, or recorded as using it."""
    labs = {lab for lab, label in lab_builds.items() if label == b.label}
    if mounts.used_by_overlay(b.dir):
        labs.add("a running lab")
    return sorted(labs)


def remove_build(b: Build, lab_builds: dict[str, str]) -> None:
    users = in_use(b, lab_builds)
    if users:
        raise UsageError(
            f"build {b.label} is in use by {', '.join(users)}: take those labs down first"
        )
    # B comes from a listing of the builds directory: still, remove only a real
    # child of it, never through a link.
    image_dir = safety.child_dir(b.dir.parent.parent, b.dir.parent.name, "build directory")
    shutil.rmtree(safety.child_dir(image_dir, b.dir.name, "build directory"))


# Every build step runs chrooted in an overlay of the build-dependency layer over
# the image's base, in a private mount namespace; the tree, the install
# directory and the compiler cache are bind-mounted in.
_STEP = r"""
set -e
lowers=$1 scratch=$2 src=$3 mnt=$4 dest=$5 ccache=$6
shift 6
mkdir -p "$scratch/u" "$scratch/w" "$scratch/m"
mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$scratch/u,workdir=$scratch/w" "$scratch/m"
mount -t proc proc "$scratch/m/proc"
mount -t tmpfs tmpfs "$scratch/m/tmp"
mkdir -p "$scratch/m$mnt" "$scratch/m/labctl/dest" "$scratch/m/labctl/ccache"
mount --bind "$src" "$scratch/m$mnt"
mount --bind "$dest" "$scratch/m/labctl/dest"
mount --bind "$ccache" "$scratch/m/labctl/ccache"
exec chroot "$scratch/m" env -i PATH=/usr/lib/ccache:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 CCACHE_DIR=/labctl/ccache CCACHE_MAXSIZE=2G \
    sh -c "cd \"$mnt\" && $*"
"""


def _ensure_builddeps(img: images.Image, root: Path, progress: Progress) -> Path:
    # Shared by every tree built for IMAGE: made once, by one labctl.
    with locks.hold("builddeps", img.name, locks.command_line(), wait=True):
        return _make_builddeps(img, root, progress)


def _make_builddeps(img: images.Image, root: Path, progress: Progress) -> Path:
    layer = root / ".builddeps"
    digest = hashlib.sha256(
        f"{BUILDDEPS_FORMAT}\n{' '.join(BUILD_PACKAGES)}\n{img.manifest.get('checksum')}".encode()
    ).hexdigest()
    stamp = layer / ".labctl-recipe"
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return layer
    progress(f"build root: {len(BUILD_PACKAGES)} build dependencies over {img.name}'s base")
    tmp = root / ".builddeps.part"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(layer, ignore_errors=True)
    scratch = root / ".builddeps.scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        images.build_layer([img.base], tmp, BUILD_PACKAGES, scratch)
        (tmp / ".labctl-recipe").write_text(digest + "\n")
        tmp.rename(layer)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return layer


# Deadlines of the build steps. A first build takes minutes here (configure
# 28 s, make -j2 96 s on 2 cores); 3.x, a slow disk or a loaded host can make it
# 10+ minutes. These only stop a build that hangs.
STEP_TIMEOUTS = {"configure": 30 * 60.0, "compile": 2 * 60 * 60.0, "install": 30 * 60.0}
DEFAULT_STEP_TIMEOUT = 60 * 60.0


_COMPILERS = ("gcc", "cc", "clang", "x86_64-linux-gnu-gcc")


def is_compiler_run(line: str) -> bool:
    """A line of make's output that is one run of the C compiler on a source file:
    a plain one, or libtool's own account of the one it ran (not libtool's command
    line, which wraps it). Pure."""
    line = line.removeprefix("libtool: compile:").strip()
    words = line.split()
    return bool(words) and words[0] in _COMPILERS and "-c" in words


@contextmanager
def _tally(log: Path, compiled: Callable[[int], None] | None) -> Iterator[None]:
    """Tell COMPILED the count of compiler runs in what LOG gains meanwhile."""
    if compiled is None:
        yield
        return
    done = threading.Event()
    start = log.stat().st_size

    def follow() -> None:
        count, rest = 0, b""
        with open(log, "rb") as f:
            f.seek(start)
            while True:
                finished = done.wait(0.5)
                chunk = rest + f.read()
                *lines, rest = chunk.split(b"\n")
                new = sum(is_compiler_run(ln.decode(errors="replace")) for ln in lines)
                if new:
                    count += new
                    compiled(count)
                if finished:
                    return

    t = threading.Thread(target=follow, daemon=True, name="compile tally")
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(timeout=5)


def _step(
    name: str,
    command: str,
    lowers: list[Path],
    work: Path,
    mnt: str,
    dest: Path,
    log: Path,
    progress: Progress,
    timings: dict[str, float],
) -> None:
    progress(name)
    start = time.monotonic()
    scratch = work / ".scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    argv = [
        *images.PRIVATE_MOUNT_NS_SHELL,
        _STEP,
        "step",
        ":".join(map(str, lowers)),
        str(scratch),
        str(work / "src"),
        mnt,
        str(dest),
        str(work.parent.parent / ".ccache"),
        command,
    ]
    try:
        with open(log, "a") as out:
            out.write(f"\n===== {name}: {command}\n")
            out.flush()
            proc = run_cmd(
                argv,
                where="build",
                timeout=STEP_TIMEOUTS.get(name, DEFAULT_STEP_TIMEOUT),
                check=False,
                stdout=out,
                name=f"{name} ({command})",
            )
    except CommandTimeout as e:
        raise CommandTimeout("build", e.command, e.timeout, hint=f"log: {log}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    timings[name] = round(time.monotonic() - start, 1)
    if proc.returncode != 0:
        tail = last_error_lines(log.read_text(errors="replace")[-20000:])
        raise CommandError(
            "build", f"{name} ({command})", proc.returncode, "", f"{tail} (log: {log})"
        )
    progress(f"{name}: {timings[name]} s")


def _normalize_usr(dest: Path, base: Path) -> None:
    """Move /lib, /sbin... that `make install` made into /usr where the base has
    merged /usr: in an overlay, a real /lib directory would hide the base's link."""
    for d in MERGED_USR:
        top, lower = dest / d, base / d
        if top.is_dir() and not top.is_symlink() and lower.is_symlink():
            target = dest / os.readlink(lower).lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            shutil.copytree(top, target, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(top)


def _python_to_dist_packages(dest: Path) -> None:
    """Python modules `make install` put in site-packages go where Debian's python3
    looks, dist-packages (as dh_python3 does for Debian's own packages): CTS's
    node side (cts-support, 3.x) imports the `pacemaker` package."""
    for site in sorted(dest.glob("usr/lib/python3*/site-packages")):
        target = dest / "usr/lib/python3/dist-packages"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(site, target, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(site)
        if not any(site.parent.iterdir()):
            site.parent.rmdir()


def _keep_lower_dir_attrs(dest: Path, lowers: list[Path]) -> None:
    """Directories the install layer shares with the image keep the image's owner
    and mode (an overlay shows the top layer's): /var/lib/pacemaker/cib stays
    hacluster's, /etc/pacemaker stays as the packages made it."""
    for root, dirs, _files in os.walk(dest):
        for d in dirs:
            p = Path(root) / d
            rel = p.relative_to(dest)
            for lower in lowers:
                q = lower / rel
                if q.is_dir() and not q.is_symlink():
                    st = q.stat()
                    os.chown(p, st.st_uid, st.st_gid)
                    os.chmod(p, st.st_mode & 0o7777)
                    break


_ROLE_FIX = r"""
set -e
lowers=$1 upper=$2 scratch=$3
shift 3
mkdir -p "$scratch/w" "$scratch/m"
mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$upper,workdir=$scratch/w" "$scratch/m"
chroot "$scratch/m" ldconfig
for b in "$@"; do
    if chroot "$scratch/m" ldd "$b" | grep 'not found'; then
        echo "$b: libraries missing on this role's nodes" >&2
        exit 1
    fi
done
"""


def _role_layer(img: images.Image, install: Path, out: Path, role: str) -> None:
    out.mkdir()
    scratch = out.parent / f".scratch-{role}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        images._run(
            [
                *images.PRIVATE_MOUNT_NS_SHELL,
                _ROLE_FIX,
                "fix",
                ":".join(map(str, [install, img.layer(role), img.base])),
                str(out),
                str(scratch),
                *ROLE_DAEMONS[role],
            ],
            where=f"build layer {role}",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(out / "var/cache/ldconfig", ignore_errors=True)


def build(
    state_dir: Path,
    path: Path,
    image: str = images.DEFAULT_IMAGE,
    progress: Progress = lambda _m: None,
    jobs: int | None = None,
    mirror: str | None = None,
    compiled: Callable[[int], None] | None = None,
) -> Build:
    """Build the Pacemaker tree at PATH for IMAGE's nodes (or reuse that build).
    COMPILED hears the count of compiler runs as the compile goes."""
    tree = identify(path)
    configure_args(tree.version, "x")  # refuses too old a tree before any work
    if os.geteuid() != 0:
        raise HostError("building Pacemaker needs root (chroot, mounts): run labctl as root")
    img = images.find_image(state_dir, image)
    if img is None or img.stale:
        img = images.build_image(state_dir, image, mirror=mirror, progress=progress)
    root = builds_dir(state_dir, image)
    existing = find_build(state_dir, image, tree.name)
    if existing is not None and _current(existing, img):
        progress(f"build {existing.label} is already there (from {tree.path})")
        return existing
    work = root / ".trees" / tree_key(tree.path)
    # One build per tree at a time; a second waits, then finds the build made.
    with locks.hold("build", tree_key(tree.path), locks.command_line(), wait=True):
        again = find_build(state_dir, image, tree.name)
        if again is not None and _current(again, img):
            return again
        return _build(
            state_dir, img, tree, root, work, progress, jobs or os.cpu_count() or 2, compiled
        )


def _current(b: Build, img: images.Image) -> bool:
    """B can be used as it is: made by this build format over IMG as it is now. A
    build made over an older image is made again: its libraries were that image's."""
    return b.manifest.get("format") == BUILD_FORMAT and b.manifest.get(
        "image_checksum"
    ) == img.manifest.get("checksum")


def _build(
    state_dir: Path,
    img: images.Image,
    tree: TreeId,
    root: Path,
    work: Path,
    progress: Progress,
    jobs: int,
    compiled: Callable[[int], None] | None = None,
) -> Build:
    started = time.monotonic()
    deps = _ensure_builddeps(img, root, progress)
    (root / ".ccache").mkdir(exist_ok=True)
    (work / "src").mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    log.write_text(f"labctl build of {tree.path} as {tree.name}\n")
    changed = sync_tree(tree.path, work / "src", work / "sync.json", tree.git)
    progress(f"tree {tree.path}: {changed} file(s) copied to the build directory")
    mnt = SOURCE_MOUNT.format(build=(tree.commit or tree.version)[:10])
    lowers = [deps, img.base]
    timings: dict[str, float] = {}
    scratch_dest = root / f".install-{tree.name}.part"
    shutil.rmtree(scratch_dest, ignore_errors=True)
    scratch_dest.mkdir(parents=True)
    final = root / tree.name
    part = root / f".{tree.name}.part"
    shutil.rmtree(part, ignore_errors=True)
    try:
        args = configure_args(tree.version, "$(gcc -print-multiarch)")
        conf = {"args": args, "mount": mnt}
        conf_file = work / "configured.json"
        configured = (work / "src/config.status").is_file() and conf_file.is_file()
        if not configured or json.loads(conf_file.read_text()) != conf:
            conf_file.unlink(missing_ok=True)
            quoted = " ".join(f"'{a}'" if "$" not in a else f'"{a}"' for a in args)
            _step(
                "configure",
                f"./autogen.sh && ./configure {quoted}",
                lowers, work, mnt, scratch_dest, log, progress, timings,
            )  # fmt: skip
            conf_file.write_text(json.dumps(conf))
        with _tally(log, compiled):
            _step(
                "compile",
                f"make -j{jobs}",
                lowers, work, mnt, scratch_dest, log, progress, timings,
            )  # fmt: skip
        _step(
            "install",
            "make install DESTDIR=/labctl/dest",
            lowers, work, mnt, scratch_dest, log, progress, timings,
        )  # fmt: skip
        _normalize_usr(scratch_dest, img.base)
        _python_to_dist_packages(scratch_dest)
        _keep_lower_dir_attrs(scratch_dest, [img.layer(r) for r in ROLE_LAYERS] + [img.base])
        images._write(scratch_dest, MARKER_PATH, json.dumps(marker(tree, img.name)) + "\n")
        part.mkdir()
        scratch_dest.rename(part / "install")
        for role in ROLE_LAYERS:
            _role_layer(img, part / "install", part / role, role)
        manifest = {
            **marker(tree, img.name),
            "image_checksum": img.manifest.get("checksum"),
            "format": BUILD_FORMAT,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "build_seconds": round(time.monotonic() - started, 1),
            "timings": timings,
            "configure": args,
            "size_bytes": images.tree_size(part / "install"),
            "log": str(log),
        }
        (part / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        images.replace_keeping_vm_files(part, final)  # a lab's VMs may use them
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch_dest, ignore_errors=True)
    b = find_build(state_dir, img.name, tree.name)
    assert b is not None
    progress(f"build {b.label} ready in {time.monotonic() - started:.0f} s")
    return b
