"""The batch engine's parts: row-invariant products and attention, the slot cache, the row budget."""
from __future__ import annotations

import pytest
import torch

from llma.batch import CostModel, RowBudget
from llma.batch.cache import SlotCache
from llma.batch.rows import (KEY_CHUNK, block_attention, choose_tile, chunk_attention, chunk_mask, key_span, linear,
                             padded, span_invariant)


def test_linear_rows_do_not_depend_on_the_row_count():
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(n, k, generator=g) for n, k in ((960, 576), (576, 1536), (3072, 576))]
    tile = choose_tile(weights)
    if tile is None:  # a property of this CPU's BLAS, which the engine checks at start-up and reports
        pytest.skip("this CPU's fp32 GEMM rounds rows by row count at every tile for these shapes (MKL on "
                    "AVX-512/AMX CPUs; MKL_CBWR=AUTO,STRICT makes them invariant): fp32 batch engines here "
                    "report invariant=False")
    assert padded(1, tile) == tile and padded(tile + 1, tile) == 2 * tile
    x = torch.randn(70, 576, generator=g)
    full = linear(x, weights[0], tile)
    for n in (1, 2, 3, 5, 9, 33):
        assert torch.equal(linear(x[:n], weights[0], tile), full[:n])


def _attention_case(rows, drafts, seed=0):
    g = torch.Generator().manual_seed(seed)
    heads, kv, d, length, pos = 6, 2, 16, 128, 40
    q = torch.randn(rows, heads, d, generator=g)
    keys, values = (torch.randn(kv, length, d, generator=g) for _ in "kv")
    return q, keys, values, pos


@pytest.mark.parametrize("tile", [4, 16])
def test_a_row_attends_the_same_alone_or_in_a_larger_block(tile):
    q, keys, values, pos = _attention_case(12, 1)
    rel = torch.arange(12)
    owner = torch.zeros(12, dtype=torch.long)
    full = block_attention(q, keys, values, pos, rel, owner, torch.tensor([0]), 0.25, tile)
    for n in (1, 3, 7):
        part = block_attention(q[:n], keys, values, pos, rel[:n], owner[:n], torch.tensor([0]), 0.25, tile)
        assert torch.equal(part, full[:n])
    # the same query as the first token of a packed draft (keys shifted 5 slots on) gets the same bits
    shifted = keys.clone()
    shifted[:, pos + 1 + 5 : pos + 1 + 5 + 2] = keys[:, pos + 1 : pos + 3]
    vals = values.clone()
    vals[:, pos + 1 + 5 : pos + 1 + 5 + 2] = values[:, pos + 1 : pos + 3]
    packed_q = torch.cat((q[:1], torch.zeros(5, *q.shape[1:]), q[1:3]))
    packed = block_attention(packed_q, shifted, vals, pos, torch.tensor([0, 1, 2, 3, 4, 5, 1, 2]),
                             torch.tensor([0, 0, 0, 0, 0, 0, 1, 1]), torch.tensor([0, 5]), 0.25, tile)
    assert torch.equal(packed[6:8], full[1:3]) and torch.equal(packed[:1], full[:1])


def test_a_prompt_chunk_attends_as_block_attention_does_and_ignores_the_keys_it_cannot_see():
    q, keys, values, pos = _attention_case(24, 1)
    groups = q.shape[1] // keys.shape[0]
    mask = chunk_mask(keys.shape[1], pos, 24, groups)
    fused = chunk_attention(q, keys, values, 0.25, mask)
    slow = block_attention(q, keys, values, pos, torch.arange(24), torch.zeros(24, dtype=torch.long),
                           torch.tensor([0]), 0.25, 4)
    assert fused.shape == slow.shape and torch.allclose(fused, slow, atol=1e-5)
    # the keys after the chunk's last row (another request's leftovers in a reused slot) change no bit
    later = pos + 24
    noisy_k, noisy_v = keys.clone(), values.clone()
    noisy_k[:, later:], noisy_v[:, later:] = 1e4, -1e4
    assert torch.equal(chunk_attention(q, noisy_k, noisy_v, 0.25, mask), fused)
    assert torch.equal(chunk_attention(q, keys, values, 0.25, mask), fused)  # the same bits every time


def test_slot_cache_hands_out_and_takes_back_slots():
    cache = SlotCache(2, 3, 1, 16, 4, torch.float32, torch.device("cpu"))
    slots = [cache.acquire() for _ in range(3)]
    assert sorted(slots) == [0, 1, 2] and cache.free == 0
    with pytest.raises(IndexError):
        cache.acquire()
    cache.release(1)
    with pytest.raises(ValueError):
        cache.release(1)
    assert cache.acquire() == 1
    cache.kv[:, :, 2, :, 8:10] = 7.0
    cache.move(2, 8, 3, 2)
    assert torch.all(cache.kv[:, :, 2, :, 3:5] == 7.0) and torch.all(cache.kv[:, :, 0] == 0)
    # several requests' moves at once; a source overlapping its target is read before it is written
    cache.kv[:, :, 0, :, :6] = torch.arange(6, dtype=torch.float32)[:, None]
    cache.kv[:, :, 1, :, 10:12] = 5.0
    cache.move_many([(0, 2, 1, 3), (1, 10, 4, 2), (2, 0, 0, 4), (0, 9, 9, 0)])
    assert cache.kv[0, 0, 0, 0, :6, 0].tolist() == [0, 2, 3, 4, 4, 5]
    assert torch.all(cache.kv[:, :, 1, :, 4:6] == 5.0) and torch.all(cache.kv[:, :, 2, :, 3:5] == 7.0)


def test_the_budget_shrinks_blocks_as_the_batch_grows_and_never_below_greedy():
    linear_cost = CostModel([(16, 0.05), (1024, 3.2)])  # each row costs the same
    budget = RowBudget(linear_cost)
    for _ in range(512):
        budget.observe(3)  # steps keep 3 drafted tokens
    alone, crowd = budget.tier(1), budget.tier(64)
    assert alone.rows > crowd.rows and crowd.rows >= 1
    assert budget.tier(5, drafting=False).rows == 1
    assert budget.expected(budget.tiers[0]) == 1.0 and budget.expected(alone) == 4.0
    flat = RowBudget(CostModel([(16, 1.0), (4096, 1.0)]))
    assert flat.tier(64).rows == 32  # rows that cost nothing: the full block
    assert CostModel([(16, 1.0), (32, 2.0)])(64) == pytest.approx(4.0)  # past the points: linear


def test_a_cost_model_by_shape_picks_blocks_by_the_measured_steps():
    # 32-row blocks cost as much as one-row ones up to 4 requests, then 8x more per request
    shapes = {r: [(1, 1.0), (4, 1.0), (16, 1.0 + (r > 1) * 7 * 3), (64, 2.0 + (r > 1) * 7 * 15)]
              for r in (1, 2, 4, 8, 16, 32)}
    cost = CostModel(shapes=shapes)
    assert cost.step(2, 32) == 1.0 and cost.step(8, 1) == 1.0
    assert cost.step(32, 32) == pytest.approx(1.0 + 21 + (32 - 16) * (2.0 + 105 - 22) / 48)
    assert cost(64) == 2.0  # by total rows: the one-row shapes
    budget = RowBudget(cost)
    for _ in range(512):
        budget.observe(3)
    assert budget.tier(4).rows == 32 and budget.tier(64).rows == 1
    with pytest.raises(ValueError):
        CostModel()


def test_the_host_work_of_drafting_counts_in_the_step_time():
    budget = RowBudget(CostModel([(1, 0.002), (4096, 0.002)]))  # a device step costs 2 ms, any rows
    for _ in range(512):
        budget.observe(2)
    assert budget.tier(64).rows == 32  # the device alone: drafts cost nothing
    budget.observe_host(150e-6, True)
    budget.observe_host(20e-6, False)
    assert budget.step_time(64, budget.tiers[-1]) == pytest.approx(0.002 + 64 * 150e-6)
    assert budget.tier(64).rows == 1 and budget.tier(4).rows == 32  # host-bound at 64: greedy
    # the host's work runs beside the other group's step
    assert budget.step_time(4, budget.tiers[-1], overlap=True) == pytest.approx(0.002)
    for _ in range(200):
        budget.observe_host(10e-6, True)  # the moving average follows
    assert budget.host[True] < 20e-6 and budget.tier(64).rows == 32


def test_drafting_must_promise_more_than_the_margin_over_greedy():
    # a 2-row block costs 1.5x a 1-row one: drafting pays only where more than half the drafts are kept
    cost = CostModel(shapes={r: [(1, 1.0 + 0.5 * (r > 1)), (64, 64.0 + 32.0 * (r > 1))] for r in (1, 2)})

    def budget(margin: float, kept: int) -> RowBudget:
        b = RowBudget(cost, tiers=((1, 0), (2, 1)), window=100, margin=margin)
        for accepted in [1] * kept + [0] * (100 - kept):  # the window holds these alone
            b.observe(accepted)
        return b

    assert budget(0.05, 53).expected(RowBudget(cost).tiers[1]) == pytest.approx(1.53)
    assert budget(0.0, 53).tier(4).rows == 2  # 1.53 / 1.5: 2% over greedy's tokens per second...
    assert budget(0.05, 53).tier(4).rows == 1  # ...within the margin: greedy
    assert budget(0.05, 77).tier(4).rows == 2  # 18% over: drafts


@pytest.mark.parametrize("rows", [1, 5, 9])
def test_attention_over_the_key_span_gives_the_bits_of_the_whole_length(rows):
    """A block reads only the key chunks up to its last key; the rest of its length (stale entries of
    the slot) would add exact zeros, and the values are summed a chunk at a time: the same bits."""
    g = torch.Generator().manual_seed(rows)
    heads, kv, d, length = 6, 2, 16, 6 * KEY_CHUNK
    keys, values = (torch.randn(kv, length, d, generator=g) for _ in "kv")
    for pos in (0, KEY_CHUNK - rows, KEY_CHUNK + 7, 4 * KEY_CHUNK + 60):
        q = torch.randn(rows, heads, d, generator=g)
        rel, owner = torch.arange(rows), torch.zeros(rows, dtype=torch.long)
        span = key_span(length, pos + rows)
        assert span % KEY_CHUNK == 0 and pos + rows <= span < pos + rows + KEY_CHUNK
        whole = block_attention(q, keys, values, pos, rel, owner, torch.tensor([0]), 0.25, 4)
        part = block_attention(q, keys[:, :span], values[:, :span], pos, rel, owner, torch.tensor([0]), 0.25, 4)
        assert torch.equal(part, whole)
    assert key_span(200, 190) == 200  # never past the request's own length
    assert span_invariant(6, 2, 16, 4, torch.float32)
