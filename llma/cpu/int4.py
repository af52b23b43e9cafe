"""Weight-only 4-bit matrices for torch's CPU int4 kernel (`_weight_int4pack_mm_for_cpu`).

Each row's weights are cut into groups of GROUP inputs; a group holds 16 evenly spaced levels
`low + q * step` (q in 0..15): the levels of the GGUF's Q4_1 blocks, so a matrix dequantized from a
Q4_1 file packs back to its own levels (up to the kernel's bf16 step and offset). Any other matrix
is rounded to the nearest of its group's 16 levels (lossy: a different engine setting).
Activations enter the kernel in bf16 and leave in bf16.
"""
from __future__ import annotations

import torch

GROUP = 32  # inputs per group: Q4_1's block size
OUT_MULTIPLE = 16  # the kernel's outputs come in multiples of this


class Int4Matrix:
    """`weight` [out, in] (in a multiple of GROUP) packed for the CPU int4 kernel; `self(x)` is
    `x @ weight.T` in bf16 for x [rows, in] (any float dtype; computed in bf16)."""

    def __init__(self, weight: torch.Tensor) -> None:
        out, inputs = weight.shape
        if inputs % GROUP:
            raise ValueError(f"int4 weights need inputs in multiples of {GROUP}, got {inputs}")
        if out % OUT_MULTIPLE:
            raise ValueError(f"int4 weights need outputs in multiples of {OUT_MULTIPLE}, got {out}")
        w = weight.detach().float().reshape(out, inputs // GROUP, GROUP)
        low = w.amin(-1)
        step = (w.amax(-1) - low) / 15
        step = torch.where(step > 0, step, torch.ones_like(step))  # a constant group: every q 0
        q = torch.round((w - low[..., None]) / step[..., None]).clamp_(0, 15).to(torch.int32)
        self.shape = (out, inputs)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(out, inputs), 1)
        # The kernel's dequantization: (q - 8) * scale + zero, per (group, output).
        self.scales_zeros = torch.stack((step, low + 8 * step), -1).transpose(0, 1).contiguous().to(torch.bfloat16)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.packed, GROUP,
                                                          self.scales_zeros)

    def dequantized(self) -> torch.Tensor:
        """The weights [out, in] (fp32) this matrix multiplies by, as the kernel sees them."""
        return self(torch.eye(self.shape[1])).float().t().contiguous()


def available() -> bool:
    """Does this torch build run the CPU int4 kernel?"""
    try:
        Int4Matrix(torch.ones(OUT_MULTIPLE, GROUP))(torch.ones(1, GROUP))
        return True
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
