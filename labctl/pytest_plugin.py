"""pytest plugin: labs as fixtures (registered as `labctl` through pytest11).

Off unless used: it adds options and fixtures, and nothing happens until a test
asks for `labctl_lab`.

    def test_failover(labctl_lab):
        lab = labctl_lab(nodes=3, mode="guest")   # made once per session per parameters
        lab.run_all("crm_mon -1")

    @pytest.mark.labctl(reset=True)               # back to the state `up` left first
    def test_from_a_clean_start(labctl_lab):
        lab = labctl_lab(nodes=3, mode="guest")

Labs are made with the same parameters only once per session and handed to every
test that asks for them; all are taken down at the end of the session, also when
tests fail or the run is interrupted, unless `--labctl-keep`. The lab maker is
the `labctl_up` fixture (`labctl.up` by default): override it to wrap or fake it.
Not for pytest-xdist: each worker would make labs of its own.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest


class PoolLab(Protocol):
    name: str

    def reset(self) -> object: ...

    def down(self) -> object: ...


Maker = Callable[..., PoolLab]
Key = tuple[tuple[str, str], ...]


def params_key(params: dict[str, Any]) -> Key:
    """Parameters as a key: equal when the labs they make would be alike. Pure."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


@dataclass
class LabPool:
    """The session's labs by parameters; which of them a test has had already."""

    make: Maker
    prefix: str
    labs: dict[Key, PoolLab] = field(default_factory=dict)
    used: set[Key] = field(default_factory=set)
    _count: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def get(self, params: dict[str, Any], *, reset: bool) -> PoolLab:
        if "name" in params:
            raise pytest.UsageError(
                "labctl_lab names its labs itself (--labctl-prefix sets how they start)"
            )
        key = params_key(params)
        lab = self.labs.get(key)
        if lab is None:
            name = f"{self.prefix}{os.getpid() % 10000}x{next(self._count)}"
            lab = self.make(name=name, **params)
            self.labs[key] = lab
        elif reset and key in self.used:
            lab.reset()
        self.used.add(key)
        return lab

    def close(self, keep: bool) -> tuple[list[str], list[str]]:
        """Take every lab down (KEEP: none); (names kept, one line per failed down)."""
        if keep:
            return [lab.name for lab in self.labs.values()], []
        failed = []
        for lab in self.labs.values():
            try:
                lab.down()
            except Exception as e:  # every lab gets its down, whatever one of them does
                failed.append(f"{lab.name}: {e}")
        self.labs.clear()
        return [], failed


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labctl", "labctl labs as fixtures")
    group.addoption(
        "--labctl-keep",
        action="store_true",
        help="Leave the session's labs up at the end, for inspection (`labctl down NAME`).",
    )
    group.addoption(
        "--labctl-prefix",
        default="pt",
        help="How the names of the session's labs start (default: pt).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "labctl(reset=False): reset=True gives the test its lab as `up` left it "
        "(a lab an earlier test had is reset first)",
    )


@pytest.fixture(scope="session")
def labctl_up() -> Maker:
    """What makes a lab: labctl.up(name=..., **parameters). Override to wrap or fake it."""
    import labctl  # here, not at import: the plugin loads into every pytest session

    return labctl.up


@pytest.fixture(scope="session")
def labctl_pool(request: pytest.FixtureRequest, labctl_up: Maker) -> Iterator[LabPool]:
    pool = LabPool(labctl_up, request.config.getoption("--labctl-prefix"))
    yield pool
    keep = bool(request.config.getoption("--labctl-keep"))
    kept, failed = pool.close(keep)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for name in kept:
        if reporter is not None:
            reporter.write_line(f"labctl: kept lab {name} (`labctl down {name}` removes it)")
    if failed:
        raise RuntimeError("labctl: some labs were not taken down: " + "; ".join(failed))


@pytest.fixture
def labctl_lab(request: pytest.FixtureRequest, labctl_pool: LabPool) -> Callable[..., PoolLab]:
    """labctl_lab(**parameters of labctl.up) -> the session's lab of those parameters."""
    marker = request.node.get_closest_marker("labctl")
    reset = bool(marker and marker.kwargs.get("reset", False))

    def get(**params: Any) -> PoolLab:
        return labctl_pool.get(params, reset=reset)

    return get
