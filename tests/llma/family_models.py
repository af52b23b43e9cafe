"""Tiny random-weight Qwen3 and Gemma 3 text models, built by the shape rules of the real configs.

Qwen3 (Qwen3-0.6B's rules): heads * head_dim != hidden, grouped k/v heads, tied head, q/k norms,
rope base 1e6. Gemma 3 (gemma-3-4b / 27b): heads * head_dim != hidden, query_pre_attn_scalar !=
head_dim (27b's rule: 168 = hidden / heads), a global layer every `pattern` layers (6 in the real
ones; 3 here), a sliding window much shorter than the context (16 here, so prompts cross it), local
rope base 1e4, global base 1e6 with linear scaling x8, GELU-tanh, a head tied or not. Every norm weight is
drawn at random (the real inits, ones and zeros, would hide a wrong norm) and the init spread is
large, so logits sit far apart (no near-ties in the greedy comparisons).
"""
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig, MistralForCausalLM
from transformers import Qwen3Config, Qwen3ForCausalLM

from llma.loading import LoadedModel

WINDOW = 16
SHAPE = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256, initializer_range=0.5, bos_token_id=0, eos_token_id=None,
             pad_token_id=None)


def _loaded(model: torch.nn.Module, name: str, seed: int = 0) -> LoadedModel:
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # norms: random scales around the family's identity
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (0.0 if "gemma" in name else 1.0))
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return LoadedModel(model=model, tokenizer=None, name=name, device=torch.device("cpu"), dtype=torch.float32)


def tiny_qwen3(layers: int = 2, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = Qwen3Config(**SHAPE, num_hidden_layers=layers, head_dim=32, tie_word_embeddings=True, rope_theta=1e6)
    return _loaded(Qwen3ForCausalLM(config), "tiny-qwen3", seed)


def tiny_gemma3(softcap: float | None = None, window: int = WINDOW, seed: int = 0, head_dim: int = 32,
                tied: bool = False) -> LoadedModel:
    """`tied`: the real models' tied head; at random weights it makes greedy repeat one token (each
    position's own scaled embedding dominates), so the default unties it for varied outputs."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        **SHAPE, num_hidden_layers=6, head_dim=head_dim, query_pre_attn_scalar=24, sliding_window=window,
        sliding_window_pattern=3, rope_theta=1e6, rope_local_base_freq=1e4,
        rope_scaling={"rope_type": "linear", "factor": 8.0}, final_logit_softcapping=softcap,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=tied)
    return _loaded(Gemma3ForCausalLM(config), "tiny-gemma3", seed)


def tiny_mistral_window(window: int = WINDOW, seed: int = 0) -> LoadedModel:
    """Mistral with a sliding window on every layer."""
    torch.manual_seed(seed)
    config = MistralConfig(**SHAPE, num_hidden_layers=2, sliding_window=window, tie_word_embeddings=False)
    return _loaded(MistralForCausalLM(config), "tiny-mistral-window", seed)


FAMILIES = {"qwen3": tiny_qwen3, "gemma3": tiny_gemma3, "gemma3-tied-softcap": lambda: tiny_gemma3(softcap=10.0, tied=True),
            "mistral-window": tiny_mistral_window}


def tiny_gemma3_multimodal(seed: int = 0) -> LoadedModel:
    """Gemma 3's multimodal class (what gemma-3-4b and larger load as): tiny_gemma3's text decoder
    beside a toy vision tower, which text-only decoding never runs."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    torch.manual_seed(seed)
    text = tiny_gemma3(seed=seed).model.config.to_dict()
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=text, vision_config=vision.to_dict(), mm_tokens_per_image=4,
                          boi_token_index=95, eoi_token_index=96, image_token_index=94, tie_word_embeddings=False,
                          initializer_range=0.5)
    return _loaded(Gemma3ForConditionalGeneration(config), "tiny-gemma3-multimodal", seed)
