"""The prompt (chat template, numbering, trimming) and references taken from the prompt's tokens."""
from __future__ import annotations

import pytest

from llma import LoadedModel
from rag.prompt import Turn, build_prompt, parse_history, render
from rag.references import TokenizedText, alone, build_references, decode
from rag.types import Passage, SourceText


def passage(n: int, text: str) -> Passage:
    return Passage(f"passage:{n}", n, text, f"doc{n}.md", f"Title {n}", 1.0 - n / 10, f"c{n}")


PASSAGES = [passage(1, "The with statement wraps a block. It uses a context manager."),
            passage(2, "Dictionaries preserve insertion order."),
            passage(3, "A volcano is a rupture in the crust of a planet. " * 8)]


def test_prompt_uses_the_chat_template_with_numbered_passages_and_turns(loaded: LoadedModel) -> None:
    turns = [Turn(0, "user", "Hi there"), Turn(1, "assistant", "Hello! Ask me anything.")]
    prompt = build_prompt(loaded.tokenizer, "What does with do?", turns, PASSAGES, budget=4000)
    assert prompt.text.startswith("<|im_start|>system\n") and prompt.text.endswith("<|im_start|>assistant\n")
    assert "[1] Title 1\nThe with statement" in prompt.text and "[3] Title 3\n" in prompt.text
    assert prompt.text.index("Hello! Ask me anything.") < prompt.text.index("[1] Title 1")
    assert prompt.text.rstrip().endswith("Question: What does with do?<|im_end|>\n<|im_start|>assistant")
    assert len(prompt.ids) == len(prompt.offsets)


def test_trimming_drops_the_lowest_ranked_passages_then_truncates(loaded: LoadedModel) -> None:
    full = build_prompt(loaded.tokenizer, "What is a volcano?", [], PASSAGES, budget=4000)
    two = build_prompt(loaded.tokenizer, "What is a volcano?", [], PASSAGES[:2], budget=4000)
    dropped = build_prompt(loaded.tokenizer, "What is a volcano?", [], PASSAGES, budget=len(two.ids))
    assert [p.number for p in dropped.passages] == [1, 2] and len(dropped.ids) <= len(two.ids) < len(full.ids)
    one = build_prompt(loaded.tokenizer, "What is a volcano?", [], PASSAGES[:1], budget=4000)
    cut = build_prompt(loaded.tokenizer, "What is a volcano?", [], PASSAGES, budget=len(one.ids) - 5)
    assert len(cut.ids) <= len(one.ids) - 5 and len(cut.passages) == 1
    assert PASSAGES[0].text.startswith(cut.passages[0].text) and cut.passages[0].text != PASSAGES[0].text


def test_oldest_turns_go_when_the_history_does_not_fit(loaded: LoadedModel) -> None:
    turns = [Turn(0, "user", "word " * 200), Turn(1, "assistant", "Short answer.")]
    prompt = build_prompt(loaded.tokenizer, "Why?", turns, [], budget=120)
    assert [t.index for t in prompt.turns] == [1] and len(prompt.ids) <= 120


def test_a_question_longer_than_the_budget_says_how_many_tokens(loaded: LoadedModel) -> None:
    with pytest.raises(ValueError, match=r"too long: the prompt needs \d+ tokens but only 50 fit"):
        build_prompt(loaded.tokenizer, "why " * 100, [], PASSAGES, budget=50)


def test_history_must_have_user_or_assistant_roles() -> None:
    turns = parse_history([{"role": "user", "content": "a"}, {"role": "assistant", "content": {"file": "x"}},
                           {"role": "assistant", "content": "b"}])
    assert [(t.index, t.role) for t in turns] == [(0, "user"), (2, "assistant")]
    with pytest.raises(ValueError, match="role 'tool'"):
        parse_history([{"role": "tool", "content": "x"}])


def test_references_from_the_prompt_map_back_to_the_passage_text(loaded: LoadedModel) -> None:
    tok = loaded.tokenizer
    prompt = build_prompt(tok, "Where is the café?", [], [*PASSAGES[:2], passage(3, "Le café ü 日本語 near Etna.")], 4000)
    sources = [SourceText(p.id, "passage", p.text, p.label) for p in prompt.passages]
    refs = build_references(tok, TokenizedText(prompt.text, prompt.ids, prompt.offsets), sources, True)
    assert list(refs) == ["passage:1", "passage:2", "passage:3"]
    for ref in refs.values():
        text = decode(tok, ref.token_ids)
        assert ref.source.text[ref.base:ref.base + len(text)] == text == ref.source.text
        assert ref.token_ids == tuple(prompt.ids[prompt.ids.index(ref.token_ids[0]):][:len(ref.token_ids)])


def test_a_passage_tokenized_alone_or_in_the_prompt_decodes_the_same(loaded: LoadedModel) -> None:
    tok = loaded.tokenizer
    source = SourceText("passage:1", "passage", "Dictionaries preserve insertion order.", "[1] t")
    in_prompt = build_references(tok, TokenizedText(*render(tok, [{"role": "user", "content": f"x\n{source.text}"}])),
                                 [source], True)["passage:1"]
    by_itself = alone(tok, source)
    assert by_itself is not None and decode(tok, by_itself.token_ids) == decode(tok, in_prompt.token_ids)


def test_texts_not_in_the_prompt_are_tokenized_alone(loaded: LoadedModel) -> None:
    tok = loaded.tokenizer
    tokenized = TokenizedText(*render(tok, [{"role": "user", "content": "Hello"}]))
    source = SourceText("cache:0", "cache", "An earlier answer.", "cached")
    refs = build_references(tok, tokenized, [source, SourceText("cache:1", "cache", "  ", "empty")], True)
    assert list(refs) == ["cache:0"] and refs["cache:0"].token_ids == tuple(tok("An earlier answer.", add_special_tokens=False)["input_ids"])
