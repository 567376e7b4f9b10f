"""The device model: QEMU, which emulates an HVM guest's hardware (firmware devices, disks, NICs,
VGA) and serves a PV guest's qdisk disks.

``argv`` builds its command line from a :class:`~xentool.config.GuestConfig`, as libxl does;
``paths`` says where its sockets, log and xenstore nodes are; ``process`` starts, waits for and
stops it; ``qmp`` talks to it; ``privilege`` decides how little it may do; ``checks`` checks a
config's device model against the host; ``vnc``, ``firmware``, ``qdisk`` and ``state`` serve the
creation steps (xentool.create.device_model_launch, ...ready, ...pv_backend) and the lifecycle.

The package imports nothing itself: stopping a guest's QEMU must not load the config model.
"""
