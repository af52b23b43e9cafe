"""The decoding benchmark's methods as runners: a call decodes one prompt and returns its tokens,
forward passes, proposed and accepted draft tokens (HF `generate` reports no forwards: 0, 0, 0)."""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch

from benchmarks.data import BenchPrompt
from llma.decoder import collect
from llma.engine import Engine, LLMAConfig
from llma.history import AnswerHistory
from llma.loading import LoadedModel, load_model
from llma.types import StepEvent
from llma.verifier import ForcedVerifier

Runner = Callable[[BenchPrompt], tuple[list[int], int, int, int]]  # tokens, forwards, proposed, accepted



def setup(args: argparse.Namespace) -> LoadedModel:
    """A model benchmark's start: logging, torch's threads (`args.threads`, 0: its default) and the
    model (`args.model`, `args.device`, `args.dtype`)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_model(args.model, device=args.device, dtype=args.dtype)

def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hf_runner(loaded: LoadedModel, max_new: int, forced: bool, lookup: int = 0) -> Runner:
    """HF `generate`; forced mode decodes freely to the target's length (HF cannot be forced)."""
    model = loaded.model

    def run(p: BenchPrompt) -> tuple[list[int], int, int, int]:
        ids = torch.tensor([p.prompt], device=loaded.device)
        n = min(max_new, len(p.target)) if forced and p.target else max_new
        kwargs = {"min_new_tokens": n, "eos_token_id": None} if forced else {}
        if lookup:
            kwargs["prompt_lookup_num_tokens"] = lookup
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                             pad_token_id=model.generation_config.eos_token_id, **kwargs)
        tokens = out[0, len(p.prompt):].tolist()
        return tokens, 0, 0, 0  # HF does not report its forward passes

    return run


class FirstToken:
    """When a generation's first token was ready, in seconds from `start`. On CUDA the marks are
    events on the GPU's queue, read once it has synchronised: in forced decoding the host never waits
    for the GPU, so its own clock at the first event says only when the prefill was queued."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._marks: list[float | torch.cuda.Event] = []

    def start(self) -> None:
        self._marks = [self._now()]

    def seconds(self) -> float:
        """After the device has synchronised: the first token's time since `start`."""
        begin, first = self._marks[:2]
        return begin.elapsed_time(first) / 1000 if self.cuda else first - begin

    def _now(self) -> float | torch.cuda.Event:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def marking(self, events: Iterator[StepEvent]) -> Iterator[StepEvent]:
        """`events`, marking when the first one comes (the prefill's token)."""
        for i, event in enumerate(events):
            if i == 0:
                self._marks.append(self._now())
            yield event


class EngineRunner:
    """One of our methods: `engine` with `config` (forced: to each prompt's target), learning from
    its own answers only (an `AnswerHistory` per method, emptied after the warm-up by `reset`);
    `clock` has when each call's first token was ready."""

    def __init__(self, engine: Engine, config: LLMAConfig, forced: bool) -> None:
        self.engine = engine
        self.config = config
        self.forced = forced
        self.history = AnswerHistory()
        self.clock = FirstToken(engine.loaded.device)

    def __call__(self, p: BenchPrompt) -> tuple[list[int], int, int, int]:
        self.clock.start()
        config = self.config
        target = p.target[: config.max_new_tokens] if self.forced and p.target else None
        cfg = replace(config, max_new_tokens=len(target)) if target else config
        events = self.engine.stream(p.prompt, p.references, cfg, ForcedVerifier(target) if target else None,
                                    self.history)
        result = collect(self.clock.marking(events))
        s = result.stats
        return result.tokens, s.forward_passes, s.proposed_tokens, s.accepted_tokens

    def reset(self) -> None:
        self.history.clear()
