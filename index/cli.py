"""Command line: `python -m index build DOCS --out DIR` / `python -m index search DIR QUERY`."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap

from .builder import build_index
from .chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from .document_index import load_index
from .errors import IndexingError
from .ingest import MAX_FILE_BYTES
from .vectors import HNSW_THRESHOLD

SNIPPET_CHARS = 240


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m index", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build or incrementally update an index")
    build.add_argument("docs", help="folder of .txt .md .html .pdf .jsonl documents")
    build.add_argument("--out", required=True, help="index folder to create or update")
    build.add_argument("--embedder", default=None, help="sentence-transformers model name or path")
    build.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                       help="tokens per chunk")
    build.add_argument("--chunk-overlap", type=int, default=DEFAULT_CHUNK_OVERLAP,
                       help="tokens shared by consecutive chunks")
    build.add_argument("--hnsw-threshold", type=int, default=HNSW_THRESHOLD,
                       help="use HNSW instead of exact search from this many chunks")
    build.add_argument("--text-field", default="text", help="text field of .jsonl records")
    build.add_argument("--max-file-mb", type=float, default=MAX_FILE_BYTES / 2**20,
                       help="skip files larger than this (MB)")
    build.add_argument("--no-progress", action="store_true", help="hide progress bars")

    search = commands.add_parser("search", help="search an index")
    search.add_argument("index", help="index folder")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=4, help="number of hits")
    search.add_argument("--min-score", type=float, default=None, help="drop hits scoring lower")
    search.add_argument("--embedder", default=None, help="must match the index's embedder")
    return parser


def _build(args: argparse.Namespace) -> None:
    report = build_index(args.docs, args.out, embedder=args.embedder, chunk_size=args.chunk_size,
                         chunk_overlap=args.chunk_overlap, progress=not args.no_progress,
                         hnsw_threshold=args.hnsw_threshold, jsonl_text_field=args.text_field,
                         max_file_bytes=int(args.max_file_mb * 2**20))
    print(report.summary())
    for skipped in report.skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}")


def _search(args: argparse.Namespace) -> None:
    hits = load_index(args.index, embedder=args.embedder).search(args.query, k=args.k,
                                                                min_score=args.min_score)
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, start=1):
        snippet = textwrap.shorten(" ".join(hit.chunk.text.split()), SNIPPET_CHARS)
        print(f"{rank}. [{hit.score:.3f}] {hit.chunk.source} — {hit.chunk.title}")
        print(textwrap.indent(snippet, "   "))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        (_build if args.command == "build" else _search)(args)
    except (IndexingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
