"""Our UNet against diffusers' UNetSpatioTemporalConditionModel (an independent implementation):
random weights converted between the two namings must give the same outputs.

diffusers builds the resnets of its CrossAttnDown and Up blocks with GroupNorm eps 1e-6 where
sgm (and the official weights) use 1e-5; `set_sgm_eps` sets them to 1e-5 on the diffusers model
for the comparison. Our model keeps sgm's eps for every format.
"""
from __future__ import annotations

import pytest
import torch

from svdcli.models.blocks import timestep_embedding
from svdcli.models.config import UNetConfig
from svdcli.models.unet import VideoUNet
from svdcli.families.svd.unet_diffusers import (diffusers_unet_config, set_sgm_eps, unet_config_from_diffusers,
                                          unet_state_from_diffusers, unet_state_to_diffusers)
from random_weights import randomize_

# 16x24: at 8x16 the last level is 1x2 and its GroupNorm (2 channels x 2 pixels per group)
# amplifies float32 rounding in both implementations alike; float64 agreement is checked too.
B, T, H, W = 2, 3, 16, 24


def tiny_diffusers(cfg: UNetConfig):
    from diffusers import UNetSpatioTemporalConditionModel

    kwargs = {k: v for k, v in diffusers_unet_config(cfg).items() if not k.startswith("_")}
    model = UNetSpatioTemporalConditionModel(**kwargs).eval()
    randomize_(model, 11)
    return model


def inputs(cfg: UNetConfig, scale: float = 1.0):
    g = torch.Generator().manual_seed(5)
    x = scale * torch.randn(B, T, cfg.in_channels, H, W, generator=g)
    c_noise = torch.tensor([0.63, -0.26])                       # 0.25 ln(sigma) per video
    ctx = torch.randn(B, 1, cfg.context_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02], [10.0, 40.0, 0.1]])  # fps_id, motion_bucket_id, cond_aug
    return x, c_noise, ctx, ids


def ours_forward(net: VideoUNet, cfg: UNetConfig, x, c_noise, ctx, ids):
    # per video -> per frame, video-major; the vector is the concatenated sinusoidal id embeddings
    y = torch.cat([timestep_embedding(ids[:, i], cfg.adm_in_channels // 3) for i in range(3)], dim=1).to(x.dtype)
    rep = lambda t: t.repeat_interleave(T, dim=0)  # noqa: E731
    out = net(x.flatten(0, 1), rep(c_noise), rep(ctx), rep(y), T)
    return out.reshape(B, T, *out.shape[1:])


@pytest.fixture(scope="module")
def pair():
    cfg = UNetConfig.tiny()
    ref = tiny_diffusers(cfg)
    state, extra = unet_state_from_diffusers(ref.state_dict(), cfg)
    assert extra == []
    net = VideoUNet(cfg).eval()
    net.load_state_dict(state, strict=True)
    return cfg, ref, net


@pytest.mark.parametrize("scale", [1.0, 0.01])   # 0.01: outputs hinge on GroupNorm eps
def test_converted_diffusers_unet_gives_same_output(pair, scale):
    cfg, ref, net = pair
    x, c_noise, ctx, ids = inputs(cfg, scale)
    set_sgm_eps(ref)
    with torch.no_grad():
        expected = ref(x, c_noise, ctx, ids).sample
        out = ours_forward(net, cfg, x, c_noise, ctx, ids)
    assert (out - expected).abs().max().item() <= 2e-5


def test_converted_diffusers_unet_is_identical_in_float64(pair):
    import copy

    cfg, ref, net = pair
    ref64, net64 = copy.deepcopy(ref).double(), copy.deepcopy(net).double()
    set_sgm_eps(ref64)
    x, c_noise, ctx, ids = (t.double() for t in inputs(cfg, 0.01))
    with torch.no_grad():
        diff = (ref64(x, c_noise, ctx, ids).sample - ours_forward(net64, cfg, x, c_noise, ctx, ids)).abs().max()
    assert diff.item() < 1e-10


def test_stock_diffusers_eps_differs_where_it_matters(pair):
    """Why the eps matters: with diffusers' stock 1e-6 the small-input case moves visibly."""
    from diffusers import UNetSpatioTemporalConditionModel

    cfg, ref, net = pair
    stock = UNetSpatioTemporalConditionModel(**{k: v for k, v in diffusers_unet_config(cfg).items()
                                                if not k.startswith("_")}).eval()
    stock.load_state_dict(ref.state_dict())
    x, c_noise, ctx, ids = inputs(cfg, 0.01)
    with torch.no_grad():
        diff = (stock(x, c_noise, ctx, ids).sample - ours_forward(net, cfg, x, c_noise, ctx, ids)).abs().max()
    assert diff.item() > 1e-4


def test_state_round_trips_and_config_survives():
    cfg = UNetConfig.tiny()
    sd = VideoUNet(cfg).state_dict()
    there = unet_state_to_diffusers(sd, cfg)
    back, extra = unet_state_from_diffusers(there, cfg)
    assert extra == [] and back.keys() == sd.keys()
    assert all(back[k] is sd[k] for k in sd)
    assert unet_config_from_diffusers(diffusers_unet_config(cfg)) == cfg


def test_full_size_names_match_diffusers_svd():
    from diffusers import UNetSpatioTemporalConditionModel

    cfg = UNetConfig.svd()
    with torch.device("meta"):
        ours = VideoUNet(cfg).state_dict()
        theirs = UNetSpatioTemporalConditionModel().state_dict()   # diffusers' defaults are SVD's
    converted = unet_state_to_diffusers(ours, cfg)
    assert set(converted) == set(theirs)
    assert all(converted[k].shape == theirs[k].shape for k in theirs)
