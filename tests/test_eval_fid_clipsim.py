"""Per-frame FID and CLIPSIM: the FID Inception equals pytorch-fid's on the same weights, the clean
resize is PIL's bicubic in float, FID(x, x) ~ 0 end to end with a result naming its protocol, and
CLIPSIM is the clip stage's frame-prompt cosine averaged, with the backbone named."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval_helpers import moving_videos, random_state, write_npy_folder
from numeric import assert_close_ulps
from test_bad_inputs import assert_clean_error, invoke


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    from svdcli.eval.inception import FIDInception
    from svdcli.eval.networks import convert

    folder = tmp_path_factory.mktemp("inception")
    state = random_state(FIDInception().net, seed=7)
    torch.save(state, folder / "pt_inception-2015-12-05-6726825d.pth")
    convert(folder / "pt_inception-2015-12-05-6726825d.pth", folder / "inception.safetensors")
    return folder / "inception.safetensors", state


def test_inception_equals_pytorch_fid_on_the_same_weights(inception_file, monkeypatch):
    pfid = pytest.importorskip("pytorch_fid.inception")
    from svdcli.eval.networks import load_network

    path, state = inception_file
    monkeypatch.setattr(pfid, "load_state_dict_from_url", lambda *a, **k: state)   # no download
    ref = pfid.InceptionV3([3], resize_input=False, normalize_input=False).eval()
    ours, kind = load_network(path, "inception")
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.inference_mode():
        expected, got = ref(x)[0].flatten(1), ours(x)
    assert kind == "inception-fid" and tuple(got.shape) == (2, 2048)
    assert_close_ulps(got, expected, scale=float(expected.abs().max()), ulps=64)


def test_clean_resize_is_pil_bicubic_in_float():
    from PIL import Image

    from svdcli.eval.inception import clean_resize, to_network_input

    frame = np.zeros((40, 60, 3), np.uint8)
    frame[:, 30:] = 255
    out = clean_resize(frame)
    assert out.shape == (299, 299, 3) and out.dtype == np.float32
    ref = np.asarray(Image.fromarray(frame[..., 0].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC))
    assert_close_ulps(out[..., 0], ref, scale=255.0)
    assert out.min() < 0 and out.max() > 255                  # bicubic overshoot is kept, not rounded to uint8
    x = to_network_input([frame])
    assert tuple(x.shape) == (1, 3, 299, 299)
    assert_close_ulps(x[0, 0, 150, 0], torch.tensor((ref[150, 0] - 128) / 128), scale=2.0)


def test_fid_end_to_end(inception_file, tmp_path):
    path, _ = inception_file
    videos = moving_videos(2, frames=2, size=48, seed=2)
    real = write_npy_folder(tmp_path / "real", videos)
    out = tmp_path / "fid.json"
    result = invoke("eval", "fid", "--real", real, "--fake", real, "--inception", path, "--samples", 4,
                    "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["metric"] == "fid" and data["real"]["measured"] == 4 and data["fake"]["measured"] == 4
    assert data["network"]["name"] == "inception-fid" and "clean" in data["protocol"]["resize"]
    assert any("10000" in w for w in data["warnings"])
    # real and fake draw different frames of the same videos (seed, seed + 1); every frame drawn once
    # -> both sides hold all 4 frames: the same statistics, FID 0
    assert data["value"] <= 1e-6
    bad = invoke("eval", "fid", "--real", real, "--fake", real, "--inception", path, "--samples", 5, "--no-progress")
    assert_clean_error(bad, "only 4 frames of the 5", "--frames-per-video")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from svdcli.demo.tiny_models import write_tiny_models

    files = write_tiny_models(tmp_path_factory.mktemp("clip"))
    return files["clip.model"], files["clip.pretrained"]


def test_clipsim_is_the_mean_frame_prompt_cosine(tiny_clip, tmp_path):
    from svdcli.curate.scorers.open_clip_models import ClipEmbedder
    from svdcli.eval.clipsim import frames_for_clip
    from svdcli.weights import open_clip_weights

    model, pretrained = tiny_clip
    videos = moving_videos(2, frames=3, size=40, seed=4)
    folder = write_npy_folder(tmp_path / "gen", videos)
    prompts = {"v0000": "a red car", "v0001.npy": "waves on a beach"}
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "clipsim.json"
    result = invoke("eval", "clipsim", "--videos", folder, "--prompts", tmp_path / "prompts.json", "--model", model,
                    "--pretrained", pretrained, "--device", "cpu", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    emb = ClipEmbedder.load(open_clip_weights(model, pretrained), model, "cpu")
    expected = []
    for video, prompt in zip(videos, ["a red car", "waves on a beach"]):
        image = emb.embed_images(frames_for_clip(video, emb.side, None))       # (F, D) unit vectors
        text = emb.embed_texts([prompt])[0]
        expected.append(float((image @ text).mean()))
    assert data["backbone"].endswith("tiny-clip.pt") and data["videos"]["measured"] == 2
    assert data["value"] == pytest.approx(np.mean(expected), abs=1e-6)
    (tmp_path / "prompts.json").write_text(json.dumps({"v0000": "a red car"}))
    missing = invoke("eval", "clipsim", "--videos", folder, "--prompts", tmp_path / "prompts.json", "--model", model,
                     "--pretrained", pretrained, "--device", "cpu", "--no-progress")
    assert_clean_error(missing, "v0001.npy", "no prompt", "--prompts")
