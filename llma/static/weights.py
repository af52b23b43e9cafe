"""One layer's weights as the static backend's fixed-shape step uses them."""
from __future__ import annotations

from collections import namedtuple

import torch

# q, k and v (and gate and up) projections in one matrix each: one GEMM each; o and down transposed
# for addmm (the residual added in the same kernel).
Layer = namedtuple("Layer", "in_norm qkv qkv_bias o_t o_bias post_norm gate_up down_t")


def pack_layer(layer: torch.nn.Module) -> Layer:
    a, mlp = layer.self_attn, layer.mlp
    projs = (a.q_proj, a.k_proj, a.v_proj)
    bias = torch.cat([p.bias for p in projs]) if a.q_proj.bias is not None else None
    return Layer(layer.input_layernorm.weight.detach(), torch.cat([p.weight for p in projs]), bias,
                 a.o_proj.weight.detach().t(), None if a.o_proj.bias is None else a.o_proj.bias.detach(),
                 layer.post_attention_layernorm.weight.detach(),
                 torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight.detach().t())
