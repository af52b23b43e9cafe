"""The CPU int4 path (llma.cpu): 4-bit layers in the batch engine, lossless against its own greedy."""
from __future__ import annotations

import pytest
import torch
from llma_fixtures import tiny_llama
from test_llma_batch import LINEAR, _ids, _requests, _solo, _together

from llma import LLMAConfig
from llma.batch import BatchEngine
from llma.batch.engine import open_engine
from llma.cpu.glue import c_compiler
from llma.cpu.int4 import GROUP, Int4Matrix
from llma.cpu.tiles import attention_invariant, product_invariant
from llma.cpu.weights import Int4Weights, int4_reason, native_bf16
from llma.options import EngineOptions

pytestmark = pytest.mark.skipif(int4_reason(tiny_llama().model) is not None, reason="no CPU int4 kernel here")


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(context=512)


HAVE_CC = c_compiler() is not None
needs_cc = pytest.mark.skipif(not HAVE_CC, reason="no C compiler for the CPU glue")


@pytest.fixture(scope="module", params=[(False, "bfloat16"), pytest.param((True, "bfloat16"), marks=needs_cc),
                                        pytest.param((True, "float32"), marks=needs_cc)],
                ids=["torch-glue", "c-glue", "c-glue-fp32-prompts"])
def engine(tiny, request):
    """The int4 engine with its elementwise work in torch ops, and in C (llma.cpu.glue); its prompt
    products in bf16, and in fp32 (the default where the CPU has no native bf16)."""
    glue, prompt_dtype = request.param
    engine = BatchEngine(tiny, slots=4, cost=LINEAR, weights="int4", glue=glue, prompt_dtype=prompt_dtype)
    weights = engine.runner.weights
    assert (weights.glue is not None) == glue and (weights.head is not None) == glue
    assert weights.prompt_dtype == getattr(torch, prompt_dtype)
    yield engine
    engine.close()


def test_a_matrix_of_4bit_levels_packs_back_to_itself():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (32, 4 * GROUP), generator=g)
    q[:, ::GROUP] = 0  # each group spans its 16 levels, as Q4_1's quantizer makes it
    q[:, 1::GROUP] = 15
    step = 2.0 ** -torch.randint(5, 9, (32, 4, 1), generator=g)
    low = -8 * step * torch.randint(1, 3, (32, 4, 1), generator=g)
    w = (low + q.view(32, 4, GROUP) * step).view(32, 4 * GROUP)  # every value exact in bf16's scale, zero
    m = Int4Matrix(w)
    assert torch.equal(m.dequantized(), w)
    x = torch.randn(5, 4 * GROUP)
    torch.testing.assert_close(m(x).float(), x.bfloat16().float() @ w.t(), atol=0.05, rtol=0.02)


def test_any_matrix_rounds_to_its_groups_levels_and_bad_widths_are_refused():
    w = torch.randn(48, 2 * GROUP)
    m = Int4Matrix(w)
    groups = w.view(48, 2, GROUP)
    half_step = (groups.amax(-1) - groups.amin(-1)) / 30
    assert ((m.dequantized().view(48, 2, GROUP) - groups).abs() <= half_step[..., None] * 1.05 + 1e-3).all()
    with pytest.raises(ValueError, match="inputs in multiples"):
        Int4Matrix(torch.randn(48, GROUP + 1))
    with pytest.raises(ValueError, match="outputs in multiples"):
        Int4Matrix(torch.randn(40, GROUP))


def test_every_product_and_the_attention_are_row_invariant_at_the_chosen_tile(engine):
    w = engine.runner.weights
    assert isinstance(w, Int4Weights) and engine.runner.invariant
    tile = engine.runner.tile
    assert len(w.products()) == 5 and all(product_invariant(p, n, tile, w.dtype) for p, n in w.products())
    assert all(product_invariant(p, n, w.prompt_tile, w.dtype) for p, n in w.products(prompt=True))
    assert attention_invariant(w.heads, w.kv_heads, w.head_dim, tile, w.dtype)


def test_llma_identical_to_the_int4_engines_own_greedy(engine):
    prompt = _ids(20, 1)
    greedy = engine.generate(prompt, None, LLMAConfig(max_new_tokens=40).greedy()).tokens
    refs = {"a": _ids(4, 2) + greedy[1:] + _ids(4, 3)}
    result = engine.generate(prompt, refs, LLMAConfig(max_new_tokens=40))
    assert result.tokens == greedy
    assert result.stats.accepted_tokens > 15 and result.stats.forward_passes < 30


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_int4_outputs_identical_to_solo_runs(engine, tiny, seed):
    requests = _requests(tiny.model, 6, seed)
    solo = _solo(engine, requests)
    assert _together(engine, requests, [5, 2, 0, 4, 1, 3], [0.0, 0.01, 0.0, 0.05, 0.0, 0.01]) == solo
    assert engine.runner.cache.free == 4


def test_options_choose_int4_on_cpu_by_default_and_full_on_request(tiny):
    assert EngineOptions().batch_weights(cuda=False, int4_runs=True) == "int4"
    assert EngineOptions().batch_weights(cuda=False, int4_runs=False) == "full"
    assert EngineOptions().batch_weights(cuda=True, int4_runs=False) == "full"
    assert EngineOptions(weights="full").batch_weights(cuda=False, int4_runs=True) == "full"
    with pytest.raises(ValueError, match="CPU only"):
        EngineOptions(weights="int4").batch_weights(cuda=True, int4_runs=False)
    with pytest.raises(ValueError, match="weights must be one of"):
        EngineOptions(weights="int3")
    with pytest.raises(ValueError, match="LLMA_WEIGHTS=q8"):
        EngineOptions.from_env({"LLMA_WEIGHTS": "q8"})
    assert EngineOptions.from_env({"LLMA_WEIGHTS": "full"}).weights == "full"
    opened = open_engine(tiny, EngineOptions(batch_slots=2))
    try:
        assert isinstance(opened.runner.weights, Int4Weights)
        assert (opened.runner.weights.glue is not None) == HAVE_CC  # C where it builds
        # prompt products in bf16 only where the CPU multiplies it natively
        assert opened.runner.weights.prompt_dtype == (torch.bfloat16 if native_bf16() else torch.float32)
    finally:
        opened.close()
    chosen = open_engine(tiny, EngineOptions(batch_slots=1, cpu_glue=False, prompt_dtype="float32"))
    try:
        assert chosen.runner.weights.prompt_dtype == torch.float32
    finally:
        chosen.close()
    assert EngineOptions.from_env({"LLMA_CPU_GLUE": "0"}).cpu_glue is False
    assert EngineOptions.from_env({"LLMA_PROMPT_DTYPE": "float32"}).prompt_dtype == "float32"
    with pytest.raises(ValueError, match="LLMA_PROMPT_DTYPE=float16"):
        EngineOptions.from_env({"LLMA_PROMPT_DTYPE": "float16"})
    with pytest.raises(ValueError, match="LLMA_CPU_GLUE must be 0 or 1"):
        EngineOptions.from_env({"LLMA_CPU_GLUE": "yes"})
    torch_ops = open_engine(tiny, EngineOptions(batch_slots=2, cpu_glue=False))
    try:
        assert torch_ops.runner.weights.glue is None
    finally:
        torch_ops.close()
    full = open_engine(tiny, EngineOptions(batch_slots=2, weights="full"))
    try:
        assert not isinstance(full.runner.weights, Int4Weights)
    finally:
        full.close()


def test_a_model_the_kernel_cannot_take_is_named():
    odd = tiny_llama(context=64)
    odd.model.config.intermediate_size = 40  # as a width the groups do not divide
    assert "multiples" in int4_reason(odd.model)


def test_the_cpus_bf16_support_is_read_from_its_flags(tmp_path):
    from llma.cpu.weights import default_prompt_dtype

    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx avx2 fma\n")
    assert not native_bf16(info)
    info.write_text("model name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert native_bf16(info)
    assert not native_bf16(tmp_path / "missing")
    assert default_prompt_dtype() == ("bfloat16" if native_bf16() else "float32")
    with pytest.raises(ValueError, match="prompt_dtype must be one of"):
        EngineOptions(prompt_dtype="float16")


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_prompts_rows_run_through_the_models_own_weights(tiny, dtype):
    from llma.batch.runner import BatchRunner
    from llma.batch.step import Block
    from llma.cpu.weights import Product

    g = torch.Generator().manual_seed(3)
    weight, x = torch.randn(48, 64, generator=g), torch.randn(6, 64, generator=g)
    split = (torch.tensor([0, 2, 3]), torch.tensor([1, 4, 5]), 4, 4, None)
    product = Product(weight, getattr(torch, dtype))(x, split)
    own = torch.nn.functional.linear(x.to(getattr(torch, dtype)), weight.to(getattr(torch, dtype)))
    own = own.to(torch.bfloat16).float()  # every product's result in bf16
    assert torch.equal(product[[0, 2, 3]], own[[0, 2, 3]])  # prompt rows: the model's weights
    assert not torch.equal(product[[1, 4, 5]], own[[1, 4, 5]])  # the others: 4-bit weights

    prompt = _ids(40, 4)
    caches = []
    for weights in ("full", "int4"):
        runner = BatchRunner(tiny.model, slots=1, weights=weights, prompt_dtype=dtype)
        slot = runner.cache.acquire()
        runner.run([Block.chunk(slot, 0, prompt, 128, last=True)])
        caches.append(runner.cache.kv[:, :, slot, :, :40].clone())
        runner.run([Block.chunk(slot, 40, prompt[:8], 128, logits=True)])  # not a prompt: 4-bit rows
        caches.append(runner.cache.kv[:, :, slot, :, 40:48].clone())
    full_prompt, full_rows, int4_prompt, int4_rows = caches
    prompt_error = (int4_prompt - full_prompt).abs().max()
    rows_error = (int4_rows - full_rows).abs().max()
    # bf16 rounding (a few percent after every layer), far below the 4-bit rows' error
    assert 0 < prompt_error < 0.05 * full_prompt.abs().max() and prompt_error < rows_error / 4


def test_prompt_rows_in_calls_of_fixed_rows_keep_their_bits_whatever_the_row_count():
    """A CPU whose bf16 kernel rounds a row by the call's row count at every tile (seen on an
    AVX-512/AMX Xeon) runs the prompt rows in calls of PROMPT_ROWS rows: each row's bits are then
    those of a PROMPT_ROWS-row call, whatever else the step holds."""
    from llma.cpu.weights import PROMPT_ROWS, Product

    g = torch.Generator().manual_seed(5)
    product = Product(torch.randn(1536, 576, generator=g))
    x = torch.randn(4 * PROMPT_ROWS, 576, generator=g).to(torch.bfloat16)
    pieces = product.prompt_product(x, PROMPT_ROWS)
    for n in (1, 2, 3):
        assert torch.equal(product.prompt_product(x[: n * PROMPT_ROWS], PROMPT_ROWS), pieces[: n * PROMPT_ROWS])
    single = [torch.nn.functional.linear(x[i : i + PROMPT_ROWS], product.prompt) for i in range(0, len(x), PROMPT_ROWS)]
    assert torch.equal(pieces, torch.cat(single))


def test_the_position_check_tells_a_product_that_depends_on_where_a_row_sits_in_its_call():
    """Another request's prompt rows before a row move it within its PROMPT_ROWS call: the start-up
    check (llma.cpu.tiles.position_invariant) must catch a kernel for which that changes bits."""
    from llma.cpu.tiles import position_invariant

    w = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))

    def linear_in_calls(x):
        return torch.cat([torch.nn.functional.linear(part, w) for part in x.split(8)])

    def by_position(x):  # a row's result depends on its index in its call
        return torch.cat([torch.nn.functional.linear(part, w) + torch.arange(len(part))[:, None] for part in x.split(8)])

    assert position_invariant(linear_in_calls, 16, 8, torch.float32)
    assert not position_invariant(by_position, 16, 8, torch.float32)
