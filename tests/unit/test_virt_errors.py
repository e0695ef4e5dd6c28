"""libvirt errors become one line naming the call, the object and what to do."""

from __future__ import annotations

import ipaddress

import libvirt
import pytest

from labctl import virt
from labctl.errors import LabctlError, VirtError


def libvirt_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    e = libvirt.libvirtError(message)
    e.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return e


# What a call on a connection whose libvirtd went away says (seen on restarts).
DROPPED = libvirt_error(
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_FROM_RPC,
    "End of file while reading data: Input/output error",
)
CLOSED = libvirt_error(
    libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC, "internal error: client socket is closed"
)
REFUSED = libvirt_error(
    libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_FROM_DOMAIN, "XML error: bad memory size"
)


@pytest.mark.parametrize("err", [DROPPED, CLOSED])
def test_dropped_connection_is_named_as_such(err: libvirt.libvirtError) -> None:
    e = virt.translate(err, "defineXML", "domain he1-c1")
    assert isinstance(e, VirtError) and e.connection_lost
    text = str(e)
    assert text.startswith("libvirt defineXML of domain he1-c1 failed: ")
    assert "connection to libvirtd was lost" in text
    assert err.get_error_message() in text
    assert "labctl host check" in text
    assert "\n" not in text


def test_other_libvirt_errors_name_the_call_and_object() -> None:
    e = virt.translate(REFUSED, "create", "domain he1-c2")
    assert not e.connection_lost
    assert str(e) == (
        "libvirt create of domain he1-c2 failed: XML error: bad memory size "
        "(libvirtd's log may say more)"
    )


class _Conn:
    """Stands for a virConnect whose libvirtd has just gone away."""

    def __init__(self, err: libvirt.libvirtError) -> None:
        self.err = err

    def _raise(self, *_a: object) -> None:
        raise self.err

    defineXML = listAllDomains = listAllNetworks = listAllStoragePools = _raise
    networkDefineXML = storagePoolCreateXML = lookupByName = networkLookupByName = _raise
    storagePoolLookupByName = getURI = _raise


DOMAIN_XML = "<domain type='lxc'>\n  <name>he1-c1</name>\n</domain>"


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda c: virt.define_and_start(c, DOMAIN_XML), "defineXML of domain he1-c1"),
        (lambda c: virt.create_network(c, "<network><name>labctl-he1</name></network>"),
         "networkDefineXML/create of network labctl-he1"),
        (lambda c: virt.create_pool(c, "<pool><name>labctl-he1</name></pool>"),
         "storagePoolCreateXML of pool labctl-he1"),
        (lambda c: virt.remove_domain(c, "he1-c1"), "lookupByName of domain he1-c1"),
        (lambda c: virt.remove_network(c, "labctl-he1"), "networkLookupByName of network labctl-he1"),
        (lambda c: virt.remove_pool(c, "labctl-he1"), "of pool labctl-he1"),
        (lambda c: virt.lab_domains(c, "he1"), "listAllDomains of the libvirt connection"),
        (virt.lab_networks, "listAllNetworks"),
        (virt.network_subnets, "listAllNetworks"),
        (virt.lab_pools, "listAllStoragePools"),
    ],
)  # fmt: skip
def test_each_call_translates_a_dropped_connection(call, named: str) -> None:
    with pytest.raises(VirtError, match="connection to libvirtd was lost") as exc:
        call(_Conn(DROPPED))
    assert named in str(exc.value)
    assert exc.value.__cause__ is DROPPED  # --debug shows libvirt's own traceback


def test_start_failure_names_the_domain() -> None:
    class Dom:
        def name(self) -> str:
            return "he1-c1"

        def create(self) -> None:
            raise REFUSED

    class Conn:
        def defineXML(self, _xml: str) -> Dom:
            return Dom()

    with pytest.raises(VirtError, match=r"^libvirt create of domain he1-c1 failed: XML error"):
        virt.define_and_start(Conn(), DOMAIN_XML)


def test_escaped_libvirt_errors_are_still_translated_for_the_cli() -> None:
    e = virt.as_labctl_error(DROPPED)
    assert isinstance(e, LabctlError) and "connection to libvirtd was lost" in str(e)
    assert virt.as_labctl_error(ValueError("x")) is None


def test_closing_a_dropped_connection_does_not_raise() -> None:
    conn = libvirt.open("test:///default")
    conn.close()
    virt.close(conn)  # a second close fails in libvirt: never in a `finally`


def test_connection_block_error_is_not_replaced_by_its_close() -> None:
    with pytest.raises(KeyError), virt.connection("test:///default") as conn:
        conn.close()
        raise KeyError("the original")


class _Net:
    def __init__(self, name: str, xml: str | libvirt.libvirtError) -> None:
        self._name, self._xml = name, xml

    def name(self) -> str:
        return self._name

    def XMLDesc(self) -> str:
        if isinstance(self._xml, libvirt.libvirtError):
            raise self._xml
        return self._xml


class _Nets:
    def __init__(self, *nets: _Net) -> None:
        self.nets = list(nets)

    def getURI(self) -> str:
        return "lxc:///"

    def listAllNetworks(self) -> list[_Net]:
        return self.nets


def test_a_network_removed_while_subnets_are_listed_is_skipped() -> None:
    # Seen: another lab's `down` removed its network between listAllNetworks and
    # XMLDesc, and `up` of a second lab failed on "Network not found".
    gone = libvirt_error(
        libvirt.VIR_ERR_NO_NETWORK, libvirt.VIR_FROM_NETWORK, "Network not found: no network"
    )
    here = "<network><ip address='10.213.4.1' prefix='24'/></network>"
    conn = _Nets(_Net("labctl-gone", gone), _Net("labctl-here", here))
    assert virt.network_subnets(conn) == [ipaddress.IPv4Network("10.213.4.0/24")]  # type: ignore[arg-type]
    with pytest.raises(VirtError, match="XMLDesc of network labctl-bad"):
        virt.network_subnets(_Nets(_Net("labctl-bad", REFUSED)))  # type: ignore[arg-type]
