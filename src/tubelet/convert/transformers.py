"""Importer for Hugging Face transformers folders (`checkpoint_format="transformers"`).

A folder written by `save_pretrained` holds `config.json` and `model.safetensors` (or
`pytorch_model.bin`). Each supported tubelet model has two entries here: `CONFIG_READERS[name]`
turns the config dict into the builder's arguments (so the architecture comes from the checkpoint),
and `CONVERTERS[name]` maps the peer's state dict onto the tubelet model's keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tubelet.convert import (
    register_architecture_reader,
    register_format,
    register_preprocessing_reader,
)
from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD

# tubelet model name -> (Hugging Face config dict -> builder arguments).
CONFIG_READERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
# tubelet model name -> (Hugging Face state dict -> tubelet state dict).
CONVERTERS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {}


def _supported(name: str) -> None:
    if name not in CONVERTERS:
        raise ValueError(
            f"no transformers importer for model {name!r}; supported: {', '.join(sorted(CONVERTERS))}"
        )


def read_config(path: Path) -> dict[str, Any]:
    """The `config.json` of a Hugging Face model folder."""
    config = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{path} has no config.json; pass the folder written by the model's save_pretrained()"
        )
    return json.loads(config.read_text())


@register_architecture_reader("transformers")
def architecture(name: str, path: Path) -> dict[str, Any]:
    """Builder arguments for tubelet model `name` from the folder's config.json."""
    _supported(name)
    return CONFIG_READERS[name](read_config(path))


# tubelet model name -> (checkpoint key -> why the key is left out, or None to keep it).
DROPS: dict[str, Callable[[str], str | None]] = {}


def dropped_key(name: str, key: str) -> str | None:
    """Why the importer leaves checkpoint `key` out for model `name` (None: it is imported)."""
    rule = DROPS.get(name)
    return rule(key) if rule else None


# tubelet model name -> the key prefixes of its head (new when a folder holds only the backbone).
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {}


def fresh_key(name: str, key: str, converted: frozenset[str]) -> str | None:
    """Model keys of the probe head, kept at their initialisation when the folder holds the
    backbone alone (a `VJEPA2Model` or `VideoPrismVisionModel`)."""
    if name not in HEAD_PREFIXES or not key.startswith(HEAD_PREFIXES[name]):
        return None
    if any(k.startswith(HEAD_PREFIXES[name]) for k in converted):
        return None  # the folder has a head: every one of its keys must be there
    return "the folder holds the backbone only; the probe head starts from its initialisation"


# tubelet model name -> (config dict -> frames, size, mean, std), for the models that state them.
PREPROCESSING: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


@register_preprocessing_reader("transformers")
def preprocessing(name: str, path: Path) -> dict[str, Any] | None:
    """The clip a folder's model takes (frames, crop side, mean, std), from its config.json."""
    reader = PREPROCESSING.get(name)
    return reader(read_config(path)) if reader else None


@register_format("transformers", drop=dropped_key, fresh=fresh_key)
def from_transformers(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Hugging Face state dict onto the keys of tubelet model `name`."""
    _supported(name)
    return CONVERTERS[name](state)


# --- TimeSformer: `TimesformerForVideoClassification` -> `timesformer_base` / `timesformer_small` --

# Hugging Face `attention_type` -> the builder's `attention`.
TIMESFORMER_ATTENTION = {
    "divided_space_time": "divided",
    "joint_space_time": "joint",
    "space_only": "space_only",
}
# `TimesformerConfig`'s defaults, for config.json files that leave a key out.
_TIMESFORMER_DEFAULTS: dict[str, Any] = {
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "num_frames": 8,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "attention_type": "divided_space_time",
}
# Renames inside `timesformer.encoder.layer.{i}.`, most specific first.
_TIMESFORMER_BLOCK_KEYS = (
    ("temporal_attention.attention.qkv.", "temporal_attn.qkv."),
    ("temporal_attention.output.dense.", "temporal_attn.proj."),
    ("temporal_layernorm.", "temporal_norm1."),
    ("temporal_dense.", "temporal_fc."),
    ("attention.attention.qkv.", "attn.qkv."),
    ("attention.output.dense.", "attn.proj."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_TIMESFORMER_KEYS = {
    "timesformer.embeddings.cls_token": "cls_token",
    "timesformer.embeddings.position_embeddings": "pos_embed",
    "timesformer.embeddings.time_embeddings": "time_embed",
    "timesformer.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "timesformer.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "timesformer.layernorm.weight": "norm.weight",
    "timesformer.layernorm.bias": "norm.bias",
    "classifier.weight": "fc.weight",
    "classifier.bias": "fc.bias",
}


def _square(config: dict[str, Any], key: str) -> int:
    """An int size, or a square [s, s] one; TimeSformer's layers assume square images/patches."""
    value = config[key]
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"config.json {key}={value!r}: only square sizes are supported")
        value = value[0]
    return int(value)


def timesformer_config(config: dict[str, Any]) -> dict[str, Any]:
    """A `TimesformerConfig` dict -> `timesformer_*` builder arguments.

    Dropout and drop-path rates are not read: they act only in training, never on the outputs of
    the imported model, whose head dropout is the builder's `dropout`.
    """
    if config.get("model_type") != "timesformer":
        raise ValueError(
            f"config.json describes a {config.get('model_type')!r} model, not a TimeSformer; "
            "pass the folder of a TimesformerForVideoClassification.save_pretrained()"
        )
    config = {**_TIMESFORMER_DEFAULTS, **config}
    if config["attention_type"] not in TIMESFORMER_ATTENTION:
        raise ValueError(
            f"config.json attention_type={config['attention_type']!r}; expected one of "
            f"{sorted(TIMESFORMER_ATTENTION)}"
        )
    if config["hidden_act"] != "gelu":
        raise ValueError(
            f"config.json hidden_act={config['hidden_act']!r}: only 'gelu' is supported"
        )
    labels = config.get("id2label")
    return {
        "num_classes": len(labels) if labels else int(config.get("num_labels", 2)),
        "width": int(config["hidden_size"]),
        "depth": int(config["num_hidden_layers"]),
        "num_heads": int(config["num_attention_heads"]),
        "mlp_dim": int(config["intermediate_size"]),
        "image_size": _square(config, "image_size"),
        "patch_size": _square(config, "patch_size"),
        "num_frames": int(config["num_frames"]),
        "attention": TIMESFORMER_ATTENTION[config["attention_type"]],
        "qkv_bias": bool(config["qkv_bias"]),
        "norm_eps": float(config["layer_norm_eps"]),
        "in_channels": int(config["num_channels"]),
    }


def timesformer_key(key: str) -> str:
    """One `TimesformerForVideoClassification` key as tubelet's; unknown keys come back unchanged
    (the strict load then names them as unexpected)."""
    if key in _TIMESFORMER_KEYS:
        return _TIMESFORMER_KEYS[key]
    prefix = "timesformer.encoder.layer."
    if key.startswith(prefix):
        index, _, rest = key.removeprefix(prefix).partition(".")
        for old, new in _TIMESFORMER_BLOCK_KEYS:
            if rest.startswith(old):
                return f"blocks.{index}.{new}{rest.removeprefix(old)}"
    return key


def timesformer_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `TimesformerForVideoClassification` state dict with tubelet's keys (same shapes)."""
    return {timesformer_key(k): v for k, v in state.items()}


TIMESFORMER_MODELS = ("timesformer_base", "timesformer_small")
CONFIG_READERS.update(dict.fromkeys(TIMESFORMER_MODELS, timesformer_config))
CONVERTERS.update(dict.fromkeys(TIMESFORMER_MODELS, timesformer_state))


# -- VideoMAE: `vit_*_video` from VideoMAEForVideoClassification, `videomae_pretrain*` from
# VideoMAEForPreTraining (tubelet.models.vit_video / tubelet.models.videomae) ---------------------
# VideoMAEConfig's defaults, for the keys a config.json leaves out.
_VIDEOMAE_DEFAULTS: dict[str, Any] = {
    "patch_size": 16, "num_channels": 3, "tubelet_size": 2, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "layer_norm_eps": 1e-12, "qv_bias": True, "use_mean_pooling": True,
    "decoder_num_attention_heads": 6, "decoder_hidden_size": 384, "decoder_num_hidden_layers": 4,
    "decoder_intermediate_size": 1536, "norm_pix_loss": True,
}  # fmt: skip
# Hugging Face's LayerNorms outside the blocks (fc_norm, decoder.norm) use PyTorch's default eps.
_HF_HEAD_NORM_EPS = 1e-5
# Per-block module names: Hugging Face -> tubelet (query/key/value are merged into attn.qkv).
_VIDEOMAE_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_VIDEOMAE_MODULES = {
    "videomae.embeddings.patch_embeddings.projection": "encoder.patch_embed.proj",
    "videomae.layernorm": "encoder.norm",
    "fc_norm": "fc_norm",
    "classifier": "fc",
    "encoder_to_decoder": "encoder_to_decoder",
    "mask_token": "mask_token",
    "decoder.norm": "decoder_norm",
    "decoder.head": "decoder_head",
}


def _videomae_config(config: dict[str, Any]) -> dict[str, Any]:
    config = {**_VIDEOMAE_DEFAULTS, **config}
    if "qkv_bias" in config:  # the older name of qv_bias
        config["qv_bias"] = config.pop("qkv_bias")
    if config["hidden_act"] != "gelu":
        raise ValueError(
            f"VideoMAE config with hidden_act={config['hidden_act']!r}: tubelet's video ViT uses "
            "exact GELU ('gelu') only"
        )
    patch = config["patch_size"]
    if isinstance(patch, list | tuple):
        if len(set(patch)) != 1:
            raise ValueError(f"VideoMAE config with non-square patch_size {patch} is not supported")
        config["patch_size"] = patch[0]
    return config


def _head_dim(hidden: int, heads: int, what: str) -> int:
    if hidden % heads:
        raise ValueError(
            f"VideoMAE config: {what} hidden size {hidden} is not divisible by {heads}"
        )
    return hidden // heads


def _videomae_encoder_args(c: dict[str, Any]) -> dict[str, Any]:
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    return {
        "head_dim": _head_dim(hidden, heads, "encoder"),
        "depth": c["num_hidden_layers"],
        "num_heads": heads,
        "mlp_ratio": c["intermediate_size"] / hidden,
        "tubelet_size": c["tubelet_size"],
        "patch_size": c["patch_size"],
        "in_channels": c["num_channels"],
        "qkv_bias": c["qv_bias"],
        "norm_eps": c["layer_norm_eps"],
        "head_norm_eps": _HF_HEAD_NORM_EPS,
    }


def _vit_video_args(config: dict[str, Any]) -> dict[str, Any]:
    c = _videomae_config(config)
    if not c["use_mean_pooling"]:
        raise ValueError(
            "VideoMAEForVideoClassification with use_mean_pooling=false (first-token head) is not "
            "supported; tubelet's video ViT classifies the mean of the tokens"
        )
    num_classes = len(c["id2label"]) if "id2label" in c else c.get("num_labels", 2)
    return {**_videomae_encoder_args(c), "num_classes": num_classes}


def _videomae_pretrain_args(config: dict[str, Any]) -> dict[str, Any]:
    c = _videomae_config(config)
    args = _videomae_encoder_args(c)
    hidden, heads = c["decoder_hidden_size"], c["decoder_num_attention_heads"]
    rgb = c["num_channels"] == 3  # Hugging Face undoes the ImageNet normalisation of RGB input
    return {
        **args,
        "decoder_depth": c["decoder_num_hidden_layers"],
        "decoder_heads": heads,
        "decoder_head_dim": _head_dim(hidden, heads, "decoder"),
        "decoder_mlp_ratio": c["decoder_intermediate_size"] / hidden,
        "encoder_norm": not c["use_mean_pooling"],
        "norm_pix_loss": c["norm_pix_loss"],
        # VideoMAEForPreTraining undoes transformers' IMAGENET_DEFAULT_MEAN/STD: ImageNet's.
        "pixel_mean": IMAGENET_MEAN if rgb else None,
        "pixel_std": IMAGENET_STD if rgb else None,
    }


def _videomae_layers(
    state: dict[str, torch.Tensor], hf_prefix: str, prefix: str
) -> dict[str, torch.Tensor]:
    """Pop the blocks under `hf_prefix` from `state`; return them under tubelet's `prefix`.

    query/key/value become one `attn.qkv`; the missing key bias is zero (see `VideoViT`). Older
    checkpoints keep the biases as `q_bias`/`v_bias`; both forms are read.
    """
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key in list(state):
        index, _, rest = key.removeprefix(f"{hf_prefix}.").partition(".")
        if key.startswith(f"{hf_prefix}.") and index.isdigit() and rest:
            layers.setdefault(int(index), {})[rest] = state.pop(key)
    out = {}
    for i, parts in sorted(layers.items()):
        attn = "attention.attention."
        names = [f"{attn}{n}.weight" for n in ("query", "key", "value")]
        if all(n in parts for n in names):
            out[f"{prefix}.{i}.attn.qkv.weight"] = torch.cat([parts.pop(n) for n in names])
        q_bias = parts.pop(f"{attn}query.bias", parts.pop(f"{attn}q_bias", None))
        v_bias = parts.pop(f"{attn}value.bias", parts.pop(f"{attn}v_bias", None))
        if q_bias is not None and v_bias is not None:
            qkv_bias = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
            out[f"{prefix}.{i}.attn.qkv.bias"] = qkv_bias
        for rest, value in parts.items():  # anything unknown stays visible to the strict load
            module, _, leaf = rest.rpartition(".")
            out[f"{prefix}.{i}.{_VIDEOMAE_BLOCK.get(module, module)}.{leaf}"] = value
    return out


def _convert_videomae(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face VideoMAE (classification or pre-training) keys -> tubelet keys."""
    state = dict(state)
    out = _videomae_layers(state, "videomae.encoder.layer", "encoder.blocks")
    out.update(_videomae_layers(state, "decoder.decoder_layers", "decoder_blocks"))
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if key in _VIDEOMAE_MODULES:
            out[_VIDEOMAE_MODULES[key]] = value
        else:
            out[f"{_VIDEOMAE_MODULES.get(module, module)}.{leaf}".lstrip(".")] = value
    return out


# transformers 5.17's VideoMAE wrote a `key.bias` (zeros at initialisation) that VideoMAE has not.
_KEY_BIAS_REASON = (
    "attention key bias: it adds the same constant q.b_k to every score of a query's row, and "
    "softmax ignores a per-row constant, so it is dropped whatever its value"
)


def _videomae_drop(key: str) -> str | None:
    return _KEY_BIAS_REASON if key.endswith(".attention.attention.key.bias") else None


VIT_VIDEO_MODELS = ("vit_b_16_video", "vit_s_16_video", "vit_t_16_video")
VIDEOMAE_PRETRAIN_MODELS = ("videomae_pretrain", "videomae_pretrain_s", "videomae_pretrain_t")
DROPS.update(dict.fromkeys(VIT_VIDEO_MODELS + VIDEOMAE_PRETRAIN_MODELS, _videomae_drop))
CONFIG_READERS.update(dict.fromkeys(VIT_VIDEO_MODELS, _vit_video_args))
CONFIG_READERS.update(dict.fromkeys(VIDEOMAE_PRETRAIN_MODELS, _videomae_pretrain_args))
CONVERTERS.update(dict.fromkeys(VIT_VIDEO_MODELS + VIDEOMAE_PRETRAIN_MODELS, _convert_videomae))


# -- V-JEPA 2: `VJEPA2Model` / `VJEPA2ForVideoClassification` -> `vjepa2_*` (tubelet.models.vjepa2)
# VJEPA2Config's defaults, for the keys a config.json leaves out.
_VJEPA2_DEFAULTS: dict[str, Any] = {
    "patch_size": 16, "crop_size": 256, "frames_per_clip": 64, "tubelet_size": 2,
    "hidden_size": 1024, "in_chans": 3, "num_attention_heads": 16, "num_hidden_layers": 24,
    "mlp_ratio": 4.0, "layer_norm_eps": 1e-6, "qkv_bias": True, "hidden_act": "gelu",
    "num_pooler_layers": 3,
}  # fmt: skip
_VJEPA2_BLOCK = {"attention.proj": "attn.proj"}  # norm1, norm2, mlp.fc1, mlp.fc2 keep their names
_VJEPA2_POOLER = {
    "cross_attention_layer.layer_norm1": "cross_block.norm1",
    "cross_attention_layer.layer_norm2": "cross_block.norm2",
    "cross_attention_layer.cross_attn.q_proj": "cross_block.attn.q",
    "cross_attention_layer.cross_attn.k_proj": "cross_block.attn.k",
    "cross_attention_layer.cross_attn.v_proj": "cross_block.attn.v",
    "cross_attention_layer.mlp": "cross_block.mlp",
}
_VJEPA2_MODULES = {
    "encoder.embeddings.patch_embeddings.proj": "patch_embed.proj",
    "encoder.layernorm": "norm",
    "classifier": "fc",
}


def _vjepa2_config(config: dict[str, Any]) -> dict[str, Any]:
    """A `VJEPA2Config` dict -> `vjepa2_*` builder arguments (the probe head is attentive)."""
    if config.get("model_type") != "vjepa2":
        raise ValueError(
            f"config.json describes a {config.get('model_type')!r} model, not V-JEPA 2; pass the "
            "folder of a VJEPA2Model or VJEPA2ForVideoClassification save_pretrained()"
        )
    c = {**_VJEPA2_DEFAULTS, **config}
    if c["hidden_act"] != "gelu":
        raise ValueError(f"config.json hidden_act={c['hidden_act']!r}: only 'gelu' is supported")
    args = {
        "width": int(c["hidden_size"]),
        "depth": int(c["num_hidden_layers"]),
        "num_heads": int(c["num_attention_heads"]),
        "mlp_ratio": float(c["mlp_ratio"]),
        "tubelet_size": int(c["tubelet_size"]),
        "patch_size": _square(c, "patch_size"),
        "in_channels": int(c["in_chans"]),
        "qkv_bias": bool(c["qkv_bias"]),
        "norm_eps": float(c["layer_norm_eps"]),
        "head": "attentive",
        "num_pooler_layers": int(c["num_pooler_layers"]),
    }
    if "VJEPA2ForVideoClassification" in (c.get("architectures") or []):
        labels = c.get("id2label")
        args["num_classes"] = len(labels) if labels else int(c.get("num_labels", 2))
    return args


def _merge_qkv(
    parts: dict[str, torch.Tensor], names: tuple[str, str, str], leaf: str
) -> torch.Tensor:
    return torch.cat([parts.pop(f"{n}.{leaf}") for n in names])


def _convert_vjepa2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face V-JEPA 2 keys -> tubelet keys: query/key/value (and the pooler's q/k/v_proj
    of its self-attention blocks) become one `qkv`; unknown keys stay for the strict load."""
    state = {k.removeprefix("vjepa2."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    groups = (
        ("encoder.layer.", "blocks.", ("attention.query", "attention.key", "attention.value")),
        ("pooler.self_attention_layers.", "pooler.blocks.",
         ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    )  # fmt: skip
    for hf_prefix, prefix, qkv in groups:
        layers: dict[str, dict[str, torch.Tensor]] = {}
        for key in [k for k in state if k.startswith(hf_prefix)]:
            index, _, rest = key.removeprefix(hf_prefix).partition(".")
            layers.setdefault(index, {})[rest] = state.pop(key)
        for index, parts in layers.items():
            for leaf in ("weight", "bias"):
                if all(f"{n}.{leaf}" in parts for n in qkv):
                    out[f"{prefix}{index}.attn.qkv.{leaf}"] = _merge_qkv(parts, qkv, leaf)
            for rest, value in parts.items():
                module, _, leaf = rest.rpartition(".")
                module = {"self_attn.out_proj": "attn.proj", "layer_norm1": "norm1",
                          "layer_norm2": "norm2", **_VJEPA2_BLOCK}.get(module, module)  # fmt: skip
                out[f"{prefix}{index}.{module}.{leaf}"] = value
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module.startswith("pooler."):
            inner = module.removeprefix("pooler.")
            for old, new in _VJEPA2_POOLER.items():
                if inner.startswith(old):
                    module = f"pooler.{new}{inner.removeprefix(old)}"
                    break
        out[f"{_VJEPA2_MODULES.get(module, module)}.{leaf}".lstrip(".")] = value
    return out


def _vjepa2_drop(key: str) -> str | None:
    if key.removeprefix("vjepa2.").startswith("predictor."):
        return "V-JEPA 2's predictor: used in pre-training only, not by the encoder"
    return None


def _vjepa2_preprocessing(config: dict[str, Any]) -> dict[str, Any]:
    """V-JEPA 2's clips: `frames_per_clip` frames, `crop_size` crops, ImageNet statistics
    (`VJEPA2VideoProcessor`)."""
    c = {**_VJEPA2_DEFAULTS, **config}
    return {"frames": int(c["frames_per_clip"]), "size": int(c["crop_size"]),
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}  # fmt: skip


VJEPA2_MODELS = ("vjepa2_vitl", "vjepa2_vith", "vjepa2_vitg")
PREPROCESSING.update(dict.fromkeys(VJEPA2_MODELS, _vjepa2_preprocessing))
CONFIG_READERS.update(dict.fromkeys(VJEPA2_MODELS, _vjepa2_config))
CONVERTERS.update(dict.fromkeys(VJEPA2_MODELS, _convert_vjepa2))
DROPS.update(dict.fromkeys(VJEPA2_MODELS, _vjepa2_drop))
HEAD_PREFIXES.update(dict.fromkeys(VJEPA2_MODELS, ("pooler.", "fc.")))


# -- VideoPrism: `VideoPrismVisionModel` / `VideoPrismForVideoClassification` -> `videoprism_b/l`,
# `VideoPrismClipModel` -> `videoprism_lvt_b/l` (tubelet.models.videoprism) ----------------------
# VideoPrismVisionConfig's and VideoPrismTextConfig's defaults, for keys a config.json leaves out.
_PRISM_VISION_DEFAULTS: dict[str, Any] = {
    "image_size": 288, "num_frames": 16, "tubelet_size": [1, 18, 18], "num_channels": 3,
    "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu_python", "layer_norm_eps": 1e-6, "qkv_bias": True,
    "num_spatial_layers": 12, "num_temporal_layers": 4, "attn_logit_softcapping": 50.0,
    "num_auxiliary_layers": 2, "apply_l2norm": True,
}  # fmt: skip
_PRISM_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 64, "hidden_act": "relu",
    "layer_norm_eps": 1e-6, "qkv_bias": True, "attn_logit_softcapping": 50.0,
    "apply_l2norm": True,
}  # fmt: skip
# Hugging Face module prefix -> tubelet's, most specific first (blocks are handled apart).
_PRISM_MODULES = (
    ("video_model.vision_model.", "encoder."),
    ("vision_model.", "encoder."),
    ("spatial_embeddings.patch_embeddings.projection", "patch_embed"),
    ("spatial_embeddings.position_embeddings", "spatial_pos"),
    ("temporal_embeddings.position_embeddings", "temporal_pos"),
    ("layernorm1", "spatial_norm"),
    ("layernorm2", "temporal_norm"),
    ("spatial_layers.", "spatial_blocks."),
    ("temporal_layers.", "temporal_blocks."),
    ("video_model.auxiliary_layers.", "aux_blocks."),
    ("video_model.head_layernorm", "pooler.norm"),
    ("video_model.head.", "pooler."),
    ("head_layernorm", "pooler.norm"),
    ("head.", "pooler."),
    ("text_model.embeddings.token_embedding", "text.token_embed"),
    ("text_model.embeddings.cls_emb", "text.cls_emb"),
    ("text_model.layers.", "text.blocks."),
    ("text_model.layernorm", "text.norm"),
    ("classifier", "fc"),
)
_PRISM_LEAVES = {
    "attention.q_proj": "attn.q",
    "attention.k_proj": "attn.k",
    "attention.v_proj": "attn.v",
    "attention.o_proj": "attn.proj",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "pooling_attention_query": "query",
    "q_proj": "attn.q",
    "k_proj": "attn.k",
    "v_proj": "attn.v",
    "o_proj": "attn.proj",
}


def _prism_vision_args(c: dict[str, Any]) -> dict[str, Any]:
    c = {**_PRISM_VISION_DEFAULTS, **c}
    tube = list(c["tubelet_size"])
    if len(tube) != 3 or tube[0] != 1 or tube[1] != tube[2]:
        raise ValueError(
            f"VideoPrism config tubelet_size={tube}: only one-frame square patches [1, p, p] "
            "are supported"
        )
    if c["hidden_act"] not in ("gelu", "gelu_python"):
        raise ValueError(f"VideoPrism config hidden_act={c['hidden_act']!r}: only exact GELU")
    return {
        "width": int(c["hidden_size"]),
        "num_heads": int(c["num_attention_heads"]),
        "mlp_dim": int(c["intermediate_size"]),
        "spatial_depth": int(c["num_spatial_layers"]),
        "temporal_depth": int(c["num_temporal_layers"]),
        "patch_size": int(tube[1]),
        "image_size": _square(c, "image_size"),
        "num_frames": int(c["num_frames"]),
        "in_chans": int(c["num_channels"]),
        "qkv_bias": bool(c["qkv_bias"]),
        "norm_eps": float(c["layer_norm_eps"]),
        "softcap": c["attn_logit_softcapping"],
        "head": "attentive",
    }


def _prism_config(config: dict[str, Any]) -> dict[str, Any]:
    """A `VideoPrismVisionConfig` dict -> `videoprism_b` / `videoprism_l` builder arguments."""
    if config.get("model_type") != "videoprism_vision_model":
        raise ValueError(
            f"config.json describes a {config.get('model_type')!r} model, not a VideoPrism video "
            "encoder; pass the folder of a VideoPrismVisionModel or "
            "VideoPrismForVideoClassification save_pretrained() (a VideoPrismClipModel folder "
            "goes to videoprism_lvt_b / videoprism_lvt_l)"
        )
    args = _prism_vision_args(config)
    if "VideoPrismForVideoClassification" in (config.get("architectures") or []):
        labels = config.get("id2label")
        args["num_classes"] = len(labels) if labels else int(config.get("num_labels", 2))
    return args


def _prism_lvt_config(config: dict[str, Any]) -> dict[str, Any]:
    """A `VideoPrismConfig` dict (video and text) -> `videoprism_lvt_*` builder arguments."""
    if config.get("model_type") != "videoprism":
        raise ValueError(
            f"config.json describes a {config.get('model_type')!r} model, not a VideoPrism "
            "video-text model; pass the folder of a VideoPrismClipModel save_pretrained()"
        )
    vision = {**_PRISM_VISION_DEFAULTS, **(config.get("vision_config") or {})}
    text = {**_PRISM_TEXT_DEFAULTS, **(config.get("text_config") or {})}
    same = ("hidden_size", "num_attention_heads", "intermediate_size", "layer_norm_eps")
    differ = [k for k in same if text[k] != vision[k]]
    differ += [k for k in ("attn_logit_softcapping", "qkv_bias") if text[k] != vision[k]]
    if differ:
        raise ValueError(
            f"VideoPrism text and vision configs differ in {', '.join(differ)}; tubelet's "
            "video-text model gives both towers one width, head count, MLP width and norm eps"
        )
    if text["hidden_act"] != "relu":
        raise ValueError(f"VideoPrism text config hidden_act={text['hidden_act']!r}: only 'relu'")
    if not (vision["apply_l2norm"] and text["apply_l2norm"]):
        raise ValueError("VideoPrism config with apply_l2norm=false is not supported")
    return {
        **_prism_vision_args(vision),
        "aux_depth": int(vision["num_auxiliary_layers"]),
        "text_depth": int(text["num_hidden_layers"]),
        "vocab_size": int(text["vocab_size"]),
        "max_text_len": int(text["max_position_embeddings"]),
    }


def _prism_key(key: str) -> str:
    """One VideoPrism key as tubelet's (q/k/v of blocks are merged by `_convert_prism`)."""
    head, rest = "", key
    while match := next(((o, n) for o, n in _PRISM_MODULES if rest.startswith(o)), None):
        head, rest = head + match[1], rest.removeprefix(match[0])  # renamed prefix, the rest
    module, _, leaf = rest.rpartition(".")
    leaf = _PRISM_LEAVES.get(leaf, leaf) if not module else leaf  # a parameter of the head itself
    index, _, inner = module.partition(".")
    if index.isdigit():  # inside a block: `N.attention.q_proj` and so on
        module = f"{index}.{_PRISM_LEAVES.get(inner, inner)}"
    else:
        module = _PRISM_LEAVES.get(module, module)
    return ".".join(part.strip(".") for part in (head, module, leaf) if part.strip("."))


def _convert_prism(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face VideoPrism keys -> tubelet keys: a block's q/k/v_proj become one `attn.qkv`;
    the patch Conv3d of one frame becomes a Conv2d."""
    if not any(k.startswith(("vision_model.", "video_model.")) for k in state):
        state = {f"vision_model.{k}": v for k, v in state.items()}  # a bare VideoPrismVisionModel
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        out[_prism_key(key)] = value
    for key in [k for k in out if ".attn.q." in k and not k.startswith("pooler.")]:
        prefix, leaf = key.split(".attn.q.")
        parts = [out.pop(f"{prefix}.attn.{p}.{leaf}") for p in "qkv"]
        out[f"{prefix}.attn.qkv.{leaf}"] = torch.cat(parts)
    weight = "encoder.patch_embed.weight"
    if weight in out and out[weight].ndim == 5:
        out[weight] = out[weight].squeeze(2)  # (D, C, 1, p, p) -> (D, C, p, p)
    return out


def _prism_drop(key: str) -> str | None:
    if key.startswith("text_model.embeddings.position_"):
        return "the text tower's fixed sinusoid table and position ids: recomputed, not learned"
    return None


def _prism_preprocessing(config: dict[str, Any]) -> dict[str, Any]:
    """VideoPrism's clips: `num_frames` frames of `image_size` pixels in [0, 1] (no mean/std)."""
    c = {**_PRISM_VISION_DEFAULTS, **config.get("vision_config", config)}
    return {"frames": int(c["num_frames"]), "size": _square(c, "image_size"),
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # fmt: skip


PRISM_MODELS = ("videoprism_b", "videoprism_l")
PRISM_LVT_MODELS = ("videoprism_lvt_b", "videoprism_lvt_l")
CONFIG_READERS.update(dict.fromkeys(PRISM_MODELS, _prism_config))
CONFIG_READERS.update(dict.fromkeys(PRISM_LVT_MODELS, _prism_lvt_config))
CONVERTERS.update(dict.fromkeys(PRISM_MODELS + PRISM_LVT_MODELS, _convert_prism))
DROPS.update(dict.fromkeys(PRISM_LVT_MODELS, _prism_drop))
PREPROCESSING.update(dict.fromkeys(PRISM_MODELS + PRISM_LVT_MODELS, _prism_preprocessing))
HEAD_PREFIXES.update(dict.fromkeys(PRISM_MODELS, ("pooler.", "fc.")))
HEAD_PREFIXES.update(dict.fromkeys(PRISM_LVT_MODELS, ("fc.",)))
