"""Property-based tests (hypothesis) for the decoder loop and the engine, end to end on mock models
(and a tiny random Llama): LLMA output equals plain greedy token for token, each step extends the
greedy output, the statistics add up. (The reference index and the verifiers: test_llma_properties.py.)
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from llma_fixtures import ScriptedBackend, SequenceBackend, tiny_llama

from llma.decoder import Decoder, StopConfig, collect
from llma.engine import OUTPUT_REF, Engine, LLMAConfig
from llma.proposer import CopyLength, Proposer
from llma.reference_index import POLICIES, ReferenceIndex
from llma.types import StepEvent

MEDIUM = settings(max_examples=60, deadline=None)


# --------------------------------------------------------------------------------------------------
# End to end: the decoder loop and the engine on mock models.
# --------------------------------------------------------------------------------------------------


class TableBackend(SequenceBackend):
    """A deterministic mock model: the logits after a sequence depend on its last token (and the one
    before if `order` is 2) and its length mod `period`, through a random table. A wrong cache (bad
    trim, wrong or misplaced tokens fed) changes the logits; the output soon cycles, so copying from
    the references and from the answer itself pays."""

    def __init__(self, seed: int, vocab: int, context_length: int, order: int = 2, period: int = 2) -> None:
        super().__init__(context_length)
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, period, vocab, generator=g)
        self.order, self.period, self.vocab = order, period, vocab
        self.prefilled = False

    def _row(self, upto: int) -> torch.Tensor:
        s = self.seq[:upto]
        a = s[-2] if len(s) >= 2 and self.order == 2 else 0
        return self.table[a, s[-1], len(s) % self.period]

    def prefill(self, ids):
        assert 1 <= len(ids) <= self._context_length
        self.seq, self.prefilled = list(ids), True
        self.forward_sizes.append(len(ids))
        return self._row(len(self.seq)).unsqueeze(0)

    def forward(self, ids):
        assert self.prefilled, "forward before prefill"
        assert ids, "empty forward"
        start = len(self.seq)
        self.seq.extend(ids)
        assert len(self.seq) <= self._context_length, "forward past the context window"
        self.forward_sizes.append(len(ids))
        return torch.stack([self._row(j + 1) for j in range(start, len(self.seq))])


def check_run(events: list[StepEvent], greedy: list[int], refs_after: dict, *, k_cap: int) -> None:
    """Every event extends the greedy output; per-step and total figures are consistent."""
    assert events and events[-1].finished and not any(e.finished for e in events[:-1])
    output: list[int] = []
    for i, e in enumerate(events):
        assert e.step == i
        assert 0 <= e.accepted <= e.proposed <= k_cap
        assert 1 <= len(e.new_tokens) <= e.proposed + 1
        if e.finished:  # a stop inside the draft may cut the model's own token (or more)
            assert e.accepted <= len(e.new_tokens) <= e.accepted + 1
        else:
            assert len(e.new_tokens) == e.accepted + 1
        before = len(output)
        output.extend(e.new_tokens)
        assert output == greedy[: len(output)], f"step {i} left the greedy output"
        if e.accepted:
            s = e.span
            assert s is not None and (s.out_start, s.out_end) == (before, before + e.accepted)
            assert list(refs_after[s.ref_id][s.ref_start : s.ref_end]) == output[s.out_start : s.out_end]
        else:
            assert e.span is None
    assert output == greedy


def check_stats(result, events, plain) -> None:
    s = result.stats
    event(f"drafts accepted: {'none' if not s.accepted_tokens else 'some'}")
    event(f"drafts rejected: {'none' if s.accepted_tokens == s.proposed_tokens else 'some'}")
    event(f"stop: {result.stop_reason}")
    assert result.tokens == plain.tokens and result.stop_reason == plain.stop_reason
    assert s.forward_passes == len(events) <= plain.stats.forward_passes == len(plain.tokens)
    assert s.tokens == len(result.tokens) == sum(len(e.new_tokens) for e in events)
    assert s.accepted_tokens == sum(e.accepted for e in events) <= s.proposed_tokens
    assert s.proposed_tokens == sum(e.proposed for e in events)
    assert s.drafts == sum(1 for e in events if e.proposed) == sum(s.accepted_hist.values())
    assert sum(n * c for n, c in s.accepted_hist.items()) == s.accepted_tokens
    assert sum(sp.out_end - sp.out_start for sp in result.spans) == s.accepted_tokens
    assert s.forward_passes + s.accepted_tokens - s.tokens in (0, 1)


@st.composite
def llma_settings(draw):
    min_n = draw(st.integers(1, 3))
    return dict(
        min_n=min_n, max_n=draw(st.integers(min_n, 5)), k=draw(st.integers(1, 8)),
        adaptive=draw(st.booleans()), k_max=draw(st.integers(1, 16)),
        policy=draw(st.sampled_from(POLICIES)), copy_from_output=draw(st.integers(0, 2)) > 0,
    )


@st.composite
def references_from(draw, greedy: list[int], vocab: int):
    """References: slices of the greedy output (some mutated), and random token lists."""
    refs = {}
    n_refs = draw(st.integers(0, 3)) if draw(st.integers(0, 4)) == 0 else draw(st.integers(1, 3))
    for ref_id in draw(st.lists(st.sampled_from(("a", "b", "c", 3)), unique=True, min_size=n_refs, max_size=n_refs)):
        if greedy and draw(st.integers(0, 3)):
            i = draw(st.integers(0, len(greedy)))
            ref = list(greedy[i : draw(st.integers(i, len(greedy)))])
            for _ in range(draw(st.integers(0, 2))):
                if ref:
                    ref[draw(st.integers(0, len(ref) - 1))] = draw(st.integers(0, vocab - 1))
            ref = draw(st.lists(st.integers(0, vocab - 1), max_size=3)) + ref
        else:
            ref = draw(st.lists(st.integers(0, vocab - 1), max_size=12))
        refs[ref_id] = ref
    return refs


@st.composite
def decode_setup(draw):
    vocab = draw(st.integers(3, 8))
    prompt = draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=6))
    def rarely():
        return draw(st.integers(0, 4)) == 0

    eos = frozenset([draw(st.integers(0, vocab - 1))] if rarely() else [])
    stops = (draw(st.lists(st.integers(0, vocab - 1), min_size=2, max_size=3).map(tuple)),) if rarely() else ()
    # Mostly long answers with room to spare; sometimes short ones, or a context window that ends
    # the answer (and limits the drafts).
    stop = StopConfig(draw(st.integers(1, 6) if rarely() else st.integers(16, 40)), eos, stops)
    context = len(prompt) + draw(st.integers(0, 8) if rarely() else st.integers(40, 50))
    model = (draw(st.integers(0, 2**16)), vocab, draw(st.sampled_from([1, 2])), draw(st.integers(1, 3)))
    return model, prompt, stop, context


@MEDIUM
@given(setup=decode_setup(), cfg=llma_settings(), data=st.data())
def test_decoder_with_proposer_equals_plain_greedy(setup, cfg, data):
    (seed, vocab, order, period), prompt, stop, context = setup
    plain = Decoder(TableBackend(seed, vocab, context, order, period)).generate(prompt, stop=stop)
    assert plain.stats.proposed_tokens == 0 and plain.stats.forward_passes == len(plain.tokens)

    refs = data.draw(references_from(prompt + plain.tokens, vocab))
    index = ReferenceIndex(refs, min_n=cfg["min_n"], max_n=cfg["max_n"], policy=cfg["policy"])
    k_max = max(cfg["k"], cfg["k_max"])
    copy = CopyLength(cfg["k"], cfg["adaptive"], min(2, cfg["k"]), k_max)
    proposer = Proposer(index, copy, "out" if cfg["copy_from_output"] else None)
    backend = TableBackend(seed, vocab, context, order, period)
    events = list(Decoder(backend).stream(prompt, proposer=proposer, stop=stop))
    check_run(events, plain.tokens, dict(index.references), k_cap=k_max if cfg["adaptive"] else cfg["k"])
    check_stats(collect(iter(events)), events, plain)
    assert len(backend.forward_sizes) == len(events)
    if cfg["copy_from_output"]:
        # The answer's reference holds every generated token but those of the last step.
        assert list(index.references.get("out", [])) == plain.tokens[: len(plain.tokens) - len(events[-1].new_tokens)]


@MEDIUM
@given(setup=decode_setup(), cfg=llma_settings(), eos_style=st.sampled_from(["int", "list", "none"]),
       data=st.data())
def test_engine_llma_equals_engine_greedy(setup, cfg, eos_style, data):
    (seed, vocab, order, period), prompt, stop, context = setup
    eos = sorted(stop.eos_token_ids)
    eos_id = {"int": eos[0] if eos else None, "list": eos, "none": None}[eos_style]
    # Just what the engine reads from a loaded model besides the backend: the EOS ids, the vocabulary.
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=eos_id),
                            config=SimpleNamespace(vocab_size=vocab),
                            get_input_embeddings=lambda: SimpleNamespace(num_embeddings=vocab))
    loaded = SimpleNamespace(model=model)
    engine = Engine(loaded, backend=TableBackend(seed, vocab, context, order, period))
    config = LLMAConfig(**cfg, max_new_tokens=stop.max_new_tokens, stop_sequences=stop.stop_sequences)
    plain = engine.generate(prompt, None, config.greedy())
    refs = data.draw(references_from(prompt + plain.tokens, vocab))
    events = list(engine.stream(prompt, refs, config))
    # The engine builds its own index; the answer's reference is the output itself.
    refs_after = {**refs, OUTPUT_REF: plain.tokens}
    k_cap = max(config.k, config.k_max) if config.adaptive else config.k
    check_run(events, plain.tokens, refs_after, k_cap=k_cap)
    check_stats(collect(iter(events)), events, plain)


@MEDIUM
@given(script=st.lists(st.integers(3, 9), max_size=12), prompt=st.lists(st.integers(0, 9), min_size=1, max_size=4),
       cfg=llma_settings(), max_new=st.integers(1, 20), data=st.data())
def test_scripted_backend_llma_equals_plain(script, prompt, cfg, max_new, data):
    """ScriptedBackend answers `wrong` (1) after any deviation, so a fed or cached wrong token shows."""
    stop = StopConfig(max_new, frozenset({2}))
    plain = Decoder(ScriptedBackend(script, vocab=10)).generate(prompt, stop=stop)
    assert plain.tokens == (script + [2])[:max_new]
    refs = data.draw(references_from(prompt + plain.tokens, 10))
    index = ReferenceIndex(refs, min_n=cfg["min_n"], max_n=cfg["max_n"], policy=cfg["policy"])
    k_max = max(cfg["k"], cfg["k_max"])
    proposer = Proposer(index, CopyLength(cfg["k"], cfg["adaptive"], min(2, cfg["k"]), k_max),
                        "out" if cfg["copy_from_output"] else None)
    events = list(Decoder(ScriptedBackend(script, vocab=10)).stream(prompt, proposer=proposer, stop=stop))
    check_run(events, plain.tokens, dict(index.references), k_cap=k_max if cfg["adaptive"] else cfg["k"])
    check_stats(collect(iter(events)), events, plain)


@functools.lru_cache(maxsize=1)
def _tiny():
    return tiny_llama(vocab=16, context=48, seed=3)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=st.lists(st.integers(0, 15), min_size=1, max_size=6), cfg=llma_settings(),
       max_new=st.integers(1, 24), data=st.data())
def test_tiny_llama_llma_equals_greedy(prompt, cfg, max_new, data):
    engine = Engine(_tiny(), backend="hf")
    config = LLMAConfig(**cfg, max_new_tokens=max_new)
    plain = engine.generate(prompt, None, config.greedy())
    refs = data.draw(references_from(prompt + plain.tokens, 16))
    events = list(engine.stream(prompt, refs, config))
    k_cap = max(config.k, config.k_max) if config.adaptive else config.k
    check_run(events, plain.tokens, {**refs, OUTPUT_REF: plain.tokens}, k_cap=k_cap)
    check_stats(collect(iter(events)), events, plain)
