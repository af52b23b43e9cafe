"""The most tokens per forward any reference-copying drafter could reach in forced decoding.

    python -m benchmarks.copy_bound --data ../shared/data/llma-rag/rag.jsonl \
        --json benchmarks/results/copy_bound.json

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

Third, what verifying several such candidates per step would give (a batch of blocks or a tree):
the first c copy starts in the order an n-gram drafter ranks them (the longest matching suffix
first; the answer's own occurrences, then the references' with the most to copy), keeping the
best. c = 1 is close to LLMA's default drafter on the static backend.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.data import bench_prompts
from llma.loading import load_model

CANDIDATES = (1, 2, 4, 8, 16)  # candidates verified per step, each up to block - 1 tokens


def common_prefix(a: list[int], start: int, b: list[int], at: int, cap: int) -> int:
    """How many tokens (at most cap) a[start:] and b[at:] share from their start."""
    n = 0
    while n < cap and start + n < len(a) and at + n < len(b) and a[start + n] == b[at + n]:
        n += 1
    return n


def longest_copy(target: list[int], at: int, sources: list[list[int]], cap: int) -> int:
    """Length of the longest target[at:at + n] (n <= cap) that occurs in one of the sources."""
    return max((common_prefix(src, s, target, at, cap) for src in sources for s in range(len(src))),
               default=0)


def fewest_forwards(target: list[int], refs: list[list[int]], cap: int) -> int:
    """Forwards an oracle drafter needs for `target`: each accepts its longest copy, then one token."""
    at = 0
    forwards = 0
    while at < len(target):
        copied = longest_copy(target, at, [*refs, target[:at]], min(cap, len(target) - at - 1))
        at += copied + 1
        forwards += 1
    return forwards


def anchored_forwards(target: list[int], refs: list[list[int]], cap: int) -> int:
    """Forwards for the perfect choice among suffix-anchored copies: the prefill gives the first
    token; each step copies from the best position that follows the last token, then adds one."""
    at = 1
    forwards = 1
    while at < len(target):
        limit = min(cap, len(target) - at - 1)
        copied = max((common_prefix(src, s, target, at, limit) for src in [*refs, target[:at]]
                      for s in range(1, len(src)) if src[s - 1] == target[at - 1]), default=0)
        at += copied + 1
        forwards += 1
    return forwards


def _positions(refs: list[list[int]], max_n: int) -> dict[tuple[int, ...], list[tuple[int, int]]]:
    """Every n-gram (n <= max_n) of the references -> all (reference, end) with a token after it."""
    table: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for r, ref in enumerate(refs):
        for end in range(1, len(ref)):
            for n in range(1, min(max_n, end) + 1):
                table.setdefault(tuple(ref[end - n : end]), []).append((r, end))
    return table


def candidates(refs: list[list[int]], table: dict, output: list[int], limit: int, c: int,
               max_n: int) -> list[tuple[list[int], int]]:
    """Up to `c` copy starts, as an n-gram drafter would rank them: the longest suffix of the output
    first (then shorter ones), within one suffix the answer's own occurrences (latest first), then
    the references' by the most tokens to copy (capped at `limit`; ties: earliest)."""
    out: list[tuple[list[int], int]] = []
    for n in range(min(max_n, len(output)), 0, -1):
        suffix = tuple(output[len(output) - n :])
        own = [(output, e) for e in range(len(output) - 1, n - 1, -1) if tuple(output[e - n : e]) == suffix]
        found = sorted(table.get(suffix, []), key=lambda o: (-min(limit, len(refs[o[0]]) - o[1]), o))
        for start in [*own, *((refs[r], e) for r, e in found)]:
            if start not in out:
                out.append(start)
        if len(out) >= c:
            break
    return out[:c]


def candidate_forwards(target: list[int], refs: list[list[int]], cap: int, c: int, max_n: int = 4) -> int:
    """Forwards when each step verifies `c` suffix-anchored candidates at once (a batch or a tree)
    and keeps the one that the target follows longest; c = 1 is one draft per step, as LLMA's."""
    table = _positions(refs, max_n)
    at = 1
    forwards = 1
    while at < len(target):
        limit = min(cap, len(target) - at - 1)
        starts = candidates(refs, table, target[:at], limit, c, max_n)
        at += max((common_prefix(src, s, target, at, limit) for src, s in starts), default=0) + 1
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
    counts = dict.fromkeys(CANDIDATES, 0)
    for p in prompts:
        if p.target is None:
            raise SystemExit(f"{args.data} has no forced targets")
        target = p.target[: args.max_new_tokens]
        tokens += len(target)
        forwards += fewest_forwards(target, list(p.references.values()), args.block - 1)
        anchored += anchored_forwards(target, list(p.references.values()), args.block - 1)
        for c in CANDIDATES:
            counts[c] += candidate_forwards(target, list(p.references.values()), args.block - 1, c)
    report = {"command": "python -m benchmarks.copy_bound " + " ".join(sys.argv[1:]), "dataset": name,
              "prompts": len(prompts), "block": args.block, "target_tokens": tokens,
              "oracle_forwards": forwards,
              "oracle_tokens_per_forward": round(tokens / forwards, 3), "suffix_anchored_forwards": anchored,
              "suffix_anchored_tokens_per_forward": round(tokens / anchored, 3),
              "candidates_tokens_per_forward": {str(c): round(tokens / f, 3) for c, f in counts.items()}}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
