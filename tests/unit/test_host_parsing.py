import ipaddress
from pathlib import Path

import pytest

from labctl.host import cgroup_layout, parse_proc_net_route
from labctl.images import debian_archive, parse_apt_sources
from labctl.mounts import MountEntry, mounts_under, overlay_lowerdirs, parse_mountinfo
from labctl.plan import make_plan
from labctl.provision import hosts_file, known_hosts_lines, node_files
from labctl.spec import make_spec

ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
lcbr1\t0001D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


def test_routes_parsed_without_the_default_route():
    assert parse_proc_net_route(ROUTE) == [
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("10.213.1.0/24"),
    ]


DEB822 = """Types: deb
# comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_sources():
    texts = {"/etc/apt/sources.list.d/debian.sources": DEB822}
    assert parse_apt_sources(texts, "bookworm") == "http://mirror.example/debian"
    assert parse_apt_sources(texts, "bookworm-security") == "http://mirror.example/debian-security"
    assert parse_apt_sources(texts, "trixie") is None


def test_a_debian_release_the_host_does_not_list_comes_from_the_hosts_debian_archive():
    texts = {"/etc/apt/sources.list.d/debian.sources": DEB822}
    assert debian_archive(texts, "bookworm") == "http://mirror.example/debian"
    assert debian_archive(texts, "trixie") == "http://mirror.example/debian"
    assert debian_archive(texts, "trixie-updates") == "http://mirror.example/debian"
    assert debian_archive(texts, "trixie-security") == "http://mirror.example/debian-security"
    # Not a Debian release, or no Debian archive to serve it: no guess.
    assert debian_archive(texts, "jammy") is None
    other = {"/etc/apt/sources.list.d/x.sources": DEB822.replace("bookworm", "nodistro")}
    assert debian_archive(other, "trixie") is None


def test_mirror_from_one_line_sources_ignores_deb_src_and_options():
    text = (
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert (
        parse_apt_sources({"/etc/apt/sources.list": text}, "bookworm")
        == "http://mirror.example/debian"
    )


MOUNTINFO = r"""22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
42 22 254:0 /var/lib/labctl /var/lib/labctl rw,relatime shared:2 - ext4 /dev/vda rw
50 42 0:50 / /var/lib/labctl/labs/demo/nodes/demo-c1/root rw shared:3 - overlay overlay rw,lowerdir=/i/cluster:/i/base,upperdir=/u,workdir=/w
51 42 0:51 / /var/lib/labctl/labs/demo\040x/root rw - tmpfs tmpfs rw
52 50 0:52 / /var/lib/labctl/labs/demo/nodes/demo-c1/root/proc rw - proc proc rw
"""


def test_mountinfo_parsing_and_unmount_order():
    entries = parse_mountinfo(MOUNTINFO)
    assert entries[3] == MountEntry("/var/lib/labctl/labs/demo x/root", "tmpfs", "rw")
    under = mounts_under(Path("/var/lib/labctl/labs/demo"), entries)
    assert under == [
        "/var/lib/labctl/labs/demo/nodes/demo-c1/root/proc",
        "/var/lib/labctl/labs/demo/nodes/demo-c1/root",
    ]
    assert overlay_lowerdirs(entries) == ["/i/cluster", "/i/base"]


def test_cgroup_layout_detection():
    v1 = MountEntry("/sys/fs/cgroup/cpu", "cgroup", "rw,cpu")
    v2 = MountEntry("/sys/fs/cgroup/unified", "cgroup2", "rw")
    assert cgroup_layout([v1, v2]) == "hybrid"
    assert cgroup_layout([v2]) == "unified"
    assert cgroup_layout([v1]) == "legacy"


def test_node_files_give_identity_names_and_pinned_trust():
    p = make_plan(make_spec("demo", 2), 1, Path("/s"))
    keys = {
        "demo-c1": "ssh-ed25519 AAAA1 root@demo-c1",
        "demo-c2": "ssh-ed25519 AAAA2 root@demo-c2",
    }
    known = known_hosts_lines(p, keys)
    assert known == "demo-c1,10.213.1.11 ssh-ed25519 AAAA1\ndemo-c2,10.213.1.12 ssh-ed25519 AAAA2\n"
    hosts = hosts_file(p, "builder")
    assert "10.213.1.12\tdemo-c2\n" in hosts
    assert "10.213.1.1\tbuilder\n" in hosts
    files = {
        f.path: f
        for f in node_files(
            p,
            p.nodes[1],
            host_name="builder",
            host_key_private=b"PRIV",
            host_key_public=keys["demo-c2"],
            lab_key_private=b"LABPRIV",
            lab_key_public="ssh-ed25519 LAB labctl-demo",
            known_hosts=known,
        )
    }
    assert files["/etc/hostname"].data == b"demo-c2\n"
    for secret in ("/etc/ssh/ssh_host_ed25519_key", "/root/.ssh/id_ed25519"):
        assert files[secret].mode == 0o600
    assert files["/root/.ssh/authorized_keys"].data == b"ssh-ed25519 LAB labctl-demo\n"


def test_only_cluster_nodes_of_guest_labs_reach_the_host_libvirtd():
    from labctl.provision import host_mounts

    g = make_plan(make_spec("demo", 2, mode="guest"), 1, Path("/s"))
    c1, g1 = g.nodes[0], g.nodes[2]
    mounts = host_mounts(g, c1)
    assert [(m.source, m.target, m.readonly) for m in mounts] == [
        ("/run/libvirt", "/var/lib/host-libvirt", False),
        ("/s/labs/demo/xml", "/s/labs/demo/xml", True),
    ]
    assert host_mounts(g, g1) == ()
    cluster = make_plan(make_spec("demo", 2), 1, Path("/s"))
    assert host_mounts(cluster, cluster.nodes[0]) == ()

    def paths(plan, node):
        return {f.path for f in _files(plan, node)}

    assert "/etc/tmpfiles.d/labctl-host-libvirt.conf" in paths(g, c1)
    assert "/etc/tmpfiles.d/labctl-host-libvirt.conf" not in paths(g, g1)


def _files(plan, node):
    """A node's files, with placeholder keys."""
    return node_files(
        plan,
        node,
        host_name="h",
        host_key_private=b"",
        host_key_public="ssh-ed25519 K",
        lab_key_private=b"",
        lab_key_public="ssh-ed25519 L",
        known_hosts="",
    )


@pytest.mark.parametrize("mode", ["remote", "guest"])
def test_cluster_daemons_get_a_pinned_malloc_trim_threshold(mode):
    p = make_plan(make_spec("demo", 1, mode=mode), 1, Path("/s"))
    dropins = {}
    for node in p.nodes:
        for f in _files(p, node):
            if f.path.endswith("/labctl-malloc.conf"):
                assert f.data.decode().splitlines() == [
                    "[Service]",
                    "Environment=MALLOC_TRIM_THRESHOLD_=131072",
                ]
                unit = f.path.split("/")[-2].removesuffix(".d")
                dropins.setdefault(node.role, set()).add(unit)
    assert dropins == {
        "cluster": {"corosync.service", "pacemaker.service"},
    }
