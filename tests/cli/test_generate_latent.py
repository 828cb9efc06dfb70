"""The latent path end to end: `tubelet train --task autoencoder` (wan_vae), then
`tubelet train --task generation --model wan_dit -m vae=RUN` (flow matching on its latents,
classes as text-embedding stand-ins or per-class files), then `tubelet generate`."""

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tubelet.cli.main import app

runner = CliRunner()
COMMON = ["--size", "16", "--frames", "4", "--epochs", "1", "--batch-size", "4", "--workers", "0",
          "--sampling", "dense"]  # fmt: skip
VAE = ["-m", "width=4", "-m", "z_dim=4", "-m", "dim_mult=[1,2]", "-m", "num_res_blocks=1",
       "-m", "temporal_downsample=[false]", "-m", "latents_mean=null", "-m", "latents_std=null"]  # fmt: skip
DIT = ["-m", "in_channels=4", "-m", "width=16", "-m", "num_heads=2", "-m", "ffn_dim=32",
       "-m", "num_layers=1", "-m", "text_dim=8", "-m", "freq_dim=16"]  # fmt: skip


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_vae_then_latent_dit_then_samples(tiny_dataset, tmp_path):
    vae = tmp_path / "vae"
    result = invoke("train", "--task", "autoencoder", "--data", tiny_dataset, *COMMON,
                    "--model", "wan_vae", *VAE, "--out", vae)  # fmt: skip
    assert result.exit_code == 0, result.output

    classes = (tiny_dataset / "classes.txt").read_text().split()
    texts = tmp_path / "texts"
    texts.mkdir()
    for i, name in enumerate(classes):
        save_file(
            {"context": torch.full((i % 3 + 1, 8), float(i))}, str(texts / f"{name}.safetensors")
        )
    gen = tmp_path / "gen"
    result = invoke("train", "--task", "generation", "--data", tiny_dataset, *COMMON,
                    "--model", "wan_dit", *DIT, "-t", f"vae={vae}", "-t", f"text_embeddings={texts}",
                    "-t", "shift=2.0", "--out", gen)  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = json.loads((gen / "best" / "model.json").read_text())
    diffusion = spec["task_args"]["diffusion"]
    assert diffusion["objective"] == "flow" and len(diffusion["latents_std"]) == 4

    out = tmp_path / "samples.gif"
    result = invoke("generate", "--checkpoint", gen, "--num", "1", "--steps", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0

    bad = tmp_path / "bad"
    result = invoke("train", "--task", "generation", "--data", tiny_dataset, *COMMON,
                    "--model", "wan_dit", *DIT, "-t", "objective=ddpm", "--out", bad)  # fmt: skip
    assert result.exit_code == 2 and "flow matching" in result.output


@pytest.mark.slow
def test_lora_on_a_diffusers_base_saves_the_adapter_and_samples(tiny_dataset, tmp_path):
    from diffusers import WanTransformer3DModel

    from tubelet.nn.lora import read_adapter

    torch.manual_seed(0)
    base = tmp_path / "base"
    WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=3,
        out_channels=3, text_dim=8, freq_dim=16, ffn_dim=32, num_layers=1,
    ).save_pretrained(base)  # fmt: skip
    run = tmp_path / "lora"
    result = invoke("train", "--task", "generation", "--data", tiny_dataset, *COMMON,
                    "--model", "wan_dit", "-m", f"checkpoint={base}", "-m", "checkpoint_format=diffusers",
                    "--lora-rank", "2", "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    spec, tensors = read_adapter(run / "adapter.safetensors")
    assert spec.rank == 2 and all(".lora_" in k for k in tensors)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trained_params"] == sum(v.numel() for v in tensors.values())
    assert summary["trained_params"] < 0.2 * summary["params"]

    out = tmp_path / "lora.gif"
    result = invoke("generate", "--checkpoint", run, "--num", "1", "--steps", "2", "--out", out)
    assert result.exit_code == 0, result.output

    result = invoke("train", "--data", tiny_dataset, *COMMON, "--lora-rank", "2",
                    "--out", tmp_path / "cls")  # fmt: skip
    assert result.exit_code == 2 and "--lora-rank" in result.output
