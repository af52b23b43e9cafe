"""The one-call entry point: a loaded model plus settings in, events or a result out.

`Engine` chooses the backend (from `EngineOptions`) and builds the proposer and verifier from an
`LLMAConfig`, so callers (rag/, the benchmarks) never assemble the parts by hand. It holds one KV
cache: one generation at a time per engine (callers serialise; rag/ does with a lock).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llma.backend import Backend
from llma.checks import MAX_REFERENCE_TOKENS, check_finite, check_int, check_references, check_token_ids
from llma.decoder import Decoder, StopConfig, collect
from llma.history import AnswerHistory
from llma.loading import LoadedModel
from llma.options import EngineOptions
from llma.penalties import Penalties, TokenCounts
from llma.proposer import CopyLength, Proposer
from llma.reference_index import Policy, ReferenceIndex
from llma.repetition import RepetitionStop
from llma.static import select_backend
from llma.types import DecodeResult, RefId, StepEvent
from llma.verifier import GreedyVerifier, SamplingConfig, SamplingVerifier, Verifier, penalised

log = logging.getLogger(__name__)

OUTPUT_REF = "output"


@dataclass(frozen=True)
class LLMAConfig:
    """Decoding settings. `enabled=False` gives plain greedy (or sampling) through the same loop.

    `min_n`, `k`, `adaptive`, `policy` and `answer_history` left at None take the engine's defaults
    for its backend (`DraftDefaults`; `Engine.resolve` fills them in).
    `copy_from_output` also lets the answer copy from itself (reference id "output"); where the
    answer already holds the matched n-gram, its latest occurrence there wins over `policy`.
    `temperature` 0 means greedy; above 0, sampling seeded by `seed` (None: a random seed per
    generation), each token drawn from the seed and its output position alone, so that drafts never
    change the output (llma.verifier.SamplingVerifier).
    `max_reference_tokens` bounds the references of one generation (their n-gram index lives in RAM).
    `answer_history`: drafts may also start a new copy at the token that the engine's earlier
    answers most often wrote after the output's last token (llma.history), where the references
    leave a step's drafts unused; the answer is added to that history. Drafts change no token,
    greedy or seeded sampling, so a seed's answer never depends on earlier answers.
    `repetition_penalty` (Hugging Face's), `presence_penalty` and `frequency_penalty` (OpenAI's;
    llma.penalties) apply in greedy and sampling alike, to every verified row as of its own prefix,
    so LLMA stays identical to plain decoding with the same penalties. 1.0, 0.0, 0.0: off.
    `repetition_stop`: end the answer at the token that completes a loop (llma.repetition; stop
    reason "repetition"); True (the default) is `RepetitionStop()`, False or None is off.
    """

    enabled: bool = True
    min_n: int | None = None
    max_n: int = 4
    k: int | None = None
    adaptive: bool | None = None
    k_max: int = 32
    policy: Policy | None = None
    copy_from_output: bool = True
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_sequences: tuple[tuple[int, ...], ...] = field(default_factory=tuple)
    max_reference_tokens: int = MAX_REFERENCE_TOKENS
    answer_history: bool | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_stop: RepetitionStop | bool | None = True

    def __post_init__(self) -> None:
        for name in ("min_n", "max_n", "k", "k_max", "max_new_tokens", "top_k", "max_reference_tokens"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        for name in ("adaptive", "answer_history"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True, False or None (the backend's default), "
                                 f"got {getattr(self, name)!r}")
        if self.seed is not None:
            check_int("seed", self.seed, 0)
        check_finite("temperature", self.temperature)
        check_finite("top_p", self.top_p)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        # Build the parts once here so bad settings fail at once, with the parts' own messages
        # (the defaults of either backend, filled in, are valid with any valid explicit setting).
        drafting = HF_DEFAULTS.values(self)
        _copy_length(drafting["k"], drafting["adaptive"], self.k_max)
        ReferenceIndex(min_n=drafting["min_n"], max_n=self.max_n, policy=drafting["policy"])
        StopConfig(self.max_new_tokens, frozenset(), self.stop_sequences)
        if self.temperature > 0:
            SamplingConfig(self.temperature, self.top_k, self.top_p)
        self.penalties()
        if not isinstance(self.repetition_stop, (RepetitionStop, bool, type(None))):
            raise ValueError(f"repetition_stop must be a RepetitionStop, True (the default rule) or "
                             f"False/None (off), got {self.repetition_stop!r}")

    def penalties(self) -> Penalties | None:
        """The penalties, None if all are off."""
        penalties = Penalties(self.repetition_penalty, self.presence_penalty, self.frequency_penalty)
        return penalties if penalties.active else None

    def loop_rule(self) -> RepetitionStop | None:
        """The repetition stop's rule, None if off."""
        if isinstance(self.repetition_stop, RepetitionStop):
            return self.repetition_stop
        return RepetitionStop() if self.repetition_stop else None

    def greedy(self) -> LLMAConfig:
        """The same settings with the proposer off: the baseline."""
        return replace(self, enabled=False)

    def copy_length(self) -> CopyLength:
        """The copy-length schedule of a resolved config (k and adaptive set)."""
        if self.k is None or self.adaptive is None:
            raise ValueError("copy_length() needs k and adaptive set: resolve the config first")
        return _copy_length(self.k, self.adaptive, self.k_max)


def _copy_length(k: int, adaptive: bool, k_max: int) -> CopyLength:
    # Adaptive copies shrink to 2 at least (or k, if smaller) and grow to k_max (or k, if larger).
    return CopyLength(k, adaptive, min(2, k), max(k, k_max))


@dataclass(frozen=True)
class DraftDefaults:
    """What `LLMAConfig` fields left at None become on one kind of backend."""

    min_n: int
    k: int
    adaptive: bool
    policy: Policy
    answer_history: bool

    def values(self, config: LLMAConfig) -> dict[str, Any]:
        """`config`'s drafting fields, the None ones set; a default min_n is capped at its max_n."""
        return {
            "min_n": config.min_n if config.min_n is not None else min(self.min_n, config.max_n),
            "k": config.k if config.k is not None else self.k,
            "adaptive": config.adaptive if config.adaptive is not None else self.adaptive,
            "policy": config.policy or self.policy,
            "answer_history": self.answer_history if config.answer_history is None else config.answer_history,
        }

    def apply(self, config: LLMAConfig) -> LLMAConfig:
        """`config` with its None drafting fields set (`values`)."""
        return replace(config, **self.values(config))


# The generic HF loop: every drafted token costs compute there, so drafts start short and adapt,
# and no draft from the answer history (docs/DESIGN.md, "Drafting rules").
HF_DEFAULTS = DraftDefaults(min_n=2, k=8, adaptive=True, policy="recent", answer_history=False)


def fixed_block_defaults(max_draft: int) -> DraftDefaults:
    """The defaults for a fixed query block of `max_draft` drafted slots (llma.static): every step
    runs the whole block, so drafts fill it, from 1-gram matches on, at the occurrence with the
    longest tail, and drafts from the answer history fill what the references leave unused
    (docs/DESIGN.md, "Drafting rules")."""
    return DraftDefaults(min_n=1, k=max_draft, adaptive=False, policy="longest", answer_history=True)


def build_proposer(references: Mapping[RefId, Sequence[int]], config: LLMAConfig, defaults: DraftDefaults,
                   drafts_per_step: int, history: AnswerHistory) -> Proposer | None:
    """The proposer for one generation (None when `config.enabled` is off): its reference index over
    `references` (and the answer itself), drafting by `config` with its None fields from `defaults`.
    `history`: the answers to learn from and add to, where `config` uses one."""
    if not config.enabled:
        return None
    if config.copy_from_output and OUTPUT_REF in references:
        raise ValueError(f"reference id {OUTPUT_REF!r} is reserved for the answer itself")
    config = defaults.apply(config)
    output = OUTPUT_REF if config.copy_from_output else None
    # Several drafts per step and drafts from the answer history in sampling too: a seeded sample's
    # tokens are keyed on the seed and the position, so no draft can change them (SamplingVerifier).
    index = ReferenceIndex(references, min_n=config.min_n, max_n=config.max_n, policy=config.policy,
                           prefer=output, candidates=drafts_per_step)
    return Proposer(index, config.copy_length(), output, history if config.answer_history else None)


def eos_token_ids(loaded: LoadedModel) -> frozenset[int]:
    """The model's end-of-sequence token ids (its generation config's, one or a list)."""
    eos = loaded.model.generation_config.eos_token_id
    return frozenset(int(t) for t in (eos if isinstance(eos, list) else [eos]) if t is not None)


def build_verifier(config: LLMAConfig, prompt: Sequence[int] = ()) -> Verifier:
    """Greedy for temperature 0, else seeded sampling (`config.seed`, else a random seed per call)
    whose tokens drafts cannot change (llma.verifier.SamplingVerifier); with
    `config`'s penalties (llma.penalties) for one generation after `prompt`."""
    rule: Verifier
    if config.temperature == 0:
        rule = GreedyVerifier()
    else:
        # No seed: the verifier draws a random one for this generation.
        rule = SamplingVerifier(SamplingConfig(config.temperature, config.top_k, config.top_p), config.seed)
    penalties = config.penalties()
    return rule if penalties is None else penalised(rule, TokenCounts(penalties, prompt))


class Engine:
    """A model ready to decode with references; `stream` yields one `StepEvent` per forward pass."""

    concurrent = False  # one KV cache: callers serialise (llma.batch.BatchEngine takes many at once)

    def __init__(self, loaded: LoadedModel, backend: Backend | str | None = None,
                 options: EngineOptions | None = None) -> None:
        """`backend`: a Backend to run, or a backend name (shorthand for
        `EngineOptions(backend=name)`); else `options` (default `EngineOptions()`: "auto") choose
        it (llma.static.select_backend). The environment plays no part: callers that honour
        variables pass `EngineOptions.from_env(os.environ)`."""
        self.loaded = loaded
        if isinstance(backend, str):
            options = EngineOptions(backend=backend) if options is None else replace(options, backend=backend)
            backend = None
        self.options = options or EngineOptions()
        self.backend: Backend = backend if backend is not None else select_backend(loaded.model, self.options)
        self.decoder = Decoder(self.backend)
        self.eos_token_ids = eos_token_ids(loaded)
        self.vocab_size = int(loaded.model.get_input_embeddings().num_embeddings)
        self.history = AnswerHistory()  # this engine's answers so far (LLMAConfig.answer_history)

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    @property
    def draft_defaults(self) -> DraftDefaults:
        """The drafting settings that this engine's backend runs best with (see `LLMAConfig`)."""
        max_draft = self.backend.max_draft  # None: no fixed block
        return HF_DEFAULTS if max_draft is None else fixed_block_defaults(max_draft)

    def resolve(self, config: LLMAConfig) -> LLMAConfig:
        """`config` with the drafting settings it leaves at None taken from `draft_defaults`."""
        return self.draft_defaults.apply(config)

    def proposer(self, references: Mapping[RefId, Sequence[int]], config: LLMAConfig,
                 history: AnswerHistory | None = None) -> Proposer | None:
        """`history`: the answers to learn from and add to (default: the engine's own)."""
        return build_proposer(references, config, self.draft_defaults, self.backend.drafts_per_step,
                              self.history if history is None else history)

    def verifier(self, config: LLMAConfig, prompt: Sequence[int] = ()) -> Verifier:
        """The rule `config` implies; with penalties, for one generation after `prompt`."""
        return build_verifier(config, prompt)

    def stream(
        self,
        prompt: Sequence[int],
        references: Mapping[RefId, Sequence[int]] | None = None,
        config: LLMAConfig = LLMAConfig(),
        verifier: Verifier | None = None,
        history: AnswerHistory | None = None,
    ) -> Iterator[StepEvent]:
        """`verifier` overrides the one the config implies, penalties included (the benchmark's
        forced decoding); `history` the engine's own answer history (the benchmark: one per method)."""
        check_token_ids("prompt", prompt, self.vocab_size)
        references = check_references(references, self.vocab_size, config.max_reference_tokens)
        stop = StopConfig(config.max_new_tokens, self.eos_token_ids, config.stop_sequences, config.loop_rule())
        self.backend.reserve(config.max_new_tokens)  # a static cache sizes its attention for the answer
        return self.decoder.stream(
            prompt,
            proposer=self.proposer(references, config, history),
            verifier=verifier or self.verifier(config, prompt),
            stop=stop,
        )

    def generate(self, prompt: Sequence[int], references: Mapping[RefId, Sequence[int]] | None = None,
                 config: LLMAConfig = LLMAConfig(), verifier: Verifier | None = None,
                 history: AnswerHistory | None = None) -> DecodeResult:
        """`stream`'s events folded into one result (tokens, copied spans, statistics)."""
        return collect(self.stream(prompt, references, config, verifier, history))

    def warm_up(self) -> bool:
        """A two-token greedy generation now if the backend sets itself up on first use (CUDA graph
        captures and torch.compile: seconds on a GPU), so that a server's first answer does not wait
        for it; greedy and LLMA share the step's graph. False (nothing run) for a backend without graphs."""
        if not self.backend.needs_warm_up:
            return False
        started = time.perf_counter()
        self.generate([0] * 8, None, LLMAConfig(max_new_tokens=2).greedy())
        log.info("%s set up in %.1f s", self.backend.name, time.perf_counter() - started)
        return True
