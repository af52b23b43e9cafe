"""The server as a Ray Serve deployment: N replicas, each a whole server (model, engine, the same
index loaded read-only), Ray's proxy spreading requests over them.

    serve run rag/serve/ray_config.yaml                  # the config: replicas, GPUs, model, index
    serve run rag.serve.ray_app:build index=indexes/demo replicas=2

`build(args)` is the edge: it reads `args` (model, index, device, dtype, model_name, api_key,
replicas, num_gpus, num_cpus, and any `Limits` field) and LLMA_API_KEY when no key is given.
Each replica names itself in the `x-llma-instance` header ("<Ray replica id>:<pid>").
"""
from __future__ import annotations

import logging
import os
from dataclasses import fields
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from rag.serve.schemas import Limits

log = logging.getLogger(__name__)


@serve.deployment(max_ongoing_requests=64, health_check_period_s=5, health_check_timeout_s=30)
@serve.ingress()
class LLMAServer:
    """One replica: loads the model and the index (read-only) and serves the whole API."""

    def __init__(self, model: str | None = None, index: str | None = None, device: str | None = None,
                 dtype: str | None = None, model_name: str | None = None, api_key: str | None = None,
                 limits: dict[str, int] | None = None, engine_env: dict[str, str] | None = None) -> None:
        from llma import EngineOptions
        from rag.pipeline import RAGPipeline
        from rag.serve.app import build_app

        pipeline = RAGPipeline.from_paths(index, model, device, dtype,
                                          engine_options=EngineOptions.from_env(engine_env or {}))
        replica = serve.get_replica_context().replica_id.unique_id
        instance = f"{replica}:{os.getpid()}"  # the pid: a test or an operator can find the process
        self._app = build_app(pipeline, api_key, Limits(**(limits or {})), model_name, instance=instance)
        log.info("replica %s serving %s", replica, model_name or pipeline.loaded.name)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._app


def build(args: dict[str, Any]) -> Application:
    """The application for `serve run` / `serve deploy` (args from the config or the command line)."""
    limit_names = {f.name for f in fields(Limits)}
    limits = {k: int(v) for k, v in args.items() if k in limit_names}
    unknown = set(args) - limit_names - {"model", "index", "device", "dtype", "model_name", "api_key", "replicas",
                                         "num_gpus", "num_cpus"}
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(sorted(unknown))} for rag.serve.ray_app:build")
    engine_env = {k: v for k, v in os.environ.items() if k.startswith("LLMA_") and k != "LLMA_API_KEY"}
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": float(args.get("num_cpus", 1)),
                                                     "num_gpus": float(args.get("num_gpus", 0))}}
    if "replicas" in args:
        options["num_replicas"] = int(args["replicas"])
    return LLMAServer.options(**options).bind(
        model=args.get("model"), index=args.get("index"), device=args.get("device"), dtype=args.get("dtype"),
        model_name=args.get("model_name"), api_key=args.get("api_key") or os.environ.get("LLMA_API_KEY"),
        limits=limits, engine_env=engine_env)
