"""The bootloader step of a PV or PVH guest with ``bootloader: pygrub`` (or another program): run
it on the guest's first disk once the domain exists (its uid comes from the domid, as libxl's
does), before the build, which then loads the kernel and initramfs it extracted.  The extracted
files go once the builder has read them (the build step's :class:`RemoveBootFiles`), or when the
creation is undone.

``bootloader: pvgrub`` needs no step: PVGRUB2's image is the kernel the builder loads
(:func:`boot_image`), and it reads the guest's disk from inside the guest.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import Hypervisor, XenStore
from xentool.bootloader import boot_disk, bootloader_program, pvgrub_image, remove_boot_files, run_bootloader
from xentool.config import GuestConfig
from xentool.config.model import PVGRUB
from xentool.create.plan import Bindings, Op, Step


def runs_a_bootloader(config: GuestConfig) -> bool:
    """Whether dom0 runs a program to find the kernel (pygrub), rather than the config naming it."""
    return config.bootloader is not None and config.bootloader != PVGRUB


def boot_image(config: GuestConfig) -> str | None:
    """The kernel the builder loads, as the config says (None: the bootloader step finds it)."""
    if config.bootloader == PVGRUB:
        return pvgrub_image(config.type)
    if runs_a_bootloader(config):
        return None  # config.kernel is a path inside the guest's disk, for pygrub
    return config.kernel


@dataclass(frozen=True)
class RunBootloader(Op):
    config: GuestConfig

    def describe(self) -> str:
        c = self.config
        extra = "".join(f" {arg}" for arg in c.bootloader_args)
        return (f"{bootloader_program(c)} --runas=<unprivileged uid of {{domid}}>{extra} "
                f"{boot_disk(c).target} -> kernel, ramdisk, cmdline")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        bound.boot_files = run_bootloader(self.config, bound.domid)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if bound.has("domid"):
            remove_boot_files(bound.domid)

    def to_json(self) -> dict[str, object]:
        c = self.config
        return {"op": "RunBootloader", "program": bootloader_program(c), "args": list(c.bootloader_args),
                "disk": boot_disk(c).target}


@dataclass(frozen=True)
class RemoveBootFiles(Op):
    """The bootloader's copies of the kernel and initramfs, once the builder has loaded them."""

    def describe(self) -> str:
        return "remove the kernel and ramdisk the bootloader extracted"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        remove_boot_files(bound.domid)


def plan_bootloader(config: GuestConfig) -> Step | None:
    if not runs_a_bootloader(config):
        return None
    return Step("bootloader", (RunBootloader(config),))


__all__ = ["RemoveBootFiles", "RunBootloader", "boot_image", "plan_bootloader", "runs_a_bootloader"]
