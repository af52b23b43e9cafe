"""Repetition, presence and frequency penalties (llma.penalties) in the verifiers.

fp32 on CPU, tiny random Llamas: greedy with penalties equals Hugging Face `generate` with the same
penalties (its own `repetition_penalty`; presence and frequency through a LogitsProcessor, as HF has
none built in), and LLMA equals that greedy on the HF backend and the static backend, with one draft
or several packed per step (each row penalised as of its own prefix).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llma_fixtures import tiny_llama
from test_llma_properties_decoder import (TableBackend, check_run, check_stats, decode_setup, llma_settings,
                                          references_from)
from transformers import LogitsProcessor, LogitsProcessorList

from llma.decoder import collect
from llma.engine import OUTPUT_REF, Engine, LLMAConfig
from llma.penalties import Penalties, TokenCounts
from llma.repetition import RepetitionStop
from llma.static import StaticBackend
from llma.verifier import (ForcedVerifier, GreedyVerifier, PenalisedRowsVerifier, PenalisedVerifier,
                           RowsVerifier, SamplingVerifier)

N = 40


class PresenceFrequency(LogitsProcessor):
    """OpenAI's presence and frequency penalties over the generated tokens, for HF `generate`."""

    def __init__(self, prompt_len: int, presence: float, frequency: float) -> None:
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        counts = torch.zeros_like(scores)
        generated = input_ids[:, self.prompt_len :]
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - (self.frequency * counts + self.presence * (counts > 0).float())


def _hf(model, prompt, n, repetition=1.0, presence=0.0, frequency=0.0):
    processors = LogitsProcessorList([PresenceFrequency(len(prompt), presence, frequency)]) \
        if presence or frequency else None
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                         attention_mask=torch.ones(1, len(prompt), dtype=torch.long), eos_token_id=None,
                         repetition_penalty=repetition, logits_processor=processors)
    return out[0, len(prompt):].tolist()


def _ids(n, seed, vocab=97):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


SETTINGS = [  # (repetition, presence, frequency)
    (1.3, 0.0, 0.0), (0.8, 0.0, 0.0), (1.0, 0.6, 0.0), (1.0, 0.0, 0.4), (1.2, 0.5, 0.3), (1.0, -0.5, 0.2),
]


def _config(repetition, presence, frequency, **kwargs):
    return LLMAConfig(max_new_tokens=N, repetition_penalty=repetition, presence_penalty=presence,
                      frequency_penalty=frequency, repetition_stop=False, **kwargs)


@pytest.mark.parametrize("penalties", SETTINGS)
def test_greedy_equals_hf_generate_and_llma_equals_greedy(penalties):
    loaded = tiny_llama(context=256)
    engine = Engine(loaded, backend="hf")
    prompt = _ids(24, 8)
    config = _config(*penalties)
    greedy = engine.generate(prompt, None, config.greedy()).tokens
    assert greedy == _hf(loaded.model, prompt, N, *penalties)
    assert greedy != engine.generate(prompt, None, _config(1.0, 0.0, 0.0).greedy()).tokens  # it bites
    refs = {"answer": greedy[3:], "noise": _ids(50, 9)}
    for llma in (config, _config(*penalties, min_n=1, k=16, adaptive=False, copy_from_output=False)):
        result = engine.generate(prompt, refs, llma)
        assert result.tokens == greedy and result.stats.accepted_tokens > N // 2


def _spy(backend):
    """Counts the backend's calls by method (and forward_rows' row counts)."""
    calls = {"forward": 0, "forward_rows": [], "forward_argmax": 0}
    forward, rows, argmax = backend.forward, backend.forward_rows, backend.forward_argmax

    def count_forward(ids):
        calls["forward"] += 1
        return forward(ids)

    def count_rows(r):
        calls["forward_rows"].append(len(r))
        return rows(r)

    def count_argmax(r):
        calls["forward_argmax"] += 1
        return argmax(r)

    backend.forward, backend.forward_rows, backend.forward_argmax = count_forward, count_rows, count_argmax
    return calls


@pytest.mark.parametrize("packed", [0, 4])
def test_static_backend_llma_equals_greedy_with_penalties(packed):
    """The static backend's argmax fast path cannot penalise: with penalties the decoder reads the
    logits (forward / forward_rows), and several packed drafts are each penalised as of their rows."""
    loaded = tiny_llama(context=256)
    backend = StaticBackend(loaded.model, block=16, packed_drafts=packed)
    engine, calls = Engine(loaded, backend=backend), _spy(backend)
    prompt, penalties = _ids(24, 8), (1.2, 0.5, 0.3)
    greedy = engine.generate(prompt, None, _config(*penalties).greedy()).tokens
    assert greedy == _hf(loaded.model, prompt, N, *penalties)
    refs = {"answer": greedy[3:], "noise": _ids(50, 9), "half": greedy[10:20] + _ids(10, 3)}
    result = engine.generate(prompt, refs, _config(*penalties))
    assert result.tokens == greedy and result.stats.accepted_tokens > N // 2
    assert calls["forward_argmax"] == 0
    if packed:
        assert max(calls["forward_rows"]) > 1  # several drafts verified in one step
    plain = engine.generate(prompt, refs, _config(1.0, 0.0, 0.0))  # no penalties: the argmax path
    assert calls["forward_argmax"] > 0 and plain.tokens != greedy


def _naive(logits, prompt, output, drafts, p):
    """Row r of draft c penalised from scratch, token by token, as of output + drafts[c][:r]."""
    out = logits.clone()
    for c, draft in enumerate(drafts):
        for r in range(logits.shape[1]):
            made = [*output, *draft[:r]]
            for t in set(prompt) | set(made):
                x = out[c, r, t]
                out[c, r, t] = x * p.repetition if x < 0 else x / p.repetition
            counts = torch.zeros(logits.shape[-1])
            for t in made:
                counts[t] += 1
            out[c, r] -= p.frequency * counts + p.presence * (counts > 0).float()
    return out


def test_each_row_is_penalised_as_of_its_own_prefix():
    p = Penalties(1.5, 0.25, 0.75)
    prompt, output = [1, 2, 3, 3], [4, 5, 4]
    counts = TokenCounts(p, prompt)
    counts.extend(output[:1])
    counts.apply(torch.zeros(1, 10), [()])  # the tensors made, then updated by later extends
    counts.extend(output[1:])
    drafts = [(6, 6, 2, 7), (4, 9), (8,)]
    logits = torch.randn(3, 5, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(counts.apply(logits, drafts), _naive(logits, prompt, output, drafts, p))
    assert torch.equal(counts.apply(logits[0], [drafts[0]]), _naive(logits, prompt, output, drafts, p)[0])


class Recorder:
    """A rule that notes the logits it is given and accepts nothing."""

    def __init__(self):
        self.seen = []

    def verify(self, logits, draft, position):
        self.seen.append(logits)
        return 0, int(logits[0].argmax())


def test_penalised_verifier_follows_its_verdicts():
    p = Penalties(2.0, 1.0, 0.5)
    rule = Recorder()
    verifier = PenalisedVerifier(rule, TokenCounts(p, [7]))
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(1))
    token = verifier.verify(logits[:1], (), 0)[1]
    verifier.verify(logits, (3, 4), 1)
    assert torch.equal(rule.seen[1], _naive(logits[None], [7], [token], [(3, 4)], p)[0])
    with pytest.raises(RuntimeError, match="one generation"):
        verifier.verify(logits, (3, 4), 1)  # position 1 again: the verifier is out of step


def test_engine_verifiers():
    engine = Engine(tiny_llama(), backend="hf")
    assert isinstance(engine.verifier(LLMAConfig()), GreedyVerifier)
    greedy = engine.verifier(LLMAConfig(repetition_penalty=1.1), [1, 2])
    assert isinstance(greedy, PenalisedRowsVerifier) and isinstance(greedy, RowsVerifier) and greedy.reads_logits
    sampling = engine.verifier(LLMAConfig(temperature=0.7, seed=1, presence_penalty=0.5))
    # Sampling chooses among drafts too (no draft changes its tokens), from the penalised logits.
    assert isinstance(sampling.rule, SamplingVerifier) and isinstance(sampling, RowsVerifier) and sampling.reads_logits
    for bad in ({"repetition_penalty": 0.0}, {"presence_penalty": float("nan")}, {"frequency_penalty": "1"}):
        with pytest.raises(ValueError, match="penalty"):
            LLMAConfig(**bad)
    assert LLMAConfig().penalties() is None and Penalties().active is False


def test_sampling_with_penalties_samples_the_penalised_law():
    """The sampling rule draws from the penalised logits: with a presence penalty that rules out
    every token already written, no token repeats; LLMA with the same seed runs the same rule."""
    loaded = tiny_llama(vocab=97, context=256)
    engine = Engine(loaded, backend="hf")
    prompt = _ids(10, 4)
    config = LLMAConfig(max_new_tokens=30, temperature=1.0, seed=3, presence_penalty=1e4, repetition_stop=False)
    for run in (config.greedy(), config):
        tokens = engine.generate(prompt, {"doc": _ids(60, 5)}, run).tokens
        assert len(tokens) == 30 and len(set(tokens)) == 30
    unpenalised = engine.generate(prompt, None, LLMAConfig(max_new_tokens=30, temperature=1.0, seed=3,
                                                           repetition_stop=False).greedy()).tokens
    assert len(set(unpenalised)) < 30


def test_forced_decoding_ignores_the_penalties():
    loaded = tiny_llama(context=256)
    engine = Engine(loaded, backend="hf")
    prompt, target = _ids(12, 1), _ids(20, 2)
    config = LLMAConfig(max_new_tokens=20, repetition_penalty=1.5, presence_penalty=1.0, frequency_penalty=1.0,
                        min_n=1, repetition_stop=False)
    assert engine.generate(prompt, {"t": target}, config, verifier=ForcedVerifier(target)).tokens == target


@settings(max_examples=150, deadline=None)
@given(setup=decode_setup(), cfg=llma_settings(), data=st.data(),
       penalties=st.tuples(st.sampled_from([1.0, 0.7, 1.5]), st.sampled_from([0.0, 0.8, -0.3]),
                           st.sampled_from([0.0, 0.4, 1.1])),
       loop=st.sampled_from([None, RepetitionStop(1, 4, 2), RepetitionStop(2, 6, 3)]))
def test_engine_llma_equals_engine_greedy_with_penalties_and_a_repetition_stop(setup, cfg, data, penalties, loop):
    """On mock models whose outputs soon cycle (so loops are found, often inside accepted drafts):
    every step extends greedy's output with the same penalties, and both stop at the same token."""
    (seed, vocab, order, period), prompt, stop, context = setup
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=sorted(stop.eos_token_ids)),
                            get_input_embeddings=lambda: SimpleNamespace(num_embeddings=vocab))
    engine = Engine(SimpleNamespace(model=model), backend=TableBackend(seed, vocab, context, order, period))
    config = LLMAConfig(**cfg, max_new_tokens=stop.max_new_tokens, stop_sequences=stop.stop_sequences,
                        repetition_penalty=penalties[0], presence_penalty=penalties[1],
                        frequency_penalty=penalties[2], repetition_stop=loop or False)
    plain = engine.generate(prompt, None, config.greedy())
    refs = data.draw(references_from(prompt + plain.tokens, vocab))
    events = list(engine.stream(prompt, refs, config))
    k_cap = max(config.k, config.k_max) if config.adaptive else config.k
    check_run(events, plain.tokens, {**refs, OUTPUT_REF: plain.tokens}, k_cap=k_cap)
    check_stats(collect(iter(events)), events, plain)
