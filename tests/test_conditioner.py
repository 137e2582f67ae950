"""SVD conditioning: vector embedding, CLIP preprocessing, embedders, cond/uncond dicts, keys."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.models.conditioner import (
    CLIP_MEAN,
    CLIP_STD,
    Conditioner,
    ConditionerConfig,
    ImageEmbedder,
    TextEmbedder,
    build_open_clip,
    repeat_over_frames,
    resize_antialiased,
    vector_embedding,
)
from svdcli.models.vae import VAEConfig
from numeric import assert_close_ulps

TINY_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny open_clip model config, passed as a .json path (registered under its stem)."""
    path = tmp_path_factory.mktemp("clip") / "svd-test-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


@pytest.fixture(scope="module")
def tiny_conditioner(tiny_clip) -> Conditioner:
    torch.manual_seed(0)
    cfg = ConditionerConfig(clip_arch=tiny_clip, vae=VAEConfig.tiny(), vector_dim=8)
    return Conditioner(cfg).eval()


def test_vector_matches_official_example(fixtures_dir):
    ref = json.loads((fixtures_dir / "edm_reference.json").read_text())["ConcatTimestepEmbedderND_outdim8"]
    ids = ref["inputs"]
    vec = vector_embedding(ids["fps_id"], ids["motion_bucket_id"], ids["cond_aug"], dim=8)
    torch.testing.assert_close(vec[0], torch.tensor(ref["vector_float32"]), atol=1e-6, rtol=0)


def test_vector_is_768_wide_and_per_sample():
    vec = vector_embedding(torch.tensor([6.0, 10.0]), 127, torch.tensor([0.02, 0.1]))
    assert vec.shape == (2, 768)  # the UNet's adm_in_channels
    assert not torch.equal(vec[0], vec[1])
    torch.testing.assert_close(vec[1], vector_embedding(10, 127, 0.1)[0])


def _hand_blur(img: np.ndarray, sigma: float, k: int, axis: int) -> np.ndarray:
    taps = np.arange(k) - k // 2
    w = np.exp(-(taps**2) / (2 * sigma**2))
    w /= w.sum()
    pad = [(0, 0)] * img.ndim
    pad[axis] = (k // 2, k // 2)
    padded = np.pad(img, pad, mode="reflect")
    n = img.shape[axis]
    return sum(w[i] * np.take(padded, range(i, i + n), axis=axis) for i in range(k))


def test_clip_preprocessing_equals_a_hand_computation(tiny_clip):
    # 447 x 893 -> 224 x 224: with align_corners every output pixel sits on source pixel
    # (2i, 4j), where bicubic returns the pixel itself, so the whole resize is the blur.
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 447, 893, generator=g) * 2 - 1
    embedder = ImageEmbedder(tiny_clip, pretrained=None)
    embedder.open_clip.model.visual.image_size = (224, 224)
    got = embedder.preprocess(image)[0].double().numpy()

    x = image[0].double().numpy()
    sig_h, sig_w = (447 / 224 - 1) / 2, (893 / 224 - 1) / 2  # 0.498, 1.493
    x = _hand_blur(x, sig_w, 5, axis=2)  # int(4 * 1.493) = 5 taps
    x = _hand_blur(x, sig_h, 3, axis=1)  # int(max(4 * 0.498, 3)) = 3 taps
    x = (x[:, ::2, ::4] + 1) / 2  # no crop: the full frame, aspect squashed
    x = (x - np.array(CLIP_MEAN)[:, None, None]) / np.array(CLIP_STD)[:, None, None]
    np.testing.assert_allclose(got, x, atol=2e-5)


def test_resize_matches_diffusers_svd_pipeline():
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )

    g = torch.Generator().manual_seed(4)
    for shape in [(2, 3, 320, 576), (1, 3, 100, 300), (1, 3, 576, 1024)]:
        x = torch.rand(shape, generator=g) * 2 - 1
        torch.testing.assert_close(resize_antialiased(x, (224, 224)), _resize_with_antialiasing(x, (224, 224)),
                                   atol=1e-5, rtol=0)


def test_image_embedder_loads_local_weights_and_equals_open_clip(tiny_clip, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    reference = build_open_clip(tiny_clip).eval()
    save_file(reference.state_dict(), str(tmp_path / "svd-test-tiny-clip-mytag.safetensors"))
    monkeypatch.setenv("SVD_WEIGHTS_DIR", str(tmp_path))
    embedder = ImageEmbedder(tiny_clip, pretrained="mytag").eval()  # found in $SVD_WEIGHTS_DIR

    image = torch.rand(3, 3, 48, 80, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        got = embedder(image)
        expected = reference.encode_image(embedder.preprocess(image))
    assert got.shape == (3, 1, 24)
    torch.testing.assert_close(got[:, 0], expected, atol=1e-6, rtol=0)


def test_missing_clip_weights_say_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants

    # read at import time: point it at an empty cache so a machine with ViT-H cached still tests this
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("SVD_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(MissingWeightsError) as err:
        ImageEmbedder()  # ViT-H-14 laion2b_s32b_b79k by default
    message = str(err.value)
    assert "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in message
    assert str(tmp_path / "weights") in message and "SVD_WEIGHTS_DIR" in message
    with pytest.raises(SvdError, match="unknown open_clip model"):
        ImageEmbedder("ViT-Nope-1", pretrained=None)


def test_text_embedder_is_penultimate_layer_and_causal(tiny_clip):
    torch.manual_seed(1)
    text = TextEmbedder(tiny_clip, pretrained=None).eval()
    tokens = text.tokenizer(["a red car drives through the rain", "a cat"])
    with torch.no_grad():
        got = text(tokens)
        m = text.model
        blocks = m.transformer.resblocks
        m.transformer.resblocks = blocks[:-1]  # open_clip's own forward, one block short
        causal = build_open_clip(tiny_clip).attn_mask  # open_clip's own causal mask
        expected = m.ln_final(m.transformer(m.token_embedding(tokens) + m.positional_embedding,
                                            attn_mask=causal))
        m.transformer.resblocks = blocks
        changed = tokens.clone()
        changed[:, 3:] = tokens[:, 3:].roll(1, dims=1)
        later_changed = text(changed)
    assert got.shape == (2, 77, 32)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # causal mask: a token only sees the ones before it
    torch.testing.assert_close(later_changed[:, :3], got[:, :3], atol=1e-6, rtol=0)


def test_cond_and_uncond_dicts(tiny_conditioner):
    cond_model = tiny_conditioner
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 40, 56, generator=g) * 2 - 1
    noise = torch.randn(image.shape, generator=g)
    with torch.no_grad():
        cond, uncond = cond_model(image, fps_id=6, motion_bucket_id=torch.tensor([127, 40]),
                                  cond_aug=0.02, noise=noise)
        frame_latent = cond_model.frame_encoder.encoder.encode(image + 0.02 * noise)
        clean_clip = cond_model.image_embedder(image)
    assert cond["crossattn"].shape == (2, 1, 24) and cond["vector"].shape == (2, 24)
    assert cond["concat"].shape == (2, 4, 5, 7)
    assert_close_ulps(cond["concat"], frame_latent)  # mode, not scaled
    assert_close_ulps(cond["crossattn"], clean_clip)  # CLIP sees no noise
    torch.testing.assert_close(cond["vector"][1], vector_embedding(6, 40, 0.02, dim=8)[0])
    assert torch.count_nonzero(uncond["crossattn"]) == 0 and torch.count_nonzero(uncond["concat"]) == 0
    assert torch.equal(uncond["vector"], cond["vector"])  # the same tensor, copied

    per_frame = repeat_over_frames(cond, 3)
    assert per_frame["concat"].shape == (6, 4, 5, 7)
    assert torch.equal(per_frame["vector"][3], cond["vector"][1])  # video-major: row b*T + t


def test_noise_augmentation_changes_only_the_concat_latent(tiny_conditioner):
    image = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        a, _ = tiny_conditioner(image, 6, 127, 0.0, generator=torch.Generator().manual_seed(0))
        b, _ = tiny_conditioner(image, 6, 127, 0.5, generator=torch.Generator().manual_seed(0))
        clean = tiny_conditioner.frame_encoder(image)
    assert_close_ulps(a["concat"], clean)
    assert (b["concat"] - clean).abs().max() > 1e-3
    assert_close_ulps(a["crossattn"], b["crossattn"])


def test_config_round_trips(tiny_conditioner):
    cfg = tiny_conditioner.cfg
    assert ConditionerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_full_size_conditioner_has_exactly_the_official_keys(reference_dir):
    expected = {}
    for line in (reference_dir / "svd_checkpoint_keys.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith("conditioner."):
            expected[key.removeprefix("conditioner.")] = tuple(int(d) for d in re.findall(r"\d+", shape))
    with torch.device("meta"):
        model = Conditioner(ConditionerConfig.svd())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected
    assert math.prod(model.image_embedder.image_size) == 224 * 224


def test_meta_built_conditioner_takes_checkpoint_tensors_and_moves(tiny_conditioner):
    # how a checkpoint loader avoids a slow random init of ViT-H: meta build + assign
    with torch.device("meta"):
        fresh = Conditioner(tiny_conditioner.cfg)
    fresh.load_state_dict(tiny_conditioner.state_dict(), strict=True, assign=True)
    fresh = fresh.to(torch.float64).to(torch.float32).eval()  # nothing left on the meta device
    image = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        a, _ = fresh(image, 6, 127, 0.02, generator=torch.Generator().manual_seed(0))
        b, _ = tiny_conditioner(image, 6, 127, 0.02, generator=torch.Generator().manual_seed(0))
    for key in ("crossattn", "vector", "concat"):
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
