"""The repetition stop (llma.repetition): the rule, its incremental detector, and the decoder and
engine stopping at the very token that completes a loop, with LLMA and greedy alike."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llma_fixtures import ScriptedArgmaxBackend, ScriptedBackend, tiny_llama

from llma.decoder import Decoder, StopConfig
from llma.engine import Engine, LLMAConfig
from llma.proposer import CopyLength, Proposer
from llma.reference_index import ReferenceIndex
from llma.repetition import RepetitionStop, ends_in_loop
from llma.static import StaticBackend

RULE = RepetitionStop()
CYCLE = list(range(20, 30))  # a 10-token loop
LOOPING = [10, 11, 12, 13, 14] + CYCLE * 6  # 5 tokens, then the loop
STOP_AT = 5 + 3 * len(CYCLE)  # the third copy's last token


def test_the_rule():
    assert RULE == RepetitionStop(min_span=8, max_span=128, repeats=3)
    assert ends_in_loop(LOOPING[:STOP_AT], RULE) and not ends_in_loop(LOOPING[: STOP_AT - 1], RULE)
    assert ends_in_loop([7] * 24, RULE) and not ends_in_loop([7] * 23, RULE)  # period 1: 3 x 8 tokens
    assert not ends_in_loop(CYCLE * 2, RULE)  # two copies are not a loop
    assert ends_in_loop(CYCLE * 2, RepetitionStop(repeats=2))
    assert not ends_in_loop(CYCLE * 3, RepetitionStop(max_span=9))  # the block is longer than max_span
    assert not ends_in_loop([*CYCLE * 3, 1], RULE)  # the loop must end the output
    for bad in ({"min_span": 0}, {"max_span": 4}, {"repeats": 1}, {"min_span": 2.5}):
        with pytest.raises(ValueError):
            RepetitionStop(**bad)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=80), st.integers(1, 6), st.integers(1, 12), st.integers(2, 4))
def test_the_detector_flags_exactly_the_prefixes_that_end_in_a_loop(tokens, min_span, extra, repeats):
    rule = RepetitionStop(min_span=min_span, max_span=min_span + extra, repeats=repeats)
    detector = rule.detector()
    assert [detector.push(t) for t in tokens] == [ends_in_loop(tokens[: i + 1], rule)
                                                 for i in range(len(tokens))]


def _run(backend, rule, refs=None, k=8):
    proposer = Proposer(ReferenceIndex(refs, min_n=1), CopyLength(k=k)) if refs else None
    return list(Decoder(backend).stream([5, 6, 7], proposer=proposer,
                                        stop=StopConfig(100, frozenset({2}), (), rule)))


@pytest.mark.parametrize("backend", [ScriptedBackend, ScriptedArgmaxBackend])
def test_greedy_and_llma_stop_at_the_same_token(backend):
    greedy = _run(backend(LOOPING), RULE)
    tokens = [t for e in greedy for t in e.new_tokens]
    assert tokens == LOOPING[:STOP_AT] and greedy[-1].stop_reason == "repetition"
    # LLMA copies the loop in long drafts that run past the stop: the stop still cuts at the same token.
    llma = _run(backend(LOOPING), RULE, {"doc": LOOPING})
    assert [t for e in llma for t in e.new_tokens] == tokens and llma[-1].stop_reason == "repetition"
    assert len(llma) < len(greedy) and sum(e.accepted for e in llma) > len(tokens) // 2
    assert llma[-1].finished and not any(e.finished for e in llma[:-1])


def test_off_and_other_stops_first():
    off = _run(ScriptedBackend(LOOPING), None)
    assert [t for e in off for t in e.new_tokens] == [*LOOPING, 2] and off[-1].stop_reason == "eos"
    # A stop sequence that comes first ends the answer there.
    stop = StopConfig(100, frozenset(), (tuple(CYCLE[-3:]),), RULE)
    events = list(Decoder(ScriptedBackend(LOOPING)).stream([5, 6, 7], stop=stop))
    assert sum(len(e.new_tokens) for e in events) == 5 + len(CYCLE) and events[-1].stop_reason == "stop_sequence"


def looping_llama(vocab=97, context=256):
    """A tiny Llama that greedily writes nxt(t) after token t: after 0, 1 2 3 4 5, then 6..15 forever
    (its layers add nothing to the embedding; lm_head row j sums the normed embeddings of the
    tokens that j follows)."""
    loaded = tiny_llama(vocab=vocab, context=context)
    model = loaded.model
    nxt = [*range(1, 16), 6, *[16 + (t - 15) % (vocab - 16) for t in range(16, vocab)]]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        normed = model.model.norm(model.model.embed_tokens.weight)
        head = torch.zeros_like(model.lm_head.weight)
        head.index_add_(0, torch.tensor(nxt), normed)
        model.lm_head.weight.copy_(head)
    return loaded


EXPECTED = [*range(1, 6), *list(range(6, 16)) * 3]  # the third copy of the loop ends it


@pytest.mark.parametrize("backend", ["hf", "static", "packed"])
def test_engine_stops_greedy_and_llma_at_the_same_token(backend):
    loaded = looping_llama()
    chosen = {"hf": "hf", "static": StaticBackend(loaded.model, block=8),
              "packed": StaticBackend(loaded.model, block=16, packed_drafts=4)}[backend]
    engine = Engine(loaded, backend=chosen)
    prompt = [40, 41, 0]
    config = LLMAConfig(max_new_tokens=100)
    greedy = engine.generate(prompt, None, config.greedy())
    assert greedy.tokens == EXPECTED and greedy.stop_reason == "repetition"
    refs = {"doc": [3, 4, 5, *list(range(6, 16)) * 4], "noise": list(range(50, 90))}
    llma = engine.generate(prompt, refs, config)
    assert llma.tokens == EXPECTED and llma.stop_reason == "repetition"
    assert llma.stats.forward_passes < greedy.stats.forward_passes
    full = engine.generate(prompt, refs, LLMAConfig(max_new_tokens=100, repetition_stop=False))
    assert full.stop_reason == "max_new_tokens" and full.tokens[: len(EXPECTED)] == EXPECTED
    assert len(full.tokens) == 100


def test_config():
    assert LLMAConfig().loop_rule() == RULE
    assert LLMAConfig(repetition_stop=False).loop_rule() is None
    assert LLMAConfig(repetition_stop=None).loop_rule() is None
    assert LLMAConfig(repetition_stop=RepetitionStop(repeats=4)).loop_rule().repeats == 4
    with pytest.raises(ValueError, match="repetition_stop"):
        LLMAConfig(repetition_stop="yes")
