"""Waiting for a stack to show something: poll a check until it returns something true, or
fail naming what did not happen (and the last thing the check saw)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def until(what: str, check: Callable[[], T], timeout_s: float = 30.0, every_s: float = 0.5) -> T:
    """`check()`'s first true result within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:.0f} s: {what} (last: {found!r})")
        time.sleep(every_s)
    return found


async def until_async(
    what: str, check: Callable[[], T], timeout_s: float = 60.0, every_s: float = 2.0
) -> T:
    """As `until`, without blocking the event loop between checks."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:.0f} s: {what} (last: {found!r})")
        await asyncio.sleep(every_s)
    return found
