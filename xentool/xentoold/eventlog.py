"""The daemon's memory of recent events, and of each guest as last seen: what a subscriber is
sent, and what a client that reconnects is told it missed.

Nothing here outlives the daemon, and nothing needs to: a new daemon run has a new epoch, and a
client whose token names an older one is sent the guests as they are now, from which it works out
what changed (xentool.daemon_client.follow_events).
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import deque
from collections.abc import Iterable

from xentool.events import Event, GuestView

KEEP = 4096  # events kept for replay; a client away for longer than that many events resynchronises


class EventLog:
    def __init__(self, keep: int = KEEP) -> None:
        self.epoch = secrets.token_hex(4)
        self._events: deque[Event] = deque(maxlen=keep)
        self._guests: dict[int, GuestView] = {}
        self._seq = 0
        self._looked = False  # whether the observer has looked at the host yet
        self._changed = threading.Condition()

    def token(self, seq: int | None = None) -> str:
        return f"{self.epoch}:{self._seq if seq is None else seq}"

    def add(self, events: Iterable[Event], guests: dict[int, GuestView] | None = None) -> None:
        """Append ``events`` (numbered here, in order) and, if given, the new look at the guests."""
        with self._changed:
            for event in events:
                self._seq += 1
                self._events.append(dataclasses.replace(event, seq=self._seq))
            if guests is not None:
                self._guests = dict(guests)
                self._looked = True
            self._changed.notify_all()

    def wait_for_first_look(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._looked, timeout)

    def guests(self) -> dict[int, GuestView]:
        with self._changed:
            return dict(self._guests)

    def guest(self, domid: int | None) -> GuestView | None:
        with self._changed:
            return self._guests.get(domid) if domid is not None else None

    def since(self, token: str | None) -> list[Event] | None:
        """The events after ``token``; None when they cannot be told (another run's token, or
        events since dropped), and the client must resynchronise."""
        if not token or ":" not in token:
            return None
        epoch, _, seq_text = token.partition(":")
        if epoch != self.epoch or not seq_text.isdigit():
            return None
        seq = int(seq_text)
        with self._changed:
            if seq > self._seq:
                return None
            oldest = self._events[0].seq if self._events else self._seq + 1
            if seq < oldest - 1:
                return None
            return [event for event in self._events if event.seq > seq]

    def wait_after(self, seq: int, timeout: float) -> list[Event]:
        """The events numbered above ``seq``, waiting up to ``timeout`` for one."""
        with self._changed:
            self._changed.wait_for(lambda: self._seq > seq, timeout)
            return [event for event in self._events if event.seq > seq]

    @property
    def last_seq(self) -> int:
        with self._changed:
            return self._seq


__all__ = ["EventLog"]
