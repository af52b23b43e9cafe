"""llma.history: earlier answers' next tokens, and the drafts that start a new copy there."""
import threading

import pytest

from llma.decoder import Decoder, StopConfig
from llma.history import AnswerHistory, copy_start
from llma.proposer import CopyLength, Proposer
from llma.reference_index import ReferenceIndex
from llma_fixtures import ScriptedBackend, ScriptedRowsBackend


def test_next_tokens_most_frequent_first_ties_first_seen():
    h = AnswerHistory()
    h.add([1, 2, 1, 3, 1, 3])
    h.add([4], after=1)  # the pair across a step's boundary
    assert h.next_tokens(1, 5) == [3, 2, 4]
    assert h.next_tokens(1, 1) == [3]
    assert h.next_tokens(9, 3) == [] and len(h) == 5  # (1,2) (2,1) (1,3) (3,1) (1,4)
    h.clear()
    assert len(h) == 0 and h.next_tokens(1, 3) == []


def test_the_bound_keeps_the_most_frequent_pairs():
    h = AnswerHistory(max_pairs=4)
    h.add([1, 2] * 5)  # (1,2) x5, (2,1) x4
    h.add([7, 8, 9, 6, 5])  # four pairs seen once: over the bound
    assert len(h) <= 4
    assert h.next_tokens(1, 2) == [2] and h.next_tokens(2, 2) == [1]
    with pytest.raises(ValueError, match="max_pairs"):
        AnswerHistory(max_pairs=0)


def test_concurrent_answers_are_all_counted():
    h = AnswerHistory()
    threads = [threading.Thread(target=lambda: [h.add([5, 6]) for _ in range(500)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h._next[5][6] == 2000 and len(h) == 1


def _index(refs, **kw):
    return ReferenceIndex(refs, min_n=1, max_n=4, policy="longest", **kw)


def test_copy_start_drafts_the_reference_from_the_guessed_token():
    refs = {"doc": [40, 41, 42, 43, 44, 45, 46]}
    h = AnswerHistory()
    h.add([9, 44])  # earlier answers wrote 44 after 9; 9 is in no reference
    context = [1, 2, 9]
    assert _index(refs).lookup(context, 4) is None  # no suffix-anchored draft
    draft = copy_start(_index(refs), h, context, 3)
    assert draft.tokens == (44, 45, 46) and draft.ref_id == "doc"
    assert refs["doc"][draft.offset : draft.offset + len(draft)] == list(draft.tokens)
    assert draft.match_len == 0
    assert copy_start(_index(refs), h, context, 1).tokens == (44,)


def test_copy_start_passes_over_excluded_stop_and_unknown_tokens():
    refs = {"doc": [40, 41, 42, 43, 44, 45, 46]}
    h = AnswerHistory()
    h.add([9, 77, 9, 77, 9, 77, 9, 44, 9, 44, 9, 41])  # 77: in no reference
    assert copy_start(_index(refs), h, [9], 2).tokens == (44, 45)
    assert copy_start(_index(refs), h, [9], 2, exclude={44}).tokens == (41, 42)
    assert copy_start(_index(refs), h, [9], 2, stop_tokens={44, 41}) is None
    assert copy_start(_index(refs), h, [9], 2, tries=1) is None  # only 77 tried


def test_proposer_falls_back_to_a_copy_start_only_when_nothing_matches():
    refs = {"doc": [40, 41, 42, 43, 44, 45, 46]}
    h = AnswerHistory()
    h.add([9, 44, 45])
    proposer = Proposer(_index(refs), CopyLength(k=4), history=h)
    assert proposer.propose([1, 9], 8).tokens == (44, 45, 46)
    assert proposer.propose([1, 42], 8).tokens == (43, 44, 45, 46)  # the index's own draft wins
    assert Proposer(_index(refs), CopyLength(k=4)).propose([1, 9], 8) is None


def test_propose_many_fills_unused_drafts_within_the_packed_caps():
    refs = {"a": [5, 10, 11, 12, 13, 14, 15, 16], "b": [5, 20, 21, 22, 23, 24], "c": [30, 31, 32, 33]}
    h = AnswerHistory()
    h.add([5, 30])
    index = _index(refs, candidates=4)
    plain = Proposer(index, CopyLength(k=8)).propose_many([1, 5], 12, count=4, caps=(12, 3, 3, 2))
    drafts = Proposer(index, CopyLength(k=8), history=h).propose_many([1, 5], 12, count=4, caps=(12, 3, 3, 2))
    assert [d.tokens[0] for d in plain] == [10, 20]  # two drafts after 5: two of the four unused
    assert [d.tokens[0] for d in drafts] == [10, 20, 30]
    assert drafts[2].tokens == (30, 31, 32) and drafts[2].ref_id == "c"  # caps[2]
    assert sum(map(len, drafts)) <= 12 and len(drafts[0]) == 12 - 3 - 3  # the first keeps what is left
    h.add([5, 10])  # a guess that an index draft already starts with is not drafted twice
    again = Proposer(index, CopyLength(k=8), history=h).propose_many([1, 5], 12, count=4, caps=(12, 3, 3, 2))
    assert [d.tokens[0] for d in again] == [10, 20, 30]


def test_the_proposer_adds_the_answer_to_the_history_pair_by_pair():
    h = AnswerHistory()
    proposer = Proposer(_index({"doc": [1, 2]}), history=h)
    proposer.observe([7])
    proposer.observe([8, 9])
    assert h.next_tokens(7, 2) == [8] and h.next_tokens(8, 2) == [9] and len(h) == 2


@pytest.mark.parametrize("rows", [False, True])
def test_a_second_answer_copies_where_the_first_taught_it_and_stays_exact(rows):
    """The mock model wants to write `script`; the reference holds its second half, but the token
    before that half is in no reference: without history the step there drafts nothing. After one
    answer, the history knows what follows that token: fewer forwards, the same tokens."""
    script = [60, 61, 62, 9, 44, 45, 46, 47, 48, 49]
    refs = {"doc": [60, 61, 62, 3, 44, 45, 46, 47, 48, 49]}

    def run(history):
        backend = (ScriptedRowsBackend(script, rows=4, caps=(12, 3, 3, 3)) if rows
                   else ScriptedBackend(script))
        index = ReferenceIndex(refs, min_n=1, max_n=4, policy="longest", candidates=4 if rows else 1)
        proposer = Proposer(index, CopyLength(k=12), history=history)
        events = list(Decoder(backend).stream([1, 2, 3], proposer=proposer, stop=StopConfig(64, frozenset({2}))))
        return [t for e in events for t in e.new_tokens], len(events)

    history = AnswerHistory()
    plain, plain_forwards = run(None)
    first, first_forwards = run(history)
    second, second_forwards = run(history)
    assert plain == first == second == script + [2]  # the mock's eos
    assert first_forwards == plain_forwards and second_forwards < plain_forwards


@pytest.mark.slow
@pytest.mark.shared_data("llma-rag/rag.jsonl")
def test_smollm_with_a_tree_and_its_history_identical_to_greedy_fp32(smollm, monkeypatch, shared_data):
    """The real default model, fp32 on CPU, the CUDA default's 4 drafts packed: one engine answers
    three rag.jsonl prompts in turn, its history growing; every answer is greedy's, and the history
    did draft copy starts (the proposer's calls counted)."""
    import llma.proposer
    from llma.engine import Engine, LLMAConfig
    from llma.static import StaticBackend
    from test_llma_static_rows import _rag_prompts

    drafted = []

    def counted(*args, **kwargs):
        draft = copy_start(*args, **kwargs)
        drafted.append(draft is not None)
        return draft

    monkeypatch.setattr(llma.proposer, "copy_start", counted)
    engine = Engine(smollm, backend=StaticBackend(smollm.model, block=32, packed_drafts=4, max_len=2048))
    config = LLMAConfig(max_new_tokens=32)
    for p in _rag_prompts(smollm.tokenizer, 3, shared_data):
        greedy = engine.generate(p.prompt, p.references, config.greedy()).tokens
        assert engine.generate(p.prompt, p.references, config).tokens == greedy
    assert len(engine.history) > 50 and any(drafted)


def test_the_engine_drafts_from_its_history_on_a_fixed_block_only_by_default():
    from llma.engine import Engine, LLMAConfig
    from llma_fixtures import tiny_llama

    hf, static = Engine(tiny_llama(), "hf"), Engine(tiny_llama(), "static")
    refs = {"doc": [1, 2, 3]}
    assert static.proposer(refs, LLMAConfig()).history is static.history
    assert hf.proposer(refs, LLMAConfig()).history is None
    assert hf.proposer(refs, LLMAConfig(answer_history=True)).history is hf.history
    assert static.proposer(refs, LLMAConfig(answer_history=False)).history is None
    # sampling too: no draft changes a seed's answer (test_llma_sampling_identity)
    assert static.proposer(refs, LLMAConfig(temperature=0.7, seed=1)).history is static.history
    mine = AnswerHistory()
    assert static.proposer(refs, LLMAConfig(), mine).history is mine  # the benchmark's, one per method
    with pytest.raises(ValueError, match="answer_history"):
        LLMAConfig(answer_history="yes")
