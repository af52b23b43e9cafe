"""Loading: the bundled GGUF (dequantized once, then cached), local folders, clear errors."""
import time

import pytest
import torch

from llma.loading import (DEFAULT_MODEL, ModelNotFoundError, bundled_gguf, cache_root, dequantized_copy,
                          load_model, resolve_device, resolve_dtype)
from llma_fixtures import tiny_llama


def test_bundled_model_loads_from_its_cached_copy(smollm):
    # The session fixture loaded it once; the dequantized copy is keyed by the GGUF's hash.
    copy = dequantized_copy(bundled_gguf())
    assert copy.parent == cache_root() / "dequantized" and (copy / "config.json").is_file()
    t0 = time.perf_counter()
    again = load_model(device="cpu")
    assert time.perf_counter() - t0 < 15  # no second dequantization (~20 s)
    assert again.name == DEFAULT_MODEL and again.dtype == torch.float32
    assert again.tokenizer.eos_token == "<|im_end|>"
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(again.model(ids).logits, smollm.model(ids).logits)


def test_local_folder(tmp_path):
    tiny_llama().model.save_pretrained(tmp_path / "tiny")
    smollm_tok = bundled_gguf()  # any tokenizer will do; the folder needs one to load
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(dequantized_copy(smollm_tok)).save_pretrained(tmp_path / "tiny")
    loaded = load_model(str(tmp_path / "tiny"), device="cpu", dtype="bfloat16")
    assert loaded.model.config.num_hidden_layers == 2 and loaded.dtype == torch.bfloat16


def test_missing_models_give_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(ModelNotFoundError, match="offline"):
        load_model("nobody/unknown-model-id", device="cpu")
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("hello")
    with pytest.raises(ModelNotFoundError, match="holds no model"):
        load_model(str(tmp_path / "not-a-model"), device="cpu")
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0" * 10)
    with pytest.raises(ModelNotFoundError, match="not a .gguf"):
        load_model(str(not_gguf), device="cpu")


def test_device_and_dtype_resolution():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("fp16", torch.device("cpu")) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
