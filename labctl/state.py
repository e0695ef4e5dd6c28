"""The lab record: what libvirt cannot tell about a lab, kept in its directory."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from labctl.cloudimage import redact
from labctl.errors import LabctlError
from labctl.images import is_image_name
from labctl.plan import LabPlan, make_plan
from labctl.spec import DEFAULT_IMAGE, LabSpec

DEFAULT_STATE_DIR = Path("/var/lib/labctl")
# In a lab's directory while `labctl upgrade` has a node out of the cluster.
PENDING_UPGRADE = "upgrade-pending.json"


def is_build_label(label: str) -> bool:
    """LABEL has a build label's form, IMAGE/NAME, each a plain name; pure."""
    image, _, name = label.partition("/")
    return is_image_name(image) and is_image_name(name)


def labs_dir(state_dir: Path) -> Path:
    return state_dir / "labs"


@dataclass(frozen=True)
class LabRecord:
    spec: LabSpec
    subnet_index: int
    state: str  # creating, up, failed
    created: str
    build: str | None = None  # IMAGE/NAME of the Pacemaker build every node runs, if any
    node_images: dict[str, str] = field(default_factory=dict)  # node -> its built image
    # node -> the build it runs ("" none), where nodes differ: a lab part way through
    # `upgrade --to BUILD` (BUILD is then None); empty when BUILD says it for all.
    node_builds: dict[str, str] = field(default_factory=dict)

    def plan(self, state_dir: Path) -> LabPlan:
        return make_plan(
            self.spec,
            self.subnet_index,
            state_dir,
            self.node_images,
            build=self.build or "",
            node_builds=self.node_builds,
        )


def common_build(node_builds: Mapping[str, str]) -> str | None:
    """The build every node runs (None: none, or not the same one); pure."""
    builds = set(node_builds.values())
    return builds.pop() if len(builds) == 1 and "" not in builds else None


def write_record(
    plan: LabPlan,
    state: str,
    created: str | None = None,
    build: str | None = None,
    node_builds: Mapping[str, str] | None = None,
) -> LabRecord:
    """Write PLAN's record. BUILD: the one build every node runs; or NODE_BUILDS, each
    node's (a rolling upgrade's), recorded only while the nodes differ."""
    if node_builds is not None:
        build = common_build(node_builds)
        if build is not None or not any(node_builds.values()):
            node_builds = None
    rec = LabRecord(
        spec=plan.spec,
        subnet_index=plan.network.index,
        state=state,
        created=created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        build=build,
        node_images={n.name: n.image for n in plan.nodes},
        node_builds=dict(node_builds or {}),
    )
    spec = dataclasses.asdict(rec.spec)
    if spec["cloud_image"]:
        spec["cloud_image"] = redact(spec["cloud_image"])  # a signed URL's query is a secret
    data = {
        "spec": spec,
        "subnet_index": rec.subnet_index,
        "state": rec.state,
        "created": rec.created,
        "build": rec.build,
        "node_images": rec.node_images,
        "node_builds": rec.node_builds,
    }
    tmp = plan.record.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(plan.record)
    return rec


def read_record(state_dir: Path, name: str) -> LabRecord | None:
    """The record of lab NAME, or None when there is none; one that names another
    lab (its plan's paths would be another lab's) is refused."""
    path = labs_dir(state_dir) / name / "lab.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    recorded = data.get("spec", {}).get("name") if isinstance(data, dict) else None
    if recorded != name:
        raise LabctlError(f"{path} names lab {recorded!r}, not {name!r}: not using it")
    node_images = data.get("node_images") or {}
    node_builds = data.get("node_builds") or {}
    named = [data["spec"].get("image", DEFAULT_IMAGE), data["spec"].get("remote_image")]
    if not isinstance(node_images, dict) or not isinstance(node_builds, dict):
        raise LabctlError(f"{path}: node_images or node_builds is not a mapping: not using it")
    for label in [data.get("build"), *node_builds.values()]:
        if label and not is_build_label(str(label)):
            # It becomes a path under builds/ (the node's lower layers).
            raise LabctlError(f"{path} names build {label!r}: not using it")
    for image in [*(i for i in named if i is not None), *node_images.values()]:
        if not is_image_name(str(image)):
            # It becomes a path under images/ and builds/ (deploy builds there).
            raise LabctlError(f"{path} names image {image!r}: not using it")
    return LabRecord(
        spec=LabSpec(**{**data["spec"], "packages": tuple(data["spec"].get("packages", ()))}),
        subnet_index=data["subnet_index"],
        state=data["state"],
        created=data["created"],
        build=data.get("build"),
        node_images={str(k): str(v) for k, v in node_images.items()},
        node_builds={str(k): str(v) for k, v in node_builds.items()},
    )


def recorded_labs(state_dir: Path) -> list[str]:
    d = labs_dir(state_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
