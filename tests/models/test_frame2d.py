"""The per-frame baseline: frames are classified independently and their logits averaged."""

import torch

from tubelet.models import create_model


def model_and_clip(frames: int = 4):
    torch.manual_seed(0)
    model = create_model("frame2d_resnet18", num_classes=6, width=8).eval()
    with torch.no_grad():  # non-trivial head so averaging errors show
        model.fc.weight.normal_()
        model.fc.bias.normal_()
    clip = torch.randn(2, 3, frames, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, clip


def test_logits_are_the_mean_of_per_frame_logits():
    model, clip = model_and_clip()
    with torch.no_grad():
        per_frame = torch.stack([model(clip[:, :, t : t + 1]) for t in range(clip.shape[2])])
        torch.testing.assert_close(model(clip), per_frame.mean(0))


def test_features_keep_batch_and_time_apart():
    model, clip = model_and_clip()
    with torch.no_grad():
        feats = model.forward_features(clip)  # (B, D, T, h, w)
        assert feats.shape == (2, 64, 4, 1, 1)
        alone = model.forward_features(clip[1:, :, 2:3])  # sample 1, frame 2 on its own
    torch.testing.assert_close(feats[1:, :, 2:3], alone)


def test_frame_order_does_not_matter():
    model, clip = model_and_clip()
    with torch.no_grad():
        torch.testing.assert_close(model(clip.flip(2)), model(clip))


def test_single_frame_and_long_clips():
    model, clip = model_and_clip(frames=1)
    assert model(clip).shape == (2, 6)
    model, clip = model_and_clip(frames=12)
    assert model(clip).shape == (2, 6)
