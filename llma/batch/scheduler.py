"""Continuous batching: requests join and leave between steps; one forward a step over all of them.

A background thread runs the loop: take new requests (up to one per free slot, the others wait in
arrival order), drop cancelled ones (their slots freed before the next step), give each running
request its block (the next chunk of its prompt, or its last token and packed drafts within the
step's tier), run one forward, and turn each request's rows into its verdict and `StepEvent`.
Each request decodes by the rules it would follow alone (llma.sequence.DecodeState), so its output
is the same whatever shares its steps. With a `PrefixStore`, a request's prompt starts from the
stored chunks it begins with (the same bits it would compute, llma.batch.prefix), and each whole
chunk it computes is stored.

With `overlap`, the running requests take turns in two groups: while one group's step runs on the
device, the other group's last results become verdicts and events and its next blocks (step t+1's
drafts) are planned. Each step then holds about half the requests; outputs do not change (each
request's rows keep their bits whatever shares the step), only where the host's time goes.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence

from llma.batch.budget import RowBudget, Tier
from llma.batch.prefix import PrefixStore
from llma.batch.requests import Plan, Request, SchedulerStats
from llma.batch.runner import MAX_ROWS, PREFILL_CHUNK, PREFILL_TOKENS, BatchRunner, prompt_pieces
from llma.batch.step import Block, BlockOut
from llma.sequence import DecodeState
from llma.static.packing import draft_caps
from llma.types import StepEvent
from llma.verifier import Verdict

log = logging.getLogger(__name__)

_END = object()  # after a request's last event


class Scheduler:
    """Decodes submitted requests together on `runner`; `submit` returns the request's events.

    `overlap`: two groups in turn (the module's docstring); may be switched while no request runs.
    `prefixes`: stored prompt chunks to start prompts from (None: every prompt computed whole)."""

    def __init__(self, runner: BatchRunner, budget: RowBudget, overlap: bool = False,
                 prefixes: PrefixStore | None = None) -> None:
        self.runner = runner
        self.budget = budget
        self.overlap = overlap
        self.prefixes = prefixes
        self.stats = SchedulerStats()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._unseen = 0  # requests submitted, not yet taken in by the loop
        self._outbox: list[tuple[queue.SimpleQueue, object]] = []  # events not yet handed to their readers
        # With `overlap`: the plans of the group that steps next, and the last group's results not yet applied.
        self._ready: list[Plan] = []
        self._done: list[tuple[Plan, BlockOut]] = []

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def cached_tokens(self) -> int:
        return sum(r.cached for r in list(self._running))

    @property
    def waiting(self) -> int:
        return len(self._waiting) + self._unseen

    def submit(self, state: DecodeState, prompt: list[int]) -> Iterator[StepEvent]:
        """Queue a request; its events, one per step it took part in, the last `finished`. Closing
        the iterator (or leaving it unread and dropping it) cancels the request."""
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        request = Request(state, list(prompt))
        self._ensure_thread()
        with self._lock:
            self._unseen += 1
        self._inbox.put(request)
        return self._events(request)

    def close(self) -> None:
        """Stop the loop; requests still running get a RuntimeError."""
        self._closed = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _events(self, request: Request) -> Iterator[StepEvent]:
        try:
            while True:
                item = request.events.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled.set()
            self._inbox.put(None)  # wake the loop: the slot is freed before its next step

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=_run, args=(weakref.ref(self),), name="llma-batch",
                                                daemon=True)
                self._thread.start()

    def _turn(self) -> bool:
        """One pass of the loop (waiting at most a second for work when idle); False once closed."""
        if self._closed:
            self._end()
            return False
        if not self._running:
            self._deliver()
        self._take(block=not self._running and not self._waiting)
        self._drop_cancelled()
        self._admit()
        if self._running:
            try:
                self._overlapped() if self.overlap else self._step()
            except Exception as err:  # noqa: BLE001 (the step failed: its requests end with the error)
                log.exception("a batch step failed; its %d requests end with the error", len(self._running))
                self._ready, self._done = [], []
                for r in list(self._running):
                    self._finish(r, err)
        return True

    def _end(self) -> None:
        self._take(block=False)
        for r in [*self._running, *self._waiting]:
            self._finish(r, RuntimeError("the scheduler was closed"))
        self._deliver()

    def _deliver(self) -> None:
        """Hand the events held back to their readers (each `put` may wake a reader's thread)."""
        outbox, self._outbox = self._outbox, []
        for events, item in outbox:
            events.put(item)

    def _take(self, block: bool) -> None:
        try:
            item = self._inbox.get(block=block, timeout=1.0 if block else None)
            while True:
                if item is not None:
                    self._waiting.append(item)
                    with self._lock:
                        self._unseen -= 1
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass

    def _drop_cancelled(self) -> None:
        for r in [r for r in self._running if r.cancelled.is_set()]:
            self._finish(r, None)
        self._waiting = deque(r for r in self._waiting if not r.cancelled.is_set())

    def _admit(self) -> None:
        while self._waiting and self.runner.cache.free:
            r = self._waiting.popleft()
            r.slot = self.runner.cache.acquire()
            max_new = r.state.stop.max_new_tokens
            r.length = self.runner.attention_length(len(r.prompt) + max_new + MAX_ROWS)
            if self.prefixes is not None:
                r.cached = r.reused = self.prefixes.restore(r.slot, r.prompt)
            self.stats.prompt_tokens += len(r.prompt)
            self.stats.reused_tokens += r.reused
            self._running.append(r)

    def _finish(self, r: Request, error: BaseException | None) -> None:
        if r in self._running:
            self._running.remove(r)
            self.runner.cache.release(r.slot)
            r.slot = -1
        if error is not None:
            self._outbox.append((r.events, error))
        self._outbox.append((r.events, _END))

    def _step(self) -> None:
        started = time.perf_counter()
        plans = self._plans(self._running)
        planned = time.perf_counter()
        result = self.runner.launch([p.block for p in plans])
        launched = time.perf_counter()
        # The last step's events go to their readers while this one runs on the device.
        self._deliver()
        delivered = time.perf_counter()
        outs = result()
        ran = time.perf_counter()
        self._apply_all(zip(plans, outs))
        self._count(plans, started, planned, launched, delivered, ran, time.perf_counter())

    def _overlapped(self) -> None:
        """One group's step; while it runs, the other group's results are applied and its next
        blocks planned. The group planned last steps next (requests that joined go with it)."""
        started = time.perf_counter()
        ready = [p for p in self._ready if p.request.slot >= 0]
        done = [(p, out) for p, out in self._done if p.request.slot >= 0]
        self._ready, self._done = [], []
        if not ready:  # nothing planned ahead: plan every request, step half of them now
            self._apply_all(done)
            done = []
            plans = self._plans(self._running)
            ready, self._ready = plans[::2], plans[1::2]
            if not ready:  # the last ones finished
                return
        planned = time.perf_counter()
        result = self.runner.launch([p.block for p in ready])
        launched = time.perf_counter()
        self._apply_all(done)
        self._deliver()
        busy = {id(p.request) for p in [*ready, *self._ready]}
        taken = sum(prompt_pieces(len(p.block)) for p in self._ready if p.packing is None)
        self._ready += self._plans([r for r in self._running if id(r) not in busy], taken)
        prepared = time.perf_counter()
        outs = result()
        ran = time.perf_counter()
        # The next step may reuse this one's buffers before these are applied: logits read later are copied.
        self._done = [(p, p.detached(out)) for p, out in zip(ready, outs)]
        self._count(ready, started, planned, launched, prepared, ran, time.perf_counter())

    def _count(self, plans: Sequence[Plan], *times: float) -> None:
        """A step's totals (`SchedulerStats.count`) and its host work per request to the budget."""
        host = self.stats.count(plans, *times)
        self.budget.observe_host(host / len(plans), any(p.cap and p.request.state.proposer for p in plans))

    def _plans(self, requests: Sequence[Request], taken: int = 0) -> list[Plan]:
        """Each request's block for a step shared by `requests` (the tier set by how many decode);
        prompt chunks up to PREFILL_TOKENS (in pieces of MAX_ROWS rows, `taken` of them already
        planned for the step), the other prompts wait."""
        decoding = [r for r in requests if not r.prefilling]
        tier = self.budget.tier(max(1, len(decoding)), any(r.state.proposer for r in decoding), self.overlap)
        plans = []
        room = PREFILL_TOKENS // MAX_ROWS - taken
        for r in requests:
            if r.prefilling:
                need = prompt_pieces(min(PREFILL_CHUNK, len(r.prompt) - r.cached))
                if need > room:
                    continue
                room -= need
            plans.append(self._plan(r, tier))
        return plans

    def _apply_all(self, results) -> None:  # noqa: ANN001 (pairs of Plan, BlockOut)
        batch = len(self._running)
        moves: list[tuple[int, int, int, int]] = []  # kept drafts' keys into place, all at once
        for p, out in results:
            self._apply(p, out, batch, moves)
        self.runner.cache.move_many(moves)

    def _plan(self, r: Request, tier: Tier) -> Plan:
        if r.prefilling:
            chunk = r.prompt[r.cached : r.cached + PREFILL_CHUNK]
            last = r.cached + len(chunk) == len(r.prompt)
            return Plan(r, Block.chunk(r.slot, r.cached, chunk, r.length, last), [], None, 0)
        state = r.state
        count = tier.drafts if state.rows_rule else min(tier.drafts, 1)
        caps = draft_caps(tier.rows, count) if count > 1 else ()
        drafts = state.propose(count, caps, tier.max_draft) if tier.drafts else []
        block, packing = Block.packed(r.slot, r.cached, state.rows(drafts), r.length)
        return Plan(r, block, drafts, packing, caps[0] if caps else tier.max_draft)

    def _apply(self, p: Plan, out: BlockOut, batch: int, moves: list[tuple[int, int, int, int]]) -> None:
        r = p.request
        if p.packing is None:  # a prompt chunk
            r.cached += len(p.block)
            if self.prefixes is not None:
                self.prefixes.save(r.slot, r.prompt, r.cached)
            if r.prefilling:
                return
            event = r.state.start(r.state.verifier.verify(out.logits([-1]), (), 0), batch, r.reused)
        else:
            index = p.packing.index
            argmax = out.argmax
            verdict: Verdict = r.state.verdict(p.drafts, lambda: [[argmax[i] for i in rows] for rows in index],
                                               lambda: p.draft_logits(out, r.state.rows_rule))
            kept = verdict.accepted
            if kept and p.packing.shift[verdict.draft]:
                source = r.cached + 1 + p.packing.shift[verdict.draft]
                moves.append((r.slot, source, r.cached + 1, kept))
            r.cached += 1 + kept
            if p.drafts:
                draft = p.drafts[verdict.draft]
                self.budget.observe(kept, kept == len(draft) and len(draft) >= p.cap)
            event = r.state.advance(p.drafts, verdict, batch)
        self._outbox.append((r.events, event))
        if event.finished:
            self._finish(r, None)


def _run(ref: weakref.ref) -> None:
    """The loop thread: holds its scheduler only during a pass, so a scheduler nobody else holds
    (its engine dropped, no request streaming) is freed with its cache, and the thread ends."""
    while True:
        scheduler = ref()
        if scheduler is None or not scheduler._turn():
            return
        del scheduler

