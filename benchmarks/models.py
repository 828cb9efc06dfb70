"""Model benchmark: each tubelet model against the peer implementation of the same architecture.

In one process, on the same input, in the same dtype and memory format, for every model with a
peer (torchvision's video models, PyTorchVideo's ResNets), it measures a training step:

- timed: forward, cross-entropy loss on fixed labels, backward (gradients are set to None before
  each step, untimed; no optimizer step, so every step does the same work on the same weights);
- memory: on CUDA the peak of `torch.cuda.max_memory_allocated` over one step (reset per model);
  on CPU the bytes of the tensors autograd saves for backward (unique storages, recorded with
  `torch.autograd.graph.saved_tensors_hooks`, parameters left out) plus parameters and gradients.

Both models get the same weights: the peer is built with random (seeded) weights and random
BatchNorm statistics, its state dict is imported into tubelet (`create_model(checkpoint=...,
checkpoint_format=...)`, or a benchmark-local key map where tubelet has no importer), and their
float32 eval-mode logits on the benchmark input are compared before anything is timed
(`max_abs_diff`), so the benchmark cannot time two different computations without saying so.

`--counts` adds the CPU proxies of a GPU profile, from one more step of each implementation seen at
the dispatcher (`TorchDispatchMode`, forward and backward): bytes written by layout copies
(`copy_`, `clone`, which `.contiguous()` and reshapes of strided tensors call), bytes written by
dtype casts (`_to_copy`, autocast's), elementwise kernels, the bytes they write and how many write
a non-contiguous (transposed) output, and matrix
products (mm, bmm, addmm, baddbmm, attention, convolution) with the number given a float32 input
(zero under bf16 autocast is the goal; attention backward's float32 logsumexp is not counted).

Each model runs `--warmup` untimed steps per implementation, then `--repeats` timed rounds; a round
runs both implementations, in an order that alternates between rounds so that a change in machine
load does not always hit the same one. Throughput is batch / median step time.

    python benchmarks/models.py --out results.json                     # every model, 2x3x8x64x64
    python benchmarks/models.py --quick --out quick.json               # r3d_18, tiny, 1 repeat
    python benchmarks/models.py --models slow_r50 --device cuda --dtype bf16 --batch 8 --frames 32 \
        --size 224 --channels-last --out slow.json
    python benchmarks/models.py --models vit_b_16_video swin3d_t --dtype bf16 --counts --no-timing \
        --out counts.json                                             # the CPU proxies alone
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from tubelet.convert import load_state_dict_strict
from tubelet.convert.pytorchvideo import from_pytorchvideo
from tubelet.engine.trainer import compile_model
from tubelet.models import create_model

NUM_CLASSES = 400
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# --- peers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The benchmark input: (batch, 3, frames, size, size)."""

    batch: int
    frames: int
    size: int


@dataclass
class Pair:
    """A tubelet model and its peer with the same weights. `peer_input` turns the shared clip
    (B, 3, T, H, W) into what the peer's forward takes (timed with the peer's step)."""

    tubelet: nn.Module
    peer: nn.Module
    peer_input: Callable[[Tensor], Any]
    peer_name: str
    weights: str  # how the peer's weights reached tubelet


@dataclass(frozen=True)
class PeerSpec:
    """How to build one model's peer, and how its weights reach tubelet."""

    peer_name: str
    build: Callable[[Shape], Pair]


def randomise(peer: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affines and running statistics on top of the peer's random init, so no
    layer is an identity that would hide a wrong mapping from the output check."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in peer.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return peer


def _imported(name: str, peer: nn.Module, fmt: str, **kwargs: Any) -> nn.Module:
    """tubelet `name` built from the peer's state dict through the public importer."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "peer.pth"
        torch.save(peer.state_dict(), path)
        return create_model(
            name, num_classes=NUM_CLASSES, checkpoint=str(path), checkpoint_format=fmt, **kwargs
        )


def _torchvision(name: str) -> PeerSpec:
    def build(shape: Shape) -> Pair:
        import torchvision.models.video as tvv

        torch.manual_seed(0)
        peer = randomise(getattr(tvv, name)(num_classes=NUM_CLASSES))
        if name == "s3d":
            # torchvision's S3D pools a fixed 2x7x7 window (stride 1) before its 1x1x1 conv
            # classifier, which needs 16+ frames of 224+ px; tubelet cuts the window to the feature
            # map (its test_s3d); give the peer the same cut window so small clips run.
            with torch.no_grad():
                t, h, w = peer.features(torch.zeros(1, 3, shape.frames, shape.size, shape.size))[
                    0, 0
                ].shape  # (T', H', W') of the feature map
            peer.avgpool = nn.AvgPool3d((min(2, t), min(7, h), min(7, w)), stride=1)
        return Pair(
            _imported(name, peer, "torchvision"),
            peer,
            lambda x: x,
            f"torchvision.models.video.{name}",
            "torchvision state dict -> create_model(checkpoint_format='torchvision')",
        )

    return PeerSpec(f"torchvision {name}", build)


def _import_pytorchvideo() -> Any:
    """`pytorchvideo.models` (0.1.5, a test dependency). No torchvision-compat shim is needed:
    only `pytorchvideo.transforms` imports the `functional_tensor` module torchvision 0.17
    removed, and the model builders do not import the transforms."""
    import pytorchvideo.models as ptv_models

    return ptv_models


def _head_pool(shape: Shape, time_div: int) -> tuple[int, int, int]:
    """PyTorchVideo's head pools a fixed window (default 4x7x7 for 8x224x224 clips); cut it to
    the feature map of this input (T / time_div, H/32, W/32), so it is the global mean tubelet's
    head takes."""
    return (max(1, shape.frames // time_div), max(1, shape.size // 32), max(1, shape.size // 32))


def _slow_frames(x: Tensor, alpha: int) -> list[Tensor]:
    """PyTorchVideo's `PackPathway`: [Slow input of T / alpha frames spread over the clip, x]."""
    num = x.shape[2]
    idx = torch.linspace(0, num - 1, num // alpha).long().to(x.device)
    return [x.index_select(2, idx), x]


def _slowfast(shape: Shape) -> Pair:
    ptv = _import_pytorchvideo()
    alpha = 4
    torch.manual_seed(0)
    peer = ptv.slowfast.create_slowfast(  # hub `slowfast_r50`: the defaults are its 8x8 recipe
        model_num_class=NUM_CLASSES,
        head_pool_kernel_sizes=(_head_pool(shape, alpha), _head_pool(shape, 1)),
    )
    return Pair(
        _imported("slowfast_r50", randomise(peer), "pytorchvideo", alpha=alpha),
        peer,
        lambda x: _slow_frames(x, alpha),
        "pytorchvideo create_slowfast (PackPathway in the timed step)",
        "pytorchvideo state dict -> create_model(checkpoint_format='pytorchvideo')",
    )


def _slow(shape: Shape) -> Pair:
    ptv = _import_pytorchvideo()
    torch.manual_seed(0)
    peer = ptv.resnet.create_resnet(  # hub `slow_r50`: 1x7x7 stem, the rest create_resnet's
        model_num_class=NUM_CLASSES,
        stem_conv_kernel_size=(1, 7, 7),
        head_pool_kernel_size=_head_pool(shape, 1),
    )
    return Pair(
        _imported("slow_r50", randomise(peer), "pytorchvideo"),
        peer,
        lambda x: x,
        "pytorchvideo create_resnet (hub slow_r50 recipe)",
        "pytorchvideo state dict -> create_model(checkpoint_format='pytorchvideo')",
    )


def _i3d(shape: Shape) -> Pair:
    ptv = _import_pytorchvideo()
    torch.manual_seed(0)
    # hub `i3d_r50`: 5x7x7 stem, 2x1x1 max-pool after stage 1, conv_a temporal kernels per block
    # 3 / (3, 1) / (3, 1) / (1, 3) repeating -- tubelet's `i3d.STAGES` and stem.
    peer = ptv.resnet.create_resnet(
        model_num_class=NUM_CLASSES,
        stem_conv_kernel_size=(5, 7, 7),
        stage1_pool=nn.MaxPool3d,
        stage_conv_a_kernel_size=(
            (3, 1, 1),
            [(3, 1, 1), (1, 1, 1)],
            [(3, 1, 1), (1, 1, 1)],
            [(1, 1, 1), (3, 1, 1)],
        ),
        head_pool_kernel_size=_head_pool(shape, 2),
    )
    randomise(peer)
    tubelet = create_model("i3d_r50", num_classes=NUM_CLASSES)
    state = from_pytorchvideo("i3d_r50", peer.state_dict())
    load_state_dict_strict(tubelet, state, "pytorchvideo i3d_r50")
    return Pair(
        tubelet,
        peer,
        lambda x: x,
        "pytorchvideo create_resnet (hub i3d_r50 recipe)",
        "pytorchvideo state dict -> tubelet.convert (pytorchvideo) -> strict load",
    )


class _HFLogits(nn.Module):
    """A Hugging Face classifier as a module returning its logits tensor (no extra parameters)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).logits


# Hugging Face TimesformerConfig sizes of tubelet's variants: (hidden, heads, MLP), 12 blocks.
_TIMESFORMER_SIZES = {"timesformer_base": (768, 12, 3072), "timesformer_small": (384, 6, 1536)}


def _timesformer(name: str) -> PeerSpec:
    """Hugging Face `TimesformerForVideoClassification` (its own eager attention, divided
    space-time) sized for the benchmark clip, imported through its save_pretrained folder."""

    def build(shape: Shape) -> Pair:
        from transformers import TimesformerConfig, TimesformerForVideoClassification

        hidden, heads, mlp = _TIMESFORMER_SIZES[name]
        config = TimesformerConfig(
            image_size=shape.size,
            num_frames=shape.frames,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=mlp,
            num_labels=NUM_CLASSES,
        )
        torch.manual_seed(0)
        peer = TimesformerForVideoClassification(config)
        with torch.no_grad():  # HF starts it at zero; random, so the output check covers it
            peer.timesformer.embeddings.time_embeddings.normal_(0.0, 0.02)
        with tempfile.TemporaryDirectory() as folder:
            peer.save_pretrained(folder)
            tubelet = create_model(name, checkpoint=folder, checkpoint_format="transformers")
        return Pair(
            tubelet,
            _HFLogits(peer),
            lambda x: x.transpose(1, 2),  # HF takes (B, T, C, H, W)
            "transformers TimesformerForVideoClassification",
            "save_pretrained folder -> create_model(checkpoint_format='transformers')",
        )

    return PeerSpec(f"transformers {name}", build)


# Hugging Face VideoMAEConfig sizes of tubelet's video ViTs: (hidden, heads, MLP), 12 blocks.
_VIDEOMAE_SIZES = {"vit_b_16_video": (768, 12, 3072), "vit_s_16_video": (384, 6, 1536)}


def _videomae(name: str) -> PeerSpec:
    """Hugging Face `VideoMAEForVideoClassification` (mean pooling, 2x16x16 tubelets) sized for the
    benchmark clip, imported through its save_pretrained folder."""

    def build(shape: Shape) -> Pair:
        from transformers import VideoMAEConfig, VideoMAEForVideoClassification

        hidden, heads, mlp = _VIDEOMAE_SIZES[name]
        config = VideoMAEConfig(
            image_size=shape.size, num_frames=shape.frames, hidden_size=hidden,
            num_attention_heads=heads, intermediate_size=mlp, num_labels=NUM_CLASSES,
        )  # fmt: skip
        torch.manual_seed(0)
        peer = VideoMAEForVideoClassification(config)
        with tempfile.TemporaryDirectory() as folder:
            peer.save_pretrained(folder)
            tubelet = create_model(name, checkpoint=folder, checkpoint_format="transformers")
        return Pair(
            tubelet,
            _HFLogits(peer),
            lambda x: x.transpose(1, 2),  # HF takes (B, T, C, H, W)
            "transformers VideoMAEForVideoClassification",
            "save_pretrained folder -> create_model(checkpoint_format='transformers')",
        )

    return PeerSpec(f"transformers {name}", build)


PEERS: dict[str, PeerSpec] = {
    "r3d_18": _torchvision("r3d_18"),
    "mc3_18": _torchvision("mc3_18"),
    "r2plus1d_18": _torchvision("r2plus1d_18"),
    "s3d": _torchvision("s3d"),
    "swin3d_t": _torchvision("swin3d_t"),
    "slow_r50": PeerSpec("pytorchvideo slow_r50", _slow),
    "i3d_r50": PeerSpec("pytorchvideo i3d_r50", _i3d),
    "slowfast_r50": PeerSpec("pytorchvideo slowfast_r50", _slowfast),
    "timesformer_base": _timesformer("timesformer_base"),
    "timesformer_small": _timesformer("timesformer_small"),
    "vit_b_16_video": _videomae("vit_b_16_video"),
    "vit_s_16_video": _videomae("vit_s_16_video"),
}
QUICK_MODELS = ("r3d_18",)


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Step:
    """One training step of one implementation on the shared clip and labels."""

    model: nn.Module
    make_input: Callable[[Tensor], Any]
    clip: Tensor
    labels: Tensor
    device: torch.device
    dtype: torch.dtype
    optimizer: torch.optim.Optimizer | None = None

    def autocast(self) -> Any:
        """`torch.autocast` to `dtype` for bf16; no context for fp32."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def clear_grads(self) -> None:
        """Set every gradient to None (the untimed part of a step)."""
        for p in self.model.parameters():
            p.grad = None
        sync(self.device)

    def run(self) -> float:
        """Seconds of forward + loss + backward [+ optimizer step] (gradients cleared before,
        untimed)."""
        self.clear_grads()
        start = time.perf_counter()
        with self.autocast():
            logits = self.model(self.make_input(self.clip))
            loss = F.cross_entropy(logits.float(), self.labels)
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
        sync(self.device)
        return time.perf_counter() - start


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer reads the work's end (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def saved_storages(skip: set[int]) -> Iterator[dict[int, int]]:
    """{storage data_ptr: nbytes} of every tensor autograd saves for backward inside the block,
    each storage once, leaving out the storages in `skip` (the parameters)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def measure_memory(step: Step) -> dict[str, int]:
    """Memory of one training step: CUDA peak, or on CPU saved activations + params + grads."""
    params = list(step.model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    if step.device.type == "cuda":
        step.clear_grads()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(step.device)
        step.run()
        return {
            "peak_allocated_bytes": torch.cuda.max_memory_allocated(step.device),
            "param_bytes": param_bytes,
        }
    step.clear_grads()
    skip = {p.untyped_storage().data_ptr() for p in params}
    with saved_storages(skip) as seen, step.autocast():
        logits = step.model(step.make_input(step.clip))
        loss = F.cross_entropy(logits.float(), step.labels)
    loss.backward()
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    saved = sum(seen.values())
    return {
        "saved_activation_bytes": saved,
        "param_bytes": param_bytes,
        "grad_bytes": grad_bytes,
        "total_bytes": saved + param_bytes + grad_bytes,
    }


def memory_total(memory: dict[str, int]) -> int:
    """The figure `memory_ratio` compares: the CUDA peak, or on CPU saved + params + grads."""
    return memory.get("peak_allocated_bytes", memory.get("total_bytes", 0))


_aten = torch.ops.aten
_LAYOUT_COPIES = {_aten.copy_, _aten.clone}
_MATMULS = {
    _aten.mm, _aten.bmm, _aten.addmm, _aten.baddbmm, _aten.convolution, _aten.convolution_backward
}  # fmt: skip


def _bytes(value: Any) -> int:
    return value.numel() * value.element_size() if isinstance(value, Tensor) else 0


class OpCounts(TorchDispatchMode):
    """What one step asks of the device, counted op by op at the dispatcher (see the docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.totals: Counter[str] = Counter()
        self.float32_matmul_ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if packet in _LAYOUT_COPIES:
            self.totals["copy_ops"] += 1
            self.totals["copy_bytes"] += _bytes(args[0] if packet is _aten.copy_ else out)
        elif packet is _aten._to_copy:
            self.totals["cast_ops"] += 1
            self.totals["cast_bytes"] += _bytes(out)
        elif packet in _MATMULS or "attention" in packet.__name__:
            self.totals["matmuls"] += 1
            named = zip(func._schema.arguments, args, strict=False)
            values = [v for a, v in named if a.name != "logsumexp"]
            values += [v for k, v in kwargs.items() if k != "logsumexp"]
            if any(isinstance(v, Tensor) and v.dtype == torch.float32 for v in values):
                self.totals["float32_matmuls"] += 1
                self.float32_matmul_ops[packet.__name__] += 1
        elif torch.Tag.pointwise in func.tags:
            outs = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if _bytes(t)]
            self.totals["elementwise_ops"] += 1
            self.totals["elementwise_bytes"] += sum(_bytes(t) for t in outs)
            # Written in a transposed or gapped layout: slower kernels on a GPU.
            self.totals["elementwise_strided_ops"] += any(not t.is_contiguous() for t in outs)
        return out

    def as_dict(self) -> dict[str, Any]:
        keys = ("copy_ops", "copy_bytes", "cast_ops", "cast_bytes", "elementwise_ops",
                "elementwise_bytes", "elementwise_strided_ops", "matmuls", "float32_matmuls")  # fmt: skip
        return {
            **{k: self.totals[k] for k in keys},
            "float32_matmul_ops": dict(self.float32_matmul_ops),
        }


def count_ops(step: Step) -> dict[str, Any]:
    """`OpCounts` of one training step (forward, loss, backward)."""
    step.clear_grads()
    with OpCounts() as counts:
        with step.autocast():
            loss = F.cross_entropy(step.model(step.make_input(step.clip)).float(), step.labels)
        loss.backward()
    return counts.as_dict()


def compare_outputs(pair: Pair, clip: Tensor) -> dict[str, float]:
    """float32 eval-mode logits of both on the shared clip (before any training step)."""
    pair.tubelet.eval()
    pair.peer.eval()
    with torch.no_grad():
        ours = pair.tubelet(clip).float()
        theirs = pair.peer(pair.peer_input(clip)).float()
    if ours.shape != theirs.shape:
        raise ValueError(f"logit shapes differ: tubelet {ours.shape}, peer {theirs.shape}")
    return {
        "max_abs_diff": (ours - theirs).abs().max().item(),
        "logit_scale": theirs.abs().max().item(),
    }


def run_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build, check and measure one model pair; returns the model's JSON record."""
    shape = Shape(args.batch, args.frames, args.size)
    spec = PEERS[name]
    pair = spec.build(shape)
    generator = torch.Generator().manual_seed(0)
    clip = torch.randn(shape.batch, 3, shape.frames, shape.size, shape.size, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (shape.batch,), generator=generator).to(device)
    check = compare_outputs(pair, clip)  # on CPU in float32, before the models move
    memory_format = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    clip = clip.to(device).contiguous(memory_format=memory_format)
    steps = {}
    for impl, model, make_input in (
        ("tubelet", pair.tubelet, lambda x: x),
        ("peer", pair.peer, pair.peer_input),
    ):
        model.to(device=device, memory_format=memory_format).train()
        optimizer = None
        if args.adamw:  # fused on CUDA (one kernel for every parameter), as a trainer would
            optimizer = torch.optim.AdamW(
                model.parameters(), lr=1e-5, fused=True if device.type == "cuda" else None
            )
        steps[impl] = Step(model, make_input, clip, labels, device, DTYPES[args.dtype], optimizer)
    params = {impl: sum(p.numel() for p in s.model.parameters()) for impl, s in steps.items()}
    record: dict[str, Any] = {
        "model": name,
        "peer": pair.peer_name,
        "weights": pair.weights,
        "params": params,
        "same_param_count": params["tubelet"] == params["peer"],
        "output_check": check,
        "outputs_agree": check["max_abs_diff"] <= 1e-4 * max(1.0, check["logit_scale"]),
    }
    if args.counts:
        # Before any compiled step: the counts are of the eager ops.
        record["counts"] = {impl: count_ops(step) for impl, step in steps.items()}
    if not args.timing:
        return record
    if args.compile:
        compile_model(steps["tubelet"].model)  # in place, as `tubelet train --compile`
    for step in steps.values():
        for _ in range(args.warmup):
            step.run()
    times: dict[str, list[float]] = {"tubelet": [], "peer": []}
    for round_index in range(args.repeats):
        order = ("tubelet", "peer") if round_index % 2 == 0 else ("peer", "tubelet")
        for impl in order:
            times[impl].append(steps[impl].run())
    memory = {impl: measure_memory(step) for impl, step in steps.items()}
    clips_per_s = {impl: shape.batch / statistics.median(ts) for impl, ts in times.items()}
    record.update(
        seconds=times,
        clips_per_s=clips_per_s,
        speed_ratio=clips_per_s["tubelet"] / clips_per_s["peer"],
        memory=memory,
        memory_ratio=memory_total(memory["tubelet"]) / memory_total(memory["peer"]),
    )
    if device.type == "cpu":
        record["activation_ratio"] = (
            memory["tubelet"]["saved_activation_bytes"] / memory["peer"]["saved_activation_bytes"]
        )
    return record


# --- report ------------------------------------------------------------------------------------


def print_counts(results: list[dict[str, Any]], console: Console) -> None:
    table = Table(
        title="one training step at the dispatcher: MB written by layout copies and by dtype "
        "casts, elementwise kernels (MB written), matmuls given a float32 input"
    )
    for column in (
        "model", "impl", "copies MB", "casts MB", "elementwise", "strided", "float32 matmuls"
    ):  # fmt: skip
        table.add_column(column, justify="left" if column in ("model", "impl") else "right")
    for r in results:
        for impl, c in r.get("counts", {}).items():
            table.add_row(
                r["model"], impl, f"{c['copy_bytes'] / 1e6:.1f} ({c['copy_ops']})",
                f"{c['cast_bytes'] / 1e6:.1f} ({c['cast_ops']})",
                f"{c['elementwise_ops']} ({c['elementwise_bytes'] / 1e6:.1f})",
                str(c["elementwise_strided_ops"]), f"{c['float32_matmuls']} / {c['matmuls']}",
            )  # fmt: skip
    console.print(table)


def print_table(results: list[dict[str, Any]], device: str, console: Console) -> None:
    mem = "peak MiB" if device == "cuda" else "saved+params+grads MiB"
    table = Table(
        title=f"training step (forward + CE + backward): clips/s, {mem}; speed = tubelet / peer "
        "clips/s (>= 1 good), memory = tubelet / peer (<= 1 good)"
    )
    for column in ("model", "peer", "tubelet clips/s", "peer clips/s", "speed"):
        table.add_column(column, justify="left" if column in ("model", "peer") else "right")
    for column in ("tubelet mem", "peer mem", "memory", "max |diff|"):
        table.add_column(column, justify="right")
    for r in results:
        mib = {impl: memory_total(m) / 2**20 for impl, m in r["memory"].items()}
        diff = f"{r['output_check']['max_abs_diff']:.1e}"
        table.add_row(
            r["model"], r["peer"].split(" (")[0],
            f"{r['clips_per_s']['tubelet']:.2f}", f"{r['clips_per_s']['peer']:.2f}",
            f"{r['speed_ratio']:.2f}", f"{mib['tubelet']:.1f}", f"{mib['peer']:.1f}",
            f"{r['memory_ratio']:.3f}", diff if r["outputs_agree"] else f"[red]{diff}[/red]",
        )  # fmt: skip
    console.print(table)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal, model by model: no tubelet model slower or heavier than its peer."""
    differ = [
        f"{r['model']}: {r['output_check']['max_abs_diff']:.2e}"
        for r in results
        if not r["outputs_agree"]
    ]
    summary: dict[str, Any] = {"outputs_differ": differ}
    if any("counts" in r for r in results):
        summary["float32_matmuls"] = {
            r["model"]: r["counts"]["tubelet"]["float32_matmuls"] for r in results if "counts" in r
        }
    results = [r for r in results if "speed_ratio" in r]
    if not results:
        return summary
    slower = [f"{r['model']}: {r['speed_ratio']:.2f}" for r in results if r["speed_ratio"] < 1]
    heavier = [f"{r['model']}: {r['memory_ratio']:.3f}" for r in results if r["memory_ratio"] > 1]
    return {
        "never_slower": not slower,
        "slower_than_peer": slower,
        "never_heavier": not heavier,
        "heavier_than_peer": heavier,
        **summary,
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for module in ("torch", "torchvision", "pytorchvideo", "transformers", "tubelet"):
        try:
            found[module] = str(__import__(module).__version__)
        except Exception as error:
            found[module] = f"unavailable ({type(error).__name__})"
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", choices=sorted(PEERS), default=None, help="default: all with peers"
    )
    parser.add_argument("--batch", type=int, default=None, help="clips per step (2; 1 quick)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (8; 4 quick)")
    parser.add_argument("--size", type=int, default=None, help="height = width (64; 32 quick)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds (default 3; 1 quick)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="bf16: autocast")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d for both")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile tubelet's model (the peer stays eager)",
    )
    parser.add_argument(
        "--adamw", action="store_true", help="an AdamW step in every timed step (fused on CUDA)"
    )
    parser.add_argument("--counts", action="store_true", help="the dispatcher counts (see above)")
    parser.add_argument(
        "--no-timing", dest="timing", action="store_false", help="skip timing and memory"
    )
    parser.add_argument("--out", type=Path, default=Path("results.json"), help="JSON results")
    parser.add_argument("--quick", action="store_true", help="r3d_18 on a tiny clip (smoke run)")
    args = parser.parse_args(argv)
    defaults = (1, 4, 32, 1) if args.quick else (2, 8, 64, 3)
    for key, value in zip(("batch", "frames", "size", "repeats"), defaults, strict=True):
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.models is None:
        args.models = list(QUICK_MODELS if args.quick else PEERS)
    if min(args.batch, args.frames, args.size, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch, --frames, --size and --repeats must be >= 1, --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.compile and args.warmup < 1:
        parser.error("--compile needs --warmup >= 1 (compilation stays out of the timed steps)")
    if not args.timing and not args.counts:
        parser.error("--no-timing leaves nothing to measure without --counts")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 132))
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "meta": {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg(),
            "input": [args.batch, 3, args.frames, args.size, args.size],
            "dtype": args.dtype,
            "channels_last": args.channels_last,
            "compile": args.compile,
            "adamw": args.adamw,
            "counts": args.counts,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "timed": "median over repeats of one step: forward, cross-entropy, backward "
            "[+ AdamW step with --adamw] (grads set to None before, untimed)",
            "memory": "CUDA: max_memory_allocated over one step (params, grads, activations); "
            "CPU: unique storages saved for backward (parameters left out) + params + grads",
            "output_check": "float32 eval-mode logits on the benchmark clip, before timing",
            "versions": versions(),
        },
    }
    results = []
    for name in args.models:
        console.print(f"{name} vs {PEERS[name].peer_name}")
        results.append(run_model(name, args, device))
    report["results"] = results
    report["summary"] = summarize(results)
    report["meta"]["load_average_end"] = os.getloadavg()
    if args.timing:
        print_table(results, args.device, console)
    if args.counts:
        print_counts(results, console)
    console.print_json(data=report["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
