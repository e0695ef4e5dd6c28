"""Names and paths read back from libvirt are not trusted: `list` and `down --all`
against libvirt's test:///default driver, with objects no labctl made."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest
from typer.testing import CliRunner

from labctl import virt
from labctl.cli import app
from labctl.xml import METADATA_NS

TEST = "test:///default"

FOREIGN_NET = """<network>
  <name>labctl-..</name>
  <bridge name='hpforeign0'/>
  <ip address='192.0.2.1' netmask='255.255.255.240'/>
</network>"""

TEST_DOMAIN = """<domain type='test'>
  <name>{name}</name>
  <memory>65536</memory>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture
def conn(monkeypatch):
    # Every connection labctl opens goes to the in-process test driver.
    monkeypatch.setattr(virt, "LXC_URI", TEST)
    monkeypatch.setattr(virt, "QEMU_URI", TEST)
    monkeypatch.delenv("LABCTL_LXC_URI", raising=False)
    monkeypatch.delenv("LABCTL_QEMU_URI", raising=False)
    c = libvirt.open(TEST)
    before_nets = set(c.listNetworks()) | set(c.listDefinedNetworks())
    before_doms = {d.name() for d in c.listAllDomains()}
    yield c
    # test:///default is shared by the whole process: leave it as it was found.
    for d in c.listAllDomains():
        if d.name() not in before_doms:
            if d.isActive():
                d.destroy()
            if d.isPersistent():
                d.undefine()
    for n in c.listAllNetworks():
        if n.name() not in before_nets:
            if n.isActive():
                n.destroy()
            n.undefine()
    c.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state directory holding an image, a cache file and one lab directory."""
    d = tmp_path / "state"
    (d / "images/debian12").mkdir(parents=True)
    (d / "images/debian12/manifest.json").write_text("{}\n")
    (d / "cache").mkdir()
    (d / "cache/precious").write_text("keep\n")
    (d / "labs/hpown").mkdir(parents=True)
    (d / "labs/hpown/lab.json").write_text("not json\n")
    return d


def _domain(conn, name: str, lab: str, state_dir: str) -> None:
    dom = conn.defineXML(TEST_DOMAIN.format(name=name))
    meta = f'<lab name="{lab}" role="cluster" node="{name}" state-dir="{state_dir}"/>'
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta, "labctl", METADATA_NS)
    dom.create()


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_list_reports_a_network_named_dotdot_as_foreign(conn, state_dir):
    conn.networkDefineXML(FOREIGN_NET)
    r = _run("list", "--state-dir", str(state_dir))
    assert r.exit_code == 0, r.output
    assert "labctl-.." in r.stderr and "foreign" in r.stderr
    assert "\u2502 .. " not in r.stdout  # no table row for a lab called '..'


def test_down_all_with_network_dotdot_keeps_the_state_dir(conn, state_dir):
    conn.networkDefineXML(FOREIGN_NET)
    keep = _files(state_dir) - {"labs/hpown", "labs/hpown/lab.json"}
    r = _run("down", "--all", "--state-dir", str(state_dir))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    assert r.exit_code == 0, r.output
    assert _files(state_dir) == keep  # only the state dir's own lab is gone
    assert "labctl-.." in conn.listDefinedNetworks()  # not labctl's: left alone
    assert "foreign" in r.stderr


def test_down_all_with_domain_metadata_dotdot_removes_nothing_of_it(conn, state_dir, tmp_path):
    victim = tmp_path / "victim"
    (victim / "labs").mkdir(parents=True)
    (victim / "precious").write_text("keep\n")
    _domain(conn, "hpdot-c1", "..", str(victim))
    r = _run("down", "--all", "--state-dir", str(state_dir))
    assert r.exit_code == 0, r.output
    assert (victim / "precious").read_text() == "keep\n"
    assert (state_dir / "cache/precious").is_file()
    assert "hpdot-c1" in [d.name() for d in conn.listAllDomains()]


def test_down_all_leaves_labs_of_another_state_dir(conn, state_dir, tmp_path):
    other = tmp_path / "other"
    (other / "labs/hpx").mkdir(parents=True)
    (other / "labs/hpx/precious").write_text("keep\n")
    _domain(conn, "hpx-c1", "hpx", str(other))
    r = _run("down", "--all", "--state-dir", str(state_dir))
    assert r.exit_code == 0, r.output
    assert (other / "labs/hpx/precious").is_file()
    assert "hpx-c1" in [d.name() for d in conn.listAllDomains()]
    assert "hpx" in r.stderr


@pytest.mark.parametrize("meta_dir", ["/", "{tmp}/other/x/..", "relative/dir"])
def test_down_by_name_ignores_an_odd_state_dir_in_metadata(conn, state_dir, tmp_path, meta_dir):
    other = tmp_path / "other"
    (other / "labs/hpy").mkdir(parents=True)
    (other / "labs/hpy/precious").write_text("keep\n")
    (other / "x").mkdir()
    _domain(conn, "hpy-c1", "hpy", meta_dir.format(tmp=tmp_path))
    r = _run("down", "hpy", "--state-dir", str(state_dir))
    assert r.exit_code == 0, r.output
    assert (other / "labs/hpy/precious").is_file()
    assert "hpy-c1" not in [d.name() for d in conn.listAllDomains()]  # its own domain: removed


def test_down_by_name_still_removes_the_lab_dir_its_domains_name(conn, state_dir, tmp_path):
    other = tmp_path / "other"
    (other / "labs/hpz").mkdir(parents=True)
    _domain(conn, "hpz-c1", "hpz", str(other))
    r = _run("down", "hpz", "--state-dir", str(state_dir))
    assert r.exit_code == 0, r.output
    assert not (other / "labs/hpz").exists()
    assert (other / "labs").is_dir()


def test_down_refuses_a_lab_dir_that_is_a_symlink(conn, state_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep\n")
    (state_dir / "labs/hplink").symlink_to(outside)
    r = _run("down", "hplink", "--state-dir", str(state_dir))
    assert r.exit_code != 0
    assert "symbolic link" in r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    assert (outside / "precious").is_file()
