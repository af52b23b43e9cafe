"""The split-KV Triton attention (llma/static/split_attention.py), run on CPU in Triton's interpreter.

The interpreter must be switched on before triton is imported, and a GPU machine may use the real
kernels in the same test process, so the parent run starts a child pytest on this file with
TRITON_INTERPRET=1; the child runs the checks. The kernels' arithmetic in the interpreter is numpy's
(fp32 here), not the GPU's, so these tests check the logic: the right keys, masks, chunk bounds and
combine, rows independent of the block, LLMA equal to greedy. The GPU run checks the bits in bf16.
"""
import os

import pytest

pytest.importorskip("triton")

from interpreter import run_in_interpreter  # noqa: E402 (tests/llma/interpreter.py)
from llma_fixtures import tiny_llama16  # noqa: E402

import torch

from llma.engine import Engine, LLMAConfig
from llma.loading import LoadedModel
from llma.static import StaticBackend

BLOCK = 8


def _llma_equals_greedy(loaded: LoadedModel, backend: StaticBackend) -> None:
    engine = Engine(loaded, backend=backend)
    prompt = list(range(7, 31))
    config = LLMAConfig(min_n=1, k=7, adaptive=False, max_new_tokens=24)
    greedy = engine.generate(prompt, None, config.greedy()).tokens
    refs = {"answer": greedy[2:], "noise": list(range(60, 90))}
    events = list(engine.stream(prompt, refs, config))
    assert [t for e in events for t in e.new_tokens] == greedy
    assert sum(e.accepted for e in events) > 5  # drafts were really verified in blocks


if os.environ.get("TRITON_INTERPRET") != "1":

    @pytest.mark.cuda
    def test_cuda_split_attention_rows_bitwise_and_llma_equals_greedy():
        loaded = tiny_llama16("cuda", torch.bfloat16)
        backend = StaticBackend(loaded.model, block=BLOCK, attention="split")  # graphs: auto on CUDA
        assert backend.attention == "split" and backend.graphs
        prompt, more = list(range(5, 25)), list(range(30, 41))
        backend.prefill(prompt)
        one_by_one = torch.cat([backend.forward([t]) for t in more])
        backend.trim(len(prompt))
        assert torch.equal(backend.forward(more), one_by_one)  # rows 1..7 of a block = 1-token steps
        _llma_equals_greedy(loaded, backend)
        _llma_equals_greedy(loaded, StaticBackend(loaded.model, block=BLOCK, attention="split", cache_copies=3))
        _llma_equals_greedy(loaded, StaticBackend(loaded.model, block=BLOCK, attention="split", packed_drafts=3))

    @pytest.mark.cuda
    def test_cuda_gemma3_windows_through_split_attention_bitwise_and_llma_equals_greedy():
        """Gemma 3's sliding layers on the GPU in bf16: block rows bitwise equal to one-token steps
        across the window, and LLMA (packed drafts too) equal to greedy."""
        from family_models import tiny_gemma3

        loaded = tiny_gemma3(head_dim=16)
        loaded.model.to("cuda", torch.bfloat16)
        loaded.device, loaded.dtype = torch.device("cuda"), torch.bfloat16
        backend = StaticBackend(loaded.model, block=BLOCK, attention="split")
        assert backend.attention == "split" and backend.graphs
        prompt, more = list(range(5, 45)), list(range(30, 41))
        backend.prefill(prompt)
        one_by_one = torch.cat([backend.forward([t]) for t in more])
        backend.trim(len(prompt))
        assert torch.equal(backend.forward(more), one_by_one)
        _llma_equals_greedy(loaded, backend)
        _llma_equals_greedy(loaded, StaticBackend(loaded.model, block=BLOCK, attention="split", packed_drafts=3))

    @pytest.mark.slow
    def test_split_attention_in_the_triton_interpreter():
        run_in_interpreter(__file__, timeout=900)

else:
    import torch.nn.functional as F

    from llma.static.split_attention import CHUNK, SplitAttention
    from llma.static.packing import pack, single

    HEADS, KV_HEADS, D, CAPACITY = 6, 2, 32, 3 * CHUNK
    SCALE = D ** -0.5

    def _cache(seed=0):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(KV_HEADS, CAPACITY, D, generator=g) for _ in "kv")

    def _reference(q, k, v, pos, window=None):
        """Masked SDPA: row r sees keys at positions <= pos + r (and > pos + r - window)."""
        at = (pos + torch.arange(q.shape[0]))[:, None]
        mask = (torch.arange(CAPACITY)[None] <= at) & (torch.arange(CAPACITY)[None] > at - (window or CAPACITY))
        kr, vr = (t.repeat_interleave(HEADS // KV_HEADS, 0) for t in (k, v))
        return F.scaled_dot_product_attention(q.transpose(0, 1), kr, vr, attn_mask=mask, scale=SCALE).transpose(0, 1)

    def test_the_self_check_passes_the_split_kernel_and_fails_a_wrong_one():
        """StaticBackend's self-check (llma.static.attention.works) on `attend_for("split")`, the form
        the backend checks before it uses the kernel, and on an attention that ignores the mask."""
        from llma.static.attention import attend_for, works

        opts = (HEADS, KV_HEADS, D, CAPACITY, SCALE, torch.float32, torch.device("cpu"))
        assert works("split", attend_for("split", HEADS, KV_HEADS, D, SCALE, {}), *opts)

        assert works("split", attend_for("split", HEADS, KV_HEADS, D, SCALE, {}), *opts, windowed=True)

        def unwindowed(q, k, v, pos, window):
            return attend_for("split", HEADS, KV_HEADS, D, SCALE, {})(q, k, v, pos, None)

        assert not works("unwindowed", unwindowed, *opts, windowed=True)

        def unmasked(q, k, v, pos, window):
            kr, vr = (t.repeat_interleave(HEADS // KV_HEADS, 0) for t in (k, v))
            return F.scaled_dot_product_attention(q.transpose(0, 1), kr, vr, scale=SCALE).transpose(0, 1)

        assert not works("unmasked", unmasked, *opts)

    def test_matches_masked_attention_at_chunk_edges():
        k, v = _cache()
        attention = SplitAttention(BLOCK, HEADS, KV_HEADS, D, CAPACITY, SCALE, torch.device("cpu"))
        # q a slice of the q/k/v rows, as in a step (not contiguous)
        q = torch.randn(BLOCK, HEADS + 2 * KV_HEADS, D, generator=torch.Generator().manual_seed(1))[:, :HEADS]
        # the first key alone; a block across a chunk edge; one ending at the last key
        for pos in (0, CHUNK - 3, CHUNK, 2 * CHUNK + 60, CAPACITY - BLOCK):
            torch.testing.assert_close(attention(q, k, v, torch.tensor([pos])), _reference(q, k, v, pos),
                                       atol=1e-5, rtol=1e-5)

    def test_a_window_matches_masked_attention_at_chunk_edges():
        """Sliding windows (a row at p sees (p - window, p]) whose first key falls inside a tile, on a
        tile edge, on a chunk edge, past the chunks before it, and a window of one key."""
        k, v = _cache()
        attention = SplitAttention(BLOCK, HEADS, KV_HEADS, D, CAPACITY, SCALE, torch.device("cpu"))
        q = torch.randn(BLOCK, HEADS + 2 * KV_HEADS, D, generator=torch.Generator().manual_seed(1))[:, :HEADS]
        for pos, window in ((CHUNK + 5, 5), (CHUNK + 70, 70), (2 * CHUNK + 3, CHUNK), (2 * CHUNK + 60, 64),
                            (CAPACITY - BLOCK, 1), (3, 40)):
            got = attention(q, k, v, torch.tensor([pos]), window=window)
            torch.testing.assert_close(got, _reference(q, k, v, pos, window), atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="window"):
            attention(q, k, v, torch.tensor([9]), window=0)

    def test_a_row_gets_the_same_bits_wherever_it_sits_in_the_block():
        """Greedy verifies a token in row 0, LLMA in row r of a block that starts earlier. The dots run
        on numpy here, whose matrix product is not row-invariant, so the data make every dot exact in
        any order (integer q and k; each value column fed by at most two keys per tile): what is
        checked is the kernels' own logic, that no row's chunks, tiles or masks depend on the block."""
        g = torch.Generator().manual_seed(3)
        q = torch.randint(-2, 3, (BLOCK, HEADS, D), generator=g).float()
        k = torch.randint(-2, 3, (KV_HEADS, CAPACITY, D), generator=g).float()
        v = (torch.arange(CAPACITY)[:, None] % D == torch.arange(D)[None]).float().expand(KV_HEADS, -1, -1)
        v = (v * torch.rand(KV_HEADS, CAPACITY, 1, generator=g)).contiguous()
        attention = SplitAttention(BLOCK, HEADS, KV_HEADS, D, CAPACITY, 0.125, torch.device("cpu"))
        for start in (9, CHUNK - 4):  # inside one chunk; across a chunk edge (rows see different chunks)
            together = attention(q, k, v, torch.tensor([start]))
            for r in range(BLOCK):
                alone = torch.zeros_like(q)
                alone[0] = q[r]  # a greedy step: row 0 at this row's position, padding behind it
                assert torch.equal(attention(alone, k, v, torch.tensor([start + r]))[0], together[r])

    def _steps(split: StaticBackend, sdpa: StaticBackend) -> tuple[torch.Tensor, torch.Tensor]:
        """Both backends' logits for 12 tokens (two blocks) after the same prompt."""
        prompt, more = list(range(3, 40)), list(range(50, 62))
        split.prefill(prompt)
        sdpa.prefill(prompt)
        return split.forward(more), sdpa.forward(more)

    def test_static_backend_steps_match_its_sdpa_steps():
        """The steps through the kernel against the same backend's steps through masked SDPA, after
        the same prefill (the prefill is torch's SDPA in both; against the HF model it is checked in
        test_llma_static.py, outside this child: here it twice came out 4.4e-3 off the HF model's,
        in this child of a full test run only, never alone; see benchmarks/GPU.md, stop 16)."""
        model = tiny_llama16().model
        split, sdpa = StaticBackend(model, block=BLOCK, attention="split"), StaticBackend(model, block=BLOCK)
        assert (split.attention, sdpa.attention) == ("split", "sdpa")
        torch.testing.assert_close(*_steps(split, sdpa), atol=1e-4, rtol=1e-4)

    def test_a_one_key_mask_error_fails_the_steps_check(monkeypatch):
        """The check above catches a kernel whose rows see one key too many (the kernel given pos + 1
        after the backend's self-check passed the real one): these logits move by 0.7-4.2."""
        model = tiny_llama16().model
        split, sdpa = StaticBackend(model, block=BLOCK, attention="split"), StaticBackend(model, block=BLOCK)
        assert split.attention == "split"
        real = SplitAttention.__call__
        monkeypatch.setattr(SplitAttention, "__call__", lambda self, q, k, v, pos, *tree: real(self, q, k, v, pos + 1,
                                                                                              *tree))
        got, want = _steps(split, sdpa)
        assert (got - want).abs().max() > 0.5

    def test_llma_equals_greedy_through_split_attention():
        loaded = tiny_llama16()
        _llma_equals_greedy(loaded, StaticBackend(loaded.model, block=BLOCK, attention="split"))

    def test_a_batch_of_blocks_gets_each_blocks_own_result():
        """Several blocks side by side, each on its own cache (a backend with rows > 1): block b's
        rows get the bits that block alone gets (the same data: exact dots, as above)."""
        g = torch.Generator().manual_seed(4)
        q = torch.randint(-2, 3, (3 * BLOCK, HEADS, D), generator=g).float()
        k = torch.randint(-2, 3, (3, KV_HEADS, CAPACITY, D), generator=g).float()
        v = torch.rand(3, KV_HEADS, CAPACITY, D, generator=g)
        batched = SplitAttention(BLOCK, HEADS, KV_HEADS, D, CAPACITY, 0.125, torch.device("cpu"), batch=3)
        alone = SplitAttention(BLOCK, HEADS, KV_HEADS, D, CAPACITY, 0.125, torch.device("cpu"))
        pos = torch.tensor([CHUNK - 4])
        out = batched(q, k, v, pos)
        for b in range(3):
            rows = slice(b * BLOCK, (b + 1) * BLOCK)
            assert torch.equal(out[rows], alone(q[rows], k[b], v[b], pos))
        with pytest.raises(ValueError, match="batch"):
            batched(q[:BLOCK], k, v, pos)

    def test_llma_with_several_rows_equals_greedy_through_split_attention():
        loaded = tiny_llama16()
        _llma_equals_greedy(loaded, StaticBackend(loaded.model, block=BLOCK, attention="split", cache_copies=3))

    def test_a_packed_block_gives_each_draft_the_rows_it_would_get_alone():
        """Drafts packed into one block (a tree): each draft's rows get the bits of that draft alone in
        a block, its keys in the slots after the root. Exact dots, as above: integer q and k, and value
        columns one-hot by each key's position (in the block, its draft's position)."""
        block, g = 16, torch.Generator().manual_seed(3)
        q = torch.randint(-2, 3, (block, HEADS, D), generator=g).float()
        k = torch.randint(-2, 3, (KV_HEADS, CAPACITY, D), generator=g).float()
        tree = SplitAttention(block, HEADS, KV_HEADS, D, CAPACITY, 0.125, torch.device("cpu"), packed=4)
        rows = [[1, 2, 3, 4, 5], [1, 6, 7], [1, 8], [1, 9, 10, 11, 12, 13]]
        # inside a chunk; a draft across a chunk edge; the root last in a chunk; first in one; with
        # sliding windows that end inside the block (3), inside a tile, at a chunk edge
        for pos, window in ((9, None), (CHUNK - 4, None), (CHUNK - 1, None), (CHUNK, None), (CHUNK + 20, 3),
                            (CHUNK + 20, 50), (2 * CHUNK + 2, CHUNK + 2)):
            packed = pack(rows, block, 4)
            column = torch.arange(CAPACITY) % D
            column[pos : pos + block] = (pos + torch.tensor(packed.rel)) % D
            v = (column[:, None] == torch.arange(D)[None]).float() * torch.rand(KV_HEADS, CAPACITY, 1, generator=g)
            out = tree(q, k, v, torch.tensor([pos]), torch.tensor(packed.info()), window)
            for index, shift in zip(packed.index, packed.shift):
                n, src = len(index) - 1, pos + 1 + shift
                k1, v1 = k.clone(), v.clone()
                k1[:, pos + 1 : pos + 1 + n], v1[:, pos + 1 : pos + 1 + n] = k[:, src : src + n], v[:, src : src + n]
                q1 = torch.zeros_like(q)
                q1[: len(index)] = q[index]
                alone = tree(q1, k1, v1, torch.tensor([pos]), torch.tensor(single([0] * len(index), block, 4).info()),
                             window)
                assert torch.equal(alone[: len(index)], out[index])
        with pytest.raises(ValueError, match="packed"):
            tree(q, k, v, torch.tensor([9]))  # a tree's attention needs its tree_info

    def test_llma_with_a_tree_equals_greedy_through_split_attention():
        loaded = tiny_llama16()
        _llma_equals_greedy(loaded, StaticBackend(loaded.model, block=BLOCK, attention="split", packed_drafts=3))

    def test_gemma3_through_split_attention_matches_its_sdpa_and_llma_equals_greedy():
        """Gemma 3's sliding layers (a window of 16, prompts past it) through the kernel, packed drafts
        included: the steps match the same backend's masked SDPA, and LLMA equals greedy."""
        from family_models import tiny_gemma3

        loaded = tiny_gemma3(head_dim=16)
        model = loaded.model
        for packed in (0, 3):
            split = StaticBackend(model, block=BLOCK, attention="split", packed_drafts=packed)
            sdpa = StaticBackend(model, block=BLOCK, packed_drafts=packed)
            assert (split.attention, sdpa.attention) == ("split", "sdpa")
            torch.testing.assert_close(*_steps(split, sdpa), atol=1e-4, rtol=1e-4)
            _llma_equals_greedy(loaded, split)
