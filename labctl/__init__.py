"""labctl: throwaway Pacemaker test labs on one libvirt host.

As a library: `labctl.up(...)` makes a lab and returns a `labctl.Lab`; `labctl.Lab(name)`
is an existing one. See labctl.api.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Imported on first use: `import labctl` (its pytest plugin is loaded into every
# pytest session of an environment that has labctl) must not load libvirt.
_LAZY = {
    "Lab": "labctl.api",
    "Node": "labctl.api",
    "Result": "labctl.api",
    "up": "labctl.api",
    "LabctlError": "labctl.errors",
    "NotFoundError": "labctl.errors",
    "UsageError": "labctl.errors",
}

__all__ = [
    "Lab",
    "LabctlError",
    "Node",
    "NotFoundError",
    "Result",
    "UsageError",
    "__version__",
    "up",
]

if TYPE_CHECKING:
    from labctl.api import Lab, Node, Result, up
    from labctl.errors import LabctlError, NotFoundError, UsageError


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labctl' has no attribute {name!r}")
