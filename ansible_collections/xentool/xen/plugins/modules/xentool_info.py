"""Ansible module xentool.xen.xentool_info: facts about a Xen host and its guests, through
xentool's Python API on the managed host."""

from __future__ import annotations

import sys

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: xentool_info
short_description: Facts about a Xen host and its guests, from xentool
description:
  - The host (Xen version, CPUs, memory, capabilities) and every guest there, running or only defined,
    with its state; also set as the facts C(xentool_host) and C(xentool_guests).
  - Runs xentool's Python API in the interpreter Ansible uses on the host (C(ansible_python_interpreter)).
options:
  connect:
    description: Which hypervisor, as C(xentool --connect) takes it (the host's own Xen when not given).
    type: str
requirements:
  - xentool installed in the managed host's ansible_python_interpreter
"""

EXAMPLES = r"""
- xentool.xen.xentool_info:
- ansible.builtin.debug:
    msg: "{{ xentool_guests | selectattr('state', 'eq', 'running') | map(attribute='name') | list }}"
"""

RETURN = r"""
host:
  description: The host, as C(xentool host info --json) gives it.
  returned: always
  type: dict
guests:
  description: >-
    Every guest, dom0 left out: name, uuid, state (Xen's, e.g. running, paused, shutdown; stopped for a defined
    guest that does not run), domid (null when it does not run), type, memory_mib, vcpus, defined, autostart.
  returned: always
  type: list
  elements: dict
"""


def main() -> None:
    module = AnsibleModule(argument_spec={"connect": {"type": "str"}}, supports_check_mode=True)
    try:
        import xentool
    except ImportError as e:
        module.fail_json(msg=f"xentool cannot be imported by {sys.executable} ({e}); "
                             "set ansible_python_interpreter to the Python xentool is installed in")
        return
    try:
        with xentool.connect(module.params["connect"]) as xt:
            host = xt.host_info().to_json()
            definitions = {d.name: d for d in xt.defined()}
            guests = []
            for domain in xt.list_domains():
                if domain.domid == 0:
                    continue
                definition = definitions.pop(domain.name, None)
                guests.append({"name": domain.name, "uuid": domain.uuid, "state": domain.state, "domid": domain.domid,
                               "type": domain.type, "memory_mib": domain.memory_mib, "vcpus": domain.vcpus,
                               "defined": definition is not None and definition.uuid == domain.uuid,
                               "autostart": bool(definition and definition.autostart)})
            for definition in definitions.values():
                resolved = definition.resolved
                guests.append({"name": definition.name, "uuid": definition.uuid, "state": "stopped", "domid": None,
                               "type": resolved.get("type"), "memory_mib": resolved.get("memory"),
                               "vcpus": resolved.get("vcpus", 1), "defined": True, "autostart": definition.autostart})
    except xentool.XentoolError as e:
        module.fail_json(msg=str(e))
        return
    guests.sort(key=lambda guest: guest["name"])
    module.exit_json(changed=False, host=host, guests=guests,
                     ansible_facts={"xentool_host": host, "xentool_guests": guests})


if __name__ == "__main__":
    main()
