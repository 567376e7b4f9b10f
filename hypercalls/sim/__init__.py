"""The simulated Xen host: the hypervisor, xenstored and guests, in Python, for tests and scripts.

``SimHypervisor(path)`` opens (or creates) the host kept in the directory ``path``; every process
that opens the same directory works on the same host, as several commands do on one real dom0.
The simulation keeps Xen's books and errnos, and its guests answer the toolstack through xenstore
as Linux does, so that toolstack code tested here is the code that runs on real Xen.

Modules: ``state`` (the shared state and its locking), ``tree`` (the xenstore tree and its
permissions), ``xenstore`` (connections: transactions, watches), ``guest`` (what a guest does),
``images`` (the builder's kernel checks), ``hypervisor`` (the hypercalls).
"""

from hypercalls.sim.hypervisor import SimHypervisor
from hypercalls.sim.xenstore import SimTransaction, SimXenStore

__all__ = ["SimHypervisor", "SimTransaction", "SimXenStore"]
