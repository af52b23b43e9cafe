"""llma.cpu.glue: the CPU step's elementwise work in C. Each function against the torch ops it
replaces (close: another summation order and exp), each row's bits independent of the others,
and no compiler (or a failed build) meaning the torch ops, said in the log."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from llma.cpu import glue as glue_module
from llma.cpu.glue import CGlue


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    built = CGlue.build(tmp_path_factory.mktemp("glue"))
    if built is None:
        pytest.skip("no C compiler here")
    return built


def _bf16(*shape, seed=0, scale=1.0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(torch.bfloat16)


def test_norm_and_residual_match_torch(glue):
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(7, 576, generator=g) * 3, torch.rand(576, generator=g) + 0.5
    out = glue.norm(x, w, 1e-5)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    torch.testing.assert_close(out.float(), F.rms_norm(x, (576,), w, 1e-5), atol=0.02, rtol=0.01)
    delta, bias = _bf16(7, 576, seed=2), torch.randn(576, generator=g)
    stream = x.clone()
    wide = glue.add_norm(stream, delta, bias, w, 1e-5, wide=True)
    assert torch.equal(stream, x + delta.float() + bias)  # the residual addition: exact, in place
    torch.testing.assert_close(wide, F.rms_norm(stream, (576,), w, 1e-5), atol=1e-5, rtol=1e-5)
    narrow = glue.add_norm(x.clone(), delta, None, w, 1e-5)
    assert narrow.dtype == torch.bfloat16


def test_qkv_rotary_and_silu_match_torch(glue):
    heads, kv, d, rows = 9, 3, 64, 5
    qkv, bias = _bf16(rows, (heads + 2 * kv) * d, seed=3), torch.randn((heads + 2 * kv) * d)
    cos, sin = torch.randn(rows, d), torch.randn(rows, d)
    q, k, v = glue.qkv_rotary(qkv, bias, cos, sin, heads, kv, d)
    t = (qkv.float() + bias).view(rows, heads + 2 * kv, d)
    qk = t[:, : heads + kv]
    rotated = qk * cos[:, None] + torch.cat((qk[..., d // 2 :], qk[..., : d // 2]), -1) * sin[:, None]
    torch.testing.assert_close(q, rotated[:, :heads], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k, rotated[:, heads:], atol=1e-5, rtol=1e-5)
    assert torch.equal(v, t[:, heads + kv :])
    gate_up = _bf16(4, 2 * 1536, seed=4, scale=6.0)
    gate, up = gate_up.float().chunk(2, -1)
    torch.testing.assert_close(glue.silu_mul(gate_up).float(), (F.silu(gate) * up).to(torch.bfloat16).float(),
                               atol=0.02, rtol=0.01)


def test_each_rows_bits_do_not_depend_on_the_other_rows(glue):
    x, w = torch.randn(9, 576), torch.rand(576) + 0.5
    gate_up, qkv = _bf16(9, 2 * 1536, seed=5, scale=4.0), _bf16(9, 15 * 64, seed=6)
    cos, sin = torch.randn(9, 64), torch.randn(9, 64)
    for r in (0, 4, 8):
        assert torch.equal(glue.norm(x[r : r + 1].contiguous(), w, 1e-5), glue.norm(x, w, 1e-5)[r : r + 1])
        assert torch.equal(glue.silu_mul(gate_up[r : r + 1].contiguous()), glue.silu_mul(gate_up)[r : r + 1])
        one = glue.qkv_rotary(qkv[r : r + 1].contiguous(), None, cos[r : r + 1].contiguous(),
                              sin[r : r + 1].contiguous(), 9, 3, 64)
        for a, b in zip(one, glue.qkv_rotary(qkv, None, cos, sin, 9, 3, 64)):
            assert torch.equal(a, b[r : r + 1])


def test_bad_tensors_are_refused(glue):
    with pytest.raises(ValueError, match="contiguous CPU"):
        glue.norm(torch.randn(576, 4).t(), torch.ones(576), 1e-5)


def test_no_compiler_or_a_failed_build_means_torch_ops(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(glue_module.shutil, "which", lambda name: None)
    with caplog.at_level(logging.INFO, logger="llma.cpu.glue"):
        assert CGlue.build(tmp_path) is None
    assert "no C compiler" in caplog.text
    monkeypatch.setattr(glue_module.shutil, "which", lambda name: "/bin/false")
    with caplog.at_level(logging.WARNING, logger="llma.cpu.glue"):
        assert CGlue.build(tmp_path / "failed") is None
    assert "did not build" in caplog.text


def test_attention_matches_the_torch_block_attention_and_reads_only_the_keys_a_row_sees(glue):
    from llma.batch.rows import block_attention

    heads, kv, d, cap = 9, 3, 64, 1024
    g = torch.Generator().manual_seed(7)
    k_cache, v_cache = torch.randn(2, kv, cap, d, generator=g), torch.randn(2, kv, cap, d, generator=g)
    q = torch.randn(5, heads, d, generator=g)
    pos, rows = 700, torch.arange(5)
    rel, owner, shifts = torch.arange(5), torch.zeros(5, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    expected = block_attention(q, k_cache[1], v_cache[1], pos, rel, owner, shifts, d ** -0.5, 2)
    meta = torch.tensor([[1] * 5, [pos] * 5, [pos + r + 1 for r in range(5)], [0] * 5])
    out = torch.zeros(5, heads * d)
    glue.attend(q, k_cache, v_cache, rows, meta, d ** -0.5, out)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    alone = torch.zeros(5, heads * d)
    glue.attend(q, k_cache, v_cache, torch.tensor([3]), meta[:, 3:4].contiguous(), d ** -0.5, alone)
    assert torch.equal(alone[3], out[3]) and not alone[[0, 1, 2, 4]].any()
    k_cache[1, :, pos + 5 :] = float("nan")  # keys past what the rows see: never read
    again = torch.zeros(5, heads * d)
    glue.attend(q, k_cache, v_cache, rows, meta, d ** -0.5, again)
    assert torch.equal(again, out)


def test_an_8bit_head_is_exact_for_q8_0_levels_and_its_product_row_invariant(glue):
    from llma.cpu.glue import Q8_GROUP, Q8Matrix

    g = torch.Generator().manual_seed(8)
    levels = torch.randint(-127, 128, (48, 4 * Q8_GROUP), generator=g)
    levels[:, ::Q8_GROUP] = 127  # Q8_0: each block's largest magnitude is level 127
    scale = torch.rand(48, 4, generator=g).half().float() / 50  # an fp16 scale per block
    weight = (levels.view(48, 4, Q8_GROUP) * scale[..., None]).view(48, 4 * Q8_GROUP)
    m = Q8Matrix(weight)
    assert m.exact and torch.equal(m.q.long(), levels) and torch.equal(m.scale, scale)
    assert not Q8Matrix(torch.randn(16, Q8_GROUP, generator=g)).exact  # any other: rounded
    with pytest.raises(ValueError, match="multiples of 32"):
        Q8Matrix(torch.randn(16, 40))
    x = torch.randn(9, 4 * Q8_GROUP, generator=g)
    out = glue.q8_matmul(x, m.q, m.scale)
    torch.testing.assert_close(out, x @ weight.t(), atol=1e-5, rtol=1e-5)
    for r in (0, 5, 8):
        assert torch.equal(glue.q8_matmul(x[r : r + 1].contiguous(), m.q, m.scale), out[r : r + 1])


def test_attention_of_packed_drafts_matches_the_torch_block_attention(glue):
    from llma.batch.rows import block_attention
    from llma.batch.step import Block

    heads, kv, d, cap, pos = 9, 3, 64, 512, 300
    block, _ = Block.packed(1, pos, [[7, 1, 2, 3], [7, 4, 5], [7, 6]], 512)
    rows = len(block)
    g = torch.Generator().manual_seed(9)
    k_cache, v_cache = torch.randn(2, kv, cap, d, generator=g), torch.randn(2, kv, cap, d, generator=g)
    q = torch.randn(rows, heads, d, generator=g)
    rel, owner, shifts = (torch.tensor(t) for t in (block.rel, block.owner, block.shifts))
    expected = block_attention(q, k_cache[1], v_cache[1], pos, rel, owner, shifts, d ** -0.5, 2)
    meta = torch.tensor([[1] * rows, [pos] * rows, [pos + r + 1 for r in block.rel],
                         [block.shifts[o] for o in block.owner]])
    out = torch.zeros(rows, heads * d)
    glue.attend(q, k_cache, v_cache, torch.arange(rows), meta, d ** -0.5, out)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
