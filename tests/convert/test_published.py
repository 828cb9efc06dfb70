"""What published checkpoints ship about their use: class names and preprocessing, per format."""

import json

import pytest
from torchvision.models.video import R2Plus1D_18_Weights, Swin3D_T_Weights

from tubelet.convert.published import kinetics400_classes, published_use


def test_torchvision_names_and_preprocessing_come_from_its_weight_entry(tmp_path):
    use = published_use("r2plus1d_18", tmp_path / "r.pth", "torchvision", 400)
    assert use.classes == tuple(R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"])
    assert use.classes[0] == "abseiling" and len(use.classes) == 400
    pre = use.preprocessing
    assert pre["mean"] == pytest.approx((0.43216, 0.394666, 0.37645))
    assert pre["std"] == pytest.approx((0.22803, 0.22145, 0.216989))
    assert (pre["resize"], pre["crop"], pre["frames"]) == (128, 112, 16)  # 128x171, 112, clip_len
    assert (pre["sampling"], pre["stride"]) == ("dense", 2)  # 15 fps of a 30 fps video
    swin = published_use("swin3d_t", tmp_path / "s.pth", "torchvision", 400).preprocessing
    assert swin["mean"] == pytest.approx(Swin3D_T_Weights.KINETICS400_V1.transforms().mean)
    assert (swin["resize"], swin["crop"], swin["frames"]) == (256, 224, 32)


def test_a_head_of_other_classes_is_numbered_with_a_note(tmp_path):
    use = published_use("r3d_18", tmp_path / "r.pth", "torchvision", 7)
    assert use.classes == tuple(f"class {i}" for i in range(7))
    assert any("400 classes, the head has 7" in note for note in use.notes)
    with pytest.raises(ValueError, match="no weights for 'i3d_r50'"):
        published_use("i3d_r50", tmp_path / "r.pth", "torchvision", 400)


def test_transformers_folders_give_id2label_and_their_processor(tmp_path):
    config = {"id2label": {"1": "bowling", "0": "archery", "2": "surfing"}, "num_frames": 4,
              "image_size": 32}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    processor = {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3],
                 "size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32},
                 "do_center_crop": True}  # fmt: skip
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    use = published_use("vit_s_16_video", tmp_path, "transformers", 3)
    assert use.classes == ("archery", "bowling", "surfing") and use.notes == ()
    assert use.preprocessing == {
        "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "resize": 40, "crop": 32, "frames": 4,
        "sampling": "uniform", "stride": 1,
    }  # fmt: skip

    (tmp_path / "preprocessor_config.json").unlink()  # a model folder without its processor
    use = published_use("vit_s_16_video", tmp_path, "transformers", 3)
    assert use.preprocessing["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert use.preprocessing["crop"] == 32
    assert any("no preprocessor_config.json" in note for note in use.notes)


def test_pytorchvideo_and_pyslowfast_use_their_documented_statistics_and_clips(tmp_path):
    for fmt in ("pytorchvideo", "pyslowfast"):
        use = published_use("slowfast_r50", tmp_path / "s.pyth", fmt, 400)
        assert use.classes == kinetics400_classes()
        assert use.preprocessing == {
            "mean": (0.45, 0.45, 0.45), "std": (0.225, 0.225, 0.225), "resize": 256, "crop": 256,
            "frames": 32, "sampling": "dense", "stride": 2,
        }  # fmt: skip
    slow = published_use("slow_r50", tmp_path / "s.pyth", "pytorchvideo", 400).preprocessing
    assert (slow["frames"], slow["stride"]) == (8, 8)
    with pytest.raises(ValueError, match="not 'r3d_18'"):
        published_use("r3d_18", tmp_path / "s.pyth", "pytorchvideo", 400)
    with pytest.raises(ValueError, match="ships no class names"):
        published_use("raft_small", tmp_path / "r.pth", "raft", 1)
