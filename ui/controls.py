"""Per browser session: is an answer streaming, has the user asked to stop it or to clear the chat,
which questions wait behind it. The send, Stop and Clear handlers run at once (outside the queue)
and only record here; the streaming handler takes the questions in order and reads the flags
after every step."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class SessionControl:
    """`epoch` grows with every clear: a turn that began in an older epoch belongs to a cleared
    chat, and its text must reach neither the chat nor the history the model sees."""

    epoch: int = 0
    streaming: bool = False
    pending: deque[str] = field(default_factory=deque)  # questions sent, not yet begun
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def queued(self) -> int:
        """Questions that wait for an answer before them (the next one to begin excluded)."""
        return max(0, len(self.pending) - (0 if self.streaming else 1))

    def enqueue(self, question: str) -> bool:
        """A question was sent; True when it has to wait for an answer before it."""
        with self.lock:
            self.pending.append(question)
            return self.streaming or len(self.pending) > 1

    def next_question(self) -> str | None:
        with self.lock:
            return self.pending.popleft() if self.pending else None

    def begin(self) -> int:
        """A turn starts: returns its epoch."""
        with self.lock:
            self.streaming = True
            self.stop.clear()
            return self.epoch

    def end(self) -> None:
        with self.lock:
            self.streaming = False

    def request_stop(self) -> bool:
        """Stop the streaming answer; False when none is streaming."""
        with self.lock:
            if not self.streaming:
                return False
            self.stop.set()
            return True

    def clear(self) -> None:
        """Forget the chat: the streaming answer, if any, is stopped and dropped, and the questions
        waiting behind it (asked in that chat) are dropped too."""
        with self.lock:
            self.epoch += 1
            self.pending.clear()
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
