"""A libvirtd that goes away in the middle of `up`: a clean rollback, the original error reported.

The shared libvirtd is never restarted: the node's libvirt call fails in-process with
what labctl raises when libvirtd drops the connection (an RPC-layer libvirtError).
"""

from __future__ import annotations

import libvirt
import pytest

from labctl import lab, virt
from labctl.errors import VirtError
from labctl.spec import make_spec

from .conftest import STATE_DIR, host_state, labctl


def _dropped(call: str = "defineXML", obj: str = "domain (the first node)") -> VirtError:
    e = libvirt.libvirtError("End of file while reading data: Input/output error")
    e.err = (
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_FROM_RPC,
        "End of file while reading data: Input/output error",
        libvirt.VIR_ERR_ERROR,
        None,
        None,
        None,
        -1,
        -1,
    )
    return virt.translate(e, call, obj)


def test_libvirtd_gone_mid_up_rolls_back_and_reports_the_original(
    labs, before, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = labs.name()
    original = _dropped()

    def define_and_start(_conn: object, _xml: str) -> None:
        raise original

    monkeypatch.setattr(virt, "define_and_start", define_and_start)
    with pytest.raises(VirtError) as exc:
        lab.up(make_spec(name, 1, fencing=False), STATE_DIR)
    assert exc.value is original
    assert not getattr(exc.value, "__notes__", None)  # the rollback worked
    assert host_state() == before


def test_failed_rollback_does_not_hide_the_original_error(
    labs, before, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = labs.name()
    original = _dropped()

    def define_and_start(_conn: object, _xml: str) -> None:
        raise original

    def down_while_libvirtd_is_still_gone(*_a: object, **_k: object) -> None:
        raise _dropped("listAllDomains", "lxc:///")

    monkeypatch.setattr(virt, "define_and_start", define_and_start)
    monkeypatch.setattr(lab, "_down", down_while_libvirtd_is_still_gone)
    with pytest.raises(VirtError) as exc:
        lab.up(make_spec(name, 1, fencing=False), STATE_DIR)
    assert exc.value is original
    (note,) = exc.value.__notes__
    assert note.startswith("rollback failed too: libvirt listAllDomains of lxc:/// failed")
    assert note.endswith(f"`labctl down {name}` removes what is left")
    monkeypatch.undo()
    labctl("down", name, "--state-dir", str(STATE_DIR))
    assert host_state() == before


def test_kept_failed_lab_with_a_full_disk_still_reports_the_original(
    labs, before, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from labctl import state

    name = labs.name()
    original = _dropped()
    real_write = state.write_record

    def define_and_start(_conn: object, _xml: str) -> None:
        raise original

    def write_record(p: object, status: str, **kw: object) -> state.LabRecord:
        if status == "failed":
            raise OSError(errno.ENOSPC, "No space left on device", "lab.json")
        return real_write(p, status, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(virt, "define_and_start", define_and_start)
    monkeypatch.setattr(state, "write_record", write_record)
    with pytest.raises(VirtError) as exc:
        lab.up(make_spec(name, 1, fencing=False), STATE_DIR, keep_on_failure=True)
    assert exc.value is original
    assert exc.value.__notes__ == [
        "recording the lab as failed failed too: [Errno 28] No space left on device: 'lab.json'"
    ]
    monkeypatch.undo()
    labctl("down", name, "--state-dir", str(STATE_DIR))
    assert host_state() == before
