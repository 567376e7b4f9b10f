"""The Xen lab: the real Xen 4.17 hypervisor from Debian booted in QEMU, with a Linux dom0 whose root
filesystem is this host's own (9p, read-only, under a tmpfs overlay), so this same checkout runs in
dom0 against real hypercalls.

    from xentool.lab import Lab
    lab = Lab("default")
    lab.up()
    print(lab.exec(["xl", "info"], capture=True).out)
    lab.down()

    up_hosts("default", 2)               # and its second host, on a private link with the first
    Lab("default", host=2).exec(["ssh", "xen1", "xl", "list"])
"""

from xentool.lab.client import ExecResult
from xentool.lab.lab import Lab, LabStatus, hosts_of, up_hosts
from xentool.lab.qemu import LabOptions

__all__ = ["ExecResult", "Lab", "LabOptions", "LabStatus", "hosts_of", "up_hosts"]
