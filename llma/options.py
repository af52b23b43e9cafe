"""How an `Engine` runs: which backend, which attention kernel, compiled or not, drafts per step.

One frozen dataclass, passed by the caller (`Engine(loaded, options=...)`, `select_backend`). The
library never reads the environment for these; the edges (the app, the CLIs, the benchmarks) do,
through `EngineOptions.from_env`, and pass the result in.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

BACKENDS = ("auto", "hf", "static", "static-graphs")
ATTENTION = ("sdpa", "bmm", "flash", "split")
WEIGHTS = ("full", "int4")
PROMPT_DTYPES = ("bfloat16", "float32")  # int4 weights' prompt products (llma.cpu.weights)
DEFAULT_PACKED_DRAFTS = 4  # drafts packed into the one block on CUDA (docs/DESIGN.md)
DEFAULT_BATCH_SLOTS = 8  # requests the batch engine decodes together, on CPU
DEFAULT_PREFIX_CACHE_MB = 512  # the batch engine's stored prompt chunks, on CPU (llma.batch.prefix)

# The environment variables `from_env` reads, and the field each sets.
ENV = {
    "LLMA_BACKEND": "backend",
    "LLMA_STATIC_ATTENTION": "attention",
    "LLMA_STATIC_COMPILE": "compile",
    "LLMA_STATIC_TREE": "packed_drafts",
    "LLMA_STATIC_ROWS": "cache_copies",
    "LLMA_BATCH_SLOTS": "batch_slots",
    "LLMA_WEIGHTS": "weights",
    "LLMA_CPU_GLUE": "cpu_glue",
    "LLMA_PROMPT_DTYPE": "prompt_dtype",
    "LLMA_PREFIX_CACHE_MB": "prefix_cache_mb",
}


@dataclass(frozen=True)
class EngineOptions:
    """The engine's run-time choices; None leaves a choice to `resolve` (the measured defaults).

    backend: "auto" (the static backend with CUDA graphs on a CUDA device where the model family is
        supported, else the generic HF loop), "hf", "static" (no graphs) or "static-graphs".
    attention: the static backend's step attention, one of ATTENTION.
    compile: torch.compile the static backend's layer arithmetic (graphs only).
    packed_drafts: drafts packed into the static backend's one query block per step (0: one draft).
    cache_copies: blocks verified side by side per step, each on its own copy of the KV cache.
    batch_slots: requests decoded together by the batch engine (llma.batch), each in its own cache
        slot; 0: one request at a time through `backend`; None: `batch_default`.
    weights: the batch engine's weights: "full" (the model's own) or "int4" (llma.cpu: 4-bit
        layers, a bf16 output head; CPU only; its outputs are its own greedy's, which may differ
        from full's); None: `batch_weights`.
    cpu_glue: with int4 weights, the elementwise work between the products in C (llma.cpu.glue,
        compiled on first use where there is a C compiler); False: in torch ops. Each is an engine
        setting of its own (outputs its own greedy's). None: C where it builds.
    prompt_dtype: with int4 weights, the dtype of the prompt rows' products, one of PROMPT_DTYPES
        (an engine setting of its own); None: bf16 where the CPU multiplies bf16 natively, else fp32
        (llma.cpu.weights.default_prompt_dtype).
    prefix_cache_mb: MiB of the batch engine's stored prompt chunks, which a later prompt starting
        with the same tokens (a chat's next turn) reuses instead of computing them again, with the
        same bits (llma.batch.prefix); 0: none; None: `batch_prefix_mb`.
    """

    backend: str = "auto"
    attention: str | None = None
    compile: bool | None = None
    packed_drafts: int | None = None
    cache_copies: int = 1
    batch_slots: int | None = None
    weights: str | None = None
    cpu_glue: bool | None = None
    prompt_dtype: str | None = None
    prefix_cache_mb: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.attention is not None and self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.weights is not None and self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")
        if self.prompt_dtype is not None and self.prompt_dtype not in PROMPT_DTYPES:
            raise ValueError(f"prompt_dtype must be one of {PROMPT_DTYPES}, got {self.prompt_dtype!r}")
        for name in ("compile", "cpu_glue"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be True, False or None, got {value!r}")
        for name in ("packed_drafts", "cache_copies", "batch_slots", "prefix_cache_mb"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.cache_copies < 1:
            raise ValueError(f"cache_copies must be >= 1, got {self.cache_copies}")

    def batch_default(self, cuda: bool) -> int:
        """`batch_slots` where set, else: DEFAULT_BATCH_SLOTS on CPU with the backend left to "auto";
        0 on CUDA (the batch engine runs without CUDA graphs, slower than the static backend's for
        one user) and where a backend is named."""
        if self.batch_slots is not None:
            return self.batch_slots
        return DEFAULT_BATCH_SLOTS if not cuda and self.backend == "auto" else 0

    def batch_weights(self, cuda: bool, int4_runs: bool) -> str:
        """`weights` where set, else "int4" on CPU where this torch runs the CPU int4 kernel
        (`int4_runs`), else "full". Raises ValueError for "int4" on CUDA."""
        if self.weights == "int4" and cuda:
            raise ValueError("weights='int4' runs on the CPU only")
        if self.weights is not None:
            return self.weights
        return "int4" if not cuda and int4_runs else "full"

    def batch_prefix_mb(self, cuda: bool) -> int:
        """`prefix_cache_mb` where set, else DEFAULT_PREFIX_CACHE_MB on CPU and 0 on CUDA (whose
        fixed-shape steps do not reuse prompt chunks)."""
        if self.prefix_cache_mb is not None:
            return self.prefix_cache_mb
        return 0 if cuda else DEFAULT_PREFIX_CACHE_MB

    @property
    def drafts_per_step(self) -> int:
        """Drafts verified per step (packed or side by side), once resolved."""
        return self.packed_drafts or self.cache_copies

    def resolve(self, cuda: bool, graphs: bool) -> EngineOptions:
        """Every None choice made, for a static backend on a CUDA device (`cuda`) with or without
        CUDA graphs: on CUDA with one cache copy and split-KV attention, DEFAULT_PACKED_DRAFTS
        packed and compiled; flash attention for one unpacked draft; SDPA on CPU."""
        copies = self.cache_copies
        attention = self.attention
        packs = cuda and copies == 1 and attention in (None, "split")
        packed = self.packed_drafts
        if packed is None:
            packed = DEFAULT_PACKED_DRAFTS if packs else 0
        if attention is None:
            if not cuda:
                attention = "sdpa"
            else:
                attention = "flash" if copies == 1 and not packed else "split"
        compiles = self.compile
        if compiles is None:
            compiles = cuda and graphs and attention == "split"
        return replace(self, attention=attention, compile=graphs and compiles, packed_drafts=packed)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **given: object) -> EngineOptions:
        """Options from `environ` (the ENV variables), `given` fields taking precedence; a clear
        error names the variable whose value is invalid. For the edges: app, CLIs, benchmarks."""
        fields: dict[str, object] = {}
        for variable, name in ENV.items():
            value = environ.get(variable)
            if value is None or value == "":
                continue
            fields[name] = _parse(variable, name, value)
        fields.update({k: v for k, v in given.items() if v is not None})
        try:
            return cls(**fields)
        except ValueError as err:
            raise ValueError(f"{err} (from the environment: {_named(environ)})") from None


def _parse(variable: str, name: str, value: str) -> object:
    if name in ("backend", "attention", "weights", "prompt_dtype"):
        return value
    if name in ("compile", "cpu_glue"):
        if value not in ("0", "1"):
            raise ValueError(f"{variable} must be 0 or 1, got {value!r}")
        return value == "1"
    if not value.isdigit():
        raise ValueError(f"{variable} must be a whole number, got {value!r}")
    return int(value)


def _named(environ: Mapping[str, str]) -> str:
    return ", ".join(f"{v}={environ[v]}" for v in ENV if environ.get(v)) or "none set"
