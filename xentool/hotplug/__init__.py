"""Hotplug: the dom0 side of a split device that the kernel backends leave to the toolstack.

blkback waits for a block device (``physical-device``) before it serves a vbd, and netback for the
toolstack to wire its interface up (``hotplug-status``) before it connects a vif.  Xen's toolstack
runs shell scripts for that (block, vif-bridge); xentool does the same work itself:

- :mod:`.block`   a disk's image file behind a loop device, or its block device, handed to blkback;
- :mod:`.network` a vif's backend interface renamed, sized, joined to its bridge and brought up;
- :mod:`.backend` waiting for a backend to take a device, or to let go of a domain's devices;
- :mod:`.loop`, :mod:`.netdev` the kernel interfaces (loop ioctls, interface ioctls) they use.
"""
