"""`in_own_thread`: torch work run in a short-lived thread, so the calling thread keeps no CPU
thread team.

Why: torch's CPU parallel backend is OpenMP (GNU libgomp). Every thread that runs a parallel
region keeps its own team of worker threads until it ends, and once the teams' threads outnumber
the cores, every team stops spinning between parallel regions and sleeps instead: each of a
decoding step's hundreds of small parallel ops then pays a wake-up. An engine built and measured
in the caller's thread, or a query embedded there, would leave a team behind that slows every
later step of the engine's loop thread; run there, its team ends with the thread.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def in_own_thread(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """fn(*args, **kwargs) in a new thread that ends before this returns; its exceptions are
    raised here."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llma-setup") as pool:
        return pool.submit(fn, *args, **kwargs).result()
