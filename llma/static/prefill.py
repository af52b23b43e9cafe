"""The static backend's prompt prefill: one causal forward over the padded prompt, eager or from a
CUDA graph per padded length, writing the prompt's keys and values into the static cache."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from llma.static.cache import KVCache
from llma.static.graphs import GraphCache
from llma.static.weights import LlamaWeights


class Prefill:
    """Runs padded prompts through `weights` into `cache`; from `graphs` where given (CUDA)."""

    def __init__(self, weights: LlamaWeights, cache: KVCache, graphs: GraphCache | None) -> None:
        self.weights = weights
        self.cache = cache
        self.graphs = graphs

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last hidden states [m, hidden] of a padded prompt `tokens` [m] (a host tensor); its
        keys and values are written at slots [0, m) of every cache copy. A graph's output is
        overwritten by the next prefill: read it first."""
        if self.graphs is None:
            return self.states(tokens.to(self.weights.device))
        captured = self.graphs.prefill(tokens.shape[0], self.states)
        captured.inp.copy_(tokens)
        return captured.replay()

    def states(self, tokens: torch.Tensor) -> torch.Tensor:
        """`__call__` on a device tensor, eagerly (what a prefill graph captures)."""
        m = tokens.shape[0]
        w = self.weights
        cos, sin, local = w.rotary(w.arange[:m])
        x = w.run(w.embedding(tokens), cos, sin, self._attention(m), local=local)
        self.cache.spread_prompt(m)
        return x

    def _attention(self, n: int) -> Callable[..., torch.Tensor]:
        w = self.weights
        groups = w.heads // w.kv_heads
        scale = w.scale
        # A sliding window shorter than the prompt: an explicit mask (causal and within the window).
        at = w.arange[:n]
        masks = {window: (at[None, :] <= at[:, None]) & (at[None, :] > at[:, None] - window)
                 for window in set(w.windows) if window is not None and window < n}

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k = k.transpose(0, 1)  # [kv_heads, n, head_dim]
            v = v.transpose(0, 1)
            self.cache.write_prompt(i, k, v)
            if groups > 1:
                k = k.repeat_interleave(groups, 0)
                v = v.repeat_interleave(groups, 0)
            mask = masks.get(w.windows[i])
            out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k[None], v[None], attn_mask=mask,
                                                 is_causal=mask is None, scale=scale)
            return out[0].transpose(0, 1).reshape(n, -1)

        return attend
