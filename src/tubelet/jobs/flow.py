"""The optical-flow jobs: `tubelet train --task flow` and flow for image pairs and whole videos.

Training runs on synthetic pairs with exact ground truth by default (`tubelet.data.flow`), or on a
FlyingChairs / Sintel / KITTI folder given as `--data`. `--size S` sets the training frames to
S x 1.5S (rounded to multiples of 8: `--size 64` gives 64x96). The task's own settings
(`FlowSettings`): `-t updates=N`, the number of RAFT updates in training and evaluation (12 if
absent), and `--init RUN`, a flow run whose weights start this one; `-m` goes to the model's
builder.

The video job streams: it decodes `chunk` frames at a time, keeps only the previous frame and its
1/8-resolution flow (carried forward as the next pair's initial estimate, the warm start of the RAFT
paper, section 3.4), and writes each visualised flow frame to the mp4 as it comes, so memory does not
grow with the video's length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from tubelet.convert import load_state_dict_strict
from tubelet.data import build_loader
from tubelet.data.flow import SyntheticFlowConfig, SyntheticFlowDataset, flow_folder_dataset
from tubelet.engine.checkpoint import find_checkpoint, load_model
from tubelet.engine.trainer import Trainer
from tubelet.io import VideoReader
from tubelet.io.flow import flow_to_image
from tubelet.jobs.common import (
    FlowSettings,
    TrainJob,
    builder_args,
    jsonable,
    open_run,
    optim_config,
    runtime_config,
    settings_of,
)
from tubelet.models import architecture_args, create_model, list_models, model_kind
from tubelet.models.raft import forward_interpolate
from tubelet.models.spec import ModelSpec, Preprocessing, WeightsSource
from tubelet.normalization import SIGNED_MEAN, SIGNED_STD
from tubelet.tasks.flow import FlowTask, pad_to_multiple, unpad

DEFAULT_MODEL = "raft_small"
# Run settings of clips: pairs here.
UNUSED = ("frames", "sampling", "stride", "flip", "bad_files", "decode_device")
SYNTHETIC_TRAIN_PAIRS = 256  # per epoch (new scenes every epoch): --epochs sets the budget
SYNTHETIC_VAL_PAIRS = 100  # held out: drawn from another seed, the same every epoch
HELD_OUT_SEED = 1_000_000  # added to the run's seed for the validation pairs


def frame_size(size: int) -> tuple[int, int]:
    """Training frames (H, W) for `--size S`: S x 1.5S, both rounded to multiples of 8 (min 64)."""
    h = max(64, round(size / 8) * 8)
    return h, max(64, round(size * 1.5 / 8) * 8)


def held_out_set(seed: int, height: int, width: int, length: int = SYNTHETIC_VAL_PAIRS) -> Any:
    """The synthetic validation pairs of a run with `seed` (also what `benchmarks/flow.py` scores)."""
    config = SyntheticFlowConfig(height=height, width=width)
    return SyntheticFlowDataset(length, config=config, seed=seed + HELD_OUT_SEED)


def train(job: TrainJob, *, show_progress: bool = True, on_data: Any = None) -> dict[str, Any]:
    """Train (or resume) a flow model in `job.out`; return the summary (best `val_epe` etc.)."""
    model_args = builder_args(job)
    own = settings_of(job, FlowSettings)
    updates = own.updates
    height, width = frame_size(job.size)
    data = str(job.data) if job.data else "synthetic"
    run = open_run(job, {**jsonable(job), "data": data})

    if job.data is None:
        synthetic = SyntheticFlowConfig(height=height, width=width)
        train_set = SyntheticFlowDataset(
            SYNTHETIC_TRAIN_PAIRS, config=synthetic, seed=job.seed, resample_each_epoch=True
        )
        val_set = held_out_set(job.seed, height, width)
        val_batch = job.batch_size
    else:
        train_set = flow_folder_dataset(job.data, "train", crop=(height, width), seed=job.seed)
        val_set = flow_folder_dataset(job.data, "val")
        val_batch = 1  # full frames, whose sizes may differ
    _check_flow_model(job.model)
    model = create_model(job.model, **model_args)
    if own.init is not None:
        start_from(model, own.init, job.model)
    spec = ModelSpec(
        model=job.model,
        model_args=architecture_args(job.model, model_args),
        task="flow",
        preprocessing=Preprocessing(
            mean=SIGNED_MEAN, std=SIGNED_STD, crop=(height, width), frames=2, sampling="dense"
        ),
        source=WeightsSource(data=data),
        task_args={"num_flow_updates": updates},
    )
    loaders = {
        "train_loader": build_loader(
            train_set, batch_size=job.batch_size, train=True, num_workers=job.workers,
            seed=job.seed, collate_fn=default_collate,
        ),
        "val_loader": build_loader(
            val_set, batch_size=val_batch, train=False, num_workers=0, collate_fn=default_collate
        ),
    }  # fmt: skip
    optim = optim_config(job)
    trainer = Trainer(
        model, FlowTask(train_updates=updates, eval_updates=updates), config=optim, run=run,
        spec=spec, monitor="epe", minimize=True, show_progress=show_progress,
        runtime=runtime_config(job), **loaders,
    )  # fmt: skip
    return trainer.fit()


def start_from(model: nn.Module, run: str | Path, name: str) -> None:
    """Copy the weights of flow run `run` (the same model) into `model`: RAFT's schedule trains on
    one data set or size and fine-tunes on the next (`--init RUN --size 128`)."""
    trained, spec = load_model(run)
    if spec.task != "flow" or spec.model != name:
        raise ValueError(
            f"--init {run} holds a {spec.task} run of {spec.model}, "
            f"not a flow run of {name}: give a `tubelet train --task flow --model {name}` run"
        )
    load_state_dict_strict(model, trained.state_dict(), f"--init {run}")


# -- using a model -------------------------------------------------------------------------------


def load_flow_model(
    checkpoint: str | Path, *, model: str | None = None, checkpoint_format: str | None = None
) -> tuple[nn.Module, int]:
    """A flow model and its number of updates, from a tubelet run/checkpoint folder, or from a
    weights file of `model` in `checkpoint_format` ("torchvision", "raft")."""
    path = Path(checkpoint)
    if model is None:
        find_checkpoint(path)  # a clear error when it is not a tubelet checkpoint
        loaded, spec = load_model(path)
        if spec.task != "flow":
            raise ValueError(f"{path} holds a {spec.model} model, not a flow model")
        return loaded.eval(), int(spec.task_args.get("num_flow_updates", 12))
    _check_flow_model(model)
    loaded = create_model(model, checkpoint=str(path), checkpoint_format=checkpoint_format)
    return loaded.eval(), 12


def _check_flow_model(name: str) -> None:
    if model_kind(name) != "flow":
        raise ValueError(
            f"{name!r} is not a flow model; flow models: {', '.join(list_models('flow'))}"
        )


def to_model_input(frames: Tensor) -> Tensor:
    """uint8 frames (T, H, W, 3) -> float (T, 3, H, W) in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def flow_pair(
    model: nn.Module, image1: Tensor, image2: Tensor, *, num_flow_updates: int = 12
) -> Tensor:
    """Flow (2, H, W) from image1 to image2, float (3, H, W) in [-1, 1] of any size (padded to
    multiples of 8 and cropped back)."""
    if image1.shape != image2.shape or image1.ndim != 3 or image1.shape[0] != 3:
        raise ValueError(
            f"two RGB images of one size are needed, got {tuple(image1.shape)} and "
            f"{tuple(image2.shape)}"
        )
    device = next(model.parameters()).device
    task = FlowTask(eval_updates=num_flow_updates)
    return task.predict(model, image1[None].to(device), image2[None].to(device))[0].cpu()


@dataclass(frozen=True)
class VideoFlowResult:
    """What `flow_video` wrote: the number of flow frames, the video and the .npy folder."""

    pairs: int
    out: Path
    npy_dir: Path | None
    fps: float
    height: int
    width: int


def video_flows(
    model: nn.Module,
    reader: VideoReader,
    *,
    num_flow_updates: int = 12,
    warm_start: bool = True,
    chunk: int = 8,
) -> Iterator[Tensor]:
    """Yield the flow (2, H, W) between each pair of consecutive frames of `reader`, streaming.

    Only `chunk` decoded frames, the previous frame and the previous 1/8 flow are held at a time.
    With `warm_start`, each pair starts from the previous pair's flow carried forward.
    """
    device = next(model.parameters()).device
    previous: Tensor | None = None
    flow_low: Tensor | None = None
    for start in range(0, reader.num_frames, chunk):
        indices = list(range(start, min(start + chunk, reader.num_frames)))
        frames = to_model_input(reader.get_frames(indices).data).to(device)  # (t, 3, H, W)
        for frame in frames:
            current, pad = pad_to_multiple(frame[None])
            if previous is not None:
                init = (
                    forward_interpolate(flow_low) if warm_start and flow_low is not None else None
                )
                estimate = model.estimate(previous, current, num_flow_updates, flow_init=init)
                flow_low = estimate.flow_low
                yield unpad(estimate.flows[-1], pad)[0].cpu()
            previous = current


def flow_video(
    model: nn.Module,
    video: str | Path,
    out: str | Path,
    *,
    num_flow_updates: int = 12,
    warm_start: bool = True,
    save_npy: str | Path | None = None,
    short_side: int | None = None,
    max_flow: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VideoFlowResult:
    """Flow of every consecutive frame pair of `video`, written as a colour-wheel mp4 to `out`
    (and as float16 `.npy` files (2, H, W), one per pair, into `save_npy`)."""
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"the flow video is written as .mp4, not {out.suffix!r} ({out})")
    npy_dir = Path(save_npy) if save_npy is not None else None
    if npy_dir is not None:
        npy_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), VideoReader(video, short_side=short_side) as reader:
        if reader.num_frames < 2:
            raise ValueError(f"{video} has {reader.num_frames} frame(s); flow needs at least 2")
        total = reader.num_frames - 1
        height, width = reader.height, reader.width
        with _Mp4Stream(out, reader.fps) as writer:
            pairs = 0
            flows = video_flows(
                model, reader, num_flow_updates=num_flow_updates, warm_start=warm_start
            )
            for pairs, flow in enumerate(flows, start=1):
                writer.write(flow_to_image(flow.numpy(), max_flow=max_flow))
                if npy_dir is not None:
                    np.save(npy_dir / f"flow_{pairs - 1:06d}.npy", flow.numpy().astype(np.float16))
                if progress is not None:
                    progress(pairs, total)
                height, width = flow.shape[1:]
    return VideoFlowResult(pairs, out, npy_dir, reader.fps, height, width)


class _Mp4Stream:
    """H.264 mp4 written one frame at a time (`tubelet.io.write_video` takes all frames at once)."""

    def __init__(self, path: Path, fps: float) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.rate = Fraction(fps).limit_denominator(1001)
        self.stream: Any = None

    def write(self, image: np.ndarray) -> None:
        import av

        image = np.pad(
            image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge"
        )
        if self.stream is None:
            self.stream = self.container.add_stream(
                "libx264", rate=self.rate, options={"crf": "18"}
            )
            self.stream.height, self.stream.width = image.shape[:2]
            self.stream.pix_fmt = "yuv420p"
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self.container.mux(packet)

    def __enter__(self) -> _Mp4Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def flow_image_files(
    model: nn.Module,
    image1: str | Path,
    image2: str | Path,
    out: str | Path,
    *,
    num_flow_updates: int = 12,
    max_flow: float | None = None,
) -> Tensor:
    """Flow from the image file `image1` to `image2`, written to `out`: `.png` as the colour-wheel
    picture, `.flo` as the flow itself. Returns the flow (2, H, W)."""
    from PIL import Image

    from tubelet.data.flow import read_image
    from tubelet.io.flow import write_flo

    out = Path(out)
    if out.suffix.lower() not in (".png", ".flo"):
        raise ValueError(f"--out must end in .png (picture) or .flo (flow file), not {out.name!r}")
    first, second = read_image(Path(image1)), read_image(Path(image2))
    if first.shape != second.shape:
        raise ValueError(
            f"{image1} is {tuple(first.shape[1:])} but {image2} is {tuple(second.shape[1:])}; "
            "the two images must have one size"
        )
    flow = flow_pair(model, first, second, num_flow_updates=num_flow_updates)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".flo":
        write_flo(out, flow.permute(1, 2, 0).numpy())
    else:
        Image.fromarray(flow_to_image(flow.numpy(), max_flow=max_flow)).save(out)
    return flow
