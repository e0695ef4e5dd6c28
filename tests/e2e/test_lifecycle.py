"""The lab lifecycle on a real libvirtd: up, reach every node, status, down, nothing left."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import paramiko
import pytest

from labctl import host
from labctl.xml import METADATA_NS

from .conftest import STATE_DIR, host_state, labctl, labctl_json


def _libvirt_lab_domains(lab: str) -> dict[str, str]:
    conn = libvirt.open("lxc:///")
    try:
        out = {}
        for d in conn.listAllDomains():
            try:
                meta = d.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
            except libvirt.libvirtError:
                continue
            if f'name="{lab}"' in meta:
                out[d.name()] = "running" if d.isActive() else "shut off"
        return out
    finally:
        conn.close()


def _ssh_by_name(lab: str, node: str, command: str) -> str:
    """SSH as a user would: by node name (libnss-libvirt), the lab's key, pinned host key."""
    addr = socket.gethostbyname(node)
    client = paramiko.SSHClient()
    client.load_host_keys(str(STATE_DIR / "labs" / lab / "ssh" / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        addr,
        username="root",
        key_filename=str(STATE_DIR / "labs" / lab / "ssh" / "id_ed25519"),
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    try:
        _in, out, _err = client.exec_command(command)
        return out.read().decode().strip()
    finally:
        client.close()


def _each_systemd_keeps_to_its_own_cgroups(lab: str, names: list[str]) -> None:
    """Every node's systemd has its container's own group as its root, and a
    daemon-reload in every node leaves an empty group beside theirs alone (from
    the shared root, containers' systemd removed other containers' new groups,
    and libvirt failed their starts: docs/host.md, "Many containers on one host")."""
    for node in names:
        lines = {
            ctl: path
            for line in _ssh_by_name(lab, node, "cat /proc/1/cgroup").split()
            for ctl, path in [line.split(":", 2)[1:]]
            for ctl in ctl.split(",")
        }
        own = lines["cpu"]
        assert own.startswith("/machine/lxc-") and own.endswith(f"-{node}.libvirt-lxc")
        assert lines["name=systemd"] == f"{own}/init.scope"
        assert lines["memory"] == f"{own}/init.scope"  # the domain's memory limit holds
    # The host's view of libvirt's partition in the cpu hierarchy.
    conn = libvirt.open("lxc:///")
    try:
        controller = conn.lookupByName(names[0]).ID()  # libvirt_lxc's PID
    finally:
        conn.close()
    cpu = next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{controller}/cgroup").read_text().splitlines()
        if "cpu" in line.split(":")[1].split(",")
    )
    probe = Path("/sys/fs/cgroup/cpu") / cpu.lstrip("/") / ".." / f"labctl-probe-{lab}"
    probe = probe.resolve()
    probe.mkdir()
    try:
        for node in names:
            _ssh_by_name(lab, node, "systemctl daemon-reload")
        assert probe.is_dir()
    finally:
        probe.rmdir()


def test_up_three_nodes_ssh_by_name_status_agrees_with_libvirt_then_down_leaves_nothing(
    labs, before
):
    lab = labs.name()
    up = labctl_json("up", "--nodes", "3", "--name", lab)
    names = [n["name"] for n in up["nodes"]]
    assert names == [f"{lab}-c1", f"{lab}-c2", f"{lab}-c3"]

    for node in names:
        assert _ssh_by_name(lab, node, "hostname") == node
        # The node's own view: systemd up, its fixed address on eth0.
        ip = next(n["ip"] for n in up["nodes"] if n["name"] == node)
        assert f"inet {ip}/24" in _ssh_by_name(lab, node, "ip -4 addr show eth0")

    if host.cgroup_layout() == "hybrid":  # CI's machines are
        _each_systemd_keeps_to_its_own_cgroups(lab, names)

    st = labctl_json("status", lab)
    assert {n["name"]: n["domain"] for n in st["nodes"]} == _libvirt_lab_domains(lab)
    assert all(n["domain"] == "running" for n in st["nodes"])
    assert lab in [s["name"] for s in labctl_json("list")]

    labctl("down", lab)
    assert host_state() == before
    # Idempotent: a second down finds nothing and succeeds.
    assert "nothing left" in labctl("down", lab).stdout


def test_down_after_sigkill_half_way_through_up_leaves_nothing(labs, before):
    lab = labs.name()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labctl", "up", "--nodes", "3", "--name", lab],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not _libvirt_lab_domains(lab):
        assert proc.poll() is None, "up ended before any domain existed"
        assert time.monotonic() < deadline, "no domain appeared within 60 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert host_state() != before  # something really was left half-made

    labctl("down", lab)
    assert host_state() == before


def test_down_works_when_the_lab_record_and_keys_are_deleted(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "2", "--name", lab)
    lab_dir = STATE_DIR / "labs" / lab
    for p in (lab_dir / "lab.json", lab_dir / "authkey"):
        p.unlink()
    subprocess.run(["rm", "-rf", str(lab_dir / "ssh")], check=True)

    assert lab in [s["name"] for s in labctl_json("list")]
    labctl("down", lab)
    assert host_state() == before


def test_two_labs_at_once_do_not_disturb_each_other(labs, before):
    a, b = labs.name(), labs.name()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "labctl", "up", "--nodes", "2", "--name", n, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (a, b)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    sa, sb = labctl_json("status", a), labctl_json("status", b)
    assert sa["subnet"] != sb["subnet"]
    assert sa["network"] != sb["network"]

    labctl("down", a)
    # b is untouched by a's removal.
    assert all(n["domain"] == "running" for n in labctl_json("status", b)["nodes"])
    assert _ssh_by_name(b, f"{b}-c2", "hostname") == f"{b}-c2"
    labctl("down", b)
    assert host_state() == before


def test_two_ups_of_one_name_at_once_one_wins_the_other_says_so_and_touches_nothing(labs, before):
    name = labs.name()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "labctl", "up", "--nodes", "1", "--no-fencing", "--name", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.communicate()[1]) for p in procs]
    codes = sorted(rc for rc, _ in results)
    # The loser is refused while the winner holds the lab's lock (6), or finds the
    # lab there once it is done (2); either way one line, and the lab untouched.
    assert codes[0] == 0 and codes[1] in (2, 6), results
    loser = next(err for rc, err in results if rc != 0)
    assert loser.strip().splitlines()[-1].startswith("labctl:"), loser
    assert "busy" in loser or "already exists" in loser, loser
    s = labctl_json("status", name)
    assert [n["pacemaker"] for n in s["nodes"]] == ["Online"]  # type: ignore[index]
    labctl("down", name)
    assert host_state() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "at least 1"),
        (["--nodes", "901", "--mode", "guest"], "above 900 guest nodes"),
        (["--name", "Bad_Name"], "host name label"),
        (["--image", "nosuch"], "unknown image"),
        (["--mode", "mesh"], "unknown mode"),
        # Brackets in a message are text, not terminal markup.
        (["--image", "/tmp/[/x]/c.qcow2"], "--image /tmp/[/x]/c.qcow2 is a disk image"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(before, args, message):
    proc = labctl("up", "--name", "badinput", *args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert host_state() == before


def test_existing_lab_name_is_refused_and_the_lab_is_untouched(labs, before):
    lab = labs.name()
    labctl("up", "--nodes", "1", "--name", lab)
    made = host_state()
    proc = labctl("up", "--nodes", "1", "--name", lab, check=False)
    assert proc.returncode == 2
    assert "already exists" in proc.stderr
    assert host_state() == made
    labctl("down", lab)
    assert host_state() == before
