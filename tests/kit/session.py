"""Set-up that a test session starts in the background at collection time (tests/conftest.py) and
the fixtures that need it wait for: the lab's boot, the Debian guest's disk image."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Background:
    """One piece of set-up started in a thread at collection time; :meth:`result` waits for it and
    raises what it raised, so the fixture that needs it fails as if it had done the work itself."""

    def __init__(self, name: str, work: Callable[[], Any]) -> None:
        self.taken = False  # set by the fixture that took the result over (and its clean-up)
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._value = work()
        except BaseException as e:  # noqa: BLE001 (handed to the fixture that waits for it, which raises it)
            self._error = e

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


_started: dict[str, Background] = {}


def start(name: str, work: Callable[[], Any]) -> Background:
    _started[name] = Background(name, work)
    return _started[name]


def started(name: str) -> Background | None:
    """The background set-up called ``name``, if this session started one."""
    return _started.get(name)
