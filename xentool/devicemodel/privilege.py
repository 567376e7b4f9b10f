"""How little QEMU may do: libxl's dm_restrict (docs/features/qemu-deprivilege.pandoc), by default.

A restricted QEMU
- runs as an unprivileged user once it has opened its disks, taps and sockets (``-runas``): the
  config's ``device_model.user``, else libxl's ``xen-qemuuser-range-base`` (uid base + domid, one
  user per guest) or ``xen-qemuuser-shared``, which `make setup` creates;
- may use its privcmd and event-channel handles for its own guest only (``-xen-domid-restrict``),
  and has no xenstore, so it is started with ``-S`` and reports readiness over QMP (``prelaunch``);
- is chrooted to an empty directory (``-chroot``), in its own mount and IPC namespaces, with
  libxl's resource limits (no core files, no locks, no locked memory, files of at most 256 KiB).

Only ``device_model.privileged: true`` runs QEMU as root with all of Xen: the config says so.
"""

from __future__ import annotations

import functools
import os
import pwd
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xentool.errors import DeviceError

if TYPE_CHECKING:  # the config model is not loaded to stop or destroy a guest's QEMU
    import ctypes

    from xentool.config import GuestConfig

RANGE_BASE_USER = "xen-qemuuser-range-base"
SHARED_USER = "xen-qemuuser-shared"
CHROOT_BASE = "/var/run/xen"  # libxl__run_dir_path: /var/run/xen/qemu-root-<domid>

RLIMIT_LOCKS = 10  # <sys/resource.h> on Linux; Python's resource module does not name it
# libxl_linux.c: libxl__local_dm_preexec_restrict
RLIMITS = {
    resource.RLIMIT_FSIZE: 256 * 1024,
    resource.RLIMIT_CORE: 0,
    resource.RLIMIT_MSGQUEUE: 0,
    RLIMIT_LOCKS: 0,
    resource.RLIMIT_MEMLOCK: 0,
}


@dataclass(frozen=True)
class Privilege:
    restricted: bool
    runas: str | None = None  # "user" or "uid:gid" for -runas
    chroot: str | None = None

    def argv(self) -> list[str]:
        args: list[str] = []
        if self.restricted:
            args += ["-xen-domid-restrict", "-chroot", self.chroot or "/", "-S"]
        if self.runas:
            args += ["-runas", self.runas]
        return args


def choose_privilege(config: GuestConfig, domid: int) -> Privilege:
    dm = config.device_model
    if dm and dm.privileged:
        return Privilege(restricted=False, runas=dm.user)
    return Privilege(restricted=True, runas=_unprivileged_user(config, domid),
                     chroot=f"{CHROOT_BASE}/qemu-root-{domid}")


def _unprivileged_user(config: GuestConfig, domid: int) -> str:
    """libxl__domain_get_device_model_uid: the config's user, else one uid per guest from the
    range, else the shared user; never root."""
    dm = config.device_model
    if dm and dm.user:
        try:
            entry = pwd.getpwnam(dm.user)
        except KeyError:
            raise DeviceError(config.name, "device model", f"device_model.user {dm.user!r} does not exist; "
                              "create it or leave device_model.user unset") from None
        if entry.pw_uid == 0:
            raise DeviceError(config.name, "device model", f"device_model.user {dm.user!r} is root; "
                              "give an unprivileged user, or set device_model.privileged: true")
        return dm.user
    try:
        base = pwd.getpwnam(RANGE_BASE_USER)
        return f"{base.pw_uid + domid}:{base.pw_gid}"
    except KeyError:
        pass
    try:
        pwd.getpwnam(SHARED_USER)
        return SHARED_USER
    except KeyError:
        raise DeviceError(
            config.name, "device model",
            f"no unprivileged user to run QEMU as: create one (adduser --system --group --no-create-home "
            f"{SHARED_USER}, which `make setup` does), or set device_model.privileged: true",
        ) from None


def prepare_chroot(privilege: Privilege) -> None:
    """An empty directory nobody may enter (libxl removes and recreates it at each start)."""
    if privilege.restricted:
        libc()  # for restrict_this_process, in the child QEMU will be
    if privilege.chroot:
        path = Path(privilege.chroot)
        if path.is_dir():
            path.rmdir()  # empty, or it is not ours: then fail rather than chroot QEMU there
        path.mkdir(mode=0o000, parents=True)


def remove_chroot(domid: int) -> None:
    try:
        os.rmdir(f"{CHROOT_BASE}/qemu-root-{domid}")
    except (FileNotFoundError, NotADirectoryError):
        pass


CLONE_NEWNS = 0x00020000  # <sched.h>; os.unshare arrives only with Python 3.12
CLONE_NEWIPC = 0x08000000


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, for unshare().  Loaded by the parent (prepare_chroot), not in the child:
    loading it after the fork would cost each QEMU start.  Imported here, not at the top: `list`
    and `destroy` import this module (to remove a QEMU's chroot) and need no ctypes (2 ms to
    import here, many times that in the lab's dom0, where Python runs under TCG)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def restrict_this_process() -> None:  # pragma: no cover - runs in QEMU's child before exec
    """What libxl does in the child before exec'ing a restricted QEMU."""
    if libc().unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0:
        import ctypes  # the parent's libc() imported it: a lookup in sys.modules

        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS|CLONE_NEWIPC)")
    for limit, value in RLIMITS.items():
        resource.setrlimit(limit, (value, value))


__all__ = ["Privilege", "choose_privilege", "prepare_chroot", "remove_chroot", "restrict_this_process"]
