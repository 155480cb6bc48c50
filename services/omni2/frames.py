"""A connection's frames at OMNI2: read as they come, its messages answered one at a time.

The dashboard's per-connection limits hold here too, for a client that reaches OMNI2 without
it (through Traefik, or straight): every frame costs a token of the connection's
`FrameThrottle`, and the messages awaiting their answer are capped. For the cap to hold, and
for a ping to be answered while a message is, frames are read apart from answering: the
reader queues messages in an `Inbox`, and one worker answers them in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from services.common.limits import FrameThrottle
from services.common.protocol import ClientMessage
from services.omni2.settings import Omni2Settings


class Inbox:
    """Messages read and not yet answered, taken in order by the one worker answering them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: deque[ClientMessage] = deque()
        self._arrived = asyncio.Event()
        self._unanswered = 0  # the messages waiting, and the one being answered
        self._closed = False

    def put(self, frame: ClientMessage) -> bool:
        """Queue a message; False when `limit` messages already await their answer."""
        if self._unanswered >= self.limit:
            return False
        self._unanswered += 1
        self._waiting.append(frame)
        self._arrived.set()
        return True

    async def take(self) -> ClientMessage | None:
        """The next message to answer; None once closed (those still waiting never are)."""
        while not self._waiting and not self._closed:
            self._arrived.clear()
            await self._arrived.wait()
        return None if self._closed else self._waiting.popleft()

    def answered(self) -> None:
        self._unanswered -= 1

    def close(self) -> None:
        self._closed = True
        self._arrived.set()


@dataclass
class FrameGate:
    """The connection's frame rate, and what it refused: recorded once, when it ends."""

    throttle: FrameThrottle
    first_refused_ns: int | None = None  # where the connection's chat.refused span starts
    closed: bool = False  # closed with 1008: the client kept flooding after being told
    held: int = 0  # messages answered with the rate limit's refusal while it held the user

    @classmethod
    def of(cls, settings: Omni2Settings) -> FrameGate:
        return cls(
            FrameThrottle(settings.frames_per_second, settings.frame_burst, settings.abuse_frames)
        )

    def allow(self) -> bool:
        """Count one frame; False when it must be refused."""
        if self.throttle.allow():
            return True
        if self.first_refused_ns is None:
            self.first_refused_ns = time.time_ns()
        return False

    @property
    def refused(self) -> int:
        return self.throttle.refused

    @property
    def abusive(self) -> bool:
        return self.throttle.abusive
