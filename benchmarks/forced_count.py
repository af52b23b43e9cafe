"""What the model-free drafting counts share (benchmarks.draft_packing, draft_rules, draft_settings).

In forced decoding the output is the target, so a step's accepted tokens depend only on the target,
the references and the drafts: these counts run no model, only the tokenizer.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from benchmarks.data import BenchPrompt
from llma.engine import OUTPUT_REF
from llma.reference_index import ReferenceIndex
from llma.types import Draft, RefId
from llma.verifier import count_accepted

# (index, output so far after the prompt, room for a draft, where the last accepted copy ended) -> drafts
Drafter = Callable[[ReferenceIndex, list[int], int, "tuple[RefId, int] | None"], list[Draft]]
# (index, context, the wanted token): a step that accepted nothing
Miss = Callable[[ReferenceIndex, list[int], int], None]


def forced_parser(description: str) -> argparse.ArgumentParser:
    """The counts' common options: the data set, how many prompts, new tokens, the JSON file."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", type=Path, required=True, help="rag.jsonl (its targets: result.text)")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--json", type=Path)
    return ap


def write_report(path: Path | None, report: dict[str, object],
                 markdown: Callable[[dict[str, object]], str]) -> None:
    """The report as JSON at `path` and its markdown beside it (.md); nothing without a path."""
    if path:
        path.write_text(json.dumps(report, indent=2) + "\n")
        path.with_suffix(".md").write_text(markdown(report))


def count_forced(prompts: list[BenchPrompt], drafter: Drafter, max_new: int, candidates: int,
                 miss: Miss | None = None, block: int = 32) -> float:
    """Tokens per forward in forced decoding: each step keeps the drafts' longest accepted prefix and
    the target's next token; the index as the engine has it (min_n 1, max_n 4, "longest", the answer
    first), `candidates` drafts per lookup at most."""
    tokens = forwards = 0
    for p in prompts:
        target = p.target[:max_new]
        index = ReferenceIndex(p.references, min_n=1, max_n=4, policy="longest", prefer=OUTPUT_REF,
                               candidates=candidates)
        out = target[:1]  # the prefill's token
        near = None
        index.extend(OUTPUT_REF, out)
        forwards += 1
        while len(out) < len(target):
            room = len(target) - len(out) - 1  # a draft past the target's end cannot be accepted
            drafts = drafter(index, p.prompt + out, min(block - 1, room), near) if room > 0 else []
            accepted = [count_accepted(d.tokens, target[len(out):]) for d in drafts]
            best = max(accepted, default=0)
            if best:
                kept = drafts[accepted.index(best)]
                near = (kept.ref_id, kept.offset + best)
            elif miss is not None and room > 0:
                miss(index, p.prompt + out, target[len(out)])
            new = target[len(out) : len(out) + best + 1]
            out += new
            index.extend(OUTPUT_REF, new)
            forwards += 1
        tokens += len(target)
    return tokens / forwards
