"""Running ansible-playbook with the repository's collection (ansible_collections/xentool/xen),
here or in a lab's dom0, and reading what it did from the json_report callback (tests/kit/ansible_callbacks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.prefix) / "bin" / "ansible-playbook")


def ansible_env(temp: Path | str) -> dict[str, str]:
    """What ansible-playbook needs to find the collection and report in JSON; its scratch in ``temp``.
    Its ssh control sockets go under /tmp: a lab's shared directory cannot hold sockets."""
    return {"ANSIBLE_COLLECTIONS_PATH": str(ROOT), "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "tests/kit/ansible_callbacks"),
            "ANSIBLE_STDOUT_CALLBACK": "json_report", "ANSIBLE_NOCOLOR": "1", "LC_ALL": "C.UTF-8",
            "ANSIBLE_LOCAL_TEMP": f"{temp}/ansible-local", "ANSIBLE_REMOTE_TEMP": f"{temp}/ansible-remote",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": "/tmp/ansible-cp", "ANSIBLE_PIPELINING": "1"}


def playbook_file(folder: Path, hosts: str, tasks: list[dict[str, Any]], file_name: str = "book.yaml", **play: Any) -> Path:
    book = folder / file_name
    book.write_text(yaml.safe_dump([{"hosts": hosts, "gather_facts": False, **play, "tasks": tasks}], sort_keys=False))
    return book


def report_of(out: str, err: str, returncode: int) -> dict[str, Any]:
    """The json_report callback's report: the last line of ansible-playbook's output."""
    try:
        return dict(json.loads(out.strip().splitlines()[-1]))
    except (json.JSONDecodeError, IndexError):
        pytest.fail(f"ansible-playbook printed no report (rc {returncode}):\n{out}\n{err}")


def results_of(report: dict[str, Any], task: str) -> dict[str, dict[str, Any]]:
    """Each host's result of the (first) task called ``task``."""
    for play in report["plays"]:
        for one in play["tasks"]:
            if one["task"] == task:
                return dict(one["hosts"])
    raise AssertionError(f"no task {task!r} in the report: {[t['task'] for p in report['plays'] for t in p['tasks']]}")
