"""What the frozen image model of a Video LDM is fed, in training and in sampling: what it was
trained with. Our image stage sees its micro-conditioning vector from the clip metadata (as
`svd train --stage image` fed it), SD 2.x models have none; the unconditional text branch is
the empty prompt's embedding for SD (its own training and sampling), zeros for ours."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from svdcli.errors import SvdError
from svdcli.families import family_for
from random_weights import randomize_
from test_train_helpers import one_thread  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
T = 2


def config(model: str = "tiny", family: str = "video_ldm", stage: str = "video", **extra):
    from svdcli.train.config import config_from_dict

    values = {"family": family, "stage": stage, "model": model, "precision": "fp32", "seed": 3,
              "cond": {"mode": "t2v", "dropout": 0.0, "text_dropout": 0.0},
              "data": {"frames": T if stage != "image" else 1, "height": 64, "width": 64}}
    for key, value in extra.items():
        section, _, name = key.partition(".")
        values.setdefault(section, {})[name] = value if name else None
    return config_from_dict(values)


def loader_batch(b: int = 2):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(b, T, 3, 64, 64, generator=g) * 2 - 1
    meta = {"caption": [f"clip {i}" for i in range(b)], "fps_id": torch.tensor([3.0, 11.0]),
            "motion_bucket_id": torch.tensor([20.0, 200.0])}
    return video, meta


def prepare(cfg, video, meta):
    family = family_for(cfg.family)
    return family.prepare(video, meta, family.encoders(cfg, "cpu"), cfg, torch.Generator().manual_seed(1), "cpu")


def test_our_image_stage_sees_the_micro_conditioning_it_was_trained_with():
    video, meta = loader_batch()
    batch = prepare(config("tiny"), video, meta)
    image = prepare(config("tiny", family="svd", stage="image"), video[:, :1], meta)   # what the image stage fed it
    torch.testing.assert_close(batch.cond["vector"][::T], image.cond["vector"], rtol=0, atol=0)   # copied values
    torch.testing.assert_close(batch.cond["vector"][1::T], image.cond["vector"], rtol=0, atol=0)
    assert batch.cond["vector"][0].ne(batch.cond["vector"][T]).any()                 # each clip its own values
    # and the frozen image model does respond to it: zeroing it (as before) changes its prediction
    denoiser = family_for("video_ldm").build(config("tiny")).eval()
    randomize_(denoiser, 0)                                   # a trained model's output layer is not zero
    with torch.no_grad():
        d = denoiser(batch.x0, torch.tensor(1.0), batch.cond, T)
        zeroed = denoiser(batch.x0, torch.tensor(1.0), {**batch.cond, "vector": torch.zeros_like(batch.cond["vector"])}, T)
    assert (d - zeroed).abs().max() > 1e-5                    # measured 2e-4; float32 rounding is ~1e-7 here


def test_sd_models_take_no_vector_and_drop_captions_to_the_empty_prompt():
    video, meta = loader_batch()
    kept = prepare(config("tiny_sd21"), video, meta)
    assert set(kept.cond) == {"crossattn"}                                     # no concat slot, no vector
    dropped = prepare(config("tiny_sd21", **{"cond.dropout": 0.999}), video, meta)
    empty = family_for("video_ldm").encoders(config("tiny_sd21"), "cpu").embed_text([""]).float()
    # computed in a batch of two, so equal up to float32 rounding
    torch.testing.assert_close(dropped.cond["crossattn"], empty.expand(2 * T, -1, -1), rtol=1e-5, atol=1e-5)
    assert (kept.cond["crossattn"] - dropped.cond["crossattn"]).abs().max() > 1e-3
    ours = prepare(config("tiny", **{"cond.dropout": 0.999}), video, meta)
    assert ours.cond["crossattn"].abs().max() == 0                              # our image stage: zeros


def export(tmp_path: Path, cfg) -> Path:
    family = family_for("video_ldm")
    state = {k: v for k, v in family.build(cfg).state_dict().items()}
    path = tmp_path / f"{cfg.family_config.model}.safetensors"
    family.save(path, state, cfg, {"family": "video_ldm", "train_config": json.dumps(cfg.to_dict()), "step": "1"})
    return path


def sampling_conditions(path: Path, **options):
    from svdcli.families.base import read_header
    from svdcli.sample.options import SampleOptions, resolve

    model = family_for("video_ldm").load(read_header(path))
    opts = resolve(SampleOptions(prompt="a red car", **options), model, None, warn=lambda _: None)
    ins = model.family.sampling_inputs(model, None, opts, torch.device("cpu"), torch.float32)
    return model, ins


def test_sampling_feeds_the_same_conditioning(tmp_path):
    from svdcli.models.conditioner import vector_embedding

    model, ins = sampling_conditions(export(tmp_path, config("tiny")))
    torch.testing.assert_close(ins.cond["vector"], vector_embedding(6, 127, 0.0, dim=8), rtol=0, atol=0)
    assert ins.uncond["crossattn"].abs().max() == 0 and ins.cond["crossattn"].abs().max() > 0
    _, other = sampling_conditions(export(tmp_path, config("tiny")), fps_id=3, motion_bucket_id=40)
    torch.testing.assert_close(other.cond["vector"], vector_embedding(3, 40, 0.0, dim=8), rtol=0, atol=0)

    sd = export(tmp_path, config("tiny_sd21"))
    model, ins = sampling_conditions(sd)
    assert "vector" not in ins.cond and "concat" not in ins.cond
    empty = model.encoders.embed_text([""]).float()
    torch.testing.assert_close(ins.uncond["crossattn"], empty, rtol=0, atol=0)
    with pytest.raises(SvdError, match="no micro-conditioning"):
        sampling_conditions(sd, fps_id=3)


def test_a_checkpoint_is_rebuilt_from_the_unet_config_it_saved(tmp_path, monkeypatch):
    """The resolved UNet config travels in the export: a `model:` preset that changes later does
    not change what a checkpoint loads as; files written before it was saved use the preset."""
    import svdcli.families.video_ldm.image_base as image_base
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from svdcli.families.base import read_header
    from svdcli.models.config import UNetConfig

    path = export(tmp_path, config("tiny"))
    assert json.loads(read_header(path).metadata["unet_config"]) == image_base.network_config(config("tiny").family_config).to_dict()
    old = tmp_path / "old.safetensors"                       # as exports were written before
    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "unet_config"}
    save_file(load_file(str(path)), str(old), metadata=meta)
    before = family_for("video_ldm").load(read_header(path)).denoiser.net.cfg
    monkeypatch.setattr(image_base, "network_config", lambda own: UNetConfig.tiny(model_channels=64))
    assert family_for("video_ldm").load(read_header(path)).denoiser.net.cfg == before
    with pytest.raises(SvdError, match="does not fit the Video LDM network its config describes .size mismatch"):
        family_for("video_ldm").load(read_header(old))           # the old file reads the (changed) preset
    monkeypatch.undo()
    assert family_for("video_ldm").load(read_header(old)).denoiser.net.cfg == before


def test_a_full_size_model_without_its_weights_file_says_what_to_fetch():
    from svdcli.errors import MissingWeightsError

    for model, name in (("sd21", "v2-1_768-ema-pruned.safetensors"), ("x4_upscaler", "x4-upscaler-ema.safetensors")):
        cfg = config(model, stage="upsample" if model == "x4_upscaler" else "video")
        with pytest.raises(MissingWeightsError, match=name):
            family_for("video_ldm").encoders(cfg, "cpu")


def test_the_upsampler_trains_on_one_random_patch_per_video_with_its_noise_level():
    """Sec. 3.4: patches, the same crop in every frame of a video; x0 the 4x upscaler's latents of the
    patch (on the low-resolution grid), concat its noise-augmented low-resolution frames, the level per video."""
    from svdcli.families.video_ldm.upsample import random_patches

    g = torch.Generator().manual_seed(0)
    video = torch.rand(3, T, 3, 128, 128, generator=g) * 2 - 1
    crops = random_patches(video, 64, torch.Generator().manual_seed(1))
    assert crops.shape == (3, T, 3, 64, 64)
    starts = []
    for v in range(3):                                            # where each video's crop came from
        hits = [(y, x) for y in range(65) for x in range(65)
                if torch.equal(video[v, :, :, y:y + 64, x:x + 64], crops[v])]
        assert len(hits) == 1
        starts.append(hits[0])
    assert len(set(starts)) > 1                                   # a fresh crop per video

    cfg = config("tiny_x4_upscaler", stage="upsample", **{"upsample.patch": 64, "data.height": 128, "data.width": 128})
    meta = {"caption": ["a", "b", "c"]}
    batch = prepare(cfg, video, meta)
    assert batch.x0.shape == (3 * T, 4, 16, 16) and batch.cond["concat"].shape == (3 * T, 3, 16, 16)
    level = batch.cond["vector"].reshape(3, T)
    assert (level == level[:, :1]).all() and ((0 <= level) & (level < 350)).all()
