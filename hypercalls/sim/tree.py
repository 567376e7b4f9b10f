"""The xenstore tree and its permission rules, as xenstored (tools/xenstore) applies them.

One ``Tree`` works on a dict of immutable nodes: the host's live tree, or a transaction's private
copy.  Two callbacks tell the owner what happened: ``on_access`` before a node is looked at or
changed (a transaction records the generation it saw, to detect conflicts at commit) and
``on_change`` after a change that fires watches (the live tree logs it for every connection).

Permission rules (docs/misc/xenstore.txt and xenstored_core.c):

* the first entry of a node's permissions names its owner, and its letter is what every domain not
  listed gets; the owner has full access; dom0's connection is privileged and may do anything;
* reading needs r or b, writing an existing node w or b, creating a node w/b on the nearest
  existing ancestor; new nodes (and the parents created on the way) inherit that ancestor's
  permissions, except that a node an unprivileged domain creates is owned by that domain;
* a missing node looks missing (ENOENT) only to a domain that may read its nearest existing
  ancestor; to others it is EACCES, so that nodes they cannot see do not leak;
* only the owner may change a node's permissions, and an unprivileged owner may not give it away.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from hypercalls.errors import XenstoreError
from hypercalls.interface import XsPerm, XsPermission
from hypercalls.sim.state import HostState, Node

_VALID_PATH = re.compile(r"^/[A-Za-z0-9_@/.:-]*$")
MAX_PATH = 3072


@dataclass(frozen=True)
class Caller:
    """Who makes a xenstore request: dom0's privileged connection, or a guest's."""

    domid: int
    privileged: bool

    @property
    def home(self) -> str:
        return f"/local/domain/{self.domid}"


PRIVILEGED = Caller(0, True)


def normalize(path: str, caller: Caller, op: str) -> str:
    """An absolute, canonical path; relative paths are relative to the caller's home, as in xenstored."""
    if not isinstance(path, str) or path == "":
        raise XenstoreError(op, errno.EINVAL, str(path), detail="empty path")
    if not path.startswith("/"):
        path = f"{caller.home}/{path}"
    if path != "/" and (path.endswith("/") or "//" in path):
        raise XenstoreError(op, errno.EINVAL, path, detail="not a canonical path")
    if len(path) > MAX_PATH or not _VALID_PATH.match(path):
        raise XenstoreError(op, errno.EINVAL, path, detail="invalid characters in path")
    return path


def parent_of(path: str) -> str:
    parent = path.rsplit("/", 1)[0]
    return parent or "/"


def name_of(path: str) -> str:
    return path.rsplit("/", 1)[1]


def child_path(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


def is_within(path: str, ancestor: str) -> bool:
    """``path`` is ``ancestor`` or below it."""
    return path == ancestor or ancestor == "/" or path.startswith(ancestor + "/")


def _letters(perm: XsPerm) -> str:
    return {XsPerm.NONE: "", XsPerm.READ: "r", XsPerm.WRITE: "w", XsPerm.BOTH: "rw"}[perm]


def access_of(perms: tuple[XsPermission, ...], caller: Caller) -> str:
    """What ``caller`` may do with a node: a subset of "rw"."""
    if caller.privileged or perms[0].domid == caller.domid:
        return "rw"
    for entry in perms[1:]:
        if entry.domid == caller.domid:
            return _letters(entry.perm)
    return _letters(perms[0].perm)


class Tree:
    def __init__(
        self,
        nodes: dict[str, Node],
        next_gen: Callable[[], int],
        on_change: Callable[[str, bool], None] | None = None,
        on_access: Callable[[str], None] | None = None,
    ) -> None:
        self.nodes = nodes
        self._next_gen = next_gen
        self._on_change = on_change
        self._on_access = on_access

    # -- helpers ------------------------------------------------------------------------------------

    def _get(self, path: str) -> Node | None:
        if self._on_access is not None:
            self._on_access(path)
        return self.nodes.get(path)

    def _changed(self, path: str, removed_subtree: bool = False) -> None:
        if self._on_change is not None:
            self._on_change(path, removed_subtree)

    def _nearest_existing(self, path: str) -> tuple[str, Node]:
        while True:
            path = parent_of(path)
            node = self._get(path)
            if node is not None:
                return path, node

    def _missing(self, op: str, path: str, caller: Caller) -> XenstoreError:
        """ENOENT, unless the caller may not see the place where the node would be."""
        if not caller.privileged:
            _, ancestor = self._nearest_existing(path)
            if "r" not in access_of(ancestor.perms, caller):
                return XenstoreError(op, errno.EACCES, path)
        return XenstoreError(op, errno.ENOENT, path)

    def _readable(self, op: str, path: str, caller: Caller) -> Node:
        node = self._get(path)
        if node is None:
            raise self._missing(op, path, caller)
        if "r" not in access_of(node.perms, caller):
            raise XenstoreError(op, errno.EACCES, path)
        return node

    def _create(self, op: str, path: str, value: str, caller: Caller) -> None:
        """Create ``path`` and any missing parents, with the nearest existing ancestor's permissions."""
        ancestor_path, ancestor = self._nearest_existing(path)
        if "w" not in access_of(ancestor.perms, caller):
            raise XenstoreError(op, errno.EACCES, path)
        perms = ancestor.perms
        if not caller.privileged:
            perms = (XsPermission(caller.domid, perms[0].perm),) + perms[1:]
        missing: list[str] = []
        p = path
        while p != ancestor_path:
            missing.append(p)
            p = parent_of(p)
        missing.reverse()
        parent_path = ancestor_path
        for p in missing:
            parent = self.nodes[parent_path]
            self.nodes[parent_path] = replace(
                parent, children=tuple(sorted(parent.children + (name_of(p),))), gen=self._next_gen()
            )
            self.nodes[p] = Node(value if p == path else "", perms, self._next_gen())
            if p != path:
                self._get(p)  # a transaction must see that it created it
            parent_path = p

    # -- the operations --------------------------------------------------------------------------------

    def read(self, path: str, caller: Caller) -> str:
        return self._readable("read", path, caller).value

    def directory(self, path: str, caller: Caller) -> list[str]:
        return list(self._readable("directory", path, caller).children)

    def get_perms(self, path: str, caller: Caller) -> tuple[XsPermission, ...]:
        return self._readable("get_perms", path, caller).perms

    def write(self, path: str, value: str, caller: Caller) -> None:
        if not isinstance(value, str):
            raise XenstoreError("write", errno.EINVAL, path, detail=f"value must be a str, not {type(value).__name__}")
        node = self._get(path)
        if node is None:
            self._create("write", path, value, caller)
        else:
            if "w" not in access_of(node.perms, caller):
                raise XenstoreError("write", errno.EACCES, path)
            self.nodes[path] = replace(node, value=value, gen=self._next_gen())
        self._changed(path)

    def mkdir(self, path: str, caller: Caller) -> None:
        node = self._get(path)
        if node is not None:
            if "w" not in access_of(node.perms, caller):
                raise XenstoreError("mkdir", errno.EACCES, path)
            return
        self._create("mkdir", path, "", caller)
        self._changed(path)

    def rm(self, path: str, caller: Caller) -> None:
        if path == "/":
            raise XenstoreError("rm", errno.EINVAL, path, detail="cannot remove the root")
        node = self._get(path)
        if node is None:
            return
        if "w" not in access_of(node.perms, caller):
            raise XenstoreError("rm", errno.EACCES, path)
        parent_path = parent_of(path)
        parent = self._get(parent_path)
        assert parent is not None, f"xenstore node {path} has no parent"
        stack = [path]
        while stack:
            p = stack.pop()
            gone = self._get(p)
            if gone is None:
                continue
            stack.extend(child_path(p, c) for c in gone.children)
            del self.nodes[p]
        name = name_of(path)
        self.nodes[parent_path] = replace(
            parent, children=tuple(c for c in parent.children if c != name), gen=self._next_gen()
        )
        self._changed(path, True)

    def set_perms(self, path: str, permissions: tuple[XsPermission, ...], caller: Caller) -> None:
        permissions = tuple(permissions)
        if not permissions or not all(isinstance(p, XsPermission) for p in permissions):
            raise XenstoreError("set_perms", errno.EINVAL, path, detail="needs at least the owner's entry")
        permissions = tuple(XsPermission(int(p.domid), XsPerm(p.perm)) for p in permissions)
        node = self._get(path)
        if node is None:
            raise self._missing("set_perms", path, caller)
        if not caller.privileged:
            if node.perms[0].domid != caller.domid:
                raise XenstoreError("set_perms", errno.EACCES, path, detail="only the owner may change permissions")
            if permissions[0].domid != caller.domid:
                raise XenstoreError("set_perms", errno.EPERM, path, detail="an unprivileged owner cannot give a node away")
        self.nodes[path] = replace(node, perms=permissions, gen=self._next_gen())
        self._changed(path)


def live_tree(state: HostState, changed: list[str] | None = None) -> Tree:
    """The host's own tree: every change bumps the generation and goes to the watch change log
    (and, when ``changed`` is given, to that list, for the simulated guests to react to)."""

    def on_change(path: str, removed_subtree: bool) -> None:
        state.log_change(path, removed_subtree)
        if changed is not None and not removed_subtree:
            changed.append(path)

    return Tree(state.nodes, state.next_gen, on_change)

