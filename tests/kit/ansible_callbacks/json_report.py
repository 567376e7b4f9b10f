"""A stdout callback for ansible-playbook that prints one JSON report at the end, for the tests to
read: ``{"plays": [{"tasks": [{"task": NAME, "hosts": {HOST: RESULT}}]}], "stats": {HOST: {...}}}``
(ansible-core ships none: its json callback lives in the ansible.posix collection)."""

from __future__ import annotations

import json
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "json_report"

    def __init__(self) -> None:
        super().__init__()
        self.plays: list[dict[str, Any]] = []

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self.plays.append({"play": play.get_name(), "tasks": []})

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self.plays[-1]["tasks"].append({"task": task.get_name(), "hosts": {}})

    def _record(self, result: Any, **extra: Any) -> None:
        self.plays[-1]["tasks"][-1]["hosts"][result._host.get_name()] = {**result._result, **extra}

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": summary}, default=str))
