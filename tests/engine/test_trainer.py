import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tubelet.data.datasets import collate_clips
from tubelet.data.loader import ShuffleSampler
from tubelet.engine.run import RunDir
from tubelet.engine.trainer import OptimConfig, Trainer, warmup_cosine
from tubelet.tasks import ClassificationTask


class Blobs(Dataset):
    """Clips (3, 2, 4, 4) whose class is the sign of their mean; item 0 pretends to be unreadable."""

    def __init__(self, n, seed, bad_first=False):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.videos = torch.randn(n, 3, 2, 4, 4, generator=g) + (self.labels * 2.0 - 1.0).view(
            n, 1, 1, 1, 1
        )
        self.bad_first = bad_first

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.bad_first and i == 0:
            return {
                "video": None,
                "label": -1,
                "index": 0,
                "bad_files": [("/data/broken.mp4", "file is empty")],
            }
        return {"video": self.videos[i], "label": int(self.labels[i]), "index": i, "bad_files": []}


class EvalViews(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        if item["video"] is not None:
            item["video"] = item["video"].unsqueeze(0)  # one view: (1, C, T, H, W)
        return item


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 2))


def _trainer(
    tmp_path, *, epochs=3, batch_size=8, accumulate=1, bad_first=False, model=None, lr=0.05
):
    train = Blobs(64, seed=1, bad_first=bad_first)
    val = EvalViews(Blobs(32, seed=2))
    train_loader = DataLoader(
        train,
        batch_size=batch_size,
        sampler=ShuffleSampler(len(train), 0),
        collate_fn=collate_clips,
    )
    val_loader = DataLoader(val, batch_size=16, collate_fn=collate_clips)
    return Trainer(
        model or _tiny_model(),
        ClassificationTask(2, label_smoothing=0.0),
        train_loader=train_loader,
        val_loader=val_loader,
        config=OptimConfig(
            epochs=epochs, lr=lr, accumulate=accumulate, warmup_epochs=0.5, grad_clip=None
        ),
        run=RunDir(tmp_path),
        spec={"model": "tiny", "model_args": {}},
        show_progress=False,
    )


def test_warmup_then_cosine():
    factors = [warmup_cosine(s, warmup_steps=4, total_steps=12) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    assert factors[8] == pytest.approx(0.5)
    assert factors[12] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))


def test_training_learns_and_writes_the_run_folder(tmp_path):
    summary = _trainer(tmp_path, bad_first=True).fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert summary["val_top1"] > 0.9
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_bad_files"] == 1
    assert summary["bad_files"] == [
        {"path": "/data/broken.mp4", "reason": "file is empty", "split": "train"}
    ]
    for name in (
        "best/model.safetensors",
        "best/model.json",
        "last/model.safetensors",
        "last/trainer_state.pt",
    ):
        assert (tmp_path / name).is_file()


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.fit()

    interrupted = _trainer(tmp_path / "b")
    real_epoch = interrupted._train_epoch
    calls = []

    def crash_in_epoch_two(progress):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(progress)

    interrupted._train_epoch = crash_in_epoch_two
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1

    resumed = _trainer(tmp_path / "b", model=nn.Sequential(nn.Flatten(), nn.Linear(96, 2)))
    summary = resumed.fit()
    assert summary["epochs"] == 3
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_accumulation_gives_the_gradient_of_the_big_batch(tmp_path):
    one = _trainer(tmp_path / "one", epochs=1, batch_size=64)
    two = _trainer(tmp_path / "two", epochs=1, batch_size=16, accumulate=4)
    assert one.steps_per_epoch == two.steps_per_epoch == 1
    one.fit()
    two.fit()
    # After one AdamW step the first moment holds (1 - beta1) * gradient exactly.
    for p1, p2 in zip(one.model.parameters(), two.model.parameters(), strict=True):
        m1 = one.optimizer.state[p1]["exp_avg"]
        m2 = two.optimizer.state[p2]["exp_avg"]
        torch.testing.assert_close(m1, m2, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_trains(tmp_path):
    trainer = _trainer(tmp_path, epochs=2)
    trainer.config = OptimConfig(epochs=2, lr=0.05, precision="bf16", grad_clip=None)
    summary = trainer.fit()
    assert summary["val_top1"] > 0.9
    assert math.isfinite(
        json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]
    )


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        OptimConfig(precision="fp8")
    with pytest.raises(ValueError, match="at least 1"):
        OptimConfig(accumulate=0)
