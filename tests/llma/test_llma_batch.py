"""The batch engine (llma.batch): continuous batching, each output identical to its solo run."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import replace

import pytest
import torch
from llma_fixtures import tiny_llama

from llma import LLMAConfig
from llma.batch import BatchEngine, CostModel
from llma.batch.runner import MAX_ROWS, PREFILL_CHUNK, PREFILL_TOKENS
from llma.batch.step import Block

LINEAR = CostModel([(16, 1.0), (512, 32.0)])  # rows cost in proportion: the budget shrinks blocks with load
FLAT = CostModel([(16, 1.0), (4096, 1.0)])  # rows cost nothing: every request gets the full block


def _ids(n, seed, vocab=97):
    g = random.Random(seed)
    return [g.randrange(3, vocab) for _ in range(n)]


def _hf_greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                         attention_mask=torch.ones(1, len(prompt), dtype=torch.long), eos_token_id=None)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(context=512)


@pytest.fixture(scope="module", params=[False, True], ids=["one_group", "overlap"])
def engine(tiny, request):
    """The engine every test below runs on twice: one step over every request, and two groups in
    turn (`overlap`)."""
    engine = BatchEngine(tiny, slots=4, cost=LINEAR, overlap=request.param)
    yield engine
    engine.close()


def _requests(tiny_model, count, seed=0):
    """(prompt, references, config) triples: greedy and LLMA, copying from their own greedy answers."""
    out = []
    for i in range(count):
        prompt = _ids(8 + (i * 5) % 20, seed * 100 + i)
        n = 12 + (i * 7) % 25
        answer = _hf_greedy(tiny_model, prompt, n)
        refs = {"passage": _ids(6, i) + answer[2:] + _ids(5, i + 50)}
        config = LLMAConfig(max_new_tokens=n)
        out.append((prompt, refs, config if i % 3 else config.greedy()))
    return out


def _solo(engine, requests):
    return [engine.generate(p, r, c).tokens for p, r, c in requests]


def _together(engine, requests, order, delays):
    """The requests streamed from threads at once, started in `order` after `delays` seconds."""
    results = [None] * len(requests)

    def run(i):
        time.sleep(delays[i])
        p, r, c = requests[i]
        results[i] = engine.generate(p, r, c).tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def test_solo_greedy_matches_hf_generate_and_llma_matches_greedy(engine, tiny):
    prompt = _ids(20, 1)
    greedy = engine.generate(prompt, None, LLMAConfig(max_new_tokens=30).greedy()).tokens
    assert greedy == _hf_greedy(tiny.model, prompt, 30)
    refs = {"a": _ids(4, 2) + greedy[1:] + _ids(4, 3)}
    result = engine.generate(prompt, refs, LLMAConfig(max_new_tokens=30))
    assert result.tokens == greedy
    assert result.stats.accepted_tokens > 10 and result.stats.forward_passes < 20


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_outputs_identical_to_solo_runs_whatever_the_order_and_arrival(engine, tiny, seed):
    requests = _requests(tiny.model, 7, seed)
    solo = _solo(engine, requests)
    g = random.Random(seed)
    order = list(range(len(requests)))
    g.shuffle(order)
    delays = [g.choice([0.0, 0.0, 0.01, 0.05]) for _ in requests]
    assert _together(engine, requests, order, delays) == solo  # 7 requests on 4 slots: some wait and join late
    assert engine.scheduler.running == 0 and engine.runner.cache.free == 4


def test_tiers_change_speed_not_output(tiny):
    requests = _requests(tiny.model, 5, 7)
    flat = BatchEngine(tiny, slots=5, cost=FLAT)
    linear = BatchEngine(tiny, slots=5, cost=LINEAR)
    try:
        a = _together(flat, requests, range(5), [0.0] * 5)
        b = _together(linear, requests, range(5), [0.0] * 5)
        assert a == b == _solo(flat, requests)
        # the full block when rows cost nothing; smaller blocks when they cost in proportion
        assert flat.stats.rows / flat.stats.request_steps > linear.stats.rows / linear.stats.request_steps
    finally:
        flat.close()
        linear.close()


def test_a_request_joining_midway_and_a_long_chunked_prompt(engine, tiny):
    long_prompt = _ids(PREFILL_CHUNK + 100, 5)  # two chunks, between the others' steps
    first = (_ids(10, 6), None, LLMAConfig(max_new_tokens=40).greedy())
    second = (long_prompt, {"r": long_prompt[50:120]}, LLMAConfig(max_new_tokens=20))
    solo = _solo(engine, [first, second])
    assert solo[1] == _hf_greedy(tiny.model, long_prompt, 20)
    events = engine.stream(*first)
    got = [next(events) for _ in range(5)]  # the first request is under way
    joined = engine.generate(*second).tokens
    rest = list(events)
    assert [t for e in got + rest for t in e.new_tokens] == solo[0]
    assert joined == solo[1]
    assert max(e.batch for e in got + rest) == 2  # they shared steps


def test_prompts_enter_at_most_prefill_tokens_a_step_and_the_rest_wait(tiny):
    engine = BatchEngine(tiny, slots=6, cost=LINEAR)
    steps = []
    launch = engine.runner.launch

    def recorded(blocks):
        steps.append(sum(-(-len(b) // MAX_ROWS) for b in blocks if b.prompt))
        return launch(blocks)

    engine.runner.launch = recorded
    try:
        asks = [(_ids(PREFILL_CHUNK + 40, 30 + i), None, LLMAConfig(max_new_tokens=6).greedy()) for i in range(6)]
        solo = _solo(engine, asks[:2])
        steps.clear()
        together = [None] * 6

        def run(i):
            together[i] = engine.generate(*asks[i]).tokens

        threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert together[:2] == solo
        assert max(steps) <= PREFILL_TOKENS // MAX_ROWS < 6 * PREFILL_CHUNK // MAX_ROWS
        assert sum(steps) == 6 * (PREFILL_CHUNK // MAX_ROWS + 2)  # every prompt entered once, in pieces
    finally:
        engine.close()


def test_cancelling_frees_the_slot_and_leaves_the_others_alone(engine):
    keep = (_ids(12, 8), None, LLMAConfig(max_new_tokens=40).greedy())
    expected = _solo(engine, [keep])[0]
    events = engine.stream(_ids(12, 9), None, LLMAConfig(max_new_tokens=200).greedy())
    next(events)
    other = engine.stream(*keep)
    events.close()  # the user closed the tab
    assert [t for e in other for t in e.new_tokens] == expected
    deadline = time.time() + 10
    while engine.runner.cache.free < 4 and time.time() < deadline:
        time.sleep(0.01)
    assert engine.runner.cache.free == 4 and engine.scheduler.running == 0


def test_stop_sequences_and_eos_inside_drafts_per_request(engine, tiny):
    prompt = _ids(15, 11)
    greedy = _hf_greedy(tiny.model, prompt, 30)
    stop = tuple(greedy[10:12])
    refs = {"a": greedy}  # the whole answer drafted: the stop falls inside a draft
    configs = [LLMAConfig(max_new_tokens=30, stop_sequences=(stop,)), LLMAConfig(max_new_tokens=30)]
    requests = [(prompt, refs, c) for c in configs]
    solo = _solo(engine, requests)
    assert solo[0] == greedy[: greedy.index(stop[0], 10) + 2] and solo[1] == greedy
    assert _together(engine, requests, [0, 1], [0.0, 0.0]) == solo
    result = engine.generate(prompt, refs, configs[0])
    assert result.stop_reason == "stop_sequence"


def test_seeded_sampling_is_batch_invariant(engine):
    requests = [(_ids(10, 20 + i), {"a": _ids(30, i)}, LLMAConfig(max_new_tokens=25, temperature=0.8, seed=i))
                for i in range(4)]
    solo = _solo(engine, requests)
    assert _together(engine, requests, [3, 1, 0, 2], [0.0] * 4) == solo
    assert len({tuple(s) for s in solo}) == 4


def test_no_slot_leaks_after_a_thousand_requests(engine):
    done = []

    def client(c):
        for i in range(125):
            events = engine.stream(_ids(4, c * 1000 + i), None, LLMAConfig(max_new_tokens=2 + i % 3).greedy())
            if i % 10 == 3:
                next(events)
                events.close()  # some cancelled mid-way
                done.append(None)
            else:
                done.append(sum(len(e.new_tokens) for e in events))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(done) == 1000
    assert all(d in (2, 3, 4) for d in done if d is not None)
    deadline = time.time() + 10
    while engine.runner.cache.free < 4 and time.time() < deadline:
        time.sleep(0.01)
    assert engine.runner.cache.free == 4 and engine.scheduler.running == 0 and engine.scheduler.waiting == 0


def test_bad_input_raises_in_the_callers_thread(engine):
    with pytest.raises(ValueError, match="prompt"):
        engine.stream([], None, LLMAConfig())
    with pytest.raises(ValueError):
        engine.stream([1000], None, LLMAConfig())
    with pytest.raises(ValueError, match="context"):
        engine.stream(_ids(600, 1), None, LLMAConfig())


def test_penalties_and_the_repetition_stop_per_request(engine, tiny):
    """Penalties score each drafted row as of its own prefix, also in a batch (llma.penalties)."""
    prompt = _ids(12, 30)
    plain = LLMAConfig(max_new_tokens=30, repetition_stop=False)
    penalised = LLMAConfig(max_new_tokens=30, repetition_penalty=1.5, presence_penalty=0.5, frequency_penalty=0.3)
    greedy = engine.generate(prompt, None, penalised.greedy()).tokens
    refs = {"a": greedy + engine.generate(prompt, None, plain.greedy()).tokens}
    requests = [(prompt, refs, penalised), (prompt, refs, penalised.greedy()), (prompt, refs, plain)]
    solo = _solo(engine, requests)
    assert solo[0] == solo[1] == greedy and solo[2] != greedy
    assert _together(engine, requests, [2, 0, 1], [0.0] * 3) == solo


def test_a_step_reading_only_its_key_span_gives_the_bits_of_its_whole_length(engine):
    """Steps over a long request's blocks (its attention length several key chunks past its last
    key): the logits with the reads trimmed to the key span equal those over the whole length."""
    runner = engine.runner
    assert runner.trim  # span_invariant holds on this machine's CPU kernels
    slot = runner.cache.acquire()
    try:
        prompt = _ids(300, 5)
        runner.run([Block.chunk(slot, 0, prompt, 512, last=True)])
        blocks = [Block.packed(slot, 300, [[7, *_ids(5, 6)], [7, *_ids(3, 8)]], 512)[0],
                  Block.packed(slot, 300, [[7]], 512)[0]]
        for block in blocks:
            runner.step.trim = True
            trimmed = runner.run([block])[0]
            runner.step.trim = False
            whole = runner.run([block])[0]
            assert trimmed.argmax == whole.argmax
            index = list(range(len(block.out)))
            assert torch.equal(trimmed.logits(index), whole.logits(index))
    finally:
        runner.step.trim = True
        runner.cache.release(slot)


def test_overlap_steps_two_groups_in_turn_with_the_outputs_of_one(tiny):
    """With `overlap` each step holds about half the running requests (one group verifies while the
    other's verdicts and drafts are made); every output equals the one-group engine's solo run."""
    requests = _requests(tiny.model, 6, 3)
    one = BatchEngine(tiny, slots=6, cost=FLAT)
    two = BatchEngine(tiny, slots=6, cost=FLAT, overlap=True)
    try:
        solo = _solo(one, requests)
        assert _together(two, requests, [5, 0, 3, 1, 4, 2], [0.0, 0.01, 0.0, 0.05, 0.0, 0.01]) == solo

        same = [(_ids(10, 40 + i), None, LLMAConfig(max_new_tokens=20).greedy()) for i in range(6)]
        expected = _solo(one, same)

        def per_step(engine):  # six requests of one length, submitted at once, then read
            before = replace(engine.stats)
            streams = [engine.stream(*r) for r in same]
            assert [[t for e in s for t in e.new_tokens] for s in streams] == expected
            return (engine.stats.request_steps - before.request_steps) / (engine.stats.steps - before.steps)

        ones, twos = per_step(one), per_step(two)
        assert ones > 4 and twos < 0.7 * ones, (ones, twos)  # about 6 and 3
    finally:
        one.close()
        two.close()
