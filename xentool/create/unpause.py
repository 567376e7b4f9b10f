"""The last step: let the guest run (left out for `create -p`, which leaves it paused as xl does).

An HVM guest's QEMU was told to continue (QMP ``cont``, the first half of libxl__domain_unpause)
by the device model step, in the QMP session that saw it ready.
"""

from __future__ import annotations

from xentool.create.plan import Step, UnpauseDomain


def plan_unpause() -> Step:
    return Step("unpause", (UnpauseDomain(),))
