"""`python -m rag.serve --host 127.0.0.1 --port 8000 [--api-key KEY] [--model M] [--index DIR]`.

The edge: reads LLMA_API_KEY (when --api-key is not given) and the engine's LLMA_* variables.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields

from rag.serve.schemas import Limits

API_KEY_ENV = "LLMA_API_KEY"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rag.serve", description="An OpenAI-compatible LLMA server.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV})")
    p.add_argument("--model", default=None, help="model name or folder (default: the bundled SmolLM2-135M)")
    p.add_argument("--model-name", default=None, help="the model id clients use (default: --model's value)")
    p.add_argument("--index", default=None, help="index folder: also serve the llma-rag model over it")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16")
    for f in fields(Limits):
        p.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default, help=f"limit (default {f.default})")
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logging.getLogger(__name__).warning("serving on %s without an API key: anyone who can reach it may use it",
                                            args.host)
    try:
        limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    from index import IndexingError
    from llma import EngineOptions, ModelNotFoundError
    from rag.pipeline import RAGPipeline
    from rag.serve.app import build_app

    try:
        pipeline = RAGPipeline.from_paths(args.index, args.model, args.device, args.dtype,
                                          engine_options=EngineOptions.from_env(os.environ))
    except (IndexingError, ModelNotFoundError, FileNotFoundError, ValueError) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 1
    app = build_app(pipeline, api_key, limits, args.model_name or args.model or pipeline.loaded.name)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
