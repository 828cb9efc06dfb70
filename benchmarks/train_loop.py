"""Training-loop benchmark: does `tubelet train` deliver what the model's own step can do?

In one process, for one model and one input, on real H.264 mp4 files it writes first:

- `bare_step`: the model's own training step on one batch already on the device (uint8 clips
  normalised there, forward, cross-entropy, backward, AdamW step; bf16/fp16 autocast and
  channels-last as asked), in clips/s: what the loop could reach if data were free;
- `decoder`: the training loader alone, the same `--workers` decoding the same files with the same
  sampling and augmentation, no model: the clips/s the data path can deliver;
- `train`: `tubelet train` itself (`tubelet.jobs.classification.train`), its clips/s and the share
  of the epoch it waited for data, from the run's `metrics.jsonl` (the first epoch, which starts
  the workers and warms up, is left out);
- `ratio`: train clips/s over the bare step's; the goal is at least 0.9 whenever the decoder alone
  delivers more clips/s than the bare step consumes (`goal_applies`).

It also writes the bytes one batch carries from the workers to the device (uint8 now, float32
before: the CPU proxy of the host-to-device copy) and the machine it ran on.

    python benchmarks/train_loop.py -m width=8 --out loop.json            # CPU, small (minutes)
    python benchmarks/train_loop.py --device cuda --precision bf16 --channels-last \\
        --model r2plus1d_18 --frames 16 --sampling dense --size 112 --batch 32 --workers 14 \\
        --videos 1500 --video-size 160 --out loop_gpu.json                # the issue's setting
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
from pathlib import Path
from typing import Any

import torch

from tubelet.data import ClipSpec, build_dataset, build_loader
from tubelet.data.synthetic import CLASSES, write_synthetic_dataset
from tubelet.data.transforms import BatchNormalize
from tubelet.engine.trainer import RuntimeConfig, autocast, grad_scaler, prepare_model
from tubelet.jobs.classification import train
from tubelet.jobs.common import TrainJob
from tubelet.models import create_model
from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="r2plus1d_18")
    parser.add_argument("-m", "--model-arg", action="append", default=[],
                        help="builder argument KEY=VALUE, repeatable (e.g. width=8 on a CPU)")  # fmt: skip
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--sampling", default="uniform", choices=("uniform", "dense"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--epochs", type=int, default=3, help="train epochs (the first is left out)"
    )
    parser.add_argument("--videos", type=int, default=120, help="mp4 files to write (4/5 train)")
    parser.add_argument("--video-size", type=int, default=160, help="side of the square files")
    parser.add_argument("--video-frames", type=int, default=48, help="frames per file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=20, help="timed bare steps")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the videos and runs here")
    parser.add_argument("--out", type=Path, default=Path("train_loop.json"))
    return parser.parse_args(argv)


def model_args(pairs: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def write_videos(root: Path, args: argparse.Namespace) -> Path:
    """`--videos` mp4 files of the synthetic classes (train and val lists), reused when present."""
    data = root / f"videos_{args.videos}_{args.video_size}_{args.video_frames}"
    if not (data / "dataset.json").is_file():
        per_class = max(2, round(args.videos / len(CLASSES)))
        write_synthetic_dataset(
            data, videos_per_class=per_class, val_fraction=0.2, num_frames=args.video_frames,
            size=args.video_size, overwrite=True,
        )  # fmt: skip
    return data


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Clips/s of the model's own step on one device-resident uint8 batch."""
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=len(CLASSES), **model_args(args.model_arg))
    runtime = RuntimeConfig(channels_last=args.channels_last, compile=args.compile)
    model = prepare_model(model, runtime, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    scaler = grad_scaler(device, args.precision)
    normalize = BatchNormalize(IMAGENET_MEAN, IMAGENET_STD, channels_last=args.channels_last)
    shape = (args.batch, 3, args.frames, args.size, args.size)
    clips = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    labels = torch.randint(0, len(CLASSES), (args.batch,), device=device)

    def step() -> None:
        video = normalize({"video": clips})["video"]
        with autocast(device, args.precision):
            loss = torch.nn.functional.cross_entropy(model(video), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    sync(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"clips_per_s": args.batch / median, "median_step_s": median, "steps": args.steps}


def decoder_alone(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Clips/s the training loader delivers with no model: its first epoch starts the workers and
    is left out; the next two are timed."""
    clip = ClipSpec(frames=args.frames, sampling=args.sampling)
    dataset, _ = build_dataset(data, "train", clip=clip, size=args.size, train=True,
                               normalized=False)  # fmt: skip
    loader = build_loader(
        dataset, batch_size=args.batch, train=True, num_workers=args.workers,
        item_bytes=3 * args.frames * args.size**2,
    )  # fmt: skip
    rates = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        start, clips = time.perf_counter(), 0
        for batch in loader:
            clips += 0 if batch["video"] is None else len(batch["video"])
        if epoch:
            rates.append(clips / (time.perf_counter() - start))
    batch_bytes = args.batch * 3 * args.frames * args.size**2
    return {
        "clips_per_s": statistics.median(rates),
        "epochs_timed": len(rates),
        "batch_bytes_uint8": batch_bytes,
        "batch_bytes_float32": 4 * batch_bytes,
    }


def train_run(args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    """`tubelet train`'s own clips/s and data-wait share over the epochs after the first."""
    job = TrainJob(
        out=out, data=data, model=args.model, model_args=model_args(args.model_arg),
        frames=args.frames, sampling=args.sampling, size=args.size, epochs=args.epochs,
        batch_size=args.batch, precision=args.precision, workers=args.workers,
        channels_last=args.channels_last, compile=args.compile, flip=True,
    )  # fmt: skip
    train(job, show_progress=False)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = lines[1:] or lines
    return {
        "clips_per_s": statistics.median(r["clips_per_s"] for r in steady),
        "data_wait_share": statistics.median(r["data_wait_share"] for r in steady),
        "epochs": [
            {k: r[k] for k in ("epoch", "clips_per_s", "data_wait_share", "epoch_time_s")}
            for r in lines
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        data = write_videos(root, args)
        bare = bare_step(args, device)
        decoder = decoder_alone(args, data)
        trained = train_run(args, data, root / f"run_{time.time_ns()}")
    ratio = trained["clips_per_s"] / bare["clips_per_s"]
    applies = decoder["clips_per_s"] > bare["clips_per_s"]
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        },  # fmt: skip
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "bare_step": bare,
        "decoder": decoder,
        "train": trained,
        "ratio": ratio,
        "goal_applies": applies,
        "meets_goal": ratio >= 0.9 if applies else None,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"bare step {bare['clips_per_s']:.1f} clips/s | decoder alone {decoder['clips_per_s']:.1f} "
        f"clips/s | tubelet train {trained['clips_per_s']:.1f} clips/s "
        f"({trained['data_wait_share']:.0%} waiting) | ratio {ratio:.2f} -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
