"""The lab's errors.  Every one is a :class:`xentool.errors.LabError` (exit code 8), shown as one line."""

from __future__ import annotations

from xentool.errors import LabError


class MissingTool(LabError):
    """A host program the lab needs is not installed; ``package`` is the Debian package that brings it."""

    def __init__(self, what: str, path: str, package: str) -> None:
        self.what = what
        self.path = path
        self.package = package
        super().__init__(f"{what} ({path}) is missing: install the Debian package {package} "
                         f"(`apt-get install {package}`, or `make setup`)")


class PackageFetchError(LabError):
    """A Debian package could not be downloaded or unpacked into the lab's cache."""

    def __init__(self, package: str, detail: str) -> None:
        self.package = package
        super().__init__(f"could not fetch the Debian package {package}: {detail}")


class NoDiskSpace(LabError):
    def __init__(self, where: str, needed_mib: int, free_mib: int) -> None:
        self.directory = where
        self.needed_mib = needed_mib
        self.free_mib = free_mib
        super().__init__(f"not enough disk space in {where}: the lab needs {needed_mib} MiB there, "
                         f"{free_mib} MiB are free")

    @property
    def where(self) -> str | None:
        return self.directory


class LabOwnedByOtherUser(LabError):
    def __init__(self, name: str, where: str, uid: int) -> None:
        self.uid = uid
        try:
            import pwd

            who = f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
        except (KeyError, ImportError):
            who = f"uid {uid}"
        super().__init__(f"lab {name!r} ({where}) belongs to user {who}, not to you; "
                         "use another --name or ask that user to run `xentool lab down`")


class LabNotRunning(LabError):
    def __init__(self, name: str, host: int = 1) -> None:
        self.name = name
        self.host = host
        flag = ("" if name == "default" else f" --name {name}") + (f" --hosts {host}" if host > 1 else "")
        which = f"lab {name!r}" + (f" host {host}" if host > 1 else "")
        super().__init__(f"{which} is not running; start it with `xentool lab up{flag}`")


class BootFailed(LabError):
    """dom0 did not become ready: QEMU failed, died, or the timeout passed.  ``serial_tail`` holds the
    last lines of the serial log, the only witness of what Xen and dom0 did."""

    def __init__(self, name: str, reason: str, serial_tail: list[str]) -> None:
        self.name = name
        self.reason = reason
        self.serial_tail = list(serial_tail)
        tail = " | ".join(line.strip() for line in serial_tail if line.strip())
        super().__init__(f"lab {name!r}: {reason}" + (f"; last lines of the serial log: {tail}" if tail else
                                                      "; the serial log is empty"))


class AgentError(LabError):
    """The agent in dom0 could not be reached or answered nonsense."""


class ExecTimeout(LabError):
    def __init__(self, argv: list[str], seconds: float) -> None:
        self.argv = list(argv)
        self.seconds = seconds
        super().__init__(f"`{' '.join(argv)}` in the lab's dom0 did not finish within {seconds:g} s (killed)")


__all__ = ["LabError", "MissingTool", "PackageFetchError", "NoDiskSpace", "LabOwnedByOtherUser",
           "LabNotRunning", "BootFailed", "AgentError", "ExecTimeout"]
