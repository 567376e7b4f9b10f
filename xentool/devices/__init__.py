"""Each kind of device a guest can have, in one place: what it is in xenstore (the nodes libxl
writes for it) and the checks against this host that it must pass before it is given to a guest.
Creation (xentool.create) and hot plug (xentool.live_devices) both use them, so a disk or vif is
refused for the same reasons, in the same words, whichever way it comes.

- :mod:`~xentool.devices.nodes`: a xenstore node to write, and a split device's generic layout;
- :mod:`~xentool.devices.disk`, :mod:`~xentool.devices.vif`, :mod:`~xentool.devices.console`.

The device model (QEMU) is checked in :mod:`xentool.devicemodel.checks`, beside what starts it.
"""
