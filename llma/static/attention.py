"""The step attentions that read only the keys in use ("flash", "split"), and their self-check."""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# attend(q [rows, heads, d], k and v [kv_heads, keys, d], pos: a 1-element device tensor, window) ->
# [rows, heads, d]: row r sees the keys at positions <= pos + r (and > pos + r - window if one is given).
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int | None], torch.Tensor]
CHECK_WINDOW = 40  # the window of the self-check's windowed case (its rows sit at 92..99)


def flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, used: torch.Tensor, scale: float,
          cu: dict[tuple[int, int], tuple[torch.Tensor, ...]], window: int | None = None) -> torch.Tensor:
    """Flash attention (varlen form, one sequence): q [n, heads, d]; k, v [keys, kv_heads, d] of which
    the first `used` count; query i sees keys < used - n + i + 1 (and, with a `window`, the last
    `window` of those). `cu` caches the sequence offsets, made in a warm-up, never during a graph capture."""
    n = q.shape[0]
    keys = k.shape[0]
    if (n, keys) not in cu:
        cu[n, keys] = tuple(torch.tensor([0, m], dtype=torch.int32, device=q.device) for m in (n, keys))
    cu_q, cu_k = cu[n, keys]
    sides = {} if window is None else {"window_size_left": window - 1, "window_size_right": 0}
    return torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, n, keys, 0.0, True, False,
                                                   scale=scale, seqused_k=used, **sides)[0]


def attend_for(name: str, heads: int, kv_heads: int, head_dim: int, scale: float,
               cu: dict[tuple[int, int], tuple[torch.Tensor, ...]]) -> Attend:
    """The "flash" or "split" step attention in the common form `Attend`, for `works` to check."""
    if name == "flash":
        def flash_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                         window: int | None) -> torch.Tensor:
            used = (pos + q.shape[0]).to(torch.int32)
            return flash(q, k.transpose(0, 1), v.transpose(0, 1), used, scale, cu, window)

        return flash_attend

    def split(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
              window: int | None) -> torch.Tensor:
        from llma.static.split_attention import SplitAttention  # needs triton: imported only if chosen

        kernel = SplitAttention(q.shape[0], heads, kv_heads, head_dim, k.shape[1], scale, q.device)
        return kernel(q, k, v, pos, window=window)

    return split


def works(name: str, attend: Attend, heads: int, kv_heads: int, head_dim: int, capacity: int, scale: float,
          dtype: torch.dtype, device: torch.device, windowed: bool = False) -> bool:
    """Does `attend` run here and agree with masked SDPA (8 rows at positions 92..99)? `windowed`:
    also within a sliding window (CHECK_WINDOW)."""
    try:
        g = torch.Generator(device=device).manual_seed(0)
        opts = {"dtype": dtype, "device": device}
        # The layouts of a step: q a slice of the q/k/v rows, k and v [kv_heads, keys, d].
        q = torch.randn(8, heads + 2, head_dim, generator=g, **opts)[:, :heads]
        k, v = (torch.randn(kv_heads, capacity, head_dim, generator=g, **opts) for _ in "kv")
        kr, vr = (t.repeat_interleave(heads // kv_heads, 0) for t in (k, v))
        keys, rows = torch.arange(capacity, device=device)[None], torch.arange(92, 100, device=device)[:, None]
        for window in (None, CHECK_WINDOW) if windowed else (None,):
            out = attend(q, k, v, torch.tensor([92], device=device), window)
            mask = (keys <= rows) & (keys > rows - (window or capacity))
            ref = F.scaled_dot_product_attention(q.transpose(0, 1), kr, vr, attn_mask=mask, scale=scale)
            torch.testing.assert_close(out, ref.transpose(0, 1), atol=2e-2, rtol=2e-2)
        return True
    except Exception as err:  # noqa: BLE001 (any failure: use the portable path)
        log.warning("%s attention unusable here (%s); using sdpa", name, str(err).split("\n")[0][:200])
        return False
