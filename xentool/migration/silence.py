"""The receiver's guard against a sender that went silent: a link that dropped, a source host that
died.  Neither ssh (sshd sends no keepalives unless told to) nor a pipe tells the receiver, and
xc_domain_restore would wait in its read for ever, holding a half-built domain.  So the sender's
bytes reach the receiver through a pipe fed by a thread that gives up, and ends the pipe, when
the sender has said nothing for a while: the reader sees the end and the receiver undoes what it
made.  The sender is never silent for long while the receiver waits on it (it streams, or answers
at once), and while the receiver is busy the thread waits on the pipe, not on the sender.  The
same thread undoes the stream's compression (xentool.migration.compression) once the offer has
said the sender compresses.
"""

from __future__ import annotations

import os
import select
import threading
from typing import Any

from xentool.migration.compression import decompressor, widen_pipe
from xentool.savefile import write_all

SENDER_SILENCE_SECONDS = 60.0
CHUNK = 1 << 20


class SilenceGuard:
    """``fd``: the sender's bytes, ending when ``source`` ends or is silent for ``seconds``
    (then ``silent`` is True)."""

    def __init__(self, source: int, seconds: float = SENDER_SILENCE_SECONDS) -> None:
        self.seconds = seconds
        self.silent = False
        self.damaged: str | None = None  # why the compressed stream could not be read
        self._decompressor: Any = None
        self.fd, write_end = os.pipe2(os.O_CLOEXEC)
        widen_pipe(write_end)
        self._wake_read, self._wake = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, args=(source, write_end), name="sender-silence", daemon=True)
        self._thread.start()

    def _run(self, source: int, write_end: int) -> None:
        try:
            while True:
                ready, _, _ = select.select([source, self._wake_read], [], [], self.seconds)
                if self._wake_read in ready:
                    return
                if not ready:
                    self.silent = True
                    return
                data = os.read(source, CHUNK)
                if not data:
                    return
                if self._decompressor is not None:
                    data = self._decompressor.decompress(data)
                write_all(write_end, data)
        except OSError:
            return  # the reader closed its end
        except Exception as e:  # noqa: BLE001 - zstandard's errors: the stream is cut here, and the receiver says why
            self.damaged = str(e) or type(e).__name__
        finally:
            os.close(write_end)
            os.close(self._wake_read)

    def decompress_from_now(self, method: str) -> None:
        """What the sender sends from here on is compressed with ``method``.  Safe to switch while
        the thread runs: the sender sends nothing more until it is answered after this."""
        self._decompressor = decompressor(method)

    def close(self) -> None:
        os.close(self._wake)  # wakes the thread if it waits on the sender
        try:
            os.close(self.fd)
        except OSError:
            pass
        self._thread.join(10)


__all__ = ["SENDER_SILENCE_SECONDS", "SilenceGuard"]
