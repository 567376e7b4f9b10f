"""The device model: QEMU, which emulates an HVM guest's hardware (firmware devices, disks, NICs, VGA).

``argv`` builds its command line and environment from a :class:`~xentool.config.GuestConfig`, as
libxl does; starting, watching and stopping it belong to the create and lifecycle steps.
"""

from __future__ import annotations

from xentool.devicemodel.argv import (
    NIC_MODELS,
    QEMU_XEN,
    DeviceModelSetup,
    device_model_argv,
    device_model_env,
    qemu_opt_value,
    qmp_socket_path,
    tap_ifname,
)

__all__ = [
    "NIC_MODELS",
    "QEMU_XEN",
    "DeviceModelSetup",
    "device_model_argv",
    "device_model_env",
    "qemu_opt_value",
    "qmp_socket_path",
    "tap_ifname",
]
