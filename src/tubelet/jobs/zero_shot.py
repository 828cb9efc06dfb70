"""Zero-shot classification with a video-text model (`tubelet predict VIDEO --labels ...`,
`tubelet eval --zero-shot`): no training; each class is a text, and a clip's class is the text
whose embedding is closest (cosine similarity) to the clip's.

The model is imported from a folder (`--checkpoint`, `--checkpoint-format transformers`) that also
holds its tokenizer (`tubelet.data.text`). The clip is prepared as the model was trained: its
frame count and resolution are the model's own (VideoPrism: the position tables' `num_frames` and
`image_size`: 16 or 8 frames of 288 px, sampled uniformly over the video) and its pixels are in
[0, 1] (no mean/std); no option is needed.

Scores: the cosine similarities, and their softmax at temperature 0.01 (CLIP's learned logit
scale of 100, the usual choice for video-text models without their own) as a probability per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tubelet.data import ClipSpec, build_dataset, build_loader
from tubelet.data.sampling import temporal_views
from tubelet.data.text import TextTokenizer
from tubelet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from tubelet.engine.progress import TrainProgress
from tubelet.engine.trainer import evaluate_loader
from tubelet.io import VideoReader
from tubelet.models import create_model
from tubelet.tasks import ClassificationTask

LOGIT_SCALE = 100.0  # 1 / temperature 0.01


def load_video_text_model(
    model: str, checkpoint: Path, checkpoint_format: str | None
) -> tuple[nn.Module, TextTokenizer]:
    """The video-text model `model` with `checkpoint`'s weights, and the folder's tokenizer."""
    net = create_model(model, checkpoint=str(checkpoint), checkpoint_format=checkpoint_format)
    if not hasattr(net, "encode_text"):
        raise ValueError(
            f"{model} has no text tower: zero-shot classification needs a video-text model "
            "(videoprism_lvt_b, videoprism_lvt_l)"
        )
    return net.eval(), TextTokenizer.from_folder(checkpoint)


def clip_settings(net: nn.Module) -> tuple[int, int]:
    """(frames, pixels) a video-text model takes: those its position tables were made for."""
    encoder = net.encoder
    return encoder.temporal_pos.shape[1], encoder.grid[0] * encoder.patch_size


class ZeroShotClassifier(nn.Module):
    """A video-text model with fixed class texts: clip (B, C, T, H, W) -> logits (B, K) =
    LOGIT_SCALE * cosine similarity to each class text. Clips normalised with `mean`/`std` (as the
    data loader does) are mapped back to [0, 1] first."""

    def __init__(
        self,
        net: nn.Module,
        text: Tensor,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("text", text, persistent=False)  # (K, D), L2-normalised
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        pixels = x * self.std + self.mean  # (B, C, T, H, W) in [0, 1]
        return LOGIT_SCALE * self.net.encode_video(pixels) @ self.text.T  # (B, K)


@torch.no_grad()
def text_embeddings(net: nn.Module, tokenizer: TextTokenizer, labels: Sequence[str]) -> Tensor:
    """L2-normalised embeddings (K, D) of the label texts."""
    ids, mask = tokenizer(labels, net.text.max_len)
    return net.encode_text(ids, mask)


def predict_zero_shot(
    video: Path,
    labels: Sequence[str],
    *,
    model: str,
    checkpoint: Path,
    checkpoint_format: str | None = "transformers",
) -> list[dict[str, Any]]:
    """The labels ranked by their similarity to `video`, each with its probability."""
    if len(labels) < 2:
        raise ValueError(
            "zero-shot classification needs two labels or more (--labels A --labels B)"
        )
    net, tokenizer = load_video_text_model(model, checkpoint, checkpoint_format)
    frames, size = clip_settings(net)
    with VideoReader(video) as reader:
        (view,) = temporal_views(reader.num_frames, reader.fps, 1, sampling="uniform",
                                 clip_len=frames)  # fmt: skip
        clip = reader.get_frames(view.indices).data  # (T, H, W, 3) uint8
    x = EvalTransform(size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(clip)  # (1, C, T, S, S)
    classifier = ZeroShotClassifier(net, text_embeddings(net, tokenizer, labels)).eval()
    with torch.no_grad():
        logits = classifier(x)[0]  # (K,)
    probs = logits.softmax(-1)
    order = logits.argsort(descending=True).tolist()
    return [
        {"label": labels[i], "index": i, "similarity": logits[i].item() / LOGIT_SCALE,
         "probability": probs[i].item()}
        for i in order
    ]  # fmt: skip


def class_text(name: str) -> str:
    """A class folder name as a text: `riding_a_bike` -> `riding a bike`."""
    return name.replace("_", " ").strip()


def evaluate_zero_shot(
    data: Path,
    *,
    model: str,
    checkpoint: Path,
    checkpoint_format: str | None = "transformers",
    batch_size: int = 8,
    workers: int = 1,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Zero-shot top-1/top-5 (and reversal accuracy) on `data`'s val split, each class named by
    its class name (underscores read as spaces)."""
    net, tokenizer = load_video_text_model(model, checkpoint, checkpoint_format)
    frames, size = clip_settings(net)
    dataset, annotations = build_dataset(
        data, "val", clip=ClipSpec(frames=frames, sampling="uniform"), size=size, train=False,
        bad_files="skip",
    )  # fmt: skip
    texts = [class_text(c) for c in annotations.classes]
    # The loader normalises with ImageNet's statistics; the classifier maps back to [0, 1].
    classifier = ZeroShotClassifier(
        net, text_embeddings(net, tokenizer, texts), IMAGENET_MEAN, IMAGENET_STD
    ).eval()
    task = ClassificationTask(len(texts), reversal_pairs=annotations.reversal_pairs)
    loader = build_loader(dataset, batch_size=batch_size, train=False, num_workers=workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bad_files: dict[str, dict[str, str]] = {}
    with TrainProgress(enabled=show_progress) as progress:
        metrics = evaluate_loader(
            classifier.to(device), task, loader, device=device, progress=progress,
            bad_files=bad_files,
        )  # fmt: skip
    metrics["texts"] = texts
    metrics["bad_files"] = [{"path": p, **i} for p, i in sorted(bad_files.items())]
    return metrics
