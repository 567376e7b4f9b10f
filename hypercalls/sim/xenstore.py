"""A xenstore connection to the simulated xenstored: the tree, transactions and watches.

Each request locks the host's state (see ``state``), applies the tree's rules (``tree``) and lets
the simulated guests react to what changed (``guest``).  What a connection keeps for itself, as
libxenstore and xenstored keep it per connection, lives in this object: its open transactions and
its watches with their queue of pending events.

Transactions work on a private copy of the tree taken at ``transaction_start``.  Every node the
transaction reads, lists or changes (with the parents whose child lists it changes) is remembered
with the generation it had then; the commit fails with :class:`TransactionConflict` when any of
them has changed since, exactly the promise xenstored makes (EAGAIN, "retry the transaction").

Watches must see changes made by other processes, so every change to the live tree goes to a
bounded log in the shared state (sequence number, path).  A connection remembers the last sequence
it has looked at; ``read_watch`` returns queued events first, then polls the log every ~20 ms.
"""

from __future__ import annotations

import errno
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from hypercalls.errors import TransactionConflict, XenstoreError
from hypercalls.interface import WatchEvent, XenStore, XsPermission
from hypercalls.sim import guest
from hypercalls.sim.state import HostState, Node, StateStore
from hypercalls.sim.tree import Caller, Tree, is_within, live_tree, normalize

POLL_INTERVAL = 0.02
INTRODUCE_DOMAIN = "@introduceDomain"
RELEASE_DOMAIN = "@releaseDomain"
SPECIAL_WATCHES = (INTRODUCE_DOMAIN, RELEASE_DOMAIN)

_txn_ids = itertools.count(1)
T = TypeVar("T")


@dataclass(eq=False)
class SimTransaction:
    """A transaction handle: the tree as it was at the start, the private copy, what was seen."""

    id: int
    connection_id: int
    base: dict[str, Node]
    work: dict[str, Node]
    seen: dict[str, int | None] = field(default_factory=dict)  # path -> gen at start (None: missing)
    changes: list[tuple[str, bool]] = field(default_factory=list)  # (path, removed subtree), in order
    ended: bool = False

    def __repr__(self) -> str:
        return f"<sim xenstore transaction {self.id}>"

    def tree(self) -> Tree:
        def on_access(path: str) -> None:
            if path not in self.seen:
                node = self.base.get(path)
                self.seen[path] = None if node is None else node.gen

        def on_change(path: str, removed_subtree: bool) -> None:
            self.changes.append((path, removed_subtree))

        return Tree(self.work, _private_gen, on_change, on_access)


def _private_gen() -> int:
    return 0  # generations in a private copy are never compared; the commit assigns real ones


@dataclass
class _Watch:
    path: str
    token: str
    since_seq: int  # changes with a higher sequence number concern this watch


def watch_event_path(watch_path: str, changed: str, removed_subtree: bool) -> str | None:
    """The path a watch on ``watch_path`` reports for a change of ``changed``, or None if it does not fire.

    Special ``@`` paths match only themselves; a path watch fires for the path and everything below
    it, and, when a subtree is removed, also for watches inside the removed subtree.
    """
    if watch_path.startswith("@") or changed.startswith("@"):
        return changed if watch_path == changed else None
    if is_within(changed, watch_path):
        return changed
    if removed_subtree and is_within(watch_path, changed):
        return watch_path
    return None


def commit(state: HostState, txn: SimTransaction) -> list[str]:
    """Apply ``txn`` to the live tree; the paths changed (for the guests).  Raises on a conflict."""
    for path, gen in txn.seen.items():
        current = state.nodes.get(path)
        if (None if current is None else current.gen) != gen:
            raise TransactionConflict(path)
    for path in txn.seen:
        mine, before = txn.work.get(path), txn.base.get(path)
        if mine is before:
            continue
        if mine is None:
            state.nodes.pop(path, None)
        else:
            state.nodes[path] = Node(mine.value, mine.perms, state.next_gen(), mine.children)
    for path, removed_subtree in txn.changes:
        state.log_change(path, removed_subtree)
    return [path for path, removed_subtree in txn.changes if not removed_subtree]


class SimXenStore(XenStore):
    """A connection to the simulated xenstored, as dom0 (privileged) or as one guest."""

    _ids = itertools.count(1)

    def __init__(self, store: StateStore, domid: int = 0) -> None:
        self._store = store
        self.domid = domid
        self._caller = Caller(domid, privileged=domid == 0)
        self._id = next(self._ids)
        self._transactions: dict[int, SimTransaction] = {}
        self._watches: list[_Watch] = []
        self._events: deque[WatchEvent] = deque()
        self._cursor = 0  # the last change sequence this connection has looked at
        self._closed = False

    def __repr__(self) -> str:
        return f"<SimXenStore dom{self.domid} at {self._store.path}>"

    # -- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _request(self, op: str, path: str, write: bool = True) -> Iterator[HostState]:
        """One request: the lock, an injected failure if one is pending, then the state to work on.

        With ``write``, the state is saved when the body finishes without raising; a raising body
        changes nothing.
        """
        if self._closed:
            raise XenstoreError(op, errno.EBADF, path, detail="connection closed")
        with self._store.locked() as session:
            failure = session.state.take_failure(f"xenstore.{op}")
            if failure is not None:
                session.save()
                raise XenstoreError(op, failure, path, detail="injected failure")
            yield session.state
            if write:
                session.save()

    def _txn(self, op: str, txn: object, path: str) -> SimTransaction:
        if not isinstance(txn, SimTransaction) or txn.connection_id != self._id:
            raise XenstoreError(op, errno.EINVAL, path, detail=f"{txn!r} is not a transaction of this connection")
        if txn.ended:
            raise XenstoreError(op, errno.EINVAL, path, detail=f"{txn!r} has ended")
        return txn

    def _path(self, path: str, op: str) -> str:
        return normalize(path, self._caller, op)

    def _read_only(self, op: str, path: str, txn: object | None, action: Callable[[Tree, str], T]) -> T:
        path = self._path(path, op)
        with self._request(op, path, write=False) as state:
            if txn is not None:
                return action(self._txn(op, txn, path).tree(), path)
            return action(Tree(state.nodes, state.next_gen), path)

    def _mutate(self, op: str, path: str, txn: object | None, action: Callable[[Tree, str], None]) -> None:
        path = self._path(path, op)
        with self._request(op, path, write=txn is None) as state:
            if txn is not None:
                action(self._txn(op, txn, path).tree(), path)
                return
            changed: list[str] = []
            action(live_tree(state, changed), path)
            guest.after_xenstore_changes(state, changed)

    # -- the tree ---------------------------------------------------------------------------------

    def read(self, path: str, txn: object | None = None) -> str:
        return self._read_only("read", path, txn, lambda tree, p: tree.read(p, self._caller))

    def directory(self, path: str, txn: object | None = None) -> list[str]:
        return self._read_only("directory", path, txn, lambda tree, p: tree.directory(p, self._caller))

    def get_perms(self, path: str, txn: object | None = None) -> tuple[XsPermission, ...]:
        return self._read_only("get_perms", path, txn, lambda tree, p: tree.get_perms(p, self._caller))

    def write(self, path: str, value: str, txn: object | None = None) -> None:
        self._mutate("write", path, txn, lambda tree, p: tree.write(p, value, self._caller))

    def mkdir(self, path: str, txn: object | None = None) -> None:
        self._mutate("mkdir", path, txn, lambda tree, p: tree.mkdir(p, self._caller))

    def rm(self, path: str, txn: object | None = None) -> None:
        self._mutate("rm", path, txn, lambda tree, p: tree.rm(p, self._caller))

    def set_perms(self, path: str, permissions: tuple[XsPermission, ...], txn: object | None = None) -> None:
        self._mutate("set_perms", path, txn, lambda tree, p: tree.set_perms(p, permissions, self._caller))

    # -- transactions -----------------------------------------------------------------------------

    def transaction_start(self) -> object:
        with self._request("transaction_start", "(transaction)", write=False) as state:
            txn = SimTransaction(next(_txn_ids), self._id, state.nodes, dict(state.nodes))
        self._transactions[txn.id] = txn
        return txn

    def transaction_end(self, txn: object, abort: bool = False) -> None:
        if abort and isinstance(txn, SimTransaction) and txn.ended:
            return  # aborting what already ended (a failed commit) is harmless
        handle = self._txn("transaction_end", txn, "(transaction)")
        try:
            with self._request("transaction_end", "(transaction)", write=not abort) as state:
                if not abort:
                    changed = commit(state, handle)
                    guest.after_xenstore_changes(state, changed)
        finally:
            handle.ended = True  # committed, aborted, conflicting or failed: it is over
            self._transactions.pop(handle.id, None)

    # -- watches ----------------------------------------------------------------------------------

    def _watch_path(self, path: str, op: str) -> str:
        if path.startswith("@"):
            if path not in SPECIAL_WATCHES:
                raise XenstoreError(op, errno.EINVAL, path, detail=f"special watches are {', '.join(SPECIAL_WATCHES)}")
            return path
        return self._path(path, op)

    def watch(self, path: str, token: str) -> None:
        path = self._watch_path(path, "watch")
        with self._request("watch", path, write=False) as state:
            if any(w.path == path and w.token == token for w in self._watches):
                raise XenstoreError("watch", errno.EEXIST, path, detail=f"already watched with token {token!r}")
            if not self._watches:
                self._cursor = state.change_seq
            self._collect(state)  # events due to the watches already there come first
            self._watches.append(_Watch(path, token, state.change_seq))
        self._events.append(WatchEvent(path, token))  # xenstored fires every new watch once

    def unwatch(self, path: str, token: str) -> None:
        path = self._watch_path(path, "unwatch")
        with self._request("unwatch", path, write=False):
            pass  # only for failure injection and the closed check
        for w in self._watches:
            if w.path == path and w.token == token:
                self._watches.remove(w)
                break
        else:
            raise XenstoreError("unwatch", errno.ENOENT, path, detail=f"no watch with token {token!r}")
        # libxenstore drops events of a removed watch that were not read yet.
        self._events = deque(
            e for e in self._events if not (e.token == token and watch_event_path(path, e.path, False) is not None)
        )

    def _collect(self, state: HostState) -> None:
        """Queue the events the changes since our cursor make for our watches."""
        if state.change_seq <= self._cursor:
            return
        oldest = state.changes[0][0] if state.changes else state.change_seq + 1
        if oldest > self._cursor + 1:
            # The log no longer goes back far enough: tell every watch something changed (a
            # spurious event is allowed; a lost one is not).
            for w in self._watches:
                self._events.append(WatchEvent(w.path, w.token))
        for seq, changed, removed_subtree in state.changes:
            if seq <= self._cursor:
                continue
            for w in self._watches:
                if seq <= w.since_seq:
                    continue
                event_path = watch_event_path(w.path, changed, removed_subtree)
                if event_path is not None:
                    self._events.append(WatchEvent(event_path, w.token))
        self._cursor = state.change_seq

    def read_watch(self, timeout: float | None) -> WatchEvent | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._events:
                return self._events.popleft()
            if self._watches:
                with self._request("read_watch", "(watch)", write=False) as state:
                    self._collect(state)
                if self._events:
                    return self._events.popleft()
            elif self._closed:
                raise XenstoreError("read_watch", errno.EBADF, "(watch)", detail="connection closed")
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                time.sleep(min(POLL_INTERVAL, remaining))
            else:
                time.sleep(POLL_INTERVAL)

    # -- domains ----------------------------------------------------------------------------------

    def _require_privilege(self, op: str, path: str) -> None:
        if not self._caller.privileged:
            raise XenstoreError(op, errno.EACCES, path, detail="only dom0 may do this")

    def introduce_domain(self, domid: int, store_mfn: int, store_evtchn: int) -> None:
        with self._request("introduce_domain", INTRODUCE_DOMAIN) as state:
            self._require_privilege("introduce_domain", INTRODUCE_DOMAIN)
            if domid not in state.domains or domid == 0:
                raise XenstoreError("introduce_domain", errno.EINVAL, INTRODUCE_DOMAIN, domid, "no such guest domain")
            previous = state.introduced.get(domid)
            if previous is not None and previous != (store_mfn, store_evtchn):
                raise XenstoreError(
                    "introduce_domain", errno.EEXIST, INTRODUCE_DOMAIN, domid, "already introduced with another ring"
                )
            state.introduced[domid] = (store_mfn, store_evtchn)
            state.log_change(INTRODUCE_DOMAIN)

    def release_domain(self, domid: int) -> None:
        with self._request("release_domain", RELEASE_DOMAIN) as state:
            self._require_privilege("release_domain", RELEASE_DOMAIN)
            state.introduced.pop(domid, None)  # releasing an unknown domain is harmless here
            state.log_change(RELEASE_DOMAIN)

    def is_introduced(self, domid: int) -> bool:
        """Whether xenstored knows the domain (xs_is_domain_introduced)."""
        with self._request("is_introduced", INTRODUCE_DOMAIN, write=False) as state:
            return domid in state.introduced

    def close(self) -> None:
        self._closed = True
        self._transactions.clear()
        self._watches.clear()
        self._events.clear()

