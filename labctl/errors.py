"""One exception hierarchy; the CLI turns each into one line and an exit status."""


class LabctlError(Exception):
    """A failure the user can act on; the message says what to do."""

    exit_code = 1


class UsageError(LabctlError):
    """Bad input: nothing was created."""

    exit_code = 2


class HostError(LabctlError):
    """The host is not ready (libvirtd, packages, permissions)."""

    exit_code = 3


class NotFoundError(LabctlError):
    """A lab, node or image that does not exist."""

    exit_code = 4


class WaitTimeout(LabctlError):
    """An external wait passed its deadline."""

    exit_code = 5


class CommandError(LabctlError):
    """A command on a node or the host failed; carries the command and its output."""

    def __init__(self, where: str, command: str, status: int, stdout: str, stderr: str) -> None:
        self.where = where
        self.command = command
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr.strip() or stdout.strip()).splitlines()[-3:]
        detail = " | ".join(tail) if tail else "no output"
        super().__init__(f"{where}: `{command}` exited {status}: {detail}")


class CommandTimeout(WaitTimeout):
    """A command on a node or the host passed its deadline; names the command."""

    def __init__(
        self, where: str, command: str, timeout: float, hint: str = "", stopped: bool = True
    ) -> None:
        self.where = where
        self.command = command
        self.timeout = timeout
        text = f"{where}: `{command}` did not finish within {timeout:g} s"
        text += " and was stopped" if stopped else " (labctl stopped waiting for it)"
        super().__init__(f"{text}; {hint}" if hint else text)


class CommandStopped(LabctlError):
    """A command was stopped early because what it waits for cannot happen (its
    watch said why); the reason is the message."""


class VirtError(LabctlError):
    """A libvirt call failed; the message names the call and the object."""

    def __init__(self, message: str, connection_lost: bool = False) -> None:
        self.connection_lost = connection_lost
        super().__init__(message)
