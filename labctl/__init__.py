"""labctl: throwaway Pacemaker test labs on one libvirt host.

As a library: `labctl.up(...)` makes a lab and returns a `labctl.Lab`; `labctl.Lab(name)`
is an existing one. See labctl.api.
"""

__version__ = "0.1.0"

from labctl.api import Lab, Node, Result, up  # after __version__: the CLI imports it
from labctl.errors import LabctlError, NotFoundError, UsageError

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
