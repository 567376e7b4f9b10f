"""The device model: QEMU, which emulates an HVM guest's hardware (firmware devices, disks, NICs, VGA).

``argv`` builds its command line and environment from a :class:`~xentool.config.GuestConfig`, as
libxl does; ``process`` starts, waits for and stops it; ``qmp`` talks to it; ``privilege`` decides
how little it may do.  The create step (xentool.create.device_model) and the lifecycle use them.
"""

from __future__ import annotations

from xentool.devicemodel.argv import *  # noqa: F403 - the argv module's public names
from xentool.devicemodel.argv import __all__  # noqa: F401
