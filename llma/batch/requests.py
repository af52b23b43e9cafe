"""The scheduler's records: a submitted request, the plan of its block in one step, the totals."""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import torch

from llma.batch.step import Block, BlockOut
from llma.sequence import DecodeState
from llma.static.packing import PackedBlock
from llma.types import Draft


@dataclass(eq=False)
class Request:
    """A submitted request: its decoding state, where its events go, and (once admitted) its slot.
    Compared by identity."""

    state: DecodeState
    prompt: list[int]
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    length: int = 0  # its attention length L
    cached: int = 0  # tokens in its slot
    reused: int = 0  # prompt tokens restored from stored chunks when it was admitted

    @property
    def prefilling(self) -> bool:
        return self.cached < len(self.prompt)


@dataclass
class Plan:
    """One request's part of a step: its block, the drafts in it, and how they are packed (None for
    a prompt chunk)."""

    request: Request
    block: Block
    drafts: list[Draft]
    packing: PackedBlock | None
    cap: int  # the longest draft its block took

    def draft_logits(self, out: BlockOut, every: bool) -> torch.Tensor:
        """From this plan's step `out`: the first draft's rows [rows, vocab], or with `every` each
        draft's [drafts, longest, vocab] (shorter drafts padded with their first row, never read)."""
        index = self.packing.index
        if not every:
            return out.logits(index[0])
        longest = max(map(len, index))
        flat = [i for rows in index for i in rows + rows[:1] * (longest - len(rows))]
        return out.logits(flat).view(len(index), longest, -1)

    def detached(self, out: BlockOut) -> BlockOut:
        """`out`, its logits copied out where this plan's verdict reads them (a prompt chunk's last
        row, a verifier that reads logits): valid after the step's buffers are reused by the next."""
        if self.packing is not None and self.request.state.argmax_rule:
            return out
        picked = torch.tensor(out.rows, dtype=torch.long, device=out.source.device)
        return BlockOut(out.argmax, out.source[picked], list(range(len(out.rows))))


@dataclass
class SchedulerStats:
    """Totals since start: steps, request-steps, rows, prompt tokens admitted and those restored from
    stored chunks (llma.batch.prefix), and where the loop's time went."""

    steps: int = 0
    request_steps: int = 0
    rows: int = 0
    forward_s: float = 0.0
    host_s: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0

    def count(self, plans: list[Plan], started: float, planned: float, launched: float, waited: float,
              ran: float, done: float) -> float:
        """A step's totals (perf_counter times): starting it (planned..launched) and waiting for it
        (waited..ran) are the forward's time, the rest the host's (returned)."""
        self.steps += 1
        self.request_steps += len(plans)
        self.rows += sum(len(p.block) for p in plans)
        self.forward_s += (launched - planned) + (ran - waited)
        host = (planned - started) + (waited - launched) + (done - ran)
        self.host_s += host
        return host

    @property
    def host_share(self) -> float:
        """The share of the loop's busy time spent on the host (planning, verdicts, events), not
        starting a step or waiting for it. Host work done while a step runs on a CUDA device (the
        events always; with `overlap`, the other group's verdicts and plans) counts too."""
        busy = self.forward_s + self.host_s
        return self.host_s / busy if busy else 0.0
