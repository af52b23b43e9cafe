"""The decoder loop against a scripted mock model: exact events, statistics, stop conditions."""
import pytest
import torch

from llma.decoder import Decoder, StopConfig
from llma.proposer import CopyLength, Proposer
from llma.reference_index import ReferenceIndex
from llma.types import CopiedSpan
from llma.verifier import ForcedVerifier, GreedyVerifier, SamplingConfig, SamplingVerifier, best_row
from llma_fixtures import ScriptedArgmaxBackend, ScriptedBackend, ScriptedRowsBackend

PROMPT = [5, 6, 7]
SCRIPT = [10, 11, 12, 13, 14, 15]
EOS = 2


def run(backend, refs=None, k=3, stop=None, verifier=None, **index_kwargs):
    proposer = None
    if refs is not None:
        proposer = Proposer(ReferenceIndex(refs, **{"min_n": 1, **index_kwargs}), CopyLength(k=k))
    stop = stop or StopConfig(max_new_tokens=50, eos_token_ids=frozenset({EOS}))
    return list(Decoder(backend).stream(PROMPT, proposer=proposer, stop=stop, verifier=verifier))


def test_exact_event_sequence():
    backend = ScriptedBackend(SCRIPT, eos=EOS)
    events = run(backend, {"a": [11, 12, 13, 99]})
    summary = [(e.step, e.new_tokens, e.proposed, e.accepted, e.span, e.finished, e.stop_reason) for e in events]
    assert summary == [
        (0, (10,), 0, 0, None, False, None),                      # prefill
        (1, (11,), 0, 0, None, False, None),                      # [10] is in no reference
        (2, (12, 13, 14), 3, 2, CopiedSpan("a", 1, 3, 2, 4), False, None),  # [11] -> copy 12 13 99
        (3, (15,), 0, 0, None, False, None),
        (4, (EOS,), 0, 0, None, True, "eos"),
    ]
    # One forward per event; the verify pass ran [last token + draft].
    assert backend.forward_sizes == [3, 1, 4, 1, 1]
    assert [e.elapsed_s for e in events] == sorted(e.elapsed_s for e in events)


def test_each_event_names_the_reference_its_draft_came_from_accepted_or_not():
    # prefill -> 10; [10] matches b -> draft [99] rejected (0 accepted, still from b); [11] -> a.
    events = run(ScriptedBackend(SCRIPT, eos=EOS), {"a": [11, 12, 13, 14, 15, EOS], "b": [10, 99]}, k=8)
    assert [(e.draft_ref, e.proposed, e.accepted) for e in events] == [(None, 0, 0), ("b", 1, 0), ("a", 5, 5)]


def test_output_equals_plain_decoding_and_stats_add_up():
    refs = {"a": [11, 12, 13, 14, 15, EOS], "b": [10, 99]}
    plain = Decoder(ScriptedBackend(SCRIPT, eos=EOS)).generate(PROMPT, stop=StopConfig(50, frozenset({EOS})))
    proposer = Proposer(ReferenceIndex(refs, min_n=1), CopyLength(k=8))
    fast = Decoder(ScriptedBackend(SCRIPT, eos=EOS)).generate(
        PROMPT, proposer=proposer, stop=StopConfig(50, frozenset({EOS})))
    assert plain.tokens == fast.tokens == SCRIPT + [EOS]
    assert plain.stats.forward_passes == 7 and plain.stats.tokens_per_forward == 1.0
    s = fast.stats
    assert s.tokens == len(fast.tokens) == 7
    # prefill -> 10; [10] matches b -> draft [99] rejected -> 11; [11] -> copy 12 13 14 15 EOS, all accepted.
    assert s.forward_passes == 3
    assert (s.proposed_tokens, s.accepted_tokens, s.drafts) == (6, 5, 2)
    assert s.accepted_hist == {0: 1, 5: 1}
    assert s.acceptance_rate == pytest.approx(5 / 6)
    assert s.tokens_per_forward == pytest.approx(7 / 3)
    assert sum(span.out_end - span.out_start for span in fast.spans) == s.accepted_tokens
    assert fast.stop_reason == "eos" and s.ttft_s <= s.wall_s


def test_eos_inside_a_draft_stops_there():
    # The reference continues past EOS; the draft is cut at EOS and nothing after it is output.
    refs = {"a": [11, 12, 13, 14, 15, EOS, 40, 41]}
    events = run(ScriptedBackend(SCRIPT, eos=EOS), refs, k=8)
    assert events[-1].finished and events[-1].new_tokens[-1] == EOS
    assert [t for e in events for t in e.new_tokens] == SCRIPT + [EOS]


def test_max_new_tokens_inside_a_draft():
    refs = {"a": [10, 11, 12, 13, 14, 15]}
    events = run(ScriptedBackend(SCRIPT, eos=EOS), refs, k=8, stop=StopConfig(4, frozenset({EOS})))
    out = [t for e in events for t in e.new_tokens]
    assert out == SCRIPT[:4]
    assert events[-1].stop_reason == "max_new_tokens"
    assert sum(e.accepted for e in events) <= 3


def test_stop_sequence_inside_a_draft_is_kept_and_ends_output():
    refs = {"a": [10, 11, 12, 13, 14, 15]}
    stop = StopConfig(50, frozenset({EOS}), ((12, 13),))
    events = run(ScriptedBackend(SCRIPT, eos=EOS), refs, k=8, stop=stop)
    out = [t for e in events for t in e.new_tokens]
    assert out == [10, 11, 12, 13]
    assert events[-1].stop_reason == "stop_sequence"
    assert events[-1].span.out_end <= 4


def test_eos_as_first_token():
    events = run(ScriptedBackend([], eos=EOS), {"a": [1, 2, 3]})
    assert len(events) == 1 and events[0].new_tokens == (EOS,) and events[0].stop_reason == "eos"


def test_max_new_tokens_one():
    events = run(ScriptedBackend(SCRIPT, eos=EOS), {"a": SCRIPT}, stop=StopConfig(1, frozenset({EOS})))
    assert [e.new_tokens for e in events] == [(10,)]


def test_drafts_never_overflow_the_context():
    # Context 8 and prompt 3: at most 8 - 3 + 1 = 6 tokens fit, however long the drafts.
    backend = ScriptedBackend(SCRIPT + [16, 17, 18], eos=EOS, context_length=8)
    events = run(backend, {"a": SCRIPT + [16, 17, 18]}, k=8)
    assert [t for e in events for t in e.new_tokens] == SCRIPT
    assert events[-1].stop_reason == "context_full"


def test_prompt_that_fills_the_context_gives_one_token():
    backend = ScriptedBackend(SCRIPT, eos=EOS, context_length=3)
    events = run(backend, {"a": SCRIPT})
    assert [e.new_tokens for e in events] == [(10,)] and events[0].stop_reason == "context_full"


def test_bad_arguments():
    decoder = Decoder(ScriptedBackend(SCRIPT, context_length=2))
    with pytest.raises(ValueError, match="at least one token"):
        list(decoder.stream([]))
    with pytest.raises(ValueError, match="more than the model's context"):
        list(decoder.stream([1, 2, 3]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        StopConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="empty"):
        StopConfig(stop_sequences=((),))


def test_forced_decoding_follows_the_target():
    target = [10, 11, 30, 31, 32, EOS]  # differs from what the mock "wants" after 11
    proposer = Proposer(ReferenceIndex({"a": [30, 31, 32, EOS]}, min_n=1), CopyLength(k=8))
    result = Decoder(ScriptedBackend(SCRIPT, eos=EOS)).generate(
        PROMPT, proposer=proposer, verifier=ForcedVerifier(target), stop=StopConfig(50, frozenset({EOS})))
    assert result.tokens == target
    with pytest.raises(ValueError, match="past the end"):
        ForcedVerifier([1]).verify(torch.zeros(1, 4), (), 1)


def test_the_reference_index_is_built_between_the_prefill_and_its_first_read():
    """On a GPU the prefill is queued and the host is free until its logits are read: the decoder
    builds the proposer's index then, so it costs no wall time."""
    order = []

    class Recording(ScriptedBackend):
        def prefill(self, ids):
            order.append("prefill")
            return super().prefill(ids)

    class RecordingProposer(Proposer):
        def prepare(self):
            order.append("prepare")
            super().prepare()

    class RecordingVerifier(ForcedVerifier):
        def verify(self, logits, draft, position):
            order.append("verify")
            return super().verify(logits, draft, position)

    index = ReferenceIndex({"a": [10, 11, 12]}, min_n=1)
    events = list(Decoder(Recording(SCRIPT, eos=EOS)).stream(
        PROMPT, proposer=RecordingProposer(index, CopyLength(k=3)), verifier=RecordingVerifier(SCRIPT),
        stop=StopConfig(max_new_tokens=len(SCRIPT))))
    assert order[:3] == ["prefill", "prepare", "verify"]
    assert [t for e in events for t in e.new_tokens] == SCRIPT and sum(e.accepted for e in events) == 2


def test_several_rows_verify_several_drafts_and_keep_the_best():
    # After 10: "a" has the longer tail, so one draft per step copies its wrong 99 98 97; with rows,
    # "b"'s 11 12 13 is verified beside it and kept. The output is the same either way.
    refs = {"a": [10, 99, 98, 97, 96], "b": [10, 11, 12, 13]}
    single = run(ScriptedBackend(SCRIPT, eos=EOS), refs, policy="longest", candidates=3)
    backend = ScriptedRowsBackend(SCRIPT, rows=3, eos=EOS)
    events = run(backend, refs, policy="longest", candidates=3)
    tokens = [t for e in events for t in e.new_tokens]
    assert tokens == [t for e in single for t in e.new_tokens] == [*SCRIPT, EOS]
    assert len(events) < len(single)
    assert (events[1].new_tokens, events[1].candidates, events[1].span) == ((11, 12, 13, 14), 2,
                                                                             CopiedSpan("b", 1, 4, 1, 4))
    assert backend.row_counts[0] == 2 and events[0].candidates == 0
    forced = run(ScriptedRowsBackend(SCRIPT, rows=3, eos=EOS), refs, policy="longest", candidates=3,
                 verifier=ForcedVerifier([*SCRIPT, EOS]))
    assert [e.new_tokens for e in forced] == [e.new_tokens for e in events]


def test_drafts_packed_in_one_block_are_cut_to_the_backends_caps():
    # A packed block (llma.static with a tree): the later drafts hold at most their caps, all of them
    # at most the first cap; the first keeps the rest. "b"'s 11 12 13 is cut to 11 12, "a"'s
    # 99 98 97 96 to 99 98 97. Still the script's output, and "b"'s two tokens are the ones kept.
    refs = {"a": [10, 99, 98, 97, 96], "b": [10, 11, 12, 13]}
    backend = ScriptedRowsBackend(SCRIPT, rows=3, caps=(5, 2, 2), eos=EOS)
    events = run(backend, refs, k=4, policy="longest", candidates=3)
    assert [t for e in events for t in e.new_tokens] == [*SCRIPT, EOS]
    assert [list(map(len, c)) for c in backend.drafts_seen][0] == [4, 3]  # the last token and each draft
    assert (events[1].new_tokens, events[1].span) == ((11, 12, 13), CopiedSpan("b", 1, 3, 1, 3))


def test_verify_rows_keeps_the_candidate_with_the_most_accepted():
    assert best_row([0, 2, 2, 1]) == 1  # the first of equals
    logits = torch.full((3, 3, 20), -1.0)
    for row, wanted in enumerate([[4, 9, 9], [4, 5, 6], [4, 5, 9]]):
        logits[row, range(3), wanted] = 1.0
    drafts = [(7, 7), (4, 5), (4, 8)]
    assert GreedyVerifier().verify_rows(logits, drafts, 0) == (1, 2, 6)
    assert ForcedVerifier([4, 5, 9]).verify_rows(logits, drafts, 0) == (1, 2, 9)


def test_a_backend_giving_the_argmax_alone_is_read_only_by_rules_that_need_it():
    # llma.static makes each row's argmax in the step (forward_argmax): greedy reads those ids, once a
    # step; forced decoding never reads them (the host need never wait); sampling takes the logits.
    refs = {"a": [10, 99, 98, 97, 96], "b": [10, 11, 12, 13]}
    expected = [e.new_tokens for e in run(ScriptedRowsBackend(SCRIPT, rows=3, eos=EOS), refs, policy="longest",
                                          candidates=3)]
    for verifier, reads in ((None, len(expected) - 1), (ForcedVerifier([*SCRIPT, EOS]), 0)):
        backend = ScriptedArgmaxBackend(SCRIPT, rows=3, eos=EOS)
        events = run(backend, refs, policy="longest", candidates=3, verifier=verifier)
        assert [e.new_tokens for e in events] == expected
        assert backend.argmax_calls == len(events) - 1 and 2 in backend.row_counts  # rows, then keep
        assert len(backend.reads) == reads
    one = ScriptedArgmaxBackend(SCRIPT, rows=1, eos=EOS)  # one draft a step: one row, then trim
    assert [e.new_tokens for e in run(one, refs)] == [e.new_tokens for e in run(ScriptedBackend(SCRIPT, eos=EOS), refs)]
    assert one.argmax_calls == len(one.forward_sizes) - 1 and one.row_counts == []
    sampled = ScriptedArgmaxBackend(SCRIPT, rows=3, eos=EOS)
    tokens = [t for e in run(sampled, refs, verifier=SamplingVerifier(SamplingConfig(temperature=0.01)))
              for t in e.new_tokens]
    assert tokens == [*SCRIPT, EOS] and sampled.argmax_calls == 0
