"""Command line: `python -m rag ask "question" [--index DIR] [--no-llma] ...`; the answer is
written to stdout as it is generated, then its sources and statistics."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rag.types import DEFAULT_MIN_SCORE

if TYPE_CHECKING:
    from rag.types import Answer, AnswerDelta

DEFAULT_INDEX = "indexes/demo"
DEFAULT_DOCS = "data/docs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag", description="Question answering with LLMA.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer a question from the indexed documents")
    ask.add_argument("question")
    ask.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default {DEFAULT_INDEX})")
    ask.add_argument("--no-index", action="store_true", help="answer without retrieval")
    ask.add_argument("--model", default=None, help="model name or folder (default: the bundled SmolLM2-135M)")
    ask.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    ask.add_argument("--dtype", default=None, help="float32, bfloat16, float16")
    ask.add_argument("--max-new-tokens", type=int, default=128)
    ask.add_argument("--no-llma", action="store_true", help="plain greedy decoding")
    ask.add_argument("--repetition-penalty", type=float, default=1.0, help="Hugging Face's (1.0: off)")
    ask.add_argument("--presence-penalty", type=float, default=0.0, help="OpenAI's (0.0: off)")
    ask.add_argument("--frequency-penalty", type=float, default=0.0, help="OpenAI's (0.0: off)")
    ask.add_argument("--no-repetition-stop", action="store_true",
                     help="do not end the answer when it starts to loop")
    ask.add_argument("--compare", action="store_true", help="also decode greedily and report the speedup")
    ask.add_argument("--k", type=int, default=4, help="passages to retrieve")
    ask.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                     help=f"drop passages scoring lower (default {DEFAULT_MIN_SCORE}; -1: keep all)")
    ask.add_argument("--marked", action="store_true",
                     help="after the streamed answer, print it again with the copied spans marked")
    return parser


def _index_dir(args: argparse.Namespace) -> str | None:
    if args.no_index:
        return None
    if not Path(args.index).exists():
        docs = DEFAULT_DOCS if args.index == DEFAULT_INDEX else "DOCS_FOLDER"
        raise FileNotFoundError(f"no index at {args.index}; build it with: "
                                f"python -m index build {docs} --out {args.index} (or pass --no-index)")
    return args.index


def _ask(args: argparse.Namespace) -> None:
    # Import late: argument errors should not wait for torch.
    from llma import EngineOptions, LLMAConfig
    from rag.inputs import check_question
    from rag.pipeline import RAGPipeline
    from rag.render import legend, marked_text, stats_line
    from rag.types import RagSettings

    # Every argument is checked before the model loads: bad input fails in a second, not ten.
    question = check_question(args.question)
    config = LLMAConfig(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty,
                        presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                        repetition_stop=not args.no_repetition_stop)
    settings = RagSettings(top_k=args.k, min_score=args.min_score,
                           llma=config.greedy() if args.no_llma else config)
    options = EngineOptions.from_env(os.environ)  # LLMA_BACKEND, LLMA_STATIC_*
    pipe = RAGPipeline.from_paths(_index_dir(args), args.model, args.device, args.dtype,
                                  engine_options=options)
    color = sys.stdout.isatty()
    if args.compare:
        comparison = pipe.compare_with_greedy(question, settings=replace(settings, llma=config))
        answer = comparison.llma
        print(marked_text(answer, color).strip())
    else:
        answer = _stream(pipe.stream(question, settings=settings))
        if args.marked:
            print("\n" + marked_text(answer, color).strip())
    print()
    if answer.notice:
        print(answer.notice)
    for line in legend(answer, color):
        print(line)
    print()
    print(("greedy: " if args.no_llma else "llma: ") + stats_line(answer))
    if args.compare:
        print("greedy: " + stats_line(comparison.greedy))
        print(f"speedup {comparison.speedup:.2f}x (median of {comparison.repeats} alternating runs, "
              f"{comparison.speedup_min:.2f}-{comparison.speedup_max:.2f}x), "
              f"identical to greedy: {comparison.identical}")


def _stream(deltas: Iterator[AnswerDelta]) -> Answer:
    """Write the answer to stdout as it is generated (leading blank space dropped); the Answer."""
    answer, started = None, False
    for delta in deltas:
        text = delta.text if started else delta.text.lstrip()
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            started = True
        answer = delta.answer or answer
    sys.stdout.write("\n")
    if answer is None:  # the stream always ends with the finished answer; this guards a broken one
        raise RuntimeError("the generation ended without a final answer")
    return answer


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from index import IndexingError
    from llma import ModelNotFoundError

    try:
        _ask(args)
    except (IndexingError, ModelNotFoundError, FileNotFoundError, ValueError) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, for scripts too
        return 1
    return 0
