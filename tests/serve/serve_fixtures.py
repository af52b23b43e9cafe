"""Helpers of the server tests: a tiny random model with the bundled model's tokenizer, saved as a
folder `load_model` takes (so the CLI and Ray replicas can load it too), and a live server thread."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import torch
import uvicorn
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llma.loading import bundled_gguf, dequantized_copy

DOCS = {
    "with.md": "# The with statement\n\nThe with statement is used to wrap the execution of a block "
               "with methods defined by a context manager. This allows common try, except and finally "
               "usage patterns to be encapsulated for convenient reuse.\n",
    "volcano.txt": "A volcano is a rupture in the crust of a planet through which lava, volcanic ash and "
                   "gases escape from a magma chamber below the surface.\n",
}
API_KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama over SmolLM2's vocabulary and tokenizer (chat template included); a
    wide init spread keeps its logits far apart, so LLMA and greedy agree exactly in fp32."""
    tokenizer = AutoTokenizer.from_pretrained(dequantized_copy(bundled_gguf()))
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         initializer_range=0.5, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a daemon thread."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
