"""The batch engine's fixed-shape decoding step (llma.batch.graph_step, llma.batch.split_attention).

On CUDA it runs in CUDA graphs; on CPU only in Triton's interpreter, which must be switched on
before triton is imported, so the parent run starts a child pytest on this file with
TRITON_INTERPRET=1 (as tests/llma/test_llma_split_attention.py does). The interpreter's arithmetic
is numpy's fp32, so the CPU checks are of the logic (keys, masks, chunks, buckets, dummy blocks);
the CUDA test checks the bits in bf16.
"""
import os
import random
import threading

import pytest

pytest.importorskip("triton")

from interpreter import run_in_interpreter  # noqa: E402 (tests/llma/interpreter.py)
from llma_fixtures import tiny_llama16  # noqa: E402

import torch

from llma import LLMAConfig
from llma.batch import BatchEngine, CostModel
from llma.loading import LoadedModel

LINEAR = CostModel([(16, 1.0), (512, 32.0)])  # rows cost in proportion: blocks shrink with load


def _ids(n: int, seed: int) -> list[int]:
    g = random.Random(seed)
    return [g.randrange(3, 97) for _ in range(n)]


def _greedy_reference(loaded: LoadedModel, prompt: list[int], n: int) -> list[int]:
    out = loaded.model.generate(torch.tensor([prompt], device=loaded.device), do_sample=False, max_new_tokens=n,
                                min_new_tokens=n, eos_token_id=None,
                                attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=loaded.device))
    return out[0, len(prompt):].tolist()


def _check_engine(loaded: LoadedModel, requests: int, hf: bool) -> None:
    """Solo greedy (= HF generate if `hf`), LLMA = greedy, and `requests` streamed at once = solo,
    with late joiners (more requests than slots) and a prompt past the first key chunk."""
    engine = BatchEngine(loaded, slots=2, cost=LINEAR, fixed=True)
    try:
        assert engine.runner.fixed is not None
        prompt = _ids(140, 1)  # keys in two chunks of 128
        greedy = engine.generate(prompt, None, LLMAConfig(max_new_tokens=24).greedy()).tokens
        if hf:
            assert greedy == _greedy_reference(loaded, prompt, 24)
        refs = {"passage": _ids(5, 9) + greedy[3:] + _ids(4, 3)}
        result = engine.generate(prompt, refs, LLMAConfig(max_new_tokens=24))
        assert result.tokens == greedy
        assert result.stats.accepted_tokens > 5  # drafts were verified in blocks
        asks = [(_ids(10 + 9 * i, 20 + i), {"p": greedy[i:]}, LLMAConfig(max_new_tokens=10 + 3 * i))
                for i in range(requests)]
        asks[1] = (asks[1][0], asks[1][1], asks[1][2].greedy())
        solo = [engine.generate(p, r, c).tokens for p, r, c in asks]
        together: list[list[int] | None] = [None] * requests

        def run(i: int) -> None:
            p, r, c = asks[i]
            together[i] = engine.generate(p, r, c).tokens

        threads = [threading.Thread(target=run, args=(i,)) for i in range(requests)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert together == solo
        assert engine.runner.cache.free == 2
    finally:
        engine.close()


if os.environ.get("TRITON_INTERPRET") != "1":

    @pytest.mark.cuda
    def test_cuda_graph_steps_batched_equal_solo_and_llma_equals_greedy():
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        loaded = tiny_llama16("cuda", torch.bfloat16, context=512)
        _check_engine(loaded, requests=5, hf=False)
        engine = BatchEngine(loaded, slots=2, cost=LINEAR)  # the default on CUDA: graphs
        try:
            assert engine.runner.fixed is not None and engine.runner.fixed.graphs
            engine.generate(_ids(20, 2), None, LLMAConfig(max_new_tokens=8))
            assert engine.runner.fixed.captured  # the decoding steps replayed a captured graph
        finally:
            engine.close()

    @pytest.mark.slow
    def test_fixed_steps_in_the_triton_interpreter():
        run_in_interpreter(__file__, timeout=1200)

else:

    def test_batch_attention_matches_per_block_reference_and_ignores_the_batch():
        from llma.batch.rows import block_attention
        from llma.batch.split_attention import BatchAttention, meta_size, metadata
        from llma.static.packing import pack

        torch.manual_seed(0)
        heads, kv, d, cap = 4, 2, 16, 384
        keys, values = torch.randn(5, kv, cap, d), torch.randn(5, kv, cap, d)
        attention = BatchAttention(heads, kv, d, cap, d ** -0.5, 8, torch.device("cpu"))
        # (slot, root, drafts): packed drafts across a chunk bound, one draft, a long one, at position 0
        specs = [(0, 130, [[5, 1, 2, 3], [5, 7], [5, 8, 9]]), (3, 7, [[5]]), (2, 260, [[5, 1, 2, 3, 4, 5]]),
                 (4, 0, [[1, 2]])]
        rows, drafts = 8, 4
        parts: list[list] = [[], [], [], [], []]  # roots, slots, rels, owners, shifts
        qs, refs = [], []
        for slot, root, rows_of in specs:
            used = 1 + sum(len(r) - 1 for r in rows_of)
            p = pack(rows_of, used, len(rows_of))
            for part, value in zip(parts, (root, slot, p.rel + list(range(used, rows)),
                                           p.draft + [0] * (rows - used), p.shift)):
                part.append(value)
            qs.append(torch.randn(rows, heads, d))
            refs.append(block_attention(qs[-1][:used], keys[slot], values[slot], root, torch.tensor(p.rel),
                                        torch.tensor(p.draft), torch.tensor(p.shift), d ** -0.5, 4))
        meta = torch.tensor(metadata(*parts, drafts))
        assert meta.numel() == meta_size(len(specs), rows, drafts)
        out = attention(torch.cat(qs), keys, values, meta, len(specs), rows, drafts, 3)
        for i, ref in enumerate(refs):
            torch.testing.assert_close(out[i * rows : i * rows + len(ref)].reshape(len(ref), -1), ref)
        alone = attention(qs[0], keys, values, torch.tensor(metadata(*(p[:1] for p in parts), 3)), 1, rows, 3, 8)
        assert torch.equal(alone, out[:rows])  # the same bits alone, with fewer drafts and more chunks

    def test_fixed_engine_in_the_interpreter_equals_generate_and_solo():
        _check_engine(tiny_llama16(context=512), requests=3, hf=True)
