"""Ansible module xentool.xen.xentool_guest: one Xen guest's desired state, through xentool's
Python API on the managed host (xentool.guest_state; no command is run through a shell)."""

from __future__ import annotations

import sys

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: xentool_guest
short_description: A Xen guest's desired state (present, running, stopped, absent), with xentool
description:
  - Brings one guest on the managed Xen host to a state, from a xentool guest config (a YAML file on
    the managed host, or the same keys inline). What it changes is what C(xentool apply) would for
    that guest; a failed step undoes the steps done before it, so the guest is left as it was.
  - Runs xentool's Python API in the interpreter Ansible uses on the host: set
    C(ansible_python_interpreter) to the Python xentool is installed in.
  - Supports check mode and diff mode; C(changed) is true only when a step was (or would be) done.
options:
  name:
    description: The guest's name. Needed for O(state=absent) without a config; otherwise the config's name.
    type: str
  config_file:
    description: A xentool guest config (YAML) on the managed host.
    type: path
  config:
    description: The guest config's keys inline (as in a config file).
    type: dict
  state:
    description:
      - V(present) defined as the config says (a running guest takes live what it can, as C(xentool apply)
        does; one that does not run is not started); V(running) defined and running; V(stopped) defined and
        not running (powered off, waited for); V(absent) neither defined nor running (destroyed, undefined).
    type: str
    default: running
    choices: [present, running, stopped, absent]
  restart:
    description: Restart a running guest whose config changed in a way it cannot take live (kernel, type, ...).
    type: bool
    default: false
  force:
    description: For V(stopped), destroy a guest that does not power off within O(shutdown_timeout).
    type: bool
    default: false
  shutdown_timeout:
    description: Seconds to wait for a guest to power off.
    type: float
    default: 120
  connect:
    description: Which hypervisor, as C(xentool --connect) takes it (the host's own Xen when not given; C(sim:///DIR) for a simulator).
    type: str
requirements:
  - xentool installed in the managed host's ansible_python_interpreter
"""

EXAMPLES = r"""
- name: The web guest runs as its file says
  xentool.xen.xentool_guest:
    config_file: /etc/xentool/guests/web.yaml
    state: running

- name: A small PV guest, defined inline and not started
  xentool.xen.xentool_guest:
    config:
      name: tiny
      type: pv
      memory: 128
      kernel: /boot/guest/vmlinuz
    state: present

- name: Gone
  xentool.xen.xentool_guest:
    name: old-web
    state: absent
"""

RETURN = r"""
name:
  description: The guest's name.
  returned: always
  type: str
state:
  description: The state the guest is in now (in check mode, the state it would be in).
  returned: success
  type: str
changes:
  description: The steps done (in check mode, the steps that would be done), as C(xentool apply) prints them.
  returned: always
  type: list
  elements: str
needs_restart:
  description: Config keys a running guest cannot take live, left until O(restart=true).
  returned: success
  type: list
  elements: str
"""

ARGUMENTS = {
    "name": {"type": "str"},
    "config_file": {"type": "path"},
    "config": {"type": "dict"},
    "state": {"type": "str", "default": "running", "choices": ["present", "running", "stopped", "absent"]},
    "restart": {"type": "bool", "default": False},
    "force": {"type": "bool", "default": False},
    "shutdown_timeout": {"type": "float", "default": 120.0},
    "connect": {"type": "str"},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENTS, mutually_exclusive=[("config_file", "config")],
                           required_one_of=[("name", "config_file", "config")], supports_check_mode=True)
    params = module.params
    try:
        import xentool
        from xentool.config import config_from_dict, load_config
        from xentool.desired import one_at_a_time
        from xentool.guest_state import plan_state, reach
    except ImportError as e:
        module.fail_json(msg=f"xentool cannot be imported by {sys.executable} ({e}); "
                             "set ansible_python_interpreter to the Python xentool is installed in")
        return
    name = params["name"]
    config = None
    try:
        if params["config_file"]:
            config = load_config(params["config_file"])
        elif params["config"] is not None:
            config = config_from_dict(params["config"], source=f"<xentool_guest config of {name or 'the task'}>")
        else:
            config = None
        with xentool.connect(params["connect"]) as xt, one_at_a_time(lambda: None):
            plan = plan_state(xt, params["state"], config, name, restart=params["restart"],
                              shutdown_timeout=params["shutdown_timeout"], force=params["force"])
            result = {
                "name": plan.name,
                "changed": bool(plan.changes),
                "changes": plan.changes,
                "needs_restart": plan.guest.needs_restart,
                "state": plan.after.state,
                "diff": {"before": plan.before.to_json(), "after": plan.after.to_json(),
                         "before_header": f"{plan.name} ({plan.before.state})",
                         "after_header": f"{plan.name} ({plan.after.state})"},
            }
            if plan.guest.needs_restart:
                module.warn(f"{plan.name} runs with an older config: {', '.join(plan.guest.needs_restart)} "
                            "change only with a restart (restart: true)")
            if module.check_mode or not plan.changes:
                module.exit_json(**result)
                return
            outcome = reach(plan)
    except xentool.XentoolError as e:
        # The error's own words: a config error says file:line:col, key and what is accepted.
        module.fail_json(msg=str(e), name=name or (config.name if config else None), changes=[])
        return
    if not outcome.done:
        result["changed"] = outcome.left_changed  # the steps done before the failure were undone, or not
        module.fail_json(msg=f"{plan.name}: {outcome.says}", **result)
        return
    module.exit_json(**result)


if __name__ == "__main__":
    main()
