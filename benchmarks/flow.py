"""Optical-flow benchmark: tubelet's RAFT against torchvision's, and the EPE of a trained RAFT
against OpenCV's Farneback and DIS.

`speed` (the default): one frame pair through tubelet's RAFT and torchvision's RAFT with the same
random weights (outputs compared first, `max_abs_diff`), at 368x496 (the Sintel crop) and at
1080x1920. Each measurement runs in its own process, so its peak memory is its own: on CPU the rise
of the process's peak resident memory over the pair (`ru_maxrss` minus the resident memory before),
on CUDA `torch.cuda.max_memory_allocated`. At 1080p tubelet uses the on-demand correlation; the
all-pairs volume's size is computed (B * (H/8 * W/8)^2 * 4 bytes * (1 + 1/4 + 1/16 + 1/64) for the
4-level pyramid) and torchvision runs only when that fits under `--max-volume-gib`.

`counts`: the CPU proxy of a GPU profile, one pair through both implementations (same weights)
seen op by op at the dispatcher (`OpCounts` of `benchmarks/models.py`): elementwise kernels, the
bytes they write and how many write a strided output, layout copies, matmuls. At RAFT's sizes a GPU
runs small kernels back to back, so their number is what a step costs there.

`epe`: a trained flow run (`tubelet train --task flow`) on the held-out synthetic pairs of its seed,
beside Farneback, DIS (OpenCV, on grey images) and the zero flow.

    python benchmarks/flow.py speed --out flow_speed.json              # raft_small, short CPU run
    python benchmarks/flow.py speed --model raft_large --updates 12 --hd-updates 12 --device cuda
    python benchmarks/flow.py counts --model raft_large --updates 12 --sizes 128x160
    python benchmarks/flow.py epe --checkpoint runs/flow --out flow_epe.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from tubelet.models import create_model

GIB = 2**30


def volume_bytes(height: int, width: int, batch: int = 1, levels: int = 4) -> int:
    """Bytes of RAFT's all-pairs float32 correlation pyramid for frames of height x width."""
    pixels = (height // 8) * (width // 8)
    return int(batch * pixels**2 * 4 * sum(4.0**-level for level in range(levels)))


def randomise(peer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm affines and statistics on top of the random init (raft_large's context
    encoder), so no norm is an identity that would hide a difference from the output check."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in peer.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return peer.eval()


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    """Child process: build one implementation, run the pair `repeats` times, report time/memory."""
    try:
        torch.set_num_threads(job["threads"])
        device = torch.device(job["device"])
        if job["impl"] == "torchvision":
            from torchvision.models import optical_flow

            model = getattr(optical_flow, job["model"])()
            model.load_state_dict(torch.load(job["weights"], weights_only=True))
        else:
            model = create_model(job["model"], corr_mode=job["corr_mode"])
            model.load_state_dict(torch.load(job["weights"], weights_only=True))
        model = model.eval().to(device)
        g = torch.Generator().manual_seed(0)
        shape = (1, 3, job["height"], job["width"])
        x1 = (torch.rand(shape, generator=g) * 2 - 1).to(device)
        x2 = (torch.rand(shape, generator=g) * 2 - 1).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = _current_rss()
        times, flow = [], None
        with torch.no_grad():
            for _ in range(job["warmup"] + job["repeats"]):
                start = time.perf_counter()
                flow = model(x1, x2, num_flow_updates=job["updates"])[-1]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - before
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        np.save(job["flow_out"], flow.cpu().numpy())
        return {"time_s": statistics.median(times[job["warmup"] :]), "peak_bytes": peak}
    except Exception as error:  # reported to the parent, which records it as the row's error
        return {"error": f"{type(error).__name__}: {error}"}


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Run `_measure` in a fresh Python process (nothing inherited), reading its JSON answer."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    from torchvision.models import optical_flow

    peer = randomise(getattr(optical_flow, args.model)(), seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="flowbench-"))
    weights = tmp / "weights.pth"
    torch.save(peer.state_dict(), weights)
    rows = []
    for label in args.sizes.split(","):
        height, width = (int(v) for v in label.split("x"))
        updates = args.hd_updates if height * width > 10**6 else args.updates
        volume = volume_bytes(height, width)
        base = {
            "model": args.model, "weights": str(weights), "height": height, "width": width,
            "updates": updates, "threads": args.threads, "device": args.device,
            "warmup": args.warmup, "repeats": args.repeats,
        }  # fmt: skip
        impls = [("torchvision", "all_pairs"), ("tubelet", "all_pairs"), ("tubelet", "on_demand")]
        if height > 500:
            impls = [("torchvision", "all_pairs"), ("tubelet", "on_demand")]
        results: dict[str, dict[str, Any]] = {}
        for impl, mode in impls:
            key = f"{impl}/{mode}"
            if mode == "all_pairs" and volume > args.max_volume_gib * GIB:
                results[key] = {
                    "skipped": f"the all-pairs volume needs {volume / GIB:.2f} GiB "
                    f"(over --max-volume-gib {args.max_volume_gib})"
                }
                continue
            flow_out = tmp / f"{label}-{impl}-{mode}.npy"
            results[key] = measure(
                {**base, "impl": impl, "corr_mode": mode, "flow_out": str(flow_out)}
            )
            results[key]["flow_file"] = flow_out
        reference = next(
            (
                r["flow_file"]
                for k, r in results.items()
                if k.startswith("torchvision") and "flow_file" in r
            ),
            None,
        )
        for r in results.values():
            if "flow_file" in r:
                flow = np.load(r.pop("flow_file"))
                if reference is not None:
                    r["max_abs_diff_vs_torchvision"] = float(
                        np.abs(flow - np.load(reference)).max()
                    )
                r["flow_abs_max"] = float(np.abs(flow).max())
        row = {
            "size": label, "updates": updates, "all_pairs_volume_bytes": volume,
            "all_pairs_volume_gib": round(volume / GIB, 3), "results": results,
        }  # fmt: skip
        tv = results.get("torchvision/all_pairs", {})
        for key, r in results.items():
            if "time_s" not in r:
                continue
            r["memory_share_of_volume"] = r["peak_bytes"] / volume
            if key.startswith("tubelet") and "time_s" in tv:
                r["speed_ratio_vs_torchvision"] = tv["time_s"] / r["time_s"]  # >1: tubelet faster
                r["memory_ratio_vs_torchvision"] = r["peak_bytes"] / max(tv["peak_bytes"], 1)
        rows.append(row)
    return {"benchmark": "flow-speed", "rows": rows}


def _grey(image: torch.Tensor) -> np.ndarray:
    import cv2

    rgb = ((image + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def run_epe(args: argparse.Namespace) -> dict[str, Any]:
    import cv2

    from tubelet.engine.checkpoint import load_model
    from tubelet.jobs.flow import held_out_set
    from tubelet.tasks.flow import FlowMeter, FlowTask

    torch.set_num_threads(args.threads)
    model, spec = load_model(args.checkpoint)
    model.eval()
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    assert spec.preprocessing is not None  # a flow model records its frame size
    height, width = spec.preprocessing.crop_size
    data = held_out_set(config["seed"], height, width, length=args.pairs)
    updates = args.updates or spec.task_args["num_flow_updates"]
    task = FlowTask(eval_updates=updates)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    methods = {
        "raft": lambda s: task.predict(model, s["image1"][None], s["image2"][None])[0],
        "farneback": lambda s: torch.from_numpy(
            cv2.calcOpticalFlowFarneback(
                _grey(s["image1"]), _grey(s["image2"]), None, 0.5, 3, 15, 3, 5, 1.2, 0
            )
        ).permute(2, 0, 1),
        "dis": lambda s: torch.from_numpy(
            dis.calc(_grey(s["image1"]), _grey(s["image2"]), None)
        ).permute(2, 0, 1),
        "zero": lambda s: torch.zeros_like(s["flow"]),
    }
    results = {}
    for name, method in methods.items():
        meter, start = FlowMeter(), time.perf_counter()
        for i in range(len(data)):
            sample = data[i]
            with torch.no_grad():
                meter.update(method(sample)[None], sample["flow"][None], sample["valid"][None])
        results[name] = {**meter.compute(), "seconds": time.perf_counter() - start}
    train = json.loads((Path(args.checkpoint) / "summary.json").read_text())
    return {
        "benchmark": "flow-epe", "checkpoint": str(args.checkpoint), "size": [height, width],
        "num_flow_updates": updates, "held_out_seed": data.seed, "results": results,
        "train_time_s": train.get("train_time_s"), "train_epochs": train.get("epochs"),
        "raft_over_farneback_epe": results["raft"]["epe"] / results["farneback"]["epe"],
    }  # fmt: skip


def print_speed(report: dict[str, Any], console: Console) -> None:
    table = Table(title="RAFT: tubelet vs torchvision (per pair)")
    for column in ("size", "updates", "implementation", "time s", "peak MiB", "speed ratio",
                   "memory / volume", "max |diff|"):  # fmt: skip
        table.add_column(column)
    for row in report["rows"]:
        for key, r in row["results"].items():
            if "skipped" in r or "error" in r:
                table.add_row(row["size"], str(row["updates"]), key, r.get("skipped") or r["error"])
                continue
            nan = float("nan")
            table.add_row(
                row["size"], str(row["updates"]), key, f"{r['time_s']:.2f}",
                f"{r['peak_bytes'] / 2**20:.0f}", f"{r.get('speed_ratio_vs_torchvision', nan):.2f}",
                f"{r['memory_share_of_volume']:.3f}",
                f"{r.get('max_abs_diff_vs_torchvision', nan):.1e}",
            )  # fmt: skip
    console.print(table)


def print_epe(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"held-out synthetic pairs {report['size'][0]}x{report['size'][1]}")
    for column in ("method", "EPE", "1px", "3px", "5px", "Fl-all %", "seconds"):
        table.add_column(column)
    for name, r in report["results"].items():
        table.add_row(
            name, f"{r['epe']:.3f}", f"{r['px1']:.3f}", f"{r['px3']:.3f}", f"{r['px5']:.3f}",
            f"{r['fl_all']:.1f}", f"{r['seconds']:.1f}",
        )  # fmt: skip
    console.print(table)


def run_counts(args: argparse.Namespace) -> dict[str, Any]:
    """`OpCounts` of one pair through tubelet's RAFT and torchvision's, at the first of `--sizes`."""
    sys.path.insert(0, str(Path(__file__).parent))
    from models import OpCounts  # benchmarks/models.py
    from torchvision.models import optical_flow

    torch.manual_seed(0)
    peer = randomise(getattr(optical_flow, args.model)()).eval()
    ours = create_model(args.model)
    ours.load_state_dict(peer.state_dict())
    ours.eval()
    height, width = (int(v) for v in args.sizes.split(",")[0].split("x"))
    g = torch.Generator().manual_seed(0)
    x1, x2 = (torch.rand(1, 3, height, width, generator=g) * 2 - 1 for _ in range(2))
    results = []
    for impl, model in (("tubelet", ours), ("torchvision", peer)):
        with torch.no_grad(), OpCounts() as counts:
            flow = model(x1, x2, num_flow_updates=args.updates)[-1]
        results.append({"impl": impl, **counts.as_dict(), "flow": flow})
    diff = float((results[0].pop("flow") - results[1].pop("flow")).abs().max())
    return {
        "benchmark": "flow-counts", "model": args.model, "size": [height, width],
        "updates": args.updates, "max_abs_diff": diff, "results": results,
    }  # fmt: skip


def print_counts(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"{report['model']} {report['size']}, {report['updates']} updates")
    for column in ("impl", "elementwise", "MB written", "strided", "copies", "matmuls"):
        table.add_column(column, justify="left" if column == "impl" else "right")
    for r in report["results"]:
        table.add_row(
            r["impl"], str(r["elementwise_ops"]), f"{r['elementwise_bytes'] / 2**20:.1f}",
            str(r["elementwise_strided_ops"]), str(r["copy_ops"]), str(r["matmuls"]),
        )  # fmt: skip
    console.print(table)
    console.print(f"max abs difference of the flows: {report['max_abs_diff']:.2e}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=("speed", "counts", "epe"),
                        default="speed")  # fmt: skip
    parser.add_argument("--model", default="raft_small", choices=("raft_small", "raft_large"))
    parser.add_argument(
        "--updates", type=int, default=None, help="speed: 4 at 368x496; epe: the run's"
    )
    parser.add_argument("--sizes", default="368x496,1080x1920", help="speed: HxW list")
    parser.add_argument("--hd-updates", type=int, default=2, help="updates above 1 megapixel")
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--max-volume-gib", type=float, default=4.0,
                        help="run torchvision's all-pairs only when its volume fits this")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, help="epe: a `tubelet train --task flow` run")
    parser.add_argument("--pairs", type=int, default=100, help="epe: held-out pairs")
    parser.add_argument("--out", type=Path, default=None, help="JSON report")
    args = parser.parse_args(argv)
    if args.mode == "epe" and args.checkpoint is None:
        parser.error("epe needs --checkpoint RUN_DIR")
    if args.mode in ("speed", "counts") and args.updates is None:
        args.updates = 4
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console = Console()
    run, show = {"speed": (run_speed, print_speed), "counts": (run_counts, print_counts),
                 "epe": (run_epe, print_epe)}[args.mode]  # fmt: skip
    report = run(args)
    report["machine"] = {
        "platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
        "torch": torch.__version__, "device": args.device,
    }  # fmt: skip
    show(report, console)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        console.print(f"Wrote {args.out}")
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # one measurement, run by `measure` in its own process
        print(json.dumps(_measure(json.loads(sys.argv[2]))))
    else:
        main()
