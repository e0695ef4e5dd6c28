"""--packages and --bare: validation, the cached layer's place, the node's layer order,
and the record keeping both."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl import images, lab, state
from labctl.errors import UsageError
from labctl.plan import make_plan
from labctl.spec import make_spec, parse_packages


def test_package_lists_are_split_sorted_and_deduplicated():
    assert parse_packages(["pcs,crmsh", "crmsh", " fence-agents-common "]) == (
        "crmsh",
        "fence-agents-common",
        "pcs",
    )
    assert parse_packages([]) == ()
    assert parse_packages([","]) == ()


@pytest.mark.parametrize("bad", ["pcs=0.11", "crmsh/trixie", "Pcs", "-x", "a b", "../x", "p"])
def test_anything_but_package_names_is_refused_in_one_line(bad):
    with pytest.raises(UsageError, match="not Debian package names") as e:
        parse_packages([bad])
    assert "\n" not in str(e.value)


def test_too_many_packages_are_refused():
    with pytest.raises(UsageError, match="at most"):
        parse_packages([",".join(f"pkg{i}" for i in range(100))])


def test_packages_are_for_containers_only_yet():
    with pytest.raises(UsageError, match="VM nodes cannot take it yet"):
        make_spec("v", 1, mode="remote", backend="vm", packages=["pcs"])


def test_bare_refuses_guests_and_test_resources():
    with pytest.raises(UsageError, match="guest nodes are started by the cluster"):
        make_spec("g", 1, mode="guest", bare=True)
    with pytest.raises(UsageError, match="--resources needs a cluster"):
        make_spec("r", 3, bare=True, resources=2)
    assert make_spec("b", 2, bare=True, packages=["crmsh"]).bare


def _image(tmp_path: Path) -> images.Image:
    return images.Image("debian12", tmp_path / "images" / "debian12", {})


def test_the_layer_lives_in_the_image_and_is_keyed_by_role_and_list(tmp_path):
    img = _image(tmp_path)
    a = images.packages_layer(img, "cluster", ("crmsh", "pcs"))
    assert a.parent == img.dir / "packages" and a.name.startswith("cluster-")
    assert images.packages_layer(img, "cluster", ("crmsh", "pcs")) == a
    assert images.packages_layer(img, "remote", ("crmsh", "pcs")) != a
    assert images.packages_layer(img, "cluster", ("crmsh",)) != a


def test_a_nodes_lowers_put_the_packages_between_a_build_and_the_image(tmp_path):
    img = _image(tmp_path)
    extra = images.packages_layer(img, "remote", ("crmsh",))
    assert lab.lowers(img, None, "remote", ("crmsh",)) == [extra, img.dir / "remote", img.base]
    assert lab.lowers(img, None, "remote") == [img.dir / "remote", img.base]


def test_the_record_keeps_packages_and_bare(tmp_path):
    spec = make_spec("pk", 2, packages=["pcs,crmsh"], bare=True)
    p = make_plan(spec, 2, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    rec = state.read_record(tmp_path, "pk")
    assert rec is not None
    assert rec.spec.packages == ("crmsh", "pcs") and rec.spec.bare
    assert rec.spec == spec
