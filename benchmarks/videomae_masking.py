"""What masking saves the VideoMAE encoder: one training step at each mask ratio, same clips.

The encoder of a pre-training model (`videomae_pretrain_s` by default, ViT-S: 384 channels, 12
blocks) runs forward + backward (the sum of its output tokens as the loss; gradients set to None
before each step, untimed) on the same random clips (B, 3, T, S, S) with no mask and with tube
masks at each `--ratios` value (the encoder then sees the (1 - ratio) visible tokens only). For
each it records the median step time over `--repeats` rounds (each round runs every ratio, in an
order that alternates between rounds, after `--warmup` untimed steps) and the memory: on CUDA the
peak of `torch.cuda.max_memory_allocated` over a step; on CPU the bytes of the tensors autograd
saves for backward (unique storages, parameters left out), the activation memory that masking
shrinks. Ratios are to the unmasked step.

    python benchmarks/videomae_masking.py --out masking.json                 # 2x3x16x112x112
    python benchmarks/videomae_masking.py --device cuda --batch 8 --size 224 --out gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from tubelet.models import create_model
from tubelet.models.vit_video import VideoViTEncoder
from tubelet.nn.masking import tube_mask


def step(encoder: VideoViTEncoder, clip: Tensor, mask: Tensor | None) -> None:
    """One forward + backward of the encoder on `clip` (visible tokens only when masked)."""
    for p in encoder.parameters():
        p.grad = None
    encoder(clip, mask).sum().backward()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_memory(encoder: VideoViTEncoder, clip: Tensor, mask: Tensor | None) -> int:
    """CUDA peak bytes of one step, or on CPU the bytes autograd saves for backward."""
    if clip.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(clip.device)
        step(encoder, clip, mask)
        return torch.cuda.max_memory_allocated(clip.device)
    skip = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = encoder(clip, mask)
    out.sum().backward()
    return sum(seen.values())


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model, patch_size=args.patch)
    encoder = model.encoder.to(device).train()
    clip = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
    grid = encoder.grid(clip.shape)
    generator = torch.Generator().manual_seed(0)
    masks: dict[float, Tensor | None] = {0.0: None}
    for ratio in args.ratios:
        masks[ratio] = tube_mask(args.batch, grid, ratio, generator=generator).to(device)
    for _ in range(args.warmup):
        for mask in masks.values():
            step(encoder, clip, mask)
    times: dict[float, list[float]] = {r: [] for r in masks}
    for i in range(args.repeats):
        for ratio in masks if i % 2 == 0 else reversed(masks):
            sync(device)
            start = time.perf_counter()
            step(encoder, clip, masks[ratio])
            sync(device)
            times[ratio].append(time.perf_counter() - start)
    rows = []
    for ratio, mask in masks.items():
        tokens = grid[0] * grid[1] * grid[2] - (0 if mask is None else int(mask[0].sum()))
        rows.append(
            {
                "mask_ratio": ratio,
                "encoder_tokens": tokens,
                "step_s": statistics.median(times[ratio]),
                "memory_bytes": step_memory(encoder, clip, mask),
            }
        )
    base = rows[0]
    for row in rows:
        row["speedup"] = base["step_s"] / row["step_s"]
        row["memory_ratio"] = row["memory_bytes"] / base["memory_bytes"]
    memory = "cuda peak allocated" if device.type == "cuda" else "cpu saved activations"
    return {
        "model": args.model,
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
        "input": [args.batch, 3, args.frames, args.size, args.size],
        "patch": args.patch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "memory_measure": memory,
        "repeats": args.repeats,
        "rows": rows,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="videomae_pretrain_s")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.9])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    table = Table(title=f"{result['model']} encoder, input {result['input']} on {result['device']}")
    for column in ("mask ratio", "tokens", "step s", "speed-up", "memory MiB", "memory"):
        table.add_column(column, justify="right")
    for row in result["rows"]:
        table.add_row(
            f"{row['mask_ratio']:.2f}", str(row["encoder_tokens"]), f"{row['step_s']:.3f}",
            f"{row['speedup']:.2f}x", f"{row['memory_bytes'] / 2**20:.1f}",
            f"{row['memory_ratio']:.2f}x",
        )  # fmt: skip
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
