"""The most tokens per forward any reference-copying drafter could reach in forced decoding.

    python benchmarks/copy_bound.py --data ../shared/data/llma-rag/rag.jsonl --json benchmarks/copy_bound.json

In forced decoding the output is fixed (the target), so how many tokens a step can accept depends
only on the target and the references. An oracle drafter that knows the target drafts, at each
position, the longest run of the coming target tokens found verbatim in the references or in the
output so far (capped at the block: 31 drafted tokens), and the step adds the model's own token.
Jumping as far as possible is optimal here (the reach can only grow with the position), so this
counts the fewest forwards any copy-based drafter with that block can need: LLMA's speedup over
greedy on the same backend cannot exceed the resulting tokens per forward. No model is run, only
the tokenizer.

A second, tighter bound for drafters that find their copy by matching the output's suffix (LLMA's
n-gram match, at any n >= 1): at each step, the best of all reference positions that follow an
occurrence of the output's last token, chosen perfectly. No such drafter can beat it, whatever
its n-gram lengths, policy or copy length.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llma.bench_data import bench_prompts  # noqa: E402
from llma.loading import load_model  # noqa: E402


def common_prefix(a: list[int], start: int, b: list[int], at: int, cap: int) -> int:
    """How many tokens (at most cap) a[start:] and b[at:] share from their start."""
    n = 0
    while n < cap and start + n < len(a) and at + n < len(b) and a[start + n] == b[at + n]:
        n += 1
    return n


def longest_copy(target: list[int], at: int, sources: list[list[int]], cap: int) -> int:
    """Length of the longest target[at:at + n] (n <= cap) that occurs in one of the sources."""
    return max((common_prefix(src, s, target, at, cap) for src in sources for s in range(len(src))), default=0)


def fewest_forwards(target: list[int], refs: list[list[int]], cap: int) -> int:
    """Forwards an oracle drafter needs for `target`: each accepts its longest copy, then one token."""
    at, forwards = 0, 0
    while at < len(target):
        copied = longest_copy(target, at, [*refs, target[:at]], min(cap, len(target) - at - 1))
        at += copied + 1
        forwards += 1
    return forwards


def anchored_forwards(target: list[int], refs: list[list[int]], cap: int) -> int:
    """Forwards for the perfect choice among suffix-anchored copies: the prefill gives the first
    token; each step copies from the best position that follows the last token, then adds one."""
    at, forwards = 1, 1
    while at < len(target):
        limit = min(cap, len(target) - at - 1)
        copied = max((common_prefix(src, s, target, at, limit) for src in [*refs, target[:at]]
                      for s in range(1, len(src)) if src[s - 1] == target[at - 1]), default=0)
        at += copied + 1
        forwards += 1
    return forwards


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--block", type=int, default=32, help="query block: at most block - 1 drafted tokens")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    name, prompts = bench_prompts(load_model(device="cpu").tokenizer, args.data, args.limit)
    tokens = forwards = anchored = 0
    for p in prompts:
        if p.target is None:
            raise SystemExit(f"{args.data} has no forced targets")
        target = p.target[: args.max_new_tokens]
        tokens += len(target)
        forwards += fewest_forwards(target, list(p.references.values()), args.block - 1)
        anchored += anchored_forwards(target, list(p.references.values()), args.block - 1)
    report = {"command": "python benchmarks/copy_bound.py " + " ".join(sys.argv[1:]), "dataset": name,
              "prompts": len(prompts), "block": args.block, "target_tokens": tokens, "oracle_forwards": forwards,
              "oracle_tokens_per_forward": round(tokens / forwards, 3), "suffix_anchored_forwards": anchored,
              "suffix_anchored_tokens_per_forward": round(tokens / anchored, 3)}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
