"""Token identity with Hugging Face greedy decoding, on the real default model and a tiny Llama.

fp32 on CPU. Prompts: RAG prompts from the LLMA paper's rag.jsonl, SQuAD paragraphs with questions,
and free prompts; references: the passages (tokenized alone and as the prompt tokenized them), and
for some prompts the greedy answer itself, so that long drafts are accepted too.
"""
import json

import pytest
import torch

from llma.engine import Engine, LLMAConfig
from llma_fixtures import tiny_llama

MAX_NEW = 32
CONFIGS = [
    LLMAConfig(min_n=1, max_n=4, k=8, adaptive=False, copy_from_output=False, max_new_tokens=MAX_NEW),
    LLMAConfig(min_n=2, max_n=4, k=4, adaptive=True, max_new_tokens=MAX_NEW),
    LLMAConfig(min_n=1, max_n=2, k=16, adaptive=False, policy="first", max_new_tokens=MAX_NEW),
    LLMAConfig(min_n=3, max_n=6, k=2, adaptive=True, policy="longest", max_new_tokens=MAX_NEW),
]


def _rag_cases(tok, n, data):
    rows = [json.loads(line) for line in (data / "llma-rag" / "rag.jsonl").open()][:n]
    for row in rows:
        docs = row["docs"][:3]
        text = "\n\n".join(f"[{i + 1}] {d}" for i, d in enumerate(docs))
        yield f"Answer from the passages.\n\n{text}\n\nQuestion: {row['query']}", docs


def _squad_cases(n, data):
    articles = json.loads((data / "squad-v1.1-dev" / "dev-v1.1.json").read_text())["data"]
    for article in articles[:n]:
        para = article["paragraphs"][0]
        yield f"{para['context']}\n\nQuestion: {para['qas'][0]['question']}", [para["context"]]


FREE = [
    ("List the days of the week, then list them again in the same order.", []),
    ("Write the numbers from one to twenty in words, separated by commas.", []),
]


def _prompt_ids(tok, text):
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _hf_greedy(model, ids, max_new, eos=True):
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new,
                         attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         **({} if eos else {"eos_token_id": None}))
    return out[0, len(ids):].tolist()


def _cases(tok, data):
    """5 rag.jsonl prompts, 5 SQuAD paragraphs and the free prompts: each of the 4 configs on 6 of
    them, a third with the answer itself as a reference (9 + 9 once; cut for the suite's time)."""
    return [*_rag_cases(tok, 5, data), *_squad_cases(5, data), *FREE]


@pytest.mark.slow
@pytest.mark.shared_data("llma-rag/rag.jsonl", "squad-v1.1-dev/dev-v1.1.json")
def test_smollm_llma_equals_hf_greedy(smollm, shared_data):
    tok, engine = smollm.tokenizer, Engine(smollm)
    cases = _cases(tok, shared_data)
    assert len(cases) >= 12
    mismatches, copied = [], 0
    for i, (text, docs) in enumerate(cases):
        ids = _prompt_ids(tok, text)
        expected = _hf_greedy(smollm.model, ids, MAX_NEW)
        refs = {f"doc{j}": tok(d, add_special_tokens=False)["input_ids"] for j, d in enumerate(docs)}
        if i % 3 == 0:  # the answer itself as a reference: long drafts must be accepted
            refs["answer"] = expected[: MAX_NEW // 2] + [7, 8, 9] + expected[MAX_NEW // 2 :]
        for config in (CONFIGS[i % 4], CONFIGS[(i + 1) % 4]):
            result = engine.generate(ids, refs, config)
            copied += result.stats.accepted_tokens
            if result.tokens != expected:
                mismatches.append((i, config, result.tokens, expected))
    assert not mismatches
    assert copied > 100  # the drafts were really exercised, not only proposed and rejected


def test_our_greedy_equals_hf_greedy(smollm):
    tok, engine = smollm.tokenizer, Engine(smollm)
    ids = _prompt_ids(tok, "What is the capital of France?")
    assert engine.generate(ids, config=LLMAConfig(enabled=False, max_new_tokens=16)).tokens == \
        _hf_greedy(smollm.model, ids, 16)


@pytest.mark.parametrize("seed", range(6))
def test_tiny_llama_llma_equals_hf_greedy(seed):
    loaded = tiny_llama(seed=seed)
    engine = Engine(loaded)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (12,), generator=gen).tolist()
    expected = _hf_greedy(loaded.model, ids, 40, eos=False)
    noise = torch.randint(0, 97, (30,), generator=gen).tolist()
    refs = {"noise": noise, "answer": expected[:10] + noise[:3] + expected[10:], "prompt": ids}
    for config in CONFIGS:
        config = LLMAConfig(**{**config.__dict__, "max_new_tokens": 40})
        assert engine.generate(ids, refs, config).tokens == expected


def test_tiny_llama_near_the_context_end():
    # Context 64, prompt 50: drafts must shrink to fit; output equals greedy until the window is full.
    loaded = tiny_llama(seed=7, context=64)
    ids = torch.randint(0, 97, (50,), generator=torch.Generator().manual_seed(1)).tolist()
    expected = _hf_greedy(loaded.model, ids, 64 - 50 + 1, eos=False)  # the last token needs no slot
    result = Engine(loaded).generate(ids, {"a": expected * 3}, LLMAConfig(min_n=1, k=8, max_new_tokens=40))
    assert result.tokens == expected and len(expected) == 15
    assert result.stop_reason == "context_full" and result.stats.accepted_tokens > 0


def test_references_longer_than_the_context_and_empty_references():
    loaded = tiny_llama(seed=3, context=64)
    ids = [1, 2, 3, 4, 5]
    expected = _hf_greedy(loaded.model, ids, 20, eos=False)
    engine = Engine(loaded)
    config = LLMAConfig(min_n=1, max_new_tokens=20)
    assert engine.generate(ids, {"long": (expected + [9, 9]) * 50}, config).tokens == expected
    assert engine.generate(ids, {}, config).tokens == expected
    assert engine.generate(ids, {"empty": []}, config).tokens == expected
