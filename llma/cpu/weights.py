"""`Int4Weights`: a Llama-family model's layers with 4-bit weights (llma.cpu.int4) and its output
head in bf16, in the interface of llma.static.weights.LlamaWeights that the batch step uses.

The residual stream, norms, rotary embedding, attention and KV cache stay fp32; each product takes
its input in bf16 and its result is widened to fp32. A prompt's rows (the step's `prompt` rows)
run through the model's own matrices instead (a GEMM built for many rows), in bf16 where the CPU
multiplies bf16 natively (`native_bf16`; elsewhere torch's bf16 GEMM runs several times slower than
fp32's, so fp32 there: `default_prompt_dtype`): the 4-bit kernel is built for few rows, and a
row's path depends only on its own request (prompt or decoding), never on the rest of the step.
The prompt dtype is an engine setting of its own (outputs its own greedy's).
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llma.batch.rows import TILES, pad_rows
from llma.cpu.glue import Q8_GROUP, CGlue, Q8Matrix
from llma.cpu.int4 import GROUP, OUT_MULTIPLE, Int4Matrix, available
from llma.cpu.tiles import choose_tile, position_invariant
from llma.options import PROMPT_DTYPES as PROMPT_DTYPE_NAMES
from llma.static.weights import LlamaWeights

PROMPT_ROWS = 256  # the bucket of a step's bf16 prompt rows (and, where needed, the rows of each call)
PROMPT_DTYPES = {name: getattr(torch, name) for name in PROMPT_DTYPE_NAMES}  # the prompt products' choices
PIECE_TRIALS = (1, 256, 257, 520, 800, 1024)  # row counts of the check of prompt rows in PROMPT_ROWS calls
QuantLayer = namedtuple("QuantLayer", "in_norm qkv qkv_bias o o_bias post_norm gate_up down")
# A step's rows split by path: the prompt rows' and the other rows' indices, each part's row tile, and
# the prompt rows' call size (None: one call).
PromptSplit = namedtuple("PromptSplit", "prompt_rows rows prompt_tile tile piece")


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Does this CPU multiply bf16 natively (AVX-512 BF16 or AMX-BF16, as Linux reports its flags)?
    False where that cannot be read."""
    try:
        flags = {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
                 for f in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def default_prompt_dtype() -> str:
    """The prompt products' dtype (a PROMPT_DTYPES key) for this CPU: "bfloat16" where it multiplies
    bf16 natively, else "float32"."""
    return "bfloat16" if native_bf16() else "float32"


class Product:
    """One matrix as 4-bit groups (decoding rows) and as the model's own in `prompt_dtype` (prompt
    rows)."""

    def __init__(self, full: torch.Tensor, prompt_dtype: torch.dtype = torch.bfloat16) -> None:
        self.prompt = full.to(prompt_dtype).contiguous()  # [out, in]
        self.int4 = Int4Matrix(full)

    def __call__(self, x: torch.Tensor, prompt: PromptSplit | None = None) -> torch.Tensor:
        """x [rows, in] @ weight.T, in fp32; `prompt` where some rows are a prompt's (each part's
        product over whole tiles of its own)."""
        return self.narrow(x, prompt).float()

    def narrow(self, x: torch.Tensor, prompt: PromptSplit | None = None) -> torch.Tensor:
        """As `__call__`, the result in bf16 [rows, out] (each product's own output, not widened)."""
        if prompt is None:
            return self.int4(x)
        prompt_rows, rows, prompt_tile, tile, piece = prompt
        out = x.new_empty(x.shape[0], self.prompt.shape[0], dtype=torch.bfloat16)
        prompt_out = self.prompt_product(pad_rows(x[prompt_rows], prompt_tile), piece)
        out[prompt_rows] = prompt_out[: prompt_rows.numel()].to(out.dtype)
        if rows.numel():
            out[rows] = self.int4(pad_rows(x[rows], tile))[: rows.numel()]
        return out

    def prompt_product(self, x: torch.Tensor, piece: int | None) -> torch.Tensor:
        """x [rows, in] @ weight.T in the prompt dtype (x converted to it); with `piece` (rows a
        multiple of it), in calls of `piece` rows each: a row's bits then depend on its call's shape
        alone, for a CPU whose kernel rounds rows by row count at every tile."""
        x = x.to(self.prompt.dtype)
        if piece is None or x.shape[0] <= piece:
            return F.linear(x, self.prompt)
        return torch.cat([F.linear(part, self.prompt) for part in x.split(piece)])

    def residual(self, r: torch.Tensor, x: torch.Tensor, prompt: PromptSplit | None = None) -> torch.Tensor:
        """r + self(x, prompt): the residual stream r (fp32) plus the product, the 4-bit kernel's
        bf16 widened inside the addition (the same bits as widening it first)."""
        return r + (self.int4(x) if prompt is None else self(x, prompt))


class Int4Weights:
    """The layers of `model` as `Product`s, the output head in bf16; the embedding, norms and rotary
    tables as `LlamaWeights` has them (fp32). `run` and `logits` as LlamaWeights'. `tile`: the
    smallest row tile for which the 4-bit products, the head and the step's attention are
    row-invariant here (llma.cpu.tiles), `prompt_tile` the bucket of the prompt products' rows
    (their own tile; for bf16, or calls of PROMPT_ROWS rows, PROMPT_ROWS, a multiple of it); TILES'
    largest where none is (`invariant` False). `prompt_dtype`: the prompt products' dtype."""

    def __init__(self, model: PreTrainedModel, positions: int, glue: CGlue | None = None,
                 prompt_dtype: torch.dtype = torch.bfloat16) -> None:
        base = LlamaWeights(model, positions, compile=False)
        self.glue = glue
        self.heads, self.kv_heads, self.head_dim = base.heads, base.kv_heads, base.head_dim
        self.scale, self.eps, self.dtype, self.device = base.scale, base.eps, base.dtype, base.device
        self.embed, self.norm, self.cos, self.sin = base.embed, base.norm, base.cos, base.sin
        self.lm_head = base.lm_head.to(torch.bfloat16)
        # With the glue, the head in 8-bit groups instead (exact for a GGUF's Q8_0 head; csrc/head.c's
        # product: faster than bf16's for the few rows of a decoding step, accumulated in fp32).
        self.head = Q8Matrix(base.lm_head) if glue is not None and base.lm_head.shape[1] % Q8_GROUP == 0 else None
        self.prompt_dtype = prompt_dtype
        self.layers = [QuantLayer(w.in_norm, Product(w.qkv, prompt_dtype), w.qkv_bias, Product(w.o_t.t(), prompt_dtype),
                                  w.o_bias, w.post_norm, Product(w.gate_up, prompt_dtype),
                                  Product(w.down_t.t(), prompt_dtype))
                       for w in base.layers]
        tile = choose_tile(self.products(), self.heads, self.kv_heads, self.head_dim, self.dtype)
        self.prompt_piece: int | None = None
        prompt_tile = choose_tile(self.products(prompt=True), 0, 0, 0, self.dtype)
        if prompt_tile is None:  # no tile keeps a single call's rows: calls of PROMPT_ROWS rows each
            self.prompt_piece = PROMPT_ROWS
            prompt_tile = choose_tile(self.products(prompt=True), 0, 0, 0, self.dtype, (PROMPT_ROWS,),
                                      PIECE_TRIALS)
            if not all(position_invariant(p, n, PROMPT_ROWS, self.dtype) for p, n in self.products(prompt=True)):
                prompt_tile = None  # a row's bits would depend on the rows before it in its call
        self.invariant = tile is not None and prompt_tile is not None
        self.tile = tile or TILES[-1]
        # bf16 prompt rows in whole buckets of PROMPT_ROWS (a multiple of every tile): each distinct
        # row count of a bf16 product keeps a few MB in oneDNN's caches, so few row counts.
        bucket = self.prompt_piece is not None or prompt_dtype == torch.bfloat16
        self.prompt_tile = max(PROMPT_ROWS, prompt_tile or TILES[-1]) if bucket else prompt_tile or TILES[-1]

    def run(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
            step: bool = False, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """As `LlamaWeights.run`; `prompt` [rows] bool: the rows run through the bf16 matrices."""
        split = None
        if prompt is not None:
            split = PromptSplit(prompt.nonzero()[:, 0], (~prompt).nonzero()[:, 0], self.prompt_tile, self.tile,
                                self.prompt_piece)
        if self.glue is not None:
            return self._run_glued(x.contiguous(), cos, sin, attend, split)
        n = x.shape[0]
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        half = d // 2
        hidden = (x.shape[-1],)
        for i, w in enumerate(self.layers):
            qkv = w.qkv(F.rms_norm(x, hidden, w.in_norm, self.eps), split)
            if w.qkv_bias is not None:
                qkv = qkv + w.qkv_bias
            qkv = qkv.view(n, h + 2 * kv, d)
            qk = qkv[:, : h + kv]
            qk = qk * cos + torch.cat((qk[..., half:], qk[..., :half]), -1) * sin
            x = w.o.residual(x, attend(i, qk[:, :h], qk[:, h:], qkv[:, h + kv :]), split)
            if w.o_bias is not None:
                x = x + w.o_bias
            gate, up = w.gate_up(F.rms_norm(x, hidden, w.post_norm, self.eps), split).chunk(2, -1)
            x = w.down.residual(x, F.silu(gate) * up, split)
        return F.rms_norm(x, hidden, self.norm, self.eps)

    def _run_glued(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                   split: PromptSplit | None) -> torch.Tensor:
        """`run` with the elementwise work in `self.glue` (llma.cpu.glue): x [rows, hidden] (fp32,
        updated in place) is the residual stream; every product's input and output in bf16 (fp32
        prompt products round their results to it)."""
        glue, eps = self.glue, self.eps
        cos, sin = cos.reshape(x.shape[0], -1).contiguous(), sin.reshape(x.shape[0], -1).contiguous()
        h = glue.norm(x, self.layers[0].in_norm, eps)
        for i, w in enumerate(self.layers):
            q, k, v = glue.qkv_rotary(w.qkv.narrow(h, split), w.qkv_bias, cos, sin, self.heads,
                                      self.kv_heads, self.head_dim)
            h = glue.add_norm(x, w.o.narrow(attend(i, q, k, v), split), w.o_bias, w.post_norm, eps)
            h = glue.silu_mul(w.gate_up.narrow(h, split))
            last = i + 1 == len(self.layers)
            h = glue.add_norm(x, w.down.narrow(h, split), None, self.norm if last else self.layers[i + 1].in_norm,
                              eps, wide=last)
        return h

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output head over hidden states x [rows, hidden]: the bf16 product (fp32 with the
        8-bit head)."""
        if self.head is not None:
            return self.glue.q8_matmul(x.float().contiguous(), self.head.q, self.head.scale)
        return F.linear(x.to(torch.bfloat16), self.lm_head)

    def products(self, prompt: bool = False) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
        """Every distinct product of a step's decoding rows (the 4-bit ones and the head), or of its
        `prompt` rows (in the prompt dtype), and its input width, for a row-invariance check."""
        layer = self.layers[0]
        matrices = (layer.qkv, layer.o, layer.gate_up, layer.down)
        if prompt:
            return [(lambda x, p=p: p.prompt_product(x, self.prompt_piece).float(), p.prompt.shape[1])
                    for p in matrices]
        return [(p.int4, p.prompt.shape[1]) for p in matrices] + [(self.logits, self.lm_head.shape[1])]


def int4_reason(model: PreTrainedModel) -> str | None:
    """Why `model` cannot run with `Int4Weights` here (None if it can): off the CPU, a torch without
    the CPU int4 kernel, or a layer width the kernel does not take (llma.cpu.int4)."""
    if model.device.type != "cpu":
        return f"int4 weights run on the CPU only, the model is on {model.device}"
    if not available():
        return "this torch build does not run the CPU int4 kernel"
    a = model.model.layers[0].self_attn
    qkv = sum(p.weight.shape[0] for p in (a.q_proj, a.k_proj, a.v_proj))
    c = model.config
    widths = {"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size, "q, k and v": qkv}
    bad = [f"{k}={v}" for k, v in widths.items() if v % GROUP or v % OUT_MULTIPLE]
    return f"int4 weights need widths in multiples of {GROUP}: {', '.join(bad)}" if bad else None


def int4_weights(model: PreTrainedModel, positions: int, glue: CGlue | None = None,
                 prompt_dtype: str | None = None) -> tuple[Int4Weights, int | None]:
    """`Int4Weights` of `model` (its elementwise work in `glue` where given, its prompt products in
    `prompt_dtype`, a PROMPT_DTYPES key; None: `default_prompt_dtype`) and its row tile (None where
    none is row-invariant). Raises ValueError where `int4_reason` gives a reason or for an unknown
    prompt dtype."""
    reason = int4_reason(model)
    if reason is not None:
        raise ValueError(reason)
    name = prompt_dtype or default_prompt_dtype()
    if name not in PROMPT_DTYPES:
        raise ValueError(f"prompt_dtype must be one of {tuple(PROMPT_DTYPES)}, got {name!r}")
    w = Int4Weights(model, positions, glue, PROMPT_DTYPES[name])
    return w, w.tile if w.invariant else None
