"""Zero-shot classification with VideoPrism's video-text model: texts from the folder's own
tokenizer, the clip prepared as the model takes it, scores equal to the peer's."""

import json

import pytest
import torch
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.data.text import TextTokenizer
from tubelet.data.transforms import EvalTransform
from tubelet.io import VideoReader
from tubelet.jobs.zero_shot import LOGIT_SCALE, evaluate_zero_shot, predict_zero_shot

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "VideoPrismClipModel"):
    pytest.skip("this transformers has no VideoPrism", allow_module_level=True)
from transformers import VideoPrismClipModel, VideoPrismConfig, VideoPrismTokenizer  # noqa: E402

WORDS = ["▁a", "▁riding", "▁bike", "▁walking", "▁dog", "▁move", "▁left", "▁right", "▁up", "▁down",
         "▁zoom", "▁in", "▁out", "▁rotate", "▁cw", "▁ccw", "▁appear", "▁disappear", "ing", "s"]  # fmt: skip
VISION = {
    "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48, "num_spatial_layers": 1,
    "num_temporal_layers": 1, "tubelet_size": [1, 8, 8], "image_size": 32, "num_frames": 4,
    "num_auxiliary_layers": 1,
}  # fmt: skip
TEXT = {
    "vocab_size": 3 + len(WORDS) + 1, "hidden_size": 32, "intermediate_size": 48,
    "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 8,
}  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A VideoPrismClipModel folder with random weights and a small tokenizer built here."""
    path = tmp_path_factory.mktemp("videoprism_lvt")
    torch.manual_seed(0)
    peer = VideoPrismClipModel(VideoPrismConfig(vision_config=VISION, text_config=TEXT)).eval()
    with torch.no_grad():
        for p in peer.parameters():
            p.normal_(0.0, 0.3)
    peer.save_pretrained(path)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(w, -3.0 - i) for i, w in enumerate(WORDS)]
    tokenizer = VideoPrismTokenizer(vocab=vocab, extra_ids=0)
    tokenizer.save_pretrained(path)
    return path, peer, tokenizer


def test_the_folder_tokenizer_gives_the_peer_tokenizer_ids(folder):
    path, _, peer_tokenizer = folder
    texts = ["riding a bike", "walking a dog s", "a"]
    ids, mask = TextTokenizer.from_folder(path)(texts, 8)
    expected = peer_tokenizer(texts, padding="max_length", max_length=8, truncation=True)
    assert ids.tolist() == expected["input_ids"]
    assert mask.long().tolist() == expected["attention_mask"]


def test_predict_ranks_labels_by_the_peer_similarity(folder, tiny_dataset):
    path, peer, peer_tokenizer = folder
    video = sorted((tiny_dataset / "videos").rglob("*.mp4"))[0]
    labels = ["riding a bike", "walking a dog", "zoom in"]
    ranked = predict_zero_shot(video, labels, model="videoprism_lvt_b", checkpoint=path)
    # The peer on the same frames: 4 uniformly sampled, 32 px, values in [0, 1].
    with VideoReader(video) as reader:
        n = reader.num_frames
        frames = reader.get_frames([int((i + 0.5) * n / 4) for i in range(4)]).data
    x = EvalTransform(size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(frames)
    text = peer_tokenizer(labels, padding="max_length", max_length=8, return_tensors="pt")
    with torch.no_grad():
        out = peer(
            x.transpose(1, 2), input_ids=text["input_ids"], attention_mask=text["attention_mask"]
        )
    similarity = (out.video_embeds @ out.text_embeds.T)[0]
    assert [r["label"] for r in ranked] == [labels[i] for i in similarity.argsort(descending=True)]
    for row in ranked:
        assert abs(row["similarity"] - similarity[row["index"]].item()) <= 1e-4
    probs = (LOGIT_SCALE * similarity).softmax(-1)
    assert abs(ranked[0]["probability"] - probs[ranked[0]["index"]].item()) <= 1e-4

    result = CliRunner().invoke(app, [
        "predict", str(video), "--model", "videoprism_lvt_b", "--checkpoint", str(path),
        "--labels", labels[0], "--labels", labels[1], "--labels", labels[2], "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)["predictions"]
    assert [r["class"] for r in printed] == [r["label"] for r in ranked]
    refused = CliRunner().invoke(app, [
        "predict", str(video), "--model", "videoprism_b", "--checkpoint", str(path),
        "--labels", "a", "--labels", "b",
    ])  # fmt: skip
    assert refused.exit_code == 2 and "config.json describes" in refused.output


def test_eval_zero_shot_scores_the_val_split_by_class_names(folder, tiny_dataset):
    path, _, _ = folder
    metrics = evaluate_zero_shot(
        tiny_dataset, model="videoprism_lvt_b", checkpoint=path, show_progress=False
    )
    assert metrics["texts"][:2] == ["move left", "move right"]
    assert metrics["num_videos"] == 10 and 0.0 <= metrics["top1"] <= 1.0
    assert "reversal_acc" in metrics
    result = CliRunner().invoke(app, [
        "eval", "--zero-shot", "--model", "videoprism_lvt_b", "--checkpoint", str(path),
        "--data", str(tiny_dataset),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "top1" in result.output
