"""LLMA: lossless acceleration of LLM decoding by copying from references (token ids in and out)."""
from llma.backend import Backend, HFBackend
from llma.engine import OUTPUT_REF, DraftDefaults, Engine, LLMAConfig
from llma.decoder import Decoder, StopConfig, collect
from llma.history import AnswerHistory
from llma.loading import DEFAULT_MODEL, LoadedModel, ModelNotFoundError, load_model
from llma.options import EngineOptions
from llma.proposer import CopyLength, Proposer
from llma.reference_index import ReferenceIndex
from llma.types import CopiedSpan, DecodeResult, DecodeStats, Draft, StepEvent
from llma.verifier import ForcedVerifier, GreedyVerifier, SamplingConfig, SamplingVerifier, count_accepted
from llma.batch import BatchEngine, open_engine  # last: it builds on the modules above

__all__ = [
    "Backend", "HFBackend", "Engine", "EngineOptions", "LLMAConfig", "DraftDefaults", "OUTPUT_REF",
    "Decoder", "StopConfig", "collect", "DEFAULT_MODEL", "LoadedModel", "AnswerHistory",
    "ModelNotFoundError", "load_model", "CopyLength", "Proposer", "ReferenceIndex", "CopiedSpan",
    "DecodeResult", "DecodeStats", "Draft", "StepEvent", "ForcedVerifier", "GreedyVerifier",
    "SamplingConfig", "SamplingVerifier", "count_accepted", "BatchEngine", "open_engine",
]
