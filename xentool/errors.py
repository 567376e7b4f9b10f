"""xentool's errors: a small hierarchy, raised once where the cause is known, shown once at the top.

Hypervisor failures arrive as ``hypercalls.errors.XenError`` (op, errno, domid) and are usually
wrapped in one of these with the original as ``__cause__``, so the user reads what xentool was doing
and a script can still reach the errno.
"""

from __future__ import annotations

from dataclasses import dataclass


class XentoolError(Exception):
    """Root of xentool's own errors.  ``exit_code`` is what the CLI exits with (see README)."""

    exit_code = 1

    @property
    def where(self) -> str | None:
        """What the problem is in, when narrower than the command: a config's file:line:col, a
        domain (and its device), a cpupool.  The `where` of the CLI's errors as JSON."""
        return None


@dataclass(frozen=True)
class ConfigIssue:
    """One thing wrong in a config: where, which key, what, and what is accepted."""

    source: str  # file name, or "<dict>", "<command line>"
    line: int | None  # 1-based, None when the input had no positions (a dict from Python)
    column: int | None
    key_path: str  # "disks[1].vdev"; "" for the document itself
    message: str

    @property
    def location(self) -> str:
        """file:line:col, as far as known."""
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        key = f" {self.key_path}:" if self.key_path else ""
        return f"{self.location}:{key} {self.message}"


class ConfigError(XentoolError):
    """The guest config (file, dict or command-line override) is not valid: every issue at once."""

    exit_code = 2

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    @property
    def where(self) -> str | None:
        return self.issues[0].location if self.issues else None


class UsageError(XentoolError):
    """A command was called with arguments that cannot work (not a config file problem)."""

    exit_code = 2


class DomainNotFound(XentoolError):
    exit_code = 3

    def __init__(self, ref: str, obituary: str | None = None) -> None:
        self.ref = ref
        self.obituary = obituary  # why xentool ended it, when it did
        super().__init__(obituary or f"no domain {ref!r}; `xentool list` shows the domains there are")

    @property
    def where(self) -> str | None:
        return f"domain {self.ref}"


class NotDefined(DomainNotFound):
    """No defined guest of that name (`xentool define` keeps them)."""

    def __init__(self, name: str) -> None:
        self.ref = name
        self.obituary = None
        XentoolError.__init__(self, f"no defined guest {name!r}; `xentool list --all` shows them, "
                                    "`xentool define FILE` defines one")


class NameInUse(XentoolError):
    exit_code = 4

    def __init__(self, name: str, domid: int) -> None:
        self.name = name
        self.domid = domid
        super().__init__(f"a domain named {name!r} already exists (domain {domid}); pick another name or destroy it first")

    @property
    def where(self) -> str | None:
        return f"domain {self.name}"


class CreationError(XentoolError):
    """Creating a domain failed at ``step``; everything done before was undone."""

    exit_code = 5

    def __init__(self, name: str, step: str, cause: BaseException, leftovers: list[str] | None = None) -> None:
        self.name = name
        self.step = step
        self.leftovers = list(leftovers or [])
        self.__cause__ = cause
        tail = f"; and undoing failed: {'; '.join(self.leftovers)}" if self.leftovers else ""
        super().__init__(f"creating {name!r} failed at step {step!r}: {cause}{tail}")

    @property
    def where(self) -> str | None:
        return f"domain {self.name}"


class DomainOperationError(XentoolError):
    """A lifecycle operation on an existing domain failed (destroy, pause, mem-set, ...)."""

    exit_code = 5

    def __init__(self, op: str, domain: str, cause: BaseException | str) -> None:
        self.op = op
        self.domain = domain
        if isinstance(cause, BaseException):
            self.__cause__ = cause
        super().__init__(f"{op} of domain {domain} failed: {cause}")

    @property
    def where(self) -> str | None:
        return f"domain {self.domain}"


class MigrationError(XentoolError):
    """A migration that did not happen: it stopped at ``step`` (a phase of xentool.migration's
    protocol), and the message ends with where the guest is now."""

    exit_code = 5

    def __init__(self, name: str, step: str, problem: str, outcome: str) -> None:
        self.name = name
        self.step = step
        super().__init__(f"migration of {name} failed while {step}: {problem}; {outcome}")

    @property
    def where(self) -> str | None:
        return f"domain {self.name}"


class DeviceError(XentoolError):
    exit_code = 5

    def __init__(self, domain: str, device: str, message: str) -> None:
        self.domain = domain
        self.device = device
        super().__init__(f"domain {domain}, device {device}: {message}")

    @property
    def where(self) -> str | None:
        return f"domain {self.domain}, device {self.device}"


class BootloaderError(XentoolError):
    """pygrub (or the config's bootloader program) found nothing to boot on the guest's disk."""

    exit_code = 5

    def __init__(self, domain: str, disk: str, message: str) -> None:
        self.domain = domain
        self.disk = disk
        super().__init__(f"domain {domain}, disk {disk}: {message}")

    @property
    def where(self) -> str | None:
        return f"domain {self.domain}, disk {self.disk}"


class UnsupportedByHost(XentoolError):
    """The config asks for what this host's Xen cannot do (shadow paging on a Xen built without it)."""

    exit_code = 5

    def __init__(self, domain: str, message: str) -> None:
        self.domain = domain
        super().__init__(f"domain {domain}: {message}")

    @property
    def where(self) -> str | None:
        return f"domain {self.domain}"


class CpuPoolError(XentoolError):
    """A cpupool operation Xen refused, or one that would break a rule of pools."""

    exit_code = 5

    def __init__(self, pool: str, message: str) -> None:
        self.name = pool
        super().__init__(f"cpupool {pool}: {message}")

    @property
    def where(self) -> str | None:
        return f"cpupool {self.name}"


class WaitTimeout(XentoolError):
    """Something awaited did not happen in time; ``what`` says what was awaited."""

    exit_code = 6

    def __init__(self, what: str, seconds: float, hint: str = "") -> None:
        self.what = what
        self.seconds = seconds
        tail = f"; {hint}" if hint else ""
        super().__init__(f"timed out after {seconds:g} s waiting for {what}{tail}")


class NoHypervisor(XentoolError):
    """No backend could be opened (not a dom0, real backend missing, bad --connect)."""

    exit_code = 7


class LabError(XentoolError):
    """The Xen lab could not be started, reached or stopped."""

    exit_code = 8


class InsufficientMemory(XentoolError):
    """Seen before anything was made: the host's free memory is less than the guest needs."""

    exit_code = 5

    def __init__(self, name: str, needed_mib: int, free_mib: int) -> None:
        self.needed_mib = needed_mib
        self.free_mib = free_mib
        super().__init__(
            f"not enough free memory for {name!r}: it needs {needed_mib} MiB, the host has {free_mib} MiB free; "
            "lower `memory` or free some (`xentool list`, `xentool destroy`)"
        )


class GuestMemoryTooSmall(XentoolError):
    """The guest's own memory cannot hold what the builder loads into it (its unpacked kernel, its
    ramdisk, the initial page tables): libxenguest's page counts, said as the memory setting."""

    exit_code = 2

    def __init__(self, what: str, needed_mib: int, memory_mib: int) -> None:
        self.needed_mib = needed_mib
        super().__init__(f"memory: {memory_mib} MiB is too little to load this guest ({what}: the builder needed more "
                         f"than {needed_mib} MiB); give it more memory")


class RanOutOfMemory(XentoolError):
    """The builder or a restore failed midway because the host's memory went (another guest took
    it, or a migration's memory arrived on a host that had less than it seemed): said in MiB
    rather than as the errno libxenguest happened to fail with (ENOMEM, or EBUSY from a restore)."""

    exit_code = 5

    def __init__(self, what: str, needed_mib: int, available_mib: int) -> None:
        self.needed_mib = needed_mib
        self.available_mib = available_mib
        super().__init__(
            f"the host ran out of memory {what}: the guest needs {needed_mib} MiB and only {available_mib} MiB "
            "could be had; free memory on that host (`xentool list`, `xentool destroy`) and try again"
        )
