import pytest

from labctl.errors import UsageError
from labctl.spec import (
    DEFAULT_CLUSTER_NODES,
    MAX_CLUSTER_NODES,
    MAX_OTHER_NODES,
    make_spec,
    validate_name,
)


def test_cluster_mode_has_no_extra_cluster_nodes():
    s = make_spec("demo", 3)
    assert (s.mode, s.nodes, s.cluster_nodes, s.total_nodes) == ("cluster", 3, 0, 3)


def test_remote_and_guest_modes_default_to_a_two_node_cluster():
    for mode in ("remote", "guest"):
        s = make_spec("demo", 5, mode=mode)
        assert s.cluster_nodes == DEFAULT_CLUSTER_NODES == 2
        assert s.total_nodes == 7


@pytest.mark.parametrize("nodes", [0, -1])
def test_node_count_below_one_is_refused(nodes):
    with pytest.raises(UsageError, match="at least 1"):
        make_spec("demo", nodes)


def test_node_count_above_what_a_subnet_holds_is_refused():
    assert make_spec("demo", MAX_OTHER_NODES, mode="guest").nodes == MAX_OTHER_NODES
    with pytest.raises(UsageError, match=f"above {MAX_OTHER_NODES} guest nodes"):
        make_spec("demo", MAX_OTHER_NODES + 1, mode="guest")


def test_limits_are_at_least_what_the_scale_issue_asks():
    assert MAX_OTHER_NODES >= 200 and MAX_CLUSTER_NODES >= 32
    assert make_spec("demo", 32).nodes == 32


def test_big_cluster_mode_points_to_remote_or_guest():
    with pytest.raises(UsageError, match="--mode remote"):
        make_spec("demo", MAX_CLUSTER_NODES + 1)


@pytest.mark.parametrize("name", ["Demo", "1lab", "lab-", "la_b", "a.b", "x" * 21, "", "lab x"])
def test_names_that_are_not_host_name_labels_are_refused(name):
    with pytest.raises(UsageError):
        validate_name(name)


@pytest.mark.parametrize("name", ["a", "lab", "ci-3", "x" * 20])
def test_host_name_labels_are_accepted(name):
    assert validate_name(name) == name


def test_unknown_mode_and_backend_are_refused_with_the_choices():
    with pytest.raises(UsageError, match="cluster, remote, guest"):
        make_spec("demo", 1, mode="bogus")
    with pytest.raises(UsageError, match="lxc, vm"):
        make_spec("demo", 1, backend="xen")


def test_cluster_nodes_option_is_not_for_cluster_mode():
    with pytest.raises(UsageError, match="--cluster-nodes"):
        make_spec("demo", 3, cluster_nodes=2)


@pytest.mark.parametrize("kw", [{"memory_mib": 64}, {"vcpus": 0}, {"remote_port": 70000}])
def test_resource_options_are_range_checked(kw):
    with pytest.raises(UsageError):
        make_spec("demo", 1, **kw)


SHA = "ab" * 32


@pytest.mark.parametrize(
    "image", ["/srv/debian-12-genericcloud-amd64.qcow2", "img.qcow2", "https://h.example/d.qcow2"]
)
def test_a_cloud_image_is_for_vms_and_keeps_the_built_image_for_containers(image):
    s = make_spec("demo", 1, mode="remote", backend="vm", image=image, image_checksum=SHA)
    assert (s.cloud_image, s.image, s.image_checksum) == (image, "debian12", f"sha256:{SHA}")
    with pytest.raises(UsageError, match="--backend vm"):
        make_spec("demo", 1, mode="remote", image=image, image_checksum=SHA)


def test_a_url_needs_a_checksum_and_a_path_does_not():
    with pytest.raises(UsageError, match="--image-checksum sha256:HEX"):
        make_spec("demo", 1, backend="vm", image="http://127.0.0.1:8/c.qcow2")
    assert make_spec("demo", 1, backend="vm", image="/c.qcow2").image_checksum is None


def test_a_checksum_without_a_cloud_image_is_refused():
    with pytest.raises(UsageError, match=r"--image PATH\|URL"):
        make_spec("demo", 1, backend="vm", image_checksum=SHA)


@pytest.mark.parametrize(
    ("text", "algorithm"),
    [(SHA, "sha256"), (f"SHA256:{SHA.upper()}", "sha256"), ("cd" * 64, "sha512")],
)
def test_checksums_are_read_by_prefix_or_length(text, algorithm):
    from labctl.cloudimage import parse_checksum

    c = parse_checksum(text)
    assert (c.algorithm, len(c.hexdigest), c.hexdigest.islower()) == (
        algorithm,
        len(text.split(":")[-1]),
        True,
    )


@pytest.mark.parametrize("text", ["md5:" + "a" * 32, "sha256:xyz", "a" * 40, "sha512:" + SHA])
def test_bad_checksums_are_refused(text):
    with pytest.raises(UsageError, match="sha256:HEX or sha512:HEX"):
        make_spec("demo", 1, backend="vm", image="/c.qcow2", image_checksum=text)
