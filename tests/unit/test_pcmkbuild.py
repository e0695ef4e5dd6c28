"""A Pacemaker build of a source tree: naming, configure, tree sync, error lines."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from labctl import pacemaker as pcmk
from labctl import pcmkbuild
from labctl.errors import UsageError

CONFIGURE_AC_RELEASE = """\
m4_include([m4/version.m4])
AC_INIT([pacemaker], VERSION_NUMBER, [users@clusterlabs.org], [pacemaker],
        PCMK_URL)
AC_MSG_CHECKING([build version])
BUILD_VERSION=a3f44794f94
AS_IF([test $BUILD_VERSION != ":%h$"],
"""
CONFIGURE_AC_GIT = CONFIGURE_AC_RELEASE.replace(
    "BUILD_VERSION=a3f44794f94", "BUILD_VERSION=$Format:%h$"
)
VERSION_M4 = "m4_define([VERSION_NUMBER], [2.1.5])\nm4_define([PCMK_URL], [https://x/])\n"


def test_version_comes_from_version_m4_and_the_archive_hash_from_configure_ac():
    assert pcmkbuild.parse_version(VERSION_M4, CONFIGURE_AC_RELEASE) == "2.1.5"
    assert pcmkbuild.archive_hash(CONFIGURE_AC_RELEASE) == "a3f44794f94"
    # A git checkout's configure.ac still has git archive's placeholder.
    assert pcmkbuild.archive_hash(CONFIGURE_AC_GIT) is None
    with pytest.raises(UsageError, match="not a Pacemaker source tree"):
        pcmkbuild.parse_version(None, "AC_INIT([other], [1.0])")


def test_build_names_say_version_commit_and_a_digest_of_the_uncommitted_diff():
    c = "0a519a6e6b0123456789abcdef0123456789abcd"
    assert pcmkbuild.build_name("3.0.1", c, None, git=True) == "pcmk-3.0.1-0a519a6e6b"
    assert (
        pcmkbuild.build_name("3.0.1", c, "ffee" * 16, git=True)
        == "pcmk-3.0.1-0a519a6e6b-dffeeffeeff"
    )
    # A tree without git: the release's archive hash and a digest of the whole tree.
    assert pcmkbuild.build_name("2.1.5", "a3f44794f94", "12" * 32, git=False) == (
        "pcmk-2.1.5-a3f44794f9-t1212121212"
    )


@pytest.mark.parametrize("version", ["2.1.0", "2.1.5", "2.1.8", "3.0.0", "3.0.2"])
def test_configure_uses_debians_paths_and_multiarch_libdir_for_every_supported_version(version):
    args = pcmkbuild.configure_args(version, "x86_64-linux-gnu")
    for a in (
        "--prefix=/usr",
        "--sysconfdir=/etc",
        "--localstatedir=/var",
        "--libexecdir=/usr/lib",
        "--with-configdir=/etc/default",
        "--libdir=/usr/lib/x86_64-linux-gnu",
        "--with-corosync-conf=/etc/corosync/corosync.conf",
        "--with-systemdsystemunitdir=/lib/systemd/system",
        "--disable-static",
        "--with-cibsecrets",
        "PYTHON=/usr/bin/python3",
    ):
        assert a in args


def test_configure_refuses_trees_older_than_2_1():
    with pytest.raises(UsageError, match=r"older than 2\.1"):
        pcmkbuild.configure_args("2.0.5", "x86_64-linux-gnu")


def test_last_error_lines_prefer_the_compilers_error_over_makes():
    log = "\n".join(
        [
            "  CC       pacemaker-execd.o",
            "pacemaker-execd.c:513:5: error: expected ';' before 'crm_notice'",
            "  513 |     crm_notice(...)",
            "make[2]: *** [Makefile:900: pacemaker-execd.o] Error 1",
            "make: *** [all] Error 2",
        ]
    )
    line = pcmkbuild.last_error_lines(log)
    assert line.startswith("pacemaker-execd.c:513:5: error: expected ';'")
    assert "\n" not in line
    assert pcmkbuild.last_error_lines("a\nb\nmake: *** [all] Error 2\n").endswith("Error 2")


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_sync_copies_only_changed_files_and_keeps_build_products(tmp_path):
    src, dst, st = tmp_path / "src", tmp_path / "dst", tmp_path / "sync.json"
    _tree(src, {"configure.ac": "ac", "lib/a.c": "a1", "lib/b.c": "b1", ".git/HEAD": "x"})
    assert pcmkbuild.sync_tree(src, dst, st) == 3
    assert not (dst / ".git").exists()
    (dst / "lib/a.o").write_text("object")  # a build product
    old = (dst / "lib/b.c").stat().st_mtime_ns
    assert pcmkbuild.sync_tree(src, dst, st) == 0

    (src / "lib/a.c").write_text("a2")
    os.utime(src / "lib/a.c", (1, 1))  # an old time stamp must not hide the change
    (src / "lib/b.c").unlink()
    assert pcmkbuild.sync_tree(src, dst, st) == 2
    assert (dst / "lib/a.c").read_text() == "a2"
    assert (dst / "lib/a.c").stat().st_mtime > (dst / "lib/a.o").stat().st_mtime - 1
    assert not (dst / "lib/b.c").exists()
    assert (dst / "lib/a.o").read_text() == "object"
    assert old  # b.c had been left alone until it was removed


def _git(tree: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_identify_a_git_checkout_clean_then_dirty_then_with_an_untracked_file(tmp_path):
    tree = tmp_path / "pacemaker"
    _tree(tree, {"configure.ac": CONFIGURE_AC_GIT, "m4/version.m4": VERSION_M4, "lib/a.c": "1"})
    _git(tree, "init", "-q")
    _git(tree, "add", ".")
    _git(tree, "commit", "-q", "-m", "c")
    clean = pcmkbuild.identify(tree)
    assert clean.git and clean.version == "2.1.5" and len(clean.commit or "") == 40
    assert clean.dirty is None and clean.name == f"pcmk-2.1.5-{clean.commit[:10]}"  # type: ignore[index]

    (tree / "lib/a.c").write_text("2")
    dirty = pcmkbuild.identify(tree)
    assert dirty.commit == clean.commit and dirty.dirty
    assert dirty.name.startswith(clean.name + "-d")

    (tree / "lib/new.c").write_text("x")
    untracked = pcmkbuild.identify(tree)
    assert untracked.dirty != dirty.dirty
    # Build products an in-tree build left, ignored by git, are neither named nor synced.
    (tree / ".gitignore").write_text("*.o\n")
    _git(tree, "add", ".gitignore")
    _git(tree, "commit", "-q", "-m", "ignore")
    (tree / "lib/a.o").write_text("obj")
    files = [rel for rel, _ in pcmkbuild._walk_files(tree, git=True)]
    assert "lib/a.o" not in files and "lib/new.c" in files


def test_identify_a_tree_without_git_by_its_content(tmp_path):
    tree = tmp_path / "pacemaker-2.1.5"
    _tree(tree, {"configure.ac": CONFIGURE_AC_RELEASE, "m4/version.m4": VERSION_M4, "x.c": "1"})
    a = pcmkbuild.identify(tree)
    assert not a.git and a.commit == "a3f44794f94" and a.dirty
    (tree / "x.c").write_text("2")
    assert pcmkbuild.identify(tree).name != a.name


def test_identify_refuses_a_directory_that_is_no_pacemaker_tree(tmp_path):
    with pytest.raises(UsageError, match=r"no configure\.ac"):
        pcmkbuild.identify(tmp_path)


def test_node_version_parses_crm_mon_and_labctls_marker():
    xml = (
        '<pacemaker-result api-version="2.25" request="crm_mon --version --output-as=xml">\n'
        '  <version program="Pacemaker" version="2.1.5" author="x" build="a3f44794f94" '
        'features="cibsecrets"/>\n  <status code="0" message="OK"/>\n</pacemaker-result>\n'
    )
    dist = pcmk.parse_node_version(xml + "@@labctl@@\n")
    assert dist == pcmk.NodePacemaker("2.1.5", "a3f44794f94", "distribution")
    mark = json.dumps({"build": "pcmk-2.1.5-a3f44794f9-t0011223344"})
    own = pcmk.parse_node_version(xml + "@@labctl@@\n" + mark)
    assert own.source == "pcmk-2.1.5-a3f44794f9-t0011223344"
    assert pcmk.parse_node_version("crm_mon: not found\n@@labctl@@\n").version == ""


def test_status_notes_nodes_that_disagree_on_their_pacemaker():
    from labctl.lab import NodeStatus, pacemaker_disagreement

    def node(name: str, source: str, version: str = "2.1.5") -> NodeStatus:
        return NodeStatus(
            name, "cluster", "", "running", version=version, build="a3f4", source=source
        )

    same = [node("l-c1", "pcmk-x"), node("l-c2", "pcmk-x"), node("l-r1", "", version="")]
    assert pacemaker_disagreement(same) == ""  # a node that did not answer says nothing
    mixed = [node("l-c1", "pcmk-x"), node("l-c2", "distribution"), node("l-c3", "pcmk-x")]
    assert pacemaker_disagreement(mixed) == (
        "nodes disagree on their Pacemaker: 2.1.5 (a3f4, distribution) on l-c2; "
        "2.1.5 (a3f4, pcmk-x) on l-c1, l-c3"
    )


@pytest.mark.parametrize(
    "line, counts",
    [
        ("gcc -DHAVE_CONFIG_H -I. -c -o acl.o acl.c", True),
        ("libtool: compile:  gcc -DHAVE_CONFIG_H -I. -c acl.c  -fPIC -DPIC -o .libs/acl.o", True),
        ("/bin/bash ../../libtool  --tag=CC --mode=compile gcc -c -o acl.lo acl.c", False),
        ("libtool: link: gcc -shared -fPIC -o .libs/libcrmcommon.so.34", False),
        ("gcc -g -O2 -o crm_mon crm_mon.o -lcrmcommon", False),
        ("make[2]: Entering directory '/labctl/pacemaker/lib'", False),
        ("", False),
    ],
)
def test_a_compiler_run_is_the_compilers_own_line(line, counts):
    assert pcmkbuild.is_compiler_run(line) is counts


def test_the_tally_counts_what_the_log_gains_while_it_runs(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("gcc -c old.c\n")  # an earlier step's: not counted
    heard: list[int] = []
    with pcmkbuild._tally(log, heard.append), open(log, "a") as f:
        f.write("gcc -c a.c\nmake[1]: Entering\nlibtool: compile:  gcc -c b.c\n")
        f.flush()
        time.sleep(0.8)
        f.write("gcc -c c.c\n")
    assert heard[-1] == 3
