"""The static fixed-shape backend (llma.static): HF-greedy identity, LLMA bit-identity, fallback.

On CPU without graphs (the same step function the CUDA graphs capture); the CUDA tests (marked
`cuda`) skip without a GPU. Bit-identity rests on each row of a fixed-shape block being computed
independently of the other rows; where this CPU's matrix product is not row-invariant at the block
size, the bitwise checks still run but are expected to fail (xfail, with the reason; an XPASS if they
hold anyway); token identity is still checked.
"""
import logging

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from llma.backend import HFBackend
from llma.decoder import StopConfig
from llma.engine import Engine, LLMAConfig
from llma.loading import LoadedModel
from llma.options import EngineOptions
from llma.static import StaticBackend, select_backend, unsupported_reason
from llma.static.graphs import graph_length, upload
from llma_fixtures import assert_near_exact, exact_twin, tiny_llama

BLOCK = 8
DTYPES = [torch.float32, torch.bfloat16]


def _row_invariant(dtype, block, device="cpu"):
    """Does a matrix product give every row the same bits wherever the row sits in the block?"""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(96, 32, generator=g).to(dtype), torch.randn(block, 32, generator=g).to(dtype)
    full = F.linear(x.to(device), w.to(device))
    for r in range(block):
        y = torch.randn(block, 32, generator=g).to(dtype)
        y[0] = x[r]
        if not torch.equal(F.linear(y.to(device), w.to(device))[0], full[r]):
            return False
    return True


def expect_row_invariance(request, dtype, block):
    """Bitwise checks need a row-invariant matrix product at `block` rows; where this CPU's is not,
    the test still runs, as an xfail naming the reason (strict=False: an XPASS if the bits agree)."""
    if not _row_invariant(dtype, block):
        reason = f"this CPU's {dtype} matrix product is not row-invariant at {block} rows"
        request.applymarker(pytest.mark.xfail(reason=reason, strict=False))


def _tiny(dtype=torch.float32, context=256):
    loaded = tiny_llama(context=context)
    loaded.model.to(dtype)
    loaded.dtype = dtype
    return loaded


def _ids(n, seed, vocab=97):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_logits_match_hf_backend_fp32():
    model = _tiny().model
    hf, st, hf64 = HFBackend(model), StaticBackend(model, block=BLOCK), exact_twin(model)
    prompt, more = _ids(20, 1), _ids(12, 2)  # 12 > BLOCK: two blocks
    assert_near_exact(st.prefill(prompt), hf.prefill(prompt), hf64.prefill(prompt))
    a = st.forward(more)
    assert_near_exact(a, hf.forward(more), hf64.forward(more))
    assert a.shape == (12, 97) and a.dtype == torch.float32 and st.cached == 32


def test_prefill_is_padded_to_a_few_shapes_and_the_padding_is_never_read():
    """On CUDA every new prefill shape kept host memory for good (RSS grew ~0.75 MB per new prompt
    length over 500 SQuAD prompts, benchmarks/reliability/engine_cuda_before_fix.md): prompts are
    padded to multiples of 64. The logits, and the steps after, still match the HF model's."""
    model = _tiny().model
    st, hf, hf64 = StaticBackend(model, block=BLOCK), HFBackend(model), exact_twin(model)
    shapes, layers = [], st.weights.run

    def spy(x, *args, **kwargs):
        if not kwargs.get("step"):
            shapes.append(x.shape[0])
        return layers(x, *args, **kwargs)

    st.weights.run = spy
    for n in (1, 5, 63, 64, 65, 130):
        prompt, more = _ids(n, n), _ids(BLOCK + 3, n + 1)
        assert_near_exact(st.prefill(prompt), hf.prefill(prompt), hf64.prefill(prompt))
        assert st.cached == n
        assert_near_exact(st.forward(more), hf.forward(more), hf64.forward(more))
    assert shapes == [64, 64, 64, 64, 128, 192]


def test_hf_backend_pads_the_prefill_and_drops_the_padding():
    """The generic loop pads its prompts as the static backend does (a bounded set of prefill
    shapes). The model sees multiples of 64 tokens; the cache keeps only the prompt."""
    model = _tiny().model
    hf, seen = HFBackend(model), []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["input_ids"].shape[1]), with_kwargs=True)
    for n in (1, 63, 64, 65):
        prompt, more = _ids(n, n), _ids(3, n + 1)
        logits = hf.prefill(prompt)
        assert hf.cached == n
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([prompt])).logits[0, -1:]
            torch.testing.assert_close(logits, alone, atol=1e-5, rtol=1e-5)
            # the next tokens continue from the prompt, not from the padding
            after = model(input_ids=torch.tensor([prompt + more])).logits[0, -3:]
            torch.testing.assert_close(hf.forward(more), after, atol=1e-4, rtol=1e-4)
    hook.remove()
    assert seen[::4] == [64, 64, 64, 128]  # the prefills (then a reference run, a step, a reference run)


@pytest.mark.parametrize("dtype", DTYPES)
def test_block_rows_bit_identical_to_one_token_steps(dtype, request):
    expect_row_invariance(request, dtype, BLOCK)
    st = StaticBackend(_tiny(dtype).model, block=BLOCK)
    prompt, more = _ids(20, 3), _ids(13, 4)
    st.prefill(prompt)
    one_by_one = torch.cat([st.forward([t]) for t in more])
    st.trim(20)
    together = st.forward(more)
    st.trim(20)
    chunks = torch.cat([st.forward(more[:3]), st.forward(more[3:10]), st.forward(more[10:])])
    assert torch.equal(one_by_one, together) and torch.equal(one_by_one, chunks)


def test_trim_only_moves_the_position():
    st = StaticBackend(_tiny().model, block=BLOCK)
    st.prefill(_ids(10, 5))
    first = st.forward(_ids(5, 6))
    st.trim(10)
    st.forward(_ids(7, 7))  # overwrite positions 10..16 with other tokens, then roll back
    st.trim(10)
    assert torch.equal(st.forward(_ids(5, 6)), first)
    with pytest.raises(ValueError):
        st.trim(16)


def test_attention_lengths_and_kernel_fallback(caplog):
    model = _tiny(context=4096).model
    st = StaticBackend(model, block=BLOCK, min_bucket=16)
    assert [st.attention_length(n) for n in (1, 17, 512, 513, 1100, 5000)] == [16, 32, 512, 1024, 1536, st.capacity]
    with caplog.at_level(logging.WARNING, logger="llma.static"):
        flash = StaticBackend(model, block=BLOCK, attention="flash")  # a CUDA kernel: sdpa on CPU
    assert flash.attention == ("flash" if torch.cuda.is_available() and model.device.type == "cuda" else "sdpa")
    assert "using sdpa" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llma.static"):  # Triton kernels: CUDA only (8-wide heads too narrow)
        split = StaticBackend(model, block=BLOCK, attention="split")
    assert split.attention == "sdpa" and "split attention unusable" in caplog.text
    with pytest.raises(ValueError, match="attention"):
        StaticBackend(model, attention="fast")


def _hf_greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                         attention_mask=torch.ones(1, len(prompt), dtype=torch.long), eos_token_id=None)
    return out[0, len(prompt):].tolist()


CONFIGS = [
    LLMAConfig(min_n=1, max_n=4, k=16, adaptive=False, copy_from_output=False, max_new_tokens=40),
    LLMAConfig(min_n=2, max_n=4, k=4, adaptive=True, k_max=32, max_new_tokens=40),
    LLMAConfig(max_new_tokens=40),  # this backend's defaults: fill the block, "longest", the answer first
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_llma_bit_identical_to_greedy_tiny(dtype):
    loaded = _tiny(dtype)
    engine = Engine(loaded, backend=StaticBackend(loaded.model, block=BLOCK))
    prompt = _ids(24, 8)
    greedy = engine.generate(prompt, None, CONFIGS[0].greedy()).tokens
    if dtype == torch.float32:
        assert greedy == _hf_greedy(loaded.model, prompt, 40)
    # References: the greedy answer itself (long drafts accepted, capped at the block) and noise.
    refs = {"answer": greedy[3:], "noise": _ids(50, 9)}
    for config in CONFIGS:
        events = list(engine.stream(prompt, refs, config))
        assert [t for e in events for t in e.new_tokens] == greedy
        assert max(e.proposed for e in events) == BLOCK - 1  # the decoder respects max_draft
        assert sum(e.accepted for e in events) > 10


def test_attention_length_grows_past_the_reservation():
    loaded = _tiny()
    st = StaticBackend(loaded.model, block=BLOCK, min_bucket=16)
    engine = Engine(loaded, backend=st)
    prompt = _ids(10, 10)
    st.reserve(2)
    config = LLMAConfig(max_new_tokens=60).greedy()
    tokens = engine.decoder.generate(prompt, stop=StopConfig(60)).tokens
    assert st.key_length >= 64 and tokens == _hf_greedy(loaded.model, prompt, 60)
    assert engine.generate(prompt, None, config).tokens == tokens


def test_smollm_matches_hf_greedy_and_llma_is_identical(smollm):
    tok = smollm.tokenizer
    text = ("Answer from the passage.\n\n[1] The Eiffel Tower is a wrought-iron lattice tower in Paris. It is "
            "named after the engineer Gustave Eiffel, whose company designed and built the tower.\n\n"
            "Question: Who is the Eiffel Tower named after?")
    prompt = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    refs = {"passage": tok(text, add_special_tokens=False)["input_ids"]}
    config = LLMAConfig(max_new_tokens=16)
    hf = Engine(smollm, backend="hf").generate(prompt, refs, config.greedy()).tokens
    engine = Engine(smollm, backend=StaticBackend(smollm.model, block=BLOCK))
    greedy = engine.generate(prompt, refs, config.greedy()).tokens
    llma = engine.generate(prompt, refs, config)
    assert greedy == hf and llma.tokens == greedy and llma.stats.accepted_tokens > 0


def _gpt2():
    config = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    return LoadedModel(GPT2LMHeadModel(config).eval(), None, "tiny-gpt2", torch.device("cpu"), torch.float32)


def test_unsupported_architecture_falls_back_with_a_logged_reason(caplog):
    loaded = _gpt2()
    assert "gpt2" in unsupported_reason(loaded.model)
    with caplog.at_level(logging.WARNING, logger="llma.static"):
        engine = Engine(loaded, backend="static")
    assert isinstance(engine.backend, HFBackend)
    assert "falling back" in caplog.text and "gpt2" in caplog.text
    with pytest.raises(ValueError, match="cannot run"):
        StaticBackend(loaded.model)


def test_unsupported_settings_are_named():
    base = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    gelu = LlamaForCausalLM(LlamaConfig(**base, hidden_act="gelu"))
    assert "activation" in unsupported_reason(gelu)
    dynamic = LlamaForCausalLM(LlamaConfig(**base, rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    assert "rope" in unsupported_reason(dynamic)
    assert unsupported_reason(LlamaForCausalLM(LlamaConfig(**base))) is None


def test_backend_choice():
    loaded = _tiny()
    assert isinstance(Engine(loaded).backend, HFBackend)  # auto on CPU: the generic loop
    assert isinstance(Engine(loaded, backend="static").backend, StaticBackend)
    assert Engine(loaded, backend="static").backend.name == "static"
    with pytest.raises(ValueError, match="CUDA"):
        select_backend(loaded.model, EngineOptions("static-graphs"))
    with pytest.raises(ValueError, match="backend must be"):
        Engine(loaded, backend="fast")


@pytest.mark.cuda
def test_cuda_graphs_llma_bit_identical_to_greedy():
    loaded = _tiny(torch.bfloat16)
    loaded.model.to("cuda")
    loaded.device = torch.device("cuda")
    engine = Engine(loaded)  # auto on CUDA: static with graphs (and its defaults: drafts packed, compiled)
    assert engine.backend.graphs and engine.backend.name.startswith("static-graphs")
    prompt = _ids(24, 11)
    greedy = engine.generate(prompt, None, CONFIGS[0].greedy()).tokens
    refs = {"answer": greedy[3:], "noise": _ids(50, 9)}
    for config in CONFIGS:
        assert engine.generate(prompt, refs, config).tokens == greedy
    eager = Engine(loaded, backend="static")
    assert eager.generate(prompt, refs, CONFIGS[1]).tokens == eager.generate(prompt, None, CONFIGS[1].greedy()).tokens


@pytest.mark.cuda
def test_cuda_prefill_graphs_agree_with_the_eager_prefill():
    """One graph per padded prompt length, in a shared memory pool: replaying another length's graph
    in between changes nothing, and the graph leaves the cache as the eager prefill does."""
    loaded = _tiny()
    loaded.model.to("cuda")
    graphs, eager = StaticBackend(loaded.model, graphs=True), StaticBackend(loaded.model, graphs=False)
    long, short = _ids(70, 1), _ids(20, 2)  # graph lengths 96 and 64
    first = graphs.prefill(long).clone()
    graphs.prefill(short)
    again = graphs.prefill(long)
    assert torch.equal(first, again) and sorted(graphs.graph_cache.prefills) == [64, 96]
    torch.testing.assert_close(again, eager.prefill(long), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(graphs.forward([5, 6]), eager.forward([5, 6]), atol=1e-4, rtol=1e-4)


def test_upload_puts_the_ints_on_the_device():
    assert torch.equal(upload([3, -1, 2**40], torch.device("cpu")), torch.tensor([3, -1, 2**40]))
    if torch.cuda.is_available():  # pinned and non-blocking there: the values must still arrive intact
        cuda = torch.device("cuda")
        moved = [upload(list(range(i, i + 40)), cuda) for i in range(50)]
        assert all(torch.equal(m.cpu(), torch.arange(i, i + 40)) for i, m in enumerate(moved))


def test_graph_lengths_two_per_doubling_each_under_one_and_a_half_times_the_prompt():
    lengths = [graph_length(n, 8256) for n in range(1, 8193)]
    assert sorted(set(lengths)) == [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192]
    assert all(n <= m <= max(64, 1.5 * n) for n, m in enumerate(lengths, start=1))
    assert graph_length(300, 320) == 320 and graph_length(330, 320) == 330  # capped, never below the prompt


@pytest.mark.cuda
def test_cuda_new_prefill_graphs_hold_little_gpu_memory():
    """A capture per new prompt length once took a fresh stream, and cuBLAS keeps a workspace
    (up to 32 MB) per stream for good: 294 MB after 500 SQuAD prompts (engine_cuda_prefill_graphs.md)."""
    loaded = _tiny()
    loaded.model.to("cuda")
    backend = StaticBackend(loaded.model, graphs=True)
    backend.prefill(_ids(20, 1))
    before = torch.cuda.memory_allocated()
    for n in (70, 100, 150, 200):  # four new graph lengths: 96, 128, 192, 256
        backend.prefill(_ids(n, n))
    assert len(backend.graph_cache.prefills) == 5
    assert torch.cuda.memory_allocated() - before < 4 * 2**20
