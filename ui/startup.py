"""How the app starts: its example questions, the pipeline's loader, how many answers stream at
once, and the service over a remote server (`--server`)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ui.service import Service, default_loader

ROOT = Path(__file__).resolve().parents[1]


def load_examples(path: Path = ROOT / "data" / "questions.json") -> list[str]:
    """Up to 8 example questions (none if the file is missing or malformed)."""
    try:
        return [q["question"] for q in json.loads(path.read_text(encoding="utf-8"))][:8]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def load_pipeline(index_dir: Path, model: str | None, device: str | None, dtype: str | None) -> object:
    """The service's loader: the engine's options from LLMA_BACKEND, LLMA_STATIC_* and LLMA_BATCH_SLOTS (read here,
    at the edge, in the loading thread: a bad value shows as the service's error)."""
    from llma.options import EngineOptions

    return default_loader(index_dir, model, device, dtype, EngineOptions.from_env(os.environ))


def answers_at_once(device: str | None) -> int:
    """How many answers the app streams at once: the batch engine's slots (LLMA_BATCH_SLOTS; by
    default on CPU), else 1 (the one-at-a-time engine: the others wait in Gradio's queue)."""
    import torch

    from llma.options import EngineOptions

    cuda = device == "cuda" or (device in (None, "auto") and torch.cuda.is_available())
    return max(1, EngineOptions.from_env(os.environ).batch_default(cuda))


def remote_service(args: argparse.Namespace) -> Service:
    """The app over a remote `python -m rag.serve --index` server (--server): it answers from its
    own index; documents are indexed there, so uploads here are refused."""
    from rag.remote import RemotePipeline

    started = []

    def check(docs_dir: Path, index_dir: Path) -> str:
        if started:
            raise RuntimeError(f"documents are indexed on the server ({args.server}): add them there")
        started.append(True)
        return f"the server's, at {args.server}"

    return Service(args.docs, args.index, builder=check,
                   loader=lambda *_: RemotePipeline(args.server, args.api_key))
