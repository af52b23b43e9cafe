"""Per browser session: is an answer streaming, has the user asked to stop it or to clear the chat,
how many questions wait behind it. The Stop and Clear handlers run at once (outside the queue)
and only set flags here; the streaming handler reads them after every step."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class SessionControl:
    """`epoch` grows with every clear: a turn that began in an older epoch belongs to a cleared
    chat, and its text must reach neither the chat nor the history the model sees."""

    epoch: int = 0
    streaming: bool = False
    queued: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> int:
        """A turn starts (it was queued, if anything was): returns its epoch."""
        with self.lock:
            self.streaming = True
            self.queued = max(0, self.queued - 1)
            self.stop.clear()
            return self.epoch

    def end(self) -> None:
        with self.lock:
            self.streaming = False

    def enqueue(self) -> bool:
        """A question was sent; True when it has to wait for this session's current answer."""
        with self.lock:
            waits = self.streaming or self.queued > 0
            self.queued += 1
            return waits

    def request_stop(self) -> bool:
        """Stop the streaming answer; False when none is streaming."""
        with self.lock:
            if not self.streaming:
                return False
            self.stop.set()
            return True

    def clear(self) -> None:
        """Forget the chat: the streaming answer, if any, is stopped and dropped."""
        with self.lock:
            self.epoch += 1
            self.stop.set()

    def cleared_since(self, epoch: int) -> bool:
        return self.epoch != epoch


class Controls:
    """The `SessionControl` of every open session, by Gradio's session hash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, SessionControl] = {}

    def get(self, session: str | None) -> SessionControl:
        """The session's control (a throw-away one when there is no session: API calls without one)."""
        if session is None:
            return SessionControl()
        with self._lock:
            return self._sessions.setdefault(session, SessionControl())

    def drop(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(session or "", None)

    def __len__(self) -> int:
        return len(self._sessions)
