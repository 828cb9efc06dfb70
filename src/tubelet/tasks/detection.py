"""Temporal action detection: the ActivityNet evaluation, the detector's losses, and decoding.

Evaluation (`evaluate_detections`) computes mAP the way the official ActivityNet detection
evaluation does (`Evaluation/eval_detection.py` in github.com/activitynet/ActivityNet), used for
THUMOS14 and ActivityNet alike:

1. the classes are the labels that occur in the ground truth; each is scored on its own;
2. a class's predictions over all videos are sorted by score, highest first;
3. each prediction in turn is matched, at each tIoU threshold, to the not yet matched ground-truth
   segment of its video and class with the highest tIoU, if that tIoU >= the threshold (a true
   positive); otherwise it is a false positive (a second detection of a matched segment included);
4. AP is the area under the precision-recall curve after making precision monotone (each point takes
   the highest precision at any higher recall: the VOC 2011 all-point interpolation);
5. mAP at a threshold is the mean AP over classes; `average_mAP` is the mean over thresholds.

Where the official code leaves something to chance or stops, this module decides as follows:
predictions with equal scores keep their input order (the official `argsort()[::-1]` over an
unstable sort gives no fixed order); among unmatched segments with equal tIoU the first listed is
taken; a class with ground truth but no predictions has AP 0 (as the official code); a predicted
label that never occurs in the ground truth is no class of the average and its predictions are
dropped (the official code raises a KeyError there; dropping them leaves every other class's AP
as the official code computes it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tubelet.models.actionformer import DetectorOutput, WindowOutput

# tIoU thresholds of the two benchmarks (rounded so that 0.7 is the float literal 0.7).
THUMOS14_TIOUS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
ACTIVITYNET_TIOUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
TIOU_PRESETS: dict[str, tuple[float, ...]] = {
    "thumos14": THUMOS14_TIOUS,
    "activitynet": ACTIVITYNET_TIOUS,
}


def segment_iou(segment: Sequence[float], segments: np.ndarray) -> np.ndarray:
    """Temporal IoU of one `(start, end)` with each row of `segments` (N, 2): float64 (N,).

    A pair whose union is empty (two zero-length segments at one instant) has tIoU 0.
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    start, end = float(segment[0]), float(segment[1])
    inter = np.clip(np.minimum(end, segments[:, 1]) - np.maximum(start, segments[:, 0]), 0, None)
    union = (end - start) + (segments[:, 1] - segments[:, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2011): the area under the monotone precision envelope.

    `precision` and `recall` are the cumulative values after each ranked prediction.
    """
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]  # highest precision at this or higher recall
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mprec[steps]))


def class_average_precision(
    ground_truth: Mapping[str, np.ndarray],
    predictions: Sequence[tuple[str, float, float, float]],
    tiou_thresholds: Sequence[float],
) -> np.ndarray:
    """AP of one class at each threshold: float64 (len(tiou_thresholds),).

    `ground_truth`: video -> (N, 2) segments of this class; `predictions`: (video, start, end, score).
    """
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    num_positive = sum(len(v) for v in ground_truth.values())
    if not predictions or num_positive == 0:
        return np.zeros(len(thresholds))
    scores = np.array([p[3] for p in predictions], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")  # highest first; ties keep their input order
    matched = {v: np.zeros((len(thresholds), len(s)), dtype=bool) for v, s in ground_truth.items()}
    tp = np.zeros((len(thresholds), len(predictions)))
    for rank, index in enumerate(order):
        video, start, end, _ = predictions[index]
        segments = ground_truth.get(video)
        if segments is None or len(segments) == 0:
            continue  # no segment of this class in the video: a false positive at every threshold
        tiou = segment_iou((start, end), segments)  # (N,)
        for t, threshold in enumerate(thresholds):
            free = (tiou >= threshold) & ~matched[video][t]
            if free.any():
                best = int(np.argmax(np.where(free, tiou, -1.0)))  # first of the highest
                matched[video][t, best] = True
                tp[t, rank] = 1.0
    tp_cum = np.cumsum(tp, axis=1)
    fp_cum = np.cumsum(1.0 - tp, axis=1)
    recall = tp_cum / num_positive
    precision = tp_cum / (tp_cum + fp_cum)
    return np.array(
        [interpolated_average_precision(p, r) for p, r in zip(precision, recall, strict=True)]
    )


def evaluate_detections(
    ground_truth: Iterable[Mapping[str, Any]],
    predictions: Iterable[Mapping[str, Any]],
    tiou_thresholds: Sequence[float] = THUMOS14_TIOUS,
) -> dict[str, Any]:
    """mAP at each tIoU threshold and their mean, as the ActivityNet detection evaluation computes it.

    `ground_truth`: records `{video, start, end, label}` (seconds); `predictions`: the same plus
    `score`. `tiou_thresholds`: e.g. `THUMOS14_TIOUS` or `ACTIVITYNET_TIOUS`.
    Returns `{"mAP": {tiou: mAP}, "average_mAP": mean, "per_class": {label: [AP per tiou]}}`.
    """
    thresholds = [float(t) for t in tiou_thresholds]
    if not thresholds or not all(0 < t <= 1 for t in thresholds):
        raise ValueError(f"tiou_thresholds must be non-empty values in (0, 1], not {thresholds}")
    truth: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for record in ground_truth:
        video, start, end = _segment_fields(record, "ground truth")
        truth[str(record["label"])][video].append((start, end))
    if not truth:
        raise ValueError("the ground truth holds no segments; mAP is undefined without classes")
    predicted: dict[str, list[tuple[str, float, float, float]]] = defaultdict(list)
    for record in predictions:
        video, start, end = _segment_fields(record, "prediction")
        if "score" not in record:
            raise ValueError(f"prediction {dict(record)} has no score")
        label = str(record["label"])
        if label in truth:
            predicted[label].append((video, start, end, float(record["score"])))
    per_class = {}
    for label in sorted(truth):
        segments = {v: np.asarray(s, dtype=np.float64) for v, s in truth[label].items()}
        per_class[label] = class_average_precision(segments, predicted[label], thresholds)
    ap = np.stack(list(per_class.values()))  # (classes, thresholds)
    mean_ap = ap.mean(axis=0)
    return {
        "mAP": {t: float(v) for t, v in zip(thresholds, mean_ap, strict=True)},
        "average_mAP": float(mean_ap.mean()),
        "per_class": {label: [float(v) for v in values] for label, values in per_class.items()},
    }


def _segment_fields(record: Mapping[str, Any], kind: str) -> tuple[str, float, float]:
    """`(video, start, end)` of one record, with a clear error for a missing field or end < start."""
    missing = [k for k in ("video", "start", "end", "label") if k not in record]
    if missing:
        raise ValueError(f"{kind} record {dict(record)} lacks {', '.join(missing)}")
    start, end = float(record["start"]), float(record["end"])
    if not end >= start:
        raise ValueError(f"{kind} record {dict(record)} ends before it starts")
    return str(record["video"]), start, end


# -- training targets and losses ---------------------------------------------------------------


def regression_ranges(levels: int) -> list[tuple[float, float]]:
    """ActionFormer's ranges of the largest distance (start or end) each level regresses, in
    feature steps: [0, 4], [4, 8], [8, 16], ... and the last level up to infinity."""
    ranges = [(0.0, 4.0)] + [(4.0 * 2 ** (i - 1), 4.0 * 2**i) for i in range(1, levels)]
    ranges[-1] = (ranges[-1][0], math.inf)
    return ranges


def assign_targets(
    points: torch.Tensor,
    segments: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    center_radius: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of every pyramid point for one video (ActionFormer's centre sampling).

    `points` (P, 4): centre, stride, and the regression range (lo, hi), in feature steps;
    `segments` (M, 2) in feature steps with `labels` (M,). A point is positive for a segment when it
    lies within `center_radius` strides of the segment's centre (and inside it) and its largest
    distance to the ends falls in its level's range; of several such segments the shortest wins.
    Returns `cls` float (P, K) (one-hot; zero for background; equally short segments all count) and
    `offsets` float (P, 2): distances to start and end in units of the point's stride.
    """
    num = points.shape[0]
    if segments.numel() == 0:
        return points.new_zeros(num, num_classes), points.new_zeros(num, 2)
    c, s, lo, hi = points[:, :1], points[:, 1:2], points[:, 2:3], points[:, 3:4]  # (P, 1)
    start, end = segments[:, 0][None], segments[:, 1][None]  # (1, M)
    left, right = c - start, end - c  # (P, M)
    middle = (start + end) / 2
    near_left = c - torch.maximum(middle - center_radius * s, start)
    near_right = torch.minimum(middle + center_radius * s, end) - c
    inside = torch.minimum(near_left, near_right) >= 0
    reach = torch.maximum(left, right)
    valid = inside & (reach >= lo) & (reach <= hi)
    length = (end - start).expand(num, -1).masked_fill(~valid, math.inf)  # (P, M)
    shortest, which = length.min(dim=1)  # (P,)
    positive = torch.isfinite(shortest)
    chosen = valid & (length <= shortest[:, None] + 1e-3)  # (P, M)
    one_hot = F.one_hot(labels, num_classes).to(points.dtype)  # (M, K)
    cls = (chosen.to(points.dtype) @ one_hot).clamp(max=1) * positive[:, None]
    rows = torch.arange(num, device=points.device)
    offsets = torch.stack([left[rows, which], right[rows, which]], 1) / s  # (P, 2)
    return cls, offsets * positive[:, None]


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al., 2017, Eq. 5) per element, summed by the caller.

    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), with p_t the probability of the target value.
    """
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Distance-IoU loss (Zheng et al., AAAI 2020) of 1-D segments given as distances from one point.

    `pred`, `target` (N, 2): distances (left, right) >= 0. Symbols: I intersection, U union, C the
    enclosing segment's length, rho the distance between the two segments' centres;
    loss = 1 - I / U + rho^2 / C^2, per row (N,).
    """
    lp, rp = pred[:, 0], pred[:, 1]
    lt, rt = target[:, 0], target[:, 1]
    inter = torch.minimum(lp, lt) + torch.minimum(rp, rt)
    union = lp + rp + lt + rt - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.maximum(lp, lt) + torch.maximum(rp, rt)
    rho = (rp - lp) / 2 - (rt - lt) / 2  # centre of each segment relative to the point
    return 1 - iou + rho**2 / enclosing.clamp(min=eps) ** 2


def pyramid_points(output: DetectorOutput, ranges: Sequence[tuple[float, float]]) -> torch.Tensor:
    """(P, 4) centre, stride, range lo, range hi of every step of every level, levels in order."""
    rows = []
    for logits, stride, (lo, hi) in zip(output.cls_logits, output.strides, ranges, strict=True):
        n = logits.shape[1]
        centre = torch.arange(n, device=logits.device, dtype=torch.float32) * stride
        rows.append(torch.stack([centre, torch.full_like(centre, stride),
                                 torch.full_like(centre, lo), torch.full_like(centre, hi)], 1))  # fmt: skip
    return torch.cat(rows)


# -- decoding ------------------------------------------------------------------------------------


def segment_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """tIoU of every row of `a` (N, 2) with every row of `b` (M, 2): (N, M)."""
    inter = torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(
        a[:, None, 0], b[None, :, 0]
    )
    inter = inter.clamp(min=0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(
    segments: torch.Tensor, scores: torch.Tensor, *, iou_threshold: float = 0.5,
    soft: bool = True, sigma: float = 0.5, min_score: float = 1e-3, max_keep: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Non-maximum suppression of one class's segments (N, 2) and scores (N,); returns kept indices
    (best first) and their scores after suppression.

    Hard NMS drops every segment with tIoU > `iou_threshold` with a kept one. Soft-NMS (Bodla et al.,
    ICCV 2017, Gaussian form) instead multiplies the others' scores by exp(-tIoU^2 / sigma) after
    each pick and drops those that fall below `min_score`.
    """
    scores = scores.clone()
    alive = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
    keep, kept_scores = [], []
    while alive.any() and len(keep) < max_keep:
        best = int(torch.where(alive, scores, torch.full_like(scores, -math.inf)).argmax())
        if scores[best] < min_score:
            break
        keep.append(best)
        kept_scores.append(scores[best])
        alive[best] = False
        iou = segment_iou_matrix(segments[best : best + 1], segments)[0]  # (N,)
        if soft:
            scores = scores * torch.exp(-(iou**2) / sigma)
            alive &= scores >= min_score
        else:
            alive &= iou <= iou_threshold
    index = torch.tensor(keep, dtype=torch.long, device=scores.device)
    return index, (torch.stack(kept_scores) if kept_scores else scores.new_zeros(0))


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding settings: scores kept above `score_threshold`, `top_k` candidates per level,
    segments shorter than `min_length` feature steps dropped, class-wise (soft-)NMS, and at most
    `max_segments` per video."""

    score_threshold: float = 1e-3
    top_k: int = 1000
    min_length: float = 0.05
    soft_nms: bool = True
    iou_threshold: float = 0.5
    sigma: float = 0.5
    max_segments: int = 200


def decode_detections(
    output: DetectorOutput, index: int, config: DecodeConfig = DecodeConfig()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Segments (S, 2) in feature steps, scores (S,) and labels (S,) of video `index` of a batch."""
    all_segments, all_scores, all_labels = [], [], []
    for logits, offsets, mask, stride in zip(
        output.cls_logits, output.offsets, output.masks, output.strides, strict=True
    ):
        valid = mask[index]
        probs = torch.sigmoid(logits[index][valid].float())  # (L_l, K)
        flat = probs.flatten()
        candidates = torch.nonzero(flat > config.score_threshold).squeeze(1)
        if len(candidates) > config.top_k:
            candidates = candidates[flat[candidates].topk(config.top_k).indices]
        step, label = candidates // probs.shape[1], candidates % probs.shape[1]
        centre = torch.nonzero(valid).squeeze(1)[step].float() * stride
        distance = offsets[index][valid].float()[step] * stride  # (C, 2)
        segments = torch.stack([centre - distance[:, 0], centre + distance[:, 1]], 1)
        long_enough = segments[:, 1] - segments[:, 0] > config.min_length
        all_segments.append(segments[long_enough])
        all_scores.append(flat[candidates][long_enough])
        all_labels.append(label[long_enough])
    return class_wise_nms(
        torch.cat(all_segments), torch.cat(all_scores), torch.cat(all_labels), config
    )


def class_wise_nms(
    segments: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, config: DecodeConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Soft-)NMS within each class, then the `max_segments` best overall (by score)."""
    out_segments, out_scores, out_labels = [], [], []
    for label in labels.unique().tolist():
        of_class = torch.nonzero(labels == label).squeeze(1)
        keep, kept = nms(
            segments[of_class], scores[of_class], iou_threshold=config.iou_threshold,
            soft=config.soft_nms, sigma=config.sigma, min_score=config.score_threshold,
            max_keep=config.max_segments,
        )  # fmt: skip
        out_segments.append(segments[of_class][keep])
        out_scores.append(kept)
        out_labels.append(labels[of_class][keep])
    if not out_segments:
        return segments.new_zeros(0, 2), scores.new_zeros(0), labels.new_zeros(0)
    segments, scores, labels = torch.cat(out_segments), torch.cat(out_scores), torch.cat(out_labels)
    order = scores.argsort(descending=True, stable=True)[: config.max_segments]
    return segments[order], scores[order], labels[order]


def windows_to_segments(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sliding-window baseline's decoding of one video's per-step probabilities (L, K + 1)
    (background last): each run of consecutive steps whose most probable class is the same action
    becomes a segment from the run's first step - 0.5 to its last step + 0.5 (feature steps), scored
    by that class's mean probability over the run. Returns segments (S, 2), scores (S,), labels (S,).
    """
    background = probs.shape[1] - 1
    best = probs.argmax(1).tolist()
    segments, scores, labels = [], [], []
    start = 0
    for i in range(1, len(best) + 1):
        if i == len(best) or best[i] != best[start]:
            if best[start] != background:
                segments.append([start - 0.5, i - 0.5])
                scores.append(probs[start:i, best[start]].mean())
                labels.append(best[start])
            start = i
    if not segments:
        return probs.new_zeros(0, 2), probs.new_zeros(0), torch.zeros(0, dtype=torch.long)
    return probs.new_tensor(segments), torch.stack(scores), torch.tensor(labels)


def step_labels(
    segments: torch.Tensor, labels: torch.Tensor, length: int, background: int
) -> torch.Tensor:
    """Per-step class (L,) for the window baseline: the shortest segment whose span holds the step's
    centre (a <= i < b, feature steps), `background` where none does."""
    steps = torch.arange(length, device=segments.device, dtype=segments.dtype)[:, None]  # (L, 1)
    inside = (steps >= segments[None, :, 0]) & (steps < segments[None, :, 1])  # (L, M)
    size = (segments[:, 1] - segments[:, 0])[None].expand(length, -1).masked_fill(~inside, math.inf)
    result = torch.full((length,), background, dtype=torch.long, device=segments.device)
    if len(labels):
        shortest, which = size.min(1)  # (L,)
        result = torch.where(torch.isfinite(shortest), labels[which], result)
    return result


# -- tasks for the trainer ------------------------------------------------------------------------


@dataclass
class DetectionMeter:
    """Collects a pass's predictions (seconds) and scores them against the ground truth of the
    videos seen with `evaluate_detections`."""

    ground_truth: Sequence[Mapping[str, Any]]
    tiou_thresholds: Sequence[float] = THUMOS14_TIOUS
    predictions: list[dict[str, Any]] = field(default_factory=list)
    videos: set[str] = field(default_factory=set)

    def update(self, video: str, predictions: Iterable[dict[str, Any]]) -> None:
        """Add one video's predicted records `{start, end, label, score}`."""
        self.videos.add(video)
        self.predictions.extend({**p, "video": video} for p in predictions)

    def merge(self, other: DetectionMeter) -> None:
        """Add another process's results (a disjoint share of the videos)."""
        if list(other.tiou_thresholds) != list(self.tiou_thresholds):
            raise ValueError("cannot merge detection meters of different tIoU thresholds")
        self.videos |= other.videos
        self.predictions += other.predictions

    def compute(self) -> dict[str, Any]:
        """`average_mAP`, `mAP@<tiou>` per threshold, `per_class_AP`, `num_videos`, `num_predictions`."""
        if not self.videos:
            raise ValueError("no video was evaluated (all unreadable or skipped?)")
        truth = [r for r in self.ground_truth if r["video"] in self.videos]
        result = evaluate_detections(truth, self.predictions, self.tiou_thresholds)
        return {
            "average_mAP": result["average_mAP"],
            **{f"mAP@{t:g}": v for t, v in result["mAP"].items()},
            "per_class_AP": result["per_class"],
            "num_videos": len(self.videos),
            "num_predictions": len(self.predictions),
        }


@dataclass
class _DetectionEvaluation:
    """What both detection tasks share: turning a batch's outputs into records in seconds."""

    classes: Sequence[str]
    videos: Sequence[str]  # dataset index -> video name
    ground_truth: Sequence[Mapping[str, Any]]
    tiou_thresholds: Sequence[float] = THUMOS14_TIOUS

    def new_meter(self) -> DetectionMeter:
        """An empty accumulator for one evaluation pass."""
        return DetectionMeter(self.ground_truth, self.tiou_thresholds)

    @torch.no_grad()
    def evaluate_batch(
        self, model: nn.Module, batch: dict[str, Any], meter: DetectionMeter
    ) -> None:
        """Detect in every video of the batch and add the segments (seconds) to `meter`."""
        for i, records in enumerate(self.predict(model, batch)):
            meter.update(self.videos[int(batch["index"][i])], records)

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """Per video of the batch: records `{start, end, label, score}` in seconds, best first."""
        output = model(batch["features"], batch["mask"])
        results = []
        for i in range(batch["features"].shape[0]):
            segments, scores, labels = self.decode(output, i)
            offset, step = float(batch["offset_s"][i]), float(batch["step_s"][i])
            duration = float(batch["duration_s"][i])
            seconds = (segments.double() * step + offset).clamp(0, duration)
            results.append([
                {"start": float(s), "end": float(e), "label": self.classes[int(k)], "score": float(p)}
                for (s, e), p, k in zip(seconds.tolist(), scores.tolist(), labels.tolist(), strict=True)
                if e > s
            ])  # fmt: skip
        return results

    def decode(self, output: Any, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass
class DetectionTask(_DetectionEvaluation):
    """ActionFormer's training objective: focal loss on every valid point's classes plus
    `reg_weight` x DIoU loss on the positives' distances, both divided by the number of positives."""

    center_radius: float = 1.5
    reg_weight: float = 1.0
    decode_config: DecodeConfig = field(default_factory=DecodeConfig)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean loss of one batch of feature sequences."""
        output: DetectorOutput = model(batch["features"], batch["mask"])
        points = pyramid_points(output, regression_ranges(len(output.strides)))  # (P, 4)
        logits = torch.cat(output.cls_logits, 1).float()  # (B, P, K)
        offsets = torch.cat(output.offsets, 1).float()  # (B, P, 2)
        valid = torch.cat(output.masks, 1)  # (B, P)
        cls_targets, reg_targets = [], []
        for i in range(logits.shape[0]):
            real = batch["labels"][i] >= 0
            cls, reg = assign_targets(
                points, batch["segments"][i][real].float(), batch["labels"][i][real],
                len(self.classes), center_radius=self.center_radius,
            )  # fmt: skip
            cls_targets.append(cls)
            reg_targets.append(reg)
        cls_t, reg_t = torch.stack(cls_targets), torch.stack(reg_targets)  # (B, P, K), (B, P, 2)
        positive = (cls_t.sum(-1) > 0) & valid
        num_pos = positive.sum().clamp(min=1).float()
        cls_loss = sigmoid_focal_loss(logits[valid], cls_t[valid]).sum() / num_pos
        reg_loss = diou_loss_1d(offsets[positive], reg_t[positive]).sum() / num_pos
        return cls_loss + self.reg_weight * reg_loss

    def decode(
        self, output: DetectorOutput, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return decode_detections(output, index, self.decode_config)


@dataclass
class WindowTask(_DetectionEvaluation):
    """The sliding-window baseline: cross-entropy of each step's class (background included),
    decoded by `windows_to_segments`."""

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the real steps of a batch."""
        output: WindowOutput = model(batch["features"], batch["mask"])
        length = output.logits.shape[1]
        targets = torch.stack([
            step_labels(batch["segments"][i][batch["labels"][i] >= 0].float(),
                        batch["labels"][i][batch["labels"][i] >= 0], length, len(self.classes))
            for i in range(output.logits.shape[0])
        ])  # fmt: skip
        return F.cross_entropy(output.logits[output.mask].float(), targets[output.mask])

    def decode(
        self, output: WindowOutput, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probs = output.logits[index][output.mask[index]].float().softmax(-1)
        return windows_to_segments(probs)
