"""Step 5: let the guest run (left out for `create -p`, which leaves it paused as xl does)."""

from __future__ import annotations

from xentool.create.plan import Step, UnpauseDomain


def plan_unpause() -> Step:
    return Step("unpause", (UnpauseDomain(),))
