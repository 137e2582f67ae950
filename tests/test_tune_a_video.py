"""Tune-A-Video: ST-Attn against dense attention with its mask, inflation preserving the image
model on frame 0, only the named layers tuning, DDIM inversion + sampling reconstructing the
source latents, on tiny random models of each base kind (ours: EDM; SD 2.1 layout: v and eps)."""
from __future__ import annotations

import copy

import pytest
import torch

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.families.tune_a_video.base import load_base
from svdcli.families.tune_a_video.inflate import is_tuned
from svdcli.families.tune_a_video.network import build_denoiser, make_cond
from svdcli.models.attention import CrossAttention
from svdcli.models.st_attention import FullSTAttention, SparseCausalAttention, previous_frames
from tav_helpers import FRAMES, image_base, sd21_base


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bases")
    return {"edm": (image_base(folder / "image.safetensors"), {}),
            "v": (sd21_base(folder / "sd21.safetensors"), {"text": "tiny"}),
            "eps": (sd21_base(folder / "sd21.safetensors"), {"text": "tiny", "prediction": "eps"})}


def _base(bases, kind):
    path, kw = bases[kind]
    return load_base(path, **kw)


def _dense_masked(attn: CrossAttention, x: torch.Tensor, t: int, allowed) -> torch.Tensor:
    """Reference: each video's T*N tokens attend to all of them, masked to the allowed frames."""
    bt, n, c = x.shape
    video = x.reshape(bt // t, t * n, c)                                # (B, T*N, C)
    h = attn.heads
    q, k, v = (f(video).reshape(bt // t, t * n, h, -1).transpose(1, 2) for f in (attn.to_q, attn.to_k, attn.to_v))
    frame = torch.arange(t).repeat_interleave(n)                         # frame of every token
    mask = allowed(frame[:, None], frame[None, :])                      # (T*N, T*N) query frame, key frame
    logits = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
    out = logits.masked_fill(~mask, float("-inf")).softmax(-1) @ v      # (B, h, T*N, d)
    return attn.to_out(out.transpose(1, 2).reshape(bt // t, t * n, -1)).reshape(bt, n, -1)


def test_sparse_causal_attention_is_dense_attention_masked_to_first_and_previous_frame():
    torch.manual_seed(0)
    t, n, c = 5, 6, 32
    attn = CrossAttention(c, heads=2, dim_head=16)
    x = torch.randn(2 * t, n, c)
    sparse = SparseCausalAttention.inflate(copy.deepcopy(attn))
    full = FullSTAttention.inflate(copy.deepcopy(attn))
    prev = previous_frames(t)
    expected = _dense_masked(attn, x, t, lambda qf, kf: (kf == 0) | (kf == prev[qf]))
    assert torch.allclose(sparse(x, t), expected, atol=1e-5)
    assert torch.allclose(full(x, t), _dense_masked(attn, x, t, lambda qf, kf: kf >= 0), atol=1e-5)
    # frame 0 attends to itself only: the image layer's own self-attention
    assert torch.allclose(sparse(x, t).reshape(2, t, n, c)[:, 0], attn(x.reshape(2, t, n, c)[:, 0]), atol=1e-5)
    assert not torch.allclose(sparse(x, t), full(x, t), atol=1e-3)   # the mask matters


@pytest.mark.parametrize("kind", ["edm", "v"])
def test_frame_0_of_the_inflated_model_is_the_image_models_output(bases, kind):
    from svdcli.diffusion.edm import Denoiser
    from svdcli.families.tune_a_video.base import scaling
    from svdcli.models.unet import VideoUNet

    base = _base(bases, kind)
    image = VideoUNet(base.unet_config)
    image.load_state_dict(base.unet_state, strict=False)
    image_d = Denoiser(image.eval(), scaling(base.prediction))
    video_d = build_denoiser(base, "sparse_causal", seed=0).eval()
    x = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    context = base.text(["a man is skiing"]).float()
    cond = make_cond(context, FRAMES, base, (8, 8))
    with torch.no_grad():
        out = video_d(x, torch.full((FRAMES,), 1.5), cond, FRAMES)
        two = {k: v[:2] for k, v in cond.items()}   # frames 0 and 1 as two single images
        ref = image_d(x[:2], torch.full((2,), 1.5), two, 1, torch.ones(2, 1))
    assert (out[0] - ref[0]).abs().max() < 1e-5
    assert (out[1] - ref[1]).abs().max() > 1e-3   # later frames attend to frames 0 and i-1


def test_only_the_query_projections_and_temporal_attention_tune(bases):
    """Two AdamW steps on the tuning loss: exactly the named parameters move."""
    from svdcli.families import family_for

    base = _base(bases, "edm")
    denoiser = build_denoiser(base, "sparse_causal", seed=0)
    trainable = {k for k, p in denoiser.named_parameters() if p.requires_grad}
    assert trainable == {k for k, _ in denoiser.named_parameters() if is_tuned(k)}
    assert {k.split(".")[-2] for k in trainable if "temporal" not in k} == {"to_q"}
    assert any(".temporal.attn_temp.to_out.0.weight" in k for k in trainable)
    norms = {k for k, _ in denoiser.named_parameters() if ".temporal.norm_temp." in k}
    assert norms and not norms & trainable       # as the official trainable_modules: attn_temp, not norm_temp
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    opt = torch.optim.AdamW([p for p in denoiser.parameters() if p.requires_grad], lr=1e-3)
    from svdcli.families.base import TrainBatch

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(FRAMES, 4, 8, 8, generator=g)
    batch = TrainBatch(x0, make_cond(base.text(["a man is skiing"]).float(), FRAMES, base, (8, 8)), FRAMES)
    for _ in range(2):
        opt.zero_grad()
        family_for("tune_a_video").loss(denoiser, batch, torch.tensor([0.8]),
                                        torch.randn(x0.shape, generator=g)).mean().backward()
        opt.step()
    changed = {k for k, v in denoiser.state_dict().items() if not torch.equal(v, before[k])}   # copied vs updated
    assert changed == trainable
    parts = (".attn1.to_q.", ".attn2.to_q.", ".temporal.attn_temp.")
    assert all(any(p in k for k in changed) for p in parts)


# relative RMS error of the reconstruction at 50 steps, measured on these random-weight models
# (a trained, smoother network inverts better): edm 0.143, v 0.052, eps 0.013
RECONSTRUCTION_TOL = {"edm": 0.2, "v": 0.08, "eps": 0.03}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["edm", "v", "eps"])
def test_ddim_inversion_then_sampling_with_the_empty_prompt_reconstructs_the_latents(bases, kind):
    from svdcli.families.tune_a_video.sampling import (TAVModel, cfg_denoiser, ddim_sigmas, invert,
                                                       run_ddim)

    base = _base(bases, kind)
    denoiser = build_denoiser(base, "sparse_causal", seed=0, train=False).eval()
    with torch.no_grad():  # tuned-looking temporal layers, so inversion goes through them too
        for name, p in denoiser.named_parameters():
            if "attn_temp.to_out" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    model = TAVModel(family=None, defaults=None, kind=kind, base=base, denoiser=denoiser)
    x0 = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    empty = make_cond(base.text([""]).float(), FRAMES, base, (8, 8))
    sigmas = ddim_sigmas(base.prediction, 50, "cpu")
    noise = invert(model, x0, empty, sigmas, FRAMES)
    again = run_ddim(model, noise, cfg_denoiser(denoiser, FRAMES, 1.0), sigmas, empty, empty)
    error = float((again - x0).pow(2).mean().sqrt() / x0.pow(2).mean().sqrt())
    print(f"{kind}: relative reconstruction error {error:.2e}, inverted noise std {float(noise.std()):.1f}")
    assert error < RECONSTRUCTION_TOL[kind]
    if kind != "eps":  # the random eps network predicts small eps, so its inversion stays near x0
        assert float(noise.std()) > 0.3 * float(sigmas[0])   # it did reach the noise level


def test_another_base_refuses_a_delta_and_sd21_without_text_weights_says_so(bases, tmp_path):
    from svdcli.families.tune_a_video.delta import apply_delta, save_delta

    base, other = _base(bases, "edm"), _base(bases, "v")
    denoiser = build_denoiser(base, "sparse_causal", seed=0)
    delta = tmp_path / "delta.safetensors"
    n = save_delta(delta, denoiser.net.state_dict(), base.digest, str(base.path), {"train_config": "{}"})
    assert 0 < n < len(denoiser.net.state_dict()) // 3
    apply_delta(denoiser.net, delta, base.digest)
    with pytest.raises(SvdError, match="tuned on another base"):
        apply_delta(build_denoiser(other, "sparse_causal", 0).net, delta, other.digest)
    with pytest.raises(MissingWeightsError, match="text tower|ViT-H-14"):
        load_base(bases["v"][0], text="auto")


def _official_counts(unet) -> tuple[int, int]:
    """Total and trained parameters of the official code's model on a diffusers image UNet: a
    temporal attention (diffusers' attention, no q/k/v bias) and its LayerNorm added to every
    transformer block, trained what `trainable_modules` names (attn1.to_q, attn2.to_q, attn_temp)."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.attention_processor import Attention

    total = sum(p.numel() for p in unet.parameters())
    trained = sum(p.numel() for name, m in unet.named_modules() if name.endswith(("attn1.to_q", "attn2.to_q"))
                  for p in m.parameters())
    for block in (m for m in unet.modules() if isinstance(m, BasicTransformerBlock)):
        dim, heads = block.attn1.to_q.in_features, block.attn1.heads
        attn_temp = Attention(query_dim=dim, heads=heads, dim_head=block.attn1.to_q.out_features // heads)
        total += sum(p.numel() for p in attn_temp.parameters()) + 2 * dim            # + norm_temp
        trained += sum(p.numel() for p in attn_temp.parameters())
    return total, trained


def test_full_size_inflated_sd21_builds_on_meta_with_the_official_codes_parameter_counts():
    """SD 2.1 inflated (the full-size model here): 865.9M image parameters as diffusers' SD 2.1
    UNet, and the official code's total and trained counts on that UNet; docs/families.md says them."""
    from pathlib import Path

    diffusers = pytest.importorskip("diffusers")
    from svdcli.families.tune_a_video.base import sd21_unet_config
    from svdcli.families.tune_a_video.inflate import inflate_unet, set_trainable
    from svdcli.models.unet import VideoUNet

    with torch.device("meta"):
        ours = inflate_unet(VideoUNet(sd21_unet_config()))
        sd21 = diffusers.UNet2DConditionModel(sample_size=96, cross_attention_dim=1024, use_linear_projection=True,
                                              attention_head_dim=(5, 10, 20, 20))
    set_trainable(ours)
    total = sum(p.numel() for p in ours.parameters())
    trained = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    image = sum(p.numel() for n, p in ours.named_parameters() if ".temporal." not in n)
    assert image == sum(p.numel() for p in sd21.parameters()) == 865_910_724
    assert (total, trained) == _official_counts(sd21)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "families.md").read_text()
    assert f"{total:,}" in doc and f"{trained:,}" in doc
