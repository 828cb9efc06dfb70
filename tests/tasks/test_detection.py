import numpy as np
import pytest

from tubelet.tasks.detection import (
    ACTIVITYNET_TIOUS,
    THUMOS14_TIOUS,
    evaluate_detections,
    interpolated_average_precision,
    segment_iou,
)


def gt(video, start, end, label="a"):
    return {"video": video, "start": start, "end": end, "label": label}


def pred(video, start, end, score, label="a"):
    return {"video": video, "start": start, "end": end, "label": label, "score": score}


def test_presets():
    assert THUMOS14_TIOUS == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert ACTIVITYNET_TIOUS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_segment_iou():
    iou = segment_iou((0, 4), np.array([[0, 2], [2, 6], [5, 7], [0, 4]]))
    np.testing.assert_allclose(iou, [0.5, 2 / 6, 0.0, 1.0])
    assert segment_iou((1, 1), np.array([[1, 1]]))[0] == 0.0


def test_interpolated_ap_uses_the_precision_envelope():
    # Ranked TP, FP, TP with 2 positives: precision 1, .5, .667; recall .5, .5, 1.
    ap = interpolated_average_precision(np.array([1, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0]))
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_perfect_detections_score_one():
    truth = [gt("v1", 0, 10), gt("v1", 20, 30, "b"), gt("v2", 5, 6)]
    preds = [{**r, "score": 0.9} for r in truth]
    result = evaluate_detections(truth, preds, ACTIVITYNET_TIOUS)
    assert result["average_mAP"] == 1.0
    assert set(result["mAP"]) == set(ACTIVITYNET_TIOUS)
    assert result["per_class"] == {"a": [1.0] * 10, "b": [1.0] * 10}


def test_tiou_exactly_at_the_threshold_is_a_match():
    # tIoU([0, 2], [0, 4]) is exactly 0.5 and tIoU([0, 3], [0, 4]) exactly 0.75.
    result = evaluate_detections([gt("v", 0, 4)], [pred("v", 0, 2, 0.9)], (0.5, 0.55))
    assert result["mAP"] == {0.5: 1.0, 0.55: 0.0}
    assert result["average_mAP"] == 0.5
    result = evaluate_detections([gt("v", 0, 4)], [pred("v", 0, 3, 0.9)], (0.75, 0.8))
    assert result["mAP"] == {0.75: 1.0, 0.8: 0.0}


def test_duplicate_detection_is_a_false_positive():
    # TP, duplicate of the same segment (FP), TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    truth = [gt("v", 0, 10), gt("v", 20, 30)]
    preds = [pred("v", 0, 10, 0.9), pred("v", 0, 10, 0.8), pred("v", 20, 30, 0.7)]
    result = evaluate_detections(truth, preds, (0.5,))
    assert result["mAP"][0.5] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_ties_keep_input_order():
    # Equal scores: the first listed ranks first. FP then TP -> AP 0.5; TP then FP -> AP 1.
    truth = [gt("v", 0, 10)]
    fp, tp = pred("v", 50, 60, 0.5), pred("v", 0, 10, 0.5)
    assert evaluate_detections(truth, [fp, tp], (0.5,))["average_mAP"] == 0.5
    assert evaluate_detections(truth, [tp, fp], (0.5,))["average_mAP"] == 1.0


def test_greedy_match_takes_the_unmatched_segment_of_highest_tiou():
    # p1 overlaps g1 (tIoU 8/12) more than g2 (8/14), so takes g1. p2 equals g1, already taken;
    # its tIoU with g2 is 6/14 = 0.43: a match at 0.4, a false positive at 0.5.
    truth = [gt("v", 0, 10), gt("v", 4, 14)]
    preds = [pred("v", 2, 12, 0.9), pred("v", 0, 10, 0.8)]
    result = evaluate_detections(truth, preds, (0.4, 0.5))
    assert result["mAP"] == {0.4: 1.0, 0.5: pytest.approx(0.5)}


def test_prediction_in_a_video_without_that_class_is_a_false_positive():
    truth = [gt("v1", 0, 10), gt("v2", 0, 10, "b")]
    preds = [pred("v2", 0, 10, 0.9), pred("v1", 0, 10, 0.8), pred("v2", 0, 10, 0.7, "b")]
    result = evaluate_detections(truth, preds, (0.5,))
    assert result["per_class"] == {"a": [0.5], "b": [1.0]}


def test_classes_without_ground_truth_are_not_averaged_and_missing_predictions_score_zero():
    truth = [gt("v", 0, 10), gt("v", 20, 30, "b")]
    # Class "c" has no ground truth: it is no class of the mean, its predictions are dropped.
    # Class "b" has ground truth but no predictions: AP 0.
    preds = [pred("v", 0, 10, 0.9), pred("v", 40, 50, 0.99, "c")]
    result = evaluate_detections(truth, preds, (0.5,))
    assert result["per_class"] == {"a": [1.0], "b": [0.0]}
    assert result["average_mAP"] == 0.5


def test_bad_records_are_named():
    with pytest.raises(ValueError, match="lacks label"):
        evaluate_detections([{"video": "v", "start": 0, "end": 1}], [], (0.5,))
    with pytest.raises(ValueError, match="no score"):
        evaluate_detections([gt("v", 0, 1)], [gt("v", 0, 1)], (0.5,))
    with pytest.raises(ValueError, match="ends before it starts"):
        evaluate_detections([gt("v", 2, 1)], [], (0.5,))
    with pytest.raises(ValueError, match="tiou_thresholds"):
        evaluate_detections([gt("v", 0, 1)], [], (0.0,))
    with pytest.raises(ValueError, match="no segments"):
        evaluate_detections([], [], (0.5,))


def official_reference(truth, preds, thresholds):
    """The official eval_detection.py algorithm, written out literally (loops, break/continue)."""
    labels = []
    for r in truth:
        if r["label"] not in labels:
            labels.append(r["label"])
    ap = np.zeros((len(thresholds), len(labels)))
    for c, label in enumerate(labels):
        g = [r for r in truth if r["label"] == label]
        p = [r for r in preds if r["label"] == label]
        if not p:
            continue
        npos = float(len(g))
        lock = np.ones((len(thresholds), len(g))) * -1
        order = sorted(range(len(p)), key=lambda i: -p[i]["score"])
        p = [p[i] for i in order]
        tp = np.zeros((len(thresholds), len(p)))
        fp = np.zeros((len(thresholds), len(p)))
        for idx, this in enumerate(p):
            rows = [j for j, r in enumerate(g) if r["video"] == this["video"]]
            if not rows:
                fp[:, idx] = 1
                continue
            tiou = np.array(
                [
                    max(0.0, min(this["end"], g[j]["end"]) - max(this["start"], g[j]["start"]))
                    / (
                        (g[j]["end"] - g[j]["start"])
                        + (this["end"] - this["start"])
                        - max(
                            0.0, min(this["end"], g[j]["end"]) - max(this["start"], g[j]["start"])
                        )
                    )
                    for j in rows
                ]
            )
            sorted_idx = tiou.argsort(kind="stable")[::-1]
            for t, thr in enumerate(thresholds):
                for k in sorted_idx:
                    if tiou[k] < thr:
                        fp[t, idx] = 1
                        break
                    if lock[t, rows[k]] >= 0:
                        continue
                    tp[t, idx] = 1
                    lock[t, rows[k]] = idx
                    break
                if fp[t, idx] == 0 and tp[t, idx] == 0:
                    fp[t, idx] = 1
        rec = np.cumsum(tp, 1) / npos
        prec = np.cumsum(tp, 1) / (np.cumsum(tp, 1) + np.cumsum(fp, 1))
        for t in range(len(thresholds)):
            mprec = np.hstack([[0], prec[t], [0]])
            mrec = np.hstack([[0], rec[t], [1]])
            for i in range(len(mprec) - 1)[::-1]:
                mprec[i] = max(mprec[i], mprec[i + 1])
            idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
            ap[t, c] = np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])
    return ap.mean(1)


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_equal_the_official_algorithm(seed):
    rng = np.random.default_rng(seed)
    videos, labels = ["v0", "v1", "v2", "v3"], ["a", "b", "c"]
    truth, preds = [], []
    for _ in range(rng.integers(5, 25)):
        start = float(rng.uniform(0, 100))
        truth.append(gt(str(rng.choice(videos)), start, start + float(rng.uniform(0.5, 20)),
                        str(rng.choice(labels))))  # fmt: skip
    for _ in range(rng.integers(0, 80)):
        if truth and rng.random() < 0.6:  # a jittered copy of a true segment, often the wrong class
            base = truth[rng.integers(len(truth))]
            start = base["start"] + float(rng.normal(0, 2))
            end = max(start, base["end"] + float(rng.normal(0, 2)))
            video = base["video"]
            label = base["label"] if rng.random() < 0.8 else str(rng.choice(labels))
        else:
            start = float(rng.uniform(0, 100))
            end, video = start + float(rng.uniform(0.5, 20)), str(rng.choice(videos))
            label = str(rng.choice(labels))
        preds.append(pred(video, start, end, float(rng.random()), label))
    thresholds = THUMOS14_TIOUS if seed % 2 else ACTIVITYNET_TIOUS
    result = evaluate_detections(truth, preds, thresholds)
    expected = official_reference(truth, preds, thresholds)
    np.testing.assert_allclose(list(result["mAP"].values()), expected, rtol=0, atol=1e-12)
    assert result["average_mAP"] == pytest.approx(expected.mean(), abs=1e-12)


# -- targets, losses, decoding --------------------------------------------------------------------

import math  # noqa: E402

import torch  # noqa: E402

from tubelet.models.actionformer import ActionFormer, DetectorOutput, WindowClassifier  # noqa: E402
from tubelet.tasks.detection import (  # noqa: E402
    DecodeConfig,
    DetectionTask,
    WindowTask,
    assign_targets,
    decode_detections,
    diou_loss_1d,
    nms,
    regression_ranges,
    sigmoid_focal_loss,
    step_labels,
    windows_to_segments,
)


def points(stride, count, lo, hi):
    c = torch.arange(count, dtype=torch.float32) * stride
    return torch.stack([c, torch.full_like(c, stride), torch.full_like(c, lo),
                        torch.full_like(c, hi)], 1)  # fmt: skip


def test_regression_ranges():
    assert regression_ranges(3) == [(0.0, 4.0), (4.0, 8.0), (8.0, math.inf)]
    assert regression_ranges(1) == [(0.0, math.inf)]


def test_centre_sampling_targets():
    # Segment [2, 6] of class 1. Stride 1 (range 0-4): centre 4 +- 1.5 -> points 3, 4, 5.
    # Stride 2 (range 4-8): centre +- 3 covers the whole segment; points 2 and 6 reach 4.
    pts = torch.cat([points(1, 10, 0, 4), points(2, 5, 4, 8)])
    cls, off = assign_targets(pts, torch.tensor([[2.0, 6.0]]), torch.tensor([1]), 3)
    positive = cls.sum(1) > 0
    assert positive.nonzero().squeeze(1).tolist() == [3, 4, 5, 11, 13]
    assert (cls[positive] == torch.tensor([0.0, 1.0, 0.0])).all()
    assert off[positive].tolist() == [[1, 3], [2, 2], [3, 1], [0, 2], [2, 0]]
    assert (off[~positive] == 0).all()


def test_targets_pick_the_shortest_segment_and_handle_no_segments():
    pts = points(1, 12, 0, math.inf)
    segments = torch.tensor([[0.0, 12.0], [4.0, 8.0]])
    cls, off = assign_targets(pts, segments, torch.tensor([0, 2]), 3, center_radius=10)
    assert cls[6].tolist() == [0, 0, 1] and off[6].tolist() == [2, 2]  # inside both: shorter
    assert cls[2].tolist() == [1, 0, 0] and off[2].tolist() == [2, 10]
    cls, off = assign_targets(pts, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 3)
    assert cls.shape == (12, 3) and not cls.any() and not off.any()


def test_losses_match_hand_values():
    loss = sigmoid_focal_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(loss, torch.tensor([0.25, 0.75]) * 0.25 * math.log(2))
    pred = torch.tensor([[1.0, 1.0], [2.0, 3.0]])
    target = torch.tensor([[1.0, 3.0], [2.0, 3.0]])
    # Row 0: I = 2, U = 4, C = 4, centres 0 and 1 apart: 1 - 0.5 + 1/16.
    torch.testing.assert_close(diou_loss_1d(pred, target), torch.tensor([0.5625, 0.0]))


def test_hard_and_soft_nms():
    segments = torch.tensor([[0.0, 10.0], [1.0, 10.0], [20.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, kept = nms(segments, scores, soft=False, iou_threshold=0.5)
    assert keep.tolist() == [0, 2] and kept.tolist() == pytest.approx([0.9, 0.7])
    keep, kept = nms(segments, scores, soft=True, sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    assert kept.tolist() == pytest.approx([0.9, 0.7, 0.8 * math.exp(-0.81 / 0.5)])
    keep, _ = nms(segments, scores, soft=True, sigma=0.5, min_score=0.2)
    assert keep.tolist() == [0, 2]


def test_decoding_turns_distances_into_segments():
    # One level of stride 2, 4 steps, 2 classes; step 2 (centre 4) says class 1 with distances 1, 2.
    logits = torch.full((1, 4, 2), -10.0)
    logits[0, 2, 1] = 2.0
    offsets = torch.zeros(1, 4, 2)
    offsets[0, 2] = torch.tensor([1.0, 2.0])
    out = DetectorOutput([logits], [offsets], [torch.ones(1, 4, dtype=torch.bool)], [2])
    segments, scores, labels = decode_detections(out, 0, DecodeConfig(score_threshold=0.01))
    assert segments.tolist() == [[2.0, 8.0]] and labels.tolist() == [1]
    assert scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item()])


def test_window_baseline_merges_runs_and_labels_steps():
    #               bg    a     a     bg    b     b      (K = 2, background is index 2)
    probs = torch.tensor([[.1, .1, .8], [.7, .2, .1], [.5, .1, .4], [.2, .1, .7],
                          [.1, .6, .3], [.2, .8, .0]])  # fmt: skip
    segments, scores, labels = windows_to_segments(probs)
    assert segments.tolist() == [[0.5, 2.5], [3.5, 5.5]]
    assert labels.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx([0.6, 0.7])
    steps = step_labels(torch.tensor([[1.0, 3.0], [2.0, 6.0]]), torch.tensor([0, 1]), 7, 2)
    assert steps.tolist() == [2, 0, 0, 1, 1, 1, 2]
    assert (
        step_labels(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 3, 2).tolist() == [2] * 3
    )


def synthetic_batch(seed=0, length=64, dim=8, num_classes=2):
    """Features that carry the class in the first channels inside each segment, noise elsewhere."""
    g = torch.Generator().manual_seed(seed)
    segments = torch.tensor([[4.0, 10.0], [20.0, 44.0], [50.0, 53.0]])
    labels = torch.tensor([0, 1, 0])
    features = 0.3 * torch.randn(1, dim, length, generator=g)
    for (a, b), k in zip(segments.long().tolist(), labels.tolist(), strict=True):
        features[0, k, a:b] += 2.0
        features[0, num_classes + k, a] += 2.0  # start marker
        features[0, 2 * num_classes + k, b - 1] += 2.0  # end marker
    return {
        "features": features, "mask": torch.ones(1, length, dtype=torch.bool),
        "segments": segments[None], "labels": labels[None],
        "offset_s": torch.tensor([0.5], dtype=torch.float64),
        "step_s": torch.tensor([0.5], dtype=torch.float64),
        "duration_s": torch.tensor([32.5], dtype=torch.float64), "index": torch.tensor([0]),
    }  # fmt: skip


def truth_of(batch, classes):
    return [
        {"video": "v", "start": 0.5 + 0.5 * a, "end": 0.5 + 0.5 * b, "label": classes[k]}
        for (a, b), k in zip(
            batch["segments"][0].tolist(), batch["labels"][0].tolist(), strict=True
        )
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["actionformer", "window"])
def test_tiny_models_overfit_one_sequence(kind):
    torch.manual_seed(0)
    batch, classes = synthetic_batch(), ["a", "b"]
    common = {"classes": classes, "videos": ["v"], "ground_truth": truth_of(batch, classes)}
    if kind == "actionformer":
        model = ActionFormer(input_dim=8, num_classes=2, width=32, num_heads=4, window=5,
                             stem_layers=1, levels=4)  # fmt: skip
        task = DetectionTask(**common)
    else:
        model = WindowClassifier(input_dim=8, num_classes=2, hidden=32, context=1, drop=0.0)
        task = WindowTask(**common)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    first = None
    for _ in range(150):
        loss = task.loss(model.train(), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.2 * first
    meter = task.new_meter()
    task.evaluate_batch(model.eval(), batch, meter)
    metrics = meter.compute()
    assert metrics["mAP@0.5"] == 1.0, metrics
    assert metrics["num_videos"] == 1
    if kind == "actionformer":
        assert metrics["mAP@0.7"] == 1.0, metrics
