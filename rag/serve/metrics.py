"""The server's Prometheus metrics, in a registry of its own (one per app).

Requests by endpoint and status; prompt, completion, proposed and accepted tokens and forward passes
(tokens per forward = completion tokens / forward passes, acceptance = accepted / proposed);
prediction tokens accepted and rejected; cancelled generations; the queue length and the batch
size (generations decoded now) read from the backend at each scrape; request latency.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from rag.serve.backend import GenerationBackend
from rag.serve.responses import prediction_counts
from rag.types import Answer

disable_created_metrics()  # no *_created series: they only clutter the scrape


class Metrics:
    def __init__(self, backend: GenerationBackend) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llma_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.prompt_tokens = Counter("llma_prompt_tokens", "prompt tokens of finished generations", registry=r)
        self.completion_tokens = Counter("llma_completion_tokens", "generated tokens", registry=r)
        self.forward_passes = Counter("llma_forward_passes", "model forward passes (prefill included)", registry=r)
        self.proposed = Counter("llma_proposed_tokens", "drafted (copied) tokens verified", registry=r)
        self.accepted = Counter("llma_accepted_tokens", "drafted tokens the model accepted", registry=r)
        self.prediction_accepted = Counter("llma_prediction_accepted_tokens", "prediction tokens accepted",
                                           registry=r)
        self.prediction_rejected = Counter("llma_prediction_rejected_tokens", "prediction tokens rejected",
                                           registry=r)
        self.generations = Counter("llma_generations", "finished generations", registry=r)
        cancelled = Gauge("llma_generations_cancelled", "generations the engine stopped early or never began "
                          "because their client left", registry=r)
        cancelled.set_function(lambda: backend.cancelled)
        self.tokens_per_forward = Histogram("llma_tokens_per_forward", "tokens per forward pass of a generation",
                                            buckets=(1, 1.25, 1.5, 2, 2.5, 3, 4, 6, 8, 16), registry=r)
        self.latency = Histogram("llma_request_seconds", "request latency (to the last byte)", ["endpoint"],
                                 registry=r)
        queue = Gauge("llma_queue_length", "generations waiting for the engine", registry=r)
        queue.set_function(lambda: backend.waiting)
        batch = Gauge("llma_batch_size", "generations being decoded now", registry=r)
        batch.set_function(lambda: backend.running)

    def finished(self, answer: Answer) -> None:
        s = answer.stats
        self.generations.inc()
        self.prompt_tokens.inc(int(s["prompt_tokens"]))
        self.completion_tokens.inc(int(s["tokens"]))
        self.forward_passes.inc(int(s["forward_passes"]))
        self.proposed.inc(int(s["proposed_tokens"]))
        self.accepted.inc(int(s["accepted_tokens"]))
        self.tokens_per_forward.observe(float(s["tokens_per_forward"]))
        accepted, rejected = prediction_counts(answer)
        self.prediction_accepted.inc(accepted)
        self.prediction_rejected.inc(rejected)

    def text(self) -> bytes:
        return generate_latest(self.registry)
