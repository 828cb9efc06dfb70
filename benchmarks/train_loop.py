"""Training-loop benchmark: does `tubelet train` deliver what the model's own step can do?

In one process, for one model and one input, on real H.264 mp4 files it writes first:

- `bare_step`: the model's own training step on one batch already on the device (uint8 clips
  normalised there, forward, cross-entropy, backward, AdamW step; bf16/fp16 autocast and
  channels-last as asked), in clips/s: what the loop could reach if data were free. It is timed
  before and after the other two (`--steps` each, median of all), so that a machine whose speed
  drifts during the run moves it as it moves them;
- `decoder`: the training loader alone, the same `--workers` decoding the same files with the same
  sampling and augmentation, no model: the clips/s the data path can deliver;
- `loop_in_memory`: tubelet's trainer (`tubelet.engine.Trainer`, as `tubelet train` runs it:
  prefetch, on-device normalisation, gradient clipping, schedule) fed from clips held in memory,
  no decoding: the loop's own cost against the bare step, apart from the decoders' use of the CPU;
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from tubelet.data import ClipSpec, build_dataset, build_loader
from tubelet.data.synthetic import CLASSES, write_synthetic_dataset
from tubelet.data.transforms import BatchNormalize
from tubelet.engine.run import RunDir
from tubelet.engine.trainer import (
    OptimConfig,
    RuntimeConfig,
    Trainer,
    autocast,
    grad_scaler,
    prepare_model,
)
from tubelet.jobs.classification import train
from tubelet.jobs.common import TrainJob
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec
from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD
from tubelet.tasks import ClassificationTask


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
    parser.add_argument("--decode-device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: NVDEC through torchcodec, in the training process")  # fmt: skip
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


def bare_step(args: argparse.Namespace, device: torch.device) -> Callable[[], list[float]]:
    """A timer of the model's own step on one device-resident uint8 batch: each call runs
    `--steps` steps and returns their times (s)."""
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

    def timed() -> list[float]:
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - start)
        return times

    return timed


def decoder_alone(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Clips/s the training loader delivers with no model: its first epoch starts the workers and
    is left out; the next two are timed."""
    clip = ClipSpec(frames=args.frames, sampling=args.sampling)
    dataset, _ = build_dataset(data, "train", clip=clip, size=args.size, train=True,
                               normalized=False, decode_device=args.decode_device)  # fmt: skip
    workers = {"num_workers": args.workers}
    if args.decode_device != "cpu":  # as `tubelet.jobs.common.loader_workers`
        workers = {"num_workers": 0, "pin_memory": False}
    loader = build_loader(
        dataset, batch_size=args.batch, train=True, item_bytes=3 * args.frames * args.size**2,
        **workers,
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


class _Clips(Dataset):
    """`n` random uint8 clips held in memory, labelled in turn."""

    def __init__(self, n: int, shape: tuple[int, ...]) -> None:
        g = torch.Generator().manual_seed(0)
        self.clips = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"video": self.clips[i], "label": i % len(CLASSES), "index": i, "bad_files": []}


def loop_in_memory(args: argparse.Namespace, device: torch.device, out: Path) -> dict[str, Any]:
    """Clips/s of the trainer fed from memory (`--epochs` epochs of 10 batches, the first left
    out); evaluation is skipped."""
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=len(CLASSES), **model_args(args.model_arg))
    clips = _Clips(10 * args.batch, (3, args.frames, args.size, args.size))
    loader = build_loader(clips, batch_size=args.batch, train=True, num_workers=0)
    runtime = RuntimeConfig(channels_last=args.channels_last, compile=args.compile)
    trainer = Trainer(
        model, ClassificationTask(len(CLASSES), 0.1), train_loader=loader, val_loader=loader,
        config=OptimConfig(epochs=args.epochs, precision=args.precision), run=RunDir(out),
        spec=ModelSpec(args.model, {}, "classification"), device=device, show_progress=False,
        runtime=runtime, prepare=BatchNormalize(channels_last=args.channels_last),
    )  # fmt: skip
    trainer.evaluate = lambda *a, **k: {"top1": 0.0}  # type: ignore[method-assign]
    trainer.fit()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"clips_per_s": statistics.median(r["clips_per_s"] for r in lines[1:] or lines)}


def train_run(args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    """`tubelet train`'s own clips/s and data-wait share over the epochs after the first."""
    job = TrainJob(
        out=out, data=data, model=args.model, model_args=model_args(args.model_arg),
        frames=args.frames, sampling=args.sampling, size=args.size, epochs=args.epochs,
        batch_size=args.batch, precision=args.precision, workers=args.workers,
        channels_last=args.channels_last, compile=args.compile, flip=True,
        decode_device=args.decode_device,
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
        bare_timer = bare_step(args, device)
        before = bare_timer()
        decoder = decoder_alone(args, data)
        in_memory = loop_in_memory(args, device, root / f"loop_{time.time_ns()}")
        trained = train_run(args, data, root / f"run_{time.time_ns()}")
        after = bare_timer()
    median = statistics.median(before + after)
    bare = {
        "clips_per_s": args.batch / median, "median_step_s": median,
        "clips_per_s_before": args.batch / statistics.median(before),
        "clips_per_s_after": args.batch / statistics.median(after), "steps": 2 * args.steps,
    }  # fmt: skip
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
        "loop_in_memory": in_memory,
        "train": trained,
        "ratio": ratio,
        "goal_applies": applies,
        "meets_goal": ratio >= 0.9 if applies else None,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"bare step {bare['clips_per_s']:.1f} clips/s | decoder alone {decoder['clips_per_s']:.1f} "
        f"clips/s | loop on clips in memory {in_memory['clips_per_s']:.1f} "
        f"clips/s | tubelet train {trained['clips_per_s']:.1f} clips/s "
        f"({trained['data_wait_share']:.0%} waiting) | ratio {ratio:.2f} -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
