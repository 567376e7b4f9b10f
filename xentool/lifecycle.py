"""Operations on existing domains: destroy, the shutdown protocol, waiting, memory and vcpus.

Everything goes through the hypervisor interface and xenstore the way libxl does it, so the same
code serves domains that xentool created and domains that xl created.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from hypercalls.errors import XenError
from hypercalls.interface import GuestType, Hypervisor, ShutdownReason, Trigger, retry_transaction
from xentool.console.service import stop_console_backend
from xentool.devicemodel.paths import dm_pid_path
from xentool.devicemodel.process import stop_device_model
from xentool.devicemodel.qmp import qmp_execute
from xentool.domains import MAXMEM_SLACK_KIB, dom_path, name_taken_by
from xentool.errors import DomainOperationError, NameInUse, UsageError
from xentool.hotplug.backend import RELEASE_TIMEOUT, wait_until_released

# The words a PV guest's control/shutdown watch understands (drivers/xen/manage.c in Linux).
SHUTDOWN_REQUEST = {
    ShutdownReason.POWEROFF: "poweroff",
    ShutdownReason.REBOOT: "reboot",
    ShutdownReason.SUSPEND: "suspend",
}


def destroy(hv: Hypervisor, domid: int, stop_console: bool = True) -> None:
    """Remove the domain's devices and xenstore nodes, then the domain itself (libxl__destroy_domid).

    Backends are removed first so that no backend keeps mapping the guest's pages (which would keep
    the domain dying); the domain goes last so that a failure before it leaves it destroyable again.
    """
    xs = hv.xenstore()
    vm_path = xs.read_or(f"{dom_path(domid)}/vm")
    if hv.runs_device_models and has_device_model(hv, domid):
        # libxl__destroy_domid: pause the guest, so it makes no more I/O requests, then end QEMU.
        try:
            hv.domain_pause(domid)
        except XenError as e:
            if e.errno != errno.ESRCH:
                raise
        stop_device_model(xs, domid)
    for backend_domid in xs.list_or_empty("/local/domain"):
        for kind in xs.list_or_empty(f"/local/domain/{backend_domid}/backend"):
            xs.rm_with_empty_parents(f"/local/domain/{backend_domid}/backend/{kind}/{domid}")
    xs.rm(f"/libxl/{domid}")
    xs.rm(dom_path(domid))
    if vm_path and vm_path.startswith("/vm/"):
        xs.rm(vm_path)
    try:
        hv.domain_destroy(domid)
    except XenError as e:
        if e.errno != errno.ESRCH:  # already gone is what we wanted
            raise
    held: list[str] = []
    if hv.has_kernel_backends:
        # blkback and netback let go asynchronously (in-flight requests, grant unmaps); wait, so
        # that no loop device, vif interface or bridge port outlives the command.
        held = wait_until_released(domid, RELEASE_TIMEOUT)
    # A simulated domid must not name a real guest's backend; and the console service that destroys
    # its own guest (its device model died) must not signal itself.
    if hv.needs_console_backend and stop_console:
        stop_console_backend(domid)  # it would notice within a second; destroy promises nothing left
    if held:
        raise DomainOperationError("destroy", str(domid), f"the kernel backends still hold {', '.join(held)} "
                                   f"{RELEASE_TIMEOUT:g} s after their removal")


def has_device_model(hv: Hypervisor, domid: int) -> bool:
    """libxl__dm_active: the domain has a QEMU if its pid is recorded (by xentool or by xl)."""
    return hv.xenstore().read_or(dm_pid_path(domid)) is not None


def resume_device_model(domid: int) -> None:
    """libxl__dm_resume: QMP ``cont``, so QEMU runs when the guest's vcpus do."""
    qmp_execute(domid, [("cont", None)])


def request_shutdown(hv: Hypervisor, domid: int, reason: ShutdownReason, acpi: bool = False) -> str:
    """Ask the guest to shut down; returns how it was asked.

    Through xenstore's control/shutdown, as xl shutdown/reboot do, when the guest has PV drivers to
    read it: every PV and PVH guest, and HVM guests whose drivers registered their callback.  An
    HVM guest without them gets the ACPI power button (what `xl shutdown -F` does); for a reboot,
    which has no button (Xen's reset trigger is not implemented on x86), the domain is reset: shut
    down for "reboot" at once, and its on_reboot action restarts it.

    ``acpi`` presses the power button of an HVM guest even when it has PV drivers (libvirt's
    `shutdown --mode acpi`, xl's `trigger power`): for a guest whose drivers do not act on
    control/shutdown, or to see its operating system handle the button.
    """
    info = hv.domain_getinfo(domid)
    if acpi:
        if info.guest_type != GuestType.HVM or reason != ShutdownReason.POWEROFF:
            raise ValueError("only an HVM guest has an ACPI power button, and it only powers off")
        hv.domain_send_trigger(domid, Trigger.POWER)
        return "the ACPI power button"
    if info.guest_type == GuestType.HVM and reason in (ShutdownReason.POWEROFF, ShutdownReason.REBOOT) \
            and not hv.hvm_pv_callback_set(domid):
        if reason == ShutdownReason.POWEROFF:
            hv.domain_send_trigger(domid, Trigger.POWER)
            return "the ACPI power button"
        hv.domain_shutdown(domid, ShutdownReason.REBOOT)
        return "a reset"
    hv.xenstore().write(f"{dom_path(domid)}/control/shutdown", SHUTDOWN_REQUEST[reason])
    return "control/shutdown"


def rename(hv: Hypervisor, domid: int, new_name: str) -> None:
    """Change the name in /local/domain/N/name and /vm/UUID/name, claiming it atomically."""
    xs = hv.xenstore()
    vm_path = xs.read_or(f"{dom_path(domid)}/vm")

    def body(txn: object) -> None:
        holder = name_taken_by(xs, new_name, txn, but=domid)
        if holder is not None:
            raise NameInUse(new_name, holder)
        xs.write(f"{dom_path(domid)}/name", new_name, txn)
        if vm_path:
            xs.write(f"{vm_path}/name", new_name, txn)

    retry_transaction(xs, body)


def set_memory_target(hv: Hypervisor, domid: int, target_kib: int, label: str) -> None:
    """Balloon target (xl mem-set): memory/target for the guest's balloon driver, at most static-max."""
    xs = hv.xenstore()
    static_max = xs.read_or(f"{dom_path(domid)}/memory/static-max")
    if static_max is not None and target_kib > int(static_max):
        raise UsageError(
            f"domain {label}: {target_kib // 1024} MiB is above its maxmem of {int(static_max) // 1024} MiB; "
            "ask for less, or recreate it with a larger maxmem"
        )
    if target_kib < 16 * 1024:
        raise UsageError(f"domain {label}: {target_kib // 1024} MiB is too little for a guest; the least is 16 MiB")
    xs.write(f"{dom_path(domid)}/memory/target", str(target_kib))
    hv.domain_set_target(domid, target_kib)


def set_memory_max(hv: Hypervisor, domid: int, max_kib: int, label: str) -> None:
    """xl mem-max: the most the guest may balloon up to (memory/static-max, and Xen's cap with
    libxl's slack), never below its balloon target."""
    xs = hv.xenstore()
    target = xs.read_or(f"{dom_path(domid)}/memory/target")
    if target is not None and max_kib < int(target):
        raise UsageError(f"domain {label}: {max_kib // 1024} MiB is below its memory target of {int(target) // 1024} MiB; "
                         "mem-set it lower first, or give a larger maximum")
    hv.domain_setmaxmem(domid, max_kib + MAXMEM_SLACK_KIB)
    xs.write(f"{dom_path(domid)}/memory/static-max", str(max_kib))


def set_online_vcpus(hv: Hypervisor, domid: int, vcpus: int, label: str) -> None:
    """xl vcpu-set: cpu/N/availability for the guest, online or offline, up to the domain's maximum."""
    info = hv.domain_getinfo(domid)
    max_vcpus = info.max_vcpu_id + 1
    if not 1 <= vcpus <= max_vcpus:
        raise UsageError(f"domain {label}: {vcpus} vcpus is outside 1..{max_vcpus} (its maxvcpus)")
    xs = hv.xenstore()

    def body(txn: object) -> None:
        for vcpu in range(max_vcpus):
            xs.write(f"{dom_path(domid)}/cpu/{vcpu}/availability", "online" if vcpu < vcpus else "offline", txn)

    retry_transaction(xs, body)
    hv.domain_set_online_vcpus(domid, vcpus)


def checked(op: str, label: str, action: Callable[[], object]) -> None:
    """Run ``action``; a hypervisor failure becomes a DomainOperationError naming op and domain."""
    try:
        action()
    except XenError as e:
        raise DomainOperationError(op, label, e) from e
