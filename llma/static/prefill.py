"""The static backend's prompt prefill: one causal forward over the padded prompt, eager or from a
CUDA graph per padded length, writing the prompt's keys and values into the static cache."""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llma.static.graphs import capture
from llma.static.weights import LlamaWeights

log = logging.getLogger(__name__)


class Prefill(LlamaWeights):
    """StaticBackend's prefill helpers (it owns the cache `k`, `v`, `rows`, the graphs' pool and stream)."""

    def _prefill_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last hidden states of a padded prompt (a device tensor); writes its keys and values at [0, m)."""
        m = tokens.shape[0]
        x = self._layers(F.embedding(tokens, self.embed), self.cos[:m, None], self.sin[:m, None],
                         self._prefill_attention(m))
        if self.rows > 1:  # every row's copy of the cache starts from the prompt
            self.k[:, 1:, :, :m], self.v[:, 1:, :, :m] = self.k[:, :1, :, :m], self.v[:, :1, :, :m]
        return x

    def _prefill_graph(self, tokens: torch.Tensor) -> torch.Tensor:
        """`_prefill_states` replayed from a graph captured at the padded length's first use (two
        per doubling, llma.static.graphs.graph_length); they share one memory pool, and each output
        is read (the last row's logits) before the next prefill replays."""
        m = tokens.shape[0]
        if m not in self._prefills:
            static = torch.zeros(m, dtype=torch.long, device=self.device)  # its warm-up writes only [0, m)
            self._prefills[m] = (*capture(self._prefill_states, static, self._side, self._pool), static)
            log.info("captured a CUDA graph for the prefill of %d (padded) tokens", m)
        graph, out, static = self._prefills[m]
        static.copy_(tokens)
        graph.replay()
        return out

    def _prefill_attention(self, n: int) -> Callable[..., torch.Tensor]:
        groups = self.heads // self.kv_heads

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k, v = k.transpose(0, 1), v.transpose(0, 1)  # [kv_heads, n, head_dim]
            self.k[i, 0, :, :n], self.v[i, 0, :, :n] = k, v
            if groups > 1:
                k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
            out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k[None], v[None], is_causal=True,
                                                 scale=self.scale)
            return out[0].transpose(0, 1).reshape(n, -1)

        return attend
