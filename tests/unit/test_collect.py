"""`labctl collect`: what is taken from which node, and no secret in the archive."""

from __future__ import annotations

import io
import tarfile

import pytest

from labctl import collect
from labctl.errors import UsageError
from labctl.plan import make_plan
from labctl.spec import make_spec

PEM = (
    b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
    b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    b"QyNTUxOQAAACDx1yQy3WwJ2xgkJ7a9p1m0y3FzVYpTq8b1kq8C2nq8CgAAAJgAAAAAAAAA\n"
    b"-----END OPENSSH PRIVATE KEY-----\n"
)


def test_a_secret_whole_or_a_line_of_a_key_is_found():
    authkey = bytes(range(256))
    assert collect.holds_secret(b"x" + authkey + b"y", [authkey])
    line = PEM.splitlines()[1]
    assert collect.holds_secret(b"log: " + line + b" end", [PEM])
    assert not collect.holds_secret(b"-----BEGIN OPENSSH PRIVATE KEY-----", [PEM])
    assert not collect.holds_secret(b"journal text", [authkey, PEM, b""])


def test_the_archive_leaves_out_what_holds_a_secret_and_says_so(tmp_path):
    arc = collect.Archive()
    arc.add("c1/journal.txt", b"fine", [b"SECRET-BYTES-SECRET-BYTES-SECRET!"])
    arc.add(
        "c1/crm_report/x",
        b"..SECRET-BYTES-SECRET-BYTES-SECRET!..",
        [b"SECRET-BYTES-SECRET-BYTES-SECRET!"],
    )
    assert list(arc.members) == ["c1/journal.txt"]
    assert arc.left_out == ["c1/crm_report/x: holds a secret of the lab"]
    out = tmp_path / "e.tar.gz"
    collect.write_archive(arc, out, "MANIFEST TEXT\n")
    assert out.stat().st_mode & 0o777 == 0o600
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["MANIFEST", "c1/journal.txt"]
        manifest = tar.extractfile("MANIFEST")
        assert manifest is not None and manifest.read() == b"MANIFEST TEXT\n"


def test_cluster_nodes_give_cib_and_corosync_others_their_journal(tmp_path):
    p = make_plan(make_spec("ev", 1, mode="remote"), 1, tmp_path)
    c1, r1 = p.node("ev-c1"), p.node("ev-r1")
    names = [n for n, _ in collect.node_commands(c1, "2026-11-26 10:00:00 UTC")]
    assert {"journal.txt", "cib.xml", "corosync-cfgtool.txt", "corosync-quorumtool.txt"} <= set(
        names
    )
    remote = dict(collect.node_commands(r1, "-1h"))
    assert "cib.xml" not in remote and remote["journal.txt"].endswith("--since -1h")


def test_since_is_the_labs_creation_in_utc_or_what_is_given():
    assert collect.since_of("2026-11-26T21:05:07+00:00", None) == "2026-11-26 21:05:07 UTC"
    assert collect.since_of("2026-11-26T22:05:07+01:00", None) == "2026-11-26 21:05:07 UTC"
    assert collect.since_of("x", "-2h") == "-2h"
    with pytest.raises(UsageError):
        collect.since_of("x", "today\nrm -rf /")


def test_a_crm_report_tarball_is_taken_member_by_member():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        for name, data in (("r/cib.xml", b"<cib/>"), ("r/authkey", b"K" * 64)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    class Node:
        name = "ev-c1"

    class Conn:
        def run(self, command, check=True, timeout=0.0):
            class R:
                status = 0
                stdout = ""

            return R()

        def get(self, path):
            return buf.getvalue()

    arc = collect.Archive()
    collect._report(Conn(), Node(), "-1h", [b"K" * 64], arc)  # type: ignore[arg-type]
    assert list(arc.members) == ["ev-c1/crm_report/r/cib.xml"]
    assert arc.left_out == ["ev-c1/crm_report/r/authkey: holds a secret of the lab"]
