"""`labctl collect`: the evidence a Pacemaker developer asks for after a failure, in one
archive: per node the journal, crm_report's own report (cluster nodes, each with
`--single-node`: the nodes have no SSH to each other), the CIB, corosync's runtime
view, core dumps; and labctl's record of the lab.

No secret of the lab goes in: every file is checked for the bytes of the lab's
authkey, corosync key, fence key and SSH private keys (the lab's, and the host keys
labctl gave the nodes) before it is added, and left out, with a line in the
archive's MANIFEST saying so, when it holds one.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shlex
import tarfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from labctl import lab, ssh, state, virt
from labctl.errors import LabctlError, UsageError
from labctl.plan import QDEVICE_PACKAGE, LabPlan, NodePlan

REPORT_TIMEOUT = 300.0
MAX_CORE_BYTES = 256 * 1024 * 1024
CORE_DIRS = ("/var/lib/pacemaker/cores", "/var/lib/systemd/coredump")
LOG_TAIL = 1024 * 1024  # of a libvirt domain log: it grows with every start


@dataclass
class Archive:
    """What goes in, by name; what was left out, and why."""

    members: dict[str, bytes] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)  # nodes add at once

    def add(self, name: str, data: bytes, secrets: Iterable[bytes]) -> None:
        secret = holds_secret(data, secrets)
        with self.lock:
            if secret:
                self.left_out.append(f"{name}: holds a secret of the lab")
            else:
                self.members[name] = data

    def note(self, text: str) -> None:
        with self.lock:
            self.left_out.append(text)


def holds_secret(data: bytes, secrets: Iterable[bytes]) -> bool:
    """Whether DATA contains any of SECRETS (each whole, and each line of a text key:
    a PEM key quoted line by line is still the key). Pure."""
    for s in secrets:
        if not s:
            continue
        if s in data:
            return True
        lines = [ln.strip() for ln in s.splitlines() if len(ln.strip()) >= 32]
        if any(ln in data for ln in lines if not ln.startswith(b"-----")):
            return True
    return False


def node_commands(node: NodePlan, since: str) -> list[tuple[str, str]]:
    """(file name, command) of what is taken from NODE as text; pure."""
    q = shlex.quote(since)
    out = [
        ("journal.txt", f"journalctl --no-pager -o short-iso-precise --since {q}"),
        ("cores.txt", f"ls -la {' '.join(CORE_DIRS)} 2>&1"),
    ]
    if node.role == "qnetd":
        return [*out, ("corosync-qnetd-tool.txt", "corosync-qnetd-tool -l -v 2>&1")]
    out.append(("crm_mon.txt", "crm_mon --one-shot --inactive --show-detail 2>&1"))
    if node.role == "cluster":
        out += [
            ("cib.xml", "cibadmin --query 2>&1"),
            ("corosync-cfgtool.txt", "corosync-cfgtool -s 2>&1"),
            ("corosync-quorumtool.txt", "corosync-quorumtool -s 2>&1"),
        ]
    if node.role == "cluster" and QDEVICE_PACKAGE in node.packages:
        out.append(("corosync-qdevice-tool.txt", "corosync-qdevice-tool -s -v 2>&1"))
    return out


def since_of(created: str, given: str | None) -> str:
    """journalctl's --since: GIVEN, else when the lab was made (its record's UTC time)."""
    if given:
        if not given.strip() or any(c in given for c in "\n\0"):
            raise UsageError(f"--since {given!r}: give a time journalctl takes, e.g. '-1h'")
        return given
    when = dt.datetime.fromisoformat(created).astimezone(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def lab_secrets(p: LabPlan) -> list[bytes]:
    """The bytes no archive may hold: whatever of them is on the host."""
    paths = [p.authkey, p.dir / "corosync-authkey", p.dir / "fence_xvm.key", p.private_key]
    paths += [n.upper / "etc/ssh" / f"ssh_host_{t}_key" for n in p.all_nodes for t in ("ed25519",)]
    out = []
    for path in paths:
        try:
            out.append(path.read_bytes())
        except OSError:
            continue
    return out


def _from_node(p: LabPlan, node: NodePlan, since: str, secrets: list[bytes], arc: Archive) -> None:
    prefix = f"{node.name}/"
    try:
        with lab.connect(p, node) as c:
            for name, command in node_commands(node, since):
                r = c.run(command, check=False, timeout=120.0)
                arc.add(prefix + name, (r.stdout + r.stderr).encode(), secrets)
            cores = c.run(
                f"find {' '.join(CORE_DIRS)} -type f -size -{MAX_CORE_BYTES // 1024}k 2>/dev/null",
                check=False,
            ).stdout.split()
            for core in cores:
                arc.add(prefix + "cores/" + os.path.basename(core), c.get(core), secrets)
            if node.role == "cluster":
                _report(c, node, since, secrets, arc)
    except LabctlError as e:
        arc.note(f"{node.name}: {e}")


def _report(
    c: ssh.Connection, node: NodePlan, since: str, secrets: list[bytes], arc: Archive
) -> None:
    dest = f"/tmp/labctl-report-{node.name}"
    r = c.run(
        f"rm -rf {dest} {dest}.tar.bz2; crm_report --single-node --from {shlex.quote(since)} "
        f"--dest {dest} >/dev/null 2>&1; ls {dest}.tar.bz2",
        check=False,
        timeout=REPORT_TIMEOUT,
    )
    if r.status != 0:
        arc.note(f"{node.name}/crm_report: crm_report made no report")
        return
    data = c.get(f"{dest}.tar.bz2")
    c.run(f"rm -rf {dest} {dest}.tar.bz2", check=False)
    # Member by member, so that a file of it holding a secret can be left out alone.
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:bz2") as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                arc.add(f"{node.name}/crm_report/{m.name}", f.read(), secrets)


def write_archive(arc: Archive, out: Path, manifest: str) -> None:
    """ARC as a gzip'd tar at OUT, readable by its owner only (journals hold host names,
    addresses, commands)."""
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            items = [("MANIFEST", manifest.encode()), *sorted(arc.members.items())]
            for name, data in items:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o600
                tar.addfile(info, io.BytesIO(data))
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def collect(name: str, state_dir: Path, out: Path | None = None, since: str | None = None) -> Path:
    """Take everything into one archive (default: LAB-evidence-TIME.tar.gz here)."""
    p = lab.load_plan(name, state_dir)
    rec = state.read_record(state_dir, name)
    assert rec is not None
    since_arg = since_of(rec.created, since)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out or Path(f"{name}-evidence-{stamp}.tar.gz")
    secrets = lab_secrets(p)
    arc = Archive()
    arc.add("labctl/lab.json", p.record.read_bytes(), secrets)
    # libvirtd's own account of each domain (its starts, and why a start failed).
    for log in virt.domain_log_paths(name, [n.name for n in p.all_nodes]):
        arc.add(f"{log.stem}/libvirt-{log.parent.name}.log", log.read_bytes()[-LOG_TAIL:], secrets)
    lab.parallel(lambda n: _from_node(p, n, since_arg, secrets, arc), list(p.all_nodes))
    manifest = "\n".join(
        [
            f"labctl collect of lab {name} at {stamp}, since {since_arg}",
            *(f"left out: {x}" for x in arc.left_out),
            *sorted(arc.members),
        ]
    )
    write_archive(arc, out, manifest + "\n")
    return out
