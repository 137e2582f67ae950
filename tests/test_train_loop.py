"""`svd train` on CPU with the real tiny UNet, VAE and CLIP towers over shards written by `svd pack`:
the loss goes down, resume is exact, NaN stops the run, bad shards are skipped, LoRA and
freezing train only what they should, and a video run inflates an image checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from svdcli.train.loop import NonFiniteLoss
from test_train_helpers import REPO, losses, make_shards, one_thread, run, tiny_overrides  # noqa: F401

@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="module")
def image_run(shards, tmp_path_factory) -> Path:
    """A 2-step image-stage run (text-conditioned): the base checkpoint of later stages."""
    out = tmp_path_factory.mktemp("image") / "run"
    run(out, shards, stage="image", steps=2, **{"cond.mode": "t2v", "optim.lr": 1e-2, "ema.enabled": "false"})
    return out


def ema_file(out: Path) -> dict[str, torch.Tensor]:
    """The UNet of the run's latest exported checkpoint (our format: `unet.*` keys)."""
    tag = (out / "checkpoints" / "latest").read_text().strip()
    state = load_file(str(out / "checkpoints" / tag / "ema.safetensors"))
    assert all(k.startswith("unet.") for k in state)
    return {k[len("unet."):]: v for k, v in state.items()}


def eval_loss(state: dict[str, torch.Tensor], data: Path) -> float:
    """EDM loss of a UNet state on fixed batches, fixed sigmas and fixed noise."""
    from svdcli.diffusion.edm import Denoiser, edm_loss
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.families.svd.batch import prepare_batch
    from svdcli.train.config import load_config
    from svdcli.families.svd.encoders import tiny_encoders
    from svdcli.shards.loader import make_loader

    cfg = load_config(REPO / "pipelines/train/video.yaml", tiny_overrides(**{"cond.dropout": 0.0}))
    unet = VideoUNet(UNetConfig.tiny())
    unet.load_state_dict(state)
    enc, total = tiny_encoders(unet.cfg, cfg.seed), 0.0
    loader = make_loader(str(data), batch_size=2, num_frames=2, num_workers=0, shuffle=0, rank=0, world_size=1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for video, meta in loader:
            batch = prepare_batch(video, meta, enc, cfg, gen, "cpu")
            sigma = torch.tensor([0.3, 2.0])
            total += float(edm_loss(Denoiser(unet), batch.x0, batch.cond, 2, sigma=sigma, generator=gen).mean())
    return total


def test_tiny_model_trained_50_steps_denoises_better(shards, tmp_path):
    from svdcli.train.config import load_config
    from svdcli.families.svd.network import build_denoiser

    summary = run(tmp_path / "run", shards, steps=50, tensorboard=True,
                  **{"optim.lr": 1e-3, "ema.enabled": "false"})
    assert summary["steps"] == 50 and summary["ranks_agree"]
    cfg = load_config(REPO / "pipelines/train/video.yaml", tiny_overrides())
    initial = {k[4:]: v for k, v in build_denoiser(cfg).state_dict().items()}  # strip "net."
    before, after = eval_loss(initial, shards), eval_loss(ema_file(tmp_path / "run"), shards)
    assert after < 0.8 * before, (before, after)
    log = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    scalars = [l for l in log if "loss" in l]
    assert len(scalars) == 50 and {"lr", "grad_norm", "samples_per_s", "loss_by_sigma"} <= set(scalars[-1])
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_resume_follows_the_uninterrupted_loss_trajectory(shards, tmp_path):
    common = {"ema.decay": 0.9, "checkpoint_every": 3}
    run(tmp_path / "full", shards, steps=7, **common)
    run(tmp_path / "split", shards, steps=3, **common)
    run(tmp_path / "split", shards, steps=7, resume=True, **common)  # crosses an epoch (4 batches)
    # the same steps on the same batches: equal but for rounding (a kernel may round an ulp
    # differently on a differently aligned buffer, and Adam carries that a few steps on)
    np.testing.assert_allclose(losses(tmp_path / "split"), losses(tmp_path / "full"), rtol=1e-5, atol=0)
    full, split = ema_file(tmp_path / "full"), ema_file(tmp_path / "split")
    for k in full:
        torch.testing.assert_close(split[k], full[k], rtol=1e-5, atol=1e-7, msg=lambda m: f"{k}: {m}")
    with pytest.raises(Exception, match="already holds checkpoints"):
        run(tmp_path / "full", shards, steps=8)


def test_ema_export_is_the_formula_applied_to_each_steps_live_weights(shards, tmp_path):
    """theta_ema <- decay theta_ema + (1 - decay) theta after every optimizer step, from the
    initial weights (no warm-up), recomputed here from the live weights of each checkpoint."""
    from svdcli.train.config import load_config
    from svdcli.families.svd.network import build_denoiser

    decay, out = 0.6, tmp_path / "run"
    run(out, shards, steps=3, checkpoint_every=1, keep_checkpoints=3, **{"ema.decay": decay, "optim.lr": 1e-2})
    cfg = load_config(REPO / "pipelines/train/video.yaml", tiny_overrides())
    expected = {k[len("net."):]: v.double() for k, v in build_denoiser(cfg).state_dict().items()}
    for step in (1, 2, 3):
        live = torch.load(out / f"checkpoints/step_{step:06d}/mp_rank_00_model_states.pt",
                          weights_only=False)["module"]
        expected = {k: decay * e + (1 - decay) * live["net." + k].double() for k, e in expected.items()}
    got = ema_file(out)
    assert set(got) == set(expected)
    for k in expected:
        torch.testing.assert_close(got[k].double(), expected[k], atol=1e-6, rtol=1e-5, msg=k)
    moved = [k for k in expected if (live["net." + k].double() - expected[k]).abs().max() > 1e-4]
    assert len(moved) > len(expected) // 2  # the EMA lags the live weights: not a copy of them


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(shards, tmp_path, monkeypatch):
    import svdcli.diffusion.edm as edm

    real, calls = edm.edm_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return out * float("nan") if len(calls) == 4 else out

    monkeypatch.setattr(edm, "edm_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match="step 4.*step_000002"):
        run(tmp_path / "run", shards, steps=6, checkpoint_every=2)
    assert (tmp_path / "run/checkpoints/latest").read_text().strip() == "step_000002"
    assert not (tmp_path / "run/checkpoints/step_000004").exists()
    events = [json.loads(l) for l in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "nonfinite_loss" and events[-1]["kept"] == "step_000002"
    # what the message suggests: resume from the kept checkpoint with a lower lr
    run(tmp_path / "run", shards, steps=5, checkpoint_every=2, resume=True, **{"optim.lr": 1e-5})
    logged = [json.loads(l) for l in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [(l["step"], l["lr"]) for l in logged if "loss" in l][-3:] == [(3, 1e-5), (4, 1e-5), (5, 1e-5)]
    with pytest.raises(Exception, match="differs from the run's saved config in noise.p_mean"):
        run(tmp_path / "run", shards, steps=6, resume=True, **{"noise.p_mean": 0.5})


def test_missing_and_corrupt_shards_are_skipped_and_counted(shards, tmp_path):
    data = tmp_path / "shards"
    shutil.copytree(shards, data)
    (data / "000001.tar").unlink()
    (data / "000002.tar").write_bytes((data / "000002.tar").read_bytes()[:700])  # truncated
    with pytest.warns(UserWarning, match="skipping shard"):
        # also the GPU settings: bf16 and activation checkpointing
        summary = run(tmp_path / "run", data, steps=2, precision="bf16", activation_checkpointing="true",
                      **{"data.batch_size": 1})
    assert summary["skipped_shards"] == 2
    assert {s["reason"].split(" ")[0] for s in summary["skipped"]} == {"missing", "corrupt"}


def test_lora_finetune_changes_only_lora_weights(shards, image_run, tmp_path):
    from svdcli.train.config import load_config
    from svdcli.families.svd.network import build_denoiser

    over = {"lora.rank": 16, "optim.lr": 1e-2, "ema.enabled": "false"}
    run(tmp_path / "run", shards, stage="finetune", init=image_run, steps=3, **over)
    trained = torch.load(tmp_path / "run/checkpoints/step_000003/mp_rank_00_model_states.pt",
                         weights_only=False)["module"]
    cfg = load_config(REPO / "pipelines/train/finetune.yaml", tiny_overrides(**over))
    initial = build_denoiser(cfg, init=image_run).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert changed and all(k.endswith("lora_B") or k.endswith("lora_A") for k in changed)
    # every wrapped projection trains, but for attn2's q and k: softmax over one CLIP token is 1
    lora_b = {k for k in initial if k.endswith("lora_B")}
    dead = {k for k in lora_b if ".attn2.to_q." in k or ".attn2.to_k." in k}
    assert {k for k in changed if k.endswith("lora_B")} == lora_b - dead
    merged = ema_file(tmp_path / "run")  # exported as a plain UNet with LoRA merged in
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    VideoUNet(UNetConfig.tiny()).load_state_dict(merged, strict=True)
    # the LoRA alone: only its matrices, the base it fits, and base + file = the merged export
    from svdcli.families.svd.network import read_state
    from svdcli.models.lora import base_digest, merge_loras
    from svdcli.models.lora_file import read_lora_file

    lora = read_lora_file(tmp_path / "run/lora.safetensors")
    assert set(lora.tensors) == {k[len("net."):] for k in initial if k.endswith(("lora_A", "lora_B"))}
    assert lora.rank == 16 and lora.metadata["step"] == "3"
    base = read_state(image_run, cfg)
    assert lora.base_digest == base_digest(base)
    assert (tmp_path / "run/checkpoints/step_000003/lora.safetensors").read_bytes() == \
        (tmp_path / "run/lora.safetensors").read_bytes()
    rebuilt = merge_loras(base, [(lora, 1.0)])
    for k, v in merged.items():
        torch.testing.assert_close(rebuilt[k], v, atol=1e-6, rtol=0)
    # a resumed run (no --init: the base comes from the checkpoint) records the same base
    run(tmp_path / "run", shards, stage="finetune", resume=True, steps=4, **over)
    resumed = read_lora_file(tmp_path / "run/lora.safetensors")
    assert resumed.metadata["step"] == "4" and resumed.base_digest == lora.base_digest


def test_video_stage_inflates_an_image_checkpoint_and_freezes_spatial_layers(shards, image_run, tmp_path):
    from svdcli.families.svd.inflate import is_temporal

    from safetensors.torch import save_file

    # the image model without temporal layers, laid out like an SD 2.1 file
    image = {k: v for k, v in ema_file(image_run).items() if not is_temporal(k)}
    save_file({f"model.diffusion_model.{k}": v for k, v in image.items()}, str(tmp_path / "image.safetensors"))
    run(tmp_path / "video", shards, init=tmp_path / "image.safetensors", steps=2,
        **{"freeze_spatial": "true", "optim.lr": 1e-2, "ema.enabled": "false"})
    video = ema_file(tmp_path / "video")
    assert all(torch.equal(image[k], video[k]) for k in image)
    temporal = [k for k in video if is_temporal(k)]
    assert temporal and any(not torch.equal(ema_file(image_run)[k], video[k]) for k in temporal)
