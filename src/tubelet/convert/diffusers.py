"""Importer for diffusers folders (`checkpoint_format="diffusers"`): Wan 2.1's
`AutoencoderKLWan` into `wan_vae` and `WanTransformer3DModel` into `wan_dit` (and its named
variants).

A folder written by `save_pretrained` (or a published repository's `vae/` or `transformer/`
subfolder) holds `config.json` and `diffusion_pytorch_model.safetensors` (or shards with an
index). The config gives the builder's arguments; the state dict is renamed key by key, and the
few tensors whose layout differs (RMS norm scales kept as (C, 1, 1, 1), 1x1 convolutions that are
Linear layers here, separate q/k/v projections that are one `qkv` here) are reshaped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tubelet.convert import register_architecture_reader, register_format
from tubelet.convert.transformers import read_config

WAN_DIT_MODELS = ("wan_dit", "wan2_1_t2v_1_3b", "wan2_1_t2v_14b")
_CONFIGS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
_CONVERTERS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {}


def _supported(name: str) -> None:
    if name not in _CONVERTERS:
        raise ValueError(
            f"no diffusers importer for model {name!r}; supported: {', '.join(sorted(_CONVERTERS))}"
        )


@register_architecture_reader("diffusers")
def architecture(name: str, path: Path) -> dict[str, Any]:
    """Builder arguments for tubelet model `name` from the folder's config.json."""
    _supported(name)
    return _CONFIGS[name](read_config(path))


@register_format("diffusers")
def from_diffusers(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a diffusers state dict onto the keys of tubelet model `name`."""
    _supported(name)
    return _CONVERTERS[name](state)


# --- AutoencoderKLWan -> wan_vae ------------------------------------------------------------------


def wan_vae_config(config: dict[str, Any]) -> dict[str, Any]:
    """An `AutoencoderKLWan` config dict -> `wan_vae` builder arguments (Wan 2.1 layout only)."""
    if config.get("is_residual") or config.get("patch_size") is not None:
        raise ValueError(
            "this AutoencoderKLWan is the Wan 2.2 layout (is_residual / patch_size), which wan_vae "
            "does not implement; import a Wan 2.1 VAE (e.g. Wan2.1-T2V-1.3B-Diffusers/vae)"
        )
    keys = {
        "base_dim": "width", "decoder_base_dim": "decoder_width", "z_dim": "z_dim",
        "dim_mult": "dim_mult", "num_res_blocks": "num_res_blocks", "attn_scales": "attn_scales",
        "temperal_downsample": "temporal_downsample", "in_channels": "in_channels",
        "out_channels": "out_channels", "latents_mean": "latents_mean",
        "latents_std": "latents_std",
    }  # fmt: skip
    args = {ours: config[theirs] for theirs, ours in keys.items() if config.get(theirs) is not None}
    for key in ("dim_mult", "attn_scales", "temporal_downsample", "latents_mean", "latents_std"):
        if key in args:
            args[key] = tuple(args[key])
    return args


# Renames, applied in order to every key (regular expressions).
_VAE_RENAMES = (
    (r"\.down_blocks\.", ".down."),
    (r"\.mid_block\.resnets\.0\.", ".mid.res1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.res2."),
    (r"\.mid_block\.attentions\.0\.", ".mid.attn."),
    (r"\.up_blocks\.(\d+)\.resnets\.", r".up.\1.blocks."),
    (r"\.up_blocks\.(\d+)\.upsamplers\.0\.", r".up.\1.upsample."),
    (r"\.resample\.1\.", ".conv."),
    (r"\.conv_shortcut\.", ".shortcut."),
    (r"\.to_qkv\.", ".attn.qkv."),
    (r"(\.(?:mid\.attn|down\.\d+))\.proj\.", r"\1.attn.proj."),
    (r"\.gamma$", ".weight"),
)


def wan_vae_key(key: str) -> str:
    """The `wan_vae` key of a diffusers `AutoencoderKLWan` key."""
    for pattern, repl in _VAE_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def from_autoencoder_kl_wan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key; RMS norm scales (C, 1, 1[, 1]) become (C,), the attention's 1x1 conv
    weights (C', C, 1, 1) become Linear weights (C', C)."""
    out = {}
    for key, value in state.items():
        new = wan_vae_key(key)
        if new.endswith(".weight") and re.search(r"norm\w*\.weight$", new):
            value = value.reshape(-1)
        elif re.search(r"\.attn\.(qkv|proj)\.weight$", new):
            value = value.flatten(1)
        out[new] = value
    return out


_CONFIGS["wan_vae"] = wan_vae_config
_CONVERTERS["wan_vae"] = from_autoencoder_kl_wan


# --- WanTransformer3DModel -> wan_dit -------------------------------------------------------------


def wan_dit_config(config: dict[str, Any]) -> dict[str, Any]:
    """A `WanTransformer3DModel` config dict -> `wan_dit` builder arguments (text-to-video only)."""
    unsupported = [
        k for k in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len") if config.get(k)
    ]
    if unsupported:
        raise ValueError(
            f"this WanTransformer3DModel has image conditioning ({', '.join(unsupported)}), which "
            "wan_dit does not implement; import a text-to-video transformer"
        )
    if config.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        raise ValueError(f"qk_norm {config['qk_norm']!r} is not supported (rms_norm_across_heads)")
    heads = config.get("num_attention_heads", 40)
    args = {
        "width": heads * config.get("attention_head_dim", 128),
        "num_heads": heads,
        "in_channels": config.get("in_channels", 16),
        "out_channels": config.get("out_channels", 16),
        "text_dim": config.get("text_dim", 4096),
        "freq_dim": config.get("freq_dim", 256),
        "ffn_dim": config.get("ffn_dim", 13824),
        "num_layers": config.get("num_layers", 40),
        "patch_size": tuple(config.get("patch_size", (1, 2, 2))),
        "cross_attn_norm": config.get("cross_attn_norm", True),
        "eps": config.get("eps", 1e-6),
    }
    return args


_DIT_RENAMES = (
    (r"^patch_embedding\.", "patch_embed."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embed.fc1."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embed.fc2."),
    (r"^condition_embedder\.time_proj\.", "time_modulation."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embed.fc1."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embed.fc2."),
    (r"\.attn1\.to_out\.0\.", ".self_attn.proj."),
    (r"\.attn1\.norm_q\.", ".self_attn.q_norm."),
    (r"\.attn1\.norm_k\.", ".self_attn.k_norm."),
    (r"\.attn2\.to_out\.0\.", ".cross_attn.proj."),
    (r"\.attn2\.to_q\.", ".cross_attn.q."),
    (r"\.attn2\.to_k\.", ".cross_attn.k."),
    (r"\.attn2\.to_v\.", ".cross_attn.v."),
    (r"\.attn2\.norm_q\.", ".cross_attn.q_norm."),
    (r"\.attn2\.norm_k\.", ".cross_attn.k_norm."),
    (r"\.ffn\.net\.0\.proj\.", ".mlp.fc1."),
    (r"\.ffn\.net\.2\.", ".mlp.fc2."),
    (r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),
    (r"^scale_shift_table$", "head_modulation"),
    (r"^proj_out\.", "head."),
)


def wan_dit_key(key: str) -> str:
    """The `wan_dit` key of a diffusers `WanTransformer3DModel` key (q/k/v are fused separately)."""
    for pattern, repl in _DIT_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def from_wan_transformer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key; the self-attention's to_q/to_k/to_v become one `qkv` (rows q, k, v)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = re.match(r"^(blocks\.\d+)\.attn1\.to_([qkv])\.(weight|bias)$", key)
        if match:
            block, part, kind = match.groups()
            fused.setdefault(f"{block}.self_attn.qkv.{kind}", {})[part] = value
            continue
        out[wan_dit_key(key)] = value
    for target, parts in fused.items():
        missing = [p for p in "qkv" if p not in parts]
        if missing:
            raise ValueError(f"diffusers checkpoint lacks to_{missing[0]} for {target}")
        out[target] = torch.cat([parts[p] for p in "qkv"])
    return out


for _name in WAN_DIT_MODELS:
    _CONFIGS[_name] = wan_dit_config
    _CONVERTERS[_name] = from_wan_transformer
