"""What a user asks for: a lab of N nodes in a mode, validated before anything is touched."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from labctl.cloudimage import is_image_ref, is_url, parse_checksum, redact
from labctl.errors import UsageError

Mode = Literal["cluster", "remote", "guest"]
Backend = Literal["lxc", "vm"]
NetworkKind = Literal["isolated", "nat"]
Role = Literal["cluster", "remote", "guest"]
# A lab's domains: Pacemaker's nodes, and the quorum device's node (`up --qdevice`).
NodeRole = Literal["cluster", "remote", "guest", "qnetd"]

MODES: tuple[str, ...] = get_args(Mode)
BACKENDS: tuple[str, ...] = get_args(Backend)
ROLES: tuple[Role, ...] = get_args(Role)

# A lab lives on a /24, or a /23 or /22 when its nodes need it (plan.lab_prefix);
# the end of the subnet stays free for CTS's test IPs and users' addresses.
# What really bounds a lab is the host: `up` checks its memory and kernel limits.
MAX_OTHER_NODES = 900  # remote or guest nodes: what a /22 holds (plan.other_capacity)
MAX_CLUSTER_NODES = 32  # corosync/knet handles more; past this a lab on one host gains nothing
DEFAULT_CLUSTER_NODES = 2  # remote/guest labs: the smallest cluster that can fail over
DEFAULT_IMAGE = "debian12"
MAX_NAME = 20  # so that "NAME-g64" stays a short host name and a short domain name
# Test resources (ocf:pacemaker:Dummy) a lab may be given: enough to watch failovers,
# few enough that a 2-core host's scheduler is not what a test measures.
MAX_RESOURCES = 200

_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")


@dataclass(frozen=True)
class LabSpec:
    """A validated request for one lab."""

    name: str
    nodes: int
    mode: Mode = "cluster"
    cluster_nodes: int = 0  # cluster nodes besides the N remote/guest nodes; 0 in cluster mode
    backend: Backend = "lxc"
    network: NetworkKind = "isolated"
    image: str = DEFAULT_IMAGE  # the built image containers (and VMs, unless cloud_image) use
    memory_mib: int = 512
    vcpus: int = 1
    remote_port: int = 3121
    fencing: bool = False
    cloud_image: str | None = None  # a user's qcow2 (path or URL) for the VM nodes
    image_checksum: str | None = None  # "sha256:HEX" or "sha512:HEX"
    pacemaker: str | None = None  # a Pacemaker source tree the nodes run a build of
    # The built image of the remote and guest nodes when it is not IMAGE (a mixed lab);
    # IMAGE is then the cluster nodes' image.
    remote_image: str | None = None
    resources: int = 0  # ocf:pacemaker:Dummy primitives (dummy-1..N) made once the lab is up
    # Debian packages added to every node (a cached layer over the image's), sorted
    packages: tuple[str, ...] = ()
    bare: bool = False  # nodes with packages, keys and names, but no cluster configured
    links: int = 1  # corosync knet links: 2 gives cluster nodes a NIC on a second network
    qdevice: bool = False  # a corosync-qnetd node (LAB-q1) and corosync-qdevice on the cluster

    @property
    def total_nodes(self) -> int:
        return self.nodes + self.cluster_nodes

    def image_of(self, role: Role) -> str:
        """The built image nodes of ROLE are made from."""
        return self.remote_image if self.remote_image and role != "cluster" else self.image

    @property
    def images(self) -> tuple[str, ...]:
        """The built images the lab's nodes are made from: one, or two in a mixed lab."""
        return (self.image,) if self.remote_image is None else (self.image, self.remote_image)


def validate_name(name: str) -> str:
    """Return NAME if it is a usable lab name, else raise UsageError saying why."""
    if not name:
        raise UsageError("lab name is empty: give --name with a short lower-case name like 'demo'")
    if len(name) > MAX_NAME:
        raise UsageError(
            f"lab name {name!r} is longer than {MAX_NAME} characters: pick a shorter one"
        )
    if not _NAME_RE.match(name):
        raise UsageError(
            f"lab name {name!r} is not a host name label: use lower-case letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return name


def is_lab_name(name: str) -> bool:
    """NAME passes validate_name: for names read back from libvirt or the state dir."""
    try:
        validate_name(name)
    except UsageError:
        return False
    return True


def make_spec(
    name: str,
    nodes: int,
    mode: str = "cluster",
    cluster_nodes: int | None = None,
    backend: str = "lxc",
    network: str = "isolated",
    image: str | None = None,
    memory_mib: int = 512,
    vcpus: int = 1,
    remote_port: int = 3121,
    fencing: bool = False,
    image_checksum: str | None = None,
    pacemaker: str | None = None,
    cluster_image: str | None = None,
    remote_image: str | None = None,
    resources: int = 0,
    packages: Sequence[str] = (),
    bare: bool = False,
    links: int = 1,
    qdevice: bool = False,
) -> LabSpec:
    """Validate raw user input into a LabSpec; every problem is a one-line UsageError.
    IMAGE sets every node's image; CLUSTER_IMAGE and REMOTE_IMAGE set one role's."""
    validate_name(name)
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if network not in ("isolated", "nat"):
        raise UsageError(f"unknown network kind {network!r}: use isolated or nat")
    if nodes < 1:
        raise UsageError(f"--nodes must be at least 1 (got {nodes})")
    if mode == "cluster":
        if cluster_nodes not in (None, 0, nodes):
            raise UsageError(
                "--cluster-nodes is for remote and guest modes; in cluster mode use --nodes"
            )
        if nodes > MAX_CLUSTER_NODES:
            raise UsageError(
                f"--nodes {nodes} is above {MAX_CLUSTER_NODES} cluster nodes: use --mode remote "
                "or --mode guest for larger labs"
            )
        k = 0
    else:
        k = DEFAULT_CLUSTER_NODES if cluster_nodes is None else cluster_nodes
        if not 1 <= k <= MAX_CLUSTER_NODES:
            raise UsageError(f"--cluster-nodes must be between 1 and {MAX_CLUSTER_NODES} (got {k})")
    if mode != "cluster" and nodes > MAX_OTHER_NODES:
        raise UsageError(
            f"--nodes {nodes} is above {MAX_OTHER_NODES} {mode} nodes, what one lab's subnet holds: "
            "split it into several labs"
        )
    if memory_mib < 128:
        raise UsageError(f"--memory must be at least 128 MiB (got {memory_mib})")
    if not 1 <= vcpus <= 64:
        raise UsageError(f"--vcpus must be between 1 and 64 (got {vcpus})")
    if not 1 <= remote_port <= 65535:
        raise UsageError(f"--remote-port must be a TCP port, 1-65535 (got {remote_port})")
    if not 0 <= resources <= MAX_RESOURCES:
        raise UsageError(f"--resources must be between 0 and {MAX_RESOURCES} (got {resources})")
    image, remote_image = role_images(mode, image, cluster_image, remote_image)
    cloud_image = None
    if is_image_ref(image):
        if backend != "vm":
            raise UsageError(
                f"--image {redact(image)} is a disk image, which only VMs boot: add --backend vm, "
                "or give a built image's name (see `labctl image list`)"
            )
        if is_url(image) and image_checksum is None:
            raise UsageError(
                f"--image {redact(image)} is a URL: give --image-checksum sha256:HEX "
                "(the checksum its publisher lists)"
            )
        cloud_image, image = image, DEFAULT_IMAGE
    elif image_checksum is not None:
        raise UsageError("--image-checksum is for --image PATH|URL (a cloud image)")
    if image_checksum is not None:
        image_checksum = str(parse_checksum(image_checksum))
    if pacemaker is not None:
        if remote_image is not None:
            raise UsageError(
                f"--pacemaker DIR puts one build on every node, made for one image: it cannot "
                f"go with cluster nodes on {image} and remote nodes on {remote_image} "
                "(give one image, or leave out --pacemaker)"
            )
        if cloud_image:
            raise UsageError(
                "--pacemaker DIR needs labctl's own image: a cloud image (--image PATH|URL) "
                "cannot take a build"
            )
        tree = Path(pacemaker).expanduser()
        if not (tree / "configure.ac").is_file():
            raise UsageError(
                f"--pacemaker {pacemaker}: not a Pacemaker source tree (no configure.ac there)"
            )
        pacemaker = str(tree.resolve())
    wanted = parse_packages(packages)
    if wanted and backend != "lxc":
        raise UsageError(
            "--packages adds a layer to containers' roots; VM nodes cannot take it yet "
            "(use --backend lxc, or install them over `labctl exec`)"
        )
    if links not in (1, 2):
        raise UsageError(f"--links must be 1 or 2 (corosync knet links; got {links})")
    if links == 2 and backend == "vm" and mode == "cluster":
        raise UsageError(
            "--links 2 gives container cluster nodes a second NIC; VM cluster nodes cannot "
            "take it yet (use --backend lxc, or --mode remote with VM remote nodes)"
        )
    if qdevice:
        _check_qdevice(mode, backend, nodes if mode == "cluster" else k, bare, cloud_image)
    if bare and resources:
        raise UsageError("--resources needs a cluster to put them in, and --bare makes none")
    if bare and mode == "guest":
        raise UsageError(
            "--bare makes no cluster, and guest nodes are started by the cluster: "
            "use --mode cluster or remote with --bare"
        )
    return LabSpec(
        name=name,
        nodes=nodes,
        mode=mode,  # type: ignore[arg-type]
        cluster_nodes=k,
        backend=backend,  # type: ignore[arg-type]
        network=network,  # type: ignore[arg-type]
        image=image,
        memory_mib=memory_mib,
        vcpus=vcpus,
        remote_port=remote_port,
        fencing=fencing,
        cloud_image=cloud_image,
        image_checksum=image_checksum,
        pacemaker=pacemaker,
        remote_image=remote_image,
        resources=resources,
        packages=wanted,
        bare=bare,
        links=links,
        qdevice=qdevice,
    )


def _check_qdevice(
    mode: str, backend: str, cluster_nodes: int, bare: bool, cloud_image: str | None
) -> None:
    if bare:
        raise UsageError(
            "--qdevice configures corosync, and --bare makes no cluster: leave one of them out"
        )
    if cluster_nodes < 2:
        raise UsageError(
            "--qdevice is a tie-breaker between cluster nodes: it needs at least 2 of them"
        )
    if backend == "vm" and mode == "cluster":
        # corosync-qdevice comes in the packages layer, which only containers take.
        raise UsageError(
            "--qdevice needs container cluster nodes (corosync-qdevice is added as a layer): "
            "use --backend lxc, or --mode remote with VM remote nodes"
        )
    if cloud_image:
        raise UsageError("--qdevice needs labctl's own image, not a cloud image")


_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1
MAX_PACKAGES = 64


def parse_packages(given: Sequence[str]) -> tuple[str, ...]:
    """Package names from --packages (comma-separated, repeatable): sorted, once each;
    pure. Only names: a version or release (`pkg=1.2`, `pkg/trixie`) would make the
    cached layer depend on what a mirror serves that day."""
    names = sorted({w.strip() for item in given for w in item.split(",") if w.strip()})
    bad = [n for n in names if not _PACKAGE_RE.match(n)]
    if bad:
        raise UsageError(
            f"--packages: not Debian package names: {', '.join(map(repr, bad))} "
            "(names only, e.g. --packages pcs,crmsh)"
        )
    if len(names) > MAX_PACKAGES:
        raise UsageError(f"--packages: at most {MAX_PACKAGES} packages (got {len(names)})")
    return tuple(names)


def role_images(
    mode: str, image: str | None, cluster_image: str | None, remote_image: str | None
) -> tuple[str, str | None]:
    """The cluster nodes' image and, in a mixed lab, the remote/guest nodes' (else None),
    from --image (both roles) and --cluster-image/--remote-image (one role each); pure."""
    if image is not None and cluster_image is not None and remote_image is not None:
        raise UsageError(
            "--image sets both roles' images: give --image, or --cluster-image and "
            "--remote-image, not all three"
        )
    if mode == "cluster" and remote_image is not None:
        raise UsageError(
            "--remote-image is for remote and guest nodes, and a cluster-mode lab has none: "
            "use --image or --cluster-image"
        )
    for option, value in (("--cluster-image", cluster_image), ("--remote-image", remote_image)):
        if value is not None and is_image_ref(value):
            raise UsageError(
                f"{option} takes a built image's name (see `labctl image list`), not "
                f"{redact(value)}: a cloud image goes with --image alone"
            )
    if image is not None and is_image_ref(image) and (cluster_image or remote_image):
        raise UsageError(
            f"--image {redact(image)} is a cloud image: it cannot go with --cluster-image "
            "or --remote-image, which name built images"
        )
    base = image if image is not None else DEFAULT_IMAGE
    cluster = cluster_image or base
    remote = remote_image or base
    return cluster, (remote if remote != cluster and mode != "cluster" else None)
