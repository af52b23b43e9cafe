"""Short version of `python -m reliability.engine_run` (500 generations, run on the GPU): 30
generations on one Engine with prompts of many lengths, every 5th stream abandoned after a few
steps, through the generic HF loop and the static backend. None fails, the KV cache never holds
more than the last generation, and memory stays flat."""
from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from llma import Engine, LLMAConfig
from llma_fixtures import tiny_llama
from reliability.engine_run import figures, run_engine


@dataclass
class Prompt:
    prompt: list[int]
    references: dict[str, list[int]]


def prompts(count: int, seed: int = 0) -> list[Prompt]:
    """Random prompts of 1-24 tokens that end inside their reference, so drafts are proposed."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ref = [rng.randrange(3, 97) for _ in range(rng.randrange(8, 40))]
        start = rng.randrange(len(ref) - 4)
        head = [rng.randrange(3, 97) for _ in range(rng.randrange(0, 20))]
        out.append(Prompt(head + ref[start : start + 4], {"doc": ref}))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hf", "static"])
def test_thirty_generations_hold_nothing_beyond_the_last(backend: str) -> None:
    engine = Engine(tiny_llama(context=128), backend=backend)
    run = run_engine(engine, prompts(30), LLMAConfig(max_new_tokens=16), abandon_every=5)
    found = figures(run)
    assert run.failed == [] and found["generations"] == 30 and found["abandoned"] == 6
    assert found["kv_tokens_max"] > 0 and found["kv_tokens_beyond_held_max"] <= 0
    assert found["tokens"] > 0 and found["tokens_per_forward"] >= 1.0
    assert found["rss_second_half_growth_mb"] < 50  # loose: allocator noise on a short run
