"""The Xen lab: the real Xen 4.17 hypervisor from Debian booted in QEMU, with a Linux dom0 whose root
filesystem is this host's own (9p, read-only, under a tmpfs overlay), so this same checkout runs in
dom0 against real hypercalls.

    from xentool.lab import Lab
    lab = Lab("default")
    lab.up()
    print(lab.exec(["xl", "info"], capture=True).out)
    lab.down()
"""

from xentool.lab.client import ExecResult
from xentool.lab.lab import Lab, LabStatus
from xentool.lab.qemu import LabOptions

__all__ = ["Lab", "LabStatus", "LabOptions", "ExecResult"]
